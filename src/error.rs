//! Errors as clients see them, kept apart from what we log.
//!
//! - [`ApiError`]: everything under `/v1/`, in the DZDESK envelope
//!   `{"success": false, "error": {"code", "message"}}`.
//! - [`WebError`]: browser pages, as an HTML error page.
//!
//! Internal errors carry their cause (`anyhow`), which is logged with its whole
//! chain; the client gets a generic message and no detail. A cause that says
//! the database is unreachable ([`crate::db::is_unavailable`]) is no bug:
//! `internal` makes it the surface's 503 instead (`SERVICE_UNAVAILABLE`, or
//! the page saying so), with `Retry-After`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;

use crate::db::RunError;

/// The `/v1/` error codes of the DZDESK API documentation, plus BAD_REQUEST.
#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A body larger than its endpoint accepts: 413, code `BAD_REQUEST`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No bearer credential at all (or another scheme): 401 with the bare
    /// challenge `WWW-Authenticate: Bearer` (RFC 6750 3.1: no error code
    /// when the request lacks any authentication information).
    #[error("{0}")]
    NoCredential(String),
    /// A credential that is unknown, malformed, expired or revoked: 401,
    /// `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 3.1).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A credential without the scope the request needs: 403 `FORBIDDEN`,
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`
    /// (RFC 6750 3.1).
    #[error("{message}")]
    InsufficientScope {
        message: String,
        scope: &'static str,
    },
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (an API key that is
    /// already being replaced): 409, code `CONFLICT`.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    /// The request did not arrive in time: 408, code `BAD_REQUEST`.
    #[error("{0}")]
    RequestTimeout(String),
    /// The database is unreachable or did not answer in time: 503, code
    /// `SERVICE_UNAVAILABLE` (spec, "Errors"). The cause is logged, never
    /// shown.
    #[error("The service is temporarily unavailable (its database does not answer); retry later")]
    Unavailable(#[source] anyhow::Error),
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Internal(e) => write!(f, "Internal({e:?})"),
            ApiError::Unavailable(e) => write!(f, "Unavailable({e:?})"),
            other => write!(f, "{}({})", other.code(), other),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::RequestTimeout(_) => "BAD_REQUEST",
            ApiError::NoCredential(_) | ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) | ApiError::InsufficientScope { .. } => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "SERVER_ERROR",
        }
    }

    /// An error of ours: 500, or 503 when the database is unavailable.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if crate::db::is_unavailable(&e) {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

/// Seconds a client is told to wait before retrying a 503 (`Retry-After`).
pub const RETRY_AFTER_UNAVAILABLE: &str = "1";

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

/// The success envelope `{"success": true, "data": ...}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SuccessBody<T> {
    /// Always true.
    success: bool,
    data: T,
}

/// `{"success": true, "data": ...}` with status 200.
pub fn api_ok<T: Serialize>(data: T) -> HttpResponse {
    api_success(StatusCode::OK, data)
}

/// `{"success": true, "data": ...}` with any success status.
pub fn api_success<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    HttpResponse::build(status).json(SuccessBody {
        success: true,
        data,
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoCredential(_) | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(e) => log::error!("internal error: {e:?}"),
            ApiError::Unavailable(e) => crate::db::log_unavailable(e),
            _ => {}
        }
        let mut resp = HttpResponse::build(self.status_code()).json(ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        });
        // RFC 6750 3: the challenge names the error of a bad credential
        // (never for a request that sent none, 3.1).
        let challenge = match self {
            ApiError::NoCredential(_) => Some(HeaderValue::from_static("Bearer")),
            ApiError::Unauthorized(_) => {
                Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#))
            }
            // Scope names are a fixed set of header-safe tokens.
            ApiError::InsufficientScope { scope, .. } => HeaderValue::from_str(&format!(
                r#"Bearer error="insufficient_scope", scope="{scope}""#
            ))
            .ok(),
            _ => None,
        };
        // Account data, or what a credential is worth: never cached.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(self, ApiError::Unavailable(_)) {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
            );
        }
        resp
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        ApiError::internal(e)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::internal(e)
    }
}

/// Errors of browser pages.
#[derive(thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    BadRequest(String),
    /// A form without a valid CSRF token, or an action not allowed.
    #[error("This form has expired or did not come from this site. Go back, reload the page and try again.")]
    Forbidden,
    #[error("Page not found.")]
    NotFound,
    #[error("The request took too long to arrive. Please try again.")]
    RequestTimeout,
    /// A form sent over plain HTTP in production mode (its GET is
    /// redirected to https instead).
    #[error("This site is served over HTTPS only. Open it with https:// and try again.")]
    HttpsRequired,
    /// The database is unreachable or did not answer in time (503).
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    Unavailable(#[source] anyhow::Error),
    #[error("Something went wrong on our side. Please try again.")]
    Internal(#[source] anyhow::Error),
}

impl std::fmt::Debug for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebError::Internal(e) => write!(f, "Internal({e:?})"),
            WebError::Unavailable(e) => write!(f, "Unavailable({e:?})"),
            other => write!(f, "{other}"),
        }
    }
}

impl WebError {
    /// An error of ours: 500, or 503 when the database is unavailable.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if crate::db::is_unavailable(&e) {
            WebError::Unavailable(e)
        } else {
            WebError::Internal(e)
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden | WebError::HttpsRequired => StatusCode::FORBIDDEN,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            WebError::Internal(e) => log::error!("internal error: {e:?}"),
            WebError::Unavailable(e) => crate::db::log_unavailable(e),
            _ => {}
        }
        let status = self.status_code();
        let page = ErrorPage {
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.to_string(),
        };
        let mut resp = match page.render() {
            Ok(body) => HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(body),
            Err(e) => {
                log::error!("rendering the error page failed: {e}");
                HttpResponse::build(status)
                    .content_type("text/plain; charset=utf-8")
                    .body(self.to_string())
            }
        };
        if matches!(self, WebError::Unavailable(_)) {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
            );
        }
        resp
    }
}

impl From<RunError> for WebError {
    fn from(e: RunError) -> Self {
        WebError::internal(e)
    }
}

impl From<diesel::result::Error> for WebError {
    fn from(e: diesel::result::Error) -> Self {
        WebError::internal(e)
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_database_is_503_and_a_bug_500() {
        let e = ApiError::internal(RunError::TimedOut(crate::db::DEFAULT_TIMEOUT));
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "SERVICE_UNAVAILABLE");
        let resp = e.error_response();
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let e = ApiError::internal(anyhow::anyhow!("a row that does not parse"));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code(), "SERVER_ERROR");

        let page = WebError::from(RunError::TimedOut(crate::db::DEFAULT_TIMEOUT));
        assert_eq!(page.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            WebError::internal(anyhow::anyhow!("bug")).status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
