//! The authorization_code grant (RFC 6749 4.1.3, RFC 7636 4.6) and the
//! refresh_token grant with rotation and reuse detection (RFC 6749 6, RFC
//! 9700 4.14). Blocking (they query): the handler runs them on the blocking
//! pool with an authenticated client and the current time.
//!
//! Codes are redeemed here rather than through oxide-auth's access-token flow:
//! that flow answers `invalid_request` for a used or mismatched code where RFC
//! 6749 5.2 requires `invalid_grant`, accepts a verifier for a code issued
//! without a challenge, and cannot revoke a grant on replay. PKCE itself is
//! still checked by oxide-auth's `Pkce` (constant-time S256 comparison).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use oxide_auth::frontends::simple::extensions::Pkce;
use oxide_auth::primitives::grant::Value;

use crate::credentials::jwt::KeyRing;
use crate::credentials::prefixes;
use crate::db::models::{
    AuthorizationCodeRow, Client, GrantRow, RefreshTokenRow, Rotated, Successor, User,
};
use crate::db::AnyConnection;
use crate::domain::{GrantType, ScopeSet};
use crate::oauth::error::OAuthError;
use crate::oauth::oidc;
use crate::oauth::request::{
    requested_scope, sign_access_token, FormParams, IssuedTokens, TokenConfig,
};
use crate::tokens;

/// Why a single-use transaction did not commit.
enum TxError {
    /// Another request consumed the code or rotated the token first.
    Lost,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

fn invalid_code() -> OAuthError {
    OAuthError::InvalidGrant("the authorization code is invalid, expired or already used".into())
}

fn invalid_refresh() -> OAuthError {
    OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked".into())
}

/// RFC 7636 4.6 and RFC 9700 4.8.2. A code issued with a challenge needs the
/// matching verifier; a code issued without one must not be redeemed with a
/// verifier (PKCE downgrade). Every mismatch is `invalid_grant`.
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    let fail = |why: &str| OAuthError::InvalidGrant(why.into());
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(fail(
            "code_verifier sent for a code issued without code_challenge",
        )),
        (Some(_), None) => Err(fail("code_verifier is required")),
        (Some(challenge), Some(verifier)) => {
            // RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~].
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            // oxide-auth's encoding of an S256 challenge is `<challenge>S`.
            let stored = Value::private(Some(format!("{challenge}S")));
            if well_formed
                && Pkce::required()
                    .verify(Some(stored), Some(Cow::Borrowed(verifier)))
                    .is_ok()
            {
                Ok(())
            } else {
                Err(fail("code_verifier does not match code_challenge"))
            }
        }
    }
}

/// Revokes every token issued from a code that is being replayed.
fn revoke_for_code(
    conn: &mut AnyConnection,
    code_id: &str,
    now: DateTime<Utc>,
) -> Result<(), OAuthError> {
    if let Some(grant_id) = AuthorizationCodeRow::find(conn, code_id)?.and_then(|r| r.grant_id) {
        if GrantRow::revoke(conn, &grant_id, now.naive_utc())? {
            log::warn!("authorization code replayed: grant {grant_id} revoked");
        }
    }
    Ok(())
}

fn new_refresh_row(
    grant_id: &str,
    scopes: &str,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> (String, RefreshTokenRow) {
    let token = tokens::new_secret(prefixes::REFRESH_TOKEN);
    let now = now.naive_utc();
    let row = RefreshTokenRow {
        id: tokens::hash_secret(&token),
        grant_id: grant_id.to_owned(),
        scopes: scopes.to_owned(),
        created_at: now,
        expires_at: now + cfg.refresh_token_ttl,
        used_at: None,
    };
    (token, row)
}

/// The user behind a grant, if still enabled.
fn active_user(conn: &mut AnyConnection, user_id: &str) -> Result<Option<User>, OAuthError> {
    Ok(User::find(conn, user_id)?.filter(|u| !u.disabled))
}

/// `grant_type=authorization_code` (RFC 6749 4.1.3).
pub fn authorization_code(
    conn: &mut AnyConnection,
    client: &Client,
    params: &FormParams,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::UnauthorizedClient(
            "this client is not registered for the authorization_code grant".into(),
        ));
    }
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
    let code_id = tokens::hash_secret(code);
    let row = AuthorizationCodeRow::find(conn, &code_id)?.ok_or_else(invalid_code)?;
    // RFC 6749 4.1.3: "ensure that the authorization code was issued to the
    // authenticated confidential client, or if the client is public, ensure
    // that the code was issued to client_id in the request". First of all:
    // a code of another client is just invalid, and may not trigger the
    // replay revocation below (anyone holding a public client_id could
    // otherwise end other users' grants with a leaked used code).
    if row.client_id != client.id {
        return Err(invalid_code());
    }
    // RFC 6749 4.1.2: "If an authorization code is used more than once, the
    // authorization server MUST deny the request and SHOULD revoke (when
    // possible) all tokens previously issued based on that authorization code."
    if row.used_at.is_some() {
        revoke_for_code(conn, &code_id, now)?;
        return Err(invalid_code());
    }
    // RFC 6749 4.1.3: "verify that the authorization code is valid" (60 s).
    if row.expires_at <= now.naive_utc() {
        return Err(invalid_code());
    }
    // RFC 6749 4.1.3: redirect_uri is required when the authorization request
    // had one, "and their values MUST be identical". Without one (a client
    // with a single registered URI, 3.1.2.3; stored empty), the token
    // request may leave it out or name that URI.
    let matches = match (params.get("redirect_uri"), row.redirect_uri.is_empty()) {
        (None, true) => true,
        (Some(sent), true) => client.sole_redirect_uri().as_deref() == Some(sent),
        (sent, false) => sent == Some(row.redirect_uri.as_str()),
    };
    if !matches {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri does not match the authorization request".into(),
        ));
    }
    check_pkce(row.code_challenge.as_deref(), params.get("code_verifier"))?;
    let user = active_user(conn, &row.user_id)?.ok_or_else(invalid_code)?;
    let scope = ScopeSet::parse(&row.scopes).map_err(|e| OAuthError::server(anyhow::anyhow!(e)))?;

    let grant = GrantRow {
        id: tokens::new_id("grant_"),
        client_id: client.id.clone(),
        user_id: Some(user.id.clone()),
        scopes: row.scopes.clone(),
        created_at: now.naive_utc(),
        revoked_at: None,
        auth_time: row.auth_time,
        sid: row.sid.clone(),
    };
    let refresh = client
        .allows_grant(GrantType::RefreshToken)
        .then(|| new_refresh_row(&grant.id, &row.scopes, cfg, now));
    // Single use: the grant, the code's used_at and the refresh token commit
    // together, and only if `used_at IS NULL` still held.
    let committed = crate::db::write_transaction(conn, |conn| {
        grant.insert(conn)?;
        if !AuthorizationCodeRow::consume(conn, &code_id, &grant.id, now.naive_utc())? {
            return Err(TxError::Lost);
        }
        if let Some((_, row)) = &refresh {
            row.insert(conn)?;
        }
        Ok(())
    });
    match committed {
        Ok(()) => {}
        Err(TxError::Lost) => {
            // A concurrent redemption won: this one is a replay, by the
            // code's own client (checked above, RFC 6749 4.1.3, before
            // anything could be revoked).
            revoke_for_code(conn, &code_id, now)?;
            return Err(invalid_code());
        }
        Err(TxError::Db(e)) => return Err(e.into()),
    }
    let (access_token, expires_in) =
        sign_access_token(keys, cfg, &user.id, &client.id, &scope, &grant.id, now)?;
    // OIDC Core 3.1.3.3: the code exchange of an `openid` request returns an
    // ID token, with the request's nonce exactly (3.1.3.6).
    let authn = oidc::Authentication {
        auth_time: row.auth_time,
        sid: row.sid.clone(),
        nonce: row.nonce.clone(),
    };
    let about = oidc::IdTokenFor {
        user: &user,
        client_id: &client.id,
        scope: &scope,
        access_token: &access_token,
    };
    let id_token = oidc::id_token(keys, cfg, about, &authn, now)?;
    Ok(IssuedTokens {
        access_token,
        expires_in,
        scope,
        refresh_token: refresh.map(|(token, _)| token),
        id_token,
    })
}

/// `grant_type=refresh_token` (RFC 6749 6) with rotation: every use returns
/// a new refresh token and retires the presented one; presenting a retired
/// one revokes the whole grant (RFC 9700 4.14.2).
pub fn refresh_token(
    conn: &mut AnyConnection,
    client: &Client,
    params: &FormParams,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    if !client.allows_grant(GrantType::RefreshToken) {
        return Err(OAuthError::UnauthorizedClient(
            "this client is not registered for the refresh_token grant".into(),
        ));
    }
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
    let presented_id = tokens::hash_secret(presented);
    // The rotation: the rules the database checks at the moment of the
    // write (RefreshTokenRow::rotate: not used before, this client's, not
    // expired, the grant not revoked, the user not disabled), the presented
    // token marked used and its successor inserted, in one statement on
    // PostgreSQL.
    let token = tokens::new_secret(prefixes::REFRESH_TOKEN);
    let successor_id = tokens::hash_secret(&token);
    let successor = Successor {
        id: &successor_id,
        created_at: now.naive_utc(),
        expires_at: now.naive_utc() + cfg.refresh_token_ttl,
    };
    // The scope is checked against what the rotation read back, inside
    // its transaction: a refused scope leaves the token as it was.
    let rotated = RefreshTokenRow::rotate(
        conn,
        &presented_id,
        &client.id,
        &successor,
        now.naive_utc(),
        |rotated| permitted_scope(rotated, params, client),
    )?;
    let Some((rotated, scope)) = rotated else {
        return Err(refused(conn, &presented_id, client, now));
    };
    let Rotated {
        grant_id,
        grant_auth_time,
        grant_sid,
        user,
        ..
    } = rotated;
    let (access_token, expires_in) =
        sign_access_token(keys, cfg, &user.id, &client.id, &scope, &grant_id, now)?;
    // OIDC Core 12.2: a refresh of an `openid` grant returns an ID token with
    // the same sub, aud and auth_time (and no nonce).
    let authn = oidc::Authentication {
        auth_time: grant_auth_time,
        sid: grant_sid,
        nonce: None,
    };
    let about = oidc::IdTokenFor {
        user: &user,
        client_id: &client.id,
        scope: &scope,
        access_token: &access_token,
    };
    let id_token = oidc::id_token(keys, cfg, about, &authn, now)?;
    Ok(IssuedTokens {
        access_token,
        expires_in,
        scope,
        refresh_token: Some(token),
        id_token,
    })
}

/// Why a presented refresh token was not rotated, read again after the
/// rotation matched nothing; the grant is revoked on reuse. The rules, in
/// the order they are told apart (each one also a condition of
/// `RefreshTokenRow::rotate`):
fn refused(
    conn: &mut AnyConnection,
    presented_id: &str,
    client: &Client,
    now: DateTime<Utc>,
) -> OAuthError {
    let found = match RefreshTokenRow::find_with_grant(conn, presented_id) {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let Some((row, grant, _user)) = found else {
        return invalid_refresh();
    };
    // RFC 6749 6: "validate the refresh token and ensure that it was issued
    // to the authenticated client". Before anything else: another client's
    // token may not revoke its grant.
    if grant.client_id != client.id || grant.revoked_at.is_some() {
        return invalid_refresh();
    }
    // RFC 9700 4.14.2: a rotated token presented again means one of two
    // parties holds a stolen copy; revoke the grant so both lose access.
    // Also the loser of concurrent uses: the same token used twice.
    if row.used_at.is_some() {
        return revoke_reused(conn, &grant.id, now);
    }
    // Otherwise expired, or the user is disabled (or, raced with a rotation
    // undone meanwhile, neither): refused, nothing revoked.
    invalid_refresh()
}

/// RFC 6749 6: "The requested scope MUST NOT include any scope not
/// originally granted by the resource owner" (invalid_scope); narrower is
/// allowed, and the new refresh token keeps the original scope. Then what
/// the client and the user's role permit today.
fn permitted_scope(
    rotated: &Rotated,
    params: &FormParams,
    client: &Client,
) -> Result<ScopeSet, OAuthError> {
    let original = ScopeSet::parse(&rotated.token_scopes)
        .map_err(|e| OAuthError::server(anyhow::anyhow!(e)))?;
    let requested = requested_scope(params, &original)?;
    // `admin` covers every scope, the identity ones too; a refresh may
    // still not add openid, profile or email to a grant the user never gave
    // them for (no consent, no nonce, no sign-in behind an ID token).
    if requested
        .iter()
        .any(|s| s.is_identity() && !original.contains(s))
    {
        return Err(OAuthError::InvalidScope(
            "openid, profile and email can only be kept on refresh, not added".into(),
        ));
    }
    // What the client and the user's role permit today: a client narrowed
    // since, or an admin demoted to agent, gets no more than that (an agent
    // can never hold `admin`).
    let scope = requested
        .within(&client.scopes())
        .split_by_role(rotated.user.role())
        .0;
    if scope.is_empty() {
        return Err(OAuthError::InvalidGrant(
            "none of the granted scopes is permitted any more".into(),
        ));
    }
    Ok(scope)
}

/// Revokes the grant of a reused refresh token; the error to answer with.
fn revoke_reused(conn: &mut AnyConnection, grant_id: &str, now: DateTime<Utc>) -> OAuthError {
    match GrantRow::revoke(conn, grant_id, now.naive_utc()) {
        Ok(revoked) => {
            if revoked {
                log::warn!("refresh token reused: grant {grant_id} revoked");
            }
            OAuthError::RefreshTokenReused(invalid_refresh().to_string())
        }
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::Duration;
    use sha2::{Digest, Sha256};

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn challenge_of(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    #[test]
    fn pkce_matching_verifier_passes() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge_of(VERIFIER),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(check_pkce(Some(&challenge_of(VERIFIER)), Some(VERIFIER)).is_ok());
        assert!(check_pkce(None, None).is_ok());
    }

    #[test]
    fn pkce_mismatch_missing_and_downgrade_are_invalid_grant() {
        let challenge = challenge_of(VERIFIER);
        let other = "x".repeat(43);
        for (c, v) in [
            (Some(challenge.as_str()), Some(other.as_str())),
            (Some(challenge.as_str()), None),
            (None, Some(VERIFIER)),
            (Some(challenge.as_str()), Some("short")),
        ] {
            assert_eq!(check_pkce(c, v).unwrap_err().code(), "invalid_grant");
        }
    }

    #[test]
    fn refresh_rows_expire_after_the_configured_lifetime() {
        let cfg = TokenConfig {
            issuer: "https://a".into(),
            audience: "https://a".into(),
            access_token_ttl: Duration::seconds(3600),
            refresh_token_ttl: Duration::days(30),
        };
        let now = Utc::now();
        let (token, row) = new_refresh_row("grant_x", "requests:read", &cfg, now);
        assert!(token.starts_with(prefixes::REFRESH_TOKEN));
        assert_eq!(row.id, tokens::hash_secret(&token));
        assert_eq!(row.expires_at - row.created_at, Duration::days(30));
    }
}
