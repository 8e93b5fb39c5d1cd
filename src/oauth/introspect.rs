//! Token introspection (RFC 7662) and revocation (RFC 7009). Blocking (they
//! query): the handler runs them on the blocking pool with the authenticated
//! caller and the current time.
//!
//! An access token (a JWT) costs one signature check and either one indexed
//! query (`GrantStatus::load`: grant, client, user and the revoked-jti list
//! together) or, on PostgreSQL with the listener live, a lookup in the
//! in-process revocation view (`oauth::revocation_view`).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use serde::Serialize;

use crate::api::keys::{self as api_keys, API_KEY_PREFIX};
use crate::db::models::{
    ApiKeyStatus, Client, GrantRow, GrantStatus, RefreshTokenRow, RevokedAccessToken,
};
use crate::db::AnyConnection;
use crate::oauth::error::OAuthError;
use crate::oauth::grants::REFRESH_TOKEN_PREFIX;
use crate::oauth::jwt::{AccessClaims, KeyRing};
use crate::oauth::revocation_view::RevocationView;
use crate::oauth::token::TokenConfig;
use crate::tokens;

/// The introspection response (RFC 7662 2.2). Inactive is exactly
/// `{"active": false}`: nothing else is serialised.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Introspection {
    pub fn inactive() -> Self {
        Self::default()
    }
}

/// What a presented token is, by its shape. RFC 7662 2.1: `token_type_hint`
/// only tells where to look first and "MUST extend its search across all of
/// its supported token types" when wrong; our token types have disjoint
/// shapes, so the shape decides and the hint cannot change the answer.
pub(crate) enum Presented<'a> {
    Access(&'a str),
    Refresh(&'a str),
    ApiKey(&'a str),
    Unknown,
}

pub(crate) fn classify(token: &str) -> Presented<'_> {
    if token.starts_with(REFRESH_TOKEN_PREFIX) {
        Presented::Refresh(token)
    } else if token.starts_with(API_KEY_PREFIX) {
        Presented::ApiKey(token)
    } else if token.bytes().filter(|&b| b == b'.').count() == 2 {
        Presented::Access(token)
    } else {
        Presented::Unknown
    }
}

/// RFC 7662 2.2 / 4: a caller sees the tokens issued to itself; a client
/// registered with the introspection permission (internal services) sees all.
fn may_see(caller: &Client, token_client_id: &str) -> bool {
    caller.can_introspect || caller.id == token_client_id
}

/// A presented token with what decides whether it is active (None: its
/// grant or key does not exist). Lives on the stack for one request: the
/// large access variant is not boxed, which would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Resolved<'t> {
    /// A verified access token (signature, issuer, audience, expiry).
    Access(AccessClaims, Option<GrantStatus>),
    ApiKey(Option<Arc<ApiKeyStatus>>),
    /// A refresh token, not looked up (only introspection answers for it).
    Refresh(&'t str),
    /// Malformed, unknown shape, or an access token that fails verification.
    Invalid,
}

/// What checking a token needs besides the token: the signing keys, the
/// issuer's settings, the revocation view and the current time.
#[derive(Clone, Copy)]
pub struct TokenCheck<'a> {
    pub keys: &'a KeyRing,
    pub cfg: &'a TokenConfig,
    pub view: &'a RevocationView,
    pub now: DateTime<Utc>,
}

impl TokenCheck<'_> {
    pub(crate) fn verified(&self, jwt: &str) -> Option<AccessClaims> {
        verified(self.keys, self.cfg, jwt, self.now)
    }

    /// What `token` is and the status that decides it, from memory alone
    /// (no I/O but one SHA-256 for an API key). None: only the database can
    /// tell ([`TokenCheck::resolve`]): a valid token whose grant or key the
    /// view does not hold (or is not live), a refresh token, or an access
    /// token naming a key this ring lacks (the database path reloads).
    pub(crate) fn resolve_cached<'t>(&self, token: &'t str) -> Option<Resolved<'t>> {
        match classify(token) {
            Presented::Access(jwt) => {
                let Some(claims) = self.verified(jwt) else {
                    // Only a failure is worth the header decode.
                    return (!names_unknown_key(jwt, self.keys)).then_some(Resolved::Invalid);
                };
                let status = self.view.lookup(&claims.grant_id, &claims.jti)?;
                Some(Resolved::Access(claims, Some(status)))
            }
            Presented::ApiKey(key) => {
                let status = self.view.lookup_key(&tokens::hash_secret(key))?;
                Some(Resolved::ApiKey(Some(status)))
            }
            Presented::Refresh(refresh) => Some(Resolved::Refresh(refresh)),
            Presented::Unknown => Some(Resolved::Invalid),
        }
    }

    /// What `token` is and the status that decides it, read from the
    /// database (and kept in the view). Blocking.
    pub(crate) fn resolve<'t>(
        &self,
        conn: &mut AnyConnection,
        token: &'t str,
    ) -> QueryResult<Resolved<'t>> {
        Ok(match classify(token) {
            Presented::Access(jwt) => match self.verified(jwt) {
                Some(claims) => {
                    let status = self.grant_status(conn, &claims)?;
                    Resolved::Access(claims, status)
                }
                None => Resolved::Invalid,
            },
            Presented::ApiKey(key) => {
                Resolved::ApiKey(self.key_status(conn, &tokens::hash_secret(key))?)
            }
            Presented::Refresh(refresh) => Resolved::Refresh(refresh),
            Presented::Unknown => Resolved::Invalid,
        })
    }

    /// The status of a verified access token's grant, read from the
    /// database and kept in the view if nothing raced the read. Blocking.
    pub(crate) fn grant_status(
        &self,
        conn: &mut AnyConnection,
        claims: &AccessClaims,
    ) -> QueryResult<Option<GrantStatus>> {
        let generation = self.view.generation();
        let status = GrantStatus::load(conn, &claims.grant_id, &claims.jti)?;
        if let (Some(generation), Some(status)) = (generation, &status) {
            self.view
                .remember(&claims.grant_id, &claims.jti, status, generation);
        }
        Ok(status)
    }

    /// The status of the API key whose SHA-256 is `key_hash`, read from the
    /// database and kept in the view likewise. Blocking.
    pub(crate) fn key_status(
        &self,
        conn: &mut AnyConnection,
        key_hash: &str,
    ) -> QueryResult<Option<Arc<ApiKeyStatus>>> {
        let generation = self.view.generation();
        let status = ApiKeyStatus::load(conn, key_hash)?.map(Arc::new);
        if let (Some(generation), Some(status)) = (generation, &status) {
            self.view.remember_key(key_hash, status.clone(), generation);
        }
        Ok(status)
    }
}

/// Verifies an access token: signature with the key its `kid` names (ES256
/// pinned), `typ`, `iss`, `aud`, `exp` (RFC 9068 4).
fn verified(
    keys: &KeyRing,
    cfg: &TokenConfig,
    jwt: &str,
    now: DateTime<Utc>,
) -> Option<AccessClaims> {
    keys.verify_cached(jwt, &cfg.issuer, &cfg.audience, now.timestamp())
        .ok()
        // RFC 7662 2.2: an expired token is not active. The verifier's
        // leeway is for clock skew between parties; here the issuer's own
        // clock decides.
        .filter(|c| c.exp > now.timestamp())
}

/// `POST /oauth/introspect` for an authenticated confidential `caller`.
/// Inactive for any reason (unknown, malformed, tampered, wrong key, issuer
/// or audience, expired, revoked, grant revoked, user or client disabled or
/// deleted, or not the caller's to see): `{"active": false}`. `client_ip`
/// (our extension): the address the end client used the token from; an API
/// key whose account's allowlist excludes it is inactive.
pub fn introspect(
    conn: &mut AnyConnection,
    caller: &Client,
    token: &str,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Result<Introspection, OAuthError> {
    if hidden_key(caller, token) {
        return Ok(Introspection::inactive());
    }
    Ok(match check.resolve(conn, token)? {
        Resolved::Access(claims, status) => access_answer(claims, status, caller),
        Resolved::ApiKey(status) => key_answer(status.as_deref(), check, client_ip),
        Resolved::Refresh(refresh) => {
            return introspect_refresh(conn, caller, refresh, check.cfg, check.now)
        }
        Resolved::Invalid => Introspection::inactive(),
    })
}

/// API keys are no client's tokens: only callers with the introspection
/// permission see them (RFC 7662 2.2). Checked before any lookup.
fn hidden_key(caller: &Client, token: &str) -> bool {
    !caller.can_introspect && matches!(classify(token), Presented::ApiKey(_))
}

/// Introspection from memory alone, when possible: a token that fails
/// verification or is not ours needs nothing else; a valid access token or
/// API key needs the revocation view to be live and to hold its grant or
/// key. None: ask the database ([`introspect`]), which also reloads the
/// keys when the token names a key this ring lacks. No I/O (one SHA-256 for
/// an API key).
pub fn introspect_cached(
    caller: &Client,
    token: &str,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Option<Introspection> {
    if hidden_key(caller, token) {
        return Some(Introspection::inactive());
    }
    match check.resolve_cached(token)? {
        Resolved::Access(claims, status) => Some(access_answer(claims, status, caller)),
        Resolved::ApiKey(status) => Some(key_answer(status.as_deref(), check, client_ip)),
        Resolved::Refresh(_) => None,
        Resolved::Invalid => Some(Introspection::inactive()),
    }
}

/// The answer for an API key given its status (RFC 7662 2.2, with
/// `token_type` "api_key"). Inactive when unusable, or when the account has
/// an allowlist and `client_ip` is missing or outside it.
fn key_answer(
    status: Option<&ApiKeyStatus>,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Introspection {
    let Some(status) = status else {
        return Introspection::inactive();
    };
    // Fail closed: a key restricted to some addresses is active only for a
    // caller that says where it was used from, and only from there.
    let ip_refused = !status.ip_allowlist.allows(client_ip);
    if !api_keys::usable(status, check.now) || ip_refused {
        return Introspection::inactive();
    }
    Introspection {
        active: true,
        scope: Some(api_keys::effective_scopes(status).to_string()),
        client_id: None,
        sub: Some(status.user_id.clone()),
        username: Some(status.email.clone()),
        token_type: Some("api_key"),
        exp: status.expires_at.map(|t| t.and_utc().timestamp()),
        iat: Some(status.created_at.and_utc().timestamp()),
        iss: Some(check.cfg.issuer.clone()),
        aud: None,
        jti: None,
    }
}

/// An access token naming a key `keys` does not hold: perhaps one a newer
/// key ring has (`keys rotate`); worth a throttled reload before answering.
pub fn names_unknown_key(token: &str, keys: &KeyRing) -> bool {
    matches!(classify(token), Presented::Access(_)) && !keys.knows_kid_of(token)
}

/// The answer for a verified access token given its grant's status.
fn access_answer(
    claims: AccessClaims,
    status: Option<GrantStatus>,
    caller: &Client,
) -> Introspection {
    let Some(status) = status else {
        return Introspection::inactive();
    };
    if !status.is_active()
        || status.client_id != claims.client_id
        || !may_see(caller, &claims.client_id)
    {
        return Introspection::inactive();
    }
    Introspection {
        active: true,
        scope: Some(claims.scope),
        client_id: Some(claims.client_id),
        sub: Some(claims.sub),
        username: status.email,
        // RFC 7662 2.2: "as defined in Section 5.1 of OAuth 2.0".
        token_type: Some("Bearer"),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        iss: Some(claims.iss),
        aud: Some(claims.aud),
        jti: Some(claims.jti),
    }
}

fn introspect_refresh(
    conn: &mut AnyConnection,
    caller: &Client,
    token: &str,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<Introspection, OAuthError> {
    let Some((row, grant, user)) =
        RefreshTokenRow::find_with_grant(conn, &tokens::hash_secret(token))?
    else {
        return Ok(Introspection::inactive());
    };
    let Some(status) = GrantStatus::load(conn, &grant.id, "")? else {
        return Ok(Introspection::inactive());
    };
    let usable = row.used_at.is_none() && row.expires_at > now.naive_utc();
    if !usable || !status.is_active() || !may_see(caller, &grant.client_id) {
        return Ok(Introspection::inactive());
    }
    Ok(Introspection {
        active: true,
        scope: Some(row.scopes),
        client_id: Some(grant.client_id),
        sub: Some(user.id),
        username: Some(user.email),
        token_type: Some("refresh_token"),
        exp: Some(row.expires_at.and_utc().timestamp()),
        iat: Some(row.created_at.and_utc().timestamp()),
        iss: Some(cfg.issuer.clone()),
        aud: None,
        jti: None,
    })
}

/// `POST /oauth/revoke` (RFC 7009 2.1) for an authenticated `caller`. An
/// access token is revoked by its `jti`; a refresh token revokes its whole
/// grant ("SHOULD also invalidate all access tokens based on the same
/// authorization grant"). Unknown, invalid, expired or already revoked
/// tokens: Ok (RFC 7009 2.2: "invalid tokens do not cause an error"). A
/// token of another client: `unauthorized_client` (RFC 7009 2.1: "If this
/// validation fails, the request is refused and the client is informed").
pub fn revoke(
    conn: &mut AnyConnection,
    caller: &Client,
    token: &str,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<(), OAuthError> {
    let not_yours =
        || OAuthError::UnauthorizedClient("the token was not issued to this client".into());
    match classify(token) {
        Presented::Access(jwt) => {
            let Some(claims) = verified(keys, cfg, jwt, now) else {
                return Ok(());
            };
            if claims.client_id != caller.id {
                return Err(not_yours());
            }
            let expires_at = DateTime::from_timestamp(claims.exp, 0)
                .map(|t| t.naive_utc())
                .unwrap_or_else(|| now.naive_utc());
            RevokedAccessToken {
                jti: claims.jti,
                grant_id: claims.grant_id,
                revoked_at: now.naive_utc(),
                expires_at,
            }
            .insert(conn)?;
            Ok(())
        }
        Presented::Refresh(refresh) => {
            let Some((_, grant, _)) =
                RefreshTokenRow::find_with_grant(conn, &tokens::hash_secret(refresh))?
            else {
                return Ok(());
            };
            if grant.client_id != caller.id {
                return Err(not_yours());
            }
            GrantRow::revoke(conn, &grant.id, now.naive_utc())?;
            Ok(())
        }
        // RFC 7009 2.2.1: API keys are revoked by their owner (/v1/api-keys,
        // Settings > API), not by a client.
        Presented::ApiKey(_) => Err(OAuthError::UnsupportedTokenType(
            "API keys are revoked by their owner at DELETE /v1/api-keys/{id}".into(),
        )),
        Presented::Unknown => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_is_exactly_active_false() {
        assert_eq!(
            serde_json::to_string(&Introspection::inactive()).unwrap(),
            r#"{"active":false}"#
        );
    }

    #[test]
    fn tokens_are_classified_by_shape() {
        assert!(matches!(classify("dzr_abc"), Presented::Refresh(_)));
        assert!(matches!(classify("a.b.c"), Presented::Access(_)));
        assert!(matches!(classify("dzd_abc"), Presented::ApiKey(_)));
        assert!(matches!(classify("a.b"), Presented::Unknown));
        assert!(matches!(classify(""), Presented::Unknown));
    }
}
