use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::clients;
use crate::db::AnyConnection;
use crate::domain::{GrantType, Origin, Plan, RedirectUri, ScopeSet};
use crate::tokens;

/// A registered OAuth client.
#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = clients)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub confidential: bool,
    pub secret_hash: Option<String>,
    pub redirect_uris: String,
    pub scopes: String,
    pub grant_types: String,
    pub require_pkce: bool,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// May introspect any token (internal DZDESK services).
    pub can_introspect: bool,
    /// SHA-256 of the RFC 7592 registration access token, if registered
    /// through `POST /oauth/register`.
    pub registration_token_hash: Option<String>,
    /// The user whose credential registered the client through `POST
    /// /oauth/register` (None: the CLI, or a service's own token).
    pub registered_by: Option<String>,
    /// The plan of the client's own account (its client_credentials
    /// tokens); see [`Client::plan`].
    pub plan: String,
    pub rate_limit: Option<i64>,
    /// As registered (RFC 7591 2): `client_secret_basic`,
    /// `client_secret_post` or `none` (public).
    pub token_endpoint_auth_method: String,
    /// SHA-256 of the secret that `client rotate-secret` replaced; it
    /// keeps working until `previous_secret_expires_at` (the grace).
    pub previous_secret_hash: Option<String>,
    pub previous_secret_expires_at: Option<NaiveDateTime>,
    /// Browser origins allowed to call the token and revocation endpoints
    /// and `/v1` with this client's tokens (CORS), newline-separated; empty:
    /// the origins of the registered redirect URIs. See
    /// [`Client::allowed_origins`].
    pub cors_origins: String,
    /// OpenID Connect RP-Initiated Logout 1.0: where the client may send
    /// the browser after a logout it started, newline-separated (the rules
    /// of redirect URIs; matched exactly).
    pub post_logout_redirect_uris: String,
    /// RFC 9126 6: authorization requests must be pushed (`POST
    /// /oauth/par`) first.
    pub require_par: bool,
}

/// Why an authorization request has no redirect URI to go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectProblem {
    /// Not one of the registered URIs.
    Unregistered,
    /// Left out, and the client registered several.
    Missing,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("confidential", &self.confidential)
            .finish_non_exhaustive()
    }
}

// Local methods
impl Client {
    /// Registered redirect URIs (rows are validated on insert).
    pub fn redirect_uris(&self) -> Vec<RedirectUri> {
        self.redirect_uris
            .lines()
            .filter_map(|l| RedirectUri::parse(l).ok())
            .collect()
    }

    /// The redirect URI an authorization request without one goes to: the
    /// client's only registered URI (RFC 6749 3.1.2.3: "If multiple
    /// redirection URIs have been registered ... the client MUST include a
    /// redirection URI"); None when it registered several.
    pub fn sole_redirect_uri(&self) -> Option<String> {
        match self.redirect_uris().as_slice() {
            [only] => Some(only.as_str().to_owned()),
            _ => None,
        }
    }

    /// The redirect URI an authorization request goes to: `given` when it
    /// matches a registered one (exact string; RFC 6749 3.1.2.3), else,
    /// without one, the sole registered URI. The authorization and the
    /// pushed authorization request endpoints both ask this.
    pub fn authorization_redirect(&self, given: Option<&str>) -> Result<String, RedirectProblem> {
        match given {
            Some(uri) if self.match_redirect_uri(uri).is_some() => Ok(uri.to_owned()),
            Some(_) => Err(RedirectProblem::Unregistered),
            None => self.sole_redirect_uri().ok_or(RedirectProblem::Missing),
        }
    }

    /// The scopes an authorization request may ask for (RFC 6749 3.3):
    /// `raw` parsed, or the registered scopes when absent; None when it
    /// does not parse, is empty, or names a scope the client did not
    /// register (`invalid_scope`). The role of the user who approves
    /// narrows it further.
    pub fn requestable_scopes(&self, raw: Option<&str>) -> Option<ScopeSet> {
        let allowed = self.scopes();
        let requested = match raw {
            Some(raw) => ScopeSet::parse(raw).ok()?,
            None => allowed,
        };
        (!requested.is_empty() && allowed.covers(&requested)).then_some(requested)
    }

    /// The plan; a stored plan that does not parse is an error.
    pub fn plan(&self) -> Result<Plan, String> {
        Plan::from_stored(&self.plan, self.rate_limit)
    }

    pub fn scopes(&self) -> ScopeSet {
        ScopeSet::parse(&self.scopes).unwrap_or_default()
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.split(' ').any(|g| g == grant.as_str())
    }

    pub fn is_public(&self) -> bool {
        !self.confidential
    }

    /// Constant-time check of a presented secret against the stored SHA-256,
    /// and against the secret `client rotate-secret` replaced while its
    /// grace lasts (`now` before `previous_secret_expires_at`). Public
    /// clients have no secret and never match.
    pub fn verify_secret(&self, presented: &str, now: NaiveDateTime) -> bool {
        let presented = tokens::hash_secret(presented);
        let matches = |stored: &Option<String>| {
            stored
                .as_deref()
                .is_some_and(|s| tokens::constant_time_eq(presented.as_bytes(), s.as_bytes()))
        };
        let current = matches(&self.secret_hash);
        let previous = matches(&self.previous_secret_hash)
            && self
                .previous_secret_expires_at
                .is_some_and(|until| now < until);
        current | previous
    }

    /// The browser origins allowed to call us with this client's
    /// credentials or tokens (CORS): as registered (`--cors-origin`,
    /// `allowed_cors_origins`), else the origins of its redirect URIs.
    pub fn allowed_origins(&self) -> Vec<Origin> {
        // Registered explicitly: those, and only those that still parse (a
        // row that no longer does fails closed, never back to the
        // redirect URIs' origins).
        if self.cors_origins.lines().any(|l| !l.trim().is_empty()) {
            return self
                .cors_origins
                .lines()
                .filter_map(|l| Origin::parse(l).ok())
                .collect();
        }
        let mut derived: Vec<Origin> = Vec::new();
        for origin in self.redirect_uris().iter().filter_map(Origin::of) {
            if !derived.contains(&origin) {
                derived.push(origin);
            }
        }
        derived
    }

    /// Whether a request's `Origin` header names one of
    /// [`Client::allowed_origins`] (exact string comparison).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins().iter().any(|o| o.as_str() == origin)
    }

    /// Whether `requested` is one of the registered post-logout redirect
    /// URIs, compared as exact strings (RP-Initiated Logout 1.0 3: "MUST
    /// have been previously registered").
    pub fn allows_post_logout_redirect(&self, requested: &str) -> bool {
        self.post_logout_redirect_uris
            .lines()
            .any(|registered| registered == requested)
    }

    /// The registered redirect URI that `requested` matches, if any. Only
    /// public clients get RFC 8252's any-port loopback rule.
    pub fn match_redirect_uri(&self, requested: &str) -> Option<RedirectUri> {
        self.redirect_uris()
            .into_iter()
            .find(|r| r.matches(requested, self.is_public()))
    }
}

// Database methods
impl Client {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(clients::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    /// Sets the disabled flag; false when no such client exists.
    pub fn set_disabled(
        conn: &mut AnyConnection,
        id: &str,
        disabled: bool,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let updated = diesel::update(clients::table.find(id))
            .set((clients::disabled.eq(disabled), clients::updated_at.eq(now)))
            .execute(conn)?;
        Ok(updated == 1)
    }

    /// Disables every client registered by `user_id`'s credentials: that
    /// user lost `admin` or was disabled or deleted, and a client they
    /// registered must not outlive their right to register it. Returns how
    /// many were disabled.
    pub fn disable_registered_by(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            clients::table
                .filter(clients::registered_by.eq(user_id))
                .filter(clients::disabled.eq(false)),
        )
        .set((clients::disabled.eq(true), clients::updated_at.eq(now)))
        .execute(conn)
    }

    /// Sets the plan of the client's own account (its client_credentials
    /// tokens); false when no such client exists.
    pub fn set_plan(
        conn: &mut AnyConnection,
        id: &str,
        plan: Plan,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(clients::table.find(id))
            .set((
                clients::plan.eq(plan.name()),
                clients::rate_limit.eq(plan.custom_limit().map(i64::from)),
                clients::updated_at.eq(now),
            ))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// `client rotate-secret`: a new secret (its SHA-256) replaces
    /// `current` (the hash read before), which keeps working until
    /// `old_works_until` (None: not at all, and it is not kept). False when
    /// the client is gone, public, or its secret changed meanwhile (of two
    /// rotations, the second finds the first's secret and changes nothing,
    /// rather than demoting a secret just handed out).
    pub fn rotate_secret(
        conn: &mut AnyConnection,
        id: &str,
        current: &str,
        new_secret_hash: &str,
        old_works_until: Option<NaiveDateTime>,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let previous = old_works_until.map(|_| current);
        diesel::update(
            clients::table
                .find(id)
                .filter(clients::confidential.eq(true))
                .filter(clients::secret_hash.eq(current)),
        )
        .set((
            clients::previous_secret_hash.eq(previous),
            clients::previous_secret_expires_at.eq(old_works_until),
            clients::secret_hash.eq(new_secret_hash),
            clients::updated_at.eq(now),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Every client, oldest first (the CLI's `client list`).
    pub fn list(conn: &mut AnyConnection) -> QueryResult<Vec<Client>> {
        clients::table
            .order((clients::created_at.asc(), clients::id.asc()))
            .select(Client::as_select())
            .load(conn)
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Client>> {
        clients::table
            .find(id)
            .select(Client::as_select())
            .first(conn)
            .optional()
    }
}
