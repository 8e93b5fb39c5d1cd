//! What every handler shares.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::auth::csrf::CsrfKey;
use crate::config::Settings;
use crate::db::models::ServerSecret;
use crate::db::{AnyConnection, Database};
use crate::oauth::jwt::KeyRing;
use crate::oauth::token::TokenConfig;

pub struct AppState {
    pub db: Database,
    pub csrf: CsrfKey,
    pub settings: Settings,
    pub keys: KeyStore,
}

/// The signing keys in memory, re-read from the database now and then so
/// that a rotation by another instance or the CLI takes effect.
pub struct KeyStore {
    current: RwLock<(Arc<KeyRing>, Instant)>,
    reload_every: Duration,
    max_token_lifetime: chrono::Duration,
}

impl KeyStore {
    pub fn new(
        ring: Arc<KeyRing>,
        reload_every: Duration,
        max_token_lifetime: chrono::Duration,
    ) -> Self {
        Self {
            current: RwLock::new((ring, Instant::now())),
            reload_every,
            max_token_lifetime,
        }
    }

    /// Loads (creating the first key on a fresh database). Blocking.
    pub fn load(
        conn: &mut AnyConnection,
        max_token_lifetime: chrono::Duration,
    ) -> anyhow::Result<KeyRing> {
        KeyRing::load(conn, Utc::now().naive_utc(), max_token_lifetime)
    }

    /// The keys, re-read first when they are older than the reload interval.
    /// Blocking (may query): call with a connection on the blocking pool.
    pub fn current(&self, conn: &mut AnyConnection) -> anyhow::Result<Arc<KeyRing>> {
        let (ring, loaded) = match self.current.read() {
            Ok(guard) => (guard.0.clone(), guard.1),
            Err(poisoned) => (poisoned.get_ref().0.clone(), Instant::now()),
        };
        if loaded.elapsed() < self.reload_every {
            return Ok(ring);
        }
        self.reload(conn)
    }

    /// Re-reads the keys now. Blocking.
    pub fn reload(&self, conn: &mut AnyConnection) -> anyhow::Result<Arc<KeyRing>> {
        let ring = Arc::new(Self::load(conn, self.max_token_lifetime)?);
        if let Ok(mut guard) = self.current.write() {
            *guard = (ring.clone(), Instant::now());
        }
        Ok(ring)
    }
}

impl AppState {
    pub fn token_config(&self) -> TokenConfig {
        TokenConfig {
            issuer: self.settings.issuer.clone(),
            audience: self.settings.audience.clone(),
            access_token_ttl: chrono::Duration::seconds(self.settings.access_token_ttl_secs),
            refresh_token_ttl: chrono::Duration::seconds(self.settings.refresh_token_ttl_secs),
        }
    }

    /// Cookies are `Secure` when the public issuer URL is https.
    pub fn secure_cookies(&self) -> bool {
        self.settings.issuer.starts_with("https://")
    }
}

/// Keys generated on first start and kept in the database, so that every
/// instance on the same database shares them.
#[derive(Clone)]
pub struct ServerKeys {
    /// HMAC key of CSRF tokens.
    pub csrf: [u8; 32],
    /// Access-token signing keys.
    pub signing: Arc<KeyRing>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys(<redacted>)")
    }
}

impl ServerKeys {
    pub async fn load(db: &Database, settings: &Settings) -> anyhow::Result<Self> {
        let now = Utc::now().naive_utc();
        let lifetime = chrono::Duration::seconds(settings.access_token_ttl_secs);
        db.run(move |conn| {
            let csrf = ServerSecret::get_or_create(conn, "csrf", now)?;
            let signing = Arc::new(KeyStore::load(conn, lifetime)?);
            Ok::<_, anyhow::Error>(Self { csrf, signing })
        })
        .await
    }
}
