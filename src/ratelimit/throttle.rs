//! Brute-force throttling: failed guesses counted per key, with locks that
//! need no administrator to lift (none is permanent).
//!
//! An attempt *reserves* its failure before the password or secret is
//! checked ([`Throttle::begin`]), atomically with checking every lock it is
//! subject to; a success gives the reservation back ([`Throttle::succeeded`]).
//! So fifty parallel wrong passwords get exactly as many guesses as the
//! limit, never more (parallel checks bypassing a lockout is a known CVE
//! class: Zitadel GHSA-7h8m-vrxx-vr4m, keycloak#31726).
//!
//! The reservation that reaches the limit locks the key at once, but the
//! lock only stands if every reservation it counted fails: one given back
//! while it holds lifts it (it was set by guesses still being checked, and
//! one of them was right). So twenty people signing in at once from one
//! office's address lock nothing.
//!
//! Pure state transitions ([`Counter`]) take the current time; the store is
//! this process ([`Throttle`]) or Redis (the same transitions in Lua,
//! `ratelimit::redis`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window_secs` that lock the key.
    pub max_failures: u32,
    pub window_secs: i64,
    /// The first lock's length; each further lock doubles it, up to
    /// `max_lock_secs`. Equal for a fixed lock.
    pub lock_secs: i64,
    pub max_lock_secs: i64,
}

impl Policy {
    /// Sign-in, per (account, address): 5 failures in 15 minutes lock the
    /// pair for 1 minute, then 2, 4, ... up to an hour.
    pub const SIGN_IN_PAIR: Policy = Policy {
        max_failures: 5,
        window_secs: 15 * 60,
        lock_secs: 60,
        max_lock_secs: 3600,
    };
    /// Sign-in, per address across accounts: 20 failures in 15 minutes,
    /// then 15 minutes of 429.
    pub const SIGN_IN_ADDRESS: Policy = Policy {
        max_failures: 20,
        window_secs: 15 * 60,
        lock_secs: 15 * 60,
        max_lock_secs: 15 * 60,
    };
    /// Sign-in, per account from any address (credential stuffing): 100
    /// failures in an hour lock it for 15 minutes for everyone.
    pub const SIGN_IN_ACCOUNT: Policy = Policy {
        max_failures: 100,
        window_secs: 3600,
        lock_secs: 15 * 60,
        max_lock_secs: 15 * 60,
    };
    /// Client authentication at the token endpoint, per (client_id,
    /// address): as sign-in pairs. Never per client alone: a client_id is
    /// public, and locking it for every address would hand anyone a switch
    /// to turn a service off.
    pub const CLIENT_PAIR: Policy = Policy::SIGN_IN_PAIR;
    /// Client authentication, per address.
    pub const CLIENT_ADDRESS: Policy = Policy::SIGN_IN_ADDRESS;

    fn lock_for(&self, level: u32) -> i64 {
        let doubled = self
            .lock_secs
            .checked_shl(level.min(32))
            .unwrap_or(self.max_lock_secs);
        doubled.clamp(self.lock_secs, self.max_lock_secs)
    }
}

/// Escalation is remembered this long after a lock ends.
pub const LEVEL_MEMORY_SECS: i64 = 24 * 3600;

/// A window is counted in this many steps (plus the one under way): a
/// failure leaves the count between `window` and `window + window / STEPS`
/// after it happened, never earlier. So any `max_failures` failures within
/// the window lock the key, wherever they fall: a sliding window, not a
/// fixed one that an attacker could straddle with twice the limit.
pub const STEPS: i64 = 15;
const RING: usize = STEPS as usize + 1;

/// The state of one key (seconds since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Failures per step of `window / STEPS` seconds, a ring indexed by
    /// step number modulo its length.
    steps: [u16; RING],
    /// The step `steps` was last brought up to.
    step: i64,
    pub locked_until: i64,
    /// Locks so far (escalation).
    pub level: u32,
}

impl Counter {
    /// Seconds left on the lock, if locked at `now`.
    pub fn locked(&self, now: i64) -> Option<i64> {
        (self.locked_until > now).then(|| self.locked_until - now)
    }

    fn step_of(now: i64, policy: &Policy) -> i64 {
        now.div_euclid((policy.window_secs / STEPS).max(1))
    }

    /// Brings the ring up to `now`: steps that left the window are zeroed.
    fn advance(&mut self, now: i64, policy: &Policy) {
        let step = Self::step_of(now, policy);
        if step <= self.step {
            return;
        }
        if step - self.step >= RING as i64 {
            self.steps = [0; RING];
        } else {
            for s in self.step + 1..=step {
                self.steps[s.rem_euclid(RING as i64) as usize] = 0;
            }
        }
        self.step = step;
    }

    /// Failures counted at `now`.
    pub fn failures(&mut self, now: i64, policy: &Policy) -> u32 {
        self.advance(now, policy);
        self.steps.iter().map(|n| u32::from(*n)).sum()
    }

    /// Counts one (provisional) failure at `now`; the caller has checked
    /// that the key is not locked. Returns the lock's length when this
    /// failure locked the key. The count stays while the lock holds (so
    /// that a give-back can tell the lock was provisional), and starts over
    /// after it.
    pub fn fail(&mut self, now: i64, policy: &Policy) -> Option<i64> {
        if self.failures(now, policy) >= policy.max_failures && self.locked(now).is_none() {
            self.steps = [0; RING];
        }
        let here = self.step.rem_euclid(RING as i64) as usize;
        self.steps[here] = self.steps[here].saturating_add(1);
        if self.failures(now, policy) < policy.max_failures {
            return None;
        }
        let lock = policy.lock_for(self.level);
        self.locked_until = now + lock;
        self.level = self.level.saturating_add(1);
        Some(lock)
    }

    /// Gives back one provisional failure (the guess was right): the
    /// newest. A lock in force was set by this reservation's count, so it
    /// did not deserve it: lifted, and its escalation step undone.
    pub fn give_back(&mut self, now: i64, policy: &Policy) {
        if self.failures(now, policy) >= policy.max_failures && self.locked(now).is_some() {
            self.locked_until = 0;
            self.level = self.level.saturating_sub(1);
        }
        for back in 0..RING as i64 {
            let i = (self.step - back).rem_euclid(RING as i64) as usize;
            if self.steps[i] > 0 {
                self.steps[i] -= 1;
                return;
            }
        }
    }

    /// How much the key is worth keeping when the store is full (lower
    /// goes first).
    fn worth(&mut self, now: i64, policy: &Policy) -> (u8, i64) {
        match self.locked(now) {
            Some(_) => (2, self.locked_until),
            None if self.level > 0 => (1, i64::from(self.failures(now, policy))),
            None => (0, i64::from(self.failures(now, policy))),
        }
    }

    /// Whether nothing about the key is worth keeping at `now`.
    fn is_dead(&mut self, now: i64, policy: &Policy) -> bool {
        let memory_over = self.level == 0 || now - self.locked_until >= LEVEL_MEMORY_SECS;
        self.locked(now).is_none() && memory_over && self.failures(now, policy) == 0
    }
}

/// One key an attempt is subject to.
#[derive(Debug, Clone)]
pub struct Subject {
    pub key: String,
    pub policy: Policy,
    /// A success resets this key (the pair), rather than giving back the
    /// one provisional failure (the address, the account).
    pub reset_on_success: bool,
}

/// What [`Throttle::begin`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Go on and check the secret; then call `succeeded` or nothing.
    Allowed {
        /// Keys this attempt's failure just locked, with the lock's length
        /// in seconds (to log, and to mirror).
        locked_now: Vec<(String, i64)>,
        /// The reservation is in Redis (else in this process): a success
        /// gives it back there, and only there.
        shared: bool,
    },
    /// A lock is in force: refuse without checking anything.
    Locked { key: String, retry_after: i64 },
}

/// Keys held at most; past it, dead ones go, then the oldest windows.
pub const MAX_KEYS: usize = 100_000;

/// The in-process store.
#[derive(Default)]
pub struct Throttle {
    counters: Mutex<HashMap<String, (Counter, Policy)>>,
    /// How many keys `counters` holds, readable without the lock.
    held: AtomicUsize,
    calls: AtomicUsize,
}

impl Throttle {
    /// Checks every subject's lock and, if none holds, reserves one failure
    /// on each, all under one lock (atomic).
    pub fn begin(&self, subjects: &[Subject], now: i64) -> Begin {
        let Ok(mut map) = self.counters.lock() else {
            return Begin::Locked {
                key: "throttle".into(),
                retry_after: 60,
            };
        };
        if let Some(locked) = first_lock(&map, subjects, now) {
            return locked;
        }
        // Now and then, and whenever full: forget what is dead, so that the
        // hot path's "nothing held" shortcut comes back once locks expire.
        let calls = self.calls.fetch_add(1, Ordering::Relaxed);
        if calls % 1024 == 0 || map.len() + subjects.len() > MAX_KEYS {
            map.retain(|_, (c, p)| !c.is_dead(now, p));
        }
        if map.len() + subjects.len() > MAX_KEYS {
            // A flood of distinct keys: down to three quarters in one pass
            // (so the next pass is a quarter of the store away), the least
            // worth keeping first: plain counts by how few failures they
            // hold, then escalation memory, then locks, soonest over first.
            let excess = map.len() + subjects.len() - MAX_KEYS * 3 / 4;
            let mut ranks: Vec<(u8, i64)> =
                map.values_mut().map(|(c, p)| c.worth(now, p)).collect();
            if !ranks.is_empty() {
                let nth = excess.min(ranks.len() - 1);
                let cut = ranks.select_nth_unstable(nth).1.to_owned();
                map.retain(|_, (c, p)| c.worth(now, p) > cut);
            }
        }
        let mut locked_now = Vec::new();
        for s in subjects {
            let (counter, _) = map
                .entry(s.key.clone())
                .or_insert((Counter::default(), s.policy));
            if let Some(secs) = counter.fail(now, &s.policy) {
                locked_now.push((s.key.clone(), secs));
            }
        }
        self.held.store(map.len(), Ordering::Release);
        Begin::Allowed {
            locked_now,
            shared: false,
        }
    }

    /// The first lock in force on any subject here, counting nothing (one
    /// look under the lock; none at all while nothing is held).
    pub fn refusal(&self, subjects: &[Subject], now: i64) -> Option<Begin> {
        if self.holds_nothing() {
            return None;
        }
        first_lock(&*self.counters.lock().ok()?, subjects, now)
    }

    /// The attempt's secret was right: reset the pair, give back the rest.
    pub fn succeeded(&self, subjects: &[Subject], now: i64) {
        let Ok(mut map) = self.counters.lock() else {
            return;
        };
        for s in subjects {
            if let Some((c, _)) = map.get_mut(&s.key) {
                if s.reset_on_success {
                    // The lock a success itself may have set goes too.
                    *c = Counter::default();
                } else {
                    c.give_back(now, &s.policy);
                }
            }
        }
    }

    /// A success Redis took back: the mirrors of its locks here (entries
    /// that count no failure of their own) are lifted too, since Redis may
    /// just have lifted a provisional lock. Locks counted here stay.
    pub fn lift_mirrors(&self, subjects: &[Subject], now: i64) {
        let Ok(mut map) = self.counters.lock() else {
            return;
        };
        for s in subjects {
            if let Some((c, p)) = map.get_mut(&s.key) {
                if c.locked(now).is_some() && c.failures(now, p) == 0 {
                    c.locked_until = 0;
                }
            }
        }
    }

    /// Whether `key` is locked at `now`, without counting anything.
    pub fn locked(&self, key: &str, now: i64) -> Option<i64> {
        self.counters
            .lock()
            .ok()?
            .get(key)
            .and_then(|(c, _)| c.locked(now))
    }

    /// Marks `key` locked until `until` here (a lock Redis reported), so
    /// that this instance's hot path refuses without asking Redis.
    pub fn lock_for(&self, key: &str, until: i64, policy: Policy) {
        if let Ok(mut map) = self.counters.lock() {
            if map.len() < MAX_KEYS {
                let entry = map
                    .entry(key.to_owned())
                    .or_insert((Counter::default(), policy));
                entry.0.locked_until = entry.0.locked_until.max(until);
            }
            self.held.store(map.len(), Ordering::Release);
        }
    }

    pub fn len(&self) -> usize {
        self.counters.lock().map_or(0, |m| m.len())
    }

    /// No key is held (so none is locked): one atomic load, no lock.
    pub fn holds_nothing(&self) -> bool {
        self.held.load(Ordering::Acquire) == 0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first of `subjects` locked at `now` in `map`, as the refusal.
fn first_lock(
    map: &HashMap<String, (Counter, Policy)>,
    subjects: &[Subject],
    now: i64,
) -> Option<Begin> {
    subjects.iter().find_map(|s| {
        let left = map.get(&s.key)?.0.locked(now)?;
        Some(Begin::Locked {
            key: s.key.clone(),
            retry_after: left,
        })
    })
}

/// What names an account or client inside a key: a short digest of what
/// was typed, so that a key is at most ~100 bytes however long the input
/// (a 16 KiB "email" must not cost 16 KiB per counter, here or in Redis).
fn digest(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(raw.as_bytes())[..12])
}

/// The subjects of a sign-in attempt: the (account, address) pair, the
/// address, the account. The account is the email as typed (trimmed,
/// lowercased), so unknown emails are throttled exactly like real ones.
pub fn sign_in_subjects(email: &str, address_key: &str) -> Vec<Subject> {
    let account = digest(&email.trim().to_lowercase());
    vec![
        Subject {
            key: format!("login:pair:{account}|{address_key}"),
            policy: Policy::SIGN_IN_PAIR,
            reset_on_success: true,
        },
        Subject {
            key: format!("login:addr:{address_key}"),
            policy: Policy::SIGN_IN_ADDRESS,
            reset_on_success: false,
        },
        Subject {
            key: format!("login:acct:{account}"),
            policy: Policy::SIGN_IN_ACCOUNT,
            reset_on_success: false,
        },
    ]
}

/// The subjects of a client authentication: (client_id, address) and the
/// address. Never the client alone.
/// What a lock is set on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// An (account or client, address) pair.
    Pair,
    /// An address, whatever the accounts or clients.
    Address,
    /// An account, whatever the addresses.
    Account,
}

impl LockScope {
    /// The scope of the lock named `key` (a [`Subject`]'s key).
    pub fn of(key: &str) -> Self {
        match key.split(':').nth(1) {
            Some("pair") => LockScope::Pair,
            Some("addr") => LockScope::Address,
            _ => LockScope::Account,
        }
    }
}

pub fn client_subjects(client_id: &str, address_key: &str) -> Vec<Subject> {
    let client_id = digest(client_id);
    vec![
        Subject {
            key: format!("client:pair:{client_id}|{address_key}"),
            policy: Policy::CLIENT_PAIR,
            reset_on_success: true,
        },
        Subject {
            key: format!("client:addr:{address_key}"),
            policy: Policy::CLIENT_ADDRESS,
            reset_on_success: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_has_its_scope() {
        let scopes: Vec<LockScope> = sign_in_subjects("a@example.com", "ip:192.0.2.1")
            .iter()
            .chain(&client_subjects("client_a", "ip:192.0.2.1"))
            .map(|s| LockScope::of(&s.key))
            .collect();
        assert_eq!(
            scopes,
            [
                LockScope::Pair,
                LockScope::Address,
                LockScope::Account,
                LockScope::Pair,
                LockScope::Address
            ]
        );
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn five_failures_lock_the_pair_for_a_growing_time_capped_at_an_hour() {
        let mut c = Counter::default();
        let p = Policy::SIGN_IN_PAIR;
        let mut now = NOW;
        let mut locks = Vec::new();
        for _ in 0..8 {
            let mut lock = None;
            for _ in 0..5 {
                lock = c.fail(now, &p);
            }
            let lock = lock.expect("the fifth failure locks");
            locks.push(lock);
            now += lock;
            assert!(c.locked(now).is_none(), "no lock is permanent");
        }
        assert_eq!(locks, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn failures_leave_the_count_after_the_window() {
        let mut c = Counter::default();
        let p = Policy::SIGN_IN_PAIR;
        for i in 0..4 {
            assert!(c.fail(NOW + i, &p).is_none());
        }
        assert!(
            c.fail(NOW + 16 * 60, &p).is_none(),
            "the first four are gone"
        );
        assert_eq!(c.failures(NOW + 16 * 60, &p), 1);
    }

    #[test]
    fn any_five_failures_within_fifteen_minutes_lock_wherever_they_fall() {
        // A fixed window would let 4 + 4 through across its edge.
        for policy in [Policy::SIGN_IN_PAIR, Policy::SIGN_IN_ACCOUNT] {
            let span = policy.window_secs - 1;
            for start in (0..2 * policy.window_secs).step_by(37) {
                let mut c = Counter::default();
                let n = i64::from(policy.max_failures);
                let mut lock = None;
                for k in 0..n {
                    lock = c.fail(NOW + start + span * k / (n - 1), &policy);
                }
                assert!(lock.is_some(), "{policy:?} from {start}");
            }
        }
    }

    #[test]
    fn parallel_reservations_never_exceed_the_limit() {
        let t = std::sync::Arc::new(Throttle::default());
        let subjects = sign_in_subjects("Ann@Example.com ", "ip:192.0.2.1");
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (t, s) = (t.clone(), subjects.clone());
                std::thread::spawn(move || matches!(t.begin(&s, NOW), Begin::Allowed { .. }))
            })
            .collect();
        let allowed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|a| *a)
            .count();
        assert_eq!(allowed, 5);
        // The right password is refused too while locked.
        assert!(matches!(t.begin(&subjects, NOW + 1), Begin::Locked { .. }));
        // Another address for the same account is not affected.
        let elsewhere = sign_in_subjects("ann@example.com", "ip:198.51.100.7");
        assert!(matches!(
            t.begin(&elsewhere, NOW + 1),
            Begin::Allowed { .. }
        ));
    }

    #[test]
    fn a_success_resets_its_pair_and_gives_back_the_rest() {
        let t = Throttle::default();
        let subjects = sign_in_subjects("ann@example.com", "ip:192.0.2.1");
        for _ in 0..4 {
            assert!(matches!(t.begin(&subjects, NOW), Begin::Allowed { .. }));
        }
        t.begin(&subjects, NOW);
        // The fifth locked the pair; suppose it was right (it was let in).
        t.succeeded(&subjects, NOW);
        assert!(t.locked(&subjects[0].key, NOW).is_none());
        for _ in 0..4 {
            assert!(matches!(t.begin(&subjects, NOW), Begin::Allowed { .. }));
        }
    }

    #[test]
    fn parallel_right_passwords_from_one_address_lock_nothing() {
        let t = Throttle::default();
        // Twenty colleagues behind one address sign in at once: every
        // reservation is counted before any password is checked.
        let people: Vec<_> = (0..20)
            .map(|i| sign_in_subjects(&format!("user{i}@example.com"), "ip:192.0.2.1"))
            .collect();
        for s in &people {
            assert!(matches!(t.begin(s, NOW), Begin::Allowed { .. }));
        }
        // The twentieth locked the address, provisionally: a twenty-first
        // arriving now waits.
        let late = sign_in_subjects("late@example.com", "ip:192.0.2.1");
        assert!(matches!(t.begin(&late, NOW), Begin::Locked { .. }));
        for s in &people {
            t.succeeded(s, NOW + 1);
        }
        assert!(t.locked("login:addr:ip:192.0.2.1", NOW + 1).is_none());
        assert!(matches!(t.begin(&late, NOW + 1), Begin::Allowed { .. }));
        // And the lock a real flood earns is the first step, not the second.
        let mut c = Counter::default();
        let p = Policy::SIGN_IN_ADDRESS;
        for _ in 0..20 {
            c.fail(NOW, &p);
        }
        c.give_back(NOW, &p);
        assert_eq!((c.level, c.locked(NOW)), (0, None));
        assert_eq!(c.fail(NOW, &p), Some(15 * 60));
    }

    #[test]
    fn a_lock_stands_when_every_counted_reservation_fails() {
        let mut c = Counter::default();
        let p = Policy::SIGN_IN_PAIR;
        for _ in 0..5 {
            c.fail(NOW, &p);
        }
        assert_eq!(c.locked(NOW + 59), Some(1));
        // After the lock, counting starts over.
        assert!(c.fail(NOW + 60, &p).is_none());
        assert_eq!(c.failures(NOW + 60, &p), 1);
    }

    #[test]
    fn twenty_failures_from_one_address_across_accounts_lock_the_address() {
        let t = Throttle::default();
        for i in 0..20 {
            let s = sign_in_subjects(&format!("user{i}@example.com"), "ip:192.0.2.1");
            assert!(matches!(t.begin(&s, NOW), Begin::Allowed { .. }), "{i}");
        }
        let s = sign_in_subjects("new@example.com", "ip:192.0.2.1");
        match t.begin(&s, NOW + 60) {
            Begin::Locked { key, retry_after } => {
                assert!(key.starts_with("login:addr:"));
                assert_eq!(retry_after, 15 * 60 - 60);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hundred_failures_from_many_addresses_lock_the_account_for_everyone() {
        let t = Throttle::default();
        for i in 0..100 {
            let s = sign_in_subjects(
                "ann@example.com",
                &format!("ip:10.0.{}.{}", i / 250, i % 250),
            );
            assert!(matches!(t.begin(&s, NOW), Begin::Allowed { .. }), "{i}");
        }
        let s = sign_in_subjects("ann@example.com", "ip:203.0.113.9");
        match t.begin(&s, NOW) {
            Begin::Locked { key, .. } => assert!(key.starts_with("login:acct:")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.begin(&s, NOW + 15 * 60), Begin::Allowed { .. }));
    }

    #[test]
    fn a_full_store_of_locks_evicts_once_then_serves_at_full_speed() {
        let t = Throttle::default();
        // Every /64 of a flood locked: nothing dead to drop.
        for i in 0..MAX_KEYS {
            let s = [Subject {
                key: format!("login:addr:ip6:{i}"),
                policy: Policy::SIGN_IN_ADDRESS,
                reset_on_success: false,
            }];
            for _ in 0..20 {
                t.begin(&s, NOW);
            }
        }
        assert!(t.len() <= MAX_KEYS);
        let started = std::time::Instant::now();
        for i in 0..2_000 {
            t.begin(
                &client_subjects("c", &format!("ip:10.0.{}.{}", i / 250, i % 250)),
                NOW,
            );
        }
        assert!(t.len() <= MAX_KEYS);
        // One eviction pass, not one per call (53 ms each before).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_store_is_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_KEYS / 2 + 10) {
            let s = client_subjects("client_a", &format!("ip:{i}"));
            t.begin(&s, NOW + i as i64);
        }
        assert!(t.len() <= MAX_KEYS, "{}", t.len());
    }
}
