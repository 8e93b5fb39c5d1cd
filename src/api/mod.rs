//! The DZDESK API (`/v1/`) apart from HTTP: who is calling, API keys, the
//! IP allowlist, users. Functions take a connection (blocking: call them on
//! the pool) and the current time, and return [`ApiError`]s that the
//! handlers put in the envelope.

pub mod allowlist;
pub mod keys;
pub mod principal;
pub mod usage;
pub mod users;

use chrono::{NaiveDateTime, SecondsFormat};

use crate::error::ApiError;

/// A scope name, as the API document lists them (`domain::Scope::as_str`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub enum ScopeName {
    #[serde(rename = "requests:read")]
    RequestsRead,
    #[serde(rename = "requests:write")]
    RequestsWrite,
    #[serde(rename = "users:read")]
    UsersRead,
    #[serde(rename = "users:write")]
    UsersWrite,
    #[serde(rename = "admin")]
    Admin,
}

/// 400 `BAD_REQUEST` naming the field: "`field`: `problem`".
pub fn field_error(field: &str, problem: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: {problem}"))
}

/// RFC 3339 in UTC, to the second (`2026-11-28T06:34:51Z`).
pub fn timestamp(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)
}
