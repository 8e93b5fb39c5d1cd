//! `/.well-known/*`. Changing a path in the route table means changing the
//! server metadata too.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::WebError;
use crate::state::AppState;

/// `GET /.well-known/jwks.json` (RFC 7517 5): the public signing keys, the
/// retired ones included until every token they signed has expired. Re-read
/// from the database on every call, so a rotation shows at once.
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let st = state.clone();
    let ring = state
        .db
        .run(move |conn| st.keys.reload(conn).map_err(WebError::internal))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(ring.jwks()))
}
