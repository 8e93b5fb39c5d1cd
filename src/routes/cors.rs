//! CORS on the wire: answers preflights and marks the answers a page on
//! another origin may read, by the rules of [`crate::oauth::cors`].
//!
//! A preflight (`OPTIONS` with `Access-Control-Request-Method`) names no
//! client (`client_id` is in the body, the access token in a header the
//! preflight does not carry), so it is answered for any well-formed https
//! (or loopback http) origin, as oidc-provider does for its client-based
//! CORS; the request that follows is where the client is known, and a page
//! on an origin its client did not register is refused there, before the
//! request has any effect ([`admit`]). Only answers that [`admit`] let
//! through carry `Access-Control-Allow-Origin` with the page's origin;
//! none carries `Access-Control-Allow-Credentials`.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use crate::db::models::Client;
use crate::domain::Origin;
use crate::oauth::cors::{admits, CrossOrigin, Surface};
use crate::state::AppState;

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// A request extension: the page's origin may read this answer.
#[derive(Debug, Clone)]
pub struct Admitted(pub String);

/// Why a page was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The request names a client that does not exist.
    UnknownClient,
    /// The client (or the credential: an API key) does not allow the
    /// page's origin.
    Origin,
}

/// Why [`admit`] could not decide: the client could not be read.
#[derive(Debug)]
pub enum AdmitError {
    Refused(Refused),
    Lookup(anyhow::Error),
}

fn origin_header(headers: &HeaderMap) -> Option<&str> {
    // Not text: kept as a value that matches no registered origin.
    headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// The client-bound check of a request (`client_id`: the client it names,
/// or whose access token it carries; None for an API key): a request
/// without `Origin`, or from the issuer's own origin, passes unmarked; a
/// page on an origin the client registered passes marked [`Admitted`]
/// (its answer, errors included, is readable there); any other page is
/// [`Refused`]. Reads the client from the cache, else the database
/// (cross-origin calls only).
pub async fn admit(
    state: &AppState,
    req: &HttpRequest,
    client_id: Option<&str>,
) -> Result<(), AdmitError> {
    let origin = match CrossOrigin::of(origin_header(req.headers()), &state.settings.issuer) {
        CrossOrigin::No => return Ok(()),
        CrossOrigin::From(origin) => origin,
    };
    let client = match client_id {
        Some(id) => find_client(state, id).await.map_err(AdmitError::Lookup)?,
        None => None,
    };
    if client_id.is_some() && client.is_none() {
        return Err(AdmitError::Refused(Refused::UnknownClient));
    }
    if admits(client.as_deref(), &origin) {
        req.extensions_mut().insert(Admitted(origin));
        Ok(())
    } else {
        log::debug!(
            "cross-origin call refused: {} is not an origin of client {}",
            origin.escape_debug(),
            client_id.unwrap_or("-").escape_debug()
        );
        Err(AdmitError::Refused(Refused::Origin))
    }
}

/// A failed authentication's answer (401, 429) says nothing about any
/// account: a page on any well-formed origin may read it, so that a
/// single-page app learns that its token expired rather than seeing a
/// network error.
pub fn admit_failure(req: &HttpRequest) {
    if let Some(origin) = origin_header(req.headers()).filter(|o| Origin::parse(o).is_ok()) {
        let origin = origin.to_owned();
        req.extensions_mut().insert(Admitted(origin));
    }
}

async fn find_client(state: &AppState, id: &str) -> anyhow::Result<Option<Arc<Client>>> {
    if let Some(client) = state.clients.get(id) {
        return Ok(Some(client));
    }
    let id = id.to_owned();
    let ticket = state.clients.ticket();
    let found = state
        .db
        .run(move |conn| Client::find(conn, &id).map_err(anyhow::Error::from))
        .await?;
    Ok(found.map(|c| state.clients.put(c, ticket)))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The answer to a preflight on `surface` from `origin`.
fn preflight(surface: Surface, origin: &str) -> HttpResponse {
    let mut resp = HttpResponse::new(StatusCode::NO_CONTENT);
    let headers = resp.headers_mut();
    set(
        headers,
        header::VARY,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    );
    let allow = match surface {
        Surface::Public => "*",
        // No client is known yet; the request itself is checked (module
        // documentation).
        _ if Origin::parse(origin).is_ok() => origin,
        _ => return resp,
    };
    set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    set(
        headers,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        surface.methods(),
    );
    if !surface.request_headers().is_empty() {
        set(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            surface.request_headers(),
        );
    }
    set(headers, header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
    resp
}

/// The middleware: preflights of the CORS surfaces are answered here;
/// other requests go on, and their answers get `Access-Control-Allow-Origin`
/// (`*` on the public documents, with or without an `Origin`: a shared cache
/// may serve a server's copy to a browser; the page's origin where [`admit`]
/// or [`admit_failure`] let it through, with `Vary: Origin`).
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(surface) = Surface::of(req.path()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let origin = origin_header(req.headers()).map(str::to_owned);
    if surface != Surface::Public && origin.is_none() {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    if let Some(origin) = &origin {
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Ok(req.into_response(preflight(surface, origin)));
        }
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let allow = match surface {
        Surface::Public => Some("*".to_owned()),
        Surface::Token | Surface::Api | Surface::UserInfo => res
            .request()
            .extensions()
            .get::<Admitted>()
            .map(|a| a.0.clone()),
    };
    let headers = res.headers_mut();
    if surface != Surface::Public {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allow) = allow {
        set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow);
        if !surface.exposed_headers().is_empty() {
            set(
                headers,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                surface.exposed_headers(),
            );
        }
    }
    Ok(res)
}
