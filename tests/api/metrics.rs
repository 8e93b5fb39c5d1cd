//! Prometheus metrics on their own listener (`DZDESK_METRICS_LISTEN`), and
//! `X-Request-Id` on every answer and in the access log.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use actix_web::web;
use dzdesk_auth::domain::{Role, TrustedProxies};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{http_get, new_client, spawn_app, spawn_app_custom, TestApp, TestDatabase};
use crate::introspect::{call, introspect, service};
use crate::oauth_flow::{assert_token_error, Flow};

const BIN: &str = env!("CARGO_BIN_EXE_dzdesk-auth");
const SCOPE: &str = "requests:read requests:write";

/// A sample's labels, and its value.
type Sample = (BTreeMap<String, String>, f64);

/// One scrape: every sample, by metric name.
pub(crate) struct Scrape(BTreeMap<String, Vec<Sample>>);

impl Scrape {
    pub(crate) async fn of(app: &TestApp) -> Scrape {
        let base = app.metrics.as_ref().expect("metrics listener");
        let resp = http_get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        Self::parse(&resp.text().await.unwrap())
    }

    fn parse(text: &str) -> Scrape {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        let (k, v) = pair.split_once("=\"").unwrap();
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Scrape(samples)
    }

    /// The sum of the samples of `name` that carry every label of `with`.
    pub(crate) fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.0.get(name).map_or(0.0, |samples| {
            samples
                .iter()
                .filter(|(labels, _)| {
                    with.iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
                })
                .map(|(_, v)| v)
                .sum()
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Every value the label `label` takes in `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        self.0.get(name).map_or_else(Vec::new, |samples| {
            samples
                .iter()
                .filter_map(|(l, _)| l.get(label).cloned())
                .collect()
        })
    }
}

fn with_metrics(settings: &mut dzdesk_auth::config::Settings) {
    settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

/// Moved by `after` since `before`.
fn moved(before: &Scrape, after: &Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    after.sum(name, with) - before.sum(name, with)
}

#[tokio::test]
async fn a_flow_moves_exactly_its_counters_and_routes_are_patterns() {
    let app = spawn_app_custom(
        |s| {
            with_metrics(s);
            s.auth_failures_per_min = 3;
        },
        |_| {},
    )
    .await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let app = &flow.app;
    let before = Scrape::of(app).await;

    // Code, refresh, then the first refresh token again: reuse.
    let tokens = flow.tokens(SCOPE).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(flow.refresh(&first, None).await.status(), 200);
    assert_token_error(flow.refresh(&first, None).await, 400, "invalid_grant").await;
    // Presented once more: the grant is revoked already, no second reuse.
    assert_token_error(flow.refresh(&first, None).await, 400, "invalid_grant").await;

    // client_credentials, then one active and one inactive introspection.
    let (id, secret) = service(&flow, true).await;
    let resp = call(
        &app.address,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let cc: Value = resp.json().await.unwrap();
    let cc = cc["access_token"].as_str().unwrap();
    assert_eq!(introspect(&flow, (&id, &secret), cc).await["active"], true);
    assert_eq!(
        introspect(&flow, (&id, &secret), "not-a-token").await["active"],
        false
    );

    // Five wrong passwords lock the (account, address) pair; the sixth
    // attempt is 429.
    for attempt in 1..=6 {
        let resp = app
            .login_with(
                &new_client(),
                "ann@example.com",
                "wrong password 12345",
                "/",
            )
            .await;
        let expected = if attempt <= 5 { 200 } else { 429 };
        assert_eq!(resp.status(), expected, "attempt {attempt}");
    }

    // Failed /v1 authentication from this address: 3 a minute, then 429.
    for n in 0..3 {
        let resp = app
            .client
            .get(app.url(&format!("/v1/users/user_{n}xyz")))
            .bearer_auth("dzd_nope")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth("dzd_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // Paths no route matches, with and without the /v1 prefix.
    assert_eq!(app.get("/no/such/path/8d1f0c").await.status(), 404);
    // A method of the client's invention is folded too.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let resp = app
        .client
        .request(brew, app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());

    let after = Scrape::of(app).await;
    let m = |name: &str, with: &[(&str, &str)]| moved(&before, &after, name, with);
    let grant = |g: &str| m("dzdesk_auth_tokens_issued_total", &[("grant_type", g)]);
    assert_eq!(grant("authorization_code"), 1.0);
    assert_eq!(grant("refresh_token"), 1.0);
    assert_eq!(grant("client_credentials"), 1.0);
    assert_eq!(m("dzdesk_auth_refresh_token_reuse_total", &[]), 1.0);
    let intro = |r: &str| m("dzdesk_auth_introspections_total", &[("result", r)]);
    assert_eq!((intro("active"), intro("inactive")), (1.0, 1.0));
    assert_eq!(m("dzdesk_auth_signin_failures_total", &[]), 5.0);
    assert_eq!(
        m("dzdesk_auth_signin_locks_total", &[("scope", "pair")]),
        1.0
    );
    let limited = |k: &str| m("dzdesk_auth_rate_limited_total", &[("kind", k)]);
    assert_eq!(limited("login"), 1.0);
    assert_eq!(limited("ip"), 1.0);
    assert_eq!(limited("plan"), 0.0);
    assert_eq!(limited("client_auth"), 0.0);
    // Every kind is exported before it ever happens (alerts need the zero).
    for kind in ["plan", "ip", "login", "client_auth"] {
        assert!(after
            .label_values("dzdesk_auth_rate_limited_total", "kind")
            .contains(&kind.to_owned()));
    }

    // HTTP: by route pattern, never the raw path.
    let http = |route: &str, method: &str, status: &str| {
        m(
            "dzdesk_auth_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(http("/v1/users/{id}", "GET", "401"), 3.0);
    assert_eq!(http("/v1/me", "GET", "429"), 1.0);
    assert_eq!(http("/oauth/token", "POST", "200"), 3.0);
    assert_eq!(http("/oauth/introspect", "POST", "200"), 2.0);
    assert_eq!(http("unmatched", "GET", "404"), 1.0);
    let routes = after.label_values("dzdesk_auth_http_requests_total", "route");
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("xyz") && !r.contains("8d1f0c")),
        "{routes:?}"
    );
    assert_eq!(
        m(
            "dzdesk_auth_http_requests_total",
            &[("route", "/healthz"), ("method", "other")]
        ),
        1.0
    );
    let methods = after.label_values("dzdesk_auth_http_requests_total", "method");
    assert!(!methods.iter().any(|m| m == "BREW"), "{methods:?}");
    // The histogram counts the same requests under the same labels.
    assert_eq!(
        m(
            "dzdesk_auth_http_request_duration_seconds_count",
            &[("route", "/v1/users/{id}"), ("status", "401")]
        ),
        3.0
    );
    assert!(after.has("dzdesk_auth_http_request_duration_seconds_bucket"));

    // The pool: every request above waited for a connection at least once.
    assert!(m("dzdesk_auth_db_pool_wait_seconds_count", &[]) >= 10.0);
    assert_eq!(after.sum("dzdesk_auth_db_pool_max_connections", &[]), 4.0);
    assert!(after.has("dzdesk_auth_db_pool_connections_in_use"));
    assert_eq!(after.sum("dzdesk_auth_db_timeouts_total", &[]), 0.0);
    // The usage log lost nothing, and says so (alerts need the zero).
    assert!(after.has("dzdesk_auth_usage_log_dropped_total"));
    assert_eq!(after.sum("dzdesk_auth_usage_log_dropped_total", &[]), 0.0);
    assert!(after.has("dzdesk_auth_usage_log_queued"));
    // The signing key was made when the test started.
    let age = after.sum("dzdesk_auth_signing_key_age_seconds", &[]);
    assert!((0.0..600.0).contains(&age), "{age}");
    // PostgreSQL runs the revocation listener (up in tests); SQLite has none.
    if app.settings.database_url.postgres_url().is_some() {
        assert_eq!(after.sum("dzdesk_auth_revocation_listener_up", &[]), 1.0);
    } else {
        assert!(!after.has("dzdesk_auth_revocation_listener_up"));
    }
}

#[tokio::test]
async fn a_plan_429_and_a_client_auth_lock_are_counted_by_kind() {
    let app = spawn_app_custom(with_metrics, |_| {}).await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let app = &flow.app;
    let (id, secret) = service(&flow, false).await;
    let before = Scrape::of(app).await;

    // Standard plan: 60 a minute for the client's account, then 429.
    let resp = call(
        &app.address,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let token: Value = resp.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..61 {
        let resp = app
            .client
            .get(app.url("/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1);
    // A /v1 path no route matches: folded like any other.
    assert_eq!(app.get("/v1/no/such/thing/77e1").await.status(), 404);

    // Wrong client secrets: the (client, address) pair locks.
    let mut last = 0;
    for _ in 0..6 {
        last = call(
            &app.address,
            "/oauth/token",
            Some((&id, "dzs_wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await
        .status()
        .as_u16();
    }
    assert_eq!(last, 429);

    let after = Scrape::of(app).await;
    let m = |name: &str, with: &[(&str, &str)]| moved(&before, &after, name, with);
    assert_eq!(
        m("dzdesk_auth_rate_limited_total", &[("kind", "plan")]),
        1.0
    );
    assert!(m("dzdesk_auth_rate_limited_total", &[("kind", "client_auth")]) >= 1.0);
    assert_eq!(
        m("dzdesk_auth_client_auth_locks_total", &[("scope", "pair")]),
        1.0
    );
    assert_eq!(m("dzdesk_auth_rate_limited_total", &[("kind", "ip")]), 0.0);
    assert_eq!(
        m(
            "dzdesk_auth_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    let routes = after.label_values("dzdesk_auth_http_requests_total", "route");
    assert!(routes.iter().all(|r| !r.contains("77e1")), "{routes:?}");
}

#[tokio::test]
async fn the_pool_gauges_and_a_database_timeout_are_counted() {
    let app = spawn_app_custom(
        |s| {
            with_metrics(s);
            s.db_pool_size = 1;
            s.db_timeout = Duration::from_millis(300);
        },
        |_| {},
    )
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // The service's own background work (start-up sweeps, the key reload)
    // may hold the only connection for a moment: wait until it is back.
    let mut before = Scrape::of(&app).await;
    for _ in 0..100 {
        if before.sum("dzdesk_auth_db_pool_connections_in_use", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = Scrape::of(&app).await;
    }
    assert_eq!(before.sum("dzdesk_auth_db_pool_max_connections", &[]), 1.0);
    assert_eq!(
        before.sum("dzdesk_auth_db_pool_connections_in_use", &[]),
        0.0
    );

    // The only connection, held here: the service waits, then answers 503.
    let db = app.db.clone();
    let held = tokio::task::spawn_blocking(move || db.conn().unwrap())
        .await
        .unwrap();
    assert_eq!(app.get("/readyz").await.status(), 503);
    let during = Scrape::of(&app).await;
    assert_eq!(
        during.sum("dzdesk_auth_db_pool_connections_in_use", &[]),
        1.0
    );
    assert_eq!(
        moved(&before, &during, "dzdesk_auth_db_timeouts_total", &[]),
        1.0
    );
    let waited = moved(
        &before,
        &during,
        "dzdesk_auth_db_pool_wait_seconds_sum",
        &[],
    );
    assert!(waited >= 0.25, "{waited}");
    // The wait landed in the buckets past 0.25 s: one wait that long (the
    // service's background work may take the connection for a moment
    // meanwhile, a wait of microseconds: seen once under a loaded suite).
    let count = moved(
        &before,
        &during,
        "dzdesk_auth_db_pool_wait_seconds_count",
        &[],
    );
    let fast = moved(
        &before,
        &during,
        "dzdesk_auth_db_pool_wait_seconds_bucket",
        &[("le", "0.25")],
    );
    assert_eq!(count - fast, 1.0, "one wait past 0.25 s");

    drop(held);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let after = Scrape::of(&app).await;
    assert_eq!(
        after.sum("dzdesk_auth_db_pool_connections_in_use", &[]),
        0.0
    );
    assert_eq!(
        moved(&during, &after, "dzdesk_auth_db_timeouts_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn the_signing_key_age_restarts_at_a_rotation() {
    let app = spawn_app_custom(with_metrics, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let age = |s: &Scrape| s.sum("dzdesk_auth_signing_key_age_seconds", &[]);
    let old = age(&Scrape::of(&app).await);
    assert!((1.0..600.0).contains(&old), "{old}");
    app.with_conn(|conn| {
        dzdesk_auth::credentials::jwt::rotate(
            conn,
            &crate::helpers::test_sealer(),
            chrono::Utc::now().naive_utc(),
            false,
        )
        .unwrap()
    })
    .await;
    // Tests re-read the keys on every use (key_reload_secs = 0).
    assert_eq!(app.get("/.well-known/jwks.json").await.status(), 200);
    let new = age(&Scrape::of(&app).await);
    assert!(new < 1.0 && new < old, "{old} -> {new}");
}

#[tokio::test]
async fn metrics_are_only_on_their_own_listener() {
    let app = spawn_app_custom(with_metrics, |_| {}).await;
    let metrics = app.metrics.clone().unwrap();
    assert_ne!(metrics, app.address);
    // Not on the public listener...
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 404);
    assert!(!resp.text().await.unwrap().contains("dzdesk_auth_"));
    // ...and nothing but /metrics on the metrics one.
    for path in ["/healthz", "/v1/me", "/metrics/x", "/"] {
        let resp = http_get(format!("{metrics}{path}")).await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    // A second service in the process counts apart (a registry each).
    let other = spawn_app_custom(with_metrics, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(other.get("/healthz").await.status(), 200);
    }
    let mine = Scrape::of(&app).await;
    let theirs = Scrape::of(&other).await;
    let health = [("route", "/healthz"), ("status", "200")];
    assert_eq!(mine.sum("dzdesk_auth_http_requests_total", &health), 0.0);
    assert_eq!(theirs.sum("dzdesk_auth_http_requests_total", &health), 3.0);

    // Without DZDESK_METRICS_LISTEN: no listener at all.
    let off = spawn_app().await;
    assert!(off.metrics.is_none());
}

#[tokio::test]
async fn the_metrics_listener_stops_with_the_service() {
    let app = spawn_app_custom(with_metrics, |_| {}).await;
    let metrics = app.metrics.clone().unwrap();
    assert_eq!(
        http_get(format!("{metrics}/metrics"))
            .await
            .unwrap()
            .status(),
        200
    );
    drop(app);
    let mut refused = false;
    for _ in 0..50 {
        if http_get(format!("{metrics}/metrics")).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the metrics listener outlived the service");
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {} {}", resp.status(), resp.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn explode() -> actix_web::HttpResponse {
    panic!("test panic");
}

#[tokio::test]
async fn every_answer_carries_a_request_id_a_client_cannot_choose() {
    let app = spawn_app().await;
    let a = app.get("/healthz").await;
    let b = app.get("/healthz").await;
    let (a, b) = (request_id(&a), request_id(&b));
    assert!(generated(&a) && generated(&b), "{a} {b}");
    assert_ne!(a, b);

    // Errors of every surface: a page 404, /v1 401 and 404, an /oauth error,
    // a panic.
    let resp = app.get("/no/such/page").await;
    assert_eq!(resp.status(), 404);
    assert!(generated(&request_id(&resp)));
    let resp = app.get("/v1/me").await;
    assert_eq!(resp.status(), 401);
    assert!(generated(&request_id(&resp)));
    let resp = app.get("/v1/nothing-here").await;
    assert_eq!(resp.status(), 404);
    assert!(generated(&request_id(&resp)));
    let resp = app
        .post_form("/oauth/token", &[("grant_type", "password")])
        .await;
    assert_eq!(resp.status(), 400);
    assert!(generated(&request_id(&resp)));

    // From a peer that is no trusted proxy, the header is ignored.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "chosen-by-client")
        .send()
        .await
        .unwrap();
    let id = request_id(&resp);
    assert_ne!(id, "chosen-by-client");
    assert!(generated(&id));
}

#[tokio::test]
async fn a_panicking_handler_still_answers_with_a_request_id() {
    // A /v1 route panics only once the credential passed: make one.
    let app = spawn_app_custom(
        |_| {},
        |cfg: &mut web::ServiceConfig| {
            cfg.route("/test-panic", web::get().to(explode));
        },
    )
    .await;
    let (id, secret) = app
        .create_client("requests:read", &["client_credentials"], false)
        .await;
    let secret = secret.unwrap();
    let token: Value = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = app
        .client
        .get(app.url("/v1/test-panic"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(generated(&request_id(&resp)));
}

#[tokio::test]
async fn a_trusted_proxy_passes_its_request_id_when_it_is_sane() {
    let app = spawn_app_custom(
        |s| s.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap(),
        |_| {},
    )
    .await;
    let sent = |id: String| {
        let req = app.client.get(app.url("/no/such/page"));
        async move {
            request_id(
                &req.header("x-request-id", id.as_str())
                    .send()
                    .await
                    .unwrap(),
            )
        }
    };
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned();
    assert_eq!(sent(uuid.clone()).await, uuid);
    for bad in [
        "a b".to_owned(),
        "x".repeat(129),
        "semi;colon".to_owned(),
        "\"quoted\"".to_owned(),
    ] {
        let got = sent(bad.clone()).await;
        assert!(generated(&got), "{bad} -> {got}");
    }
    // Two of them: neither is believed.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    assert!(generated(&request_id(&resp)));
}

/// Starts the binary with `env`, returns the base URL, the metrics URL if
/// any, the child and its log lines.
type LogLines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

async fn serve(
    db: &TestDatabase,
    env: &[(&str, &str)],
) -> (String, Option<String>, tokio::process::Child, LogLines) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("DZDESK_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut base = None;
    let mut metrics = None;
    let want_metrics = env.iter().any(|(k, _)| *k == "DZDESK_METRICS_LISTEN");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.split("listening on ").nth(1) {
                base = Some(addr.trim().to_owned());
            }
            if let Some(addr) = line.split("metrics on ").nth(1) {
                metrics = Some(addr.trim().trim_end_matches("/metrics").to_owned());
            }
            if base.is_some() && (metrics.is_some() || !want_metrics) {
                return;
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server started");
    (base.unwrap(), metrics, child, lines)
}

#[tokio::test]
async fn the_access_log_line_carries_the_request_id_and_the_binary_serves_metrics() {
    let db = TestDatabase::new();
    let (base, metrics, _child, mut lines) =
        serve(&db, &[("DZDESK_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let resp = http_get(format!("{base}/no/such/page/4f2a")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let id = request_id(&resp);
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("/no/such/page/4f2a") {
                return line;
            }
        }
        panic!("no access line");
    })
    .await
    .unwrap();
    assert!(line.contains(&format!("id={id}")), "{line}");
    assert!(line.contains("\" 404 "), "{line}");

    let metrics = metrics.expect("metrics address logged");
    let text = http_get(format!("{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(&text);
    assert_eq!(
        scrape.sum(
            "dzdesk_auth_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        http_get(format!("{base}/metrics")).await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn a_bad_metrics_address_stops_start_up_naming_the_variable() {
    let db = TestDatabase::new();
    for bad in ["9464", "localhost:9464", "127.0.0.1:99999"] {
        let out = Command::new(BIN)
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("DZDESK_LISTEN", "127.0.0.1:0")
            .env("DZDESK_METRICS_LISTEN", bad)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("DZDESK_METRICS_LISTEN"), "{bad}: {err}");
    }
    // An address in use: exit 2, naming it too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("DZDESK_LISTEN", "127.0.0.1:0")
        .env("DZDESK_METRICS_LISTEN", &addr)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DZDESK_METRICS_LISTEN"));
}
