//! OpenID Connect Core 1.0 on top of the code flow: the ID token (2, 3.1.3.6,
//! 12.2), the `sid` of a browser session, and the UserInfo answer (5.3). No
//! HTTP types: the grants and the handlers call these with the current time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credentials::jwt::KeyRing;
use crate::credentials::{Credential, Resolved, Subject};
use crate::db::models::User;
use crate::domain::{Scope, ScopeSet};
use crate::oauth::error::OAuthError;
use crate::oauth::request::TokenConfig;

/// The claims of an ID token (OIDC Core 2), as we issue them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    /// The user's id: the same as `/v1/me`'s `id`.
    pub sub: String,
    /// The client the token is for (2: "It MUST contain the OAuth 2.0
    /// client_id of the Relying Party as an audience value").
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user signed in (the browser session's start).
    pub auth_time: i64,
    /// The authorization request's, exactly (3.1.2.1, 3.1.3.6); only in the
    /// ID token of the code exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// 3.1.3.6: the left half of the SHA-256 of the access token.
    pub at_hash: String,
    /// The browser session (OpenID Front-Channel Logout 1.0 3): not the
    /// session's secret, nor its stored hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// With the `email` scope only (5.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// `at_hash` (OIDC Core 3.1.3.6): "the base64url encoding of the left-most
/// half of the hash of the octets of the ASCII representation of the
/// access_token value", SHA-256 for ES256.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The `sid` of a browser session, from its stored id (itself the SHA-256
/// of the cookie's secret): a further hash, so that the claim can be shown
/// to a client without naming the row.
pub fn sid_of(session_id: &str) -> String {
    let digest = Sha256::digest(format!("dzdesk-sid:{session_id}").as_bytes());
    hex::encode(&digest[..16])
}

/// What an ID token says about the sign-in behind a grant.
#[derive(Debug, Clone)]
pub struct Authentication {
    /// None (a grant from before OIDC, or without a browser sign-in): no
    /// ID token, rather than a made-up sign-in time.
    pub auth_time: Option<NaiveDateTime>,
    pub sid: Option<String>,
    /// The authorization request's `nonce` (code exchange only).
    pub nonce: Option<String>,
}

/// Whom an ID token is about and for: the user, the client, the granted
/// scope and the access token it accompanies.
pub struct IdTokenFor<'a> {
    pub user: &'a User,
    pub client_id: &'a str,
    pub scope: &'a ScopeSet,
    pub access_token: &'a str,
}

/// Signs the ID token that goes with an access token, if the scope holds
/// `openid` (None otherwise). Its lifetime is the access token's.
pub fn id_token(
    keys: &KeyRing,
    cfg: &TokenConfig,
    about: IdTokenFor<'_>,
    authn: &Authentication,
    now: DateTime<Utc>,
) -> Result<Option<String>, OAuthError> {
    let Some(auth_time) = authn
        .auth_time
        .filter(|_| about.scope.contains(Scope::Openid))
    else {
        return Ok(None);
    };
    let email = about.scope.contains(Scope::Email);
    let claims = IdClaims {
        iss: cfg.issuer.clone(),
        sub: about.user.id.clone(),
        aud: about.client_id.to_owned(),
        iat: now.timestamp(),
        exp: now.timestamp() + cfg.access_token_ttl.num_seconds(),
        auth_time: auth_time.and_utc().timestamp(),
        nonce: authn.nonce.clone(),
        at_hash: at_hash(about.access_token),
        sid: authn.sid.clone(),
        email: email.then(|| about.user.email.clone()),
        email_verified: email.then_some(false),
    };
    keys.sign_id_token(&claims)
        .map(Some)
        .map_err(OAuthError::server)
}

/// Why UserInfo refuses (OIDC Core 5.3.3: the RFC 6750 3 errors).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserInfoError {
    /// No bearer token at all (RFC 6750 3.1: a bare challenge).
    #[error("an access token is required")]
    Missing,
    /// Not an active access token of ours (an API key, an ID token, a
    /// refresh token, expired, revoked: RFC 6750 `invalid_token`).
    #[error("the access token is invalid, expired or revoked")]
    InvalidToken,
    /// An access token without `openid` (RFC 6750 `insufficient_scope`).
    #[error("the access token does not carry the openid scope")]
    InsufficientScope,
    /// A page on an origin the token's client did not register
    /// (`oauth::cors`).
    #[error("this access token may not be used from a web page on this origin")]
    Origin,
}

/// The UserInfo answer (OIDC Core 5.3.2) for an access token of an
/// `openid` grant: `sub` (the `/v1/me` id); `email` and `email_verified`
/// with `email`; `preferred_username` (the email: users have no other name)
/// with `profile`. `resolved`: the bearer credential as `/v1` resolves it.
pub fn userinfo(resolved: Option<Resolved>) -> Result<serde_json::Value, UserInfoError> {
    let caller = match resolved {
        None => return Err(UserInfoError::Missing),
        // An OAuth access token (RFC 9068) of a user: API keys and
        // client_credentials tokens name no signed-in user.
        Some(Resolved::Active(caller))
            if matches!(caller.credential, Credential::AccessToken(_)) =>
        {
            caller
        }
        Some(_) => return Err(UserInfoError::InvalidToken),
    };
    let Subject::User { id, email, .. } = &caller.subject else {
        return Err(UserInfoError::InvalidToken);
    };
    if !caller.scopes.contains(Scope::Openid) {
        return Err(UserInfoError::InsufficientScope);
    }
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), id.clone().into());
    if caller.scopes.contains(Scope::Email) {
        claims.insert("email".into(), email.clone().into());
        claims.insert("email_verified".into(), false.into());
    }
    if caller.scopes.contains(Scope::Profile) {
        claims.insert("preferred_username".into(), email.clone().into());
    }
    Ok(serde_json::Value::Object(claims))
}

/// The claims this server may put in ID tokens and UserInfo answers
/// (OpenID Connect Discovery 1.0 3, `claims_supported`).
pub const CLAIMS_SUPPORTED: [&str; 12] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "email",
    "email_verified",
    "preferred_username",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_sha256_in_base64url() {
        // OIDC Core A.3's example access token and at_hash are RS256
        // (SHA-256 as well).
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn a_sid_names_no_session_row() {
        let sid = sid_of("abc");
        assert_eq!(sid.len(), 32);
        assert_ne!(sid, "abc");
        assert_eq!(sid, sid_of("abc"));
        assert_ne!(sid, sid_of("abd"));
    }
}
