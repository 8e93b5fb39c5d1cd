//! The bearer extractor of `/v1/`: the [`Principal`] the scope's middleware
//! (`limits::rate_limit`) resolved from `Authorization: Bearer <access token
//! or API key>` (RFC 6750 2.1).

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::api::principal::Principal;
use crate::error::ApiError;
use crate::routes::v1::limits::{self, Authentication};
use crate::state::AppState;

/// An authenticated `/v1/` caller. Missing or invalid credentials: 401
/// `UNAUTHORIZED` with `WWW-Authenticate: Bearer`; an API key from outside
/// its account's allowlist: 403 `FORBIDDEN`.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let done = req.extensions().get::<Authentication>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let outcome = match done {
                Some(Authentication(outcome)) => outcome,
                // Outside the /v1 scope's middleware: resolve here.
                None => {
                    let state = req
                        .app_data::<web::Data<AppState>>()
                        .cloned()
                        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
                    limits::authenticate(&state, &req, state.client_ip(&req)).await
                }
            };
            outcome.map(Authenticated).map_err(|f| f.to_error())
        })
    }
}
