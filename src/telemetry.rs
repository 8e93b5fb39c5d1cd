//! Logging: env_logger set-up, the access log, and the guard that turns a
//! panicking handler into an opaque 500 instead of a dropped connection.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use futures_util::FutureExt;
use rand::Rng;

use crate::domain::TrustedProxies;
use crate::error::{ApiError, WebError};
use crate::metrics::{method_label, Metrics, UNMATCHED};

/// env_logger with `RUST_LOG`, or `default_filter` when it is unset.
pub fn init_logging(default_filter: &str) {
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .format_timestamp_millis()
            .try_init();
}

/// What [`access_log`] needs besides the request (app data): whose
/// `X-Request-Id` to believe, and where to count requests.
#[derive(Clone)]
pub struct Observability {
    pub trusted_proxies: TrustedProxies,
    pub metrics: Option<Arc<Metrics>>,
}

/// The header that names a request across instances and proxies.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` taken from a trusted proxy.
pub const MAX_REQUEST_ID: usize = 128;

/// An `X-Request-Id` worth keeping: 1 to [`MAX_REQUEST_ID`] characters of
/// letters, digits and `-._~+/=:` (UUIDs, hex, base64 and the usual trace
/// ids), nothing that could break a log line or a header.
pub fn sane_request_id(raw: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&raw.len())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=:".contains(b))
}

/// A new request id: 16 bytes of the thread's CSPRNG, in hex.
fn new_request_id() -> HeaderValue {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut hex = [0u8; 32];
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        hex[2 * i] = DIGITS[usize::from(b >> 4)];
        hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("-"))
}

/// The request's id: the one a trusted proxy sent (the socket peer is in
/// `DZDESK_TRUSTED_PROXIES`, one header, a [`sane_request_id`]), else a
/// new one. A client cannot choose the id its requests are logged under.
fn request_id(req: &ServiceRequest, trusted: Option<&TrustedProxies>) -> HeaderValue {
    let from_proxy = trusted.is_some_and(|t| req.peer_addr().is_some_and(|p| t.trusts(p.ip())));
    if from_proxy {
        let mut sent = req.headers().get_all(REQUEST_ID);
        if let (Some(v), None) = (sent.next(), sent.next()) {
            if sane_request_id(v.as_bytes()) {
                return v.clone();
            }
        }
    }
    new_request_id()
}

/// The outermost middleware: one access-log line per request (peer, method,
/// path, status, duration, request id), the request's `X-Request-Id` on its
/// answer, the HTTP metrics, and the guard that turns a panic anywhere inside
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
    let (id, metrics) = match req.app_data::<Observability>() {
        Some(o) => (
            request_id(&req, Some(&o.trusted_proxies)),
            o.metrics.clone(),
        ),
        None => (request_id(&req, None), None),
    };
    // Before the call: an error answer (a timeout, a panic) has no request
    // left to ask.
    let route = metrics.as_ref().map(|_| req.match_pattern());
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
        Ok(r) => r.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    let elapsed = start.elapsed().as_secs_f64();
    if let (Some(m), Some(route)) = (&metrics, &route) {
        m.http(
            route.as_deref().unwrap_or(UNMATCHED),
            method_label(method.as_str()),
            status.as_str(),
            elapsed,
        );
    }
    log::info!(
        target: "dzdesk_auth::access",
        "{peer} \"{method} {path}\" {} {:.1}ms id={}",
        status.as_u16(),
        elapsed * 1000.0,
        String::from_utf8_lossy(id.as_bytes())
    );
    match res {
        Ok(mut r) => {
            r.headers_mut().insert(REQUEST_ID, id);
            Ok(r)
        }
        Err(inner) => Err(WithRequestId { inner, id }.into()),
    }
}

/// An error answer (rendered later, by whoever is outside) that still
/// carries its `X-Request-Id`.
#[derive(Debug)]
struct WithRequestId {
    inner: actix_web::Error,
    id: HeaderValue,
}

impl std::fmt::Display for WithRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl ResponseError for WithRequestId {
    fn status_code(&self) -> StatusCode {
        self.inner.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = self.inner.error_response();
        resp.headers_mut().insert(REQUEST_ID, self.id.clone());
        resp
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_visible_tokens() {
        assert!(sane_request_id(b"0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(sane_request_id(b"Root=1-5759e988-bd862e3fe1be46a994272793"));
        assert!(sane_request_id(&[b'a'; MAX_REQUEST_ID]));
        assert!(!sane_request_id(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!sane_request_id(b""));
        for bad in [&b"a b"[..], b"a\nb", b"a\"b", b"\xc3\xa9", b"a;b", b"a,b"] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
