//! Logging: env_logger set-up, the access log, and the guard that turns a
//! panicking handler into an opaque 500 instead of a dropped connection.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use futures_util::FutureExt;

use crate::error::{ApiError, WebError};

/// env_logger with `RUST_LOG`, or `default_filter` when it is unset.
pub fn init_logging(default_filter: &str) {
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .format_timestamp_millis()
            .try_init();
}

/// The outermost middleware: one access-log line per request (peer, method,
/// path, status, duration) and the guard that turns a panic anywhere inside
/// into an opaque 500 of the right shape instead of a dropped connection.
///
/// The line never holds headers (Authorization, Cookie), bodies, or the query
/// string: on `/oauth/*` it carries authorization codes and state, so it is
/// dropped everywhere rather than trusting a list of safe paths.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let peer = req
        .peer_addr()
        .map_or_else(|| "-".to_owned(), |a| a.ip().to_string());
    let res = match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(res) => res.map(ServiceResponse::map_into_boxed_body),
        Err(_) => {
            log::error!("handler panicked on {method} {path}");
            Err(Panicked {
                api: path.starts_with("/v1"),
            }
            .into())
        }
    };
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    log::info!(
        target: "dzdesk_auth::access",
        "{peer} \"{method} {path}\" {status} {:.1}ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    res
}

/// A request whose handler panicked. Rendered outside the other middlewares
/// (`routes::surface::harden` adds the security headers).
#[derive(Debug, thiserror::Error)]
#[error("handler panicked")]
struct Panicked {
    api: bool,
}

impl ResponseError for Panicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        let cause = anyhow::anyhow!("handler panicked");
        if self.api {
            ApiError::Internal(cause).error_response()
        } else {
            WebError::Internal(cause).error_response()
        }
    }
}
