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
        .get_result(&mut **conn)
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
    assert!(client.verify_secret(secret, chrono::Utc::now().naive_utc()));
    assert!(!client.verify_secret(&format!("{secret}x"), chrono::Utc::now().naive_utc()));
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
            "requests:read offline_access",
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
        // Redirect URIs and PKCE without the code flow.
        vec![
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read",
            "--grant-type",
            "client_credentials",
        ],
        vec![
            "--scope",
            "requests:read",
            "--grant-type",
            "client_credentials",
            "--require-pkce",
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
        .load(&mut **conn)
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

/// `--json` output of a list command, parsed.
fn list_json(db: &TestDatabase, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(&all, &[("DATABASE_URL", &db.url)], None);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_str::<serde_json::Value>(stdout(&out).trim())
        .expect("one JSON array")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn user_client_and_api_key_lists_as_tables_and_json() {
    let db = TestDatabase::new();
    // Empty lists: a header alone, and [].
    let out = run(&["user", "list"], &[("DATABASE_URL", &db.url)], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(list_json(&db, &["client", "list"]).is_empty());

    assert!(create_user(&db, "b-agent@example.com", "agent", PASSWORD)
        .status
        .success());
    assert!(create_user(&db, "a-admin@example.com", "admin", PASSWORD)
        .status
        .success());
    let users = list_json(&db, &["user", "list"]);
    let mut emails: Vec<&str> = users.iter().map(|u| u["email"].as_str().unwrap()).collect();
    emails.sort();
    assert_eq!(emails, ["a-admin@example.com", "b-agent@example.com"]);
    let admin = users
        .iter()
        .find(|u| u["email"] == "a-admin@example.com")
        .unwrap();
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["plan"], "standard");
    assert_eq!(admin["rate_limit"], 60);
    assert_eq!(admin["disabled"], false);
    assert!(admin.get("password_hash").is_none(), "{admin}");
    let table = stdout(&run(&["user", "list"], &[("DATABASE_URL", &db.url)], None));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("EMAIL"),
        "{table}"
    );
    assert!(
        table.contains("a-admin@example.com") && table.contains("agent"),
        "{table}"
    );
    assert!(!table.contains("argon2"), "{table}");

    let confidential = create_client(
        &db,
        &[
            "--redirect-uri",
            "https://zapier.example/cb",
            "--scope",
            "requests:read",
        ],
    );
    let secret: serde_json::Value = serde_json::from_str(stdout(&confidential).trim()).unwrap();
    let secret = secret["client_secret"].as_str().unwrap().to_owned();
    assert!(create_client(
        &db,
        &[
            "--redirect-uri",
            "http://localhost:3000/cb",
            "--scope",
            "requests:read",
            "--public",
            "--cors-origin",
            "https://spa.example.com",
        ],
    )
    .status
    .success());
    let clients = list_json(&db, &["client", "list"]);
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0]["type"], "confidential");
    assert_eq!(
        clients[0]["cors_origins"],
        serde_json::json!(["https://zapier.example"])
    );
    assert_eq!(clients[1]["type"], "public");
    assert_eq!(
        clients[1]["cors_origins"],
        serde_json::json!(["https://spa.example.com"])
    );
    assert_eq!(clients[1]["token_endpoint_auth_method"], "none");
    let table = stdout(&run(
        &["client", "list"],
        &[("DATABASE_URL", &db.url)],
        None,
    ));
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("Zapier") && table.contains("public"),
        "{table}"
    );
    assert!(!table.contains(&secret), "no secret in a listing");

    let key = create_api_key(&db, "a-admin@example.com", "requests:read");
    let keys = list_json(&db, &["api-key", "list", "--email", "a-admin@example.com"]);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["scopes"], serde_json::json!(["requests:read"]));
    assert!(key.starts_with(keys[0]["prefix"].as_str().unwrap()));
    let table = stdout(&run(
        &["api-key", "list", "--email", "a-admin@example.com"],
        &[("DATABASE_URL", &db.url)],
        None,
    ));
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(!table.contains(&key), "the key itself is never listed");
    assert!(list_json(&db, &["api-key", "list", "--email", "b-agent@example.com"]).is_empty());
    let out = run(
        &["api-key", "list", "--email", "nobody@example.com"],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(
        &["api-key", "list", "--email", "not an email"],
        &[("DATABASE_URL", &db.url)],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn client_rotate_secret_refuses_what_cannot_work() {
    let db = TestDatabase::new();
    let public = create_client(
        &db,
        &[
            "--redirect-uri",
            "http://localhost:3000/cb",
            "--scope",
            "requests:read",
            "--public",
        ],
    );
    let public: serde_json::Value = serde_json::from_str(stdout(&public).trim()).unwrap();
    let public = public["client_id"].as_str().unwrap();
    let confidential = create_client(
        &db,
        &[
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "requests:read",
        ],
    );
    let confidential: serde_json::Value =
        serde_json::from_str(stdout(&confidential).trim()).unwrap();
    let confidential = confidential["client_id"].as_str().unwrap();
    let secret_before = stored_client(&db, confidential).secret_hash;
    for (args, code) in [
        (vec!["--id", public], 2),
        (vec!["--id", "client_nope"], 1),
        (vec!["--id", confidential, "--grace-hours", "169"], 2),
        (vec!["--id", confidential, "--grace-hours=-1"], 2),
    ] {
        let mut all = vec!["client", "rotate-secret"];
        all.extend(args.iter());
        let out = run(&all, &[("DATABASE_URL", &db.url)], None);
        assert_eq!(out.status.code(), Some(code), "{all:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    assert_eq!(
        stored_client(&db, confidential).secret_hash,
        secret_before,
        "nothing rotated"
    );
    // A bad or wildcard CORS origin is refused at create (exit 2).
    for origin in [
        "https://*.example.com",
        "https://spa.example.com/",
        "http://spa.example.com",
    ] {
        let before = client_count(&db);
        let out = create_client(
            &db,
            &[
                "--redirect-uri",
                "https://spa.example.com/cb",
                "--scope",
                "requests:read",
                "--cors-origin",
                origin,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{origin}: {}", stderr(&out));
        assert_eq!(client_count(&db), before);
    }
}

/// A client_credentials token request with Basic credentials: its status.
async fn token_status(app: &crate::helpers::TestApp, id: &str, secret: &str) -> u16 {
    crate::helpers::new_client()
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn client_rotate_secret_shows_the_new_secret_once_and_the_old_one_works_for_the_grace() {
    let app = crate::helpers::spawn_app().await;
    let url = app.database_url();
    let run_cli = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[("DATABASE_URL", url.as_str())], None)
        })
    };
    let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let created = run_cli(args(&[
        "client",
        "create",
        "--name",
        "Service",
        "--scope",
        "requests:read",
        "--grant-type",
        "client_credentials",
    ]))
    .await
    .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let created: serde_json::Value = serde_json::from_str(stdout(&created).trim()).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let first = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&app, &id, &first).await, 200);

    // With a grace: both work until it ends.
    let rotated = run_cli(args(&[
        "client",
        "rotate-secret",
        "--id",
        &id,
        "--grace-hours",
        "2",
    ]))
    .await
    .unwrap();
    assert_eq!(rotated.status.code(), Some(0), "{}", stderr(&rotated));
    let json: serde_json::Value = serde_json::from_str(stdout(&rotated).trim()).unwrap();
    assert_eq!(json["client_id"], id.as_str());
    let second = json["client_secret"].as_str().unwrap().to_owned();
    assert!(second.starts_with("dzs_") && second != first);
    let until =
        chrono::DateTime::parse_from_rfc3339(json["old_secret_works_until"].as_str().unwrap())
            .unwrap();
    let hours = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((115..=120).contains(&hours), "{hours} minutes of grace");
    assert!(
        !stderr(&rotated).contains(&second),
        "the secret is printed once, on stdout"
    );
    assert_eq!(token_status(&app, &id, &second).await, 200);
    assert_eq!(token_status(&app, &id, &first).await, 200, "in its grace");
    // Stored hashed, both of them.
    let stored = app.stored_client(&id).await;
    assert_ne!(stored.secret_hash.as_deref(), Some(second.as_str()));
    assert_ne!(stored.previous_secret_hash.as_deref(), Some(first.as_str()));
    // Past the grace (the clock moved on): the old secret fails.
    let later =
        chrono::Utc::now().naive_utc() + chrono::Duration::hours(2) + chrono::Duration::seconds(1);
    assert!(!stored.verify_secret(&first, later));
    assert!(stored.verify_secret(&second, later));

    // The default grace is 0: the old secret stops at once (this test's
    // instance does not cache clients). The one replaced before it is gone
    // too: one previous secret at most.
    let rotated = run_cli(args(&["client", "rotate-secret", "--id", &id]))
        .await
        .unwrap();
    assert_eq!(rotated.status.code(), Some(0), "{}", stderr(&rotated));
    let json: serde_json::Value = serde_json::from_str(stdout(&rotated).trim()).unwrap();
    assert_eq!(json["old_secret_works_until"], serde_json::Value::Null);
    let third = json["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&app, &id, &third).await, 200);
    assert_eq!(token_status(&app, &id, &second).await, 401);
    assert_eq!(token_status(&app, &id, &first).await, 401);
    let stored = app.stored_client(&id).await;
    assert_eq!(
        stored.previous_secret_hash, None,
        "not kept without a grace"
    );
    // A rotation that read a secret since replaced changes nothing.
    let changed = app
        .with_conn({
            let id = id.clone();
            move |conn| {
                dzdesk_auth::db::models::Client::rotate_secret(
                    conn,
                    &id,
                    "a hash read before another rotation",
                    "new",
                    None,
                    chrono::Utc::now().naive_utc(),
                )
                .unwrap()
            }
        })
        .await;
    assert!(!changed);
    assert_eq!(token_status(&app, &id, &third).await, 200);
}

/// Runs `user create --password-stdin` on a pseudo-terminal (util-linux
/// `script`), typing each of `lines` once the terminal shows the prompt
/// before it (so that nothing is typed before echo is off).
fn create_user_on_a_terminal(db: &TestDatabase, email: &str, lines: [&str; 2]) -> Output {
    // The shell writes the terminal's name first, so that the test can see
    // the terminal's own echo flag: the prompt is printed a moment before
    // echo goes off, and a loaded machine may type into that moment.
    let tty_file = tempfile::NamedTempFile::new().unwrap();
    let command = format!(
        "tty > {}; exec {BIN} user create --email {email} --role agent --password-stdin",
        tty_file.path().display()
    );
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("DATABASE_URL", &db.url)
        .env("DZDESK_SECRETS_KEY", TEST_SECRETS_KEY)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let mut input = child.stdin.take().unwrap();
    let mut terminal = child.stdout.take().unwrap();
    let (tx, seen) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = terminal.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (line, prompt) in lines.iter().zip(["Password", "again"]) {
        while !String::from_utf8_lossy(&shown).contains(prompt) {
            let left = deadline.saturating_duration_since(Instant::now());
            match seen.recv_timeout(left) {
                Ok(bytes) => shown.extend(bytes),
                Err(_) => panic!("no prompt {prompt:?}: {}", String::from_utf8_lossy(&shown)),
            }
        }
        wait_for_echo_off(tty_file.path(), deadline);
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
        input.flush().unwrap();
    }
    drop(input);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "user create did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(bytes) = seen.recv_timeout(Duration::from_secs(2)) {
        shown.extend(bytes);
    }
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout: shown,
        stderr,
    }
}

/// Waits until the terminal named in `tty_file` has echo off (`stty` shows
/// `-echo`), that is until the program reads the password.
fn wait_for_echo_off(tty_file: &std::path::Path, deadline: Instant) {
    loop {
        let tty = std::fs::read_to_string(tty_file).unwrap_or_default();
        let tty = tty.trim();
        if tty.starts_with("/dev/") {
            let out = Command::new("stty")
                .args(["-a", "-F", tty])
                .output()
                .expect("stty");
            let flags = String::from_utf8_lossy(&out.stdout).to_string();
            if flags.split_whitespace().any(|flag| flag == "-echo") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "echo never went off on {tty:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn password_stdin_on_a_terminal_prompts_twice_without_echo() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but util-linux script is not installed"
        );
        eprintln!("!!!!!!!! SKIPPED: util-linux `script` is not installed");
        return;
    }
    let db = TestDatabase::new();
    let out = create_user_on_a_terminal(&db, "tty@example.com", [PASSWORD, PASSWORD]);
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("Password"), "a prompt: {shown}");
    assert!(shown.contains("again"), "asked twice: {shown}");
    assert!(!shown.contains(PASSWORD), "no echo: {shown}");
    assert!(shown.contains("\"id\":\"user_"), "{shown}");
    assert_eq!(user_count(&db), 1);

    // Two different passwords: exit 2, nobody created.
    let typo = format!("{PASSWORD}x");
    let out = create_user_on_a_terminal(&db, "typo@example.com", [PASSWORD, &typo]);
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert_eq!(user_count(&db), 1);
}
