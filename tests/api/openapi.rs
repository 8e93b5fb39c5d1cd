//! `GET /openapi.json`: the OpenAPI 3.1 document of the route table, and
//! the bugs schemathesis (`scripts/schemathesis.sh`) found.

use dzdesk_auth::domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::v1_keys::{api, user_with_key};

/// Every operation the route table serves and documents. A new operation
/// goes here too.
const OPERATIONS: [(&str, &str); 29] = [
    ("get", "/v1/me"),
    ("get", "/.well-known/openid-configuration"),
    ("get", "/oauth/userinfo"),
    ("post", "/oauth/userinfo"),
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("post", "/v1/api-keys/{id}/rotate"),
    ("get", "/v1/api-keys/{id}/usage"),
    ("get", "/v1/ip-allowlist"),
    ("put", "/v1/ip-allowlist"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("get", "/v1/users/{id}"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("get", "/oauth/authorize"),
    ("post", "/oauth/authorize"),
    ("post", "/oauth/token"),
    ("post", "/oauth/introspect"),
    ("post", "/oauth/par"),
    ("post", "/oauth/revoke"),
    ("post", "/oauth/register"),
    ("get", "/oauth/register/{client_id}"),
    ("put", "/oauth/register/{client_id}"),
    ("delete", "/oauth/register/{client_id}"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/.well-known/oauth-authorization-server"),
    (
        "get",
        "/.well-known/oauth-authorization-server/{issuer_path}",
    ),
];

async fn document(app: &crate::helpers::TestApp) -> Value {
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    resp.json().await.unwrap()
}

/// Whether `resp` is the answer of a route that does not exist: the /v1
/// envelope's "No such endpoint", or the HTML 404 page elsewhere.
async fn is_unknown_route(resp: reqwest::Response) -> bool {
    if resp.status() != StatusCode::NOT_FOUND {
        return false;
    }
    let body = resp.text().await.unwrap();
    body.contains("No such endpoint") || body.contains("<html")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_route_and_each_is_served() {
    // An issuer with a path, so that its RFC 8414 3.1 metadata URL exists.
    let app =
        crate::helpers::spawn_app_custom(|s| s.issuer = "http://127.0.0.1/auth".into(), |_| {})
            .await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();

    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Each documented operation exists on the server: called without
    // credentials, it answers anything but the 404 of an unknown route.
    let client = crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "nobody")
            .replace("{client_id}", "nobody")
            .replace("{issuer_path}", "auth");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = client
            .request(method.clone(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert!(
            !is_unknown_route(resp).await,
            "{method} {path} is documented but not served"
        );
    }
    // /docs points to the document.
    let docs = app.get("/docs").await.text().await.unwrap();
    assert!(docs.contains(r#"href="/openapi.json""#), "{docs}");

    // And the check can fail: a route that is not there.
    let resp = client.get(app.url("/v1/not-a-route")).send().await.unwrap();
    assert!(is_unknown_route(resp).await);
}

/// Every `$ref` under `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_in_the_document_resolves() {
    // An unresolvable reference makes a tool skip that part of the schema
    // (schemathesis did, for the usage log's `status` filter).
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 20, "{}", found.len());
    for (at, r) in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external reference {r}"));
        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
    }
}

#[tokio::test]
async fn the_document_has_the_envelope_error_codes_headers_and_security() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];

    let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "BAD_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "NOT_FOUND",
        "CONFLICT",
        "RATE_LIMITED",
        "SERVER_ERROR",
        "SERVICE_UNAVAILABLE",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    assert_eq!(
        schemas["ErrorEnvelope"]["properties"]["error"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    assert_eq!(
        schemas["ErrorEnvelope"]["properties"]["success"]["const"],
        false
    );
    assert!(schemas["OAuthError"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("invalid_grant")));

    // The success envelope around each /v1 answer.
    let me = &doc["paths"]["/v1/me"]["get"];
    let ok = me["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let name = ok.rsplit('/').next().unwrap();
    let envelope = &schemas[name];
    assert_eq!(
        envelope["required"],
        json!(["success", "data"]),
        "{envelope}"
    );
    assert!(envelope["properties"]["data"].is_object(), "{envelope}");

    // Every /v1 answer carries the rate-limit headers; 429 and 503 Retry-After;
    // each /v1 operation answers 401, 403, 429 and 503 in the envelope.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
                for status in ["401", "403", "429", "503"] {
                    let r = &responses[status];
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorEnvelope",
                        "{method} {path} {status}"
                    );
                }
                for (status, r) in responses {
                    for h in [
                        "X-RateLimit-Limit",
                        "X-RateLimit-Remaining",
                        "X-RateLimit-Reset",
                    ] {
                        assert!(r["headers"][h].is_object(), "{method} {path} {status} {h}");
                    }
                    if status == "429" || status == "503" {
                        assert!(r["headers"]["Retry-After"].is_object());
                    }
                }
            }
        }
    }
    let headers = &doc["components"]["headers"];
    assert_eq!(headers["X-RateLimit-Limit"]["required"], true);

    // The OAuth JSON endpoints: form bodies, the RFC 6749 5.2 body, client
    // authentication; bearer at registration.
    for path in [
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/oauth/par",
    ] {
        let op = &doc["paths"][path]["post"];
        assert!(
            op["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object(),
            "{path}"
        );
        assert_eq!(
            op["security"][0],
            json!({"client_secret_basic": []}),
            "{path}"
        );
        for status in ["400", "401", "413", "429", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/OAuthError",
                "{path} {status}"
            );
        }
    }
    assert_eq!(
        doc["paths"]["/oauth/register"]["post"]["security"],
        json!([{"bearer": []}])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["client_secret_basic"]["scheme"], "basic");
    assert!(schemes["client_secret_basic"]["description"]
        .as_str()
        .unwrap()
        .contains("client_secret_post"));
}

/// schemathesis: JSON Schema's `integer` admits `30.0`, which the API
/// refused with 400.
#[tokio::test]
async fn whole_numbers_written_with_a_zero_fraction_are_accepted() {
    let app = spawn_app().await;
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let body = json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": 30.0});
    let reply = api(&app, Method::POST, "/v1/api-keys", Some(&key), Some(body)).await;
    let data = reply.data(201);
    assert!(data["expires_at"].is_string(), "{data}");
    let body = json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": 30.5});
    let reply = api(&app, Method::POST, "/v1/api-keys", Some(&key), Some(body)).await;
    reply.assert_error(400, "BAD_REQUEST");
}

/// Registering through `routes::openapi::Endpoint` keeps each surface's
/// answer to a method a path does not serve: the browser's 404 page (as
/// `App::route` did), the envelope's NOT_FOUND on /v1, and 405 with `Allow`
/// in the RFC body on the OAuth JSON endpoints.
#[tokio::test]
async fn a_method_a_path_does_not_serve_is_answered_as_before() {
    let app = spawn_app().await;
    let client = crate::helpers::new_client();
    for (method, path) in [
        (Method::PUT, "/oauth/authorize"),
        (Method::POST, "/.well-known/jwks.json"),
        (Method::POST, "/.well-known/oauth-authorization-server"),
    ] {
        let resp = client.request(method, app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.text().await.unwrap().contains("<html"), "{path}");
    }
    let resp = client.post(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let resp = client
        .patch(app.url("/oauth/register/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, PUT, DELETE");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}
