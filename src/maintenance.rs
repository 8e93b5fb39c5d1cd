//! Housekeeping: deletes authorization codes, refresh tokens and revoked-jti
//! entries that can no longer matter, so the tables do not grow without bound;
//! writes API keys' `last_used_at` from memory.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::QueryResult;

use crate::api::usage::UsageTracker;
use crate::db::models::{ApiKeyRow, AuthorizationCodeRow, RefreshTokenRow, RevokedAccessToken};
use crate::db::{AnyConnection, Database};

/// How often a running instance sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Rows are kept this long past their expiry: a code replayed late is still
/// found, so its grant is still revoked (RFC 6749 4.1.2), and a rotated
/// refresh token presented again still revokes its grant (RFC 9700 4.14.2).
pub fn retention() -> chrono::Duration {
    chrono::Duration::days(1)
}

/// What one sweep deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub codes: usize,
    pub refresh_tokens: usize,
    pub revoked_access_tokens: usize,
}

/// Deletes codes and refresh tokens that expired more than [`retention`]
/// before `now`. Blocking.
pub fn sweep(conn: &mut AnyConnection, now: NaiveDateTime) -> QueryResult<Swept> {
    let before = now - retention();
    Ok(Swept {
        codes: AuthorizationCodeRow::delete_expired(conn, before)?,
        refresh_tokens: RefreshTokenRow::delete_expired(conn, before)?,
        // Past expiry a revoked access token fails on `exp` alone.
        revoked_access_tokens: RevokedAccessToken::delete_expired(conn, before)?,
    })
}

/// Sweeps every [`SWEEP_EVERY`] until the task is dropped; errors are logged
/// and retried at the next tick.
pub async fn sweep_forever(db: Database) {
    let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let result = db
            .run_unbounded(|conn| sweep(conn, Utc::now().naive_utc()).map_err(anyhow::Error::from))
            .await;
        match result {
            Ok(swept) if swept != Swept::default() => log::info!("swept {swept:?}"),
            Ok(_) => {}
            Err(e) => log::warn!("sweep failed: {e:#}"),
        }
    }
}

/// How often the API-key usage recorded in memory is looked at (each key is
/// still written at most once per `api::usage::WRITE_EVERY`).
pub const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Writes the `last_used_at` values that are due. Blocking.
pub fn flush_usage(
    conn: &mut AnyConnection,
    usage: &UsageTracker,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let due = usage.due(now);
    let mut written = 0;
    let mut failed = None;
    // One failed write does not drop the others (they count as written).
    for (key_id, used_at) in &due {
        match ApiKeyRow::touch(conn, key_id, *used_at) {
            Ok(()) => written += 1,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) if written == 0 => Err(e),
        Some(e) => {
            log::warn!(
                "writing API key usage: {} of {} failed: {e}",
                due.len() - written,
                due.len()
            );
            Ok(written)
        }
        None => Ok(written),
    }
}

/// Flushes API-key usage every [`USAGE_FLUSH_EVERY`] until the task is
/// dropped.
pub async fn flush_usage_forever(db: Database, usage: Arc<UsageTracker>) {
    let mut tick = actix_web::rt::time::interval(USAGE_FLUSH_EVERY);
    loop {
        tick.tick().await;
        let usage = usage.clone();
        let result = db
            .run_unbounded(move |conn| {
                flush_usage(conn, &usage, Utc::now().naive_utc()).map_err(anyhow::Error::from)
            })
            .await;
        if let Err(e) = result {
            log::warn!("writing API key usage failed: {e:#}");
        }
    }
}
