//! Building and running the HTTP service. Tests and the CLI share
//! [`Application`]: it binds its listener first (port 0 works) and exposes the
//! port it got.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web::{self, ServiceConfig};
use actix_web::{App, HttpServer};

use crate::api::usage::UsageTracker;
use crate::auth::csrf::CsrfKey;
use crate::auth::password;
use crate::auth::verifier::VerifierPool;
use crate::config::Settings;
use crate::credentials::keystore::{self, KeyStore};
use crate::credentials::revocation_view::RevocationView;
use crate::credentials::{listener, Audience, Credentials};
use crate::db::Database;
use crate::http::security_headers;
use crate::maintenance;
use crate::ratelimit::redis::RedisStore;
use crate::ratelimit::Limiter;
use crate::routes::surface::{self, oauth_json_endpoint, RequestDeadline};
use crate::routes::{health, oauth, register, static_files, v1, web as pages, well_known};
use crate::state::{AppState, ClientCache, ServerKeys};
use crate::telemetry::access_log;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Sign-ins that may wait for the argon2 workers; past it, 503 at once.
pub const PASSWORD_QUEUE: usize = 32;

pub struct Application {
    local_addr: SocketAddr,
    server: Server,
    db: Database,
    /// PostgreSQL only: where the revocation listener connects.
    listen_url: Option<String>,
    revocations: Arc<RevocationView>,
    state: web::Data<AppState>,
}

impl Application {
    /// Loads the server keys from the database (creating them on first
    /// start) and builds the service.
    pub async fn build(settings: Settings, db: Database) -> Result<Self, BuildError> {
        let keys = ServerKeys::load(&db, &settings).await?;
        Self::build_with(settings, db, keys, |_| {}).await
    }

    /// Builds the service from its parts. `extra_v1` mounts further routes
    /// inside the `/v1` scope (the integration tests use it to exercise the
    /// scope's envelope and extractor settings with handlers of their own).
    /// Touches no database: a service whose database is down still starts
    /// and answers `/readyz` with 503.
    pub async fn build_with<F>(
        settings: Settings,
        db: Database,
        keys: ServerKeys,
        extra_v1: F,
    ) -> Result<Self, BuildError>
    where
        F: Fn(&mut ServiceConfig) + Send + Clone + 'static,
    {
        actix_web::rt::task::spawn_blocking(password::warm_up)
            .await
            .map_err(anyhow::Error::from)?;

        let listener = TcpListener::bind(settings.listen).map_err(|source| BuildError::Listen {
            addr: settings.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(anyhow::Error::from)?;
        let workers = settings.workers;
        let request_timeout = settings.request_timeout;
        let max_connections = settings.max_connections;
        let hsts = settings.production();
        let key_store = KeyStore::new(
            keys.signing,
            settings.secrets.clone(),
            Duration::from_secs(settings.key_reload_secs.max(0) as u64),
            chrono::Duration::seconds(settings.access_token_ttl_secs),
        );
        let client_cache_secs = settings.client_cache_secs.max(0) as u64;
        let revocations = Arc::new(RevocationView::new());
        let listen_url = settings.database_url.postgres_url().map(str::to_owned);
        let usage = Arc::new(UsageTracker::new());
        let credentials = Credentials::new(
            db.clone(),
            key_store,
            revocations.clone(),
            Audience {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
            },
        );
        let redis = settings
            .redis_url
            .as_ref()
            .map(|url| {
                RedisStore::new(url.expose(), &settings.redis_prefix, settings.redis_timeout)
            })
            .transpose()
            .map_err(|m| anyhow::anyhow!("DZDESK_REDIS_URL: {m}"))?;
        let limiter = Arc::new(Limiter::new(redis));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let passwords =
            Arc::new(VerifierPool::new(cores, PASSWORD_QUEUE).map_err(anyhow::Error::from)?);
        let state = web::Data::new(AppState {
            passwords,
            limiter,
            db: db.clone(),
            csrf: CsrfKey::new(keys.csrf),
            settings,
            credentials,
            clients: ClientCache::new(Duration::from_secs(client_cache_secs)),
            usage,
        });
        let state_for_listener = state.clone();

        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(pages::configure_extractors)
                .app_data(RequestDeadline(request_timeout))
                .wrap(from_fn(surface::deadline))
                .wrap(security_headers(hsts))
                .wrap(from_fn(access_log))
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/static/style.css", web::get().to(static_files::style_css))
                .route("/", web::get().to(pages::home::home))
                .route("/settings/apps", web::get().to(pages::apps::apps_get))
                .route(
                    "/settings/apps/revoke",
                    web::post().to(pages::apps::apps_revoke),
                )
                .route(
                    "/settings/api",
                    web::get().to(pages::api_settings::settings_get),
                )
                .route(
                    "/settings/api/keys",
                    web::post().to(pages::api_settings::create_key),
                )
                .route(
                    "/settings/api/keys/revoke",
                    web::post().to(pages::api_settings::revoke_key),
                )
                .route(
                    "/settings/api/allowlist",
                    web::post().to(pages::api_settings::save_allowlist),
                )
                .route("/login", web::get().to(pages::login::login_get))
                .route("/login", web::post().to(pages::login::login_post))
                .route("/logout", web::post().to(pages::login::logout_post))
                // Changing a path here means changing the server metadata too.
                .route("/oauth/authorize", web::get().to(oauth::authorize))
                .route("/oauth/authorize", web::post().to(oauth::authorize))
                // The JSON endpoints: each error, whatever its cause, in the
                // RFC 6749 5.2 body, and a body over the limit is 413.
                .service(
                    oauth_json_endpoint("/oauth/token", oauth::TOKEN_BODY_LIMIT)
                        .route(web::post().to(oauth::token_post)),
                )
                .service(
                    oauth_json_endpoint("/oauth/introspect", oauth::TOKEN_BODY_LIMIT)
                        .route(web::post().to(oauth::introspect_post)),
                )
                .service(
                    oauth_json_endpoint("/oauth/revoke", oauth::TOKEN_BODY_LIMIT)
                        .route(web::post().to(oauth::revoke_post)),
                )
                .service(
                    oauth_json_endpoint("/oauth/register", register::BODY_LIMIT)
                        .route(web::post().to(register::register)),
                )
                .service(
                    oauth_json_endpoint("/oauth/register/{client_id}", register::BODY_LIMIT)
                        .route(web::get().to(register::read))
                        .route(web::put().to(register::update))
                        .route(web::delete().to(register::delete)),
                )
                .route("/.well-known/jwks.json", web::get().to(well_known::jwks))
                .route(
                    "/.well-known/oauth-authorization-server",
                    web::get().to(well_known::metadata),
                )
                .route("/docs", web::get().to(pages::home::docs))
                .service(
                    v1::scope()
                        .wrap(from_fn(v1::limits::rate_limit))
                        .configure(v1::routes)
                        .configure(extra_v1.clone())
                        .default_service(web::to(v1::not_found)),
                )
                .default_service(web::to(pages::not_found))
        })
        .listen(listener)
        .map_err(anyhow::Error::from)?;
        // actix counts connections per worker (and starts one worker per
        // core unless told otherwise).
        let worker_count = workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let server = match workers {
            Some(n) => server.workers(n),
            None => server,
        }
        .max_connections(max_connections.div_ceil(worker_count).max(1))
        .shutdown_timeout(5)
        .run();

        Ok(Self {
            local_addr,
            server,
            db,
            listen_url,
            revocations,
            state: state_for_listener,
        })
    }

    /// The port the listener got (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The instance's revocation view (tests fence on it).
    pub fn revocations(&self) -> Arc<RevocationView> {
        self.revocations.clone()
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped. Meanwhile, in the same task: the hourly sweep
    /// of expired rows, API-key usage writes, the signing-key watch, and
    /// (PostgreSQL) the revocation listener.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let usage = self.state.usage.clone();
        let db_for_flush = self.db.clone();
        let sweeper = futures_util::future::join3(
            maintenance::sweep_forever(self.db.clone()),
            maintenance::flush_usage_forever(self.db.clone(), usage.clone()),
            keystore::watch_forever(self.state.credentials.clone()),
        );
        let listener = async {
            match self.listen_url {
                Some(url) => {
                    let state = self.state;
                    let heard = move |payload: &str| match payload.split_once(':') {
                        Some(("c", id)) => state.clients.forget(id),
                        // A rotation or a revoked key: sign and verify with
                        // the keys as they are now.
                        Some(("s", _)) => state.credentials.keys.invalidate(),
                        // Reconnected or truncated: anything may have changed.
                        Some(("x", _)) => {
                            state.clients.clear();
                            state.credentials.keys.invalidate();
                        }
                        _ => {}
                    };
                    listener::listen_forever(url, self.db, self.revocations, heard).await
                }
                None => futures_util::future::pending().await,
            }
        };
        // Neither background future ever finishes: this ends with the server.
        let background = Box::pin(futures_util::future::join(sweeper, listener));
        let result = match futures_util::future::select(self.server, background).await {
            futures_util::future::Either::Left((result, _)) => result,
            futures_util::future::Either::Right((_, server)) => server.await,
        };
        // Uses seen since the last flush are written before stopping.
        let now = chrono::Utc::now().naive_utc() + crate::api::usage::WRITE_EVERY;
        let flushed = db_for_flush
            .run(move |conn| {
                maintenance::flush_usage(conn, &usage, now).map_err(anyhow::Error::from)
            })
            .await;
        if let Err(e) = flushed {
            log::warn!("writing API key usage at shutdown failed: {e:#}");
        }
        result
    }
}
