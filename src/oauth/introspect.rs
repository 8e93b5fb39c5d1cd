//! Token introspection (RFC 7662) and revocation (RFC 7009), given an
//! authenticated caller and the current time. What a token is and whether
//! it is active comes from `credentials` (the same check as `/v1`); this
//! module decides what the caller may see and shapes the answer.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::credentials::jwt::KeyRing;
use crate::credentials::{
    verify_access_token, Audience, Caller, Credential, Credentials, Kind, Resolved, Subject,
};
use crate::db::models::{Client, GrantRow, RefreshTokenRow, RevokedAccessToken};
use crate::db::AnyConnection;
use crate::domain::ScopeSet;
use crate::oauth::error::OAuthError;
use crate::tokens;

/// The introspection response (RFC 7662 2.2). Inactive is exactly
/// `{"active": false}`: nothing else is serialised.
#[derive(Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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

/// RFC 7662 2.2 / 4: a caller sees the tokens issued to itself; a client
/// registered with the introspection permission (internal services) sees all.
fn may_see(caller: &Client, token_client_id: &str) -> bool {
    caller.can_introspect || caller.id == token_client_id
}

/// `POST /oauth/introspect` for an authenticated confidential `caller`.
/// Inactive for any reason (unknown, malformed, tampered, wrong key, issuer
/// or audience, expired, revoked, grant revoked, user or client disabled or
/// deleted, or not the caller's to see): `{"active": false}`. `client_ip`
/// (our extension): the address the end client used the token from; an API
/// key whose account's allowlist excludes it (or, with an allowlist, a
/// request that names none) is inactive. The scope is what the credential
/// grants now: limited to the user's current role.
pub async fn introspect(
    credentials: &Credentials,
    caller: &Client,
    token: &str,
    client_ip: Option<IpAddr>,
    now: DateTime<Utc>,
) -> Result<Introspection, OAuthError> {
    // API keys are no client's tokens: only callers with the introspection
    // permission see them (RFC 7662 2.2). Checked before any lookup.
    if !caller.can_introspect && Kind::of(token) == Kind::ApiKey {
        return Ok(Introspection::inactive());
    }
    let resolved = credentials
        .resolve(token, client_ip, now)
        .await
        .map_err(|e| OAuthError::server(e.0))?;
    Ok(match resolved {
        Resolved::Active(active) => answer(caller, active, &credentials.audience.issuer),
        Resolved::IpRefused { .. } | Resolved::Invalid => Introspection::inactive(),
    })
}

/// The answer for an active credential (RFC 7662 2.2), if `caller` may see
/// it.
fn answer(caller: &Client, active: Caller, issuer: &str) -> Introspection {
    if let Some(client_id) = active.client_id() {
        if !may_see(caller, client_id) {
            return Introspection::inactive();
        }
    }
    let scopes = active.scopes;
    // The email only to a client the user let see it (an API scope, or
    // `email`): an `openid`-only grant promised the user id alone.
    let shows_email = !scopes.api_only().is_empty() || scopes.contains(crate::domain::Scope::Email);
    let username = match &active.subject {
        Subject::User { email, .. } if shows_email => Some(email.clone()),
        Subject::User { .. } | Subject::Service { .. } => None,
    };
    let user_id = active.user().map(str::to_owned);
    match active.credential {
        Credential::AccessToken(claims) => Introspection {
            active: true,
            // The token's own string when the role took nothing away (it
            // was written canonically when signed); else what is left.
            scope: Some(if ScopeSet::parse(&claims.scope) == Ok(scopes) {
                claims.scope
            } else {
                scopes.to_string()
            }),
            client_id: Some(claims.client_id),
            sub: Some(claims.sub),
            username,
            // RFC 7662 2.2: "as defined in Section 5.1 of OAuth 2.0".
            token_type: Some("Bearer"),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            jti: Some(claims.jti),
        },
        Credential::ApiKey {
            created_at,
            expires_at,
            ..
        } => Introspection {
            active: true,
            scope: Some(scopes.to_string()),
            client_id: None,
            sub: user_id,
            username,
            token_type: Some("api_key"),
            exp: expires_at.map(|t| t.and_utc().timestamp()),
            iat: Some(created_at.and_utc().timestamp()),
            iss: Some(issuer.to_owned()),
            aud: None,
            jti: None,
        },
        Credential::RefreshToken {
            client_id,
            created_at,
            expires_at,
        } => Introspection {
            active: true,
            scope: Some(scopes.to_string()),
            client_id: Some(client_id),
            sub: user_id,
            username,
            token_type: Some("refresh_token"),
            exp: Some(expires_at.and_utc().timestamp()),
            iat: Some(created_at.and_utc().timestamp()),
            iss: Some(issuer.to_owned()),
            aud: None,
            jti: None,
        },
    }
}

/// `POST /oauth/revoke` (RFC 7009 2.1) for an authenticated `caller`. An
/// access token is revoked by its `jti`; a refresh token revokes its whole
/// grant ("SHOULD also invalidate all access tokens based on the same
/// authorization grant"). Unknown, invalid, expired or already revoked
/// tokens: Ok (RFC 7009 2.2: "invalid tokens do not cause an error"). Ok
/// says whether this call revoked something (a valid access token of the
/// caller's, or a grant not yet revoked). A
/// token of another client: `unauthorized_client` (RFC 7009 2.1: "If this
/// validation fails, the request is refused and the client is informed").
pub fn revoke(
    conn: &mut AnyConnection,
    caller: &Client,
    token: &str,
    keys: &KeyRing,
    audience: &Audience,
    now: DateTime<Utc>,
) -> Result<bool, OAuthError> {
    let not_yours =
        || OAuthError::UnauthorizedClient("the token was not issued to this client".into());
    match Kind::of(token) {
        Kind::AccessToken => {
            let Some(claims) = verify_access_token(keys, audience, token, now) else {
                return Ok(false);
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
            Ok(true)
        }
        Kind::RefreshToken => {
            let Some((_, grant, _)) =
                RefreshTokenRow::find_with_grant(conn, &tokens::hash_secret(token))?
            else {
                return Ok(false);
            };
            if grant.client_id != caller.id {
                return Err(not_yours());
            }
            Ok(GrantRow::revoke(conn, &grant.id, now.naive_utc())?)
        }
        // RFC 7009 2.2.1: API keys are revoked by their owner (/v1/api-keys,
        // Settings > API), not by a client.
        Kind::ApiKey => Err(OAuthError::UnsupportedTokenType(
            "API keys are revoked by their owner at DELETE /v1/api-keys/{id}".into(),
        )),
        Kind::Unknown => Ok(false),
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
}
