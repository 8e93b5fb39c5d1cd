//! Small HTTP helpers that the route handlers, the middleware (telemetry)
//! and the server set-up (startup) share: the security headers of every
//! response, `no-store`, the bearer credential of a request, and the RFC
//! 6749 5.2 error body.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

/// Headers on every response: no framing (clickjacking on the consent page),
/// a same-origin-only CSP, no Referer (codes and state must not leak through
/// it), no MIME sniffing. `form-action` is left out on purpose: Chrome applies
/// it to the redirect after a form post, which would block the consent page's
/// redirect to the client.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
];

/// HSTS (RFC 6797 6.1), sent in production mode (an https issuer): a year.
pub const HSTS: (&str, &str) = ("strict-transport-security", "max-age=31536000");

/// Adds [`SECURITY_HEADERS`] (and [`HSTS`] if asked) where a handler has not
/// set its own value.
pub fn add_security_headers(headers: &mut HeaderMap, hsts: bool) {
    let hsts = hsts.then_some(HSTS);
    for (name, value) in SECURITY_HEADERS.iter().chain(hsts.iter()) {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// RFC 6749 5.1: "The authorization server MUST include the HTTP
/// Cache-Control response header field with a value of no-store ... as well as
/// the Pragma response header field with a value of no-cache" (on errors too).
pub fn no_store(resp: &mut HttpResponse) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The bearer credential of the Authorization header (RFC 6750 2.1: the
/// scheme is case-insensitive).
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The error body of the OAuth JSON endpoints (RFC 6749 5.2, RFC 7591
/// 3.2.2, RFC 7009 2.2.1, RFC 7662 2.3).
#[derive(Serialize)]
pub struct RfcErrorBody<'a> {
    pub error: &'a str,
    pub error_description: String,
}

/// An RFC error answer: the JSON body, never cached.
pub fn rfc_error(
    status: actix_web::http::StatusCode,
    error: &str,
    description: String,
) -> HttpResponse {
    let mut resp = HttpResponse::build(status).json(RfcErrorBody {
        error,
        error_description: description,
    });
    no_store(&mut resp);
    resp
}
