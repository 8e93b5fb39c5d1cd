//! `/v1/`: the public DZDESK API. Every answer, errors included, is in the
//! envelope of the API documentation.

pub mod auth;
pub mod handlers;
pub mod limits;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Largest JSON body accepted under /v1.
pub const JSON_LIMIT_BYTES: usize = 64 * 1024;

/// The routes of the public API (paths relative to `/v1`).
pub fn routes(cfg: &mut ServiceConfig) {
    use handlers as h;
    cfg.route("/me", web::get().to(h::me))
        .route("/api-keys", web::get().to(h::list_keys))
        .route("/api-keys", web::post().to(h::create_key))
        .route("/api-keys/{id}", web::delete().to(h::revoke_key))
        .route("/ip-allowlist", web::get().to(h::get_allowlist))
        .route("/ip-allowlist", web::put().to(h::put_allowlist))
        .route("/users", web::get().to(h::list_users))
        .route("/users", web::post().to(h::create_user))
        .route("/users/{id}", web::get().to(h::get_user))
        .route("/users/{id}", web::patch().to(h::update_user))
        .route("/users/{id}", web::delete().to(h::delete_user));
}

/// Extractor settings that make body, path and query errors answer in the
/// envelope with 400, never actix's plain-text default.
pub fn configure_extractors(cfg: &mut ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT_BYTES)
            .error_handler(|e, _| json_error(&e).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|e, _| path_error(&e).into()))
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(&e).into()));
}

fn json_error(e: &JsonPayloadError) -> ApiError {
    let message = match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            format!(
                "Request body is larger than {} KiB",
                JSON_LIMIT_BYTES / 1024
            )
        }
        JsonPayloadError::ContentType => "Content-Type must be application/json".to_owned(),
        // serde's message can quote the submitted values (a password, a key):
        // name the position only.
        JsonPayloadError::Deserialize(de) => match de.classify() {
            serde_json::error::Category::Data => format!(
                "JSON body does not have the expected fields or types (line {}, column {})",
                de.line(),
                de.column()
            ),
            _ => format!(
                "Malformed JSON (line {}, column {})",
                de.line(),
                de.column()
            ),
        },
        _ => "Could not read the request body".to_owned(),
    };
    ApiError::BadRequest(message)
}

fn path_error(_: &PathError) -> ApiError {
    ApiError::BadRequest("Invalid path parameter".to_owned())
}

fn query_error(_: &QueryPayloadError) -> ApiError {
    ApiError::BadRequest("Invalid query string".to_owned())
}

/// Any `/v1/...` path (or method) we do not serve.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "No such endpoint: {} {}",
        req.method(),
        req.path()
    )))
}
