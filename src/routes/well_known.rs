//! `/.well-known/*`. Changing a path in the route table means changing the
//! server metadata too.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::WebError;
use crate::state::AppState;

/// `GET /.well-known/jwks.json` (RFC 7517 5): the public signing keys, the
/// retired ones included until every token they signed has expired. Served
/// from memory; re-read from the database after `DZDESK_KEY_RELOAD_SECS`, as
/// for signing, so a rotation shows on every instance within that interval.
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let ring = match state.keys.cached() {
        Some(ring) => ring,
        None => {
            let st = state.clone();
            state
                .db
                .run(move |conn| st.keys.current(conn).map_err(WebError::internal))
                .await?
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(ring.jwks()))
}
