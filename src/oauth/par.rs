//! Pushed authorization requests (RFC 9126): what the PAR endpoint stores,
//! and how the authorization endpoint finds it again. No HTTP types; the
//! current time comes in as an argument.
//!
//! A `request_uri` is single use (RFC 9126 7.3): the first browser that
//! brings it takes it, and the request is then bound to that browser (a
//! random cookie whose hash the row keeps) until the request ends with a
//! redirect to the client, which deletes the row in the code's own
//! transaction. Sign-in and consent pages come back to the same
//! `client_id` + `request_uri`; the pushed parameters never travel
//! through the browser.

use chrono::{DateTime, Duration, Utc};

use crate::db::models::{Client, PushedRequestRow};
use crate::db::AnyConnection;
use crate::domain::{GrantType, ScopeSet};
use crate::oauth::authorize::parameter_problem;
use crate::oauth::error::OAuthError;
use crate::oauth::request::FormParams;
use crate::tokens;

/// RFC 9126 2.2: "urn:ietf:params:oauth:request_uri:<reference-value>".
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a pushed request waits for its browser (RFC 9126 2.2: "between
/// 5 and 600 seconds"; the issue asks for 60).
pub const PUSHED_TTL_SECS: i64 = 60;

/// How long a browser that took a request has to sign in and consent.
pub const TAKEN_TTL_SECS: i64 = 600;

/// The most requests one client may have waiting (pushed, not taken yet):
/// the table cannot be grown without bound by one client's credentials.
pub const MAX_WAITING_PER_CLIENT: i64 = 1000;

/// The page text for a request_uri that cannot be used. RFC 9126 4 and
/// OIDC Core 3.1.2.6 name the error `invalid_request_uri`; the redirect URI
/// is among the pushed parameters, so nothing is trusted to redirect to.
pub const INVALID_REQUEST_URI: &str = "invalid_request_uri: this request_uri is unknown, expired or already used, or belongs to another client or browser.";

/// Client authentication (RFC 9126 2.1: "the client authenticates ... as
/// for the token endpoint"), not part of the authorization request.
const CLIENT_AUTH_PARAMS: [&str; 4] = [
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// The PAR endpoint's answer (RFC 9126 2.2).
#[derive(Debug)]
pub struct Pushed {
    pub request_uri: String,
    pub expires_in: i64,
}

/// `POST /oauth/par` for an authenticated client. RFC 9126 2.1: "The
/// authorization server MUST process the request as follows: ... validate
/// the pushed request as it would an authorization request". Blocking.
pub fn push(
    conn: &mut AnyConnection,
    client: &Client,
    params: &FormParams,
    now: DateTime<Utc>,
) -> Result<Pushed, OAuthError> {
    // RFC 9126 2.1: "The request_uri authorization request parameter is
    // one exception, and it MUST NOT be provided."
    if params.get("request_uri").is_some() {
        return Err(OAuthError::InvalidRequest(
            "request_uri cannot be pushed".into(),
        ));
    }
    // RFC 6749 4.1.2.1 unauthorized_client.
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not use the authorization code grant".into(),
        ));
    }
    // RFC 6749 3.1.2.3: exact match with a registered URI; optional only
    // for a client with one.
    match params.get("redirect_uri") {
        Some(uri) if client.match_redirect_uri(uri).is_some() => {}
        Some(_) => {
            return Err(OAuthError::InvalidRequest(
                "redirect_uri is not registered for this client".into(),
            ))
        }
        None if client.sole_redirect_uri().is_some() => {}
        None => {
            return Err(OAuthError::InvalidRequest(
                "redirect_uri is required: this client registered more than one".into(),
            ))
        }
    }
    // RFC 6749 3.3: within the client's registration.
    if let Some(raw) = params.get("scope") {
        let requested = ScopeSet::parse(raw).map_err(OAuthError::InvalidScope)?;
        if requested.is_empty() || !client.scopes().covers(&requested) {
            return Err(OAuthError::InvalidScope(
                "the requested scope is not registered for this client".into(),
            ));
        }
    }
    let param = |key: &str| params.get(key).map(str::to_owned);
    if let Some((error, description)) = parameter_problem(client, &param) {
        return Err(match error {
            "unauthorized_client" => OAuthError::UnauthorizedClient(description),
            // unsupported_response_type, request_not_supported, ...: RFC
            // 9126 2.3 answers "as described in Section 5.2 of RFC 6749",
            // and the authorization endpoint's own codes say why.
            _ => OAuthError::AuthorizationRequest(error, description),
        });
    }

    let mut stored = url::form_urlencoded::Serializer::new(String::new());
    stored.append_pair("client_id", &client.id);
    let mut rest: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| !CLIENT_AUTH_PARAMS.contains(k))
        .collect();
    rest.sort_unstable();
    stored.extend_pairs(rest);

    let reference = tokens::new_secret("");
    let at = now.naive_utc();
    let row = PushedRequestRow {
        id: tokens::hash_secret(&reference),
        client_id: client.id.clone(),
        params: stored.finish(),
        browser_hash: None,
        created_at: at,
        expires_at: at + Duration::seconds(PUSHED_TTL_SECS),
    };
    crate::db::write_transaction(conn, |conn| {
        if PushedRequestRow::count_waiting(conn, &client.id, at)? >= MAX_WAITING_PER_CLIENT {
            return Err(OAuthError::TooManyPushed);
        }
        row.insert(conn)?;
        Ok(())
    })?;
    Ok(Pushed {
        request_uri: format!("{REQUEST_URI_PREFIX}{reference}"),
        expires_in: PUSHED_TTL_SECS,
    })
}

/// Is this `request_uri` one of ours (as opposed to a request object by
/// reference, which is not supported)?
pub fn is_pushed_reference(request_uri: &str) -> bool {
    request_uri.starts_with(REQUEST_URI_PREFIX)
}

/// A pushed request found for an authorization request.
#[derive(Debug)]
pub struct Resolved {
    pub id: String,
    pub browser_hash: String,
    /// The pushed parameters (form-encoded), `client_id` first.
    pub params: String,
}

/// RFC 9126 4: the authorization request `client_id` + `request_uri`
/// brought by the browser whose binding cookie is `browser`. `Ok(Err(..))`:
/// the page text for a request_uri that cannot be used. Blocking.
pub fn resolve(
    conn: &mut AnyConnection,
    client_id: &str,
    request_uri: &str,
    browser: &str,
    now: DateTime<Utc>,
) -> diesel::QueryResult<Result<Resolved, &'static str>> {
    let Some(reference) = request_uri.strip_prefix(REQUEST_URI_PREFIX) else {
        return Ok(Err(INVALID_REQUEST_URI));
    };
    let at = now.naive_utc();
    let id = tokens::hash_secret(reference);
    let Some(row) = PushedRequestRow::find_live(conn, &id, at)? else {
        return Ok(Err(INVALID_REQUEST_URI));
    };
    // RFC 9126 4: "the authorization server MUST ... check that the
    // client_id of the request matches the one of the pushed request".
    if row.client_id != client_id {
        return Ok(Err(INVALID_REQUEST_URI));
    }
    let browser_hash = tokens::hash_secret(browser);
    match &row.browser_hash {
        // RFC 9126 7.3: "the authorization server SHOULD make the request
        // URIs one-time use": the first browser takes it (one of two
        // racing browsers wins), ...
        None => {
            let until = at + Duration::seconds(TAKEN_TTL_SECS);
            if !PushedRequestRow::take(conn, &id, &browser_hash, at, until)? {
                return Ok(Err(INVALID_REQUEST_URI));
            }
        }
        // ... and only it may come back (after sign-in, with the consent
        // form); any other gets the replay's answer.
        Some(taken_by) => {
            if !tokens::constant_time_eq(taken_by.as_bytes(), browser_hash.as_bytes()) {
                return Ok(Err(INVALID_REQUEST_URI));
            }
        }
    }
    Ok(Ok(Resolved {
        id,
        browser_hash,
        params: row.params,
    }))
}
