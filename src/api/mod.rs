//! The DZDESK API (`/v1/`) apart from HTTP: who is calling, API keys, the
//! IP allowlist, users. Functions take a connection (blocking: call them on
//! the pool) and the current time, and return [`ApiError`]s that the
//! handlers put in the envelope.

pub mod allowlist;
pub mod keys;
pub mod principal;
pub mod usage;
pub mod usage_log;
pub mod users;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
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

/// A JSON whole number: an integer, or a number whose fraction is zero
/// (`30.0`), which JSON Schema's `integer` and JavaScript's numbers count as
/// the same value. Anything else (a fraction, a string, past `i64`): `None`.
pub fn whole_number(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// 400 `BAD_REQUEST` naming the field: "`field`: `problem`".
pub fn field_error(field: &str, problem: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: {problem}"))
}

/// RFC 3339 in UTC, to the second (`2026-11-28T06:34:51Z`).
pub fn timestamp(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Page size when `limit` is not given, and the largest allowed (every
/// paginated `/v1` listing).
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// `limit` of a paginated listing: 1 to [`MAX_LIMIT`], default
/// [`DEFAULT_LIMIT`].
pub fn page_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                field_error(
                    "limit",
                    &format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

/// The opaque `cursor` of a listing for a position `after` (what the
/// listing resumes after).
pub fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(after)
}

/// The position a `cursor` of [`encode_cursor`] names; anything else is
/// 400 naming `cursor`.
pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(bad_cursor)
        })
        .transpose()
}

/// 400 naming `cursor`.
pub fn bad_cursor() -> ApiError {
    field_error("cursor", "is not a cursor this API returned")
}

#[cfg(test)]
mod tests {
    use super::whole_number;
    use serde_json::json;

    #[test]
    fn whole_numbers_with_a_zero_fraction_count() {
        assert_eq!(whole_number(&json!(30)), Some(30));
        assert_eq!(whole_number(&json!(30.0)), Some(30));
        assert_eq!(whole_number(&json!(-2.0)), Some(-2));
        assert_eq!(whole_number(&json!(30.5)), None);
        assert_eq!(whole_number(&json!(1e300)), None);
        assert_eq!(whole_number(&json!("30")), None);
        assert_eq!(whole_number(&json!(null)), None);
    }
}
