//! Rate limits (seed: "Rate Limits": Standard 60, Professional 300 requests a
//! minute, Enterprise custom), keyed on the account `credentials` resolved,
//! or on the client's address for requests that did not authenticate.
//!
//! The algorithm is GCRA ([`gcra`]). Counters live in Redis when
//! `DZDESK_REDIS_URL` is set, so every instance shares one budget (one atomic
//! round trip: a Lua script, [`redis`]); otherwise, or while Redis is
//! unreachable or slower than `DZDESK_REDIS_TIMEOUT_MS`, in this process
//! ([`LocalStore`], bounded).

pub mod gcra;
pub mod redis;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use gcra::Decision;

/// Keys held in process at most (across shards); past it the keys with
/// the most budget left are dropped first.
pub const MAX_LOCAL_KEYS: usize = 100_000;
const SHARDS: usize = 16;

/// In-process GCRA state: the TAT of each key, sharded so that the two
/// workers rarely meet on a lock.
pub struct LocalStore {
    shards: Vec<Mutex<HashMap<String, i64>>>,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl LocalStore {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, i64>> {
        // FNV-1a: cheap, and keys are ours (an account id or an address).
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// One request for `key` at `now` (µs since the epoch).
    pub fn check(&self, key: &str, limit: u32, now: i64) -> Decision {
        let Ok(mut map) = self.shard(key).lock() else {
            // A poisoned lock: refuse rather than let everything through.
            return gcra::decide(Some(now + gcra::WINDOW_MICROS * 2), now, limit).0;
        };
        let (decision, next) = gcra::decide(map.get(key).copied(), now, limit);
        if let Some(tat) = next {
            if !map.contains_key(key) && map.len() >= MAX_LOCAL_KEYS / SHARDS {
                // A TAT in the past is a full budget: the same as absent.
                map.retain(|_, tat| *tat > now);
                if map.len() >= MAX_LOCAL_KEYS / SHARDS {
                    // Still full (a flood of distinct keys): drop the key
                    // with the most budget left, the least worth keeping.
                    if let Some(k) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                        map.remove(&k);
                    }
                }
            }
            map.insert(key.to_owned(), tat);
        }
        decision
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`ip_key`] of the request's address, or one shared key when it is
/// unknown (no peer address: every such request counts together).
pub fn address_key(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "ip:unknown".to_owned(), ip_key)
}

/// The key of an address's budget: IPv6 counts per /64 (one customer's
/// network), IPv4 per address. IPv6 addresses that carry an IPv4 one count
/// as that IPv4 address: NAT64's well-known prefix (RFC 6052 2.1,
/// 64:ff9b::/96, where every IPv4 client would otherwise share one /64),
/// 6to4 (RFC 3056 2, 2002::/16, where one IPv4 host would own 65,536 /64s)
/// and Teredo (RFC 4380 4, 2001::/32, client address inverted in the last
/// 32 bits).
pub fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let v4 =
                |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                format!("ip:{}", v4(s[6], s[7]))
            } else if s[0] == 0x2002 {
                format!("ip:{}", v4(s[1], s[2]))
            } else if s[0] == 0x2001 && s[1] == 0 {
                format!("ip:{}", v4(!s[6], !s[7]))
            } else {
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        }
    }
}

/// The limiter every instance asks: Redis when configured and answering,
/// else this process.
pub struct Limiter {
    local: LocalStore,
    throttle: throttle::Throttle,
    redis: Option<redis::RedisStore>,
}

impl Limiter {
    pub fn new(redis: Option<redis::RedisStore>) -> Self {
        Self {
            local: LocalStore::default(),
            throttle: throttle::Throttle::default(),
            redis,
        }
    }

    /// One request for `key` with `limit` requests a minute, at `now` (µs
    /// since the epoch; Redis uses its own clock, shared by every
    /// instance).
    pub async fn check(&self, key: &str, limit: u32, now: i64) -> Decision {
        if let Some(redis) = &self.redis {
            if let Some(decision) = redis.check(key, limit).await {
                return decision;
            }
        }
        self.local.check(key, limit, now)
    }

    /// Brute-force throttling ([`throttle`]): checks every subject's lock
    /// and reserves a failure on each, atomically, in Redis when it answers
    /// (so several instances agree), else in process. A lock this process
    /// holds (counted here while Redis was away, or mirrored) refuses
    /// whatever Redis says: Redis coming back does not forgive it. Locks
    /// Redis reports are mirrored here with their real length, so that this
    /// instance's hot path ([`Limiter::locked_here`]) refuses without asking
    /// Redis.
    pub async fn throttle_begin(
        &self,
        subjects: &[throttle::Subject],
        now_secs: i64,
    ) -> throttle::Begin {
        if let Some(redis) = &self.redis {
            if let Some(locked) = self.throttle.refusal(subjects, now_secs) {
                return locked;
            }
            if let Some(begin) = redis.throttle(subjects, false).await {
                let policy = |key: &str| {
                    subjects
                        .iter()
                        .find(|s| s.key == key)
                        .map_or(throttle::Policy::CLIENT_PAIR, |s| s.policy)
                };
                match &begin {
                    throttle::Begin::Locked { key, retry_after } => {
                        self.throttle
                            .lock_for(key, now_secs + retry_after, policy(key));
                    }
                    throttle::Begin::Allowed { locked_now, .. } => {
                        for (key, secs) in locked_now {
                            self.throttle.lock_for(key, now_secs + secs, policy(key));
                        }
                    }
                }
                return begin;
            }
        }
        self.throttle.begin(subjects, now_secs)
    }

    /// The guess was right: give the reservation back (reset the pair), in
    /// the store that took it (`shared`: Redis). A Redis that cannot be
    /// reached now keeps the reservation as a failure, which errs on the
    /// safe side.
    pub async fn throttle_succeeded(
        &self,
        subjects: &[throttle::Subject],
        now_secs: i64,
        shared: bool,
    ) {
        match &self.redis {
            Some(redis) if shared => {
                if redis.throttle(subjects, true).await.is_some() {
                    self.throttle.lift_mirrors(subjects, now_secs);
                }
            }
            _ => self.throttle.succeeded(subjects, now_secs),
        }
    }

    /// Nothing is counted in this process's throttle: no key can be locked
    /// here (one atomic load).
    pub fn throttle_holds_nothing(&self) -> bool {
        self.throttle.holds_nothing()
    }

    /// Whether `key` is locked in this process (the token endpoint's hot
    /// path asks this, and only this, before a success).
    pub fn locked_here(&self, key: &str, now_secs: i64) -> Option<i64> {
        self.throttle.locked(key, now_secs)
    }

    /// Redis is configured but not answering: decisions are made in
    /// process (reported by `/readyz`).
    pub fn degraded(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| r.degraded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a = ip_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ip_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ip_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ip_key("::ffff:192.0.2.1".parse().unwrap()),
            ip_key("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_addresses_carrying_an_ipv4_one_count_as_it() {
        let v4 = ip_key("192.0.2.33".parse().unwrap());
        // NAT64: two IPv4 clients behind one translator are two budgets.
        assert_eq!(ip_key("64:ff9b::c000:221".parse().unwrap()), v4);
        assert_ne!(ip_key("64:ff9b::c000:222".parse().unwrap()), v4);
        // 6to4: one IPv4 host's 65,536 /64s are one budget.
        assert_eq!(ip_key("2002:c000:221:1::1".parse().unwrap()), v4);
        assert_eq!(ip_key("2002:c000:221:ffff::1".parse().unwrap()), v4);
        // Teredo (RFC 4380 4): the client's address, inverted.
        assert_eq!(
            ip_key("2001:0:4136:e378:8000:63bf:3fff:fdde".parse().unwrap()),
            v4
        );
        // Any other IPv6 address: its /64.
        assert_eq!(
            ip_key("2001:db8::1".parse().unwrap()),
            "ip6:2001:db8:0:0::/64"
        );
    }

    #[test]
    fn keys_do_not_share_budgets() {
        let store = LocalStore::default();
        for _ in 0..60 {
            assert!(store.check("user:a", 60, NOW).allowed);
        }
        assert!(!store.check("user:a", 60, NOW).allowed);
        assert!(store.check("user:b", 60, NOW).allowed);
    }

    #[test]
    fn the_local_store_is_bounded() {
        let store = LocalStore::default();
        for i in 0..(MAX_LOCAL_KEYS + 5_000) {
            store.check(&format!("ip:{i}"), 60, NOW);
        }
        assert!(store.len() <= MAX_LOCAL_KEYS, "{}", store.len());
        // Keys whose budget is full again are dropped first.
        let later = NOW + gcra::WINDOW_MICROS * 2;
        store.check("ip:new", 60, later);
        assert!(store.len() <= MAX_LOCAL_KEYS);
    }
}
