//! The signing keys in memory. They are re-read from the database when
//! another instance or the CLI changes them: at once on a notification
//! (PostgreSQL: the `s:` payload of the listener), within
//! [`KEY_POLL`] by a cheap fingerprint check where no notification can come
//! (SQLite, or PostgreSQL while the listener is down), and in any case every
//! `DZDESK_KEY_RELOAD_SECS`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::credentials::jwt::KeyRing;
use crate::credentials::names_unknown_key;
use crate::credentials::Credentials;
use crate::db::models::SigningKeyRow;
use crate::db::AnyConnection;
use crate::secrets::Sealer;

/// How often the signing keys' fingerprint is compared where no
/// notification tells of a change.
pub const KEY_POLL: Duration = Duration::from_millis(250);

pub struct KeyStore {
    /// The ring, when it was read, and the epoch its read began in.
    current: RwLock<(Arc<KeyRing>, Instant, u64)>,
    /// Bumped by [`KeyStore::invalidate`]: a ring read in an older epoch is
    /// stale, and a slow read that began before a newer one can never
    /// replace it (it would bring revoked keys back).
    epoch: AtomicU64,
    /// A caller is re-reading a ring that is only old (not invalidated):
    /// the others go on with it meanwhile.
    reloading: AtomicBool,
    reload_every: Duration,
    max_token_lifetime: chrono::Duration,
    /// Opens the private keys on every reload.
    sealer: Sealer,
}

impl KeyStore {
    pub fn new(
        ring: Arc<KeyRing>,
        sealer: Sealer,
        reload_every: Duration,
        max_token_lifetime: chrono::Duration,
    ) -> Self {
        Self {
            current: RwLock::new((ring, Instant::now(), 0)),
            epoch: AtomicU64::new(0),
            reloading: AtomicBool::new(false),
            sealer,
            reload_every,
            max_token_lifetime,
        }
    }

    /// The keys in memory, if not invalidated and younger than the reload
    /// interval; or older, up to twice the interval, while another caller
    /// re-reads them (stale while revalidating: when the interval ran out,
    /// every request at that moment went to the database at once to read
    /// the same keys). No I/O.
    pub fn cached(&self) -> Option<Arc<KeyRing>> {
        let (ring, loaded, epoch) = self.snapshot();
        if epoch != self.epoch.load(Ordering::Acquire) {
            return None;
        }
        let age = loaded.elapsed();
        let usable = age < self.reload_every
            || (age < self.reload_every * 2 && self.reloading.load(Ordering::Acquire));
        usable.then_some(ring)
    }

    /// The keys, re-read first when invalidated or older than the reload
    /// interval: an invalidated ring is never used, and of the callers that
    /// find it only old, one re-reads it while the others use it (up to
    /// twice the interval, and also when that re-read fails). Blocking
    /// (may query): call with a connection on the blocking pool.
    pub fn current(&self, conn: &mut AnyConnection) -> anyhow::Result<Arc<KeyRing>> {
        if let Some(ring) = self.cached() {
            return Ok(ring);
        }
        let (ring, loaded, epoch) = self.snapshot();
        let only_old =
            epoch == self.epoch.load(Ordering::Acquire) && loaded.elapsed() < self.reload_every * 2;
        if !only_old {
            return self.reload(conn);
        }
        if self.reloading.swap(true, Ordering::AcqRel) {
            return Ok(ring);
        }
        // Lowered however the read ends (an error, a panic).
        struct Reloading<'a>(&'a AtomicBool);
        impl Drop for Reloading<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _reloading = Reloading(&self.reloading);
        match self.reload(conn) {
            Ok(newer) => Ok(newer),
            // Never a ring invalidated during the failed read.
            Err(e) if epoch != self.epoch.load(Ordering::Acquire) => Err(e),
            Err(e) => {
                log::warn!("signing keys could not be re-read, the ones in memory go on: {e:#}");
                Ok(ring)
            }
        }
    }

    /// The keys changed in the database (a rotation, a revoked key): stop
    /// using the ones in memory. Signing and verification re-read them.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The keys in memory, however old (no I/O): what signs now, as far as
    /// this instance knows.
    pub fn in_memory(&self) -> Arc<KeyRing> {
        self.snapshot().0
    }

    fn snapshot(&self) -> (Arc<KeyRing>, Instant, u64) {
        let guard = match self.current.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        (guard.0.clone(), guard.1, guard.2)
    }

    /// The keys to check `token` with: [`KeyStore::current`], re-read (at
    /// most once a second) when the token names a key they lack, perhaps one
    /// another instance or the CLI took up first. Throttled, so tokens with
    /// made-up `kid`s cannot turn into a query each. Blocking.
    pub fn for_token(&self, conn: &mut AnyConnection, token: &str) -> anyhow::Result<Arc<KeyRing>> {
        let keys = self.current(conn)?;
        if names_unknown_key(token, &keys) {
            let (ring, loaded, epoch) = self.snapshot();
            let fresh = epoch == self.epoch.load(Ordering::Acquire);
            if fresh && loaded.elapsed() < Duration::from_secs(1) {
                return Ok(ring);
            }
            return self.reload(conn);
        }
        Ok(keys)
    }

    /// Re-reads the keys now. Blocking.
    pub fn reload(&self, conn: &mut AnyConnection) -> anyhow::Result<Arc<KeyRing>> {
        // Noted before the read: an invalidation that lands during it leaves
        // the result stale, and a read that began earlier than the one
        // installed is never installed over it.
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut ring = KeyRing::load(
            conn,
            &self.sealer,
            Utc::now().naive_utc(),
            self.max_token_lifetime,
        )?;
        ring.keep_verified_of(&self.snapshot().0);
        let ring = Arc::new(ring);
        self.install(ring.clone(), epoch);
        Ok(ring)
    }

    /// Installs a ring whose read began in `epoch`, unless the one in
    /// memory was read later.
    fn install(&self, ring: Arc<KeyRing>, epoch: u64) {
        if let Ok(mut guard) = self.current.write() {
            if epoch >= guard.2 {
                *guard = (ring, Instant::now(), epoch);
            }
        }
    }
}

/// Where no notification tells of a key change (SQLite; PostgreSQL while
/// the revocation view is not live), compares the signing keys' fingerprint
/// every [`KEY_POLL`] and invalidates the keys in memory when it moves (and
/// once when it starts watching, for a change it could not have seen).
/// Runs until dropped.
pub async fn watch_forever(credentials: Credentials) {
    let mut last: Option<String> = None;
    loop {
        actix_web::rt::time::sleep(KEY_POLL).await;
        if credentials.view.is_live() {
            // The listener's `s:` notifications cover it; start afresh when
            // it goes down.
            last = None;
            continue;
        }
        let fingerprint = credentials
            .db
            .run(|conn| SigningKeyRow::fingerprint(conn).map_err(anyhow::Error::from))
            .await;
        match fingerprint {
            Ok(now) => {
                if last.as_ref() != Some(&now) {
                    if last.is_some() {
                        log::info!("signing keys changed: reloading them");
                    }
                    credentials.keys.invalidate();
                }
                last = Some(now);
            }
            // The database is down: nothing can be re-read anyway.
            Err(e) => log::debug!("signing key check: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::jwt::generate_key;

    fn ring() -> Arc<KeyRing> {
        let row = generate_key(Utc::now().naive_utc()).unwrap();
        Arc::new(KeyRing::from_rows(&[row]).unwrap())
    }

    #[test]
    fn an_invalidated_ring_is_not_served_and_a_slow_older_read_never_wins() {
        let store = KeyStore::new(
            ring(),
            Sealer::default(),
            Duration::from_secs(60),
            chrono::Duration::hours(1),
        );
        assert!(store.cached().is_some());
        // A read begins (epoch 0) ...
        let slow_epoch = store.epoch.load(Ordering::Acquire);
        // ... a rotation invalidates, and a newer read installs its ring.
        store.invalidate();
        assert!(store.cached().is_none());
        let newer = ring();
        store.install(newer.clone(), store.epoch.load(Ordering::Acquire));
        assert!(Arc::ptr_eq(&store.cached().unwrap(), &newer));
        // The slow read finishes last: it must not replace the newer ring.
        store.install(ring(), slow_epoch);
        assert!(Arc::ptr_eq(&store.cached().unwrap(), &newer));
        // A read that began before an invalidation is installed but stale.
        let before = store.epoch.load(Ordering::Acquire);
        store.invalidate();
        store.install(ring(), before);
        assert!(store.cached().is_none());
    }

    #[test]
    fn an_old_ring_is_served_while_one_caller_rereads_it_never_an_invalidated_one() {
        let store = KeyStore::new(
            ring(),
            Sealer::default(),
            Duration::from_millis(300),
            chrono::Duration::hours(1),
        );
        assert!(store.cached().is_some());
        std::thread::sleep(Duration::from_millis(350));
        // Old, and nobody re-reads it: this caller must.
        assert!(store.cached().is_none());
        // Another caller re-reads it: served meanwhile ...
        store.reloading.store(true, Ordering::Release);
        assert!(store.cached().is_some());
        // ... but not once invalidated (a key changed) ...
        store.invalidate();
        assert!(store.cached().is_none());
        // ... nor past twice the interval.
        let store = KeyStore::new(
            ring(),
            Sealer::default(),
            Duration::from_millis(300),
            chrono::Duration::hours(1),
        );
        store.reloading.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(650));
        assert!(store.cached().is_none());
    }
}
