//! What the running service writes to its log: an access line per request,
//! and never a password, cookie, Authorization header or /oauth query string.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::cli::{create_api_key, create_user};
use crate::helpers::{cookie_value, hidden_input, new_client, TestDatabase, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_dzdesk-auth");

#[tokio::test]
async fn no_secret_reaches_the_captured_log() {
    let db = TestDatabase::new();
    assert!(create_user(&db, "ann@example.com", "agent", PASSWORD)
        .status
        .success());
    assert!(create_user(&db, "root@example.com", "admin", PASSWORD)
        .status
        .success());
    let cli_key = create_api_key(&db, "root@example.com", "admin");

    let mut child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("DZDESK_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if let Some(addr) = line.split("listening on ").nth(1) {
                return addr.trim().to_owned();
            }
        }
        panic!("server exited before listening:\n{log}");
    })
    .await
    .expect("server started");

    let client = new_client();
    let page = client.get(format!("{base}/login")).send().await.unwrap();
    let pre = cookie_value(&page, "dzdesk_pre").unwrap();
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let login = client
        .post(format!("{base}/login"))
        .form(&[
            ("email", "ann@example.com"),
            ("password", PASSWORD),
            ("next", "/"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let session = cookie_value(&login, "dzdesk_session").unwrap();
    assert_eq!(
        client
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bearer = "dzd_bearersecretvalue0123456789";
    client
        .get(format!("{base}/v1/me"))
        .header("authorization", format!("Bearer {bearer}"))
        .send()
        .await
        .unwrap();
    let code = "authcodesecret0123456789";
    client
        .get(format!(
            "{base}/oauth/authorize?code={code}&state=statesecret987"
        ))
        .send()
        .await
        .unwrap();
    let refresh = "dzr_refreshsecret0123456789";
    client
        .post(format!("{base}/oauth/token"))
        .basic_auth("client_x", Some("dzs_clientsecret0123456789"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/login"))
        .form(&[
            ("email", "ann@example.com"),
            ("password", "wrong password guess 42"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();

    // API keys and passwords travelling through /v1.
    let me = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(&cli_key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let made: serde_json::Value = client
        .post(format!("{base}/v1/api-keys"))
        .bearer_auth(&cli_key)
        .json(&serde_json::json!({"name": "log test", "scopes": ["requests:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = made["data"]["key"].as_str().unwrap().to_owned();
    let api_password = "api password secret 12345";
    let created = client
        .post(format!("{base}/v1/users"))
        .bearer_auth(&api_key)
        .json(&serde_json::json!({"email": "new@example.com", "password": api_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        403,
        "a requests:read key cannot create users"
    );
    let created = client
        .post(format!("{base}/v1/users"))
        .bearer_auth(&cli_key)
        .json(&serde_json::json!({"email": "new@example.com", "password": api_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Let the last access lines reach the pipe, then stop the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    let _ = child.wait().await;

    // The log did capture the requests (so the checks below can fail)...
    assert!(log.contains("\"POST /login\" 303"), "{log}");
    assert!(log.contains("\"GET /oauth/authorize\" 400"), "{log}");
    assert!(log.contains("\"POST /oauth/token\" 401"), "{log}");
    assert!(log.contains("\"GET /v1/me\" 401"), "{log}");
    assert!(log.contains("\"GET /v1/me\" 200"), "{log}");
    assert!(log.contains("\"POST /v1/api-keys\" 201"), "{log}");
    assert!(log.contains("\"POST /v1/users\" 201"), "{log}");
    // ...and none of the secrets that travelled with them.
    for secret in [
        PASSWORD,
        "wrong password guess 42",
        &session,
        &pre,
        &token,
        bearer,
        code,
        "statesecret987",
        refresh,
        "dzs_clientsecret0123456789",
        &cli_key,
        &api_key,
        api_password,
    ] {
        assert!(!log.contains(secret), "log contains {secret:?}:\n{log}");
    }
}
