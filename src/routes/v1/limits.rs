//! The `/v1` scope's middleware: who is calling (`credentials`, once per
//! request) and whether their account's budget allows the request
//! (`ratelimit`). Every answer carries `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds, when
//! Remaining is back at Limit), 4xx answers included. Over the limit: 429
//! `RATE_LIMITED` with `Retry-After`, and the request does no work (no
//! handler, no `last_used_at`).
//!
//! An authenticated request counts against its account (the user, or the
//! client for client_credentials tokens) and its plan. A request without a
//! usable credential counts against its address (IPv6 per /64), at
//! `DZDESK_AUTH_FAILURES_PER_MIN`, so guessing keys is slow.

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use chrono::Utc;

use crate::api::principal::{self, Principal};
use crate::api::usage_log::{UsageLog, Use};
use crate::credentials::{Caller, Resolved};
use crate::error::ApiError;
use crate::http::bearer;
use crate::metrics::Throttled;
use crate::ratelimit::address_key;
use crate::ratelimit::gcra::Decision;
use crate::routes::cors;
use crate::state::AppState;

/// Why a request is not authenticated, kept for the extractor (ApiError
/// itself cannot be cloned).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Missing,
    Invalid,
    /// An access token with OIDC identity scopes only (403).
    NoApiScope,
    /// An API key used from outside its account's allowlist: the message,
    /// and the key (its usage log records the 403).
    IpRefused {
        message: String,
        key: UsedKey,
    },
    /// The credential could not be checked: the database is unavailable
    /// (503), or a bug of ours (500); logged where it happened.
    CheckFailed {
        unavailable: bool,
    },
}

impl Failure {
    pub(crate) fn to_error(&self) -> ApiError {
        match self {
            Failure::Missing => {
                ApiError::NoCredential("Missing token: send Authorization: Bearer <token>".into())
            }
            Failure::Invalid => ApiError::Unauthorized(principal::INVALID_TOKEN.into()),
            Failure::NoApiScope => {
                principal::insufficient(crate::domain::Scope::RequestsRead, principal::NO_API_SCOPE)
            }
            Failure::IpRefused { message, .. } => ApiError::Forbidden(message.clone()),
            Failure::CheckFailed { unavailable: true } => {
                ApiError::Unavailable(anyhow::anyhow!("the credential check failed"))
            }
            Failure::CheckFailed { unavailable: false } => {
                ApiError::Internal(anyhow::anyhow!("the credential check failed"))
            }
        }
    }
}

/// The outcome of authentication, left in the request's extensions for
/// the `Authenticated` extractor.
#[derive(Clone)]
pub(crate) struct Authentication(pub(crate) Result<Principal, Failure>);

/// Resolves the bearer credential of `req` (RFC 6750 2.1), sent from
/// `client_ip` (`AppState::client_ip`).
pub(crate) async fn authenticate(
    state: &AppState,
    req: &actix_web::HttpRequest,
    client_ip: Option<IpAddr>,
) -> Result<Principal, Failure> {
    let token = bearer(req).ok_or(Failure::Missing)?;
    let resolved = state
        .credentials
        .resolve_bearer(&token, client_ip, Utc::now())
        .await
        .map_err(|e| {
            let unavailable = crate::db::is_unavailable(&e.0);
            if unavailable {
                crate::db::log_unavailable(&e.0);
            } else {
                log::error!("/v1 authentication: {e}");
            }
            Failure::CheckFailed { unavailable }
        })?;
    let refused_key = match &resolved {
        Resolved::IpRefused { key_id, user_id } => Some(UsedKey {
            key_id: key_id.clone(),
            account: Caller::user_account_key(user_id),
        }),
        _ => None,
    };
    principal::principal_of(resolved).map_err(|e| match (e, refused_key) {
        (ApiError::Forbidden(message), Some(key)) => Failure::IpRefused { message, key },
        (ApiError::InsufficientScope { .. }, _) => Failure::NoApiScope,
        _ => Failure::Invalid,
    })
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    let pairs = [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", d.reset_epoch_secs().to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let started = std::time::Instant::now();
    // The client address, resolved once (proxies trusted or not).
    let client_ip = state.client_ip(req.request());
    let auth = authenticate(&state, req.request(), client_ip).await;
    // A page on another origin (oauth::cors): with an OAuth access token of
    // a client that registered the origin, or to read why it was refused
    // (no credential, an invalid one); never with an API key. Marked before
    // the rate limit, so that the page can read its 429.
    let cross_origin = match &auth {
        Ok(p) => cors::admit(&state, req.request(), p.client_id()).await,
        Err(
            Failure::Missing | Failure::Invalid | Failure::NoApiScope | Failure::CheckFailed { .. },
        ) => {
            cors::admit_failure(req.request());
            Ok(())
        }
        Err(Failure::IpRefused { .. }) => Ok(()),
    };
    // The usage log: every answer to a request made with an API key that
    // resolved (429 and the allowlist's 403 included).
    let used_key = match &auth {
        Ok(p) => p.api_key_id().map(|key_id| UsedKey {
            key_id: key_id.to_owned(),
            account: p.account_key(),
        }),
        Err(Failure::IpRefused { key, .. }) => Some(key.clone()),
        Err(_) => None,
    }
    .filter(|_| state.usage_log.is_enabled());
    // A credential that could not be checked (the database is away) is no
    // failed authentication to count against the address, and there is no
    // account to count against: counted, a client with a good key would be
    // told 429 RATE_LIMITED after 60 such answers instead of the truth (503).
    let unchecked = matches!(auth, Err(Failure::CheckFailed { .. }));
    let decision = if state.settings.rate_limits && !unchecked {
        let (key, limit) = match &auth {
            Ok(p) => (p.account_key(), p.account.plan.limit()),
            Err(_) => (address_key(client_ip), state.settings.auth_failures_per_min),
        };
        let now = Utc::now().timestamp_micros();
        let decision = state.limiter.check(&key, limit, now).await;
        if !decision.allowed {
            if let Some(m) = state.metrics() {
                m.throttled(if auth.is_ok() {
                    Throttled::Plan
                } else {
                    Throttled::Ip
                });
            }
            let mut resp = ApiError::RateLimited(format!(
                "Rate limit exceeded: {} requests per minute; retry in {} s",
                decision.limit,
                decision.retry_after_secs()
            ))
            .error_response();
            set_headers(resp.headers_mut(), &decision);
            if let Ok(v) = HeaderValue::from_str(&decision.retry_after_secs().to_string()) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            if let Some(key) = used_key {
                PendingUse::of(req.request(), key, client_ip, started)
                    .record(&state.usage_log, resp.status().as_u16());
            }
            return Ok(req.into_response(resp));
        }
        Some(decision)
    } else {
        None
    };
    if let Err(refused) = cross_origin {
        let mut resp = match refused {
            cors::AdmitError::Refused(_) => ApiError::Forbidden(
                "This credential may not be used from a web page on this origin: API keys never, OAuth access tokens only from an origin their client registered".into(),
            ),
            cors::AdmitError::Lookup(e) if crate::db::is_unavailable(&e) => {
                ApiError::Unavailable(e)
            }
            cors::AdmitError::Lookup(e) => ApiError::Internal(e),
        }
        .error_response();
        if let Some(d) = &decision {
            set_headers(resp.headers_mut(), d);
        }
        if let Some(key) = used_key {
            PendingUse::of(req.request(), key, client_ip, started)
                .record(&state.usage_log, resp.status().as_u16());
        }
        return Ok(req.into_response(resp));
    }
    if let Ok(p) = &auth {
        if let Some(key_id) = p.api_key_id() {
            state.usage.record(key_id, Utc::now().naive_utc());
        }
    }
    req.extensions_mut().insert(Authentication(auth));
    // Read before the call: the request must stay unshared for routing.
    let pending = used_key.map(|key| PendingUse::of(req.request(), key, client_ip, started));
    let res = next.call(req).await;
    if let Some(pending) = pending {
        let status = match &res {
            Ok(res) => res.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        pending.record(&state.usage_log, status.as_u16());
    }
    let mut res = res?.map_into_boxed_body();
    if let Some(d) = decision {
        set_headers(res.headers_mut(), &d);
    }
    Ok(res)
}

/// An API key a request was made with, and its account (the usage log's
/// share of its queue).
#[derive(Debug, Clone)]
pub(crate) struct UsedKey {
    key_id: String,
    account: String,
}

/// A request made with an API key, its answer still to come: what the
/// usage log keeps of it (the path only, never the query string; the client
/// address as the service resolves it), taken without copying the method or
/// the path (the request itself cannot be kept: it must stay unshared for
/// routing).
struct PendingUse {
    key: UsedKey,
    at: chrono::NaiveDateTime,
    method: actix_web::http::Method,
    uri: actix_web::http::Uri,
    client_ip: Option<IpAddr>,
    started: std::time::Instant,
}

impl PendingUse {
    fn of(
        req: &actix_web::HttpRequest,
        key: UsedKey,
        client_ip: Option<IpAddr>,
        started: std::time::Instant,
    ) -> Self {
        Self {
            key,
            at: Utc::now().naive_utc(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            client_ip,
            started,
        }
    }

    /// Records the request, answered `status` (queued: no I/O,
    /// `maintenance` writes it), with the time taken since it started.
    fn record(&self, log: &UsageLog, status: u16) {
        let duration_ms = u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX);
        log.record(
            Use::new(
                &self.key.key_id,
                self.at,
                self.method.as_str(),
                self.uri.path(),
                status,
                self.client_ip,
                duration_ms,
            )
            .of_account(&self.key.account),
        );
    }
}
