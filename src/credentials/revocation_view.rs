//! The in-process view of what makes access tokens inactive, so that
//! introspection of an access token needs no database round trip.
//!
//! It is trusted only while it is *live*: the instance's listener is
//! connected to PostgreSQL, has issued `LISTEN dzdesk_revocations` and then
//! loaded the revoked-jti list. Triggers on `grants`, `clients`, `users` and
//! `revoked_access_tokens` notify that channel on every change that can
//! deactivate a token, whoever makes it, and PostgreSQL delivers the
//! notification when the change commits. Every notification evicts the
//! entries it concerns and bumps a generation counter; a status read from
//! the database is kept only if no notification arrived since the read began,
//! so a read that raced a revocation is never cached. When the listener is
//! down (or on SQLite, which has no LISTEN) the view is not live and every
//! introspection reads the database.
//!
//! Revoked access tokens are kept by `jti` with their expiry, pruned once
//! expired ([`RevocationView::prune`]) and capped at [`MAX_REVOKED_JTIS`]:
//! past the cap the view stops answering for access tokens (the database
//! decides) until the listener reloads the list.
//!
//! No I/O here: the listener (`credentials::listener`) feeds it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::models::{ApiKeyStatus, GrantStatus};

/// Cached grants (and, apart, API keys) at most; when full the cache
/// starts over.
pub const MAX_GRANTS: usize = 100_000;
/// Revoked, unexpired access tokens remembered at most. Past it the view
/// answers nothing for access tokens (each one reads the database) until a
/// reload finds the list small enough again.
pub const MAX_REVOKED_JTIS: usize = 100_000;
/// Access tokens expire this long after `exp` at the latest (the verifier's
/// leeway), after which their revocation need not be remembered.
const JTI_GRACE_SECS: i64 = 60;

#[derive(Default)]
struct ViewState {
    live: bool,
    generation: u64,
    /// Grant statuses read from the database (their `jti_revoked` unused).
    grants: HashMap<String, GrantStatus>,
    /// API key statuses read from the database, by key hash.
    keys: HashMap<String, Arc<ApiKeyStatus>>,
    /// Every access token revoked on its own and not yet expired, with its
    /// `exp` (epoch seconds).
    revoked_jtis: HashMap<String, i64>,
    /// More revoked jtis arrived than [`MAX_REVOKED_JTIS`]: the list is
    /// incomplete, so no access token is answered from here.
    jtis_overflowed: bool,
    /// While overflowed: the latest `exp` of a jti the list could not hold.
    /// Before it passes, a reload would overflow again.
    overflow_until: i64,
    /// Fence markers seen lately (see [`RevocationView::wait_marker`]).
    markers: VecDeque<String>,
}

/// Markers remembered at most.
const MAX_MARKERS: usize = 256;

#[derive(Default)]
pub struct RevocationView {
    state: RwLock<ViewState>,
    applied: Notify,
}

impl RevocationView {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_live(&self) -> bool {
        self.state.read().is_ok_and(|s| s.live)
    }

    /// The status of `grant_id` for the token `jti`, if the view is live and
    /// holds the grant.
    pub fn lookup(&self, grant_id: &str, jti: &str) -> Option<GrantStatus> {
        let state = self.state.read().ok()?;
        if !state.live || state.jtis_overflowed {
            return None;
        }
        let mut status = state.grants.get(grant_id)?.clone();
        status.jti_revoked = state.revoked_jtis.contains_key(jti);
        Some(status)
    }

    /// Call before reading a status from the database; pass the result to
    /// [`RevocationView::remember`]. None when the view is not live.
    pub fn generation(&self) -> Option<u64> {
        let state = self.state.read().ok()?;
        state.live.then_some(state.generation)
    }

    /// Keeps a status read from the database, unless a notification arrived
    /// (or the listener reconnected) since `read_generation`.
    /// `exp`: the token's expiry (epoch seconds).
    pub fn remember(
        &self,
        grant_id: &str,
        jti: &str,
        exp: i64,
        status: &GrantStatus,
        read_generation: u64,
    ) {
        if let Ok(mut state) = self.state.write() {
            if !state.live || state.generation != read_generation {
                return;
            }
            // The read saw the jti revoked before its notification arrived:
            // keep that, or the next lookup would answer active again.
            if status.jti_revoked {
                state.add_revoked_jti(jti, exp);
            }
            if state.grants.len() >= MAX_GRANTS {
                state.grants.clear();
            }
            state.grants.insert(grant_id.to_owned(), status.clone());
        }
    }

    /// The status of the API key whose SHA-256 is `key_hash`, if the view
    /// is live and holds it.
    pub fn lookup_key(&self, key_hash: &str) -> Option<Arc<ApiKeyStatus>> {
        let state = self.state.read().ok()?;
        if !state.live {
            return None;
        }
        state.keys.get(key_hash).cloned()
    }

    /// Keeps an API key status read from the database, unless a
    /// notification arrived since `read_generation` (as
    /// [`RevocationView::remember`]).
    pub fn remember_key(&self, key_hash: &str, status: Arc<ApiKeyStatus>, read_generation: u64) {
        if let Ok(mut state) = self.state.write() {
            if !state.live || state.generation != read_generation {
                return;
            }
            if state.keys.len() >= MAX_GRANTS {
                state.keys.clear();
            }
            state.keys.insert(key_hash.to_owned(), status);
        }
    }

    /// Applies one notification payload (see the PostgreSQL migration).
    pub fn apply(&self, payload: &str) {
        self.apply_locked(payload);
        self.applied.notify_waiters();
    }

    fn apply_locked(&self, payload: &str) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        if let Some(marker) = payload.strip_prefix("m:") {
            // A fence: changes nothing, only says "everything committed
            // before it has been applied" (PostgreSQL delivers notifications
            // in commit order).
            if state.markers.len() >= MAX_MARKERS {
                state.markers.pop_front();
            }
            state.markers.push_back(marker.to_owned());
            return;
        }
        state.generation += 1;
        match payload.split_once(':') {
            Some(("g", id)) => {
                state.grants.remove(id);
                // Keys minted by one of the grant's access tokens.
                state
                    .keys
                    .retain(|_, s| s.parent_grant.as_deref() != Some(id));
            }
            Some(("c", id)) => state.grants.retain(|_, s| s.client_id != id),
            Some(("u", id)) => {
                state.grants.retain(|_, s| s.user_id.as_deref() != Some(id));
                state.keys.retain(|_, s| s.user_id != id);
            }
            Some(("k", id)) => state.keys.retain(|_, s| s.key_id != id),
            Some(("j", rest)) => {
                // `j:<jti>:<exp>`; an older trigger sent no expiry: keep it
                // until the cap or a reload.
                let (jti, exp) = match rest.rsplit_once(':') {
                    Some((jti, exp)) => (jti, exp.parse().unwrap_or(i64::MAX)),
                    None => (rest, i64::MAX),
                };
                state.add_revoked_jti(jti, exp);
            }
            // A signing key changed: nothing cached here depends on it (the
            // key store reloads).
            Some(("s", _)) => {}
            // Unknown: forget everything rather than guess.
            _ => {
                state.grants.clear();
                state.keys.clear();
            }
        }
    }

    /// Waits until the fence `marker` has been applied (true), the view goes
    /// down, or `timeout` passes (false).
    pub async fn wait_marker(&self, marker: &str, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.applied.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.state.read() {
                    Ok(state) if state.markers.iter().any(|m| m == marker) => return true,
                    Ok(state) if !state.live => return false,
                    Ok(_) => {}
                    Err(_) => return false,
                }
                notified.await;
            }
        };
        actix_web::rt::time::timeout(timeout, wait)
            .await
            .unwrap_or(false)
    }

    /// The listener is listening and has loaded the revoked jtis (with
    /// their `exp`).
    pub fn went_live(&self, revoked_jtis: HashMap<String, i64>) {
        if let Ok(mut state) = self.state.write() {
            state.generation += 1;
            state.grants.clear();
            state.keys.clear();
            state.jtis_overflowed = revoked_jtis.len() > MAX_REVOKED_JTIS;
            state.overflow_until = if state.jtis_overflowed {
                revoked_jtis.values().copied().max().unwrap_or(i64::MAX)
            } else {
                0
            };
            state.revoked_jtis = if state.jtis_overflowed {
                HashMap::new()
            } else {
                revoked_jtis
            };
            state.live = true;
        }
    }

    /// Forgets revoked jtis whose tokens have expired anyway (`now`: epoch
    /// seconds). Returns whether the list had overflowed and every jti it
    /// could not hold has expired since, so that a reload would fit (the
    /// listener reconnects); never sooner, or a flood of revocations would
    /// make it reconnect every minute.
    pub fn prune(&self, now: i64) -> bool {
        let Ok(mut state) = self.state.write() else {
            return false;
        };
        state
            .revoked_jtis
            .retain(|_, exp| exp.saturating_add(JTI_GRACE_SECS) >= now);
        state.jtis_overflowed && state.overflow_until.saturating_add(JTI_GRACE_SECS) < now
    }

    /// How many revoked jtis are held (for tests and logs).
    pub fn revoked_jti_count(&self) -> usize {
        self.state.read().map_or(0, |s| s.revoked_jtis.len())
    }

    /// The listener lost its connection: nothing here can be trusted.
    pub fn went_down(&self) {
        if let Ok(mut state) = self.state.write() {
            state.generation += 1;
            state.live = false;
            state.grants.clear();
            state.keys.clear();
            state.revoked_jtis.clear();
            state.jtis_overflowed = false;
        }
        self.applied.notify_waiters();
    }
}

impl ViewState {
    fn add_revoked_jti(&mut self, jti: &str, exp: i64) {
        if self.jtis_overflowed {
            self.overflow_until = self.overflow_until.max(exp);
            return;
        }
        if self.revoked_jtis.len() >= MAX_REVOKED_JTIS && !self.revoked_jtis.contains_key(jti) {
            self.overflow_until = self.revoked_jtis.values().copied().fold(exp, i64::max);
            log::warn!(
                "revocation view: more than {MAX_REVOKED_JTIS} revoked access tokens; access tokens are checked against the database until the list shrinks"
            );
            self.jtis_overflowed = true;
            self.revoked_jtis.clear();
            return;
        }
        self.revoked_jtis.insert(jti.to_owned(), exp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(client: &str, user: Option<&str>) -> GrantStatus {
        GrantStatus {
            client_id: client.into(),
            user_id: user.map(str::to_owned),
            email: user.map(|u| format!("{u}@example.com")),
            role: user.map(|_| crate::domain::Role::Agent),
            grant_revoked: false,
            client_disabled: false,
            user_disabled: user.map(|_| false),
            jti_revoked: false,
            plan: crate::domain::Plan::Standard,
        }
    }

    fn live_view() -> RevocationView {
        let view = RevocationView::new();
        view.went_live(HashMap::from([("jti_old".to_owned(), i64::MAX)]));
        view
    }

    #[test]
    fn nothing_is_served_until_live() {
        let view = RevocationView::new();
        assert!(view.generation().is_none());
        view.remember("g1", "j", 0, &status("c1", None), 0);
        assert!(view.lookup("g1", "j").is_none());
    }

    #[test]
    fn remembered_statuses_are_served_with_the_jti_list() {
        let view = live_view();
        let g = view.generation().unwrap();
        view.remember("g1", "j", 0, &status("c1", Some("u1")), g);
        assert!(!view.lookup("g1", "j1").unwrap().jti_revoked);
        assert!(view.lookup("g1", "jti_old").unwrap().jti_revoked);
        view.apply("j:j1");
        assert!(view.lookup("g1", "j1").unwrap().jti_revoked);
    }

    #[test]
    fn a_read_that_raced_a_notification_is_not_kept() {
        let view = live_view();
        let g = view.generation().unwrap();
        view.apply("g:other");
        view.remember("g1", "j", 0, &status("c1", None), g);
        assert!(view.lookup("g1", "j").is_none());
    }

    #[test]
    fn notifications_evict_what_they_concern() {
        let view = live_view();
        for (id, client, user) in [
            ("g1", "c1", Some("u1")),
            ("g2", "c2", Some("u2")),
            ("g3", "c3", None),
        ] {
            let g = view.generation().unwrap();
            view.remember(id, "j", 0, &status(client, user), g);
        }
        view.apply("g:g1");
        assert!(view.lookup("g1", "j").is_none());
        view.apply("u:u2");
        assert!(view.lookup("g2", "j").is_none());
        assert!(view.lookup("g3", "j").is_some());
        view.apply("c:c3");
        assert!(view.lookup("g3", "j").is_none());
    }

    #[test]
    fn a_jti_seen_revoked_by_the_read_stays_revoked() {
        let view = live_view();
        let g = view.generation().unwrap();
        let mut s = status("c1", None);
        s.jti_revoked = true;
        view.remember("g1", "j9", i64::MAX, &s, g);
        assert!(view.lookup("g1", "j9").unwrap().jti_revoked);
        assert!(!view.lookup("g1", "j1").unwrap().jti_revoked);
    }

    fn key(id: &str, user: &str) -> Arc<ApiKeyStatus> {
        Arc::new(ApiKeyStatus {
            key_id: id.into(),
            user_id: user.into(),
            scopes: crate::domain::ScopeSet::parse("requests:read").unwrap(),
            created_at: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            expires_at: None,
            revoked: false,
            email: format!("{user}@example.com"),
            role: crate::domain::Role::Agent,
            user_disabled: false,
            ip_allowlist: Default::default(),
            plan: crate::domain::Plan::Standard,
            parent_grant: None,
            parent_grant_revoked: false,
            replaced: false,
        })
    }

    #[test]
    fn api_keys_are_evicted_by_their_key_or_user() {
        let view = live_view();
        for (hash, id, user) in [("h1", "k1", "u1"), ("h2", "k2", "u2"), ("h3", "k3", "u3")] {
            let g = view.generation().unwrap();
            view.remember_key(hash, key(id, user), g);
        }
        assert_eq!(view.lookup_key("h1").unwrap().key_id, "k1");
        view.apply("k:k1");
        assert!(view.lookup_key("h1").is_none());
        view.apply("u:u2");
        assert!(view.lookup_key("h2").is_none());
        view.apply("g:anything");
        assert!(view.lookup_key("h3").is_some());
        view.apply("x:api_keys");
        assert!(view.lookup_key("h3").is_none());

        let g = view.generation().unwrap();
        view.apply("k:other");
        view.remember_key("h4", key("k4", "u4"), g);
        assert!(view.lookup_key("h4").is_none(), "a raced read is not kept");
    }

    #[test]
    fn markers_change_nothing() {
        let view = live_view();
        let g = view.generation().unwrap();
        view.apply("m:abc");
        assert_eq!(view.generation(), Some(g));
    }

    #[test]
    fn going_down_forgets_everything() {
        let view = live_view();
        let g = view.generation().unwrap();
        view.remember("g1", "j", 0, &status("c1", None), g);
        view.went_down();
        assert!(!view.is_live());
        assert!(view.lookup("g1", "j").is_none());
    }

    #[test]
    fn revoked_jtis_are_pruned_after_they_expire() {
        let view = live_view();
        view.apply("j:j1:1000");
        view.apply("j:j2:5000");
        assert_eq!(view.revoked_jti_count(), 3);
        assert!(!view.prune(1000 + JTI_GRACE_SECS));
        assert_eq!(view.revoked_jti_count(), 3, "kept through the grace");
        view.prune(2000);
        assert_eq!(view.revoked_jti_count(), 2, "j1 expired");
        let g = view.generation().unwrap();
        view.remember("g1", "j2", 5000, &status("c1", None), g);
        assert!(view.lookup("g1", "j2").unwrap().jti_revoked);
    }

    #[test]
    fn past_the_cap_access_tokens_go_to_the_database() {
        let view = RevocationView::new();
        view.went_live(HashMap::new());
        let g = view.generation().unwrap();
        view.remember("g1", "j", 0, &status("c1", None), g);
        for i in 0..=MAX_REVOKED_JTIS {
            view.apply(&format!("j:jti{i}:{}", 10_000 + i));
        }
        assert!(view.revoked_jti_count() <= MAX_REVOKED_JTIS);
        let g = view.generation().unwrap();
        view.remember("g1", "j", 0, &status("c1", None), g);
        assert!(
            view.lookup("g1", "j").is_none(),
            "an incomplete list cannot say a token is not revoked"
        );
        let last_exp = 10_000 + MAX_REVOKED_JTIS as i64;
        assert!(
            !view.prune(last_exp),
            "a reload before the dropped jtis expire would overflow again"
        );
        assert!(
            view.prune(last_exp + JTI_GRACE_SECS + 1),
            "worth a reload now"
        );
        // A reload (the listener going live again) trusts the view again.
        view.went_live(HashMap::new());
        let g = view.generation().unwrap();
        view.remember("g1", "j", 0, &status("c1", None), g);
        assert!(view.lookup("g1", "j").is_some());
    }
}
