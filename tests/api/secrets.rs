//! Secrets at rest (`DZDESK_SECRETS_KEY`): the private signing keys and the
//! server secrets are stored encrypted, a wrong or missing key stops
//! start-up with one clear line, and rotating the key keeps every issued
//! token valid. Rows are read with raw SQL, never through the models.

use std::process::Stdio;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{Binary, Text};
use dzdesk_auth::config::Settings;
use dzdesk_auth::credentials::jwt;
use dzdesk_auth::db::models::{ServerSecret, SigningKeyRow};
use dzdesk_auth::db::schema::{server_secrets, signing_keys};
use dzdesk_auth::db::sealed::secrets_error;
use dzdesk_auth::db::{AnyConnection, Database};
use dzdesk_auth::domain::Role;
use dzdesk_auth::secrets::{Sealer, SecretsError, SecretsKey};
use dzdesk_auth::startup::Application;
use dzdesk_auth::state::ServerKeys;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::run;
use crate::helpers::{spawn_app, spawn_app_custom, TestApp, TestDatabase, TEST_SECRETS_KEY};
use crate::introspect::{call, introspect_at};
use crate::oauth_flow::Flow;

const BIN: &str = env!("CARGO_BIN_EXE_dzdesk-auth");
const SCOPE: &str = "requests:read";
/// Sealed: the version prefix, a 24-byte nonce, a 16-byte tag.
const OVERHEAD: usize = 5 + 24 + 16;

/// A stored secret as the database holds it.
#[derive(QueryableByName, Debug)]
struct Raw {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Binary)]
    stored: Vec<u8>,
}

fn raw_signing_keys(conn: &mut AnyConnection) -> Vec<Raw> {
    diesel::sql_query("SELECT kid AS id, private_key AS stored FROM signing_keys ORDER BY kid")
        .load(conn)
        .unwrap()
}

fn raw_server_secrets(conn: &mut AnyConnection) -> Vec<Raw> {
    diesel::sql_query("SELECT name AS id, secret AS stored FROM server_secrets ORDER BY name")
        .load(conn)
        .unwrap()
}

async fn raw_rows(app: &TestApp) -> (Vec<Raw>, Vec<Raw>) {
    app.with_conn(|conn| (raw_signing_keys(conn), raw_server_secrets(conn)))
        .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn random_key() -> String {
    STANDARD.encode(rand::random::<[u8; 32]>())
}

fn sealer(key: &str, old: Option<&str>) -> Sealer {
    Sealer::new(
        Some(SecretsKey::parse(key).unwrap()),
        old.map(|o| SecretsKey::parse(o).unwrap()),
    )
}

/// Another instance on `app`'s database with other settings (a restart
/// with other keys); its start-up error, if it refuses.
async fn start(settings: Settings) -> anyhow::Result<(String, ServerHandle)> {
    let db = Database::connect(&settings.database_url, settings.db_pool_size)?;
    let keys = ServerKeys::load(&db, &settings).await?;
    let app = Application::build_with(settings, db, keys, |_| {}).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    Ok((address, handle))
}

fn with_secrets(app: &TestApp, secrets: Sealer) -> Settings {
    let mut settings = app.settings.clone();
    settings.secrets = secrets;
    settings
}

/// A client_credentials token from the instance at `base`.
async fn cc_token(base: &str, creds: (&str, &str)) -> reqwest::Response {
    call(
        base,
        "/oauth/token",
        Some(creds),
        &[("grant_type", "client_credentials")],
    )
    .await
}

async fn cc_client(app: &TestApp) -> (String, String) {
    let (id, secret) = app
        .create_client(SCOPE, &["client_credentials"], false)
        .await;
    (id, secret.unwrap())
}

#[tokio::test]
async fn the_stored_rows_hold_no_key_material() {
    let app = spawn_app().await;
    // A second signing key: the active one and a retired one are checked.
    let sealer = app.settings.secrets.clone();
    app.with_conn(move |conn| jwt::rotate(conn, &sealer, Utc::now().naive_utc(), false).unwrap())
        .await;
    // The keys the service uses, checked against what it publishes.
    let sealer = app.settings.secrets.clone();
    let in_use = app
        .with_conn(move |conn| {
            let long_ago = Utc::now().naive_utc() - chrono::Duration::days(1);
            SigningKeyRow::load_current(conn, &sealer, long_ago).unwrap()
        })
        .await;
    assert_eq!(in_use.len(), 2);
    let keys = ServerKeys::load(&app.db, &app.settings).await.unwrap();
    let (raw_keys, raw_secrets) = raw_rows(&app).await;
    assert_eq!(raw_keys.len(), 2);
    for key in &in_use {
        let secret = p256::SecretKey::from_pkcs8_der(&key.private_key).unwrap();
        let point = secret.public_key().to_encoded_point(false);
        let jwk: Value = serde_json::from_str(&key.public_jwk).unwrap();
        assert_eq!(jwk["x"], URL_SAFE_NO_PAD.encode(point.x().unwrap()));
        assert_eq!(jwk["y"], URL_SAFE_NO_PAD.encode(point.y().unwrap()));

        let raw = raw_keys.iter().find(|r| r.id == key.kid).unwrap();
        let stored = &raw.stored;
        assert!(stored.starts_with(b"enc1:"), "{:?}", &stored[..8]);
        assert_eq!(stored.len(), OVERHEAD + key.private_key.len());
        // Neither the DER, nor its private scalar, nor a PEM of it.
        assert_ne!(stored[0], 0x30, "a DER SEQUENCE");
        assert!(p256::SecretKey::from_pkcs8_der(stored).is_err());
        assert!(!contains(stored, &key.private_key[..16]));
        assert!(!contains(stored, &secret.to_bytes()[..16]));
        assert!(!contains(stored, b"BEGIN") && !contains(stored, b"PRIVATE KEY"));
        if let Ok(text) = std::str::from_utf8(stored) {
            assert!(STANDARD.decode(text.trim()).is_err(), "base64 of something");
        }
    }
    assert_eq!(raw_secrets.len(), 1);
    let csrf = &raw_secrets[0];
    assert_eq!(csrf.id, "csrf");
    assert!(csrf.stored.starts_with(b"enc1:"));
    assert_eq!(csrf.stored.len(), OVERHEAD + 32);
    assert!(!contains(&csrf.stored, &keys.csrf[..16]));
    assert!(!contains(&csrf.stored, &keys.csrf[16..]));

    // And the sealed key signs: a token the service issues is active.
    let (id, secret) = cc_client(&app).await;
    let resp = cc_token(&app.address, (&id, &secret)).await;
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        introspect_at(&app.address, (&id, &secret), access).await["active"],
        true
    );
}

#[tokio::test]
async fn plain_rows_of_an_older_database_are_encrypted_at_start_up() {
    // Written without a key: what databases from before held.
    let app = spawn_app_custom(|s| s.secrets = Sealer::default(), |_| {}).await;
    let (id, secret) = cc_client(&app).await;
    let token: Value = cc_token(&app.address, (&id, &secret))
        .await
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    let (plain_keys, plain_secrets) = raw_rows(&app).await;
    assert_eq!(plain_keys[0].stored[0], 0x30, "plain PKCS#8 DER");
    assert_eq!(plain_secrets[0].stored.len(), 32);

    // Started with a key: every row is sealed, and still the same secret.
    let (base, handle) = start(with_secrets(&app, crate::helpers::test_sealer()))
        .await
        .unwrap();
    let (keys, secrets) = raw_rows(&app).await;
    let sealer = crate::helpers::test_sealer();
    for (before, after) in plain_keys.iter().zip(&keys) {
        assert!(after.stored.starts_with(b"enc1:"));
        let opened = sealer
            .open(
                dzdesk_auth::secrets::Row::SigningKey(&after.id),
                &after.stored,
            )
            .unwrap();
        assert_eq!(opened.secret.as_slice(), before.stored.as_slice());
    }
    assert!(secrets[0].stored.starts_with(b"enc1:"));
    let opened = sealer
        .open(
            dzdesk_auth::secrets::Row::ServerSecret("csrf"),
            &secrets[0].stored,
        )
        .unwrap();
    assert_eq!(opened.secret.as_slice(), plain_secrets[0].stored.as_slice());
    // The token signed before is valid on the instance that sealed its key.
    assert_eq!(
        introspect_at(&base, (&id, &secret), &access).await["active"],
        true
    );
    handle.stop(false).await;

    // From now on a start without the key is refused.
    let err = start(with_secrets(&app, Sealer::default()))
        .await
        .expect_err("refused");
    assert!(
        matches!(secrets_error(&err), Some(SecretsError::NoKey { .. })),
        "{err:#}"
    );
}

/// The non-empty lines of a process's standard error.
fn lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn signing_key_count(db: &TestDatabase) -> i64 {
    let url = dzdesk_auth::db::DatabaseUrl::parse(&db.url).unwrap();
    let database = Database::connect(&url, 1).unwrap();
    let mut conn = database.conn().unwrap();
    signing_keys::table.count().get_result(&mut **conn).unwrap()
}

#[test]
fn a_wrong_or_missing_key_stops_start_up_with_one_clear_line() {
    let db = TestDatabase::new();
    // A signing key sealed under the test key.
    let out = run(&["keys", "rotate"], &[("DATABASE_URL", &db.url)], None);
    assert!(out.status.success(), "{:?}", lines(&out.stderr));
    let wrong = random_key();
    let commands: [&[&str]; 3] = [&["serve"], &["keys", "rotate"], &["secrets", "rotate"]];
    for args in commands {
        for (key, old, says) in [
            (
                wrong.as_str(),
                None,
                "cannot be decrypted with DZDESK_SECRETS_KEY",
            ),
            (wrong.as_str(), Some(wrong.as_str()), "cannot be decrypted"),
            (
                "",
                None,
                "DZDESK_SECRETS_KEY is not set, but the stored secrets are encrypted",
            ),
        ] {
            let mut env = vec![
                ("DATABASE_URL", db.url.as_str()),
                ("DZDESK_LISTEN", "127.0.0.1:0"),
                ("DZDESK_SECRETS_KEY", key),
            ];
            if let Some(old) = old {
                env.push(("DZDESK_SECRETS_KEY_OLD", old));
            }
            if args == ["secrets", "rotate"] && key.is_empty() {
                continue; // refused for want of a key, below
            }
            let out = run(args, &env, None);
            let err = lines(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {err:?}");
            assert_eq!(err.len(), 1, "{args:?}: {err:?}");
            assert!(err[0].contains(says), "{args:?}: {err:?}");
            assert!(err[0].contains("DZDESK_SECRETS_KEY_OLD") || key.is_empty());
            assert!(!err[0].contains(&wrong) && !err[0].contains(TEST_SECRETS_KEY));
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    // Nothing was written under the wrong key.
    assert_eq!(signing_key_count(&db), 1);
    let out = run(
        &["secrets", "rotate"],
        &[("DATABASE_URL", &db.url), ("DZDESK_SECRETS_KEY", "")],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(lines(&out.stderr)[0].starts_with("error: DZDESK_SECRETS_KEY: is not set"));
}

#[test]
fn a_malformed_key_stops_every_mode_with_one_line_that_does_not_echo_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let sqlite = format!("sqlite://{}", file.display());
    let short = STANDARD.encode(*b"sixteen byte key");
    let good = random_key();
    for issuer in ["http://localhost:8080", "https://auth.example.com"] {
        for bad in ["not base64: hunter2!", short.as_str()] {
            for (var, env) in [
                ("DZDESK_SECRETS_KEY", vec![("DZDESK_SECRETS_KEY", bad)]),
                (
                    "DZDESK_SECRETS_KEY_OLD",
                    vec![
                        ("DZDESK_SECRETS_KEY", good.as_str()),
                        ("DZDESK_SECRETS_KEY_OLD", bad),
                    ],
                ),
            ] {
                let mut env = env.clone();
                env.extend([
                    ("DATABASE_URL", sqlite.as_str()),
                    ("DZDESK_ISSUER", issuer),
                    ("DZDESK_TRUSTED_PROXIES", "127.0.0.1"),
                ]);
                let out = run(&["serve"], &env, None);
                let err = lines(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{env:?}: {err:?}");
                assert_eq!(err.len(), 1, "{err:?}");
                assert!(err[0].starts_with(&format!("error: {var}: ")), "{err:?}");
                assert!(err[0].contains("openssl rand -base64 32"), "{err:?}");
                assert!(
                    !err[0].contains(bad) && !err[0].contains("hunter2"),
                    "{err:?}"
                );
                assert!(!err[0].contains(&good), "{err:?}");
            }
        }
    }
    // The old key alone: the new one is missing.
    let out = run(
        &["serve"],
        &[
            ("DATABASE_URL", &sqlite),
            ("DZDESK_SECRETS_KEY", ""),
            ("DZDESK_SECRETS_KEY_OLD", &good),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(lines(&out.stderr)[0].starts_with("error: DZDESK_SECRETS_KEY_OLD: is set without"));
    assert!(!file.exists(), "refused before the database was touched");
}

#[tokio::test]
async fn production_refuses_to_start_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let sqlite = format!("sqlite://{}", file.display());
    let env = [
        ("DATABASE_URL", sqlite.as_str()),
        ("DZDESK_ISSUER", "https://auth.example.com"),
        // So that only the missing key is wrong (TLS or a trusted proxy).
        ("DZDESK_TRUSTED_PROXIES", "127.0.0.1"),
        ("DZDESK_SECRETS_KEY", ""),
    ];
    let commands: [&[&str]; 3] = [&["serve"], &["keys", "rotate"], &["secrets", "rotate"]];
    for args in commands {
        let out = run(args, &env, None);
        let err = lines(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err:?}");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("error: DZDESK_SECRETS_KEY: is required in production"),
            "{err:?}"
        );
        assert!(out.stdout.is_empty());
    }
    assert!(!file.exists(), "refused before the database was touched");

    // In process too: a production instance loads no keys without it.
    let app = spawn_app().await;
    let mut settings = with_secrets(&app, Sealer::default());
    settings.issuer = "https://auth.example.com".into();
    let err = ServerKeys::load(&app.db, &settings).await.err().unwrap();
    assert!(err.to_string().contains("DZDESK_SECRETS_KEY"), "{err:#}");
    settings.secrets = crate::helpers::test_sealer();
    assert!(ServerKeys::load(&app.db, &settings).await.is_ok());
}

/// Runs `serve` until it listens and has answered a few requests that
/// re-read the signing keys; returns its whole log.
async fn serve_log(db: &TestDatabase, key: Option<&str>) -> Vec<String> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("DZDESK_LISTEN", "127.0.0.1:0")
        .env("DZDESK_KEY_RELOAD_SECS", "0")
        .env_remove("DZDESK_ISSUER")
        .env_remove("RUST_LOG")
        .env_remove("DZDESK_SECRETS_KEY")
        .env_remove("DZDESK_SECRETS_KEY_OLD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = key {
        cmd.env("DZDESK_SECRETS_KEY", key);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            log.push(line.clone());
            if let Some(addr) = line.split("listening on ").nth(1) {
                return addr.trim().to_owned();
            }
        }
        panic!("server exited before listening: {log:?}");
    })
    .await
    .expect("server started");
    // Every token request re-reads the keys (DZDESK_KEY_RELOAD_SECS=0).
    for _ in 0..3 {
        let resp = call(
            &base,
            "/oauth/token",
            Some(("client_nobody", "dzs_wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(resp.status(), 401);
        let jwks = crate::helpers::http_get(format!("{base}/.well-known/jwks.json"))
            .await
            .unwrap();
        assert_eq!(jwks.status(), 200);
    }
    child.start_kill().unwrap();
    while let Ok(Some(line)) = stderr.next_line().await {
        log.push(line);
    }
    log
}

#[tokio::test]
async fn development_without_the_key_warns_once() {
    let db = TestDatabase::new();
    let log = serve_log(&db, None).await;
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("DZDESK_SECRETS_KEY"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    assert!(warnings[0].contains("WARN"), "{log:#?}");
    assert!(warnings[0].contains("unencrypted"), "{log:#?}");

    // With a key, nothing to warn of. (A database of its own: on the first
    // one this start would encrypt the plain rows, and say so.)
    let db = TestDatabase::new();
    let log = serve_log(&db, Some(TEST_SECRETS_KEY)).await;
    assert!(
        !log.iter().any(|l| l.contains("DZDESK_SECRETS_KEY")),
        "{log:#?}"
    );
}

async fn refresh_at(base: &str, flow: &Flow, refresh_token: &str) -> Value {
    let secret = flow.secret.as_deref().unwrap();
    let resp = call(
        base,
        "/oauth/token",
        Some((&flow.client_id, secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn str_of<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field].as_str().unwrap()
}

#[tokio::test]
async fn rotating_the_key_with_the_old_one_set_keeps_every_issued_token_valid() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let app = &flow.app;
    let creds = (flow.client_id.as_str(), flow.secret.as_deref().unwrap());
    let first = flow.tokens(SCOPE).await;
    let new = random_key();

    // Restarted with the new key and the old one beside it.
    let rotating = with_secrets(app, sealer(&new, Some(TEST_SECRETS_KEY)));
    let (base, during) = start(rotating).await.unwrap();
    let access = str_of(&first, "access_token");
    assert_eq!(introspect_at(&base, creds, access).await["active"], true);
    let second = refresh_at(&base, &flow, str_of(&first, "refresh_token")).await;
    assert_eq!(
        introspect_at(&base, creds, str_of(&second, "access_token")).await["active"],
        true
    );

    // Every row re-encrypted under the new key, in one command.
    let (keys, secrets) = raw_rows(app).await;
    let out = run(
        &["secrets", "rotate"],
        &[
            ("DATABASE_URL", &app.database_url()),
            ("DZDESK_SECRETS_KEY", &new),
            ("DZDESK_SECRETS_KEY_OLD", TEST_SECRETS_KEY),
        ],
        None,
    );
    assert!(out.status.success(), "{:?}", lines(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        serde_json::json!({"reencrypted": keys.len() + secrets.len()})
    );
    let only_new = sealer(&new, None);
    let (keys, secrets) = raw_rows(app).await;
    for raw in &keys {
        let row = dzdesk_auth::secrets::Row::SigningKey(&raw.id);
        assert!(only_new.open(row, &raw.stored).is_ok(), "{}", raw.id);
    }
    for raw in &secrets {
        let row = dzdesk_auth::secrets::Row::ServerSecret(&raw.id);
        assert!(only_new.open(row, &raw.stored).is_ok(), "{}", raw.id);
    }
    during.stop(false).await;

    // Started with the new key alone: still valid, and refresh still works.
    let (base, after) = start(with_secrets(app, only_new)).await.unwrap();
    for body in [&first, &second] {
        let access = str_of(body, "access_token");
        assert_eq!(introspect_at(&base, creds, access).await["active"], true);
    }
    let third = refresh_at(&base, &flow, str_of(&second, "refresh_token")).await;
    assert_eq!(
        introspect_at(&base, creds, str_of(&third, "access_token")).await["active"],
        true
    );
    after.stop(false).await;

    // The old key alone opens nothing any more.
    let err = start(with_secrets(app, crate::helpers::test_sealer()))
        .await
        .expect_err("refused");
    assert!(
        matches!(secrets_error(&err), Some(SecretsError::Unreadable { .. })),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_is_detected() {
    let app = spawn_app().await;
    let (id, secret) = cc_client(&app).await;
    assert_eq!(cc_token(&app.address, (&id, &secret)).await.status(), 200);
    let sealer = app.settings.secrets.clone();
    app.with_conn(move |conn| jwt::rotate(conn, &sealer, Utc::now().naive_utc(), false).unwrap())
        .await;

    // Each signing key's ciphertext in the other's row.
    app.with_conn(|conn| {
        let rows = raw_signing_keys(conn);
        assert_eq!(rows.len(), 2);
        for (row, other) in [(&rows[0], &rows[1]), (&rows[1], &rows[0])] {
            diesel::update(signing_keys::table.find(&row.id))
                .set(signing_keys::private_key.eq(&other.stored))
                .execute(conn)
                .unwrap();
        }
    })
    .await;
    let err = ServerKeys::load(&app.db, &app.settings)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(secrets_error(&err), Some(SecretsError::Unreadable { .. })),
        "{err:#}"
    );
    assert!(err.to_string().contains("cannot be decrypted"), "{err:#}");
    // The running instance re-reads its keys: it signs nothing with them.
    let resp = cc_token(&app.address, (&id, &secret)).await;
    assert_ne!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");

    // The CSRF key's ciphertext under another name does not open either.
    let sealer = app.settings.secrets.clone();
    let moved = app
        .with_conn(move |conn| {
            let csrf = raw_server_secrets(conn).remove(0);
            diesel::insert_into(server_secrets::table)
                .values((
                    server_secrets::name.eq("session"),
                    server_secrets::secret.eq(&csrf.stored),
                    server_secrets::created_at.eq(Utc::now().naive_utc()),
                ))
                .execute(conn)
                .unwrap();
            ServerSecret::get_or_create(conn, &sealer, "session", Utc::now().naive_utc())
                .err()
                .map(|e| e.to_string())
        })
        .await;
    let moved = moved.expect("refused");
    assert!(moved.contains("cannot be decrypted"), "{moved}");
}

/// The kid in a JWT's header (its signature is checked elsewhere).
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// Someone with write access to the database plants a plain signing key of
/// their own (newer than the real one) while the service runs with a key:
/// the service never signs with it, nor publishes or trusts it. (Plain rows
/// are sealed at start-up only; one found afterwards is not ours.)
#[tokio::test]
async fn a_plain_signing_key_planted_in_the_database_is_never_used() {
    let app = spawn_app().await;
    let creds = cc_client(&app).await;
    let before = cc_token(&app.address, (&creds.0, &creds.1)).await;
    assert_eq!(before.status(), 200);
    let before: Value = before.json().await.unwrap();
    let real_kid = kid_of(before["access_token"].as_str().unwrap());

    let mut planted =
        jwt::generate_key(Utc::now().naive_utc() + chrono::Duration::hours(1)).unwrap();
    planted.kid = "planted-kid-0001".into();
    let row = planted.clone();
    app.with_conn(move |conn| {
        diesel::insert_into(signing_keys::table)
            .values(&row)
            .execute(conn)
            .unwrap();
    })
    .await;
    // Reloaded on every use in tests (DZDESK_KEY_RELOAD_SECS=0).
    for _ in 0..3 {
        let resp = cc_token(&app.address, (&creds.0, &creds.1)).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(kid_of(token), real_kid, "signed with the planted key");
    }
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !jwks.to_string().contains("planted-kid-0001"),
        "the planted key is published: {jwks}"
    );
    // A token the planter signs with it is not active.
    let forged = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("planted-kid-0001".into());
        header.typ = Some("at+jwt".into());
        let mut claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(
                    before["access_token"]
                        .as_str()
                        .unwrap()
                        .split('.')
                        .nth(1)
                        .unwrap(),
                )
                .unwrap(),
        )
        .unwrap();
        claims["jti"] = Value::String("forged-jti".into());
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&planted.private_key),
        )
        .unwrap()
    };
    let active = introspect_at(&app.address, (&creds.0, &creds.1), &forged).await;
    assert_eq!(active["active"], false, "{active}");
}
