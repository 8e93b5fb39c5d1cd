//! One rule per surface for the errors that arise before or around a
//! handler: a body too large, a wrong content type, a body that does not
//! decode, a method the path does not serve. actix answers those in plain
//! text by default; here every surface keeps its own shape:
//!
//! - the OAuth JSON endpoints (token, introspection, revocation,
//!   registration; [`oauth_json_endpoint`]): the RFC 6749 5.2 body, never
//!   cached;
//! - `/v1` (`routes::v1::scope`): the envelope;
//! - browser pages (`routes::web::configure_extractors`): the HTML error page.
//!
//! Each surface has two parts: the extractor settings (body limits, and the
//! error handlers of `FormConfig`, `JsonConfig`, `QueryConfig`, `PathConfig`)
//! and a middleware that re-shapes whatever still arrives in actix's own
//! form. `PayloadConfig` (behind `web::Bytes` and `String`) has no error
//! handler: its overflow, a plain-text 413, is caught by the middleware.

use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, UrlencodedError};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, Resource, ResponseError};
use futures_util::FutureExt;

use crate::http::{add_security_headers, rfc_error};
use crate::oauth::error::OAuthError;
use crate::oauth::registration::RegistrationError;

/// An error response actix (or anything but the surface's own error type)
/// produced: its status and a description that never quotes the request.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

fn describe(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this endpoint accepts",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed here",
        StatusCode::NOT_FOUND => "no such endpoint",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the request has an unsupported Content-Type",
        s if s.is_server_error() => "internal server error",
        _ => "the request could not be read",
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The refusal to re-shape, if `res` is an error response not already in
/// the surface's shape: one carrying an error that is not `ours`, or none
/// and a body that is not JSON (actix's bare 405).
pub(crate) fn refusal<B>(
    res: &ServiceResponse<B>,
    ours: fn(&actix_web::Error) -> bool,
) -> Option<Refusal> {
    let resp = res.response();
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let foreign = match resp.error() {
        Some(e) => !ours(e),
        None => !is_json(resp.headers()),
    };
    foreign.then(|| Refusal {
        status,
        message: describe(status),
    })
}

/// The same for an error a service returned instead of a response.
pub(crate) fn refusal_of_error(
    e: &actix_web::Error,
    ours: fn(&actix_web::Error) -> bool,
) -> Option<Refusal> {
    let status = e.as_response_error().status_code();
    (!ours(e)).then(|| Refusal {
        status,
        message: describe(status),
    })
}

/// A request the OAuth JSON endpoints refuse before their handler runs
/// (RFC 6749 5.2 `invalid_request`: "The request is missing a required
/// parameter, includes an invalid parameter value, ... or is otherwise
/// malformed"), with the status actix chose (413 for a body too large).
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct RequestRefused {
    status: StatusCode,
    description: String,
}

impl RequestRefused {
    fn new(status: StatusCode, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
        }
    }
}

impl From<Refusal> for RequestRefused {
    fn from(r: Refusal) -> Self {
        Self::new(r.status, r.message)
    }
}

impl ResponseError for RequestRefused {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let error = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request"
        };
        rfc_error(self.status, error, self.description.clone())
    }
}

/// A handler of the OAuth JSON surface panicked: an opaque `server_error`.
/// Returned as an error: [`harden`] adds the security headers.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked")]
struct Panicked;

impl ResponseError for Panicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        RequestRefused::new(status, describe(status)).error_response()
    }
}

fn too_large(limit: usize) -> RequestRefused {
    RequestRefused::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {} KiB", limit / 1024),
    )
}

fn form_error(e: &UrlencodedError, limit: usize) -> RequestRefused {
    match e {
        UrlencodedError::Overflow { .. } => too_large(limit),
        UrlencodedError::ContentType => RequestRefused::new(
            StatusCode::BAD_REQUEST,
            "the body must be application/x-www-form-urlencoded",
        ),
        _ => RequestRefused::new(
            StatusCode::BAD_REQUEST,
            "the body is not valid application/x-www-form-urlencoded",
        ),
    }
}

fn json_error(e: &JsonPayloadError, limit: usize) -> RequestRefused {
    match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            too_large(limit)
        }
        JsonPayloadError::ContentType => {
            RequestRefused::new(StatusCode::BAD_REQUEST, "the body must be application/json")
        }
        // serde's message can quote the submitted values: keep it generic.
        _ => RequestRefused::new(StatusCode::BAD_REQUEST, "the body is not valid JSON"),
    }
}

fn is_oauth_error(e: &actix_web::Error) -> bool {
    e.as_error::<OAuthError>().is_some()
        || e.as_error::<RegistrationError>().is_some()
        || e.as_error::<RequestRefused>().is_some()
        || e.as_error::<Panicked>().is_some()
}

/// The OAuth JSON endpoints' rule: anything actix would answer in its own
/// form gets the RFC 6749 5.2 body instead (a 405 keeps its `Allow`), and a
/// panicking handler an opaque `server_error` (outside, the access log's
/// guard would answer with the HTML page).
async fn oauth_json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(Ok(res)) => res,
        Err(_) => {
            // The access log's line names the path.
            log::error!("a handler of the OAuth JSON surface panicked");
            return Err(Panicked.into());
        }
        Ok(Err(e)) => {
            return Err(match refusal_of_error(&e, is_oauth_error) {
                Some(r) => RequestRefused::from(r).into(),
                None => e,
            })
        }
    };
    let Some(r) = refusal(&res, is_oauth_error) else {
        return Ok(res.map_into_boxed_body());
    };
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut resp = HttpResponse::from_error(RequestRefused::from(r));
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    Ok(res.into_response(resp))
}

/// A resource of the OAuth JSON surface (token, introspection, revocation,
/// registration): bodies of at most `body_limit` bytes (a larger one is 413),
/// and every error, whatever its cause, in the RFC 6749 5.2 shape. The body
/// limit applies however the body arrives (`Content-Length` or chunked).
pub fn oauth_json_endpoint(
    path: &str,
    body_limit: usize,
) -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(
            web::FormConfig::default()
                .limit(body_limit)
                .error_handler(move |e, _| form_error(&e, body_limit).into()),
        )
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(move |e, _| json_error(&e, body_limit).into()),
        )
        .app_data(web::QueryConfig::default().error_handler(|_, _| {
            RequestRefused::new(StatusCode::BAD_REQUEST, "invalid query string").into()
        }))
        .app_data(web::PathConfig::default().error_handler(|_, _| {
            RequestRefused::new(StatusCode::BAD_REQUEST, "invalid path parameter").into()
        }))
        .wrap(from_fn(oauth_json_errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{init_service, try_call_service, TestRequest};
    use actix_web::App;

    async fn explode() -> HttpResponse {
        panic!("secret detail");
    }

    async fn echo(body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }

    #[actix_web::test]
    async fn a_panic_an_overflow_and_a_bare_405_get_the_rfc_body() {
        let app = init_service(
            App::new()
                .app_data(Hsts(true))
                .wrap(from_fn(harden))
                .service(oauth_json_endpoint("/panic", 16).route(web::post().to(explode)))
                .service(oauth_json_endpoint("/echo", 16).route(web::post().to(echo))),
        )
        .await;
        let cases = [
            (TestRequest::post().uri("/panic"), 500, "server_error"),
            (
                TestRequest::post().uri("/echo").set_payload("x".repeat(17)),
                413,
                "invalid_request",
            ),
            (TestRequest::get().uri("/echo"), 405, "invalid_request"),
        ];
        for (req, status, code) in cases {
            // An error is what the server renders with `error_response`.
            let resp = match try_call_service(&app, req.to_request()).await {
                Ok(res) => res.into_parts().1,
                Err(e) => e.error_response(),
            };
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
            if status == 500 {
                assert_eq!(resp.headers().get("x-frame-options").unwrap(), "DENY");
                assert_eq!(
                    resp.headers().get("strict-transport-security").unwrap(),
                    "max-age=31536000"
                );
            }
            let bytes = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["error"], code, "{body}");
            assert!(!body.to_string().contains("secret"), "{body}");
        }
        let ok = TestRequest::post().uri("/echo").set_payload("x".repeat(16));
        let resp = try_call_service(&app, ok.to_request()).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// The whole-request deadline (`DZDESK_REQUEST_TIMEOUT_SECS`), as app data
/// for [`deadline`].
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub std::time::Duration);

/// A request that missed its deadline, answered in its surface's shape.
#[derive(Debug)]
struct TimedOut {
    path: String,
    secs: u64,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request did not arrive within {} s", self.secs)
    }
}

impl ResponseError for TimedOut {
    fn status_code(&self) -> StatusCode {
        StatusCode::REQUEST_TIMEOUT
    }

    /// Returned as an error (the request itself is gone with the cancelled
    /// handler; [`harden`] adds the security headers), and closes the
    /// connection: its body was never read to the end.
    fn error_response(&self) -> HttpResponse {
        let message = format!("The request did not arrive within {} s", self.secs);
        let mut resp = match Surface::of(&self.path) {
            Surface::Api => crate::error::ApiError::RequestTimeout(message).error_response(),
            Surface::OAuth => {
                RequestRefused::new(StatusCode::REQUEST_TIMEOUT, message).error_response()
            }
            Surface::Browser | Surface::Probe => {
                crate::error::WebError::RequestTimeout.error_response()
            }
        };
        resp.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        resp
    }
}

/// Every request, its body included, is handled within the deadline, or
/// answered 408 and its connection closed: a client sending one byte every
/// two seconds held a socket for minutes, and a few hundred of them ran the
/// process out of file descriptors. The handler is dropped at the deadline;
/// database work it handed to the blocking pool runs to its end (commit or
/// rollback), never half-written.
pub async fn deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(RequestDeadline(limit)) = req.app_data::<RequestDeadline>().copied() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    // Not the request itself: routing needs it unshared.
    let path = req.path().to_owned();
    match actix_web::rt::time::timeout(limit, next.call(req)).await {
        Ok(res) => res.map(ServiceResponse::map_into_boxed_body),
        Err(_) => Err(TimedOut {
            path,
            secs: limit.as_secs(),
        }
        .into()),
    }
}

/// The surfaces of the service, by path: each answers in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/v1`: the envelope.
    Api,
    /// `/oauth/...`: the RFC 6749 5.2 body.
    OAuth,
    /// `/healthz` and `/readyz`: for load balancers and orchestrators.
    Probe,
    /// Everything else: HTML pages.
    Browser,
}

impl Surface {
    pub fn of(path: &str) -> Self {
        if path == "/v1" || path.starts_with("/v1/") {
            Surface::Api
        } else if path.starts_with("/oauth/") {
            Surface::OAuth
        } else if path == "/healthz" || path == "/readyz" {
            Surface::Probe
        } else {
            Surface::Browser
        }
    }
}

/// Whether responses carry HSTS (production mode), as app data for
/// [`harden`].
#[derive(Debug, Clone, Copy)]
pub struct Hsts(pub bool);

/// The security headers (and HSTS in production mode) on every response,
/// an error's included: an error returned through the middlewares (a
/// deadline missed, a panic) is rendered later, without the request, so it
/// is wrapped in one that adds them when it is.
pub async fn harden(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let hsts = req.app_data::<Hsts>().is_some_and(|h| h.0);
    match next.call(req).await {
        Ok(mut res) => {
            add_security_headers(res.headers_mut(), hsts);
            Ok(res.map_into_boxed_body())
        }
        Err(inner) => Err(Hardened { inner, hsts }.into()),
    }
}

#[derive(Debug)]
struct Hardened {
    inner: actix_web::Error,
    hsts: bool,
}

impl std::fmt::Display for Hardened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl ResponseError for Hardened {
    fn status_code(&self) -> StatusCode {
        self.inner.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = self.inner.error_response();
        add_security_headers(resp.headers_mut(), self.hsts);
        resp
    }
}

/// What production mode needs to tell an https request (app data for
/// [`https_only`]): whether HTTPS is required at all, who may say a request
/// came over https, and the public URL to send browsers to.
#[derive(Debug, Clone)]
pub struct HttpsOnly {
    pub required: bool,
    pub trusted_proxies: crate::domain::TrustedProxies,
    pub issuer: String,
}

/// "All API requests must use HTTPS" (the DZDESK API page; RFC 6749 3.1 and
/// 3.2: the authorization and token endpoints "MUST" use TLS). In production
/// mode ([`HttpsOnly::required`]), a request that did not arrive over
/// TLS, here or at a trusted proxy that says `X-Forwarded-Proto: https`, is
/// refused before anything reads its credential: `/v1` 403 `FORBIDDEN`,
/// `/oauth` 403 `invalid_request`, a browser page's GET or HEAD redirected to
/// the https URL (other methods 403). Probes pass over plain HTTP.
pub async fn https_only(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The issuer to send a refused request to: production mode, not over
    // https, and not a probe. Taken out here, while the request is borrowed.
    let surface = Surface::of(req.path());
    let refused = match req.app_data::<HttpsOnly>() {
        Some(policy) if policy.required && surface != Surface::Probe => {
            // True only on the rustls listener (actix's per-listener config).
            let secure = req.app_config().secure()
                || policy.trusted_proxies.forwarded_https(
                    req.peer_addr(),
                    // An unreadable value counts as one that is not https:
                    // dropping it would make an earlier one the last.
                    req.headers()
                        .get_all("x-forwarded-proto")
                        .map(|v| v.to_str().unwrap_or("")),
                );
            (!secure).then(|| policy.issuer.clone())
        }
        _ => None,
    };
    let Some(issuer) = refused else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    const MESSAGE: &str = "HTTPS is required: send this request to the https:// URL";
    let resp = match surface {
        Surface::Api => crate::error::ApiError::Forbidden(MESSAGE.into()).error_response(),
        Surface::OAuth => RequestRefused::new(StatusCode::FORBIDDEN, MESSAGE).error_response(),
        Surface::Browser | Surface::Probe
            if matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            ) =>
        {
            // The issuer, then the request's own path and query (an
            // origin-form target; anything else, `*` say, goes to `/`).
            let target = match req.uri().path_and_query().map(|p| p.as_str()) {
                Some(p) if p.starts_with('/') => format!("{issuer}{p}"),
                _ => format!("{issuer}/"),
            };
            HttpResponse::MovedPermanently()
                .insert_header((header::LOCATION, target))
                .finish()
        }
        Surface::Browser | Surface::Probe => crate::error::WebError::HttpsRequired.error_response(),
    };
    Ok(req.into_response(resp).map_into_boxed_body())
}
