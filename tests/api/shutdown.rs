//! SIGTERM with requests in flight, on the real binary: `/readyz` turns 503
//! at once while the listener still accepts, a request that is mid-body
//! when the signal arrives completes, new connections are refused after
//! the drain period, and the process exits 0. And the exit itself, run
//! many times on PostgreSQL: never a crash (the libpq/OpenSSL exit race).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::cli::{create_user, run};
use crate::helpers::{TestDatabase, PASSWORD, TEST_SECRETS_KEY};
use crate::https::Server;

/// A token request sent up to half its body.
fn half_sent_token_request(port: u16) -> (TcpStream, &'static [u8]) {
    let body: &'static [u8] = b"grant_type=client_credentials&client_id=nobody&client_secret=x";
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let head = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    socket.write_all(first).unwrap();
    socket.flush().unwrap();
    // Accepted and being read by then (a connection still in the kernel's
    // backlog when the listener closes is not in flight: it is reset).
    std::thread::sleep(Duration::from_millis(500));
    (socket, rest)
}

/// Sends the rest of the body and reads the whole answer.
fn finish(mut socket: TcpStream, rest: &[u8]) -> String {
    socket.write_all(rest).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn serve_env<'a>(db: &'a TestDatabase, drain: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db.url.as_str()),
        ("DZDESK_LISTEN", "127.0.0.1:0"),
        ("DZDESK_SHUTDOWN_SECS", drain),
    ]
}

#[test]
fn sigterm_drains_then_stops_and_requests_in_flight_complete() {
    let db = TestDatabase::new();
    let mut server = Server::start(&serve_env(&db, "2"));
    let port = server.port();
    assert_eq!(status_of(port, "/readyz"), Some(200));
    // SIGHUP without TLS (an operator's habit) is logged, not fatal.
    server.signal("-HUP");
    assert!(server.wait_for("SIGHUP: no TLS certificate").is_some());
    assert_eq!(status_of(port, "/readyz"), Some(200));

    let (socket, rest) = half_sent_token_request(port);
    let signalled = Instant::now();
    server.signal("-TERM");
    assert!(server.wait_for("SIGTERM: stopping").is_some());
    // Draining: still accepting, readiness 503 at once, liveness 200.
    assert_eq!(status_of(port, "/readyz"), Some(503));
    assert_eq!(status_of(port, "/healthz"), Some(200));
    // The request that was mid-body when the signal came gets its answer.
    let answer = finish(socket, rest);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_client"), "{answer}");

    // After the drain period: new connections are refused, and the
    // process exits 0.
    let status = server.exit_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_secs(2));
}

#[test]
fn without_a_drain_period_the_listener_closes_at_once_and_in_flight_requests_still_complete() {
    let db = TestDatabase::new();
    let mut server = Server::start(&serve_env(&db, "0"));
    let port = server.port();
    let (socket, rest) = half_sent_token_request(port);
    server.signal("-TERM");
    assert!(server.wait_for("waiting for requests in flight").is_some());
    let refused = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(refused, "new connections still accepted after the stop");
    std::thread::sleep(Duration::from_millis(300));
    let answer = finish(socket, rest);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let status = server.exit_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The exit of `serve` (with live pooled connections) and of a CLI
/// command, 200 times each on the backend under test (`DZDESK_EXIT_RUNS`
/// to change it): each exits 0, none by a signal. The issue-2 note saw a
/// segfault at exit on PostgreSQL (libpq and OpenSSL); this is the proof it
/// is gone.
#[test]
fn serve_and_the_cli_exit_cleanly_every_time() {
    let runs: usize = std::env::var("DZDESK_EXIT_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let db = TestDatabase::new();
    let created = create_user(&db, "exit@example.com", "agent", PASSWORD);
    assert!(created.status.success(), "{created:?}");
    let mut failures = Vec::new();
    for i in 0..runs {
        let mut server = Server::start(&serve_env(&db, "0"));
        // A request first, so the pool holds live connections at exit.
        assert_eq!(status_of(server.port(), "/readyz"), Some(200));
        server.signal("-TERM");
        let status = server.exit_within(Duration::from_secs(15));
        if status.code() != Some(0) {
            failures.push(format!("serve run {i}: {status:?}"));
        }
        let out = run(
            &["user", "disable", "--email", "exit@example.com"],
            &[("DATABASE_URL", &db.url)],
            None,
        );
        if out.status.code() != Some(0) {
            failures.push(format!("cli run {i}: {:?}", out.status));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs: {failures:?}",
        failures.len()
    );
}

/// SIGTERM, SIGINT or SIGHUP while `serve` is still starting (opening and
/// migrating a fresh database, warming up argon2) does not kill it by the
/// signal's default action: a stop signal stops it cleanly once started,
/// exit 0; SIGHUP is ignored.
#[test]
fn a_signal_during_start_up_is_not_fatal() {
    for (delay_ms, sig) in [(60, "-TERM"), (100, "-INT"), (150, "-TERM"), (300, "-TERM")] {
        let db = TestDatabase::new();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dzdesk-auth"));
        cmd.arg("serve")
            .env_remove("DZDESK_ISSUER")
            .env("DATABASE_URL", &db.url)
            .env("DZDESK_LISTEN", "127.0.0.1:0")
            .env("DZDESK_SHUTDOWN_SECS", "0")
            .env("DZDESK_SECRETS_KEY", TEST_SECRETS_KEY)
            .env_remove("DZDESK_SECRETS_KEY_OLD")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let kill = |s: &str| {
            std::process::Command::new("kill")
                .args([s, &child.id().to_string()])
                .status()
                .unwrap()
        };
        assert!(kill("-HUP").success());
        assert!(kill(sig).success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "did not stop after {sig}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{sig} at {delay_ms} ms: {status:?}");
    }
}
