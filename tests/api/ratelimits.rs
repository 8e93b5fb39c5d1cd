//! Rate limits per plan (seed: "Rate Limits"), over real HTTP: the
//! `X-RateLimit-*` headers on every `/v1` answer, 429 `RATE_LIMITED`, one
//! budget per account, the address's budget for unauthenticated requests,
//! plans set through the CLI and the API, and the Redis store shared by two
//! instances (a real Redis: 127.0.0.1:6379 or `TEST_REDIS_URL`, a key space
//! per test; and one this test starts and stops itself).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dzdesk_auth::config::RedisUrl;
use dzdesk_auth::domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_custom, spawn_second_instance, TestApp};
use crate::oauth_flow::Flow;
use crate::v1_keys::{api, client_from, key_for, me};

/// The three headers of a `/v1` answer, parsed.
pub(crate) async fn limits(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, u32, u32, i64, Option<i64>) {
    let mut req = client.get(format!("{base}{path}"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    let h = |name: &str| -> Option<String> {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let out = (
        resp.status().as_u16(),
        h("x-ratelimit-limit")
            .expect("X-RateLimit-Limit")
            .parse()
            .unwrap(),
        h("x-ratelimit-remaining")
            .expect("X-RateLimit-Remaining")
            .parse()
            .unwrap(),
        h("x-ratelimit-reset")
            .expect("X-RateLimit-Reset")
            .parse()
            .unwrap(),
        h("retry-after").map(|v| v.parse().unwrap()),
    );
    if out.0 == 429 {
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    }
    out
}

fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the Redis tests can run here; without Redis they say so loudly
/// and skip, except under CI=true, where Redis is mandatory.
pub(crate) fn redis_or_skip(url: &str, what: &str) -> bool {
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let up = std::net::TcpStream::connect(addr).is_ok();
    let has_server = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    let available = if what == "server" { has_server } else { up };
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: Redis is mandatory ({what})"
        );
        eprintln!("!! SKIPPED: no Redis ({what}); install redis-server to run this test");
    }
    available
}

#[tokio::test]
async fn every_v1_answer_carries_the_accounts_budget_and_a_fresh_account_gets_exactly_its_limit() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, key) = key_for(app, &flow.user_id, "requests:read").await;
    let now = chrono::Utc::now().timestamp();
    // 200, 404, 403 and 400 answers all count and all carry the headers.
    let (status, limit, remaining, reset, _) =
        limits(&app.client, &app.address, "/v1/me", Some(&key)).await;
    assert_eq!((status, limit, remaining), (200, 60, 59));
    // Reset: epoch seconds, when Remaining is back at Limit (one interval
    // of 1 s per request used).
    assert!((reset - (now + 1)).abs() <= 2, "{reset} vs {now}");
    let (status, _, remaining, _, _) =
        limits(&app.client, &app.address, "/v1/nothing-here", Some(&key)).await;
    assert_eq!((status, remaining), (404, 58));
    let (status, _, remaining, _, _) =
        limits(&app.client, &app.address, "/v1/users", Some(&key)).await;
    assert_eq!((status, remaining), (403, 57));
    for _ in 3..60 {
        assert_eq!(me(app, &key).await.status, 200);
    }
    // The 61st within the minute: 429, Remaining 0, Retry-After.
    let (status, limit, remaining, reset, retry) =
        limits(&app.client, &app.address, "/v1/me", Some(&key)).await;
    assert_eq!((status, limit, remaining), (429, 60, 0));
    assert!(retry.unwrap() >= 1 && retry.unwrap() <= 2, "{retry:?}");
    assert!(reset >= now + 55 && reset <= now + 62, "{reset} vs {now}");

    // A limited request does no work: this one would create a key.
    let reply = api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "x", "scopes": ["requests:read"]})),
    )
    .await;
    reply.assert_error(429, "RATE_LIMITED");
    let count: i64 = app
        .with_conn({
            let user = flow.user_id.clone();
            move |conn| {
                use diesel::prelude::*;
                use dzdesk_auth::db::schema::api_keys;
                api_keys::table
                    .filter(api_keys::user_id.eq(user))
                    .count()
                    .get_result(conn)
                    .unwrap()
            }
        })
        .await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn every_credential_of_an_account_shares_its_budget_and_other_accounts_are_untouched() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, key) = key_for(app, &flow.user_id, "requests:read").await;
    let (_, second_key) = key_for(app, &flow.user_id, "requests:read").await;
    let token = flow.access_token("requests:read").await;
    for i in 0..60 {
        let credential = [&key, &second_key, &token][i % 3];
        assert_eq!(me(app, credential).await.status, 200, "request {i}");
    }
    for credential in [&key, &second_key, &token] {
        me(app, credential).await.assert_error(429, "RATE_LIMITED");
    }
    // Another account is not throttled by this one's traffic.
    let other = app.create_user("other@example.com", Role::Agent).await;
    let (_, other_key) = key_for(app, &other, "requests:read").await;
    let (status, _, remaining, _, _) =
        limits(&app.client, &app.address, "/v1/me", Some(&other_key)).await;
    assert_eq!((status, remaining), (200, 59));
}

#[tokio::test]
async fn unauthenticated_and_failed_requests_are_limited_per_address() {
    let app = spawn_app_custom(|s| s.auth_failures_per_min = 10, |_| {}).await;
    let from_1 = client_from("127.0.0.1");
    let from_2 = client_from("127.0.0.2");
    let bogus = "dzd_not-a-real-key-0000000000000000000000000000000000";
    for i in 0..10 {
        let bearer = if i % 2 == 0 { None } else { Some(bogus) };
        let (status, limit, remaining, _, _) =
            limits(&from_1, &app.address, "/v1/me", bearer).await;
        assert_eq!((status, limit, remaining), (401, 10, 9 - i), "{i}");
    }
    let (status, _, _, _, retry) = limits(&from_1, &app.address, "/v1/me", Some(bogus)).await;
    assert_eq!(status, 429, "guessing keys is slow");
    assert!(retry.is_some());
    // Another address has its own budget; a valid credential its account's.
    let (status, _, remaining, _, _) = limits(&from_2, &app.address, "/v1/me", None).await;
    assert_eq!((status, remaining), (401, 9));
    let user = app.create_user("ann@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    let (status, limit, _, _, _) = limits(&from_1, &app.address, "/v1/me", Some(&key)).await;
    assert_eq!((status, limit), (200, 60));
}

#[tokio::test]
async fn plans_are_set_through_the_api_and_the_cli_and_shown() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, admin_key) = key_for(app, &flow.user_id, "admin").await;
    let ann = app.create_user("ann@example.com", Role::Agent).await;
    let (_, ann_key) = key_for(app, &ann, "requests:read users:write").await;
    let path = format!("/v1/users/{ann}");
    let shown = api(app, Method::GET, &path, Some(&admin_key), None).await;
    assert_eq!(shown.data(200)["plan"], "standard");
    assert_eq!(shown.data(200)["rate_limit"], 60);

    // Changing a plan needs admin (users:write alone is not enough).
    api(
        app,
        Method::PATCH,
        &path,
        Some(&ann_key),
        Some(json!({"plan": "professional"})),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    for (body, field) in [
        (json!({"plan": "enterprise"}), "rate_limit"),
        (json!({"plan": "gold"}), "plan"),
        (json!({"rate_limit": 500}), "plan"),
        (json!({"plan": "standard", "rate_limit": 500}), "rate_limit"),
        (json!({"plan": "enterprise", "rate_limit": 0}), "rate_limit"),
    ] {
        let reply = api(
            app,
            Method::PATCH,
            &path,
            Some(&admin_key),
            Some(body.clone()),
        )
        .await;
        reply.assert_error(400, "BAD_REQUEST");
        let m = reply.body["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(field), "{body}: {m}");
    }
    let set = api(
        app,
        Method::PATCH,
        &path,
        Some(&admin_key),
        Some(json!({"plan": "professional"})),
    )
    .await;
    assert_eq!(set.data(200)["plan"], "professional");
    let (_, limit, _, _, _) = limits(&app.client, &app.address, "/v1/me", Some(&ann_key)).await;
    assert_eq!(limit, 300);
    // /v1/me keeps exactly the seed's four fields.
    let me_reply = me(app, &ann_key).await;
    let mut fields: Vec<String> = me_reply
        .data(200)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, ["email", "id", "role", "scopes"]);

    // The CLI, on a running server: enterprise with a custom limit.
    let url = app.database_url();
    let out = crate::cli::run(
        &[
            "user",
            "set-plan",
            "--email",
            "ann@example.com",
            "--plan",
            "enterprise",
            "--rate-limit",
            "5000",
        ],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["rate_limit"], 5000);
    app.settle_revocations().await;
    let (_, limit, _, _, _) = limits(&app.client, &app.address, "/v1/me", Some(&ann_key)).await;
    assert_eq!(limit, 5000);
    // Enterprise without a limit is refused (exit 2), and so is a limit on
    // a fixed plan.
    for args in [
        vec![
            "user",
            "set-plan",
            "--email",
            "ann@example.com",
            "--plan",
            "enterprise",
        ],
        vec![
            "user",
            "set-plan",
            "--email",
            "ann@example.com",
            "--plan",
            "standard",
            "--rate-limit",
            "9",
        ],
    ] {
        let out = crate::cli::run(&args, &[("DATABASE_URL", &url)], None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn a_clients_own_plan_limits_its_client_credentials_tokens() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (id, secret) = crate::introspect::service(&flow, false).await;
    let token = |app: &TestApp| {
        let (id, secret) = (id.clone(), secret.clone());
        let (client, url) = (app.client.clone(), app.url("/oauth/token"));
        async move {
            let body: Value = client
                .post(url)
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let t = token(app).await;
    let (status, limit, _, _, _) = limits(&app.client, &app.address, "/v1/me", Some(&t)).await;
    assert_eq!((status, limit), (200, 60));
    let url = app.database_url();
    let out = crate::cli::run(
        &["client", "set-plan", "--id", &id, "--plan", "professional"],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.settle_revocations().await;
    let (_, limit, _, _, _) = limits(&app.client, &app.address, "/v1/me", Some(&t)).await;
    assert_eq!(limit, 300);
}

async fn redis_app(url: &str, prefix: &str) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_app_custom(
        move |s| {
            s.redis_url = Some(RedisUrl::parse(&url).unwrap());
            s.redis_prefix = prefix;
        },
        |_| {},
    )
    .await
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_budget() {
    if !redis_or_skip(&test_redis_url(), "127.0.0.1:6379 or TEST_REDIS_URL") {
        return;
    }
    let prefix = format!("dzdesk_test_{}:", dzdesk_auth::tokens::new_id(""));
    let app = redis_app(&test_redis_url(), &prefix).await;
    let (second, handle) = spawn_second_instance(&app).await;
    let user = app.create_user("ann@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    let client = crate::helpers::client_builder().build().unwrap();
    for i in 0..60 {
        let base = if i % 2 == 0 { &app.address } else { &second };
        let (status, limit, remaining, _, _) = limits(&client, base, "/v1/me", Some(&key)).await;
        assert_eq!((status, limit, remaining), (200, 60, 59 - i as u32), "{i}");
    }
    for base in [&app.address, &second] {
        let (status, _, remaining, _, _) = limits(&client, base, "/v1/me", Some(&key)).await;
        assert_eq!((status, remaining), (429, 0), "{base}");
    }
    let ready = readiness(&app).await;
    assert_eq!(ready["status"], "ready");
    handle.stop(false).await;
}

/// The budget is counted atomically in Redis: 150 requests at once on one
/// account, over both instances, let exactly the limit through.
#[actix_web::test]
async fn parallel_requests_on_two_instances_get_exactly_the_limit_through() {
    if !redis_or_skip(&test_redis_url(), "127.0.0.1:6379 or TEST_REDIS_URL") {
        return;
    }
    let prefix = format!("dzdesk_test_{}:", dzdesk_auth::tokens::new_id(""));
    let url = test_redis_url();
    // A debug build answering 150 requests at once on a busy test machine
    // can take longer than 50 ms to read Redis's answer: this test is about
    // atomicity, not about slowness (the fault test below is).
    let app = spawn_app_custom(
        move |s| {
            s.redis_url = Some(RedisUrl::parse(&url).unwrap());
            s.redis_prefix = prefix;
            s.redis_timeout = Duration::from_secs(5);
        },
        |_| {},
    )
    .await;
    let (second, handle) = spawn_second_instance(&app).await;
    let user = app.create_user("ann@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    let client = crate::helpers::client_builder().build().unwrap();
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..150).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        let (client, key) = (client.clone(), key.clone());
        async move { limits(&client, &base, "/v1/me", Some(&key)).await }
    }))
    .await;
    let ok: Vec<u32> = answers.iter().filter(|a| a.0 == 200).map(|a| a.2).collect();
    // GCRA gives one request back a second (60 a minute): a slow run may
    // see that many more, never others.
    let refilled = started.elapsed().as_secs() as usize;
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        (60..=60 + refilled).contains(&ok.len()),
        "{} ok, {refilled} s: {codes:?}",
        ok.len()
    );
    assert_eq!(ok.len() + codes.iter().filter(|c| **c == 429).count(), 150);
    if ok.len() == 60 {
        // Each allowed request was told a different Remaining: 59 down to 0.
        let mut remaining = ok.clone();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..60).collect::<Vec<u32>>());
    }
    handle.stop(false).await;
}

#[tokio::test]
async fn colleagues_signing_in_at_once_lock_nothing_in_redis() {
    if !redis_or_skip(&test_redis_url(), "127.0.0.1:6379 or TEST_REDIS_URL") {
        return;
    }
    let prefix = format!("dzdesk_test_{}:", dzdesk_auth::tokens::new_id(""));
    let app = redis_app(&test_redis_url(), &prefix).await;
    crate::bruteforce::colleagues_signing_in_at_once_lock_nothing(&app).await;
    let ready = readiness(&app).await;
    assert_eq!(ready["status"], "ready", "decided in Redis, not in process");
}

/// The body of `/readyz` (200 whether ready or degraded).
async fn readiness(app: &TestApp) -> Value {
    let resp = crate::helpers::http_get(app.url("/readyz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A redis-server of this test's own on a free port, stopped on drop.
pub(crate) struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    pub(crate) fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// A fresh, empty redis-server on `port` (one killed before it).
    pub(crate) fn start_on(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: the process is gone, its connections reset.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP (`pause`) or SIGCONT: a Redis that holds its connections
    /// open and answers nothing, like one stuck in a fork or swapping.
    fn signal(&self, pause: bool) {
        let status = Command::new("kill")
            .args([
                if pause { "-STOP" } else { "-CONT" },
                &self.child.id().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn when_redis_goes_away_limits_fall_back_to_the_process_and_readyz_says_degraded() {
    if !redis_or_skip("", "server") {
        return;
    }
    let mut redis = OwnRedis::start();
    let app = redis_app(&redis.url(), "dzdesk_test:").await;
    let user = app.create_user("ann@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    for _ in 0..5 {
        assert_eq!(me(&app, &key).await.status, 200);
    }
    redis.stop();
    // Never a 500; the budget is counted in process from here.
    let started = std::time::Instant::now();
    for i in 0..60 {
        let (status, limit, _, _, _) =
            limits(&app.client, &app.address, "/v1/me", Some(&key)).await;
        assert_eq!((status, limit), (200, 60), "{i}");
    }
    let (status, _, _, _, _) = limits(&app.client, &app.address, "/v1/me", Some(&key)).await;
    assert_eq!(status, 429, "the in-process budget still limits");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead Redis must not cost every request its timeout: {:?}",
        started.elapsed()
    );
    let ready = readiness(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_left_after_three_late_answers_and_used_again_after() {
    if !redis_or_skip("", "server") {
        return;
    }
    let redis = OwnRedis::start();
    let app = redis_app(&redis.url(), "dzdesk_test:").await;
    let user = app.create_user("ann@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    assert_eq!(me(&app, &key).await.status, 200);
    redis.signal(true);
    let started = std::time::Instant::now();
    for i in 0..20 {
        let (status, limit, _, _, _) =
            limits(&app.client, &app.address, "/v1/me", Some(&key)).await;
        assert_eq!((status, limit), (200, 60), "{i}");
    }
    // Three answers waited 50 ms each; the rest were decided in process at
    // once.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ready = readiness(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    redis.signal(false);
    // Retried once a second: back to shared budgets without a restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        me(&app, &key).await;
        let ready = readiness(&app).await;
        if ready["status"] == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Locks counted in process while Redis was away still hold once it
/// answers again (else each stall would give every instance a fresh five
/// guesses).
#[tokio::test]
async fn a_lock_counted_while_redis_was_away_holds_when_it_is_back() {
    use crate::bruteforce::{browser_from, outcome, sign_in};
    if !redis_or_skip("", "server") {
        return;
    }
    let redis = OwnRedis::start();
    let app = redis_app(&redis.url(), "dzdesk_test:").await;
    app.create_user("ann@example.com", Role::Agent).await;
    let here = browser_from("127.0.0.1");
    let wrong = "not the password at all";
    assert_eq!(
        outcome(sign_in(&app, &here, "ann@example.com", wrong, None).await).await,
        "wrong"
    );
    redis.signal(true);
    for i in 0..5 {
        assert_eq!(
            outcome(sign_in(&app, &here, "ann@example.com", wrong, None).await).await,
            "wrong",
            "{i}"
        );
    }
    assert_eq!(
        outcome(sign_in(&app, &here, "ann@example.com", wrong, None).await).await,
        "locked"
    );
    redis.signal(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        outcome(
            sign_in(
                &app,
                &here,
                "ann@example.com",
                crate::helpers::PASSWORD,
                None
            )
            .await
        )
        .await,
        "locked",
        "Redis saw one failure; this process saw the lock"
    );
    // The refusal asked no one; a /v1 request tries Redis again.
    crate::helpers::http_get(app.url("/v1/me")).await.unwrap();
    let ready = readiness(&app).await;
    assert_eq!(ready["status"], "ready", "Redis is used again");
}

#[tokio::test]
async fn two_instances_on_one_redis_share_the_sign_in_throttle() {
    if !redis_or_skip(&test_redis_url(), "127.0.0.1:6379 or TEST_REDIS_URL") {
        return;
    }
    let prefix = format!("dzdesk_test_{}:", dzdesk_auth::tokens::new_id(""));
    let app = redis_app(&test_redis_url(), &prefix).await;
    let (second, handle) = spawn_second_instance(&app).await;
    app.create_user("ann@example.com", Role::Agent).await;
    let sign_in = |base: String, password: &'static str| async move {
        let browser = crate::helpers::client_builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let html = browser
            .get(format!("{base}/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let token = crate::helpers::hidden_input(&html, "csrf_token").unwrap();
        browser
            .post(format!("{base}/login"))
            .form(&[
                ("email", "ann@example.com"),
                ("password", password),
                ("next", "/"),
                ("csrf_token", token.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // Five wrong guesses spread over both instances ...
    for i in 0..5 {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        assert_eq!(sign_in(base, "not the password at all").await, 200, "{i}");
    }
    // ... lock the pair on both.
    for base in [app.address.clone(), second.clone()] {
        assert_eq!(sign_in(base, crate::helpers::PASSWORD).await, 429);
    }
    handle.stop(false).await;
}
