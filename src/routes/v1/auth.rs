//! The bearer extractor of `/v1/`: `Authorization: Bearer <access token or
//! API key>` (RFC 6750 2.1) checked into a [`Principal`].

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;

use crate::api::principal::{self, Principal};
use crate::error::ApiError;
use crate::oauth::introspect::TokenCheck;
use crate::state::AppState;

/// The bearer credential of the Authorization header (RFC 6750 2.1: the
/// scheme is case-insensitive).
pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// An authenticated `/v1/` caller. Missing or invalid credentials: 401
/// `UNAUTHORIZED` with `WWW-Authenticate: Bearer`; an API key from outside
/// its account's allowlist: 403 `FORBIDDEN`.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        let client_ip = state.as_ref().and_then(|s| s.client_ip(req));
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let token = token.ok_or_else(|| {
                ApiError::Unauthorized("Missing token: send Authorization: Bearer <token>".into())
            })?;
            let principal = authenticate(&state, token, client_ip).await?;
            if let Some(key_id) = principal.api_key_id() {
                state.usage.record(key_id, Utc::now().naive_utc());
            }
            Ok(Authenticated(principal))
        })
    }
}

async fn authenticate(
    state: &web::Data<AppState>,
    token: String,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    let cfg = state.token_config();
    // Hot path: keys and revocation view in memory, no database and no
    // blocking-pool hop.
    if let Some(keys) = state.keys.cached() {
        let check = TokenCheck {
            keys: &keys,
            cfg: &cfg,
            view: &state.revocations,
            now: Utc::now(),
        };
        if let Some(result) = principal::authenticate_cached(&token, &check, client_ip) {
            return result;
        }
    }
    let st = state.clone();
    state
        .db
        .run(move |conn| {
            let keys = st
                .keys
                .for_token(conn, &token)
                .map_err(ApiError::internal)?;
            let check = TokenCheck {
                keys: &keys,
                cfg: &cfg,
                view: &st.revocations,
                now: Utc::now(),
            };
            principal::authenticate(conn, &token, &check, client_ip)
        })
        .await
}
