//! The API usage log (seed: "Monitor usage"): what is recorded for `/v1`
//! requests made with an API key, when it is written (batches within about
//! a second, and at shutdown), `GET /v1/api-keys/{id}/usage`, the per-key
//! page of Settings > API, and retention.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use dzdesk_auth::api::usage_log::SweepKeys;
use dzdesk_auth::db::models::{NewUsageRow, UsageRow};
use dzdesk_auth::db::schema::api_key_usage;
use dzdesk_auth::domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_custom, TestApp, PASSWORD};
use crate::v1_keys::{api, api_with, client_from, key_for, me, user_with_key};

async fn rows_of(app: &TestApp, key_id: &str) -> Vec<UsageRow> {
    let key_id = key_id.to_owned();
    app.with_conn(move |conn| {
        api_key_usage::table
            .filter(api_key_usage::key_id.eq(key_id))
            .order(api_key_usage::id.asc())
            .select(UsageRow::as_select())
            .load(conn)
            .unwrap()
    })
    .await
}

/// Waits (at most `within`) until `key_id`'s rows count `n` requests
/// (identical ones within a second share a row); returns them.
async fn wait_rows(app: &TestApp, key_id: &str, n: usize, within: Duration) -> Vec<UsageRow> {
    let start = Instant::now();
    loop {
        let rows = rows_of(app, key_id).await;
        let requests: i32 = rows.iter().map(|r| r.requests).sum();
        if requests as usize >= n {
            return rows;
        }
        assert!(
            start.elapsed() < within,
            "{requests} of {n} requests after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row(key_id: &str, at: NaiveDateTime, path: &str, status: i32) -> NewUsageRow {
    NewUsageRow {
        key_id: key_id.to_owned(),
        at,
        method: "GET".into(),
        path: path.into(),
        status,
        client_ip: Some("203.0.113.7".into()),
        duration_ms: 3,
        requests: 1,
    }
}

async fn insert(app: &TestApp, rows: Vec<NewUsageRow>) {
    app.with_conn(move |conn| {
        for chunk in rows.chunks(1000) {
            UsageRow::insert_batch(conn, chunk).unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn requests_made_with_a_key_are_logged_in_a_batch_within_a_second_without_query_strings() {
    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    let sent = Utc::now().naive_utc();
    let ok = api(
        &app,
        Method::GET,
        "/v1/me?token=s3cret&x=1",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(ok.status, 200);
    api(&app, Method::GET, "/v1/users", Some(&key), None)
        .await
        .assert_error(403, "FORBIDDEN");
    api(&app, Method::GET, "/v1/no-such-thing", Some(&key), None)
        .await
        .assert_error(404, "NOT_FOUND");
    api(&app, Method::PUT, "/v1/me", Some(&key), None)
        .await
        .assert_error(404, "NOT_FOUND");
    // No valid key, no owner: not logged.
    api(&app, Method::GET, "/v1/me", Some("dzd_nope"), None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    let done = Instant::now();

    let rows = wait_rows(&app, &key_id, 4, Duration::from_millis(2500)).await;
    assert!(
        done.elapsed() < Duration::from_millis(2500),
        "written within about a second"
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    let got: Vec<(&str, &str, i32)> = rows
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/v1/me", 200),
            ("GET", "/v1/users", 403),
            ("GET", "/v1/no-such-thing", 404),
            ("PUT", "/v1/me", 404),
        ]
    );
    for r in &rows {
        assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
        assert!(r.duration_ms >= 0 && r.duration_ms < 5_000, "{r:?}");
        assert!(r.at >= sent - chrono::Duration::seconds(1) && r.at <= Utc::now().naive_utc());
        assert!(!format!("{r:?}").contains("s3cret"));
    }
    let total: i64 = app
        .with_conn(|conn| api_key_usage::table.count().get_result(conn).unwrap())
        .await;
    assert_eq!(total, 4, "the invalid key left no row");
}

/// Under steady load one request repeated takes a row per second (and
/// writer pass), not a row per database round trip: the writer writes what
/// was waiting and leaves what comes meanwhile for its next pass (it used
/// to drain the buffer to empty, which under load it never is).
#[tokio::test]
async fn a_steady_stream_of_one_request_takes_a_row_per_second_and_pass() {
    // No plan limit: a stream of 200s.
    let app = spawn_app_custom(|s| s.rate_limits = false, |_| {}).await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    let started = Instant::now();
    let sent = futures_util::future::join_all((0..8).map(|_| async {
        let mut n = 0usize;
        while started.elapsed() < Duration::from_millis(2500) {
            assert_eq!(me(&app, &key).await.status, 200);
            n += 1;
        }
        n
    }))
    .await
    .into_iter()
    .sum::<usize>();
    let spent = started.elapsed();
    let rows = wait_rows(&app, &key_id, sent, Duration::from_secs(5)).await;
    assert_eq!(
        rows.iter().map(|r| r.requests as usize).sum::<usize>(),
        sent,
        "every request counted once"
    );
    // Per second the requests fell in, at most three rows: one taken by
    // the pass whose tick fell in that second, one by the next pass, and
    // one more for requests begun in it that finished after that pass.
    // (Draining to empty wrote a row per database round trip.)
    assert!(sent > 100, "a stream: {sent} requests");
    let mut per_second = std::collections::BTreeMap::<i64, usize>::new();
    for r in &rows {
        *per_second.entry(r.at.and_utc().timestamp()).or_default() += 1;
    }
    // A request stalled past a second boundary can add one more.
    let slowest = rows.iter().map(|r| r.duration_ms).max().unwrap_or(0);
    let bound = 3 + usize::try_from(slowest / 1000).unwrap_or(0);
    assert!(
        per_second.values().all(|&n| n <= bound),
        "rows per second {per_second:?} for {sent} requests in {spent:?}"
    );
}

/// A pass of the writer takes batches while they come full, and what
/// requests add while its short batch is written waits for the next pass
/// (under load the queue is never empty: draining it to empty wrote a tiny
/// batch per round trip). The short batch is held on a database lock while
/// requests come, so the test does not depend on timing.
#[tokio::test]
async fn a_writer_pass_writes_what_was_waiting_and_leaves_what_comes_meanwhile() {
    use dzdesk_auth::api::usage_log::{UsageLog, Use, MAX_BATCH};
    use dzdesk_auth::db::{Backend, Database};
    use dzdesk_auth::maintenance::{write_usage_log, Drain};
    use std::sync::Arc;

    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, _) = key_for(&app, &user_id, "requests:read").await;
    let log = Arc::new(UsageLog::new(true));
    let now = Utc::now().naive_utc();
    let record = |prefix: &str, n: usize| {
        for i in 0..n {
            let path = format!("/v1/{prefix}{i}");
            log.record(Use::new(&key_id, now, "GET", &path, 200, None, 1));
        }
    };
    // A full batch, then a short one: one pass.
    record("a", MAX_BATCH + 10);
    let written = write_usage_log(&app.db, &log, Drain::ShortBatch).await;
    assert_eq!(written, MAX_BATCH + 10);
    assert!(log.is_empty());

    record("b", 20);
    // Another connection holds the table's write lock until told.
    let url = app.settings.database_url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = Database::establish(&url).unwrap();
        let lock: &[&str] = match url.backend() {
            Backend::Sqlite => &["BEGIN IMMEDIATE"],
            Backend::Postgres => &["BEGIN", "LOCK TABLE api_key_usage IN SHARE MODE"],
        };
        for sql in lock {
            diesel::sql_query(*sql).execute(&mut conn).unwrap();
        }
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        diesel::sql_query("COMMIT").execute(&mut conn).unwrap();
    });
    locked_rx.recv().unwrap();
    let pass = tokio::spawn({
        let (db, log) = (app.db.clone(), log.clone());
        async move { write_usage_log(&db, &log, Drain::ShortBatch).await }
    });
    // The pass has taken the 20 and waits for the lock: 5 requests come.
    let start = Instant::now();
    while !log.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the pass took nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    record("c", 5);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(pass.await.unwrap(), 20, "the short batch, and no more");
    assert_eq!(log.len(), 5, "what came meanwhile waits for the next pass");
    // At shutdown everything goes.
    assert_eq!(write_usage_log(&app.db, &log, Drain::Empty).await, 5);
    assert!(log.is_empty());
    let requests: i32 = rows_of(&app, &key_id)
        .await
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(requests as usize, MAX_BATCH + 10 + 20 + 5);
}

/// The writer does not wait for its tick once enough distinct requests
/// wait (usage_log::WAKE_AT): here its tick is an hour.
#[tokio::test]
async fn many_distinct_requests_wake_the_writer_before_its_tick() {
    use dzdesk_auth::api::usage_log::WAKE_AT;
    let app = spawn_app_custom(
        |s| {
            s.rate_limits = false;
            s.usage_log_flush = Duration::from_secs(3600);
        },
        |_| {},
    )
    .await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    let n = WAKE_AT + 10;
    let paths: Vec<String> = (0..n).map(|i| format!("/v1/nothing-{i}")).collect();
    for chunk in paths.chunks(16) {
        futures_util::future::join_all(chunk.iter().map(|path| async {
            api(&app, Method::GET, path, Some(&key), None)
                .await
                .assert_error(404, "NOT_FOUND");
        }))
        .await;
    }
    // At least the WAKE_AT that woke it, long before the hourly tick.
    let rows = wait_rows(&app, &key_id, WAKE_AT, Duration::from_secs(10)).await;
    assert!(rows.len() >= WAKE_AT, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.status == 404 && r.requests == 1));
}

#[tokio::test]
async fn a_429_and_the_allowlists_403_are_logged_with_the_address_the_service_resolved() {
    let app = spawn_app_custom(
        |s| {
            s.trusted_proxies = dzdesk_auth::domain::TrustedProxies::parse("127.0.0.1").unwrap();
        },
        |_| {},
    )
    .await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    // Through the trusted proxy: the forwarded address is the client.
    let forwarded = api_with(
        &app.client,
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&key),
        None,
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await;
    assert_eq!(forwarded.status, 200);
    // The standard plan: 60 a minute, then 429.
    let mut limited = 0;
    for _ in 0..61 {
        if me(&app, &key).await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 1);
    // The allowlist refuses another address: 403, logged.
    let uid = user_id.clone();
    app.with_conn(move |conn| {
        dzdesk_auth::db::models::User::set_ip_allowlist(
            conn,
            &uid,
            &dzdesk_auth::domain::IpAllowlist::parse_entries(&["10.0.0.0/8"])
                .unwrap()
                .to_stored(),
            Utc::now().naive_utc(),
        )
        .unwrap()
    })
    .await;
    let refused = api_with(
        &client_from("127.0.0.2"),
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&key),
        None,
        &[],
    )
    .await;
    // Counted against the address (a fresh budget), not the account.
    refused.assert_error(403, "FORBIDDEN");

    let rows = wait_rows(&app, &key_id, 63, Duration::from_secs(3)).await;
    assert_eq!(rows[0].client_ip.as_deref(), Some("198.51.100.9"));
    assert!(rows.iter().any(|r| r.status == 429));
    // Every request counted once: the 61 identical ones coalesced, per
    // second and status, into rows that count them.
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i32>(), 63);
    assert!(rows.len() < 63, "identical requests coalesced: {rows:?}");
    let last = rows.last().unwrap();
    assert_eq!(last.status, 403);
    assert_eq!(last.client_ip.as_deref(), Some("127.0.0.2"));
}

#[tokio::test]
async fn the_usage_api_pages_newest_first_and_filters() {
    let app = spawn_app().await;
    let (user_id, reader) =
        user_with_key(&app, "ann@example.com", Role::Agent, "requests:read").await;
    let (key_id, _) = key_for(&app, &user_id, "requests:read").await;
    let (_, eve) = user_with_key(&app, "eve@example.com", Role::Admin, "admin").await;
    let base = Utc::now().naive_utc() - chrono::Duration::hours(5);
    let statuses = [200, 404, 429, 500, 200, 503, 401];
    insert(
        &app,
        statuses
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                row(
                    &key_id,
                    base + chrono::Duration::minutes(i as i64 * 30),
                    &format!("/v1/r{i}"),
                    s,
                )
            })
            .collect(),
    )
    .await;
    let path = |q: &str| format!("/v1/api-keys/{key_id}/usage{q}");

    // Newest first, two at a time, to the end.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let reply = api(&app, Method::GET, &path(&q), Some(&reader), None).await;
        let data = reply.data(200).clone();
        for u in data["usage"].as_array().unwrap() {
            seen.push(u["path"].as_str().unwrap().to_owned());
        }
        match data["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (0..7).rev().map(|i| format!("/v1/r{i}")).collect();
    assert_eq!(seen, want);

    let all = api(&app, Method::GET, &path(""), Some(&reader), None).await;
    let first = &all.data(200)["usage"][0];
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "at",
            "client_ip",
            "duration_ms",
            "method",
            "path",
            "requests",
            "status"
        ]
    );
    assert_eq!(first["client_ip"], "203.0.113.7");
    assert_eq!(first["requests"], 1);

    let statuses_of = |v: &Value| -> Vec<i64> {
        v["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["status"].as_i64().unwrap())
            .collect()
    };
    for (q, want) in [
        ("?status=4xx", vec![401, 429, 404]),
        ("?status=5xx", vec![503, 500]),
        ("?status=429", vec![429]),
    ] {
        let reply = api(&app, Method::GET, &path(q), Some(&reader), None).await;
        assert_eq!(statuses_of(reply.data(200)), want, "{q}");
    }
    // since: at or after (the 500 is exactly at it); combined with status.
    let since = dzdesk_auth::api::timestamp(base + chrono::Duration::minutes(90));
    let reply = api(
        &app,
        Method::GET,
        &path(&format!("?since={since}&status=5xx")),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(statuses_of(reply.data(200)), vec![503, 500]);
    let reply = api(
        &app,
        Method::GET,
        &path(&format!("?since={since}")),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(reply.data(200)["usage"].as_array().unwrap().len(), 4);

    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?cursor=%%%", "cursor"),
        ("?cursor=bm9wZQ", "cursor"),
        ("?status=3xx", "status"),
        ("?since=yesterday", "since"),
        ("?since=2026-13-01T00:00:00Z", "since"),
    ] {
        let reply = api(&app, Method::GET, &path(q), Some(&reader), None).await;
        reply.assert_error(400, "BAD_REQUEST");
        let m = reply.body["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(field), "{q}: {m}");
    }
    // Another user's key, an unknown one: 404 (admin or not).
    api(&app, Method::GET, &path(""), Some(&eve), None)
        .await
        .assert_error(404, "NOT_FOUND");
    api(
        &app,
        Method::GET,
        "/v1/api-keys/key_unknown/usage",
        Some(&reader),
        None,
    )
    .await
    .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn the_usage_page_shows_the_last_requests_and_an_hourly_svg_chart() {
    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, _) = key_for(&app, &user_id, "requests:read").await;
    let other = app.create_user("eve@example.com", Role::Agent).await;
    let (other_key, _) = key_for(&app, &other, "requests:read").await;
    let now = Utc::now().naive_utc();
    let mut rows: Vec<NewUsageRow> = (0..120)
        .map(|i| {
            row(
                &key_id,
                now - chrono::Duration::minutes(i),
                &format!("/v1/p{i}"),
                200,
            )
        })
        .collect();
    rows.push(row(
        &key_id,
        now - chrono::Duration::hours(30),
        "/v1/old",
        500,
    ));
    // The newest entry stands for five identical requests.
    rows[0].requests = 5;
    insert(&app, rows).await;

    let path = format!("/settings/api/keys/{key_id}/usage");
    let resp = app.get(&path).await;
    assert_eq!(resp.status(), 303, "signed out: sign in first");
    assert_eq!(
        app.login("ann@example.com", PASSWORD, "/").await.status(),
        303
    );
    let resp = app.get(&path).await;
    assert_eq!(resp.status(), 200);
    crate::helpers::assert_security_headers(&resp);
    let html = resp.text().await.unwrap();
    // The table: the last 100 requests, newest first.
    assert_eq!(
        html.matches(r#"<tr><td data-label="Time">"#).count(),
        100,
        "{html}"
    );
    assert!(html.contains("<code>/v1/p0</code>") && html.contains("<code>/v1/p99</code>"));
    assert!(!html.contains("<code>/v1/p100</code>"));
    assert!(html.find("/v1/p0<").unwrap() < html.find("/v1/p1<").unwrap());
    assert!(html.contains(r#"<th scope="col">Status</th>"#));
    // The chart: inline SVG, named, with text labels; no script anywhere.
    assert!(html.contains(r#"<svg id="hourly-chart" role="img""#));
    assert!(
        html.contains("<title id=\"chart-title\">Requests per hour over the last 24 hours</title>")
    );
    assert!(
        html.contains("124 requests in total"),
        "every request of an entry counts; the 30-hour-old one is outside"
    );
    assert!(html.contains(r#"<th scope="col">Requests</th>"#));
    assert!(
        html.contains(r#"<code>/v1/p0</code></td><td data-label="Status">200</td><td data-label="Client IP">203.0.113.7</td><td data-label="Duration (ms)">3</td><td data-label="Requests">5</td>"#),
        "{html}"
    );
    assert_eq!(html.matches("<rect ").count(), 24);
    assert!(html.matches("<text ").count() >= 5);
    assert!(!html.to_lowercase().contains("<script"));
    // Nothing the CSP (default-src 'self') would block: no external
    // source, no inline style attribute.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(!html.contains(" style="));
    // Another user's key: not found.
    let resp = app
        .get(&format!("/settings/api/keys/{other_key}/usage"))
        .await;
    assert_eq!(resp.status(), 404);
}

/// The retention sweep on a bare database (no service running: its own
/// hourly sweep, which runs at start, would race the assertions).
#[tokio::test]
async fn the_sweep_keeps_30_days_and_at_most_10000_rows_per_key() {
    let test_db = crate::helpers::TestDatabase::new();
    let db = dzdesk_auth::db::Database::connect(
        &dzdesk_auth::db::DatabaseUrl::parse(&test_db.url).unwrap(),
        2,
    )
    .unwrap();
    db.migrate().unwrap();
    tokio::task::spawn_blocking(move || {
        let conn = &mut db.conn().unwrap();
        let rows_of = |conn: &mut dzdesk_auth::db::AnyConnection, key: &str| -> Vec<UsageRow> {
            api_key_usage::table
                .filter(api_key_usage::key_id.eq(key.to_owned()))
                .order(api_key_usage::id.asc())
                .select(UsageRow::as_select())
                .load(conn)
                .unwrap()
        };
        // To the microsecond, as PostgreSQL keeps it.
        let now = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
            .unwrap()
            .naive_utc();
        let busy: Vec<NewUsageRow> = (0..10_005)
            .map(|i| {
                row(
                    "key_busy",
                    now - chrono::Duration::seconds(i),
                    "/v1/me",
                    200,
                )
            })
            .collect();
        for chunk in busy.chunks(1000) {
            assert_eq!(UsageRow::insert_batch(conn, chunk).unwrap(), chunk.len());
        }
        let old = [
            row("key_old", now - chrono::Duration::days(31), "/v1/a", 200),
            row(
                "key_old",
                now - chrono::Duration::days(30) - chrono::Duration::seconds(5),
                "/v1/b",
                200,
            ),
            row("key_old", now - chrono::Duration::days(29), "/v1/c", 200),
            row("key_old", now, "/v1/d", 200),
        ];
        UsageRow::insert_batch(conn, &old).unwrap();

        let swept = dzdesk_auth::maintenance::sweep(conn, now).unwrap();
        assert_eq!(swept.usage_log, 5 + 2);
        let busy = rows_of(conn, "key_busy");
        assert_eq!(busy.len(), 10_000);
        // The newest kept: the oldest left is 9,999 seconds old.
        let oldest = busy.iter().map(|r| r.at).min().unwrap();
        assert_eq!(oldest, now - chrono::Duration::seconds(9_999));
        let old: Vec<String> = rows_of(conn, "key_old")
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(old, ["/v1/c", "/v1/d"]);
        // Nothing more to do.
        assert_eq!(
            dzdesk_auth::maintenance::sweep(conn, now)
                .unwrap()
                .usage_log,
            0
        );
        // The hourly sweep holds to the cap only the keys written since the
        // last one: another key over the cap is left for its turn.
        let more: Vec<NewUsageRow> = ["key_busy", "key_other"]
            .iter()
            .flat_map(|k| {
                (1..=3).map(move |i| row(k, now + chrono::Duration::seconds(i), "/v1/me", 200))
            })
            .collect();
        UsageRow::insert_batch(conn, &more).unwrap();
        let other: Vec<NewUsageRow> = (0..10_000)
            .map(|i| {
                row(
                    "key_other",
                    now - chrono::Duration::seconds(i),
                    "/v1/me",
                    200,
                )
            })
            .collect();
        for chunk in other.chunks(1000) {
            UsageRow::insert_batch(conn, chunk).unwrap();
        }
        let only_busy = SweepKeys::Only(vec!["key_busy".into()]);
        let swept = dzdesk_auth::maintenance::sweep_keys(conn, now, &only_busy).unwrap();
        assert_eq!(swept.usage_log, 3);
        assert_eq!(rows_of(conn, "key_busy").len(), 10_000);
        assert_eq!(rows_of(conn, "key_other").len(), 10_003);
        let swept = dzdesk_auth::maintenance::sweep_keys(conn, now, &SweepKeys::All).unwrap();
        assert_eq!(swept.usage_log, 3);
        assert_eq!(rows_of(conn, "key_other").len(), 10_000);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn what_is_buffered_is_written_at_shutdown() {
    let mut app = spawn_app_custom(|s| s.usage_log_flush = Duration::from_secs(3600), |_| {}).await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    for _ in 0..3 {
        assert_eq!(me(&app, &key).await.status, 200);
    }
    // The hourly writer wrote at start (nothing) and not since.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rows_of(&app, &key_id).await.is_empty());
    app.stop().await;
    let rows = rows_of(&app, &key_id).await;
    // Identical requests: one entry per second they fell in, counting them.
    assert!(!rows.is_empty() && rows.len() <= 3, "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i32>(), 3);
    assert!(rows.iter().all(|r| r.status == 200 && r.path == "/v1/me"));
}

#[tokio::test]
async fn with_the_log_off_nothing_is_recorded() {
    let app = spawn_app_custom(|s| s.usage_log = false, |_| {}).await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (key_id, key) = key_for(&app, &user_id, "requests:read").await;
    assert_eq!(me(&app, &key).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rows_of(&app, &key_id).await.is_empty());
    // The API still answers (an empty log).
    let reply = api(
        &app,
        Method::GET,
        &format!("/v1/api-keys/{key_id}/usage"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(reply.data(200), &json!({"usage": [], "next_cursor": null}));
}
