//! `spawn_app` and the `TestApp` methods the tests share.

use std::sync::Once;

use actix_web::dev::ServerHandle;
use actix_web::web::ServiceConfig;
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use dzdesk_auth::accounts;
use dzdesk_auth::config::Settings;
use dzdesk_auth::db::{Database, DatabaseUrl};
use dzdesk_auth::domain::{Email, NewPassword, Role};
use dzdesk_auth::oauth::clients::ClientRequest;
use dzdesk_auth::startup::Application;
use dzdesk_auth::state::ServerKeys;
use dzdesk_auth::tokens;
use reqwest::redirect::Policy;
use reqwest::Response;

pub const PASSWORD: &str = "correct horse battery staple";

/// `DZDESK_SECRETS_KEY` of every test instance, and of the CLI the tests
/// run (`cli::run`), so both read what the other sealed. Tests only.
pub const TEST_SECRETS_KEY: &str = "zAbXovPgQe9cs2TpltKNfs9tdhi7muW1QyJdEViQum0=";

/// The sealer of test instances (`TEST_SECRETS_KEY`).
pub fn test_sealer() -> dzdesk_auth::secrets::Sealer {
    let key = dzdesk_auth::secrets::SecretsKey::parse(TEST_SECRETS_KEY).expect("test key");
    dzdesk_auth::secrets::Sealer::new(Some(key), None)
}

/// Test logs stay silent unless `TEST_LOG` is set.
/// Once per test process: reqwest's rustls needs a process-wide crypto
/// provider (it is built without one of its own: the service's aws-lc-rs
/// serves both), and the log when `TEST_LOG` is set.
pub fn init_test_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if std::env::var_os("TEST_LOG").is_some() {
            let _ =
                env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                    .is_test(true)
                    .try_init();
        }
    });
}

/// A database of its own for one test: dropped (PostgreSQL) or deleted
/// (SQLite temp dir) afterwards.
pub struct TestDatabase {
    pub url: String,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(base) if !base.trim().is_empty() => Self::postgres(base.trim()),
            _ => Self::sqlite(),
        }
    }

    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    fn postgres(base: &str) -> Self {
        let name = format!("dzdesk_test_{}", tokens::new_id("").to_lowercase());
        let mut admin = PgConnection::establish(base)
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL does not connect: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        let mut url = url::Url::parse(base).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        // Loopback needs no TLS, and without it no OpenSSL state can be torn
        // down at process exit under a pool thread that is still connecting.
        if !url.query_pairs().any(|(k, _)| k == "sslmode") {
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        Self {
            url: url.to_string(),
            pg: Some((base.to_owned(), name)),
            _dir: None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((base, name)) = &self.pg {
            if let Ok(mut admin) = PgConnection::establish(base) {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub db: Database,
    pub revocations: std::sync::Arc<dzdesk_auth::credentials::revocation_view::RevocationView>,
    /// `http://127.0.0.1:PORT` of the metrics listener, when
    /// `metrics_listen` was set.
    pub metrics: Option<String>,
    handle: ServerHandle,
    /// The task serving until stopped (see [`TestApp::stop`]).
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Dropped last: the server and pool go first.
    _test_db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command now; the workers wind down on their own.
        drop(self.handle.stop(false));
    }
}

pub fn test_settings(url: &str) -> Settings {
    Settings {
        database_url: DatabaseUrl::parse(url).expect("test database URL"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        issuer: "http://127.0.0.1".to_owned(),
        issuer_from_listen: false,
        workers: Some(1),
        db_pool_size: 4,
        db_timeout: dzdesk_auth::db::DEFAULT_TIMEOUT,
        audience: "http://127.0.0.1".to_owned(),
        access_token_ttl_secs: 3600,
        refresh_token_ttl_secs: 30 * 86_400,
        // Re-read the signing keys on every use: rotation tests see it at once.
        key_reload_secs: 0,
        // Every request sees disabled clients and new secrets at once.
        client_cache_secs: 0,
        trusted_proxies: Default::default(),
        redis_url: None,
        // A key space of its own for every test.
        redis_prefix: format!("dzdesk_test_{}:", tokens::new_id("")),
        auth_failures_per_min: 60,
        redis_timeout: dzdesk_auth::config::DEFAULT_REDIS_TIMEOUT,
        // Far above any request's need: a CI machine that stalls for a few
        // seconds (another test's initdb flushing) must not turn answers
        // into 408s (two bruteforce tests failed together in one CI run).
        // slow_clients sets its own deadline to test it.
        request_timeout: std::time::Duration::from_secs(30),
        max_connections: 4096,
        tls: None,
        http_listen: None,
        metrics_listen: None,
        shutdown_drain: std::time::Duration::from_secs(10),
        rate_limits: true,
        usage_log: true,
        usage_log_flush: dzdesk_auth::config::DEFAULT_USAGE_LOG_FLUSH,
        secrets: test_sealer(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_custom(|_| {}, |_| {}).await
}

/// Starts the service with adjusted settings and extra routes under /v1.
pub async fn spawn_app_custom<S, F>(adjust: S, extra_v1: F) -> TestApp
where
    S: FnOnce(&mut Settings),
    F: Fn(&mut ServiceConfig) + Send + Clone + 'static,
{
    init_test_logging();
    let test_db = TestDatabase::new();
    let mut settings = test_settings(&test_db.url);
    adjust(&mut settings);
    // Set-up, not the behaviour under test: r2d2 waits `db_timeout` (2 s)
    // for the pool's first connection, and a fresh SQLite file switching to
    // WAL can take longer while other tests flush (`Error(None)` failed two
    // tests at once, here and in a CI run). Up to five tries.
    let mut tries = 0;
    let db = loop {
        match Database::connect_with_timeout(
            &settings.database_url,
            settings.db_pool_size,
            settings.db_timeout,
        ) {
            Ok(db) => break db,
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("connect test database (try {tries}): {e}; again");
            }
            Err(e) => panic!("connect test database: {e}"),
        }
    };
    db.migrate().expect("migrate test database");
    let keys = ServerKeys::load(&db, &settings).await.expect("server keys");
    let app = Application::build_with(settings.clone(), db.clone(), keys, extra_v1)
        .await
        .expect("build app");
    let port = app.port();
    let handle = app.handle();
    let revocations = app.revocations();
    let metrics = app.metrics_addr().map(|a| format!("http://{a}"));
    let running = tokio::spawn(app.run_until_stopped());
    if settings.database_url.postgres_url().is_some() {
        // Tests expect the revocation listener up, as in production.
        wait_live(&revocations).await;
    }
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        settings,
        client: new_client(),
        db,
        revocations,
        metrics,
        handle,
        running: Some(running),
        _test_db: test_db,
    }
}

/// Waits (bounded) until an instance's revocation listener is live.
async fn wait_live(view: &dzdesk_auth::credentials::revocation_view::RevocationView) {
    for _ in 0..200 {
        if view.is_live() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("revocation listener did not start");
}

/// A second instance of the service on the same database as `app` (as two
/// replicas behind a load balancer): its own pool, keys read from the shared
/// database. Returns its base URL and the handle that stops it.
pub async fn spawn_second_instance(app: &TestApp) -> (String, ServerHandle) {
    let (address, handle, _) = spawn_second_instance_with_view(app).await;
    (address, handle)
}

/// [`spawn_second_instance`], and its revocation view: a test fences it to
/// wait until it has applied every notification committed so far, as the
/// first instance's own writes fence the first's.
pub async fn spawn_second_instance_with_view(
    app: &TestApp,
) -> (
    String,
    ServerHandle,
    std::sync::Arc<dzdesk_auth::credentials::revocation_view::RevocationView>,
) {
    let settings = app.settings.clone();
    let db = Database::connect(&settings.database_url, settings.db_pool_size)
        .expect("connect test database");
    let keys = ServerKeys::load(&db, &settings).await.expect("server keys");
    let second = Application::build_with(settings, db, keys, |_| {})
        .await
        .expect("build second app");
    let address = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    let revocations = second.revocations();
    tokio::spawn(second.run_until_stopped());
    if app.settings.database_url.postgres_url().is_some() {
        wait_live(&revocations).await;
    }
    (address, handle, revocations)
}

/// Every test's reqwest client starts here: reqwest's rustls has no crypto
/// provider of its own, so building a client before the process-wide one
/// is installed panics ("No provider set"), in whichever test builds the
/// first client.
pub fn client_builder() -> reqwest::ClientBuilder {
    init_test_logging();
    reqwest::Client::builder()
}

/// `reqwest::get` through [`client_builder`].
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client_builder().build()?.get(url).send().await
}

/// A browser-like client: cookies on, redirects off.
pub fn new_client() -> reqwest::Client {
    client_builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .expect("reqwest client")
}

/// The value of a hidden input named `name` in an HTML page.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every `Set-Cookie` header of a response.
pub fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// The value a response sets for cookie `name`, if any.
pub fn cookie_value(resp: &Response, name: &str) -> Option<String> {
    set_cookies(resp).iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
    })
}

pub fn assert_security_headers(resp: &Response) {
    let h = resp.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

impl TestApp {
    /// Stops the service gracefully and waits until `run_until_stopped`
    /// has returned (its shutdown writes done). The database stays.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            tokio::time::timeout(std::time::Duration::from_secs(30), running)
                .await
                .expect("stopped within 30 s")
                .expect("join")
                .expect("served");
        }
    }

    pub fn database_url(&self) -> String {
        self._test_db.url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    /// Creates a user directly through the accounts module (blocking work on
    /// the blocking pool) and returns its id.
    pub async fn create_user(&self, email: &str, role: Role) -> String {
        let db = self.db.clone();
        let email = Email::parse(email).expect("valid email");
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn().expect("conn");
            let password = NewPassword::parse(PASSWORD.to_owned()).expect("password");
            accounts::create_user(
                &mut conn,
                &email,
                role,
                dzdesk_auth::domain::Plan::Standard,
                &password,
                Utc::now().naive_utc(),
            )
            .expect("create user")
            .id
        })
        .await
        .expect("join")
    }

    /// After writing to the database behind the service's back: waits until
    /// the service's revocation view has applied the change (PostgreSQL).
    pub async fn settle_revocations(&self) {
        dzdesk_auth::credentials::listener::fence(&self.db, &self.revocations).await;
    }

    pub async fn set_disabled(&self, email: &str, disabled: bool) {
        let db = self.db.clone();
        let email = Email::parse(email).expect("valid email");
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn().expect("conn");
            accounts::set_disabled(&mut conn, &email, disabled, Utc::now().naive_utc())
                .expect("set disabled");
        })
        .await
        .expect("join");
        self.settle_revocations().await;
    }

    /// GET /login (with `next`) and the CSRF token of its form.
    pub async fn login_form_token(&self, next: Option<&str>) -> String {
        self.login_form_token_with(&self.client, next).await
    }

    async fn login_form_token_with(&self, client: &reqwest::Client, next: Option<&str>) -> String {
        let path = match next {
            Some(n) => format!("/login?next={}", urlencode(n)),
            None => "/login".to_owned(),
        };
        let resp = client
            .get(self.url(&path))
            .send()
            .await
            .expect("GET /login");
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.expect("body");
        hidden_input(&html, "csrf_token").expect("csrf token in login form")
    }

    /// Signs in through the form: GET /login, then POST it back.
    pub async fn login(&self, email: &str, password: &str, next: &str) -> Response {
        self.login_with(&self.client, email, password, next).await
    }

    /// Signs in with another browser (cookie jar).
    pub async fn login_with(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
        next: &str,
    ) -> Response {
        let token = self.login_form_token_with(client, None).await;
        client
            .post(self.url("/login"))
            .form(&[
                ("email", email),
                ("password", password),
                ("next", next),
                ("csrf_token", &token),
            ])
            .send()
            .await
            .expect("POST /login")
    }

    /// The sign-out token on the home page (the caller must be signed in).
    pub async fn logout_token(&self) -> String {
        let resp = self.get("/").await;
        assert_eq!(resp.status(), 200, "not signed in");
        hidden_input(&resp.text().await.expect("body"), "csrf_token").expect("logout token")
    }

    /// Registers a client in-process; returns (client_id, secret).
    pub async fn create_client(
        &self,
        scope: &str,
        grant_types: &[&str],
        public: bool,
    ) -> (String, Option<String>) {
        self.register_client(ClientRequest {
            name: "Test App".into(),
            redirect_uris: vec![
                "https://app.example/cb".into(),
                "http://127.0.0.1/cb".into(),
            ],
            scope: scope.into(),
            public,
            grant_types: grant_types.iter().map(|g| g.to_string()).collect(),
            require_pkce: false,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await
    }

    /// Registers a client from a full request; returns (client_id, secret).
    pub async fn register_client(&self, req: ClientRequest) -> (String, Option<String>) {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn().expect("conn");
            let new = dzdesk_auth::oauth::clients::NewClient::parse(req).expect("valid client");
            let r = dzdesk_auth::oauth::clients::register(&mut conn, new, Utc::now().naive_utc())
                .expect("register");
            (r.client.id, r.secret)
        })
        .await
        .expect("join")
    }

    /// The client `id` as stored (it must exist).
    pub async fn stored_client(&self, id: &str) -> dzdesk_auth::db::models::Client {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            dzdesk_auth::db::models::Client::find(conn, &id)
                .unwrap()
                .expect("the client exists")
        })
        .await
    }

    /// Runs blocking database work for a test (assertions on stored rows, or
    /// changes behind the service's back, which the service's revocation
    /// view has applied when this returns).
    pub async fn with_conn<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut dzdesk_auth::db::AnyConnection) -> T + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        let out = tokio::task::spawn_blocking(move || f(&mut db.conn().expect("conn")))
            .await
            .expect("join");
        self.settle_revocations().await;
        out
    }

    pub async fn session_count(&self, user_id: &str) -> i64 {
        let db = self.db.clone();
        let id = user_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn().expect("conn");
            dzdesk_auth::db::models::Session::count_for_user(&mut conn, &id).expect("count")
        })
        .await
        .expect("join")
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Has PostgreSQL close every other connection to the test's database (as a
/// restart, a failover or an idle timeout would), from a connection of the
/// test's own; the number closed.
pub async fn close_server_connections(url: &DatabaseUrl) -> usize {
    use diesel::RunQueryDsl;
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = Database::establish(&url).unwrap();
        diesel::sql_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut conn)
        .unwrap()
    })
    .await
    .unwrap()
}
