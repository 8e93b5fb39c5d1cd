//! OpenID Connect endpoints: UserInfo (OIDC Core 5.3) and the discovery
//! document (OpenID Connect Discovery 1.0 4). The claims are built by
//! `oauth::oidc`; here only extraction and the RFC 6750 answers.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;

use crate::http::{bearer, no_store, rfc_error};
use crate::oauth::oidc::{self, UserInfoError};
use crate::routes::cors;
use crate::state::AppState;

impl ResponseError for UserInfoError {
    fn status_code(&self) -> StatusCode {
        match self {
            UserInfoError::Missing | UserInfoError::InvalidToken => StatusCode::UNAUTHORIZED,
            UserInfoError::InsufficientScope => StatusCode::FORBIDDEN,
            UserInfoError::Origin => StatusCode::BAD_REQUEST,
        }
    }

    /// OIDC Core 5.3.3: errors in the RFC 6750 3 form, the challenge in
    /// `WWW-Authenticate` (no `error` when no token was sent, 3.1).
    fn error_response(&self) -> HttpResponse {
        let (code, challenge) = match self {
            UserInfoError::Missing => ("invalid_token", "Bearer"),
            UserInfoError::InvalidToken => ("invalid_token", r#"Bearer error="invalid_token""#),
            UserInfoError::InsufficientScope => (
                "insufficient_scope",
                r#"Bearer error="insufficient_scope", scope="openid""#,
            ),
            UserInfoError::Origin => ("invalid_request", r#"Bearer error="invalid_request""#),
        };
        // RFC 6750 3.1: a request without any credential gets the bare
        // challenge, no error code in it; the body keeps the JSON shape every
        // /oauth error has (and /openapi.json documents).
        let mut resp = rfc_error(self.status_code(), code, self.to_string());
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        resp
    }
}

/// `GET /oauth/userinfo` (OIDC Core 5.3): the claims of the user behind an
/// access token that carries `openid`.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "oauth", operation_id = "userinfo",
    responses((status = 200, description = "OIDC Core 5.3.2: sub, and email/email_verified or preferred_username as granted", body = Object),
        (status = 401, description = "No access token, or not an active one (WWW-Authenticate: Bearer)", body = Object),
        (status = 403, description = "The access token lacks openid (insufficient_scope)", body = Object)),
    security(("bearer" = [])))]
pub async fn userinfo_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    userinfo(req, state).await
}

/// `POST /oauth/userinfo` (OIDC Core 5.3.1: "MUST support the use of the
/// HTTP GET and HTTP POST methods"), the access token in `Authorization`.
#[utoipa::path(post, path = "/oauth/userinfo", tag = "oauth", operation_id = "userinfoPost",
    responses((status = 200, description = "As GET", body = Object),
        (status = 401, description = "As GET", body = Object),
        (status = 403, description = "As GET", body = Object)),
    security(("bearer" = [])))]
pub async fn userinfo_post(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    userinfo(req, state).await
}

async fn userinfo(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let resolved = match bearer(&req) {
        None => None,
        Some(token) => Some(
            state
                .credentials
                .resolve_bearer(&token, state.client_ip(&req), Utc::now())
                .await
                .map_err(|e| {
                    let unavailable = crate::db::is_unavailable(&e.0);
                    if unavailable {
                        crate::db::log_unavailable(&e.0);
                    }
                    crate::oauth::error::OAuthError::server(e.0)
                })?,
        ),
    };
    let client_id = match &resolved {
        Some(crate::credentials::Resolved::Active(caller)) => caller.client_id().map(str::to_owned),
        _ => None,
    };
    let claims = match oidc::userinfo(resolved) {
        Ok(claims) => claims,
        Err(e) => {
            // Says nothing about any account: readable by any page.
            cors::admit_failure(&req);
            return Err(e.into());
        }
    };
    // A page may read the claims only on an origin the token's client
    // registered (`oauth::cors`).
    cors::admit(&state, &req, client_id.as_deref())
        .await
        .map_err(|e| match e {
            cors::AdmitError::Refused(_) => actix_web::Error::from(UserInfoError::Origin),
            cors::AdmitError::Lookup(e) => crate::oauth::error::OAuthError::server(e).into(),
        })?;
    let mut resp = HttpResponse::Ok().json(claims);
    no_store(&mut resp);
    Ok(resp)
}
