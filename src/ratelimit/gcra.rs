//! The Generic Cell Rate Algorithm, as redis-cell's `CL.THROTTLE` does it:
//! one "theoretical arrival time" (TAT) per key. A limit of `L` requests a
//! minute lets a fresh key make exactly `L` requests at once and then gives
//! one back every `60/L` seconds; no window edge ever lets `2L` through.
//!
//! Pure: the caller passes the stored TAT and the current time (both in
//! microseconds since the epoch) and stores what it gets back. The Lua script
//! of the Redis store (`ratelimit::redis`) is the same computation.

/// The length of the budget's window: limits are per minute.
pub const WINDOW_MICROS: i64 = 60_000_000;

/// What one request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests per minute.
    pub limit: u32,
    /// Requests left at once after this one.
    pub remaining: u32,
    /// When the budget is full again (Remaining back at Limit), microseconds
    /// since the epoch.
    pub reset_at: i64,
    /// A limited request: how long until one more is allowed, microseconds.
    pub retry_after: i64,
}

impl Decision {
    /// `X-RateLimit-Reset`: epoch seconds, rounded up.
    pub fn reset_epoch_secs(&self) -> i64 {
        ceil_div(self.reset_at, 1_000_000)
    }

    /// `Retry-After`: whole seconds, at least 1 for a limited request.
    pub fn retry_after_secs(&self) -> i64 {
        ceil_div(self.retry_after, 1_000_000).max(1)
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

/// The emission interval of `limit` requests a minute (at least 1 µs).
pub fn interval(limit: u32) -> i64 {
    (WINDOW_MICROS / i64::from(limit.max(1))).max(1)
}

/// One request at `now` against a key whose TAT is `tat` (None: never seen,
/// or expired). Returns the decision and, if allowed, the TAT to store.
pub fn decide(tat: Option<i64>, now: i64, limit: u32) -> (Decision, Option<i64>) {
    let limit = limit.max(1);
    let t = interval(limit);
    // The budget: exactly `limit` emission intervals.
    let window = t * i64::from(limit);
    let tat = tat.map_or(now, |tat| tat.max(now));
    let new_tat = tat + t;
    if new_tat - now > window {
        let decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_at: tat,
            retry_after: new_tat - window - now,
        };
        return (decision, None);
    }
    let remaining = (window - (new_tat - now)) / t;
    let decision = Decision {
        allowed: true,
        limit,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_at: new_tat,
        retry_after: 0,
    };
    (decision, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    fn run(limit: u32, times: &[i64]) -> Vec<Decision> {
        let mut tat = None;
        times
            .iter()
            .map(|&at| {
                let (d, next) = decide(tat, at, limit);
                if next.is_some() {
                    tat = next;
                }
                d
            })
            .collect()
    }

    #[test]
    fn a_fresh_key_gets_exactly_limit_requests_at_once() {
        let decisions = run(60, &[NOW; 61]);
        assert!(decisions[..60].iter().all(|d| d.allowed));
        assert_eq!(decisions[0].remaining, 59);
        assert_eq!(decisions[59].remaining, 0);
        let limited = decisions[60];
        assert!(!limited.allowed);
        assert_eq!(limited.remaining, 0);
        assert_eq!(limited.retry_after_secs(), 1);
        // Full again one minute after the burst.
        assert_eq!(limited.reset_at, NOW + WINDOW_MICROS);
    }

    #[test]
    fn one_request_comes_back_every_interval() {
        let mut times = vec![NOW; 60];
        times.push(NOW + 999_999);
        times.push(NOW + 1_000_000);
        times.push(NOW + 1_000_000);
        let d = run(60, &times);
        assert!(!d[60].allowed, "not yet");
        assert!(d[61].allowed, "one back after 1 s");
        assert!(!d[62].allowed, "only one");
    }

    #[test]
    fn a_sustained_flood_gets_the_burst_plus_the_rate_and_no_more() {
        // 300/min hammered for two minutes at 10 ms steps: the burst of 300,
        // then one every 200 ms (600 over two minutes), never more.
        let times: Vec<i64> = (0..12_000).map(|i| NOW + i * 10_000).collect();
        let d = run(300, &times);
        let allowed_at: Vec<i64> = times
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.allowed)
            .map(|(t, _)| *t)
            .collect();
        for (i, &start) in allowed_at.iter().enumerate() {
            let in_minute = allowed_at[i..]
                .iter()
                .take_while(|&&t| t < start + WINDOW_MICROS)
                .count();
            assert!(in_minute <= 600, "{in_minute}");
        }
        assert!(allowed_at.len() <= 300 + 600 + 1, "{}", allowed_at.len());
        assert!(allowed_at.len() >= 300 + 600 - 1, "{}", allowed_at.len());
    }

    #[test]
    fn headers_round_up_to_seconds() {
        let (d, _) = decide(None, NOW + 1, 60);
        assert_eq!(
            d.reset_epoch_secs(),
            (NOW + 1 + 1_000_000).div_euclid(1_000_000) + 1
        );
    }
}
