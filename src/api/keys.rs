//! API keys (seed: "API Keys"): minting, listing, revoking, and whether a
//! stored key may be used. Blocking where it takes a connection.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use rand::distr::Alphanumeric;
use rand::RngExt;
use serde::Serialize;
use serde_json::Value;

use crate::api::principal::{Authorize, Credential, Principal, BEING_REPLACED};
use crate::api::usage::UsageTracker;
use crate::api::{field_error, timestamp};
use crate::credentials::prefixes;
use crate::db::models::{ApiKeyRow, Lineage};
use crate::db::AnyConnection;
use crate::domain::{Scope, ScopeSet};
use crate::error::ApiError;
use crate::tokens;

/// Random base62 characters after the prefix: 50 × log2(62) ≈ 298 bits, of
/// which the [`DISPLAY_CHARS`] shown in lists leave ≈ 262 secret.
const KEY_CHARS: usize = 50;
/// Characters of the random part kept as the display prefix.
const DISPLAY_CHARS: usize = 6;
/// Keys a user may hold at once (not revoked).
pub const MAX_KEYS_PER_USER: i64 = 100;
/// Name length, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest expiry, in days.
pub const MAX_EXPIRY_DAYS: i64 = 3650;

/// A new key: the key itself (shown once), its hash and display prefix.
pub struct GeneratedKey {
    pub key: String,
    pub hash: String,
    pub prefix: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `dzd_` + 50 base62 characters from the CSPRNG (uniform: `Alphanumeric`
/// samples by rejection).
pub fn generate() -> GeneratedKey {
    let body: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(KEY_CHARS)
        .map(char::from)
        .collect();
    let key = format!("{}{body}", prefixes::API_KEY);
    GeneratedKey {
        hash: tokens::hash_secret(&key),
        prefix: key[..prefixes::API_KEY.len() + DISPLAY_CHARS].to_owned(),
        key,
    }
}

/// The `POST /v1/api-keys` body as the API document shows it; parsed by
/// [`NewKey::from_json`], which names the field of each problem.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateKeyRequest {
    /// 1 to 100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    #[schema(min_items = 1)]
    scopes: Vec<crate::api::ScopeName>,
    /// Days until the key expires (1 to 3650); absent or null: never.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<i64>,
}

/// A validated `POST /v1/api-keys` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub scopes: ScopeSet,
    pub expires_in_days: Option<i64>,
}

impl NewKey {
    /// `{"name": "...", "scopes": [...], "expires_in_days": 90}`; each
    /// problem names its field.
    pub fn from_json(body: &Value) -> Result<Self, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("The body must be a JSON object".into()))?;
        let name = match obj.get("name") {
            Some(Value::String(s)) => validate_name(s)?,
            Some(_) => return Err(field_error("name", "must be a string")),
            None => return Err(field_error("name", "is required")),
        };
        let scopes = match obj.get("scopes") {
            Some(Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    names.push(
                        item.as_str()
                            .ok_or_else(|| field_error("scopes", "must be a list of strings"))?,
                    );
                }
                parse_scope_list(&names)?
            }
            Some(_) => return Err(field_error("scopes", "must be a list of strings")),
            None => return Err(field_error("scopes", "is required")),
        };
        let expires_in_days = match obj.get("expires_in_days") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                crate::api::whole_number(v)
                    .filter(|d| (1..=MAX_EXPIRY_DAYS).contains(d))
                    .ok_or_else(|| {
                        field_error(
                            "expires_in_days",
                            &format!("must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}"),
                        )
                    })?,
            ),
        };
        Ok(Self {
            name,
            scopes,
            expires_in_days,
        })
    }
}

/// A key name: 1 to 100 characters after trimming, no control characters.
pub fn validate_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(field_error(
            "name",
            &format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(field_error("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// A non-empty list of known API scopes. The OpenID Connect identity
/// scopes (`openid`, `profile`, `email`) are not for API keys: they say who
/// signed in to an application, and grant nothing on `/v1`.
pub fn parse_scope_list(names: &[&str]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() {
        return Err(field_error("scopes", "must name at least one scope"));
    }
    names
        .iter()
        .map(|n| {
            let shown: String = n.chars().take(40).collect();
            match Scope::parse(n) {
                Some(s) if s.is_identity() => Err(field_error(
                    "scopes",
                    &format!("'{shown}' is an OpenID Connect scope, not an API permission"),
                )),
                Some(s) => Ok(s),
                None => Err(field_error("scopes", &format!("unknown scope '{shown}'"))),
            }
        })
        .collect()
}

/// A key as its owner sees it in lists: never the key itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<&'static str>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The key that minted this one: revoking that key revokes this one.
    pub parent_id: Option<String>,
    /// Set when the key was rotated: the key that replaced it. It works
    /// until `expires_at` (the end of its grace period).
    pub replaced_by: Option<String>,
}

impl KeyView {
    pub fn of(row: &ApiKeyRow, last_used: Option<NaiveDateTime>) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            scopes: ScopeSet::parse(&row.scopes).unwrap_or_default().to_vec(),
            created_at: timestamp(row.created_at),
            expires_at: row.expires_at.map(timestamp),
            last_used_at: row.last_used_at.max(last_used).map(timestamp),
            parent_id: row.parent_id.clone(),
            replaced_by: row.replaced_by.clone(),
        }
    }
}

/// The answer to `POST /v1/api-keys`: the only time the key is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub key: String,
    pub prefix: String,
    pub scopes: Vec<&'static str>,
    pub expires_at: Option<String>,
    pub created_at: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Mints a key for the user behind `principal`. A credential can hand on
/// only scopes it holds itself (spec: "a key only what its creator
/// holds"); client_credentials tokens have no user to own a key. The count
/// check and the insert share one transaction.
pub fn create(
    conn: &mut AnyConnection,
    principal: &Principal,
    new: &NewKey,
    now: DateTime<Utc>,
) -> Result<CreatedKey, ApiError> {
    let user_id = may_hand_on(principal, &new.scopes)?;
    // A key cannot outlive the key that made it, or an expiring key could
    // renew itself for ever.
    if let Credential::ApiKey {
        expires_at: Some(limit),
        ..
    } = principal.credential
    {
        let fits = new
            .expires_in_days
            .is_some_and(|d| now.naive_utc() + Duration::days(d) <= limit);
        if !fits {
            let days = (limit - now.naive_utc()).num_days();
            return Err(field_error(
                "expires_in_days",
                &format!("a key made with an expiring key cannot outlive it: at most {days} days"),
            ));
        }
    }
    // Recorded so that the key dies with what made it: revoking the parent
    // key revokes this one; a revoked grant (the app disconnected) makes it
    // unusable.
    let minted_by = match &principal.credential {
        Credential::ApiKey { id, .. } => MintedBy::Key(id),
        Credential::AccessToken(claims) => MintedBy::Grant(&claims.grant_id),
        Credential::RefreshToken { .. } => MintedBy::Owner,
    };
    create_for_user(conn, user_id, new, minted_by, now)
}

/// The permission rule of minting (and rotating) a key through `/v1`: a
/// credential that may manage the user's keys (see
/// [`Authorize::credential_manager`]) and holds every scope the key would
/// hold (spec: "a key only what its creator holds"). Returns the user.
fn may_hand_on<'p>(principal: &'p Principal, scopes: &ScopeSet) -> Result<&'p str, ApiError> {
    let user_id = principal.credential_manager()?;
    if let Some(missing) = scopes
        .iter()
        .find(|s| !principal.scopes.covers(&ScopeSet::from_iter([*s])))
    {
        return Err(ApiError::Forbidden(format!(
            "This credential does not hold the scope '{}', so it cannot give it to a key",
            missing.as_str()
        )));
    }
    Ok(user_id)
}

/// What made a key, which it must not outlive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintedBy<'a> {
    /// Its owner: the CLI, Settings > API.
    Owner,
    /// Another API key (revoking it revokes this one).
    Key(&'a str),
    /// An OAuth access token of this grant (the key works while the grant
    /// is active).
    Grant(&'a str),
}

/// Mints a key for `user_id` (the CLI, Settings > API, and [`create`] once
/// it has checked the caller's scopes).
pub fn create_for_user(
    conn: &mut AnyConnection,
    user_id: &str,
    new: &NewKey,
    minted_by: MintedBy<'_>,
    now: DateTime<Utc>,
) -> Result<CreatedKey, ApiError> {
    let generated = generate();
    let now = now.naive_utc();
    let mut row = ApiKeyRow {
        id: tokens::new_id("key_"),
        user_id: user_id.to_owned(),
        name: new.name.clone(),
        key_hash: generated.hash,
        prefix: generated.prefix,
        scopes: new.scopes.to_string(),
        created_at: now,
        expires_at: new.expires_in_days.map(|d| now + Duration::days(d)),
        last_used_at: None,
        revoked_at: None,
        parent_id: None,
        parent_grant_id: match minted_by {
            MintedBy::Grant(id) => Some(id.to_owned()),
            _ => None,
        },
        replaced_by: None,
    };
    crate::db::write_transaction(conn, |conn| {
        // The minting key is re-read, locked, in this transaction: a key it
        // mints never slips past a concurrent revocation's cascade. The new
        // key inherits the grant its parent dies with, so that revoking
        // that grant (disconnecting the app) also ends keys minted by keys
        // it minted.
        if let MintedBy::Key(parent) = minted_by {
            match ApiKeyRow::lineage_locked(conn, parent, now)? {
                Lineage::Live { grant, .. } => {
                    row.parent_id = Some(parent.to_owned());
                    row.parent_grant_id = grant;
                }
                Lineage::Replaced => return Err(ApiError::Forbidden(BEING_REPLACED.into())),
                Lineage::Gone => {
                    return Err(ApiError::Unauthorized(
                        crate::api::principal::INVALID_TOKEN.into(),
                    ))
                }
            }
        }
        if ApiKeyRow::count_for_user(conn, user_id)? >= MAX_KEYS_PER_USER {
            return Err(ApiError::BadRequest(format!(
                "An account can hold at most {MAX_KEYS_PER_USER} API keys: revoke one first"
            )));
        }
        row.insert(conn)?;
        Ok(())
    })?;
    Ok(CreatedKey {
        id: row.id,
        name: row.name,
        key: generated.key,
        prefix: row.prefix,
        scopes: new.scopes.to_vec(),
        expires_at: row.expires_at.map(timestamp),
        created_at: timestamp(row.created_at),
    })
}

/// The user's keys, with uses this instance has seen but not yet written.
pub fn list(
    conn: &mut AnyConnection,
    user_id: &str,
    usage: &UsageTracker,
) -> Result<Vec<KeyView>, ApiError> {
    Ok(ApiKeyRow::list_for_user(conn, user_id)?
        .iter()
        .map(|row| KeyView::of(row, usage.last_used(&row.id)))
        .collect())
}

/// Revokes the user's key `id`; another user's key is not found.
pub fn revoke(
    conn: &mut AnyConnection,
    user_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if ApiKeyRow::revoke(conn, user_id, id, now.naive_utc())? {
        Ok(())
    } else {
        Err(ApiError::NotFound("No such API key".into()))
    }
}

/// The optional `POST /v1/api-keys/{id}/rotate` body as the API document
/// shows it; parsed by [`Grace::from_body`].
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RotateKeyRequest {
    /// Hours the old key keeps working: 0 (at once) to 168; absent or
    /// null: 24.
    #[schema(minimum = 0, maximum = 168)]
    grace_hours: Option<i64>,
}

/// How long a rotated key keeps working (seed: "Rotate regularly"), in
/// whole hours: 0 (at once) to [`Grace::MAX_HOURS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace(i64);

impl Grace {
    pub const DEFAULT_HOURS: i64 = 24;
    /// Seven days.
    pub const MAX_HOURS: i64 = 168;

    pub fn hours(hours: i64) -> Result<Self, ApiError> {
        if (0..=Self::MAX_HOURS).contains(&hours) {
            Ok(Self(hours))
        } else {
            Err(Self::invalid())
        }
    }

    fn invalid() -> ApiError {
        field_error(
            "grace_hours",
            &format!(
                "must be a whole number of hours from 0 (at once) to {}",
                Self::MAX_HOURS
            ),
        )
    }

    /// The optional body of `POST /v1/api-keys/{id}/rotate`: nothing (or
    /// whitespace) for the default, else `{"grace_hours": H}`.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Self::DEFAULT_HOURS));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::BadRequest("Malformed JSON body".into()))?;
        // `null` is no body (the document calls the body optional).
        if value.is_null() {
            return Ok(Self(Self::DEFAULT_HOURS));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("The body must be a JSON object".into()))?;
        match obj.get("grace_hours") {
            None | Some(Value::Null) => Ok(Self(Self::DEFAULT_HOURS)),
            Some(v) => crate::api::whole_number(v)
                .ok_or_else(Self::invalid)
                .and_then(Self::hours),
        }
    }

    pub fn as_hours(self) -> i64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::hours(self.0)
    }
}

impl Default for Grace {
    fn default() -> Self {
        Self(Self::DEFAULT_HOURS)
    }
}

/// A rotation: the new key (shown once) and until when the old one works.
#[derive(Debug)]
pub struct Rotated {
    pub new: CreatedKey,
    pub old_id: String,
    pub old_works_until: String,
}

/// Who rotates a key, which decides which keys they may rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotator<'a> {
    /// The owner (Settings > API, with the user; the CLI, with None): any
    /// of their keys.
    Owner(Option<&'a str>),
    /// An API key of `user` (through `/v1`): itself and the keys it minted
    /// (and theirs), as it could have minted them.
    Key { user: &'a str, id: &'a str },
    /// An OAuth access token of `user` (through `/v1`): the keys minted
    /// under its grant.
    Grant { user: &'a str, grant: &'a str },
}

impl Rotator<'_> {
    fn user(&self) -> Option<&str> {
        match *self {
            Rotator::Owner(user) => user,
            Rotator::Key { user, .. } | Rotator::Grant { user, .. } => Some(user),
        }
    }
}

/// `POST /v1/api-keys/{id}/rotate`: the permission rule of minting a key
/// (the caller manages the user's keys and holds the key's scopes), then
/// [`rotate_key`], which also keeps to the caller's lineage.
pub fn rotate(
    conn: &mut AnyConnection,
    principal: &Principal,
    id: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> Result<Rotated, ApiError> {
    let user = principal.credential_manager()?;
    let rotator = match &principal.credential {
        Credential::ApiKey { id, .. } => Rotator::Key { user, id },
        Credential::AccessToken(claims) => Rotator::Grant {
            user,
            grant: &claims.grant_id,
        },
        Credential::RefreshToken { .. } => {
            return Err(ApiError::Unauthorized(
                crate::api::principal::INVALID_TOKEN.into(),
            ))
        }
    };
    // Not found: rotate_key answers 404 with nothing to hand on.
    if let Some(row) = ApiKeyRow::find(conn, id, Some(user))? {
        let scopes = ScopeSet::parse(&row.scopes)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored key scopes: {e}")))?;
        may_hand_on(principal, &scopes)?;
    }
    rotate_key(conn, rotator, id, grace, now)
}

/// Times a rotation is tried again when the key's parent changed under it
/// (the parent was rotated meanwhile, re-parenting its children).
const ROTATION_ATTEMPTS: usize = 3;

/// Replaces the key `id` with a new key of the same name, scopes, expiry
/// and lineage (the key or grant that minted it), in one transaction. The
/// old key works until the grace ends (its `expires_at` becomes the earlier
/// of its expiry and `now + grace`, enforced wherever a key is checked, at
/// every request); the keys it minted now hang off the new key.
///
/// 404 for a key that is unknown, not the rotator's user's, revoked,
/// expired, or dead with its parent key or grant; 403 for a key outside
/// the rotator's lineage; 409 for a key already replaced (in its grace
/// period). The caller key, the parent key and the key itself are locked
/// in that order (PostgreSQL; SQLite's write transactions are serial), the
/// order of the revocation cascade, so a rotation never slips a new key
/// past a concurrent revocation of an ancestor, and concurrent rotations
/// of one key: exactly one wins.
pub fn rotate_key(
    conn: &mut AnyConnection,
    by: Rotator<'_>,
    id: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> Result<Rotated, ApiError> {
    let now = now.naive_utc();
    let generated = generate();
    let new_id = tokens::new_id("key_");
    let mut attempt = 0;
    let (row, works_until) = loop {
        attempt += 1;
        let tried = crate::db::write_transaction(conn, |conn| {
            rotate_in_transaction(conn, by, id, grace, now, &new_id, &generated)
        })?;
        match tried {
            Some(done) => break done,
            None if attempt < ROTATION_ATTEMPTS => continue,
            None => {
                return Err(ApiError::Conflict(
                    "This API key's lineage changed while it was being rotated: retry".into(),
                ))
            }
        }
    };
    let scopes = ScopeSet::parse(&row.scopes)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored key scopes: {e}")))?;
    Ok(Rotated {
        old_id: id.to_owned(),
        old_works_until: timestamp(works_until),
        new: CreatedKey {
            id: row.id,
            name: row.name,
            key: generated.key,
            prefix: row.prefix,
            scopes: scopes.to_vec(),
            expires_at: row.expires_at.map(timestamp),
            created_at: timestamp(row.created_at),
        },
    })
}

/// One try of [`rotate_key`]; None when the key's parent changed between
/// the unlocked read that chose the lock order and the lock.
fn rotate_in_transaction(
    conn: &mut AnyConnection,
    by: Rotator<'_>,
    id: &str,
    grace: Grace,
    now: NaiveDateTime,
    new_id: &str,
    generated: &GeneratedKey,
) -> Result<Option<(ApiKeyRow, NaiveDateTime)>, ApiError> {
    let not_found = || ApiError::NotFound("No such API key".into());
    let owner = by.user();
    // Read unlocked: it tells which rows to lock first.
    let seen = ApiKeyRow::find(conn, id, owner)?.ok_or_else(not_found)?;
    // "Rotation follows the same permission rule as creating a key": a
    // credential replaces only a key it could have minted, so that it
    // never gains a key that outlives it or escapes its revocation.
    let mut outlive_limit = None;
    match by {
        Rotator::Owner(_) => {}
        // A key rotating itself: its own row is locked below, after its
        // parent's (the cascade's order; locking it first could deadlock
        // with a revocation of the parent), and its successor has its
        // expiry, so it outlives nothing.
        Rotator::Key { id: caller, .. } if caller == id => {}
        Rotator::Key { id: caller, .. } => {
            if !ApiKeyRow::descends_from(conn, seen.parent_id.clone(), caller)? {
                return Err(ApiError::Forbidden(
                    "An API key can rotate only itself and the keys it made (and theirs)".into(),
                ));
            }
            // An ancestor of the key: locked first, as the cascade does.
            match ApiKeyRow::lineage_locked(conn, caller, now)? {
                Lineage::Live { expires_at, .. } => outlive_limit = expires_at,
                Lineage::Replaced => return Err(ApiError::Forbidden(BEING_REPLACED.into())),
                Lineage::Gone => {
                    return Err(ApiError::Unauthorized(
                        crate::api::principal::INVALID_TOKEN.into(),
                    ))
                }
            }
        }
        Rotator::Grant { grant, .. } => {
            if seen.parent_grant_id.as_deref() != Some(grant) {
                return Err(ApiError::Forbidden(
                    "An OAuth access token can rotate only the API keys minted under its grant"
                        .into(),
                ));
            }
        }
    }
    // A revoked key is gone whatever its parent's state (a revoked child
    // is not moved to its parent's successor, so waiting would not help).
    if seen.revoked_at.is_some() {
        return Err(not_found());
    }
    // The parent is locked before the key, as the revocation cascade
    // does: a new key hangs off a live parent, or the cascade that
    // revokes the parent finds it. Keys of a lineage die with the grant
    // its first key was minted under: the successor takes the parent's.
    let mut inherited_grant = None;
    if let Some(parent) = &seen.parent_id {
        match ApiKeyRow::lineage_locked(conn, parent, now)? {
            Lineage::Live { grant, .. } => inherited_grant = grant,
            // Rotated meanwhile: its children now hang off its successor.
            Lineage::Replaced => return Ok(None),
            Lineage::Gone => return Err(not_found()),
        }
    }
    let old = ApiKeyRow::find_locked(conn, id, owner)?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(not_found)?;
    if old.parent_id != seen.parent_id {
        return Ok(None);
    }
    let grant = inherited_grant.or_else(|| old.parent_grant_id.clone());
    if old.expires_at.is_some_and(|e| e <= now) {
        return Err(not_found());
    }
    // A key minted under an OAuth grant died with it (RFC 7009 2.1).
    if let Some(grant) = &grant {
        if !ApiKeyRow::grant_alive(conn, grant)? {
            return Err(not_found());
        }
    }
    if old.replaced_by.is_some() {
        return Err(already_rotated());
    }
    // As at creation: a key made with an expiring key cannot outlive it.
    if let Some(limit) = outlive_limit {
        if old.expires_at.is_none_or(|e| e > limit) {
            return Err(ApiError::Forbidden(
                "This key would outlive the expiring key rotating it".into(),
            ));
        }
    }
    ApiKeyRow::retire_replaced(conn, &old.user_id, now)?;
    if ApiKeyRow::count_in_grace(conn, &old.user_id, now)? >= MAX_KEYS_PER_USER {
        return Err(ApiError::Conflict(format!(
            "An account can have at most {MAX_KEYS_PER_USER} API keys being replaced at once: wait for their grace periods to end or revoke them"
        )));
    }
    let grace_end = now + grace.duration();
    let works_until = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
    let row = ApiKeyRow {
        id: new_id.to_owned(),
        user_id: old.user_id.clone(),
        name: old.name.clone(),
        key_hash: generated.hash.clone(),
        prefix: generated.prefix.clone(),
        scopes: old.scopes.clone(),
        created_at: now,
        expires_at: old.expires_at,
        last_used_at: None,
        revoked_at: None,
        parent_id: old.parent_id.clone(),
        parent_grant_id: grant,
        replaced_by: None,
    };
    row.insert(conn)?;
    if !ApiKeyRow::mark_replaced(conn, &old.id, new_id, works_until)? {
        return Err(already_rotated());
    }
    Ok(Some((row, works_until)))
}

fn already_rotated() -> ApiError {
    ApiError::Conflict(
        "This API key has already been rotated: it is being replaced and can only be revoked"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_prefixed_base62_with_at_least_256_bits() {
        let k = generate();
        let body = k.key.strip_prefix(prefixes::API_KEY).unwrap();
        assert_eq!(body.len(), KEY_CHARS);
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric()));
        let secret_bits = (KEY_CHARS - DISPLAY_CHARS) as f64 * 62f64.log2();
        assert!(secret_bits >= 256.0, "{secret_bits}");
        assert!(k.key.starts_with(&k.prefix));
        assert_eq!(k.hash, tokens::hash_secret(&k.key));
        assert_ne!(generate().key, k.key);
        assert!(!format!("{k:?}").contains(&k.key));
    }

    #[test]
    fn new_key_bodies_are_validated_field_by_field() {
        let ok = NewKey::from_json(
            &json!({"name": " CI ", "scopes": ["requests:read"], "expires_in_days": 90}),
        )
        .unwrap();
        assert_eq!(ok.name, "CI");
        assert_eq!(ok.expires_in_days, Some(90));
        let no_expiry = NewKey::from_json(&json!({"name": "x", "scopes": ["admin"]})).unwrap();
        assert_eq!(no_expiry.expires_in_days, None);

        for (body, field) in [
            (json!({"scopes": ["requests:read"]}), "name"),
            (json!({"name": "", "scopes": ["requests:read"]}), "name"),
            (
                json!({"name": "x".repeat(101), "scopes": ["requests:read"]}),
                "name",
            ),
            (json!({"name": 5, "scopes": ["requests:read"]}), "name"),
            (json!({"name": "x", "scopes": []}), "scopes"),
            (
                json!({"name": "x", "scopes": ["requests:delete"]}),
                "scopes",
            ),
            (json!({"name": "x", "scopes": "requests:read"}), "scopes"),
            (json!({"name": "x"}), "scopes"),
            (
                json!({"name": "x", "scopes": ["admin"], "expires_in_days": 0}),
                "expires_in_days",
            ),
            (
                json!({"name": "x", "scopes": ["admin"], "expires_in_days": -1}),
                "expires_in_days",
            ),
            (
                json!({"name": "x", "scopes": ["admin"], "expires_in_days": 1.5}),
                "expires_in_days",
            ),
            (
                json!({"name": "x", "scopes": ["admin"], "expires_in_days": "90"}),
                "expires_in_days",
            ),
            (
                json!({"name": "x", "scopes": ["admin"], "expires_in_days": 3651}),
                "expires_in_days",
            ),
        ] {
            match NewKey::from_json(&body) {
                Err(ApiError::BadRequest(m)) => assert!(m.starts_with(field), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(NewKey::from_json(&json!([1])).is_err());
    }

    #[test]
    fn grace_is_0_to_168_whole_hours_defaulting_to_24() {
        assert_eq!(Grace::from_body(b"").unwrap(), Grace(24));
        assert_eq!(Grace::from_body(b" \n").unwrap(), Grace(24));
        assert_eq!(Grace::from_body(b"{}").unwrap(), Grace(24));
        assert_eq!(
            Grace::from_body(br#"{"grace_hours": 0}"#).unwrap(),
            Grace(0)
        );
        assert_eq!(
            Grace::from_body(br#"{"grace_hours": 168}"#).unwrap(),
            Grace(168)
        );
        for body in [
            r#"{"grace_hours": 169}"#,
            r#"{"grace_hours": -1}"#,
            r#"{"grace_hours": 1.5}"#,
            r#"{"grace_hours": "24"}"#,
            r#"{"grace_hours": true}"#,
        ] {
            match Grace::from_body(body.as_bytes()) {
                Err(ApiError::BadRequest(m)) => {
                    assert!(m.starts_with("grace_hours"), "{body}: {m}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            Grace::from_body(b"[1]"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            Grace::from_body(b"{"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
