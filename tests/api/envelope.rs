//! The /v1 envelope for errors that happen before any handler logic: unknown
//! paths, bodies that do not parse, panics. The JSON handlers here are mounted
//! inside the service's real /v1 scope, so they get its extractor settings.

use actix_web::web;
use dzdesk_auth::error::api_ok;
use serde_json::Value;

use crate::helpers::{assert_security_headers, spawn_app, spawn_app_custom, TestApp};

async fn echo(body: web::Json<Value>) -> actix_web::HttpResponse {
    api_ok(body.into_inner())
}

async fn explode() -> actix_web::HttpResponse {
    panic!("secret detail that must not reach the client");
}

async fn spawn_with_json_routes() -> TestApp {
    spawn_app_custom(
        |_| {},
        |cfg| {
            cfg.route("/test/echo", web::post().to(echo))
                .route("/test/panic", web::get().to(explode));
        },
    )
    .await
}

async fn assert_envelope_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status(), status);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only success and error: {body}"
    );
    message
}

#[tokio::test]
async fn unknown_v1_path_is_a_404_envelope() {
    let app = spawn_app().await;
    for path in ["/v1/does-not-exist", "/v1", "/v1/me/extra/segments"] {
        let resp = app.get(path).await;
        assert_envelope_error(resp, 404, "NOT_FOUND").await;
    }
    let resp = app
        .client
        .delete(app.url("/v1/anything"))
        .send()
        .await
        .unwrap();
    assert_envelope_error(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn unknown_page_outside_v1_is_a_404_html_page() {
    let app = spawn_app().await;
    let resp = app.get("/no-such-page").await;
    assert_eq!(resp.status(), 404);
    assert_security_headers(&resp);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn valid_json_reaches_the_handler_in_a_success_envelope() {
    let app = spawn_with_json_routes().await;
    let resp = app
        .client
        .post(app.url("/v1/test/echo"))
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"success": true, "data": {"a": 1}}));
}

#[tokio::test]
async fn malformed_json_is_a_400_envelope() {
    let app = spawn_with_json_routes().await;
    for bad in ["{bad", "", "[1,", "{\"a\": hunter2secret}"] {
        let resp = app
            .client
            .post(app.url("/v1/test/echo"))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        let message = assert_envelope_error(resp, 400, "BAD_REQUEST").await;
        assert!(!message.contains("hunter2secret"), "body echoed: {message}");
    }
}

#[tokio::test]
async fn oversized_json_is_a_413_envelope() {
    let app = spawn_with_json_routes().await;
    let big = serde_json::json!({ "pad": "x".repeat(100 * 1024) });
    let resp = app
        .client
        .post(app.url("/v1/test/echo"))
        .json(&big)
        .send()
        .await
        .unwrap();
    // spec: "A body too large for its endpoint is 413 with code BAD_REQUEST".
    let message = assert_envelope_error(resp, 413, "BAD_REQUEST").await;
    assert!(message.contains("larger than"), "{message}");
}

#[tokio::test]
async fn wrong_content_type_is_a_400_envelope() {
    let app = spawn_with_json_routes().await;
    let resp = app
        .client
        .post(app.url("/v1/test/echo"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_envelope_error(resp, 400, "BAD_REQUEST").await;
}

#[tokio::test]
async fn a_panicking_handler_is_an_opaque_500_envelope_and_the_server_lives_on() {
    let app = spawn_with_json_routes().await;
    let resp = app.get("/v1/test/panic").await;
    assert_security_headers(&resp);
    let message = assert_envelope_error(resp, 500, "SERVER_ERROR").await;
    assert!(!message.contains("secret detail"), "{message}");
    assert_eq!(app.get("/healthz").await.status(), 200);
}
