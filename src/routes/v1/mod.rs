//! `/v1/`: the public DZDESK API. Every answer, errors included, is in the
//! envelope of the API documentation.

pub mod auth;
pub mod handlers;
pub mod limits;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::routes::openapi::Endpoint;
use crate::routes::surface::{refusal, refusal_of_error, Refusal};

/// Largest JSON body accepted under /v1.
pub const JSON_LIMIT_BYTES: usize = 64 * 1024;

/// The routes of the public API (paths relative to `/v1`), each served and
/// documented by its handler's `#[utoipa::path]` (see `routes::openapi`).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    use handlers as h;
    let resource = |path: &str| web::resource(path);
    cfg.service(Endpoint::per_method(h::__path_me, h::me, resource))
        .service(
            Endpoint::per_method(h::__path_list_keys, h::list_keys, resource)
                .to(h::__path_create_key, h::create_key),
        )
        .service(Endpoint::per_method(
            h::__path_revoke_key,
            h::revoke_key,
            resource,
        ))
        .service(Endpoint::per_method(
            h::__path_rotate_key,
            h::rotate_key,
            resource,
        ))
        .service(Endpoint::per_method(
            h::__path_key_usage,
            h::key_usage,
            resource,
        ))
        .service(
            Endpoint::per_method(h::__path_get_allowlist, h::get_allowlist, resource)
                .to(h::__path_put_allowlist, h::put_allowlist),
        )
        .service(
            Endpoint::per_method(h::__path_list_users, h::list_users, resource)
                .to(h::__path_create_user, h::create_user),
        )
        .service(
            Endpoint::per_method(h::__path_get_user, h::get_user, resource)
                .to(h::__path_update_user, h::update_user)
                .to(h::__path_delete_user, h::delete_user),
        );
}

/// The `/v1` scope with its surface rule (see `routes::surface`): the
/// extractor settings, and the middleware that puts every error actix
/// answers by itself (a `web::Bytes` body over the limit, a method the path
/// does not serve) in the envelope. A utoipa-actix-web scope: the paths of
/// the operations registered in it are documented under `/v1`.
pub fn scope() -> utoipa_actix_web::scope::Scope<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    utoipa_actix_web::scope::scope("/v1")
        .map(|s| s.configure(configure_extractors))
        .wrap(from_fn(errors))
}

/// Extractor settings that make body, path and query errors answer in the
/// envelope (400; 413 for a body too large), never actix's plain-text
/// default.
pub fn configure_extractors(cfg: &mut ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(JSON_LIMIT_BYTES))
        .app_data(
            web::FormConfig::default()
                .limit(JSON_LIMIT_BYTES)
                .error_handler(|e, _| form_error(&e).into()),
        )
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT_BYTES)
                .error_handler(|e, _| json_error(&e).into()),
        )
        .app_data(web::PathConfig::default().error_handler(|e, _| path_error(&e).into()))
        .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(&e).into()));
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "Request body is larger than {} KiB",
        JSON_LIMIT_BYTES / 1024
    ))
}

fn form_error(e: &UrlencodedError) -> ApiError {
    match e {
        UrlencodedError::Overflow { .. } => too_large(),
        UrlencodedError::ContentType => {
            ApiError::BadRequest("Content-Type must be application/x-www-form-urlencoded".into())
        }
        _ => ApiError::BadRequest("Malformed form body".into()),
    }
}

fn json_error(e: &JsonPayloadError) -> ApiError {
    let message = match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            return too_large();
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

fn is_api_error(e: &actix_web::Error) -> bool {
    e.as_error::<ApiError>().is_some()
}

/// The envelope error for a response actix made by itself: the status's code
/// of the API documentation (a 405 counts as an endpoint we do not serve).
/// `req`: the request, when there still is one to name in the message.
fn envelope_error(r: Refusal, req: Option<&HttpRequest>) -> ApiError {
    match r.status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => match req {
            Some(req) => no_such_endpoint(req),
            None => ApiError::NotFound("No such endpoint".into()),
        },
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(r.message.into()),
        StatusCode::FORBIDDEN => ApiError::Forbidden(r.message.into()),
        StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited(r.message.into()),
        s if s.is_server_error() => {
            ApiError::Internal(anyhow::anyhow!("actix answered {s} under /v1"))
        }
        _ => ApiError::BadRequest(r.message.into()),
    }
}

/// The `/v1` rule: whatever actix would answer in its own form is answered
/// in the envelope.
async fn errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The request is not cloned: routing inside the scope needs it unshared.
    let res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => {
            return Err(match refusal_of_error(&e, is_api_error) {
                Some(r) => envelope_error(r, None).into(),
                None => e,
            })
        }
    };
    match refusal(&res, is_api_error) {
        None => {
            let mut res = res.map_into_boxed_body();
            // Every answer holds account data: never stored by a cache.
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Some(r) => {
            let err = envelope_error(r, Some(res.request()));
            Ok(res.into_response(HttpResponse::from_error(err)))
        }
    }
}

fn no_such_endpoint(req: &HttpRequest) -> ApiError {
    ApiError::NotFound(format!("No such endpoint: {} {}", req.method(), req.path()))
}

/// Any `/v1/...` path (or method) we do not serve.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(no_such_endpoint(&req))
}
