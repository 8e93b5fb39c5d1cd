//! What every handler shares.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::HttpRequest;
use chrono::Utc;

use crate::api::usage::UsageTracker;
use crate::api::usage_log::UsageLog;
use crate::auth::csrf::CsrfKey;
use crate::auth::verifier::VerifierPool;
use crate::config::Settings;
use crate::credentials::jwt::KeyRing;
use crate::credentials::Credentials;
use crate::db::models::ServerSecret;
use crate::db::{sealed, Database};
use crate::metrics::Metrics;
use crate::oauth::client_cache::ClientCache;
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
