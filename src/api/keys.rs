//! API keys (seed: "API Keys"): minting, listing, revoking, and whether a
//! stored key may be used. Blocking where it takes a connection.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use rand::distr::Alphanumeric;
use rand::RngExt;
use serde::Serialize;
use serde_json::Value;

use crate::api::principal::{Authorize, Credential, Principal};
use crate::api::usage::UsageTracker;
use crate::api::{field_error, timestamp};
use crate::credentials::prefixes;
use crate::db::models::ApiKeyRow;
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

/// A non-empty list of known scopes.
pub fn parse_scope_list(names: &[&str]) -> Result<ScopeSet, ApiError> {
    if names.is_empty() {
        return Err(field_error("scopes", "must name at least one scope"));
    }
    names
        .iter()
        .map(|n| {
            Scope::parse(n).ok_or_else(|| {
                let shown: String = n.chars().take(40).collect();
                field_error("scopes", &format!("unknown scope '{shown}'"))
            })
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
}

impl KeyView {
    fn of(row: &ApiKeyRow, last_used: Option<NaiveDateTime>) -> Self {
        Self {
            id: row.id.clone(),
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            scopes: ScopeSet::parse(&row.scopes).unwrap_or_default().to_vec(),
            created_at: timestamp(row.created_at),
            expires_at: row.expires_at.map(timestamp),
            last_used_at: row.last_used_at.max(last_used).map(timestamp),
            parent_id: row.parent_id.clone(),
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
    let user_id = principal.credential_manager()?;
    if let Some(missing) = new
        .scopes
        .iter()
        .find(|s| !principal.scopes.covers(&ScopeSet::from_iter([*s])))
    {
        return Err(ApiError::Forbidden(format!(
            "This credential does not hold the scope '{}', so it cannot give it to a key",
            missing.as_str()
        )));
    }
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
    let row = ApiKeyRow {
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
        parent_id: match minted_by {
            MintedBy::Key(id) => Some(id.to_owned()),
            _ => None,
        },
        parent_grant_id: match minted_by {
            MintedBy::Grant(id) => Some(id.to_owned()),
            _ => None,
        },
    };
    crate::db::write_transaction(conn, |conn| {
        // The minting key is re-read, locked, in this transaction: a key it
        // mints never slips past a concurrent revocation's cascade.
        if let MintedBy::Key(parent) = minted_by {
            if !ApiKeyRow::is_live_locked(conn, parent, now)? {
                return Err(ApiError::Unauthorized(
                    crate::api::principal::INVALID_TOKEN.into(),
                ));
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
}
