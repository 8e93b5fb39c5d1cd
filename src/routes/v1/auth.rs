//! The bearer extractor of `/v1/`: `Authorization: Bearer <access token or
//! API key>` (RFC 6750 2.1), resolved by `credentials` into a [`Principal`].

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;

use crate::api::principal::{self, Principal};
use crate::error::ApiError;
use crate::http::bearer;
use crate::state::AppState;

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
            let now = Utc::now();
            let resolved = state
                .credentials
                .resolve(&token, client_ip, now)
                .await
                .map_err(ApiError::internal)?;
            let principal = principal::principal_of(resolved)?;
            if let Some(key_id) = principal.api_key_id() {
                state.usage.record(key_id, now.naive_utc());
            }
            Ok(Authenticated(principal))
        })
    }
}
