//! POST /oauth/register (RFC 7591) and GET/PUT/DELETE
//! /oauth/register/{client_id} (RFC 7592).

use dzdesk_auth::db::models::Client;
use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;
use dzdesk_auth::tokens;
use reqwest::Response;
use serde_json::{json, Value};

use crate::oauth_flow::{Flow, REDIRECT};

/// An admin's access token carrying `admin` (the initial access token).
async fn admin_token(flow: &Flow) -> String {
    flow.tokens("requests:read admin").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn admin_flow() -> (Flow, String) {
    let flow = Flow::new(Role::Admin, "requests:read requests:write admin", false).await;
    let token = admin_token(&flow).await;
    (flow, token)
}

async fn post(flow: &Flow, token: Option<&str>, body: &Value) -> Response {
    let mut req = flow
        .app
        .client
        .post(flow.app.url("/oauth/register"))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn error_of(resp: Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
}

/// A client_credentials token request as the registered client.
async fn client_credentials(flow: &Flow, id: &str, secret: &str) -> Response {
    flow.app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

fn confidential() -> Value {
    json!({
        "client_name": "Zapier",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "requests:read",
    })
}

#[tokio::test]
async fn registering_a_confidential_client_returns_its_credentials_once() {
    let (flow, token) = admin_flow().await;
    let resp = post(&flow, Some(&token), &confidential()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let info: Value = resp.json().await.unwrap();
    let id = info["client_id"].as_str().unwrap();
    let secret = info["client_secret"].as_str().unwrap();
    let rat = info["registration_access_token"].as_str().unwrap();
    assert!(id.starts_with("client_") && secret.starts_with("dzs_") && rat.starts_with("dzrat_"));
    assert!(info["client_id_issued_at"].as_i64().unwrap() > 0);
    assert_eq!(info["client_secret_expires_at"], 0);
    assert_eq!(
        info["registration_client_uri"],
        format!("{}/oauth/register/{id}", flow.app.settings.issuer)
    );
    assert_eq!(info["client_name"], "Zapier");
    assert_eq!(info["redirect_uris"], json!([REDIRECT]));
    assert_eq!(info["scope"], "requests:read");

    // Stored hashed; the secret works at the token endpoint.
    let id2 = id.to_owned();
    let stored: Client = flow
        .app
        .with_conn(move |conn| Client::find(conn, &id2).unwrap().unwrap())
        .await;
    assert_eq!(
        stored.registration_token_hash.as_deref(),
        Some(&*tokens::hash_secret(rat))
    );
    assert!(stored.verify_secret(secret, chrono::Utc::now().naive_utc()));
    let resp = client_credentials(&flow, id, secret).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn registering_a_public_client_with_auth_method_none() {
    let (flow, token) = admin_flow().await;
    let mut meta = confidential();
    meta["token_endpoint_auth_method"] = json!("none");
    meta["grant_types"] = json!(["authorization_code", "refresh_token"]);
    meta["redirect_uris"] = json!(["http://127.0.0.1/cb"]);
    let resp = post(&flow, Some(&token), &meta).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert!(info.get("client_secret").is_none());
    assert_eq!(info["token_endpoint_auth_method"], "none");
}

#[tokio::test]
async fn registration_needs_an_active_initial_access_token_with_admin() {
    let (flow, token) = admin_flow().await;
    let resp = post(&flow, None, &confidential()).await;
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    error_of(resp, 401, "invalid_token").await;
    error_of(
        post(&flow, Some("not-a-token"), &confidential()).await,
        401,
        "invalid_token",
    )
    .await;

    // A token without admin.
    let reader = flow.tokens("requests:read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    error_of(
        post(&flow, Some(&reader), &confidential()).await,
        403,
        "insufficient_scope",
    )
    .await;

    // A revoked one.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/revoke"))
        .basic_auth(&flow.client_id, flow.secret.as_deref())
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    error_of(
        post(&flow, Some(&token), &confidential()).await,
        401,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn bad_redirect_uris_are_invalid_redirect_uri() {
    let (flow, token) = admin_flow().await;
    for uris in [
        json!(["http://app.example/cb"]),
        json!(["https://app.example/cb#frag"]),
        json!(["https://*.example/cb"]),
        json!(["https://app.example/*"]),
        json!(["not a uri"]),
        json!([]),
    ] {
        let mut meta = confidential();
        meta["redirect_uris"] = uris.clone();
        error_of(
            post(&flow, Some(&token), &meta).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
    }
}

#[tokio::test]
async fn bad_metadata_is_invalid_client_metadata() {
    let (flow, token) = admin_flow().await;
    let cases: Vec<(&str, Value)> = vec![
        ("grant_types", json!(["password"])),
        ("grant_types", json!(["implicit"])),
        ("response_types", json!(["token"])),
        ("response_types", json!([])),
        ("token_endpoint_auth_method", json!("private_key_jwt")),
        ("scope", json!("no-such-scope")),
        ("client_name", json!("")),
    ];
    for (field, value) in cases {
        let mut meta = confidential();
        meta[field] = value.clone();
        error_of(
            post(&flow, Some(&token), &meta).await,
            400,
            "invalid_client_metadata",
        )
        .await;
    }
    // Public clients cannot use client_credentials; the body must be JSON.
    let mut meta = confidential();
    meta["token_endpoint_auth_method"] = json!("none");
    error_of(
        post(&flow, Some(&token), &meta).await,
        400,
        "invalid_client_metadata",
    )
    .await;
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/register"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    error_of(resp, 400, "invalid_client_metadata").await;
}

async fn registered(flow: &Flow, token: &str) -> Value {
    post(flow, Some(token), &confidential())
        .await
        .json()
        .await
        .unwrap()
}

fn manage(
    flow: &Flow,
    method: reqwest::Method,
    info: &Value,
    token: &str,
) -> reqwest::RequestBuilder {
    let uri = info["registration_client_uri"].as_str().unwrap();
    let path = uri.strip_prefix(&flow.app.settings.issuer).unwrap();
    flow.app
        .client
        .request(method, flow.app.url(path))
        .bearer_auth(token)
}

#[tokio::test]
async fn read_needs_the_clients_own_registration_token() {
    let (flow, token) = admin_flow().await;
    let info = registered(&flow, &token).await;
    let other = registered(&flow, &token).await;
    let rat = info["registration_access_token"].as_str().unwrap();
    let resp = manage(&flow, reqwest::Method::GET, &info, rat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let read: Value = resp.json().await.unwrap();
    assert_eq!(read["client_id"], info["client_id"]);
    assert!(read.get("client_secret").is_none());
    // RFC 7592 3: the answer carries the registration access token, a new
    // one: the one presented is spent.
    assert_eq!(read["token_endpoint_auth_method"], "client_secret_basic");
    let next = read["registration_access_token"].as_str().unwrap();
    assert!(next.starts_with("dzrat_") && next != rat, "{read}");
    let again = manage(&flow, reqwest::Method::GET, &info, next)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    let others = other["registration_access_token"].as_str().unwrap();
    for bad in [rat, next, others, "dzrat_wrong", token.as_str()] {
        let resp = manage(&flow, reqwest::Method::GET, &info, bad)
            .send()
            .await
            .unwrap();
        error_of(resp, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn update_replaces_metadata_and_may_only_narrow_scope() {
    let (flow, token) = admin_flow().await;
    let info = registered(&flow, &token).await;
    let rat = info["registration_access_token"].as_str().unwrap();
    let mut meta = confidential();
    meta["client_id"] = info["client_id"].clone();
    meta["client_name"] = json!("Zapier 2");
    meta["redirect_uris"] = json!(["https://app.example/other"]);
    let resp = manage(&flow, reqwest::Method::PUT, &info, rat)
        .json(&meta)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["client_name"], "Zapier 2");
    let rat = updated["registration_access_token"].as_str().unwrap();
    assert_eq!(
        updated["redirect_uris"],
        json!(["https://app.example/other"])
    );

    for (field, value) in [
        ("scope", json!("requests:read requests:write")),
        ("token_endpoint_auth_method", json!("none")),
        ("client_id", json!("client_other")),
    ] {
        let mut bad = meta.clone();
        bad[field] = value;
        let resp = manage(&flow, reqwest::Method::PUT, &info, rat)
            .json(&bad)
            .send()
            .await
            .unwrap();
        error_of(resp, 400, "invalid_client_metadata").await;
    }
}

#[tokio::test]
async fn deleting_a_client_makes_its_tokens_inactive_at_once() {
    let (flow, token) = admin_flow().await;
    let info = registered(&flow, &token).await;
    let (id, secret) = (
        info["client_id"].as_str().unwrap(),
        info["client_secret"].as_str().unwrap(),
    );
    let issued: Value = client_credentials(&flow, id, secret)
        .await
        .json()
        .await
        .unwrap();
    let access = issued["access_token"].as_str().unwrap();
    let (service, service_secret) = flow
        .app
        .register_client(ClientRequest {
            name: "Service".into(),
            redirect_uris: vec![],
            scope: "requests:read".into(),
            public: false,
            grant_types: vec!["client_credentials".into()],
            require_pkce: false,
            introspect: true,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    let introspect = || {
        flow.app
            .client
            .post(flow.app.url("/oauth/introspect"))
            .basic_auth(&service, service_secret.as_deref())
            .form(&[("token", access)])
            .send()
    };
    let before: Value = introspect().await.unwrap().json().await.unwrap();
    assert_eq!(before["active"], true);

    let rat = info["registration_access_token"].as_str().unwrap();
    let resp = manage(&flow, reqwest::Method::DELETE, &info, rat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let after: Value = introspect().await.unwrap().json().await.unwrap();
    assert_eq!(after, json!({"active": false}));
    let resp = manage(&flow, reqwest::Method::GET, &info, rat)
        .send()
        .await
        .unwrap();
    error_of(resp, 401, "invalid_token").await;
    let resp = client_credentials(&flow, id, secret).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn omitted_scope_defaults_to_requests_read_and_admin_only_when_asked() {
    let (flow, token) = admin_flow().await;
    let mut meta = confidential();
    meta.as_object_mut().unwrap().remove("scope");
    let info: Value = post(&flow, Some(&token), &meta).await.json().await.unwrap();
    assert_eq!(info["scope"], "requests:read");
    // Asked for explicitly, admin is granted (the credential holds it).
    meta["scope"] = json!("requests:read admin");
    let info: Value = post(&flow, Some(&token), &meta).await.json().await.unwrap();
    assert_eq!(info["scope"], "requests:read admin");
}

/// A registrar whose token holds every scope, `users:write` included.
async fn wide_admin_flow() -> (Flow, String) {
    let all = "requests:read requests:write users:read users:write admin";
    let flow = Flow::new(Role::Admin, all, false).await;
    let token = flow.tokens(all).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (flow, token)
}

#[tokio::test]
async fn omitted_scope_is_requests_read_whatever_the_registrar_holds() {
    let (flow, token) = wide_admin_flow().await;
    let meta = json!({
        "client_name": "Defaults",
        "redirect_uris": [REDIRECT],
    });
    let resp = post(&flow, Some(&token), &meta).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["scope"], "requests:read");
    assert_eq!(info["grant_types"], json!(["authorization_code"]));
    let id = info["client_id"].as_str().unwrap().to_owned();
    let stored: Client = flow
        .app
        .with_conn(move |conn| Client::find(conn, &id).unwrap().unwrap())
        .await;
    assert_eq!(stored.scopes, "requests:read");

    // A credential holding only `admin` covers the default too.
    let admin_only = flow.tokens("admin").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let info: Value = post(&flow, Some(&admin_only), &meta)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["scope"], "requests:read");
}

#[tokio::test]
async fn an_update_cannot_add_a_grant_type_the_client_was_not_registered_with() {
    let (flow, token) = wide_admin_flow().await;
    // Registered with defaults: authorization_code only.
    let resp = post(
        &flow,
        Some(&token),
        &json!({"client_name": "Defaults", "redirect_uris": [REDIRECT]}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    let (id, secret, rat) = (
        info["client_id"].as_str().unwrap(),
        info["client_secret"].as_str().unwrap(),
        info["registration_access_token"].as_str().unwrap(),
    );
    for grants in [
        json!(["authorization_code", "client_credentials"]),
        json!(["client_credentials"]),
        json!(["authorization_code", "refresh_token"]),
    ] {
        let resp = manage(&flow, reqwest::Method::PUT, &info, rat)
            .json(&json!({
                "client_id": id,
                "client_name": "Defaults",
                "redirect_uris": [REDIRECT],
                "grant_types": grants,
                "scope": "requests:read",
            }))
            .send()
            .await
            .unwrap();
        error_of(resp, 400, "invalid_client_metadata").await;
    }
    // Nothing changed, and the client still cannot use client_credentials.
    let read: Value = manage(&flow, reqwest::Method::GET, &info, rat)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["grant_types"], json!(["authorization_code"]));
    error_of(
        client_credentials(&flow, id, secret).await,
        400,
        "unauthorized_client",
    )
    .await;
}

#[tokio::test]
async fn an_update_may_narrow_the_grant_types() {
    let (flow, token) = admin_flow().await;
    let info = registered(&flow, &token).await; // all three grant types
    let (id, secret, rat) = (
        info["client_id"].as_str().unwrap(),
        info["client_secret"].as_str().unwrap(),
        info["registration_access_token"].as_str().unwrap(),
    );
    let resp = manage(&flow, reqwest::Method::PUT, &info, rat)
        .json(&json!({
            "client_id": id,
            "client_name": "Zapier",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "scope": "requests:read",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["grant_types"], json!(["client_credentials"]));
    let rat = updated["registration_access_token"].as_str().unwrap();
    assert_eq!(client_credentials(&flow, id, secret).await.status(), 200);
    // Omitted grant_types is the default, authorization_code, which this
    // client no longer has: refused, not silently widened.
    let resp = manage(&flow, reqwest::Method::PUT, &info, rat)
        .json(&json!({
            "client_id": id,
            "client_name": "Zapier",
            "redirect_uris": [REDIRECT],
            "scope": "requests:read",
        }))
        .send()
        .await
        .unwrap();
    error_of(resp, 400, "invalid_client_metadata").await;
}

#[tokio::test]
async fn the_auth_method_is_stored_as_registered_and_concurrent_reads_rotate_once() {
    let (flow, token) = admin_flow().await;
    let mut meta = confidential();
    meta["token_endpoint_auth_method"] = json!("client_secret_post");
    let resp = post(&flow, Some(&token), &meta).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["token_endpoint_auth_method"], "client_secret_post");
    let rat = info["registration_access_token"].as_str().unwrap();
    // Two reads with one token: one gets the next token, the other 401.
    let (a, b) = tokio::join!(
        manage(&flow, reqwest::Method::GET, &info, rat).send(),
        manage(&flow, reqwest::Method::GET, &info, rat).send()
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
    let read: Value = manage(&flow, reqwest::Method::GET, &info, rat)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["error"], "invalid_token", "{read}");
}
