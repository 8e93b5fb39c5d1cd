//! The per-account IP allowlist through `/v1` and Settings > API (the value
//! type and its matching are `domain::net`). Blocking: [`get`] and
//! [`replace`] take a connection.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::api::field_error;
use crate::api::principal::{Authorize, Principal};
use crate::db::models::User;
use crate::db::AnyConnection;
use crate::domain::IpAllowlist;
use crate::error::ApiError;

/// The `PUT /v1/ip-allowlist` body as the API document shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AllowlistRequest {
    /// IPv4 or IPv6 addresses and CIDRs, at most 100; empty: no restriction.
    #[schema(max_items = 100)]
    entries: Vec<String>,
}

/// The allowlist as `GET`/`PUT /v1/ip-allowlist` show it.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AllowlistView {
    pub entries: Vec<String>,
}

fn user_of(conn: &mut AnyConnection, user_id: &str) -> Result<User, ApiError> {
    User::find(conn, user_id)?.ok_or_else(|| ApiError::NotFound("No such user".into()))
}

/// The caller's account's allowlist.
pub fn get(conn: &mut AnyConnection, principal: &Principal) -> Result<AllowlistView, ApiError> {
    let user = user_of(conn, principal.user_id()?)?;
    Ok(AllowlistView {
        entries: IpAllowlist::from_stored(&user.ip_allowlist).entries(),
    })
}

/// `PUT /v1/ip-allowlist` `{"entries": [...]}`: replaces the whole list, or
/// changes nothing when any entry is invalid.
pub fn replace(
    conn: &mut AnyConnection,
    principal: &Principal,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<AllowlistView, ApiError> {
    let user_id = principal.credential_manager()?;
    let entries = match body.get("entries") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| field_error("entries", "must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(field_error("entries", "must be a list of strings")),
        None => {
            return Err(field_error(
                "entries",
                "is required (an empty list removes the restriction)",
            ))
        }
    };
    replace_for_user(conn, user_id, &entries, now)
}

/// Validates and stores `entries` for the user (the API and Settings > API).
pub fn replace_for_user<S: AsRef<str>>(
    conn: &mut AnyConnection,
    user_id: &str,
    entries: &[S],
    now: DateTime<Utc>,
) -> Result<AllowlistView, ApiError> {
    let list = IpAllowlist::parse_entries(entries).map_err(ApiError::BadRequest)?;
    if !User::set_ip_allowlist(conn, user_id, &list.to_stored(), now.naive_utc())? {
        return Err(ApiError::NotFound("No such user".into()));
    }
    Ok(AllowlistView {
        entries: list.entries(),
    })
}
