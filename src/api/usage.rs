//! `last_used_at` of API keys without a database write per request: uses
//! are recorded in memory and written by a background task, at most once
//! per key per [`WRITE_EVERY`]. No I/O here; `maintenance` writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;

use chrono::{DateTime, Duration, NaiveDateTime};

/// A key's `last_used_at` is written at most this often.
pub const WRITE_EVERY: Duration = Duration::seconds(60);

/// Keys tracked at most between two flushes; a flood of distinct keys
/// beyond that waits for the next flush.
const MAX_PENDING: usize = 100_000;

struct Usage {
    /// Latest use seen by this instance, in milliseconds since the epoch.
    /// Raised with an atomic max under the map's *read* lock, so requests
    /// using keys never wait for each other (a lock held by a preempted
    /// thread would stall every other worker for a whole time slice).
    last_used: AtomicI64,
    /// What was last written for this key, and when (by this instance).
    written: Option<(i64, NaiveDateTime)>,
}

#[derive(Default)]
pub struct UsageTracker {
    keys: RwLock<HashMap<String, Usage>>,
}

fn millis(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

fn from_millis(ms: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ms).map(|t| t.naive_utc())
}

impl UsageTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key `key_id` was used at `now`.
    pub fn record(&self, key_id: &str, now: NaiveDateTime) {
        let ms = millis(now);
        if let Ok(keys) = self.keys.read() {
            if let Some(usage) = keys.get(key_id) {
                usage.last_used.fetch_max(ms, Ordering::Relaxed);
                return;
            }
        }
        // First use since the last flush: insert (rare, takes the write lock).
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        if let Some(usage) = keys.get(key_id) {
            usage.last_used.fetch_max(ms, Ordering::Relaxed);
        } else if keys.len() < MAX_PENDING {
            keys.insert(
                key_id.to_owned(),
                Usage {
                    last_used: AtomicI64::new(ms),
                    written: None,
                },
            );
        }
    }

    /// The latest use this instance has seen of `key_id`, written or not
    /// (listings show it before the flush).
    pub fn last_used(&self, key_id: &str) -> Option<NaiveDateTime> {
        let keys = self.keys.read().ok()?;
        from_millis(keys.get(key_id)?.last_used.load(Ordering::Relaxed))
    }

    /// The writes due at `now`: each key used since its last write, whose
    /// last write is at least [`WRITE_EVERY`] old. They count as written
    /// from here on (a failed write is simply retried after the interval).
    /// Keys idle for a whole interval are forgotten.
    pub fn due(&self, now: NaiveDateTime) -> Vec<(String, NaiveDateTime)> {
        let Ok(mut keys) = self.keys.write() else {
            return Vec::new();
        };
        let mut due = Vec::new();
        keys.retain(|id, usage| {
            let used = usage.last_used.load(Ordering::Relaxed);
            match usage.written {
                // Nothing new: keep it only while a write would still be
                // throttled, so the next use is not written at once.
                Some((value, at)) if value >= used => now - at < WRITE_EVERY,
                Some((_, at)) if now - at < WRITE_EVERY => true,
                _ => {
                    if let Some(t) = from_millis(used) {
                        due.push((id.clone(), t));
                    }
                    usage.written = Some((used, now));
                    true
                }
            }
        });
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn a_key_is_written_at_most_once_a_minute() {
        let tracker = UsageTracker::new();
        tracker.record("key_a", t(0));
        assert_eq!(tracker.due(t(1)), vec![("key_a".to_owned(), t(0))]);
        // Used many times within the minute: no write until it has passed.
        for s in 2..50 {
            tracker.record("key_a", t(s));
            assert!(tracker.due(t(s)).is_empty(), "written again at {s}");
        }
        assert_eq!(tracker.last_used("key_a"), Some(t(49)));
        assert_eq!(tracker.due(t(61)), vec![("key_a".to_owned(), t(49))]);
        // Nothing new since: no write, and the entry is dropped once idle.
        assert!(tracker.due(t(130)).is_empty());
        assert!(tracker.due(t(200)).is_empty());
        assert_eq!(tracker.last_used("key_a"), None);
    }

    #[test]
    fn keys_are_tracked_apart_and_time_never_goes_back() {
        let tracker = UsageTracker::new();
        tracker.record("key_a", t(10));
        tracker.record("key_a", t(5));
        tracker.record("key_b", t(7));
        let mut due = tracker.due(t(11));
        due.sort();
        assert_eq!(
            due,
            vec![("key_a".to_owned(), t(10)), ("key_b".to_owned(), t(7))]
        );
    }
}
