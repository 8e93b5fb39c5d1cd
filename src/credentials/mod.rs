//! "Who is calling, and is the credential still good?": the one answer that
//! `/v1` (api), introspection, registration and revocation (oauth) share.
//!
//! A presented string is classified by its prefix ([`Kind::of`]); an access
//! token (RFC 9068 JWT) is verified against the key ring ([`jwt`],
//! [`keystore`]); its grant, or the API key or refresh token, is looked up in
//! the in-process revocation view ([`revocation_view`], kept live on
//! PostgreSQL by [`listener`]) or else in the database; and the result is
//! one [`Resolved`] value whose scopes are already limited to what the
//! user's role allows now.
//!
//! Layering: this module sits on `db` and `domain` and knows nothing of HTTP
//! or of the OAuth and `/v1` surfaces above it.

pub mod jwt;
pub mod keystore;
pub mod listener;
pub mod prefixes;
pub mod revocation_view;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::QueryResult;

use crate::db::models::{ApiKeyStatus, GrantStatus, RefreshTokenRow};
use crate::db::{AnyConnection, Database};
use crate::domain::{Plan, Role, Scope, ScopeSet};
use crate::tokens;

use jwt::{AccessClaims, KeyRing};
use keystore::KeyStore;
use revocation_view::RevocationView;

/// What a presented string is, by its shape. Our token types have disjoint
/// shapes, so the shape decides (RFC 7662 2.1: a wrong `token_type_hint`
/// must not change the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AccessToken,
    RefreshToken,
    ApiKey,
    Unknown,
}

impl Kind {
    pub fn of(presented: &str) -> Kind {
        if presented.starts_with(prefixes::REFRESH_TOKEN) {
            Kind::RefreshToken
        } else if presented.starts_with(prefixes::API_KEY) {
            Kind::ApiKey
        } else if presented.bytes().filter(|&b| b == b'.').count() == 2 {
            Kind::AccessToken
        } else {
            Kind::Unknown
        }
    }
}

/// Whom a credential acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User {
        id: String,
        email: String,
        role: Role,
    },
    /// A client acting for itself (client_credentials).
    Service { client_id: String },
}

/// The credential that was presented, with what its answers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A verified RFC 9068 access token.
    AccessToken(AccessClaims),
    ApiKey {
        id: String,
        created_at: NaiveDateTime,
        expires_at: Option<NaiveDateTime>,
        /// Replaced by rotation, in its grace period: it calls the API but
        /// manages no credentials.
        replaced: bool,
    },
    /// A refresh token (RFC 6749 1.5): for the token endpoint and
    /// introspection only, never a bearer credential.
    RefreshToken {
        client_id: String,
        created_at: NaiveDateTime,
        expires_at: NaiveDateTime,
    },
}

/// The account a credential counts against (seed: "Rate Limits"): the user,
/// for API keys and their OAuth access tokens; the client, for its
/// client_credentials tokens. Every credential of one account shares its
/// budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub plan: Plan,
}

/// An active credential and who is behind it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Subject,
    pub credential: Credential,
    pub account: Account,
    /// The credential's scopes, limited to what the user's role allows now
    /// (a demoted admin's tokens and keys lose `admin` and `users:write` at
    /// once).
    pub scopes: ScopeSet,
}

impl Caller {
    /// Whether the credential holds `scope`; `admin` implies every other.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.covers(&ScopeSet::from_iter([scope]))
    }

    /// The user behind the credential; a client_credentials token has none.
    pub fn user(&self) -> Option<&str> {
        match &self.subject {
            Subject::User { id, .. } => Some(id),
            Subject::Service { .. } => None,
        }
    }

    /// The client an access or refresh token was issued to.
    pub fn client_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::AccessToken(claims) => Some(&claims.client_id),
            Credential::RefreshToken { client_id, .. } => Some(client_id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// The account's rate-limit key: `user:<id>` or `client:<id>` (built
    /// when asked: introspection never needs it).
    pub fn account_key(&self) -> String {
        match &self.subject {
            Subject::User { id, .. } => Self::user_account_key(id),
            Subject::Service { client_id } => format!("client:{client_id}"),
        }
    }

    /// [`Caller::account_key`] of the user `id`.
    pub fn user_account_key(id: &str) -> String {
        format!("user:{id}")
    }

    /// The API key used, if one was.
    pub fn api_key_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { id, .. } => Some(id),
            _ => None,
        }
    }

    /// An API key replaced by rotation, in its grace period: it keeps
    /// calling the API, but creating, rotating or revoking credentials,
    /// changing the allowlist or registering clients with it is refused. A
    /// leaked key its owner rotated could otherwise mint a successor of its
    /// own that outlives the grace.
    pub fn is_being_replaced(&self) -> bool {
        matches!(self.credential, Credential::ApiKey { replaced: true, .. })
    }

    /// A bearer credential (RFC 6750): an access token or an API key.
    pub fn is_bearer(&self) -> bool {
        !matches!(self.credential, Credential::RefreshToken { .. })
    }
}

/// The answer about a presented string.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // on the stack for one request: boxing would allocate
pub enum Resolved {
    Active(Caller),
    /// An API key that is usable, presented from an address its account's
    /// IP allowlist excludes (or from no known address). The key's id, for
    /// its usage log.
    IpRefused {
        key_id: String,
        /// The key's user (the usage log's share of its queue).
        user_id: String,
    },
    /// Missing, malformed, unknown, tampered, expired or revoked (the
    /// credential, its grant, client or user).
    Invalid,
}

/// The checks failed for a reason of ours (database down, a stored row
/// that does not parse): never an answer about the credential.
#[derive(Debug, thiserror::Error)]
#[error("checking a credential failed: {0:#}")]
pub struct ResolveError(#[from] pub anyhow::Error);

impl From<diesel::result::Error> for ResolveError {
    fn from(e: diesel::result::Error) -> Self {
        ResolveError(e.into())
    }
}

impl From<crate::db::RunError> for ResolveError {
    fn from(e: crate::db::RunError) -> Self {
        ResolveError(e.into())
    }
}

/// Issuer and audience every access token must name (RFC 9068 4).
#[derive(Debug, Clone)]
pub struct Audience {
    pub issuer: String,
    pub audience: String,
}

/// The credential checker every surface shares: signing keys, revocation
/// view, database. Cheap to clone.
#[derive(Clone)]
pub struct Credentials(Arc<Inner>);

pub struct Inner {
    pub db: Database,
    pub keys: KeyStore,
    pub view: Arc<RevocationView>,
    pub audience: Audience,
}

impl std::ops::Deref for Credentials {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Credentials {
    pub fn new(
        db: Database,
        keys: KeyStore,
        view: Arc<RevocationView>,
        audience: Audience,
    ) -> Self {
        Self(Arc::new(Inner {
            db,
            keys,
            view,
            audience,
        }))
    }

    /// What `presented` is and whether it is active at `now`, used from
    /// `client_ip` (None: unknown; an API key whose account has an
    /// allowlist is then refused). From memory when the key ring and the
    /// live revocation view can tell (no I/O but one SHA-256), else from the
    /// database on the blocking pool.
    pub async fn resolve(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<Resolved, ResolveError> {
        if let Some(ring) = self.keys.cached() {
            if let Some(resolved) = self.check(&ring, now).in_memory(presented, client_ip) {
                return Ok(resolved);
            }
        }
        let this = self.clone();
        let presented = presented.to_owned();
        self.db
            .run(move |conn| {
                let ring = this.keys.for_token(conn, &presented)?;
                this.check(&ring, now)
                    .in_database(conn, &presented, client_ip)
            })
            .await
    }

    /// [`Credentials::resolve`] for surfaces that take bearer credentials
    /// only (RFC 6750: `/v1`, registration): a refresh token is refused
    /// before any I/O, so made-up ones cost no query.
    pub async fn resolve_bearer(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<Resolved, ResolveError> {
        if Kind::of(presented) == Kind::RefreshToken {
            return Ok(Resolved::Invalid);
        }
        self.resolve(presented, client_ip, now).await
    }

    /// Read-your-writes after a change that can deactivate credentials:
    /// returns once this instance's view has applied it (see
    /// [`listener::fence`]).
    pub async fn fence(&self) {
        listener::fence(&self.db, &self.view).await;
    }

    fn check<'a>(&'a self, ring: &'a KeyRing, now: DateTime<Utc>) -> Check<'a> {
        Check {
            ring,
            audience: &self.audience,
            view: &self.view,
            now,
        }
    }
}

/// One resolution's inputs.
struct Check<'a> {
    ring: &'a KeyRing,
    audience: &'a Audience,
    view: &'a RevocationView,
    now: DateTime<Utc>,
}

impl Check<'_> {
    fn verified(&self, jwt: &str) -> Option<AccessClaims> {
        verify_access_token(self.ring, self.audience, jwt, self.now)
    }

    /// None: only the database can tell (a valid token whose grant or key
    /// the view does not hold or is not live, a refresh token, or an access
    /// token naming a key this ring lacks).
    fn in_memory(&self, presented: &str, client_ip: Option<IpAddr>) -> Option<Resolved> {
        match Kind::of(presented) {
            Kind::AccessToken => {
                let Some(claims) = self.verified(presented) else {
                    // Only a failure is worth the header decode.
                    return (!names_unknown_key(presented, self.ring)).then_some(Resolved::Invalid);
                };
                let status = self.view.lookup(&claims.grant_id, &claims.jti)?;
                Some(access_token(claims, Some(status)))
            }
            Kind::ApiKey => {
                let status = self.view.lookup_key(&tokens::hash_secret(presented))?;
                Some(api_key(Some(&status), client_ip, self.now))
            }
            Kind::RefreshToken => None,
            Kind::Unknown => Some(Resolved::Invalid),
        }
    }

    /// Blocking: reads the database (and keeps what it read in the view).
    fn in_database(
        &self,
        conn: &mut AnyConnection,
        presented: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Resolved, ResolveError> {
        Ok(match Kind::of(presented) {
            Kind::AccessToken => match self.verified(presented) {
                Some(claims) => {
                    let status = self.grant_status(conn, &claims)?;
                    access_token(claims, status)
                }
                None => Resolved::Invalid,
            },
            Kind::ApiKey => {
                let status = self.key_status(conn, &tokens::hash_secret(presented))?;
                api_key(status.as_deref(), client_ip, self.now)
            }
            Kind::RefreshToken => refresh_token(conn, presented, self.now)?,
            Kind::Unknown => Resolved::Invalid,
        })
    }

    /// The status of a verified access token's grant, read from the
    /// database and kept in the view if nothing raced the read.
    fn grant_status(
        &self,
        conn: &mut AnyConnection,
        claims: &AccessClaims,
    ) -> QueryResult<Option<GrantStatus>> {
        let generation = self.view.generation();
        let status = GrantStatus::load(conn, &claims.grant_id, &claims.jti)?;
        if let (Some(generation), Some(status)) = (generation, &status) {
            self.view.remember(
                &claims.grant_id,
                &claims.jti,
                claims.exp,
                status,
                generation,
            );
        }
        Ok(status)
    }

    /// The status of the API key whose SHA-256 is `key_hash`, read from the
    /// database and kept in the view likewise.
    fn key_status(
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
/// pinned), `typ`, `iss`, `aud`, `exp` (RFC 9068 4). Says nothing of its
/// grant: see [`Credentials::resolve`] for that.
pub fn verify_access_token(
    ring: &KeyRing,
    audience: &Audience,
    jwt: &str,
    now: DateTime<Utc>,
) -> Option<AccessClaims> {
    ring.verify_cached(jwt, &audience.issuer, &audience.audience, now.timestamp())
        .ok()
        // RFC 7662 2.2: an expired token is not active. The verifier's
        // leeway is for clock skew between parties; here the issuer's own
        // clock decides.
        .filter(|c| c.exp > now.timestamp())
}

/// An access token naming a key `ring` does not hold: perhaps one a newer
/// key ring has (`keys rotate`); worth a throttled reload before answering.
pub fn names_unknown_key(token: &str, ring: &KeyRing) -> bool {
    Kind::of(token) == Kind::AccessToken && !ring.knows_kid_of(token)
}

/// RFC 6750 3.1 `invalid_token`: expired, revoked or otherwise invalid; RFC
/// 9068 4 / RFC 7662 2.2: the grant behind the token must still be active
/// (not revoked, its client and user enabled, the token not revoked on its
/// own). The scopes are the token's, limited to the user's current role.
fn access_token(claims: AccessClaims, status: Option<GrantStatus>) -> Resolved {
    let Some(status) = status.filter(|s| s.is_active() && s.client_id == claims.client_id) else {
        return Resolved::Invalid;
    };
    let Ok(scopes) = ScopeSet::parse(&claims.scope) else {
        return Resolved::Invalid;
    };
    let plan = status.plan;
    let (subject, scopes) = match (status.user_id, status.email, status.role) {
        (Some(id), Some(email), Some(role)) => {
            let scopes = scopes.split_by_role(role).0;
            (Subject::User { id, email, role }, scopes)
        }
        // A user grant whose user row is gone.
        (Some(_), _, _) => return Resolved::Invalid,
        (None, _, _) => (
            Subject::Service {
                client_id: claims.client_id.clone(),
            },
            scopes,
        ),
    };
    let account = Account { plan };
    Resolved::Active(Caller {
        subject,
        credential: Credential::AccessToken(claims),
        account,
        scopes,
    })
}

/// Whether a key that exists may be used at `now`: not revoked, not
/// expired, its user enabled. (The IP allowlist is checked apart: it
/// depends on where the request comes from.)
pub fn key_usable(status: &ApiKeyStatus, now: DateTime<Utc>) -> bool {
    !status.revoked
        && !status.user_disabled
        // A key minted by an OAuth access token dies with its grant.
        && !status.parent_grant_revoked
        && status.expires_at.is_none_or(|at| at > now.naive_utc())
}

/// The scopes a key grants now: its own, limited to what its user's current
/// role may hold.
pub fn key_scopes(status: &ApiKeyStatus) -> ScopeSet {
    status.scopes.split_by_role(status.role).0
}

/// An API key: usable, then used from an address its account allows (seed:
/// "Only listed IPs can access"; fail closed when the address is unknown).
fn api_key(
    status: Option<&ApiKeyStatus>,
    client_ip: Option<IpAddr>,
    now: DateTime<Utc>,
) -> Resolved {
    let Some(status) = status.filter(|s| key_usable(s, now)) else {
        return Resolved::Invalid;
    };
    if !status.ip_allowlist.allows(client_ip) {
        return Resolved::IpRefused {
            key_id: status.key_id.clone(),
            user_id: status.user_id.clone(),
        };
    }
    Resolved::Active(Caller {
        subject: Subject::User {
            id: status.user_id.clone(),
            email: status.email.clone(),
            role: status.role,
        },
        credential: Credential::ApiKey {
            id: status.key_id.clone(),
            created_at: status.created_at,
            expires_at: status.expires_at,
            replaced: status.replaced,
        },
        account: Account { plan: status.plan },
        scopes: key_scopes(status),
    })
}

/// A refresh token: not rotated away, not expired, its grant active (RFC
/// 6749 6, RFC 7662 2.2). Blocking.
fn refresh_token(
    conn: &mut AnyConnection,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Resolved, ResolveError> {
    let Some((row, grant, user)) =
        RefreshTokenRow::find_with_grant(conn, &tokens::hash_secret(presented))?
    else {
        return Ok(Resolved::Invalid);
    };
    let Some(status) = GrantStatus::load(conn, &grant.id, "")? else {
        return Ok(Resolved::Invalid);
    };
    let usable = row.used_at.is_none() && row.expires_at > now.naive_utc();
    if !usable || !status.is_active() {
        return Ok(Resolved::Invalid);
    }
    let scopes = ScopeSet::parse(&row.scopes)
        .map_err(|e| ResolveError(anyhow::anyhow!("stored refresh token scopes: {e}")))?;
    let role = user.role();
    let plan = user.plan().map_err(|e| ResolveError(anyhow::anyhow!(e)))?;
    Ok(Resolved::Active(Caller {
        account: Account { plan },
        scopes: scopes.split_by_role(role).0,
        subject: Subject::User {
            id: user.id,
            email: user.email,
            role,
        },
        credential: Credential::RefreshToken {
            client_id: grant.client_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_classified_by_shape() {
        assert_eq!(Kind::of("dzr_abc"), Kind::RefreshToken);
        assert_eq!(Kind::of("a.b.c"), Kind::AccessToken);
        assert_eq!(Kind::of("dzd_abc"), Kind::ApiKey);
        assert_eq!(Kind::of("a.b"), Kind::Unknown);
        assert_eq!(Kind::of(""), Kind::Unknown);
    }

    fn status() -> ApiKeyStatus {
        ApiKeyStatus {
            key_id: "key_a".into(),
            user_id: "user_a".into(),
            scopes: ScopeSet::parse("requests:read users:write admin").unwrap(),
            created_at: DateTime::UNIX_EPOCH.naive_utc(),
            expires_at: None,
            revoked: false,
            email: "a@example.com".into(),
            role: Role::Agent,
            user_disabled: false,
            ip_allowlist: Default::default(),
            plan: Plan::Standard,
            parent_grant: None,
            parent_grant_revoked: false,
            replaced: false,
        }
    }

    #[test]
    fn usable_means_not_revoked_not_expired_user_enabled() {
        let now = Utc::now();
        assert!(key_usable(&status(), now));
        let mut s = status();
        s.revoked = true;
        assert!(!key_usable(&s, now));
        let mut s = status();
        s.user_disabled = true;
        assert!(!key_usable(&s, now));
        let mut s = status();
        s.expires_at = Some(now.naive_utc());
        assert!(!key_usable(&s, now), "a key expires at its expiry instant");
        s.expires_at = Some(now.naive_utc() + chrono::Duration::seconds(1));
        assert!(key_usable(&s, now));
    }

    #[test]
    fn a_key_grants_no_more_than_its_users_role_allows_now() {
        assert_eq!(key_scopes(&status()).to_string(), "requests:read");
        let mut s = status();
        s.role = Role::Admin;
        assert_eq!(
            key_scopes(&s).to_string(),
            "requests:read users:write admin"
        );
    }

    #[test]
    fn an_api_key_outside_the_allowlist_is_refused_apart() {
        let mut s = status();
        s.ip_allowlist = crate::domain::IpAllowlist::parse_entries(&["10.0.0.0/8"]).unwrap();
        let now = Utc::now();
        assert!(matches!(
            api_key(Some(&s), None, now),
            Resolved::IpRefused { .. }
        ));
        let inside = Some("10.1.2.3".parse().unwrap());
        assert!(matches!(
            api_key(Some(&s), inside, now),
            Resolved::Active(_)
        ));
        s.revoked = true;
        assert!(matches!(api_key(Some(&s), inside, now), Resolved::Invalid));
    }
}
