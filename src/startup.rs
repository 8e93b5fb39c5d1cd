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
use crate::api::usage_log::UsageLog;
use crate::auth::csrf::CsrfKey;
use crate::auth::password;
use crate::auth::verifier::VerifierPool;
use crate::config::Settings;
use crate::credentials::keystore::{self, KeyStore};
use crate::credentials::revocation_view::RevocationView;
use crate::credentials::{listener, Audience, Credentials};
use crate::db::Database;
use crate::maintenance;
use crate::metrics::Metrics;
use crate::oauth::client_cache::ClientCache;
use crate::ratelimit::redis::RedisStore;
use crate::ratelimit::Limiter;
use crate::routes::openapi::{self, Endpoint};
use crate::routes::surface::{self, oauth_json_endpoint, Hsts, HttpsOnly, RequestDeadline};
use crate::routes::{
    self, cors, health, oauth, oidc, register, static_files, v1, web as pages, well_known,
};
use crate::state::{AppState, ServerKeys};
use crate::telemetry::{access_log, Observability};
use crate::tls::CertReloader;
use tokio::signal::unix::{signal, Signal, SignalKind};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The setting that named the address.
        var: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS files cannot be used (the variable and the file named).
    #[error(transparent)]
    Tls(crate::config::ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Sign-ins that may wait for the argon2 workers; past it, 503 at once.
pub const PASSWORD_QUEUE: usize = 32;

pub struct Application {
    local_addr: SocketAddr,
    /// The plain-HTTP listener beside a TLS one (`DZDESK_HTTP_LISTEN`).
    http_addr: Option<SocketAddr>,
    /// The metrics listener (`DZDESK_METRICS_LISTEN`) and its server,
    /// stopped with the service.
    metrics: Option<(SocketAddr, Server)>,
    /// The TLS certificate, reloaded on SIGHUP.
    tls: Option<Arc<CertReloader>>,
    /// SIGHUP, watched from the start: it reloads the certificate, and
    /// without TLS it is logged and ignored (its default action would end
    /// the process).
    hangups: Option<Signal>,
    /// SIGTERM and SIGINT, once [`Application::stop_on_signals`] watches them.
    signals: Option<(Signal, Signal)>,
    /// `DZDESK_SHUTDOWN_SECS`.
    drain: Duration,
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
            var: "DZDESK_LISTEN",
            addr: settings.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(anyhow::Error::from)?;
        // Port 0: the derived issuer names the port bound (and the audience,
        // when it is the issuer).
        let mut settings = settings;
        if settings.issuer_from_listen && settings.listen.port() == 0 {
            let issuer = crate::config::issuer_from_listen(local_addr)
                .map_err(|m| anyhow::anyhow!("the issuer of {local_addr}: {m}"))?;
            if settings.audience == settings.issuer {
                settings.audience = issuer.clone();
            }
            settings.issuer = issuer;
        }
        let tls = settings
            .tls
            .clone()
            .map(CertReloader::new)
            .transpose()
            .map_err(BuildError::Tls)?;
        let hangups = signal(SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("cannot watch SIGHUP: {e}"))?;
        let http_listener = settings
            .http_listen
            .map(|addr| {
                TcpListener::bind(addr).map_err(|source| BuildError::Listen {
                    var: "DZDESK_HTTP_LISTEN",
                    addr,
                    source,
                })
            })
            .transpose()?;
        let http_addr = http_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(anyhow::Error::from)?;
        let https_only = HttpsOnly {
            required: settings.production(),
            trusted_proxies: settings.trusted_proxies.clone(),
            issuer: settings.issuer.clone(),
        };
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
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let revocations = Arc::new(RevocationView::new());
        let listen_url = settings.database_url.postgres_url().map(str::to_owned);
        let usage = Arc::new(UsageTracker::new());
        let usage_log = Arc::new(UsageLog::new(settings.usage_log));
        let metrics_listener = settings
            .metrics_listen
            .map(|addr| {
                TcpListener::bind(addr).map_err(|source| BuildError::Listen {
                    var: "DZDESK_METRICS_LISTEN",
                    addr,
                    source,
                })
            })
            .transpose()?;
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
        let metrics = match &metrics_listener {
            Some(_) => Some(Arc::new(
                Metrics::new(db.clone(), credentials.clone(), listen_url.is_some(), {
                    let log = usage_log.clone();
                    Arc::new(move || (log.dropped(), log.len()))
                })
                .map_err(|e| anyhow::anyhow!("metrics registry: {e}"))?,
            )),
            None => None,
        };
        let observability = Observability {
            trusted_proxies: settings.trusted_proxies.clone(),
            metrics: metrics.clone(),
        };
        let state = web::Data::new(AppState {
            passwords,
            limiter,
            db: db.clone(),
            csrf: CsrfKey::new(keys.csrf),
            settings,
            credentials,
            clients: ClientCache::new(Duration::from_secs(client_cache_secs)),
            usage,
            usage_log,
            stopping: stopping.clone(),
            metrics: metrics.clone(),
        });
        let state_for_listener = state.clone();
        let drain = state.settings.shutdown_drain;

        let server = HttpServer::new(move || {
            let resource = |path: &str| web::resource(path);
            let (app, api) = App::new()
                .app_data(state.clone())
                .configure(pages::configure_extractors)
                .app_data(RequestDeadline(request_timeout))
                .app_data(Hsts(hsts))
                .app_data(https_only.clone())
                .app_data(observability.clone())
                // Inside https_only: a preflight over plain HTTP in
                // production is refused like any other request.
                .wrap(from_fn(cors::cors))
                .wrap(from_fn(surface::https_only))
                .wrap(from_fn(surface::deadline))
                .wrap(from_fn(access_log))
                .wrap(from_fn(surface::harden))
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
                    "/settings/api/keys/rotate",
                    web::post().to(pages::api_settings::rotate_key),
                )
                .route(
                    "/settings/api/keys/{id}/usage",
                    web::get().to(pages::api_settings::usage_get),
                )
                .route(
                    "/settings/api/allowlist",
                    web::post().to(pages::api_settings::save_allowlist),
                )
                .route("/login", web::get().to(pages::login::login_get))
                .route("/login", web::post().to(pages::login::login_post))
                .route("/logout", web::post().to(pages::login::logout_post))
                .route(
                    "/logout/everywhere",
                    web::post().to(pages::login::logout_everywhere_post),
                )
                .route("/docs", web::get().to(pages::home::docs))
                .route("/oauth/logout", web::get().to(pages::rp_logout::logout_get))
                .route(
                    "/oauth/logout",
                    web::post().to(pages::rp_logout::logout_post),
                )
                // Every route from here to `split_for_parts` is an operation
                // of /openapi.json, documented by its handler's
                // `#[utoipa::path]` (see `routes::openapi`).
                .into_utoipa_app()
                .openapi(openapi::ApiDoc::openapi())
                // Changing a path here means changing the server metadata too.
                .service(
                    Endpoint::per_method(
                        oauth::__path_authorize_get,
                        oauth::authorize_get,
                        resource,
                    )
                    .to(oauth::__path_authorize_post, oauth::authorize_post),
                )
                // The JSON endpoints: each error, whatever its cause, in the
                // RFC 6749 5.2 body, and a body over the limit is 413.
                .service(Endpoint::new(
                    oauth::__path_token_post,
                    oauth::token_post,
                    |p| oauth_json_endpoint(p, oauth::TOKEN_BODY_LIMIT),
                ))
                .service(Endpoint::new(
                    oauth::__path_par_post,
                    oauth::par_post,
                    |p| oauth_json_endpoint(p, oauth::TOKEN_BODY_LIMIT),
                ))
                .service(Endpoint::new(
                    oauth::__path_introspect_post,
                    oauth::introspect_post,
                    |p| oauth_json_endpoint(p, oauth::TOKEN_BODY_LIMIT),
                ))
                .service(Endpoint::new(
                    oauth::__path_revoke_post,
                    oauth::revoke_post,
                    |p| oauth_json_endpoint(p, oauth::TOKEN_BODY_LIMIT),
                ))
                .service(Endpoint::new(
                    register::__path_register,
                    register::register,
                    |p| oauth_json_endpoint(p, register::BODY_LIMIT),
                ))
                .service(
                    Endpoint::new(register::__path_read, register::read, |p| {
                        oauth_json_endpoint(p, register::BODY_LIMIT)
                    })
                    .to(register::__path_update, register::update)
                    .to(register::__path_delete, register::delete),
                )
                .service(Endpoint::per_method(
                    well_known::__path_jwks,
                    well_known::jwks,
                    resource,
                ))
                .service(Endpoint::per_method(
                    well_known::__path_metadata,
                    well_known::metadata,
                    resource,
                ))
                .service(Endpoint::per_method(
                    well_known::__path_openid_configuration,
                    well_known::openid_configuration,
                    resource,
                ))
                .service(
                    Endpoint::per_method(oidc::__path_userinfo_get, oidc::userinfo_get, resource)
                        .to(oidc::__path_userinfo_post, oidc::userinfo_post),
                )
                .service(Endpoint::per_method(
                    well_known::__path_metadata_for_path,
                    well_known::metadata_for_path,
                    // Every segment after the suffix: an issuer's path may
                    // have several.
                    |_| web::resource("/.well-known/oauth-authorization-server/{issuer_path:.+}"),
                ))
                .service(
                    v1::scope()
                        .wrap(from_fn(v1::limits::rate_limit))
                        .configure(v1::routes)
                        .map(|s| {
                            s.configure(extra_v1.clone())
                                .default_service(web::to(v1::not_found))
                        }),
                )
                .split_for_parts();
            app.app_data(web::Data::new(openapi::Document::new(api)))
                .route("/openapi.json", web::get().to(openapi::serve))
                .default_service(web::to(pages::not_found))
        });
        let server = match &tls {
            Some(certs) => {
                let config = certs.server_config().map_err(BuildError::Tls)?;
                server.listen_rustls_0_23(listener, config)
            }
            None => server.listen(listener),
        }
        .map_err(anyhow::Error::from)?;
        let server = match http_listener {
            Some(plain) => server.listen(plain).map_err(anyhow::Error::from)?,
            None => server,
        };
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
        // Signals are ours (`stop_on_signals`): readiness first, then a
        // drain period, then the stop.
        .disable_signals()
        // A graceful stop waits for requests in flight: each finishes or
        // misses its deadline within this.
        .shutdown_timeout(request_timeout.as_secs() + 1)
        .run();

        let metrics = match (metrics_listener, metrics) {
            (Some(listener), Some(metrics)) => Some(serve_metrics(listener, metrics)?),
            _ => None,
        };

        Ok(Self {
            local_addr,
            http_addr,
            metrics,
            tls,
            hangups: Some(hangups),
            signals: None,
            drain,
            server,
            db,
            listen_url,
            revocations,
            state: state_for_listener,
        })
    }

    /// SIGTERM and SIGINT stop the service gracefully (`serve` asks for
    /// this; tests stop through [`Application::handle`]): `/readyz` answers
    /// 503 at once while the listener still accepts, for
    /// `DZDESK_SHUTDOWN_SECS`, so that load balancers stop sending; then the
    /// listener closes and requests in flight complete; then
    /// [`Application::run_until_stopped`] returns. A second signal ends the
    /// drain period early. `signals` are watched since [`StopSignals::watch`],
    /// so one that arrived during start-up is not lost (nor fatal).
    pub fn stop_on_signals(&mut self, signals: StopSignals) {
        self.signals = Some((signals.term, signals.int));
    }

    /// The port the listener got (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The issuer this instance names in metadata and tokens.
    pub fn issuer(&self) -> &str {
        &self.state.settings.issuer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the main listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The plain-HTTP listener beside the TLS one, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where `/metrics` is served (`DZDESK_METRICS_LISTEN`; useful with
    /// port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
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
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let usage = self.state.usage.clone();
        let usage_log = self.state.usage_log.clone();
        let usage_log_flush = self.state.settings.usage_log_flush;
        let db_for_flush = self.db.clone();
        let tls = self.tls.clone();
        let hangups = self.hangups.take();
        let stopper = stop_on(
            self.signals.take(),
            self.drain,
            self.state.stopping.clone(),
            self.server.handle(),
        );
        let sweeper = futures_util::future::join5(
            maintenance::sweep_forever(self.db.clone(), usage_log.clone()),
            maintenance::flush_usage_forever(self.db.clone(), usage.clone()),
            maintenance::write_usage_log_forever(
                self.db.clone(),
                usage_log.clone(),
                usage_log_flush,
            ),
            keystore::watch_forever(self.state.credentials.clone()),
            async move {
                match (tls, hangups) {
                    (Some(certs), Some(hangups)) => certs.reload_on_sighup(hangups).await,
                    (None, Some(mut hangups)) => {
                        while hangups.recv().await.is_some() {
                            log::info!("SIGHUP: no TLS certificate to reload; ignored");
                        }
                    }
                    (_, None) => futures_util::future::pending().await,
                }
            },
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
        // The metrics listener runs beside the service, in this task (it
        // may not be inside an actix system: the tests spawn on tokio).
        let metrics_server = self.metrics.take().map(|(_, server)| server);
        let metrics_handle = metrics_server.as_ref().map(Server::handle);
        // Polled again when done, a `MaybeDone` answers at once.
        let mut metrics_run = Box::pin(futures_util::future::maybe_done(async move {
            if let Some(server) = metrics_server {
                if let Err(e) = server.await {
                    log::error!("the metrics listener stopped: {e}");
                }
            }
        }));
        let metrics_until_stopped = async {
            (&mut metrics_run).await;
            futures_util::future::pending::<()>().await
        };
        // No background future ever finishes: this ends with the server.
        let background = Box::pin(futures_util::future::join4(
            sweeper,
            listener,
            stopper,
            metrics_until_stopped,
        ));
        let result = match futures_util::future::select(self.server, background).await {
            futures_util::future::Either::Left((result, _)) => result,
            futures_util::future::Either::Right((_, server)) => server.await,
        };
        // The metrics listener closes with the service.
        if let Some(handle) = metrics_handle {
            futures_util::future::join(handle.stop(true), metrics_run).await;
        }
        // Uses seen since the last flush (`last_used_at` and the usage log)
        // are written before stopping.
        let now = chrono::Utc::now().naive_utc() + crate::api::usage::WRITE_EVERY;
        // Bounded: a database that stopped answering must not hold the exit.
        let flushed = actix_web::rt::time::timeout(Duration::from_secs(5), async {
            let last_used = db_for_flush
                .run(move |conn| {
                    maintenance::flush_usage(conn, &usage, now).map_err(anyhow::Error::from)
                })
                .await;
            let logged =
                maintenance::write_usage_log(&db_for_flush, &usage_log, maintenance::Drain::Empty)
                    .await;
            (last_used, logged)
        })
        .await;
        match flushed {
            Ok((Ok(_), logged)) => log::debug!("usage log: {logged} rows written at shutdown"),
            Ok((Err(e), _)) => log::warn!("writing API key usage at shutdown failed: {e:#}"),
            Err(_) => log::warn!("writing API key usage at shutdown took over 5 s: given up"),
        }
        result
    }
}

/// The metrics listener: `GET /metrics` and nothing else, on one worker,
/// apart from the public listener (no route of the service is reachable
/// here, and `/metrics` is not reachable there).
fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, Server), BuildError> {
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    let metrics = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .wrap(from_fn(surface::harden))
            .route("/metrics", web::get().to(routes::metrics::scrape))
            .default_service(web::to(routes::metrics::not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(anyhow::Error::from)?
    .run();
    Ok((addr, server))
}

/// SIGTERM and SIGINT, watched from the first moment of `serve`: before
/// the database is opened or migrated, so that none of them kills the
/// process half-started (their default action). SIGHUP too: it ends the
/// process by default, and the service gives it a meaning (certificate
/// reload) once built.
pub struct StopSignals {
    term: Signal,
    int: Signal,
    _hup: Signal,
}

impl StopSignals {
    /// Call inside the runtime.
    pub fn watch() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            _hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for the first of SIGTERM or SIGINT (forever without them), then
/// stops the server: `stopping` set at once (`/readyz` 503), the drain
/// period (cut short by a second signal), then a graceful stop. Never
/// returns: the server's end ends the task that runs it.
async fn stop_on(
    signals: Option<(Signal, Signal)>,
    drain: Duration,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    server: actix_web::dev::ServerHandle,
) {
    let Some((mut term, mut int)) = signals else {
        return futures_util::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    stopping.store(true, std::sync::atomic::Ordering::Release);
    log::info!(
        "{name}: stopping; /readyz answers 503, new connections are accepted for {} s more",
        drain.as_secs()
    );
    tokio::select! {
        _ = actix_web::rt::time::sleep(drain) => {}
        _ = term.recv() => log::info!("SIGTERM again: draining cut short"),
        _ = int.recv() => log::info!("SIGINT again: draining cut short"),
    }
    log::info!("listener closed; waiting for requests in flight");
    server.stop(true).await;
    futures_util::future::pending().await
}
