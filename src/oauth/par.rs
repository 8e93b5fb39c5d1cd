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

use crate::db::models::{Client, PushedRequestRow, RedirectProblem};
use crate::db::AnyConnection;
use crate::oauth::error::OAuthError;
use crate::oauth::params::{parameter_problem, PROTOCOL_PARAMS};
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

/// How many requests a public client may push a minute from one address:
/// anyone may push for a public client (RFC 9126 2.1: it identifies itself
/// by client_id alone), and each push stores a row.
pub const PUBLIC_PUSHES_PER_MIN: u32 = 60;

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
    // RFC 6749 3.1.2.3, as the authorization endpoint checks it.
    match client.authorization_redirect(params.get("redirect_uri")) {
        Ok(_) => {}
        Err(RedirectProblem::Unregistered) => {
            return Err(OAuthError::InvalidRequest(
                "redirect_uri is not registered for this client".into(),
            ))
        }
        Err(RedirectProblem::Missing) => {
            return Err(OAuthError::InvalidRequest(
                "redirect_uri is required: this client registered more than one".into(),
            ))
        }
    }
    // RFC 6749 3.3.
    if client.requestable_scopes(params.get("scope")).is_none() {
        return Err(OAuthError::InvalidScope(
            "the requested scope is unknown or not registered for this client".into(),
        ));
    }

    // The authorization request's own parameters, and only those (RFC 6749
    // 3.1: unrecognized parameters are ignored; client authentication is
    // no part of it).
    let mut stored = url::form_urlencoded::Serializer::new(String::new());
    stored.append_pair("client_id", &client.id);
    for key in PROTOCOL_PARAMS.iter().filter(|k| **k != "client_id") {
        if let Some(value) = params.get(key) {
            stored.append_pair(key, value);
        }
    }

    let reference = tokens::new_secret("");
    let at = now.naive_utc();
    let row = PushedRequestRow {
        id: tokens::hash_secret(&reference),
        client_id: client.id.clone(),
        params: stored.finish(),
        browser_hash: None,
        reauth_after: None,
        created_at: at,
        expires_at: at + Duration::seconds(PUSHED_TTL_SECS),
    };
    crate::db::write_transaction(conn, |conn| {
        if PushedRequestRow::count_waiting(conn, &client.id, at)? >= MAX_WAITING_PER_CLIENT {
            return Err(OAuthError::TooManyPushed(PUSHED_TTL_SECS));
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
    /// See [`PushedRequestRow::reauth_after`].
    pub reauth_after: Option<chrono::NaiveDateTime>,
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
        reauth_after: row.reauth_after,
    }))
}
