//! `/oauth/register` (RFC 7591) and `/oauth/register/{client_id}` (RFC 7592):
//! extract, call `oauth::registration`, translate.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use serde::Serialize;

use crate::http::{bearer, no_store, rfc_error};
use crate::oauth::registration::{self, ClientInformation, ClientMetadata, RegistrationError};
use crate::state::AppState;

/// Largest registration request body (larger: 413, see `routes::surface`).
pub const BODY_LIMIT: usize = 64 * 1024;

impl ResponseError for RegistrationError {
    fn status_code(&self) -> StatusCode {
        match self {
            RegistrationError::InvalidToken => StatusCode::UNAUTHORIZED,
            RegistrationError::InsufficientScope
            | RegistrationError::KeyBeingReplaced
            | RegistrationError::AddressRefused => StatusCode::FORBIDDEN,
            RegistrationError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RegistrationError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            RegistrationError::Server(e) => log::error!("registration endpoint: {e:?}"),
            RegistrationError::Unavailable(e) => crate::db::log_unavailable(e),
            _ => {}
        }
        let mut resp = rfc_error(self.status_code(), self.code(), self.to_string());
        if matches!(self, RegistrationError::Unavailable(_)) {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::error::RETRY_AFTER_UNAVAILABLE),
            );
        }
        // RFC 6750 3: bearer errors name themselves in WWW-Authenticate.
        let challenge = match self {
            RegistrationError::InvalidToken => Some("Bearer error=\"invalid_token\""),
            RegistrationError::InsufficientScope => {
                Some("Bearer error=\"insufficient_scope\", scope=\"admin\"")
            }
            RegistrationError::KeyBeingReplaced => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(c) = challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

fn metadata(body: &[u8]) -> Result<ClientMetadata, RegistrationError> {
    // serde's message can quote the submitted values: keep it generic.
    serde_json::from_slice(body).map_err(|_| {
        RegistrationError::InvalidClientMetadata(
            "the body must be a JSON object of client metadata".into(),
        )
    })
}

fn json(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let mut resp = HttpResponse::build(status).json(value);
    no_store(&mut resp);
    resp
}

/// `POST /oauth/register` (RFC 7591 3): 201 with the client information.
#[utoipa::path(post, path = "/oauth/register", tag = "oauth", operation_id = "registerClient",
    request_body = ClientMetadata,
    responses((status = 201, description = "The client, its secret and registration access token shown this once", body = ClientInformation)))]
pub async fn register(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RegistrationError> {
    let token = bearer(&req);
    let meta = metadata(&body)?;
    let now = Utc::now();
    // The same check as /v1, the socket peer (or a trusted proxy's word)
    // for an API key's allowlist.
    let resolved = match token {
        Some(token) => Some(
            state
                .credentials
                .resolve_bearer(&token, state.client_ip(&req), now)
                .await
                .map_err(|e| RegistrationError::server(e.0))?,
        ),
        None => None,
    };
    let registrar = registration::initial_access(resolved)?;
    let st = state.clone();
    let info = state
        .db
        .run(move |conn| registration::register(conn, &meta, &registrar, &st.settings.issuer, now))
        .await?;
    log::info!("client {} registered", info.client_id);
    Ok(json(StatusCode::CREATED, &info))
}

/// `GET /oauth/register/{client_id}` (RFC 7592 2.1).
#[utoipa::path(get, path = "/oauth/register/{client_id}", tag = "oauth", operation_id = "readClient",
    params(("client_id" = String, Path)),
    responses((status = 200, description = "The client", body = ClientInformation)))]
pub async fn read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RegistrationError> {
    let token = bearer(&req);
    let st = state.clone();
    let info = state
        .db
        .run(move |conn| {
            let client = registration::managed_client(conn, &path, token.as_deref())?;
            registration::read(conn, &client, &st.settings.issuer)
        })
        .await?;
    Ok(json(StatusCode::OK, &info))
}

/// `PUT /oauth/register/{client_id}` (RFC 7592 2.2).
#[utoipa::path(put, path = "/oauth/register/{client_id}", tag = "oauth", operation_id = "updateClient",
    params(("client_id" = String, Path)),
    request_body = ClientMetadata,
    responses((status = 200, description = "The client as changed", body = ClientInformation)))]
pub async fn update(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RegistrationError> {
    let token = bearer(&req);
    let meta = metadata(&body)?;
    let st = state.clone();
    let info = state
        .db
        .run(move |conn| {
            let client = registration::managed_client(conn, &path, token.as_deref())?;
            registration::update(conn, &client, &meta, &st.settings.issuer, Utc::now())
        })
        .await?;
    state.clients.forget(&info.client_id);
    state.credentials.fence().await;
    Ok(json(StatusCode::OK, &info))
}

/// `DELETE /oauth/register/{client_id}` (RFC 7592 2.3): 204.
#[utoipa::path(delete, path = "/oauth/register/{client_id}", tag = "oauth", operation_id = "deleteClient",
    params(("client_id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, RegistrationError> {
    let token = bearer(&req);
    let id = path.into_inner();
    let id2 = id.clone();
    state
        .db
        .run(move |conn| {
            let client = registration::managed_client(conn, &id2, token.as_deref())?;
            registration::delete(conn, &client)
        })
        .await?;
    state.clients.forget(&id);
    state.credentials.fence().await;
    log::info!("client {id} deleted");
    let mut resp = HttpResponse::NoContent().finish();
    no_store(&mut resp);
    Ok(resp)
}
