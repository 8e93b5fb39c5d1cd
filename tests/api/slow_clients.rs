//! Slow clients: every request within a whole-request deadline
//! (`DZDESK_REQUEST_TIMEOUT_SECS`), and a cap on open connections
//! (`DZDESK_MAX_CONNECTIONS`), over real sockets.

use std::time::{Duration, Instant};

use dzdesk_auth::domain::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_custom, TestApp};
use crate::v1_keys::key_for;

/// A POST whose headers arrive at once and whose 1000-byte body then
/// dribbles in, one byte every 300 ms.
async fn dribbling(
    app: &TestApp,
    path: &str,
    content_type: &str,
    bearer: Option<&str>,
) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let auth = bearer.map_or_else(String::new, |b| format!("Authorization: Bearer {b}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{auth}Content-Length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// What the server answers a dribbling client, and how long it took.
async fn answer_to_dribble(stream: TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    // read_to_end: the answer, then the server closing the connection.
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    writer.abort();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_body_that_dribbles_in_is_answered_408_in_its_surfaces_shape_and_closed() {
    let app = spawn_app_custom(|s| s.request_timeout = Duration::from_secs(1), |_| {}).await;
    let admin = app.create_user("root@example.com", Role::Admin).await;
    let (_, key) = key_for(&app, &admin, "admin").await;
    let cases = [
        (
            "/oauth/token",
            "application/x-www-form-urlencoded",
            None,
            "\"error\":\"invalid_request\"",
        ),
        (
            "/v1/api-keys",
            "application/json",
            Some(key.as_str()),
            "\"code\":\"BAD_REQUEST\"",
        ),
        (
            "/login",
            "application/x-www-form-urlencoded",
            None,
            "took too long to arrive",
        ),
    ];
    for (path, content_type, bearer, shape) in cases {
        let stream = dribbling(&app, path, content_type, bearer).await;
        let (answer, took) = answer_to_dribble(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains(shape), "{path}: {answer}");
        assert!(
            answer.to_lowercase().contains("connection: close"),
            "{path}: {answer}"
        );
        assert!(
            answer
                .to_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{path}"
        );
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
            "{path}: {took:?}"
        );
    }
}

#[tokio::test]
async fn fifty_slow_sockets_leave_healthz_fast() {
    let app = spawn_app_custom(|_| {}, |_| {}).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let stream = dribbling(
            &app,
            "/oauth/token",
            "application/x-www-form-urlencoded",
            None,
        )
        .await;
        slow.push(tokio::spawn(answer_to_dribble(stream)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = crate::helpers::client_builder().build().unwrap();
    for i in 0..10 {
        let started = Instant::now();
        let resp = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{i}: {:?}",
            started.elapsed()
        );
    }
    for s in slow {
        s.abort();
    }
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_until_one_closes() {
    // The test app runs one worker: the cap is its own.
    let app = spawn_app_custom(|s| s.max_connections = 4, |_| {}).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            dribbling(
                &app,
                "/oauth/token",
                "application/x-www-form-urlencoded",
                None,
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = crate::helpers::client_builder().build().unwrap();
    let waiting = tokio::time::timeout(
        Duration::from_millis(700),
        client.get(app.url("/healthz")).send(),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a fifth connection was served: {waiting:?}"
    );
    drop(held.pop());
    let resp = tokio::time::timeout(
        Duration::from_secs(3),
        client.get(app.url("/healthz")).send(),
    )
    .await
    .expect("served once a connection closed")
    .unwrap();
    assert_eq!(resp.status(), 200);
}
