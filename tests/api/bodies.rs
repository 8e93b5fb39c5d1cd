//! Errors that happen before any handler logic (a body too large, a wrong
//! content type, a body that does not decode, a method not served) keep the
//! shape of their surface: the RFC 6749 5.2 body on the OAuth JSON
//! endpoints, the envelope under /v1, the HTML page on browser pages.

use actix_web::web;
use dzdesk_auth::domain::Role;
use dzdesk_auth::error::api_ok;
use reqwest::Response;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, spawn_app_custom, TestApp};
use crate::v1_keys::user_with_key;

const MIB: usize = 1024 * 1024;

fn big_form() -> String {
    format!("grant_type=client_credentials&pad={}", "x".repeat(MIB))
}

fn big_json() -> String {
    json!({"name": "big", "scopes": ["requests:read"], "pad": "x".repeat(MIB)}).to_string()
}

fn content_type(resp: &Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// An RFC 6749 5.2 error body: exactly `error` and `error_description`,
/// JSON, never cached.
async fn assert_rfc_error(resp: Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status, "{}", resp.url());
    assert!(
        content_type(&resp).starts_with("application/json"),
        "{}",
        content_type(&resp)
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    let description = body["error_description"].as_str().unwrap().to_owned();
    assert!(!description.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    description
}

/// The /v1 envelope error: exactly `success: false` and `error`.
async fn assert_envelope(resp: Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status, "{}", resp.url());
    assert!(
        content_type(&resp).starts_with("application/json"),
        "{}",
        content_type(&resp)
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn service_client(app: &TestApp) -> (String, String) {
    let (id, secret) = app
        .create_client("requests:read", &["client_credentials"], false)
        .await;
    (id, secret.unwrap())
}

#[tokio::test]
async fn a_1_mib_form_at_token_introspect_and_revoke_is_413_with_the_rfc_body() {
    let app = spawn_app().await;
    let (id, secret) = service_client(&app).await;
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        for authenticated in [true, false] {
            let mut req = app
                .client
                .post(app.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(big_form());
            if authenticated {
                req = req.basic_auth(&id, Some(&secret));
            }
            let description =
                assert_rfc_error(req.send().await.unwrap(), 413, "invalid_request").await;
            assert!(description.contains("larger than"), "{path}: {description}");
        }
    }
    // Just over the 16 KiB limit, too.
    let resp = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&pad={}",
            "x".repeat(16 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_rfc_error(resp, 413, "invalid_request").await;
}

#[tokio::test]
async fn a_1_mib_json_body_at_register_is_413_with_the_rfc_body() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::POST, "/oauth/register"),
        (reqwest::Method::PUT, "/oauth/register/client_x"),
    ] {
        let resp = app
            .client
            .request(method, app.url(path))
            .bearer_auth("whatever")
            .header("content-type", "application/json")
            .body(big_json())
            .send()
            .await
            .unwrap();
        assert_rfc_error(resp, 413, "invalid_request").await;
    }
}

/// A raw HTTP/1.1 request whose body is sent chunked, without
/// Content-Length: (status, content-type, body).
async fn chunked_post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(&request).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        // One chunk is enough for these small answers.
        rest.split_once("\r\n").map_or("", |(_, b)| b)
    } else {
        rest
    };
    let end = body.rfind('}').map_or(0, |i| i + 1);
    let json = serde_json::from_str(&body[..end]).unwrap_or(Value::Null);
    (status, content_type, json)
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_without_content_length_is_refused_in_shape() {
    let app = spawn_app().await;
    let (id, secret) = service_client(&app).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}")
        )
    );
    let form = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(20 * 1024)
    );
    let (status, ct, body) = chunked_post(
        &app,
        "/oauth/token",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &basic),
        ],
        form.as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(body["error"], "invalid_request", "{body}");

    // The same under the limit is an ordinary token request.
    let (status, _, body) = chunked_post(
        &app,
        "/oauth/token",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &basic),
        ],
        b"grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string(), "{body}");

    // /v1: the envelope.
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let bearer = format!("Bearer {key}");
    let json = json!({"name": "big", "scopes": ["requests:read"], "pad": "x".repeat(80 * 1024)})
        .to_string();
    let (status, ct, body) = chunked_post(
        &app,
        "/v1/api-keys",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        json.as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");
}

#[tokio::test]
async fn wrong_content_type_and_bad_encoding_get_the_rfc_body() {
    let app = spawn_app().await;
    let (id, secret) = service_client(&app).await;
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        for (ct, body) in [
            ("application/json", r#"{"token":"x"}"#),
            ("text/plain", "token=x"),
            ("application/x-www-form-urlencoded", "token=%FF%FE"),
        ] {
            let resp = app
                .client
                .post(app.url(path))
                .basic_auth(&id, Some(&secret))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_rfc_error(resp, 400, "invalid_request").await;
        }
        // No Content-Type at all.
        let resp = app
            .client
            .post(app.url(path))
            .basic_auth(&id, Some(&secret))
            .body("token=x")
            .send()
            .await
            .unwrap();
        assert_rfc_error(resp, 400, "invalid_request").await;
    }
    // Registration reads JSON whatever the Content-Type says; what is not a
    // JSON object of metadata is invalid_client_metadata, in the RFC body.
    for (ct, body) in [
        ("application/x-www-form-urlencoded", "client_name=x"),
        ("text/plain", "{not json"),
        ("application/json", "\u{FEFF}\u{0}"),
    ] {
        let resp = app
            .client
            .post(app.url("/oauth/register"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_rfc_error(resp, 400, "invalid_client_metadata").await;
    }
}

#[tokio::test]
async fn a_method_a_json_endpoint_does_not_serve_gets_the_rfc_body() {
    let app = spawn_app().await;
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let resp = app.get(path).await;
        assert!(resp.headers()["allow"].to_str().unwrap().contains("POST"));
        assert_rfc_error(resp, 405, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_1_mib_json_body_at_v1_api_keys_is_413_in_the_envelope() {
    let app = spawn_app().await;
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let resp = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(big_json())
        .send()
        .await
        .unwrap();
    let message = assert_envelope(resp, 413, "BAD_REQUEST").await;
    assert!(message.contains("larger than"), "{message}");

    // Without a credential the request is refused for that first, in the
    // envelope as well.
    let resp = app
        .client
        .post(app.url("/v1/api-keys"))
        .header("content-type", "application/json")
        .body(big_json())
        .send()
        .await
        .unwrap();
    assert_envelope(resp, 401, "UNAUTHORIZED").await;
}

async fn raw_bytes(body: web::Bytes) -> actix_web::HttpResponse {
    api_ok(json!({ "len": body.len() }))
}

async fn raw_string(body: String) -> actix_web::HttpResponse {
    api_ok(json!({ "len": body.len() }))
}

#[tokio::test]
async fn a_bytes_or_string_body_over_the_v1_limit_is_413_in_the_envelope() {
    let app = spawn_app_custom(
        |_| {},
        |cfg| {
            cfg.route("/test/bytes", web::post().to(raw_bytes))
                .route("/test/string", web::post().to(raw_string));
        },
    )
    .await;
    for path in ["/v1/test/bytes", "/v1/test/string"] {
        let resp = app
            .client
            .post(app.url(path))
            .body("x".repeat(MIB))
            .send()
            .await
            .unwrap();
        assert_envelope(resp, 413, "BAD_REQUEST").await;
        let resp = app
            .client
            .post(app.url(path))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["data"]["len"], 3);
    }
    // A method the path does not serve is an endpoint we do not serve.
    let resp = app.get("/v1/test/bytes").await;
    assert_envelope(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn browser_forms_keep_the_html_error_page() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email=a%40b.c&password={}", "x".repeat(MIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        content_type(&resp).starts_with("text/html"),
        "{}",
        content_type(&resp)
    );
}
