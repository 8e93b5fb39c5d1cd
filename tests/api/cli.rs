//! The CLI run as a real process: output shapes and exit codes are a contract.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestDatabase, PASSWORD, TEST_SECRETS_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_dzdesk-auth");

/// Runs the binary with a clean configuration environment and the test
/// instances' `DZDESK_SECRETS_KEY` (`("DZDESK_SECRETS_KEY", "")` in `env`
/// unsets it).
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DZDESK_LISTEN")
        .env_remove("DZDESK_ISSUER")
        .env_remove("RUST_LOG")
        .env_remove("DZDESK_SECRETS_KEY_OLD")
        .env("DZDESK_SECRETS_KEY", TEST_SECRETS_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn dzdesk-auth");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        // A command that refuses its arguments exits without reading stdin:
        // the pipe may already be closed (its exit code is what is checked).
        match input.write_all(s.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
    }
    drop(input);
    wait_bounded(child, args)
}

/// The command's output; a failed test, not a hung run, if it has not exited
/// within a minute (a `serve` that should have refused to start, say).
fn wait_bounded(mut child: Child, args: &[&str]) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        let mut pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dzdesk-auth {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn create_user(db: &TestDatabase, email: &str, role: &str, password: &str) -> Output {
    run(
        &[
            "user",
            "create",
            "--email",
            email,
            "--role",
            role,
            "--password-stdin",
        ],
        &[("DATABASE_URL", &db.url)],
        Some(&format!("{password}\n")),
    )
}

/// `api-key create` for `email` with `scope`; returns the key.
pub fn create_api_key(db: &TestDatabase, email: &str, scope: &str) -> String {
    let out = run(
        &[
            "api-key", "create", "--email", email, "--name", "cli", "--scope", scope,
        ],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    json["key"].as_str().unwrap().to_owned()
}

fn user_count(db: &TestDatabase) -> i64 {
    use diesel::prelude::*;
    let url = dzdesk_auth::db::DatabaseUrl::parse(&db.url).unwrap();
    let database = dzdesk_auth::db::Database::connect(&url, 1).unwrap();
    database.migrate().unwrap();
    let mut conn = database.conn().unwrap();
    dzdesk_auth::db::schema::users::table
        .count()
        .get_result(&mut *conn)
        .unwrap()
}

#[test]
fn user_create_prints_exactly_one_json_object_with_the_id() {
    let db = TestDatabase::new();
    let out = create_user(&db, "Ann@Example.com", "admin", PASSWORD);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{text}");
    let id = obj["id"].as_str().unwrap();
    assert!(id.starts_with("user_") && id.len() > 20, "{id}");
    assert!(!stderr(&out).contains(PASSWORD));
    assert_eq!(user_count(&db), 1);
}

#[test]
fn user_create_with_a_duplicate_email_exits_1_and_changes_nothing() {
    let db = TestDatabase::new();
    assert!(create_user(&db, "ann@example.com", "agent", PASSWORD)
        .status
        .success());
    let out = create_user(&db, "ANN@example.com", "admin", "another long password");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(user_count(&db), 1);
}

#[test]
fn user_create_with_invalid_input_exits_2_and_creates_nothing() {
    let db = TestDatabase::new();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "user",
            "create",
            "--email",
            "not-an-email",
            "--role",
            "agent",
            "--password-stdin",
        ],
        vec![
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--role",
            "owner",
            "--password-stdin",
        ],
        vec![
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--role",
            "agent",
        ],
    ];
    for args in cases {
        let out = run(
            &args,
            &[("DATABASE_URL", &db.url)],
            Some(&format!("{PASSWORD}\n")),
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "");
        assert!(!stderr(&out).is_empty());
    }
    let short = create_user(&db, "bob@example.com", "agent", "short");
    assert_eq!(short.status.code(), Some(2));
    assert!(
        stderr(&short).contains("at least 12 characters"),
        "{}",
        stderr(&short)
    );
    assert!(!stderr(&short).contains("short\n"));
    assert_eq!(user_count(&db), 0);
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["user", "--help"],
        vec!["user", "create", "--help"],
        vec!["user", "disable", "--help"],
    ] {
        let out = run(&args, &[], None);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn migrate_applies_migrations_and_is_idempotent() {
    let db = TestDatabase::new();
    for _ in 0..2 {
        let out = run(&["migrate"], &[("DATABASE_URL", &db.url)], None);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(user_count(&db), 0);
}

#[test]
fn user_disable_and_enable_by_email() {
    let db = TestDatabase::new();
    create_user(&db, "ann@example.com", "agent", PASSWORD);
    let out = run(
        &["user", "disable", "--email", "ann@example.com"],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json["disabled"], true);
    let out = run(
        &["user", "enable", "--email", "nobody@example.com"],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_configuration_stops_start_up_with_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let sqlite = format!("sqlite://{}", file.display());
    let cases = [
        (
            vec![
                ("DATABASE_URL", sqlite.as_str()),
                ("DZDESK_LISTEN", "not-an-address"),
            ],
            "DZDESK_LISTEN",
        ),
        (
            vec![
                ("DATABASE_URL", sqlite.as_str()),
                ("DZDESK_ISSUER", "ftp://auth.example.com"),
            ],
            "DZDESK_ISSUER",
        ),
        (
            vec![
                ("DATABASE_URL", sqlite.as_str()),
                ("DZDESK_USAGE_LOG", "maybe"),
            ],
            "DZDESK_USAGE_LOG",
        ),
        (
            vec![("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/x")],
            "DATABASE_URL",
        ),
        (
            vec![("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/x")],
            "DATABASE_URL",
        ),
    ];
    for (env, var) in cases {
        let out = run(&["serve"], &env, None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        assert!(line.contains(var), "{env:?}: {err}");
        assert!(!err.contains("hunter2"), "password echoed: {err}");
    }
    assert!(!file.exists(), "nothing half-created");
}

#[test]
fn an_unopenable_sqlite_file_stops_serve_at_once_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("x.db");
    let a_directory = dir.path().to_path_buf();
    for (path, why) in [
        (missing, "No such file or directory"),
        (a_directory, "Is a directory"),
    ] {
        let url = format!("sqlite://{}", path.display());
        let started = std::time::Instant::now();
        let out = run(&["serve"], &[("DATABASE_URL", &url)], None);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(&path.display().to_string()), "{err}");
        assert!(lines[0].contains(why), "{err}");
    }
}

fn create_client(db: &TestDatabase, extra: &[&str]) -> Output {
    let mut args = vec!["client", "create", "--name", "Zapier"];
    args.extend_from_slice(extra);
    run(&args, &[("DATABASE_URL", &db.url)], None)
}

fn client_count(db: &TestDatabase) -> i64 {
    use diesel::prelude::*;
    let url = dzdesk_auth::db::DatabaseUrl::parse(&db.url).unwrap();
    let mut conn = dzdesk_auth::db::Database::establish(&url).unwrap();
    dzdesk_auth::db::run_migrations(&mut conn).unwrap();
    dzdesk_auth::db::schema::clients::table
        .count()
        .get_result(&mut conn)
        .unwrap()
}

fn stored_client(db: &TestDatabase, id: &str) -> dzdesk_auth::db::models::Client {
    let url = dzdesk_auth::db::DatabaseUrl::parse(&db.url).unwrap();
    let mut conn = dzdesk_auth::db::Database::establish(&url).unwrap();
    dzdesk_auth::db::models::Client::find(&mut conn, id)
        .unwrap()
        .unwrap()
}

#[test]
fn client_create_confidential_prints_id_and_secret_once() {
    let db = TestDatabase::new();
    let out = create_client(
        &db,
        &[
            "--redirect-uri",
            "https://zapier.example/cb",
            "--redirect-uri",
            "http://127.0.0.1:8000/cb",
            "--scope",
            "requests:read requests:write",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1);
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{text}");
    let id = obj["client_id"].as_str().unwrap();
    let secret = obj["client_secret"].as_str().unwrap();
    assert!(id.starts_with("client_"));
    // dzs_ + 43 base64url characters = 256 bits.
    assert!(
        secret.starts_with("dzs_") && secret.len() == 4 + 43,
        "{secret}"
    );

    let client = stored_client(&db, id);
    assert!(client.confidential);
    assert!(client.verify_secret(secret));
    assert!(!client.verify_secret(&format!("{secret}x")));
    assert_ne!(client.secret_hash.as_deref(), Some(secret), "stored hashed");
    assert_eq!(client.grant_types, "authorization_code refresh_token");
    assert_eq!(client.redirect_uris().len(), 2);
}

#[test]
fn client_create_public_has_no_secret_and_requires_pkce() {
    let db = TestDatabase::new();
    let out = create_client(
        &db,
        &[
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--scope",
            "requests:read",
            "--public",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 1);
    let client = stored_client(&db, json["client_id"].as_str().unwrap());
    assert!(!client.confidential && client.require_pkce && client.secret_hash.is_none());
}

#[test]
fn client_create_client_credentials_grant() {
    let db = TestDatabase::new();
    let out = create_client(
        &db,
        &[
            "--scope",
            "requests:read",
            "--grant-type",
            "client_credentials",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let client = stored_client(&db, json["client_id"].as_str().unwrap());
    assert_eq!(client.grant_types, "client_credentials");
}

#[test]
fn client_create_with_invalid_input_exits_2_and_creates_nothing() {
    let db = TestDatabase::new();
    for args in [
        vec![
            "--redirect-uri",
            "http://evil.example/cb",
            "--scope",
            "requests:read",
        ],
        vec![
            "--redirect-uri",
            "https://app.example/cb#frag",
            "--scope",
            "requests:read",
        ],
        vec!["--redirect-uri", "not a url", "--scope", "requests:read"],
        vec![
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read openid",
        ],
        vec!["--redirect-uri", "https://app.example/cb", "--scope", ""],
        vec!["--scope", "requests:read"],
        vec![
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read",
            "--grant-type",
            "password",
        ],
        vec![
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read",
            "--public",
            "--grant-type",
            "client_credentials",
        ],
        // A public client cannot authenticate, so it could never introspect.
        vec![
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read",
            "--public",
            "--introspect",
        ],
    ] {
        let out = create_client(&db, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    assert_eq!(client_count(&db), 0);
}

#[test]
fn client_create_introspect_flag_grants_the_introspection_permission() {
    let db = TestDatabase::new();
    let args = [
        "--scope",
        "requests:read",
        "--grant-type",
        "client_credentials",
    ];
    let plain = create_client(&db, &args);
    let mut with_flag = args.to_vec();
    with_flag.push("--introspect");
    let internal = create_client(&db, &with_flag);
    let id = |out: &Output| {
        let v: serde_json::Value = serde_json::from_str(stdout(out).trim()).unwrap();
        v["client_id"].as_str().unwrap().to_owned()
    };
    assert!(!stored_client(&db, &id(&plain)).can_introspect);
    assert!(stored_client(&db, &id(&internal)).can_introspect);
}

fn api_key_rows(db: &TestDatabase) -> Vec<dzdesk_auth::db::models::ApiKeyRow> {
    use diesel::prelude::*;
    let url = dzdesk_auth::db::DatabaseUrl::parse(&db.url).unwrap();
    let database = dzdesk_auth::db::Database::connect(&url, 1).unwrap();
    let mut conn = database.conn().unwrap();
    dzdesk_auth::db::schema::api_keys::table
        .select(dzdesk_auth::db::models::ApiKeyRow::as_select())
        .load(&mut *conn)
        .unwrap()
}

#[test]
fn api_key_create_prints_id_and_key_once_and_stores_only_the_hash() {
    let db = TestDatabase::new();
    assert!(create_user(&db, "ann@example.com", "agent", PASSWORD)
        .status
        .success());
    let out = run(
        &[
            "api-key",
            "create",
            "--email",
            "Ann@Example.com",
            "--name",
            "Deploys",
            "--scope",
            "requests:read",
            "--scope",
            "requests:write",
            "--expires-in-days",
            "30",
        ],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{text}");
    let id = obj["id"].as_str().unwrap();
    let key = obj["key"].as_str().unwrap();
    assert!(id.starts_with("key_"), "{id}");
    assert!(key.starts_with("dzd_") && key.len() >= 4 + 43, "{key}");
    let rows = api_key_rows(&db);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].name, "Deploys");
    assert_eq!(rows[0].scopes, "requests:read requests:write");
    assert_eq!(rows[0].key_hash, dzdesk_auth::tokens::hash_secret(key));
    assert!(rows[0].expires_at.is_some());
    assert!(!stderr(&out).contains(key));
}

#[test]
fn api_key_create_refuses_bad_input_and_scopes_beyond_the_role() {
    let db = TestDatabase::new();
    assert!(create_user(&db, "ann@example.com", "agent", PASSWORD)
        .status
        .success());
    let env = [("DATABASE_URL", db.url.as_str())];
    let attempt = |extra: &[&str]| {
        let mut args = vec!["api-key", "create"];
        args.extend_from_slice(extra);
        run(&args, &env, None)
    };
    for (args, code) in [
        (
            vec![
                "--email",
                "ann@example.com",
                "--name",
                "x",
                "--scope",
                "requests:delete",
            ],
            2,
        ),
        (
            vec![
                "--email",
                "ann@example.com",
                "--name",
                "",
                "--scope",
                "requests:read",
            ],
            2,
        ),
        (
            vec![
                "--email",
                "ann@example.com",
                "--name",
                "x",
                "--scope",
                "requests:read",
                "--expires-in-days",
                "0",
            ],
            2,
        ),
        (
            vec![
                "--email",
                "not-an-email",
                "--name",
                "x",
                "--scope",
                "requests:read",
            ],
            2,
        ),
        (
            vec![
                "--email",
                "ann@example.com",
                "--name",
                "x",
                "--scope",
                "admin",
            ],
            1,
        ),
        (
            vec![
                "--email",
                "nobody@example.com",
                "--name",
                "x",
                "--scope",
                "requests:read",
            ],
            1,
        ),
    ] {
        let out = attempt(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    assert!(api_key_rows(&db).is_empty(), "nothing was created");
}

#[test]
fn migrate_says_what_it_applied_then_that_it_is_up_to_date() {
    // A fresh database (of the backend under test): every migration,
    // named, oldest first; then nothing to do.
    let db = TestDatabase::new();
    let url = db.url.clone();
    let out = run(&["migrate"], &[("DATABASE_URL", url.as_str())], None);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    let applied: Vec<&str> = said
        .lines()
        .filter_map(|l| l.strip_prefix("applied "))
        .collect();
    assert!(applied.len() >= 10, "{said}");
    assert!(applied[0].contains("foundation"), "{said}");
    let mut sorted = applied.clone();
    sorted.sort();
    assert_eq!(applied, sorted, "{said}");
    let out = run(&["migrate"], &[("DATABASE_URL", url.as_str())], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "already up to date"
    );
}
