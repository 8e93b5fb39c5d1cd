//! Housekeeping: deletes authorization codes, refresh tokens and revoked-jti
//! entries that can no longer matter, and usage-log rows past their retention,
//! so the tables do not grow without bound; writes API keys' `last_used_at`
//! and the usage log from memory.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::QueryResult;

use crate::api::usage::UsageTracker;
use crate::api::usage_log::{self, UsageLog};
use crate::db::models::{
    ApiKeyRow, AuthorizationCodeRow, PushedRequestRow, RefreshTokenRow, RevokedAccessToken,
};
use crate::db::{AnyConnection, Database};

/// How often a running instance sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Every this many sweeps, the usage log's per-key cap is checked for
/// every key, not only those this instance wrote: keys written by an
/// instance that stopped before its sweep are capped within a day.
pub const FULL_SWEEP_EVERY: u32 = 24;

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
    /// API usage log rows past 30 days or 10,000 per key.
    pub usage_log: usize,
    /// Pushed authorization requests past their expiry (nothing refers to
    /// them then: a late request_uri is unknown either way).
    pub pushed_requests: usize,
}

/// Deletes codes and refresh tokens that expired more than [`retention`]
/// before `now`, and usage-log rows past retention (every key held to the
/// per-key cap). Blocking.
pub fn sweep(conn: &mut AnyConnection, now: NaiveDateTime) -> QueryResult<Swept> {
    sweep_keys(conn, now, &usage_log::SweepKeys::All)
}

/// [`sweep`], holding only `keys` to the usage log's per-key cap.
pub fn sweep_keys(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
    keys: &usage_log::SweepKeys,
) -> QueryResult<Swept> {
    let before = now - retention();
    Ok(Swept {
        codes: AuthorizationCodeRow::delete_expired(conn, before)?,
        refresh_tokens: RefreshTokenRow::delete_expired(conn, before)?,
        // Past expiry a revoked access token fails on `exp` alone.
        revoked_access_tokens: RevokedAccessToken::delete_expired(conn, before)?,
        usage_log: usage_log::sweep(conn, now, keys)?,
        pushed_requests: PushedRequestRow::delete_expired(conn, now)?,
    })
}

/// Sweeps every [`SWEEP_EVERY`] until the task is dropped; errors are logged
/// and retried at the next tick. The usage log's per-key cap is checked for
/// the keys this instance wrote since its last sweep (every key at the
/// first sweep, after a failed one, and every [`FULL_SWEEP_EVERY`]th).
pub async fn sweep_forever(db: Database, log: Arc<UsageLog>) {
    let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
    let mut sweeps: u32 = 0;
    loop {
        tick.tick().await;
        let written = log.take_written();
        let keys = if sweeps % FULL_SWEEP_EVERY == 0 {
            usage_log::SweepKeys::All
        } else {
            written
        };
        sweeps = sweeps.wrapping_add(1);
        let result = db
            .run_unbounded(move |conn| {
                sweep_keys(conn, Utc::now().naive_utc(), &keys).map_err(anyhow::Error::from)
            })
            .await;
        match result {
            Ok(swept) if swept != Swept::default() => log::info!("swept {swept:?}"),
            Ok(_) => {}
            Err(e) => {
                log.sweep_failed();
                log::warn!("sweep failed: {e:#}");
            }
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

/// How far a pass of the usage-log writer goes ([`write_usage_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Until the buffer is empty (at shutdown: nothing new comes).
    Empty,
    /// Until a batch is not full: batches are taken while they come full
    /// (a flood faster than the database keeps the pass going), and what
    /// requests add after a short one waits for the next pass. Under load
    /// the buffer is never empty (a request a moment after each take makes
    /// a new entry), so draining it to empty wrote one tiny batch after
    /// another, each a round trip, instead of one a second.
    ShortBatch,
}

/// Writes what the usage log has buffered, batch by batch (each one
/// multi-row INSERT of at most `usage_log::MAX_BATCH` rows, on the blocking
/// pool), as far as `until` says; returns the rows written. A batch the
/// database refuses is lost and counted (the buffer stays bounded). A
/// batch is not given up on while it runs (`run_unbounded`; taking the
/// connection is bounded): given up on, it would still hold its connection
/// until done while the pass went on to the next one on another, and a slow
/// database would see the writer take the whole pool; meanwhile requests
/// keep queueing, and past the bound are dropped and counted.
pub async fn write_usage_log(db: &Database, log: &Arc<UsageLog>, until: Drain) -> usize {
    let mut written = 0;
    loop {
        let batch = log.take_batch();
        if batch.is_empty() {
            return written;
        }
        let n = batch.len();
        let log2 = log.clone();
        let result = db
            .run_unbounded(move |conn| {
                Ok::<_, crate::db::RunError>(usage_log::write_batch(conn, &log2, batch))
            })
            .await;
        match result {
            Ok(w) => written += w,
            Err(e) => log.lost(
                n as u64,
                Utc::now().timestamp(),
                &format!("the database did not take a batch: {e}"),
            ),
        }
        if until == Drain::ShortBatch && n < usage_log::MAX_BATCH {
            return written;
        }
    }
}

/// Writes the usage log's buffer every `every` (1 s), and whenever it
/// reaches `usage_log::WAKE_AT` entries in between, until the task is
/// dropped.
pub async fn write_usage_log_forever(db: Database, log: Arc<UsageLog>, every: Duration) {
    if !log.is_enabled() {
        return futures_util::future::pending().await;
    }
    // The first write one period after start (not at once).
    let mut tick =
        actix_web::rt::time::interval_at(actix_web::rt::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = log.filling() => {}
        }
        write_usage_log(&db, &log, Drain::ShortBatch).await;
    }
}
