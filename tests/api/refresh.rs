//! POST /oauth/token with grant_type=refresh_token (RFC 6749 6, RFC 9700
//! 4.14): rotation, reuse detection, scope narrowing, lifetime, concurrency.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use dzdesk_auth::db::models::RefreshTokenRow;
use dzdesk_auth::domain::Role;
use dzdesk_auth::tokens;
use serde_json::Value;

use crate::helpers::spawn_app_custom;
use crate::metrics::Scrape;
use crate::oauth_flow::{assert_exactly_one_success, assert_token_error, Flow};

const SCOPE: &str = "requests:read requests:write";

fn refresh_of(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// The grant id an access token carries (its signature is checked elsewhere).
fn grant_of(access_token: &str) -> String {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["grant_id"].as_str().unwrap().to_owned()
}

async fn grant_revoked(flow: &Flow, grant: &str) -> Option<chrono::NaiveDateTime> {
    let grant = grant.to_owned();
    flow.app
        .with_conn(move |conn| {
            dzdesk_auth::db::models::GrantRow::find(conn, &grant)
                .unwrap()
                .unwrap()
                .revoked_at
        })
        .await
}

/// `token` presented by a new client of its own (with the same grants).
async fn refresh_by_another_client(flow: &Flow, token: &str) -> reqwest::Response {
    let (other_id, other_secret) = flow
        .app
        .create_client(SCOPE, &["authorization_code", "refresh_token"], false)
        .await;
    flow.app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(&other_id, other_secret.as_deref())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn refresh_rotates_the_token_on_every_use() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let first = refresh_of(&flow.tokens(SCOPE).await);
    let resp = flow.refresh(&first, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    let second = refresh_of(&body);
    assert_ne!(first, second);
    assert!(second.starts_with("dzr_"));
    assert_eq!(body["scope"], SCOPE);
    assert!(body["access_token"].is_string());
    // The new one works in turn.
    assert_eq!(flow.refresh(&second, None).await.status(), 200);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let first = refresh_of(&flow.tokens(SCOPE).await);
    let body: Value = flow.refresh(&first, None).await.json().await.unwrap();
    let second = refresh_of(&body);
    let grant = grant_of(body["access_token"].as_str().unwrap());
    assert!(grant_revoked(&flow, &grant).await.is_none());

    assert_token_error(flow.refresh(&first, None).await, 400, "invalid_grant").await;
    // The legitimate holder's newer token died with the grant...
    assert_token_error(flow.refresh(&second, None).await, 400, "invalid_grant").await;
    // ...and so did the access tokens, which carry the grant's id.
    assert!(grant_revoked(&flow, &grant).await.is_some());
}

#[tokio::test]
async fn refresh_may_narrow_scope_but_never_widen_it() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens("requests:read").await);
    assert_token_error(
        flow.refresh(&token, Some("requests:read requests:write"))
            .await,
        400,
        "invalid_scope",
    )
    .await;
    // A refused request used nothing up: the rotation (one statement that
    // commits on its own on PostgreSQL) was undone, or rolled back with the
    // scope check (SQLite); no successor is left behind, and the token
    // still rotates once, then counts as used.
    let stored = flow
        .app
        .with_conn(|conn| {
            use diesel::prelude::*;
            dzdesk_auth::db::schema::refresh_tokens::table
                .select((
                    dzdesk_auth::db::schema::refresh_tokens::id,
                    dzdesk_auth::db::schema::refresh_tokens::used_at,
                ))
                .load::<(String, Option<chrono::NaiveDateTime>)>(conn)
                .unwrap()
        })
        .await;
    assert_eq!(
        stored,
        vec![(tokens::hash_secret(&token), None)],
        "one refresh token, unused"
    );
    assert_eq!(flow.refresh(&token, None).await.status(), 200);
    assert_token_error(flow.refresh(&token, None).await, 400, "invalid_grant").await;

    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens(SCOPE).await);
    let body: Value = flow
        .refresh(&token, Some("requests:read"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "requests:read");
    // The rotated token keeps the original scope (RFC 6749 6).
    let again: Value = flow
        .refresh(&refresh_of(&body), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["scope"], SCOPE);
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens(SCOPE).await);
    assert_token_error(
        refresh_by_another_client(&flow, &token).await,
        400,
        "invalid_grant",
    )
    .await;
    // Not a reuse of the owner's token: it still works.
    assert_eq!(flow.refresh(&token, None).await.status(), 200);
}

#[tokio::test]
async fn unknown_or_missing_refresh_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    assert_token_error(
        flow.refresh("dzr_unknown", None).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_token_error(
        flow.token(&[("grant_type", "refresh_token")]).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn refresh_token_lifetime_is_configurable_and_enforced() {
    let app = spawn_app_custom(|s| s.refresh_token_ttl_secs = 120, |_| {}).await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens(SCOPE).await);
    let hash = tokens::hash_secret(&token);
    let row = flow
        .app
        .with_conn(move |conn| RefreshTokenRow::find(conn, &hash).unwrap().unwrap())
        .await;
    assert_eq!((row.expires_at - row.created_at).num_seconds(), 120);

    let hash = tokens::hash_secret(&token);
    flow.app
        .with_conn(move |conn| {
            use dzdesk_auth::db::schema::refresh_tokens::dsl::*;
            let past = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
            diesel::update(refresh_tokens.find(hash))
                .set(expires_at.eq(past))
                .execute(conn)
                .unwrap()
        })
        .await;
    assert_token_error(flow.refresh(&token, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn disabled_user_cannot_refresh() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens(SCOPE).await);
    flow.app.set_disabled(&flow.email, true).await;
    assert_token_error(flow.refresh(&token, None).await, 400, "invalid_grant").await;
}

/// The rotation's own guard refuses a disabled user's token, whatever else
/// disabling does (here only the flag is set: no grant is revoked), and the
/// refusal revokes nothing.
#[tokio::test]
async fn a_disabled_flag_alone_refuses_the_refresh_and_revokes_nothing() {
    use dzdesk_auth::db::schema::users;
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = flow.tokens(SCOPE).await;
    let token = refresh_of(&body);
    let grant = grant_of(body["access_token"].as_str().unwrap());
    let user_id = flow.user_id.clone();
    let set = move |disabled: bool| {
        let user_id = user_id.clone();
        move |conn: &mut _| {
            diesel::update(users::table.find(user_id))
                .set(users::disabled.eq(disabled))
                .execute(conn)
                .unwrap()
        }
    };
    flow.app.with_conn(set(true)).await;
    assert_token_error(flow.refresh(&token, None).await, 400, "invalid_grant").await;
    assert!(grant_revoked(&flow, &grant).await.is_none());
    // Not used up either: enabled again, it rotates.
    flow.app.with_conn(set(false)).await;
    assert_eq!(flow.refresh(&token, None).await.status(), 200);
}

/// A rotated token presented by another client is invalid for it, and is
/// not a reuse: only the token's own client can revoke its grant.
#[tokio::test]
async fn another_client_presenting_a_rotated_token_revokes_nothing() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = flow.tokens(SCOPE).await;
    let first = refresh_of(&body);
    let grant = grant_of(body["access_token"].as_str().unwrap());
    let second = refresh_of(&flow.refresh(&first, None).await.json().await.unwrap());
    assert_token_error(
        refresh_by_another_client(&flow, &first).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(grant_revoked(&flow, &grant).await.is_none());
    assert_eq!(flow.refresh(&second, None).await.status(), 200);
}

#[tokio::test]
async fn twenty_parallel_refreshes_of_one_token_give_exactly_one_success() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let token = refresh_of(&flow.tokens(SCOPE).await);
    assert_exactly_one_success((0..20).map(|_| flow.refresh(&token, None))).await;
    // One successor was stored: the first token and the winner's.
    let rows = flow
        .app
        .with_conn(|conn| {
            dzdesk_auth::db::schema::refresh_tokens::table
                .count()
                .get_result::<i64>(conn)
                .unwrap()
        })
        .await;
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn refresh_after_a_demotion_drops_scopes_the_role_no_longer_grants() {
    use dzdesk_auth::db::schema::users;
    let flow = Flow::new(Role::Admin, "requests:read admin", false).await;
    let token = refresh_of(&flow.tokens("requests:read admin").await);
    let user_id = flow.user_id.clone();
    flow.app
        .with_conn(move |conn| {
            diesel::update(users::table.find(user_id))
                .set(users::role.eq("agent"))
                .execute(conn)
                .unwrap()
        })
        .await;
    let body: Value = flow.refresh(&token, None).await.json().await.unwrap();
    assert_eq!(body["scope"], "requests:read", "{body}");
}

/// A refresh answered 503 took no effect: the database was too slow (a lock
/// held elsewhere past `DZDESK_DB_TIMEOUT_MS`), and the rotation that began
/// meanwhile rolls back instead of committing after the client heard 503.
/// The retry that `Retry-After` invites gets new tokens; before, it found
/// its token already used, and the grant was revoked as stolen.
#[tokio::test]
async fn a_refresh_answered_503_took_no_effect_and_its_retry_succeeds() {
    let app = spawn_app_custom(
        |s| s.db_timeout = std::time::Duration::from_millis(300),
        |_| {},
    )
    .await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let first = flow.tokens(SCOPE).await;
    let refresh = refresh_of(&first);

    // Another connection holds what the rotation needs for 1.5 s: SQLite's
    // write lock, or PostgreSQL's row locks on refresh_tokens.
    let url = dzdesk_auth::db::DatabaseUrl::parse(&flow.app.database_url()).unwrap();
    let blocker = dzdesk_auth::db::Database::connect(&url, 1).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut conn = blocker.conn().unwrap();
        let lock = if url.postgres_url().is_some() {
            "BEGIN; SELECT id FROM refresh_tokens FOR UPDATE;"
        } else {
            "BEGIN IMMEDIATE;"
        };
        conn.batch_execute(lock).unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        conn.batch_execute("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let resp = flow.refresh(&refresh, None).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    // Give the abandoned rotation time to reach its COMMIT (and refuse it).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let id = tokens::hash_secret(&refresh);
    let row = flow
        .app
        .with_conn(move |conn| RefreshTokenRow::find(conn, &id).unwrap().unwrap())
        .await;
    assert!(
        row.used_at.is_none(),
        "the rotation committed after the 503"
    );

    let retried = flow.refresh(&refresh, None).await;
    assert_eq!(retried.status(), 200);
    let next: Value = retried.json().await.unwrap();
    assert_eq!(flow.refresh(&refresh_of(&next), None).await.status(), 200);
}

/// A connection the server closed in the middle of a transaction goes back
/// to the pool broken (diesel lost its transaction state): it is dropped
/// there (`has_broken`), not handed to the next request, whose transaction
/// would fail on it with a 500. With one pooled connection: the refresh
/// that meets the closed connection gets 503, the next one a new
/// connection and 200, well within `CHECK_EVERY` (no checkout test yet).
#[tokio::test]
async fn a_connection_closed_under_a_transaction_is_not_reused() {
    let app = spawn_app_custom(|s| s.db_pool_size = 1, |_| {}).await;
    if app.settings.database_url.postgres_url().is_none() {
        eprintln!("(PostgreSQL only: SQLite connections are files, nothing closes them)");
        return;
    }
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let mut token = refresh_of(&flow.tokens(SCOPE).await);
    let closed = crate::helpers::close_server_connections(&flow.app.settings.database_url).await;
    assert!(closed >= 1, "no connection of the service was closed");
    // Asking for a scope: the rotation runs in a transaction.
    let first = flow.refresh(&token, Some("requests:read")).await;
    let status = first.status().as_u16();
    assert!(status == 503 || status == 200, "{status}");
    if status == 200 {
        // The pool's only connection had already been replaced.
        token = refresh_of(&first.json().await.unwrap());
    }
    let started = std::time::Instant::now();
    let second = flow.refresh(&token, Some("requests:read")).await;
    assert_eq!(second.status(), 200, "{:?}", second.text().await);
    assert!(started.elapsed() < dzdesk_auth::db::CHECK_EVERY);
}

/// A metric of an app started with a metrics listener (`Scrape` of the
/// metrics tests), which must be there.
async fn metric(flow: &Flow, name: &str) -> f64 {
    let scrape = Scrape::of(&flow.app).await;
    assert!(scrape.has(name), "no {name}");
    scrape.sum(name, &[])
}

/// Polls until `metric` is `value` (20 s at most).
async fn metric_reaches(flow: &Flow, name: &str, value: f64) {
    let mut now = f64::NAN;
    for _ in 0..1000 {
        now = metric(flow, name).await;
        if now == value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{name} never reached {value}: {now}");
}

/// Holds the row locks of the refresh tokens `ids` (their hashes) in a
/// transaction of another connection, until a message on the sender; and
/// that connection's backend pid.
fn hold_row_locks(
    url: &dzdesk_auth::db::DatabaseUrl,
    ids: Vec<String>,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Sender<()>,
    i32,
) {
    let blocker = dzdesk_auth::db::Database::connect(url, 1).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = blocker.conn().unwrap();
        let list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(", ");
        conn.batch_execute(&format!(
            "BEGIN; SELECT id FROM refresh_tokens WHERE id IN ({list}) FOR UPDATE;"
        ))
        .unwrap();
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut **conn)
            .unwrap()
            .pid;
        locked_tx.send(pid).unwrap();
        let _ = release_rx.recv();
        conn.batch_execute("ROLLBACK").unwrap();
    });
    let pid = locked_rx.recv().unwrap();
    (holder, release_tx, pid)
}

/// Polls until `n` statements wait for the locks `holder` (a backend pid)
/// holds (20 s at most).
async fn lock_waiters_reach(flow: &Flow, holder: i32, n: i64) {
    let mut waiting = 0;
    for _ in 0..1000 {
        waiting = flow
            .app
            .with_conn(move |conn| {
                #[derive(diesel::QueryableByName)]
                struct Waiting {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE {holder} = ANY(pg_blocking_pids(pid))"
                ))
                .get_result::<Waiting>(conn)
                .unwrap()
                .n
            })
            .await;
        if waiting == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{waiting} statements wait for a lock, not {n}");
}

/// Refreshes `tokens[0]` and `tokens[1]` as two leaders held on their
/// locked rows (the second sent once the first waits, else both would be
/// one group), then `followers` while both wait; once all the followers
/// queue, the locks go, and the followers are sent as one group. The
/// leaders' answers, and the followers' in their order.
async fn in_one_group(
    flow: &Flow,
    tokens: &[String],
    followers: &[&str],
) -> (Vec<reqwest::Response>, Vec<reqwest::Response>) {
    let url = dzdesk_auth::db::DatabaseUrl::parse(&flow.app.database_url()).unwrap();
    let held = tokens[..2].iter().map(|t| tokens::hash_secret(t)).collect();
    let (holder, release, pid) = hold_row_locks(&url, held);
    let first = flow.refresh(&tokens[0], None);
    let second = async {
        lock_waiters_reach(flow, pid, 1).await;
        flow.refresh(&tokens[1], None).await
    };
    let leaders = futures_util::future::join(first, second);
    let rest = async {
        lock_waiters_reach(flow, pid, 2).await;
        let sent = futures_util::future::join_all(followers.iter().map(|t| flow.refresh(t, None)));
        let release = async {
            let n = followers.len() as f64;
            metric_reaches(flow, "dzdesk_auth_db_group_waiting", n).await;
            release.send(()).unwrap();
        };
        futures_util::future::join(sent, release).await.0
    };
    let ((a, b), followers) = futures_util::future::join(leaders, rest).await;
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    (vec![a, b], followers)
}

/// A group app on PostgreSQL with its metrics, a few connections, and five
/// grants' refresh tokens; None on SQLite (it writes one at a time: nothing
/// is grouped there).
async fn grouping_flow(pool: u32) -> Option<(Flow, Vec<String>)> {
    let app = spawn_app_custom(
        |s| {
            s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            s.db_pool_size = pool;
            // lock_timeout too: the leaders wait on the held locks until
            // the test lets them go, however slow a loaded CI machine is.
            s.db_timeout = std::time::Duration::from_secs(30);
        },
        |_| {},
    )
    .await;
    let url = dzdesk_auth::db::DatabaseUrl::parse(&app.database_url()).unwrap();
    url.postgres_url()?;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(refresh_of(&flow.tokens(SCOPE).await));
    }
    Some((flow, tokens))
}

/// PostgreSQL: rotations that come while the groups in flight wait are sent
/// together (`db::group`), and wait for it without a connection. Two
/// refreshes lead and are held on their tokens' row locks, each on a
/// connection of its own; three more come meanwhile and queue (the pool
/// has four connections: one for this test's own look at
/// pg_stat_activity, one to spare). Once the locks go, the three are sent
/// in one statement. Each caller gets its own rotation's answer: tokens of
/// its own grant.
#[tokio::test]
async fn refreshes_that_come_while_rotations_wait_are_sent_together() {
    let Some((flow, tokens)) = grouping_flow(4).await else {
        return;
    };
    let grants: Vec<String> = {
        let mut grants = Vec::new();
        for token in &tokens {
            let id = tokens::hash_secret(token);
            let grant = flow
                .app
                .with_conn(move |conn| RefreshTokenRow::find(conn, &id).unwrap().unwrap().grant_id)
                .await;
            grants.push(grant);
        }
        grants
    };
    let followers = [tokens[2].as_str(), &tokens[3], &tokens[4]];
    let (leaders, followers) = in_one_group(&flow, &tokens, &followers).await;
    for (resp, grant) in leaders.into_iter().chain(followers).zip(&grants) {
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(&grant_of(access), grant, "the answer of its own rotation");
    }
    // Every rotation since the start (the code exchanges are not grouped):
    // 5 in 3 groups, the two leaders' alone and the three that waited.
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_sum").await, 5.0);
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_count").await, 3.0);
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_waiting").await, 0.0);
}

/// PostgreSQL: a token presented twice in one group is used once (RFC 9700
/// 4.14.2: of concurrent uses exactly one wins, as between two statements):
/// one request gets its successor, the other is told it reused the token,
/// and its grant is revoked. The group's other rotation is untouched.
#[tokio::test]
async fn a_token_presented_twice_in_one_group_is_used_once_and_its_grant_revoked() {
    let Some((flow, tokens)) = grouping_flow(4).await else {
        return;
    };
    let followers = [tokens[2].as_str(), &tokens[2], &tokens[3]];
    let (leaders, followers) = in_one_group(&flow, &tokens, &followers).await;
    for resp in leaders {
        assert_eq!(resp.status(), 200);
    }
    let [twice, again, other]: [reqwest::Response; 3] = followers.try_into().unwrap();
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_sum").await, 5.0);
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_count").await, 3.0);

    let (won, lost) = match (twice.status().as_u16(), again.status().as_u16()) {
        (200, 400) => (twice, again),
        (400, 200) => (again, twice),
        statuses => panic!("one use wins, the other is refused: {statuses:?}"),
    };
    assert_token_error(lost, 400, "invalid_grant").await;
    let won: Value = won.json().await.unwrap();
    let grant = grant_of(won["access_token"].as_str().unwrap());
    assert!(
        grant_revoked(&flow, &grant).await.is_some(),
        "reuse revokes the grant"
    );
    // The winner's successor went with its grant.
    let after = flow
        .refresh(won["refresh_token"].as_str().unwrap(), None)
        .await;
    assert_token_error(after, 400, "invalid_grant").await;

    assert_eq!(other.status(), 200);
    let other: Value = other.json().await.unwrap();
    let other_grant = grant_of(other["access_token"].as_str().unwrap());
    assert_ne!(other_grant, grant);
    assert!(grant_revoked(&flow, &other_grant).await.is_none());
}

/// PostgreSQL: the group statement keeps each rule of the single one, per
/// request: in one group with a good token, an unknown token, a rotated
/// token presented again (reuse: its grant revoked) and a token of a
/// revoked grant each get what they would alone.
#[tokio::test]
async fn each_request_of_a_group_gets_what_it_would_alone() {
    let Some((flow, tokens)) = grouping_flow(4).await else {
        return;
    };
    // tokens[3] rotated once: presenting it again is reuse.
    let rotated = flow.refresh(&tokens[3], None).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let reused_grant = grant_of(rotated["access_token"].as_str().unwrap());
    // tokens[4]'s grant revoked.
    let id = tokens::hash_secret(&tokens[4]);
    let revoked_grant = flow
        .app
        .with_conn(move |conn| {
            let grant = RefreshTokenRow::find(conn, &id).unwrap().unwrap().grant_id;
            let now = chrono::Utc::now().naive_utc();
            assert!(dzdesk_auth::db::models::GrantRow::revoke(conn, &grant, now).unwrap());
            grant
        })
        .await;

    let unknown = format!("dzr_{}", "x".repeat(43));
    let followers = [tokens[2].as_str(), &unknown, &tokens[3], &tokens[4]];
    let (leaders, followers) = in_one_group(&flow, &tokens, &followers).await;
    let [good, unknown, reused, revoked]: [reqwest::Response; 4] = followers.try_into().unwrap();
    for resp in leaders.into_iter().chain([good]) {
        assert_eq!(resp.status(), 200);
    }
    assert_token_error(unknown, 400, "invalid_grant").await;
    assert_token_error(reused, 400, "invalid_grant").await;
    assert_token_error(revoked, 400, "invalid_grant").await;
    assert!(
        grant_revoked(&flow, &reused_grant).await.is_some(),
        "reuse revokes"
    );
    // Refused for its revoked grant: the token was not used.
    let id = tokens::hash_secret(&tokens[4]);
    let row = flow
        .app
        .with_conn(move |conn| RefreshTokenRow::find(conn, &id).unwrap().unwrap())
        .await;
    assert_eq!(row.grant_id, revoked_grant);
    assert!(row.used_at.is_none());
    // The two leaders alone, the four that waited in one group.
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_sum").await, 7.0);
    assert_eq!(metric(&flow, "dzdesk_auth_db_group_size_count").await, 4.0);
}
