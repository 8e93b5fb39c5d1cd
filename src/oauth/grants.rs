//! The authorization_code grant (RFC 6749 4.1.3, RFC 7636 4.6) and the
//! refresh_token grant with rotation and reuse detection (RFC 6749 6, RFC
//! 9700 4.14). Blocking (they query): the handler runs them on the blocking
//! pool with an authenticated client and the current time; but a refresh
//! on PostgreSQL ([`refresh_token_in_group`]) waits for its rotation
//! asynchronously, sent together with the concurrent ones.
//!
//! Codes are redeemed here rather than through oxide-auth's access-token flow:
//! that flow answers `invalid_request` for a used or mismatched code where RFC
//! 6749 5.2 requires `invalid_grant`, accepts a verifier for a code issued
//! without a challenge, and cannot revoke a grant on replay. The request's
//! own checks of a code exchange (redirect_uri, PKCE) are conditions of the
//! redemption's statement ([`CodeChecks`]); the same functions tell which
//! one refused.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::credentials::jwt::KeyRing;
use crate::credentials::prefixes;
use crate::db::models::{
    AuthorizationCodeRow, Client, CodeChecks, GrantRow, Redeemed, Redemption, RefreshTokenRow,
    Rotated, Rotation, Successor, User,
};
use crate::db::{AnyConnection, Backend, Database, RunError};
use crate::domain::{GrantType, ScopeSet};
use crate::oauth::error::OAuthError;
use crate::oauth::oidc;
use crate::oauth::request::{
    requested_scope, sign_access_token, FormParams, IssuedTokens, TokenConfig,
};
use crate::tokens;

fn invalid_code() -> OAuthError {
    OAuthError::InvalidGrant("the authorization code is invalid, expired or already used".into())
}

fn invalid_refresh() -> OAuthError {
    OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked".into())
}

/// The S256 challenge a presented `code_verifier` answers (RFC 7636 4.6:
/// BASE64URL(SHA256(verifier)), compared as the exact string the
/// authorization request sent, as oxide-auth's `Pkce` compares it). `Err`:
/// a verifier that is not 43 to 128 characters of [A-Za-z0-9-._~] (RFC
/// 7636 4.1), which answers no challenge.
fn challenge_of(verifier: Option<&str>) -> Result<Option<String>, ()> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return Err(());
    }
    Ok(Some(
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
    ))
}

/// RFC 7636 4.6 and RFC 9700 4.8.2. A code issued with a challenge needs the
/// matching verifier; a code issued without one must not be redeemed with a
/// verifier (PKCE downgrade). Every mismatch is `invalid_grant`. The
/// redemption's statement holds the stored challenge to [`challenge_of`]
/// the verifier; this tells why a code was refused.
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    use subtle::ConstantTimeEq;
    let fail = |why: &str| OAuthError::InvalidGrant(why.into());
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(fail(
            "code_verifier sent for a code issued without code_challenge",
        )),
        (Some(_), None) => Err(fail("code_verifier is required")),
        (Some(stored), Some(_)) => match challenge_of(verifier) {
            Ok(Some(answered)) if bool::from(answered.as_bytes().ct_eq(stored.as_bytes())) => {
                Ok(())
            }
            _ => Err(fail("code_verifier does not match code_challenge")),
        },
    }
}

/// RFC 6749 4.1.3: redirect_uri is required when the authorization request
/// had one, "and their values MUST be identical". Without one (a client
/// with a single registered URI, 3.1.2.3; stored empty), the token request
/// may leave it out or name that URI. The stored values a token request's
/// redirect_uri accepts: one or two.
fn accepted_redirects(client: &Client, params: &FormParams) -> [String; 2] {
    match params.get("redirect_uri") {
        None => [String::new(), String::new()],
        Some(sent) if client.sole_redirect_uri().as_deref() == Some(sent) => {
            [sent.to_owned(), String::new()]
        }
        Some(sent) => [sent.to_owned(), sent.to_owned()],
    }
}

/// The request's checks of a code exchange, for the redemption's statement
/// to hold the code to: the stored redirect_uri one of
/// [`accepted_redirects`], the stored challenge the verifier's
/// ([`challenge_of`]). `None` when no stored code can pass them (a
/// malformed verifier, a redirect_uri PostgreSQL cannot hold): the code is
/// then only looked at ([`refused_code`]).
fn code_checks(client: &Client, params: &FormParams) -> Option<CodeChecks> {
    let redirect_uris = accepted_redirects(client, params);
    if redirect_uris.iter().any(|uri| uri.contains('\0')) {
        return None;
    }
    let code_challenge = challenge_of(params.get("code_verifier")).ok()?;
    Some(CodeChecks {
        redirect_uris,
        code_challenge,
    })
}

/// Why a presented code was not redeemed, read again after the redemption
/// matched nothing; the code's grant is revoked on a replay. Each rule is
/// also a condition of `AuthorizationCodeRow::redeem`.
fn refused_code(
    conn: &mut AnyConnection,
    code_id: &str,
    client: &Client,
    params: &FormParams,
    now: DateTime<Utc>,
) -> OAuthError {
    let row = match AuthorizationCodeRow::find(conn, code_id) {
        Ok(Some(row)) => row,
        Ok(None) => return invalid_code(),
        Err(e) => return e.into(),
    };
    // RFC 6749 4.1.3: "ensure that the authorization code was issued to the
    // authenticated confidential client, or if the client is public, ensure
    // that the code was issued to client_id in the request". First of all:
    // a code of another client is just invalid, and may not trigger the
    // replay revocation below (anyone holding a public client_id could
    // otherwise end other users' grants with a leaked used code).
    if row.client_id != client.id {
        return invalid_code();
    }
    // RFC 6749 4.1.2: "If an authorization code is used more than once, the
    // authorization server MUST deny the request and SHOULD revoke (when
    // possible) all tokens previously issued based on that authorization
    // code." Also the loser of concurrent redemptions: a replay by the
    // code's own client.
    if let (Some(_), Some(grant_id)) = (row.used_at, row.grant_id) {
        match GrantRow::revoke(conn, &grant_id, now.naive_utc()) {
            Ok(true) => log::warn!("authorization code replayed: grant {grant_id} revoked"),
            Ok(false) => {}
            Err(e) => return e.into(),
        }
    }
    // An unused code within its 60 s: the request's own checks refused it
    // (redirect_uri, PKCE), and the code stays usable.
    if row.used_at.is_none() && row.expires_at > now.naive_utc() {
        if let Err(refusal) = check_request(
            &row.redirect_uri,
            row.code_challenge.as_deref(),
            client,
            params,
        ) {
            return refusal;
        }
    }
    // Otherwise expired (RFC 6749 4.1.3: "verify that the authorization
    // code is valid", 60 s), or its user is disabled.
    invalid_code()
}

/// Why the request's own checks of a code exchange refuse the code's
/// request (its stored redirect_uri and challenge), if they do.
fn check_request(
    stored_redirect_uri: &str,
    stored_challenge: Option<&str>,
    client: &Client,
    params: &FormParams,
) -> Result<(), OAuthError> {
    if !accepted_redirects(client, params)
        .iter()
        .any(|uri| uri == stored_redirect_uri)
    {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri does not match the authorization request".into(),
        ));
    }
    check_pkce(stored_challenge, params.get("code_verifier"))
}

/// What a use of a user's grant hands out (the code exchange, a refresh).
struct Issue<'a> {
    user: &'a User,
    client: &'a Client,
    grant_id: &'a str,
    scope: ScopeSet,
    authn: oidc::Authentication,
    refresh_token: Option<String>,
}

impl Issue<'_> {
    /// The access token, and the ID token when the scope has `openid`.
    fn sign(
        self,
        keys: &KeyRing,
        cfg: &TokenConfig,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, OAuthError> {
        let (user, client, scope) = (self.user, self.client, self.scope);
        let (access_token, expires_in) =
            sign_access_token(keys, cfg, &user.id, &client.id, &scope, self.grant_id, now)?;
        let about = oidc::IdTokenFor {
            user,
            client_id: &client.id,
            scope: &scope,
            access_token: &access_token,
        };
        let id_token = oidc::id_token(keys, cfg, about, &self.authn, now)?;
        Ok(IssuedTokens {
            access_token,
            expires_in,
            scope,
            refresh_token: self.refresh_token,
            id_token,
        })
    }
}

/// The parameter `name` of a token request for `grant`, once the client is
/// known to be registered for the grant (RFC 6749 5.2: else
/// `unauthorized_client`; without the parameter, `invalid_request`).
fn grant_parameter<'p>(
    client: &Client,
    grant: GrantType,
    params: &'p FormParams,
    name: &str,
) -> Result<&'p str, OAuthError> {
    if !client.allows_grant(grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "this client is not registered for the {} grant",
            grant.as_str()
        )));
    }
    params
        .get(name)
        .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
}

/// A new refresh token, and the id its row is stored under (its hash).
fn new_refresh_token() -> (String, String) {
    let token = tokens::new_secret(prefixes::REFRESH_TOKEN);
    let id = tokens::hash_secret(&token);
    (token, id)
}

/// The row of a new refresh token `id`, living the configured lifetime.
fn successor<'a>(id: &'a str, cfg: &TokenConfig, now: DateTime<Utc>) -> Successor<'a> {
    Successor {
        id,
        created_at: now.naive_utc(),
        expires_at: now.naive_utc() + cfg.refresh_token_ttl,
    }
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
    let code = grant_parameter(client, GrantType::AuthorizationCode, params, "code")?;
    let code_id = tokens::hash_secret(code);
    // Single use: the code marked used, its grant and first refresh token
    // inserted, in one statement on PostgreSQL, and committed only if the
    // request's own checks pass too.
    let grant_id = tokens::new_id("grant_");
    let refresh = client
        .allows_grant(GrantType::RefreshToken)
        .then(new_refresh_token);
    let first_refresh = refresh.as_ref().map(|(_, id)| successor(id, cfg, now));
    let Some(checks) = code_checks(client, params) else {
        return Err(refused_code(conn, &code_id, client, params, now));
    };
    let redemption = Redemption {
        code_id: &code_id,
        client_id: &client.id,
        checks: &checks,
        grant_id: &grant_id,
        refresh: first_refresh.as_ref(),
        now: now.naive_utc(),
    };
    let redeemed = AuthorizationCodeRow::redeem(conn, &redemption, |code| {
        ScopeSet::parse(&code.scopes).map_err(|e| OAuthError::server(anyhow::anyhow!(e)))
    })?;
    let Some((redeemed, scope)) = redeemed else {
        return Err(refused_code(conn, &code_id, client, params, now));
    };
    let Redeemed {
        auth_time,
        sid,
        nonce,
        user,
        ..
    } = redeemed;
    // OIDC Core 3.1.3.3: the code exchange of an `openid` request returns an
    // ID token, with the request's nonce exactly (3.1.3.6).
    let issue = Issue {
        user: &user,
        client,
        grant_id: &grant_id,
        scope,
        authn: oidc::Authentication {
            auth_time,
            sid,
            nonce,
        },
        refresh_token: refresh.map(|(token, _)| token),
    };
    issue.sign(keys, cfg, now)
}

/// A refresh request past the checks made before the rotation (RFC 6749
/// 6): the client may refresh, and presents a token.
struct Refresh {
    /// The presented token's row id (its hash).
    presented_id: String,
    /// The successor handed out on success, and its row's id.
    token: String,
    successor_id: String,
    /// It asks for a scope, and may be refused for it: the rotation then
    /// runs in a transaction that the refusal rolls back, and the token
    /// stays as it was (RefreshTokenRow::rotate's `refusable`).
    refusable: bool,
}

impl Refresh {
    fn ask(client: &Client, params: &FormParams) -> Result<Self, OAuthError> {
        let presented = grant_parameter(client, GrantType::RefreshToken, params, "refresh_token")?;
        let (token, successor_id) = new_refresh_token();
        Ok(Self {
            presented_id: tokens::hash_secret(presented),
            token,
            successor_id,
            refusable: params.get("scope").is_some(),
        })
    }

    /// The tokens of a rotation that read back `rotated` and was allowed
    /// `scope`.
    fn issue(
        self,
        rotated: Rotated,
        scope: ScopeSet,
        client: &Client,
        keys: &KeyRing,
        cfg: &TokenConfig,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, OAuthError> {
        let Rotated {
            grant_id,
            grant_auth_time,
            grant_sid,
            user,
            ..
        } = rotated;
        // OIDC Core 12.2: a refresh of an `openid` grant returns an ID token
        // with the same sub, aud and auth_time (and no nonce).
        let issue = Issue {
            user: &user,
            client,
            grant_id: &grant_id,
            scope,
            authn: oidc::Authentication {
                auth_time: grant_auth_time,
                sid: grant_sid,
                nonce: None,
            },
            refresh_token: Some(self.token),
        };
        issue.sign(keys, cfg, now)
    }
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
    let refresh = Refresh::ask(client, params)?;
    rotate_and_issue(conn, refresh, client, params, keys, cfg, now)
}

fn rotate_and_issue(
    conn: &mut AnyConnection,
    refresh: Refresh,
    client: &Client,
    params: &FormParams,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    // The rotation: the rules the database checks at the moment of the
    // write (RefreshTokenRow::rotate: not used before, this client's, not
    // expired, the grant not revoked, the user not disabled), the presented
    // token marked used and its successor inserted, in one statement on
    // PostgreSQL. The scope is checked against what the rotation read back.
    let next = successor(&refresh.successor_id, cfg, now);
    let rotated = RefreshTokenRow::rotate(
        conn,
        &refresh.presented_id,
        &client.id,
        &next,
        now.naive_utc(),
        refresh.refusable,
        |rotated| permitted_scope(rotated, params, client),
    )?;
    let Some((rotated, scope)) = rotated else {
        return Err(refused(conn, &refresh.presented_id, client, now));
    };
    refresh.issue(rotated, scope, client, keys, cfg, now)
}

/// [`refresh_token`] for a client and keys the caller has at hand (no
/// query for them), async: on PostgreSQL, a request that asks for no
/// scope has its rotation sent together with the concurrent ones
/// (RefreshTokenRow::rotate_in_group: group commit), the same statement
/// and rules as alone. A connection is taken only for what follows a
/// refusal: telling why (and revoking the grant on reuse), or undoing a
/// rotation whose grant permits nothing any more. Anything else runs
/// [`refresh_token`] on the blocking pool. Each wait on the database (the
/// client and keys when not in memory, the rotation, what follows a
/// refusal) has `DZDESK_DB_TIMEOUT_MS` of its own; an undo that gets no
/// connection in time is logged and the token stays used.
pub async fn refresh_token_in_group(
    db: &Database,
    client: Arc<Client>,
    params: FormParams,
    keys: Arc<KeyRing>,
    cfg: TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    let refresh = Refresh::ask(&client, &params)?;
    if refresh.refusable || db.backend() != Backend::Postgres {
        return db
            .run(move |conn| rotate_and_issue(conn, refresh, &client, &params, &keys, &cfg, now))
            .await;
    }
    let next = successor(&refresh.successor_id, &cfg, now);
    let rotation = Rotation {
        presented_id: refresh.presented_id.clone(),
        client_id: client.id.clone(),
        successor_id: refresh.successor_id.clone(),
        successor_created_at: next.created_at,
        successor_expires_at: next.expires_at,
        now: now.naive_utc(),
    };
    let rotated = RefreshTokenRow::rotate_in_group::<OAuthError>(db, rotation).await?;
    let Some(rotated) = rotated else {
        let presented_id = refresh.presented_id;
        return db
            .run(move |conn| Err(refused(conn, &presented_id, &client, now)))
            .await;
    };
    match permitted_scope(&rotated, &params, &client) {
        Ok(scope) => refresh.issue(rotated, scope, &client, &keys, &cfg, now),
        Err(refusal) => {
            // Not for a reason the client chose (it asked for no scope):
            // the grant permits nothing any more. Undone at best
            // (RefreshTokenRow::rotate); the refusal is answered either way.
            let Refresh {
                presented_id,
                successor_id,
                ..
            } = refresh;
            let undone = db
                .run(move |conn| {
                    RefreshTokenRow::unrotate(conn, &presented_id, &successor_id, now.naive_utc());
                    Ok::<_, RunError>(())
                })
                .await;
            if let Err(e) = undone {
                log::warn!("a refused refresh could not be undone ({e}): its token stays used");
            }
            Err(refusal)
        }
    }
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
        let (token, id) = new_refresh_token();
        assert!(token.starts_with(prefixes::REFRESH_TOKEN));
        assert_eq!(id, tokens::hash_secret(&token));
        let row = successor(&id, &cfg, now);
        assert_eq!(row.expires_at - row.created_at, Duration::days(30));
    }
}
