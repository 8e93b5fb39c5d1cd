//! The API usage log (seed: "Monitor usage: review API logs"): every `/v1`
//! request made with an API key (a key that resolved: a valid key answered
//! 2xx, 4xx, 403 for the allowlist or 429 alike; a string that is no valid
//! key has no owner to show it to and is not logged) is recorded with its
//! time, method, path (never the query string), status, client address and
//! duration. Never a header or a body.
//!
//! Writing never costs a commit per request: [`UsageLog::record`] pushes
//! onto a bounded in-memory queue (full: the entry is dropped and counted,
//! with a warning at most once a minute), and `maintenance` takes batches of
//! at most [`MAX_BATCH`] entries off it once a second, and as soon as
//! [`WAKE_AT`] entries wait, each one multi-row INSERT (COPY on
//! PostgreSQL), off the request path, and once more at shutdown.
//!
//! Nor a row per request: identical requests (the same key, method, path,
//! status and client address) within the same second are one entry while
//! they wait, and one row, that counts them (`requests`), with the earliest
//! time and the slowest duration ([`UsageLog::record`]). Every request is
//! still counted; a client repeating one call thousands of times a second
//! takes one place in the queue and costs the database a row or two a
//! second, not thousands, and cannot fill the queue.
//!
//! Reading: `GET /v1/api-keys/{id}/usage` ([`list`]) and the per-key page of
//! Settings > API ([`recent`], [`hourly_counts`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDateTime, Timelike, Utc};
use serde::Serialize;

use crate::api::principal::{Authorize, Principal};
use crate::api::{bad_cursor, decode_cursor, encode_cursor, field_error, page_limit, timestamp};
use crate::db::models::{ApiKeyRow, NewUsageRow, StatusFilter, UsageQuery, UsageRow};
use crate::db::AnyConnection;
use crate::error::ApiError;

/// Entries buffered at most; past it new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 20_000;
/// Entries one account (all its keys together) may hold in the queue once
/// it is half full: a busy account, or a flood of 429s from one, never
/// crowds out the others'.
pub const PER_ACCOUNT_SHARE: usize = QUEUE_CAPACITY / 8;
/// Entries waiting at which the writer is woken before its next tick (or,
/// if a pass is under way, right after it): a
/// flood of distinct requests is written as it comes, in full batches,
/// rather than filling the queue for a whole tick (one request repeated
/// stays one entry and never wakes it).
pub const WAKE_AT: usize = QUEUE_CAPACITY / 8;
/// Keys remembered as written since the last sweep at most; past it the
/// next sweep looks at every key.
const MAX_WRITTEN_KEYS: usize = 100_000;
/// Rows per INSERT at most.
pub const MAX_BATCH: usize = 1_000;
/// Path characters kept (the rest is cut; the query string never is kept).
pub const MAX_PATH_CHARS: usize = 200;
/// Method characters kept (methods are tokens of any length).
const MAX_METHOD_CHARS: usize = 16;
/// Retention: rows older than this go...
pub fn max_age() -> Duration {
    Duration::days(30)
}
/// ...and past this many rows per key, the oldest go.
pub const MAX_ROWS_PER_KEY: i64 = 10_000;
/// A warning about dropped entries is logged at most this often (seconds).
const WARN_EVERY_SECS: i64 = 60;

/// One request to record, borrowed from the request: nothing is copied
/// unless it needs an entry of its own (most requests are counted in a
/// waiting entry for the same request, see [`UsageLog::record`]). Made by
/// [`Use::new`] only, which bounds the method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use<'a> {
    key_id: &'a str,
    /// The key's account, for its share of the queue (not stored).
    account: &'a str,
    at: NaiveDateTime,
    method: &'a str,
    path: &'a str,
    status: u16,
    client_ip: Option<IpAddr>,
    duration_ms: u32,
}

impl<'a> Use<'a> {
    /// A request with the method and path bounded (a query string, were
    /// one passed, is cut off too); counted against its key's own share
    /// unless [`Use::of_account`] says otherwise.
    pub fn new(
        key_id: &'a str,
        at: NaiveDateTime,
        method: &'a str,
        path: &'a str,
        status: u16,
        client_ip: Option<IpAddr>,
        duration_ms: u32,
    ) -> Self {
        // To the microsecond, as PostgreSQL keeps it and cursors name it.
        let at = DateTime::from_timestamp_micros(at.and_utc().timestamp_micros())
            .map_or(at, |t| t.naive_utc());
        Self {
            key_id,
            account: key_id,
            at,
            method: bounded(method, MAX_METHOD_CHARS),
            path: bounded(path, MAX_PATH_CHARS),
            status,
            client_ip,
            duration_ms,
        }
    }

    /// The request, counted against `account`'s share of the queue.
    pub fn of_account(self, account: &'a str) -> Self {
        Self { account, ..self }
    }

    /// What makes two requests the same (one entry counts them).
    fn sameness(&self) -> Sameness<'a> {
        (
            self.key_id,
            self.at.and_utc().timestamp(),
            self.method,
            self.path,
            self.status,
            self.client_ip,
        )
    }
}

/// Key, second, method, path, status and client address.
type Sameness<'a> = (&'a str, i64, &'a str, &'a str, u16, Option<IpAddr>);

/// A queued entry: one request, or several identical ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub key_id: String,
    /// The key's account, for its share of the queue (not stored).
    pub account: String,
    pub at: NaiveDateTime,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub client_ip: Option<IpAddr>,
    /// The slowest of the requests this entry counts.
    pub duration_ms: u32,
    /// How many identical requests this entry counts (see [`UsageLog::record`]).
    pub requests: u32,
}

impl UsageEntry {
    fn of(u: &Use<'_>) -> Self {
        Self {
            key_id: u.key_id.to_owned(),
            account: u.account.to_owned(),
            at: u.at,
            method: u.method.to_owned(),
            path: u.path.to_owned(),
            status: u.status,
            client_ip: u.client_ip,
            duration_ms: u.duration_ms,
            requests: 1,
        }
    }

    fn to_row(&self) -> NewUsageRow {
        NewUsageRow {
            key_id: self.key_id.clone(),
            at: self.at,
            method: self.method.clone(),
            path: self.path.clone(),
            status: i32::from(self.status),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            duration_ms: i32::try_from(self.duration_ms).unwrap_or(i32::MAX),
            requests: i32::try_from(self.requests).unwrap_or(i32::MAX),
        }
    }

    /// Counts `u`, the same request, in this entry: the earlier time, the
    /// slower duration.
    fn absorb(&mut self, u: &Use<'_>) {
        self.requests = self.requests.saturating_add(1);
        self.duration_ms = self.duration_ms.max(u.duration_ms);
        self.at = self.at.min(u.at);
    }

    /// The request this entry first counted, as [`Use`] sees it.
    fn as_use(&self) -> Use<'_> {
        Use {
            key_id: &self.key_id,
            account: &self.account,
            at: self.at,
            method: &self.method,
            path: &self.path,
            status: self.status,
            client_ip: self.client_ip,
            duration_ms: self.duration_ms,
        }
    }

    /// [`Use::sameness`] of the request this entry counts.
    fn sameness(&self) -> Sameness<'_> {
        self.as_use().sameness()
    }
}

/// At most `max` characters of `s`, without a query string (were one
/// passed).
fn bounded(s: &str, max: usize) -> &str {
    let s = s.split('?').next().unwrap_or_default();
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The in-memory queue between requests and the batch writer.
pub struct UsageLog {
    enabled: bool,
    queue: Mutex<Queue>,
    /// Told when the queue reaches [`WAKE_AT`] entries.
    wake: tokio::sync::Notify,
    dropped: AtomicU64,
    /// Epoch seconds of the last warning about dropped entries.
    warned_at: AtomicI64,
    /// The keys this instance wrote rows for since its last sweep, which
    /// only needs to look at those (see [`UsageLog::take_written`]).
    written: Mutex<Written>,
}

/// What became of a request given to [`Queue::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// In a waiting entry for the same request.
    Counted,
    /// As an entry of its own.
    Queued,
    /// As an entry of its own, the one that brought the queue to
    /// [`WAKE_AT`]: the writer should not wait for its tick.
    QueuedToWake,
    /// Not at all: no room (see [`Queue::admits`]).
    Dropped,
}

/// The buffered entries, and how many of them each account has.
#[derive(Default)]
struct Queue {
    entries: VecDeque<UsageEntry>,
    per_account: HashMap<String, usize>,
    /// The sequence number of `entries[0]` (entries are numbered as pushed).
    front: u64,
    /// The hash of an entry's sameness ([`Use::sameness`]) -> the sequence
    /// number of the newest entry with it: at most one per entry.
    same: HashMap<u64, u64>,
    hasher: std::hash::RandomState,
}

impl Queue {
    /// Counts `u` in a waiting entry for the same request (its hash
    /// found, and the entry really the same), else queues it as an entry of
    /// its own if [`Queue::admits`] it.
    fn add(&mut self, u: &Use<'_>) -> Added {
        use std::hash::BuildHasher;
        let same = u.sameness();
        let hash = self.hasher.hash_one(same);
        let waiting = self
            .same
            .get(&hash)
            .and_then(|seq| seq.checked_sub(self.front))
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.entries.get_mut(i));
        if let Some(waiting) = waiting.filter(|w| w.sameness() == same) {
            waiting.absorb(u);
            return Added::Counted;
        }
        if !self.admits(u.account) {
            return Added::Dropped;
        }
        self.push(UsageEntry::of(u), hash);
        if self.entries.len() == WAKE_AT {
            Added::QueuedToWake
        } else {
            Added::Queued
        }
    }

    /// Whether `account` may add an entry: room left, and past half full,
    /// only an account within its [`PER_ACCOUNT_SHARE`].
    fn admits(&self, account: &str) -> bool {
        let len = self.entries.len();
        len < QUEUE_CAPACITY
            && (len < QUEUE_CAPACITY / 2
                || self.per_account.get(account).copied().unwrap_or(0) < PER_ACCOUNT_SHARE)
    }

    /// Queues `entry`, whose sameness hashes to `hash`.
    fn push(&mut self, entry: UsageEntry, hash: u64) {
        match self.per_account.get_mut(&entry.account) {
            Some(n) => *n += 1,
            None => {
                self.per_account.insert(entry.account.clone(), 1);
            }
        }
        let seq = self.front + self.entries.len() as u64;
        self.same.insert(hash, seq);
        self.entries.push_back(entry);
    }

    fn take(&mut self, n: usize) -> Vec<UsageEntry> {
        let batch: Vec<UsageEntry> = self.entries.drain(..n).collect();
        self.front += n as u64;
        let front = self.front;
        self.same.retain(|_, seq| *seq >= front);
        for entry in &batch {
            if let Some(count) = self.per_account.get_mut(&entry.account) {
                *count -= 1;
                if *count == 0 {
                    self.per_account.remove(&entry.account);
                }
            }
        }
        batch
    }
}

/// Keys written since the last sweep; `overflow`: more than
/// [`MAX_WRITTEN_KEYS`], or a sweep failed, so the next one looks at all.
struct Written {
    keys: HashSet<String>,
    overflow: bool,
}

/// Which keys a retention sweep looks at for the per-key cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepKeys {
    /// Every key with rows (a scan of the whole table: once per process
    /// start, and after a failure).
    All,
    /// Only these: the keys written since the last sweep (no other key can
    /// have gone past the cap since).
    Only(Vec<String>),
}

impl UsageLog {
    /// `enabled`: `DZDESK_USAGE_LOG` (off: nothing is recorded).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            queue: Mutex::new(Queue::default()),
            wake: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
            warned_at: AtomicI64::new(i64::MIN),
            // Rows an earlier process wrote are unknown: the first sweep
            // looks at every key.
            written: Mutex::new(Written {
                keys: HashSet::new(),
                overflow: true,
            }),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Returns once the queue has reached [`WAKE_AT`] entries (at once if
    /// it did since the last call): the writer's cue not to wait for its
    /// tick.
    pub async fn filling(&self) {
        self.wake.notified().await;
    }

    /// Queues `u`, or counts it in a waiting entry for the same
    /// request (the same key, method, path, status and client address, in
    /// the same second): a client repeating one call takes one place in the
    /// queue a second, and one row. A full queue, or past half full an
    /// account over its [`PER_ACCOUNT_SHARE`], drops a new entry (counted,
    /// and a warning at most once a minute). Never blocks on I/O.
    pub fn record(&self, u: Use<'_>) {
        if !self.enabled {
            return;
        }
        let added = match self.queue.lock() {
            Ok(mut queue) => queue.add(&u),
            Err(_) => Added::Dropped,
        };
        if added == Added::QueuedToWake {
            self.wake.notify_one();
        }
        if added == Added::Dropped {
            self.lost(
                1,
                u.at.and_utc().timestamp(),
                "the queue is full (the database does not keep up)",
            );
        }
    }

    /// Counts `n` entries lost, warning at most once a minute.
    pub fn lost(&self, n: u64, now_secs: i64, why: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let last = self.warned_at.load(Ordering::Relaxed);
        if now_secs.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .warned_at
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("API usage log: entries dropped ({total} so far): {why}");
        }
    }

    /// Entries lost so far (queue full, or a batch that failed to write).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to [`MAX_BATCH`] entries, oldest first.
    pub fn take_batch(&self) -> Vec<UsageEntry> {
        match self.queue.lock() {
            Ok(mut queue) => {
                let n = queue.entries.len().min(MAX_BATCH);
                queue.take(n)
            }
            Err(_) => Vec::new(),
        }
    }

    /// Remembers that rows of `keys` were written.
    fn wrote<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        if let Ok(mut written) = self.written.lock() {
            if written.overflow {
                return;
            }
            for key in keys {
                if !written.keys.contains(key) {
                    if written.keys.len() >= MAX_WRITTEN_KEYS {
                        written.overflow = true;
                        written.keys.clear();
                        return;
                    }
                    written.keys.insert(key.to_owned());
                }
            }
        }
    }

    /// The keys the next sweep must look at, forgotten here: call
    /// [`UsageLog::sweep_failed`] if that sweep does not finish.
    pub fn take_written(&self) -> SweepKeys {
        match self.written.lock() {
            Ok(mut written) => {
                let all = std::mem::replace(&mut written.overflow, false);
                let keys = std::mem::take(&mut written.keys);
                if all {
                    SweepKeys::All
                } else {
                    SweepKeys::Only(keys.into_iter().collect())
                }
            }
            Err(_) => SweepKeys::All,
        }
    }

    /// A sweep did not finish: the next one looks at every key.
    pub fn sweep_failed(&self) {
        if let Ok(mut written) = self.written.lock() {
            written.overflow = true;
            written.keys.clear();
        }
    }
}

/// Writes one batch taken off `log` in one INSERT (an entry counting
/// identical requests is one row); returns how many entries it wrote. A batch that
/// fails is lost (counted in [`UsageLog::dropped`], warned of at most once
/// a minute) rather than retried: the queue stays bounded. Blocking.
pub fn write_batch(conn: &mut AnyConnection, log: &UsageLog, batch: Vec<UsageEntry>) -> usize {
    let n = batch.len();
    let rows: Vec<NewUsageRow> = batch.iter().map(UsageEntry::to_row).collect();
    match UsageRow::insert_batch(conn, &rows) {
        Ok(_) => {
            log.wrote(rows.iter().map(|r| r.key_id.as_str()));
            n
        }
        Err(e) => {
            log.lost(
                n as u64,
                Utc::now().timestamp(),
                &format!("writing a batch failed: {e}"),
            );
            0
        }
    }
}

/// Retention (the maintenance sweep): [`max_age`] or [`MAX_ROWS_PER_KEY`]
/// rows per key, whichever is smaller. Blocking.
/// `keys`: which keys to hold to the per-key cap (the age limit applies to
/// every row).
pub fn sweep(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
    keys: &SweepKeys,
) -> diesel::QueryResult<usize> {
    let keys = match keys {
        SweepKeys::All => None,
        SweepKeys::Only(keys) => Some(keys.as_slice()),
    };
    UsageRow::sweep(conn, now - max_age(), MAX_ROWS_PER_KEY, keys)
}

/// A logged request as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UsageView {
    pub at: String,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub client_ip: Option<String>,
    /// The slowest of the requests this row stands for.
    pub duration_ms: i32,
    /// How many identical requests (this key, method, path, status and
    /// client address, in the second that begins at `at`'s second) the row
    /// stands for: 1 or more.
    #[schema(minimum = 1)]
    pub requests: i32,
}

impl UsageView {
    fn of(row: UsageRow) -> Self {
        Self {
            at: timestamp(row.at),
            method: row.method,
            path: row.path,
            status: row.status,
            client_ip: row.client_ip,
            duration_ms: row.duration_ms,
            requests: row.requests,
        }
    }
}

/// One page of `GET /v1/api-keys/{id}/usage`, newest first; `next_cursor`
/// is null on the last page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    pub usage: Vec<UsageView>,
    pub next_cursor: Option<String>,
}

/// The query of `GET /v1/api-keys/{id}/usage`, as sent.
#[derive(Debug, Default, Clone)]
pub struct UsageParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
}

/// `status=4xx|5xx|429`.
fn parse_status(raw: &str) -> Result<StatusFilter, ApiError> {
    match raw {
        "4xx" => Ok(StatusFilter::ClientErrors),
        "5xx" => Ok(StatusFilter::ServerErrors),
        "429" => Ok(StatusFilter::RateLimited),
        _ => Err(field_error("status", "must be 4xx, 5xx or 429")),
    }
}

/// `since=` an RFC 3339 instant.
fn parse_since(raw: &str) -> Result<NaiveDateTime, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc).naive_utc())
        .map_err(|_| {
            field_error(
                "since",
                "must be an RFC 3339 date and time, e.g. 2026-12-01T00:00:00Z",
            )
        })
}

/// The cursor's position: `<at in microseconds>.<row id>`.
fn cursor_of(row: &UsageRow) -> String {
    encode_cursor(&format!(
        "{}.{}",
        row.at.and_utc().timestamp_micros(),
        row.id
    ))
}

/// The last microsecond of the year 9999: a cursor's time lies between
/// the epoch and it (what both databases store; a forged cursor outside
/// it is a 400, never a database error).
const LAST_CURSOR_MICROS: i64 = 253_402_300_799_999_999;

fn position_of(cursor: &str) -> Result<(NaiveDateTime, i64), ApiError> {
    let (micros, id) = cursor.split_once('.').ok_or_else(bad_cursor)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .filter(|m| (0..=LAST_CURSOR_MICROS).contains(m))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad_cursor)?;
    let id = id.parse::<i64>().map_err(|_| bad_cursor())?;
    Ok((at.naive_utc(), id))
}

/// `GET /v1/api-keys/{id}/usage`: the caller's user's key (any credential
/// of the user may read it, as it may list the keys); another user's key is
/// not found. `limit` and `cursor` as in the users API.
pub fn list(
    conn: &mut AnyConnection,
    principal: &Principal,
    key_id: &str,
    params: &UsageParams,
) -> Result<UsagePage, ApiError> {
    let user_id = principal.user_id()?;
    let limit = page_limit(params.limit.as_deref())?;
    let before = decode_cursor(params.cursor.as_deref())?
        .map(|c| position_of(&c))
        .transpose()?;
    let query = UsageQuery {
        status: params.status.as_deref().map(parse_status).transpose()?,
        since: params.since.as_deref().map(parse_since).transpose()?,
        before,
    };
    if ApiKeyRow::find(conn, key_id, Some(user_id))?.is_none() {
        return Err(ApiError::NotFound("No such API key".into()));
    }
    let mut rows = UsageRow::page(conn, key_id, &query, limit + 1)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(cursor_of)).flatten();
    Ok(UsagePage {
        usage: rows.into_iter().map(UsageView::of).collect(),
        next_cursor,
    })
}

/// What the per-key page of Settings > API shows.
#[derive(Debug)]
pub struct KeyUsage {
    pub key_name: String,
    pub key_prefix: String,
    /// The newest [`RECENT_ROWS`] requests.
    pub recent: Vec<UsageView>,
    /// Requests per hour over the last 24 hours, oldest first (see
    /// [`hourly_counts`]).
    pub hourly: [u32; 24],
}

/// Requests listed on the per-key page.
pub const RECENT_ROWS: i64 = 100;

/// The per-key page's data for `user_id`'s key `key_id`; another user's
/// key is not found.
pub fn recent(
    conn: &mut AnyConnection,
    user_id: &str,
    key_id: &str,
    now: DateTime<Utc>,
) -> Result<KeyUsage, ApiError> {
    let key = ApiKeyRow::find(conn, key_id, Some(user_id))?
        .ok_or_else(|| ApiError::NotFound("No such API key".into()))?;
    let rows = UsageRow::page(conn, key_id, &UsageQuery::default(), RECENT_ROWS)?;
    // The newest requests only, as many as retention keeps per key: a key
    // busier than that between two sweeps shows its latest hours whole.
    let times = UsageRow::times_since(conn, key_id, chart_start(now), MAX_ROWS_PER_KEY)?;
    Ok(KeyUsage {
        key_name: key.name,
        key_prefix: key.prefix,
        recent: rows.into_iter().map(UsageView::of).collect(),
        hourly: hourly_counts(&times, now),
    })
}

/// The start of the chart's first hour: the top of the hour 23 hours
/// before `now`'s.
pub fn chart_start(now: DateTime<Utc>) -> NaiveDateTime {
    let hour = now
        .naive_utc()
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or_else(|| now.naive_utc());
    hour - Duration::hours(23)
}

/// Requests per clock hour (UTC) for the 24 hours ending with `now`'s
/// hour: index 0 is the hour that began 23 hours before the current one,
/// index 23 the current (partial) hour. Times outside (older, or after
/// `now`: clock skew between instances) are not counted.
pub fn hourly_counts(times: &[(NaiveDateTime, i32)], now: DateTime<Utc>) -> [u32; 24] {
    let start = chart_start(now);
    let end = now.naive_utc();
    let mut buckets = [0u32; 24];
    for (t, requests) in times {
        if *t < start || *t > end {
            continue;
        }
        let hour = (*t - start).num_hours();
        if let Some(b) = usize::try_from(hour).ok().and_then(|h| buckets.get_mut(h)) {
            *b = b.saturating_add(u32::try_from(*requests).unwrap_or(0));
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        DateTime::parse_from_rfc3339(s).unwrap().naive_utc()
    }

    #[test]
    fn requests_are_counted_per_clock_hour_of_the_last_24() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:20:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(chart_start(now), at("2026-12-05T11:00:00Z"));
        let times = [
            (at("2026-12-05T10:59:59Z"), 1), // before the first hour: not counted
            (at("2026-12-05T11:00:00Z"), 1), // first hour
            (at("2026-12-05T11:59:59Z"), 1), // first hour
            (at("2026-12-06T00:30:00Z"), 7), // 13 hours after the start, 7 requests
            (at("2026-12-06T10:00:00Z"), 1), // current hour
            (at("2026-12-06T10:20:00Z"), 1), // now itself
            (at("2026-12-06T10:20:01Z"), 1), // the future (skew): not counted
        ];
        let counts = hourly_counts(&times, now);
        let mut expected = [0u32; 24];
        expected[0] = 2;
        expected[13] = 7;
        expected[23] = 2;
        assert_eq!(counts, expected);
        assert_eq!(hourly_counts(&[], now), [0; 24]);
    }

    #[test]
    fn the_first_hour_is_whole_at_the_top_of_the_hour() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let counts = hourly_counts(
            &[
                (at("2026-12-05T11:00:00Z"), 1),
                (at("2026-12-06T10:00:00Z"), 1),
            ],
            now,
        );
        assert_eq!(counts[0], 1);
        assert_eq!(counts[23], 1);
    }

    #[test]
    fn identical_requests_in_one_second_are_one_row_that_counts_them() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other_ip: IpAddr = "192.0.2.2".parse().unwrap();
        let t = at("2026-12-06T10:00:00.250Z");
        let later = at("2026-12-06T10:00:00.900Z");
        let next_second = at("2026-12-06T10:00:01.000Z");
        fn e<'a>(
            key: &'a str,
            at: NaiveDateTime,
            method: &'a str,
            path: &'a str,
            status: u16,
            ip: IpAddr,
            ms: u32,
        ) -> Use<'a> {
            Use::new(key, at, method, path, status, Some(ip), ms)
        }
        let batch = [
            // Queued as requests finish: a later one may come first.
            e("k1", later, "GET", "/v1/me", 200, ip, 9),
            e("k1", t, "GET", "/v1/me", 200, ip, 3),
            e("k1", later, "GET", "/v1/me", 200, ip, 1),
            // Each differs from the first in one thing: a row of its own.
            e("k2", t, "GET", "/v1/me", 200, ip, 1),
            e("k1", t, "PUT", "/v1/me", 200, ip, 1),
            e("k1", t, "GET", "/v1/users", 200, ip, 1),
            e("k1", t, "GET", "/v1/me", 429, ip, 1),
            e("k1", t, "GET", "/v1/me", 200, other_ip, 1),
            e("k1", next_second, "GET", "/v1/me", 200, ip, 1),
            Use::new("k1", t, "GET", "/v1/me", 200, None, 1),
        ];
        let log = UsageLog::new(true);
        for u in batch {
            log.record(u);
        }
        assert_eq!(log.len(), 8);
        let rows: Vec<NewUsageRow> = log.take_batch().iter().map(UsageEntry::to_row).collect();
        assert_eq!(rows.len(), 8, "{rows:?}");
        // The first row: three requests, the earliest time, the slowest
        // duration.
        assert_eq!(rows[0].requests, 3);
        assert_eq!(rows[0].at, t);
        assert_eq!(rows[0].duration_ms, 9);
        assert!(rows[1..].iter().all(|r| r.requests == 1), "{rows:?}");
        assert_eq!(rows[1].key_id, "k2");
        assert_eq!(rows[6].at, next_second);
        // Every request is counted.
        let total: i32 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(total as usize, batch.len());

        // Once written, the same request again is a new entry.
        log.record(batch[0]);
        assert_eq!(log.take_batch()[0].requests, 1);
    }

    #[test]
    fn a_flood_of_one_request_takes_one_place_and_is_never_dropped() {
        let log = UsageLog::new(true);
        let t = at("2026-12-06T10:00:00Z");
        // Fill the queue with other keys' requests.
        for i in 0..QUEUE_CAPACITY {
            let key = format!("k{}", i % 10);
            let path = format!("/v1/users/{i}");
            log.record(Use::new(&key, t, "GET", &path, 200, None, 1));
        }
        assert_eq!(log.len(), QUEUE_CAPACITY);
        // The first of them, repeated 100,000 times: counted, not dropped.
        for _ in 0..100_000 {
            log.record(Use::new("k0", t, "GET", "/v1/users/0", 200, None, 1));
        }
        assert_eq!(log.dropped(), 0);
        assert_eq!(log.len(), QUEUE_CAPACITY);
        assert_eq!(log.take_batch()[0].requests, 100_001);
        // A new request still finds the queue full... once it has room, in.
        log.record(Use::new("k1", t, "GET", "/v1/new", 200, None, 1));
        assert_eq!(log.len(), QUEUE_CAPACITY - MAX_BATCH + 1);
    }

    #[test]
    fn the_writer_is_woken_when_the_queue_reaches_wake_at() {
        use futures_util::FutureExt;
        let log = UsageLog::new(true);
        let t = at("2026-12-06T10:00:00Z");
        let record = |i: usize| {
            let path = format!("/v1/r{i}");
            log.record(Use::new("k", t, "GET", &path, 200, None, 1));
        };
        for i in 0..WAKE_AT - 1 {
            record(i);
        }
        assert!(log.filling().now_or_never().is_none());
        record(WAKE_AT - 1);
        assert!(log.filling().now_or_never().is_some(), "reached: woken");
        // The same request again (counted, not queued) and one more entry:
        // no new crossing.
        record(0);
        record(WAKE_AT);
        assert!(log.filling().now_or_never().is_none());
        // Written down and back up to it: woken again.
        log.take_batch();
        for i in 0..MAX_BATCH - 1 {
            record(WAKE_AT + 1 + i);
        }
        assert!(log.filling().now_or_never().is_some());
    }

    #[test]
    fn paths_and_methods_are_bounded_and_never_keep_a_query() {
        let t = at("2026-12-06T10:00:00Z");
        let e = Use::new("k", t, "GET", "/v1/me?token=secret", 200, None, 1);
        assert_eq!(e.path, "/v1/me");
        let long = format!("/v1/{}", "é".repeat(500));
        let method = "X".repeat(100);
        let e = Use::new("k", t, &method, &long, 404, None, 1);
        assert_eq!(e.path.chars().count(), MAX_PATH_CHARS);
        assert_eq!(e.method.len(), MAX_METHOD_CHARS);
    }

    #[test]
    fn the_queue_is_bounded_and_batches_are_at_most_1000() {
        let log = UsageLog::new(true);
        let t = at("2026-12-06T10:00:00Z");
        // Ten keys: none of them past its share before the queue is full.
        // Distinct requests (identical ones would share an entry).
        for i in 0..QUEUE_CAPACITY + 5 {
            let key = format!("k{}", i % 10);
            let path = format!("/v1/r{i}");
            log.record(Use::new(&key, t, "GET", &path, 200, None, 1));
        }
        assert_eq!(log.len(), QUEUE_CAPACITY);
        assert_eq!(log.dropped(), 5);
        assert_eq!(log.take_batch().len(), MAX_BATCH);
        assert_eq!(log.len(), QUEUE_CAPACITY - MAX_BATCH);

        let off = UsageLog::new(false);
        off.record(Use::new("k", t, "GET", "/v1/me", 200, None, 1));
        assert!(off.is_empty());
    }

    #[test]
    fn past_half_full_one_account_keeps_to_its_share_and_others_still_get_in() {
        let log = UsageLog::new(true);
        let t = at("2026-12-06T10:00:00Z");
        // Entries of `account`, spread over five of its keys.
        let record = |account: &str, i: usize| {
            let key = format!("{account}{}", i % 5);
            let path = format!("/v1/r{i}");
            log.record(Use::new(&key, t, "GET", &path, 200, None, 1).of_account(account));
        };
        // One flooding account: it fills half the queue, then no more,
        // however many keys it spreads the flood over.
        for i in 0..QUEUE_CAPACITY {
            record("flood", i);
        }
        assert_eq!(log.len(), QUEUE_CAPACITY / 2);
        assert_eq!(log.dropped(), (QUEUE_CAPACITY / 2) as u64);
        // Another account still gets in, up to its own share.
        for i in 0..PER_ACCOUNT_SHARE + 1 {
            record("quiet", i);
        }
        assert_eq!(log.len(), QUEUE_CAPACITY / 2 + PER_ACCOUNT_SHARE);
        // While over its share and the queue over half full, the flooding
        // account stays out; once the writer brings the queue under half,
        // it gets in again.
        let taken = log.take_batch();
        assert!(taken.iter().all(|e| e.account == "flood"));
        record("flood", 0);
        assert_eq!(
            log.len(),
            QUEUE_CAPACITY / 2 + PER_ACCOUNT_SHARE - MAX_BATCH
        );
        while log.len() >= QUEUE_CAPACITY / 2 {
            log.take_batch();
        }
        let before = log.len();
        record("flood", 0);
        assert_eq!(log.len(), before + 1);
    }

    #[test]
    fn the_sweep_looks_at_every_key_first_then_at_the_keys_written() {
        let log = UsageLog::new(true);
        assert_eq!(log.take_written(), SweepKeys::All);
        assert_eq!(log.take_written(), SweepKeys::Only(vec![]));
        log.wrote(["a", "b", "a"].into_iter());
        match log.take_written() {
            SweepKeys::Only(mut keys) => {
                keys.sort();
                assert_eq!(keys, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        log.wrote(["c"].into_iter());
        log.sweep_failed();
        assert_eq!(log.take_written(), SweepKeys::All);
        // Too many keys to remember: every key next time.
        let many: Vec<String> = (0..=MAX_WRITTEN_KEYS).map(|i| i.to_string()).collect();
        log.wrote(many.iter().map(String::as_str));
        assert_eq!(log.take_written(), SweepKeys::All);
    }

    #[test]
    fn filters_and_cursors_are_validated_naming_the_field() {
        assert_eq!(parse_status("429").unwrap(), StatusFilter::RateLimited);
        assert_eq!(parse_status("4xx").unwrap(), StatusFilter::ClientErrors);
        assert_eq!(parse_status("5xx").unwrap(), StatusFilter::ServerErrors);
        for bad in ["4XX", "200", "", "4xx,5xx"] {
            match parse_status(bad) {
                Err(ApiError::BadRequest(m)) => assert!(m.starts_with("status"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            parse_since("2026-12-01T00:00:00+01:00").unwrap(),
            at("2026-11-30T23:00:00Z")
        );
        match parse_since("yesterday") {
            Err(ApiError::BadRequest(m)) => assert!(m.starts_with("since"), "{m}"),
            other => panic!("{other:?}"),
        }
        let row = UsageRow {
            id: 42,
            key_id: "k".into(),
            at: at("2026-12-06T10:00:00.123456Z"),
            method: "GET".into(),
            path: "/v1/me".into(),
            status: 200,
            client_ip: None,
            duration_ms: 1,
            requests: 1,
        };
        let decoded = decode_cursor(Some(&cursor_of(&row))).unwrap().unwrap();
        assert_eq!(position_of(&decoded).unwrap(), (row.at, 42));
        assert!(matches!(position_of("x.1"), Err(ApiError::BadRequest(_))));
        assert!(matches!(position_of("1"), Err(ApiError::BadRequest(_))));
        // Forged times outside what the databases store (PostgreSQL's
        // timestamps start in 4713 BC; chrono's go further).
        for forged in ["-8000000000000000000.1", "-1.1", "253402300800000000.1"] {
            assert!(
                matches!(position_of(forged), Err(ApiError::BadRequest(_))),
                "{forged}"
            );
        }
        assert!(position_of("253402300799999999.1").is_ok());
    }
}
