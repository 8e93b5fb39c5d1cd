//! What every handler shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use chrono::Utc;

use crate::api::usage::UsageTracker;
use crate::api::usage_log::UsageLog;
use crate::auth::csrf::CsrfKey;
use crate::auth::verifier::VerifierPool;
use crate::config::Settings;
use crate::credentials::jwt::KeyRing;
use crate::credentials::Credentials;
use crate::db::models::{Client, ServerSecret};
use crate::db::{sealed, Database};
use crate::metrics::Metrics;
use crate::oauth::token::TokenConfig;
use crate::ratelimit::Limiter;

pub struct AppState {
    pub db: Database,
    pub csrf: CsrfKey,
    pub settings: Settings,
    /// Who is calling: signing keys, the revocation view, the checks.
    pub credentials: Credentials,
    pub clients: ClientCache,
    /// The `/v1` rate limits and the brute-force throttle (Redis when
    /// configured, else in process).
    pub limiter: Arc<Limiter>,
    /// The argon2 workers that check sign-in passwords.
    pub passwords: Arc<VerifierPool>,
    /// API-key uses not yet written to `last_used_at`.
    pub usage: Arc<UsageTracker>,
    /// `/v1` requests made with API keys, not yet written (the usage log).
    pub usage_log: Arc<UsageLog>,
    /// Set when a shutdown signal arrived: `/readyz` answers 503 while the
    /// service drains.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The service's metrics while `DZDESK_METRICS_LISTEN` is set; `None`
    /// counts nothing.
    pub metrics: Option<Arc<Metrics>>,
}

/// Registered clients kept in memory for `DZDESK_CLIENT_CACHE_SECS`, so the
/// client_credentials grant needs no database round trip. Only rows that
/// exist are kept (unknown ids cannot fill it), and at most
/// [`ClientCache::MAX_ENTRIES`].
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Client>, Instant)>>,
}

impl ClientCache {
    pub const MAX_ENTRIES: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The client, if read from the database less than the TTL ago.
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        let entries = self.entries.read().ok()?;
        let (client, at) = entries.get(id)?;
        (at.elapsed() < self.ttl).then(|| client.clone())
    }

    /// Drops a client changed or deleted by this instance (other instances
    /// catch up within the TTL).
    pub fn forget(&self, id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
    }

    /// Drops every client (the revocation listener reconnected: changes
    /// may have been missed meanwhile).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    /// Keeps a client read from the database by a query that started at
    /// `read_at` (so a read racing a change is not kept a full TTL longer); a
    /// newer entry is not replaced.
    pub fn put(&self, client: Client, read_at: Instant) -> Arc<Client> {
        let client = Arc::new(client);
        if self.ttl.is_zero() {
            return client;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
                if entries.len() >= Self::MAX_ENTRIES {
                    entries.clear();
                }
            }
            let newer = entries.get(&client.id).is_some_and(|(_, at)| *at > read_at);
            if !newer {
                entries.insert(client.id.clone(), (client.clone(), read_at));
            }
        }
        client
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

    /// The address the request came from: the socket peer, or what a
    /// trusted proxy says in `X-Forwarded-For` (`DZDESK_TRUSTED_PROXIES`).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        // Read lossily, never skipped: a header dropped for one bad byte
        // would make a trusted proxy look like the client. The replaced
        // characters fail to parse and end the walk like any bad hop.
        let forwarded: Vec<std::borrow::Cow<'_, str>> = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        self.settings
            .trusted_proxies
            .client_ip(req.peer_addr(), forwarded.iter().map(|v| v.as_ref()))
    }

    /// Where events are counted, when metrics are on.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// Cookies are `Secure` in production mode (an https issuer).
    pub fn secure_cookies(&self) -> bool {
        self.settings.production()
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
    /// Start-up: checks that every stored secret opens with
    /// `DZDESK_SECRETS_KEY` (a wrong or missing key stops here, before
    /// anything is served) and seals the plain ones (`db::sealed::prepare`),
    /// then reads the keys, creating them on a fresh database. Production
    /// mode without the key is refused; development without it is warned of
    /// once.
    pub async fn load(db: &Database, settings: &Settings) -> anyhow::Result<Self> {
        let sealer = settings.sealer()?.clone();
        let on = sealer.is_on();
        let now = Utc::now().naive_utc();
        let lifetime = chrono::Duration::seconds(settings.access_token_ttl_secs);
        // Start-up may take longer than a request should wait.
        let (keys, sealed) = db
            .run_unbounded(move |conn| {
                let sealed = sealed::prepare(conn, &sealer)?;
                let csrf = ServerSecret::get_or_create(conn, &sealer, "csrf", now)?;
                let signing = Arc::new(KeyRing::load(conn, &sealer, now, lifetime)?);
                Ok::<_, anyhow::Error>((Self { csrf, signing }, sealed))
            })
            .await?;
        if sealed > 0 {
            log::warn!(
                "encrypted {sealed} stored secrets that were not encrypted, with \
                 DZDESK_SECRETS_KEY: expected once after the key is first set; otherwise \
                 someone wrote plain rows into the database"
            );
        }
        if !on {
            log::warn!(
                "DZDESK_SECRETS_KEY is not set: signing keys and server secrets are stored \
                 unencrypted (development only; production requires it)"
            );
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> Client {
        let now = Utc::now().naive_utc();
        Client {
            id: id.to_owned(),
            name: "c".into(),
            confidential: true,
            secret_hash: None,
            redirect_uris: String::new(),
            scopes: String::new(),
            grant_types: String::new(),
            require_pkce: false,
            disabled: false,
            created_at: now,
            updated_at: now,
            can_introspect: false,
            registration_token_hash: None,
            registered_by: None,
            plan: "standard".into(),
            rate_limit: None,
            token_endpoint_auth_method: "client_secret_basic".into(),
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            cors_origins: String::new(),
            post_logout_redirect_uris: String::new(),
            require_par: false,
        }
    }

    #[test]
    fn client_cache_keeps_clients_for_its_ttl_only() {
        let cache = ClientCache::new(Duration::from_secs(60));
        assert!(cache.get("client_a").is_none());
        cache.put(client("client_a"), Instant::now());
        assert_eq!(cache.get("client_a").unwrap().id, "client_a");

        let off = ClientCache::new(Duration::ZERO);
        off.put(client("client_a"), Instant::now());
        assert!(off.get("client_a").is_none());
    }

    #[test]
    fn client_cache_is_bounded() {
        let cache = ClientCache::new(Duration::from_secs(60));
        for i in 0..=ClientCache::MAX_ENTRIES {
            cache.put(client(&format!("client_{i}")), Instant::now());
        }
        let len = cache.entries.read().unwrap().len();
        assert!(len <= ClientCache::MAX_ENTRIES, "{len}");
    }
}
