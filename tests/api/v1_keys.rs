//! `/v1/`: bearer credentials, `/v1/me`, API keys, their introspection, and
//! the IP allowlist, over real HTTP (the allowlist from real source
//! addresses: 127.0.0.1 and 127.0.0.2).

use std::net::IpAddr;

use chrono::{Duration, Utc};
use diesel::prelude::*;
use dzdesk_auth::api::keys::{create_for_user, MintedBy, NewKey};
use dzdesk_auth::db::schema::api_keys;
use dzdesk_auth::domain::{Role, ScopeSet};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_custom, TestApp};
use crate::introspect::{inactive, introspect, own, service, sign_with_server_key};
use crate::oauth_flow::Flow;

/// A reply of the API: status, `WWW-Authenticate`, body.
pub struct Reply {
    pub status: StatusCode,
    pub challenge: Option<String>,
    pub body: Value,
    /// Whether the request carried a bearer credential.
    pub sent_credential: bool,
    pub cache_control: Option<String>,
}

impl Reply {
    /// Asserts an envelope error with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["success"], false, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert!(self.body["error"]["message"].is_string(), "{}", self.body);
        // RFC 6750 3.1: a bad credential's challenge names invalid_token; a
        // request without one gets the bare challenge.
        if status == 401 {
            let expected = if self.sent_credential {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            assert_eq!(self.challenge.as_deref(), Some(expected), "{}", self.body);
        }
        // Every /v1 answer holds account data or says something about a
        // credential: never stored by a cache.
        assert_eq!(
            self.cache_control.as_deref(),
            Some("no-store"),
            "{}",
            self.body
        );
    }

    /// Asserts success with this status; returns `data`.
    #[track_caller]
    pub fn data(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["success"], true, "{}", self.body);
        assert_eq!(
            self.cache_control.as_deref(),
            Some("no-store"),
            "{}",
            self.body
        );
        &self.body["data"]
    }
}

/// A client whose requests leave from `from` (a loopback address).
pub fn client_from(from: &str) -> reqwest::Client {
    crate::helpers::client_builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// One `/v1/` request with an optional bearer token and JSON body.
pub async fn api_with(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let cache_control = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        challenge,
        body,
        sent_credential: bearer.is_some(),
        cache_control,
    }
}

pub async fn api(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Reply {
    api_with(&app.client, &app.address, method, path, bearer, body, &[]).await
}

pub async fn me(app: &TestApp, bearer: &str) -> Reply {
    api(app, Method::GET, "/v1/me", Some(bearer), None).await
}

/// An API key for `user_id` made directly (as the CLI does): (id, key).
pub async fn key_for(app: &TestApp, user_id: &str, scopes: &str) -> (String, String) {
    let user_id = user_id.to_owned();
    let new = NewKey {
        name: "test key".into(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        expires_in_days: None,
    };
    app.with_conn(move |conn| {
        let created = create_for_user(conn, &user_id, &new, MintedBy::Owner, Utc::now()).unwrap();
        (created.id, created.key)
    })
    .await
}

/// An API key for `user_id` that expires in `days`, made directly: the key.
pub async fn key_expiring_for(app: &TestApp, user_id: &str, scopes: &str, days: i64) -> String {
    let user_id = user_id.to_owned();
    let new = NewKey {
        name: "expiring".into(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        expires_in_days: Some(days),
    };
    app.with_conn(move |conn| {
        create_for_user(conn, &user_id, &new, MintedBy::Owner, Utc::now())
            .unwrap()
            .key
    })
    .await
}

/// A user of `role` with an API key holding `scopes`: (user id, key).
pub async fn user_with_key(
    app: &TestApp,
    email: &str,
    role: Role,
    scopes: &str,
) -> (String, String) {
    let user_id = app.create_user(email, role).await;
    let (_, key) = key_for(app, &user_id, scopes).await;
    (user_id, key)
}

async fn key_count(app: &TestApp, user_id: &str) -> i64 {
    let user_id = user_id.to_owned();
    app.with_conn(move |conn| {
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .count()
            .get_result(conn)
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn me_with_an_api_key_has_the_seed_shape_and_the_keys_scopes() {
    let app = spawn_app().await;
    let (user_id, key) = user_with_key(
        &app,
        "agent@company.com",
        Role::Agent,
        "requests:read requests:write",
    )
    .await;
    let reply = me(&app, &key).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"success": true, "data": {
            "id": user_id,
            "email": "agent@company.com",
            "role": "agent",
            "scopes": ["requests:read", "requests:write"],
        }})
    );
    assert!(user_id.starts_with("user_"));
}

#[tokio::test]
async fn me_with_a_users_access_token_shows_the_tokens_scopes() {
    let flow = Flow::new(Role::Admin, "requests:read users:read admin", false).await;
    let access = flow.access_token("requests:read").await;
    let reply = me(&flow.app, &access).await;
    assert_eq!(
        reply.data(200),
        &json!({"id": flow.user_id, "email": flow.email, "role": "admin", "scopes": ["requests:read"]})
    );
}

#[tokio::test]
async fn me_with_a_client_credentials_token_is_the_service() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (client_id, secret) = service(&flow, false).await;
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    let reply = me(&flow.app, token["access_token"].as_str().unwrap()).await;
    assert_eq!(
        reply.data(200),
        &json!({"id": client_id, "email": null, "role": "service", "scopes": ["requests:read"]})
    );
    // A service has no user: it cannot hold API keys or an allowlist.
    let bearer = token["access_token"].as_str();
    api(&flow.app, Method::GET, "/v1/api-keys", bearer, None)
        .await
        .assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn missing_malformed_unknown_expired_and_revoked_credentials_get_401() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let app = &flow.app;
    let tokens = flow.tokens("requests:read").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(me(app, &access).await.status, 200);

    // No header at all, and other schemes.
    api(app, Method::GET, "/v1/me", None, None)
        .await
        .assert_error(401, "UNAUTHORIZED");
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", access.as_str()] {
        let resp = app
            .client
            .get(app.url("/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{header}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }

    // Unknown or malformed tokens, and a refresh token (not a bearer).
    let unknown_key = format!("dzd_{}", "A".repeat(50));
    let mut tampered = access.clone();
    tampered.pop();
    for bad in [
        "garbage",
        "a.b.c",
        unknown_key.as_str(),
        tampered.as_str(),
        refresh.as_str(),
    ] {
        me(app, bad).await.assert_error(401, "UNAUTHORIZED");
    }

    // Expired: a token signed by the server's own key with exp in the past.
    let claims: dzdesk_auth::credentials::jwt::AccessClaims = {
        use base64::Engine;
        let part = access.split('.').nth(1).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let mut expired = claims.clone();
    expired.exp = Utc::now().timestamp() - 5;
    let expired = sign_with_server_key(&flow, expired).await;
    me(app, &expired).await.assert_error(401, "UNAUTHORIZED");

    // Revoked at /oauth/revoke.
    let resp = crate::introspect::call(
        &app.address,
        "/oauth/revoke",
        Some(own(&flow)),
        &[("token", &access)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    me(app, &access).await.assert_error(401, "UNAUTHORIZED");

    // An expired API key.
    let (key_id, key) = key_for(app, &flow.user_id, "requests:read").await;
    assert_eq!(me(app, &key).await.status, 200);
    app.with_conn(move |conn| {
        diesel::update(api_keys::table.find(key_id))
            .set(api_keys::expires_at.eq(Some(Utc::now().naive_utc() - Duration::seconds(1))))
            .execute(conn)
            .unwrap()
    })
    .await;
    me(app, &key).await.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_missing_scope_is_403_and_admin_implies_every_scope() {
    let app = spawn_app().await;
    let (_, reader) = user_with_key(&app, "ann@example.com", Role::Admin, "requests:read").await;
    let (_, admin) = key_for(
        &app,
        &app.create_user("bob@example.com", Role::Admin).await,
        "admin",
    )
    .await;
    // RFC 6750 3.1: the challenge names the error and the scope wanted.
    let refused = api(&app, Method::GET, "/v1/users", Some(&reader), None).await;
    refused.assert_error(403, "FORBIDDEN");
    assert_eq!(
        refused.challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope", scope="users:read""#)
    );
    // Managing keys needs admin: the challenge says so.
    let refused = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&reader),
        Some(json!({"name": "x", "scopes": ["requests:read"]})),
    )
    .await;
    refused.assert_error(403, "FORBIDDEN");
    assert_eq!(
        refused.challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope", scope="admin""#)
    );
    // A 403 that is no matter of scope (the IP allowlist) has no challenge.
    let (_, carol) = key_for(
        &app,
        &app.create_user("carol@example.com", Role::Admin).await,
        "admin",
    )
    .await;
    api(
        &app,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&carol),
        Some(json!({"entries": ["10.9.8.7"]})),
    )
    .await
    .data(200);
    app.settle_revocations().await;
    let refused = me(&app, &carol).await;
    refused.assert_error(403, "FORBIDDEN");
    assert_eq!(refused.challenge, None);
    api(&app, Method::GET, "/v1/users", Some(&admin), None)
        .await
        .data(200);
    let made = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&admin),
        Some(json!({"name": "all", "scopes": ["users:write", "requests:write"]})),
    )
    .await;
    made.data(201);
}

#[tokio::test]
async fn creating_an_api_key_shows_it_once_and_it_works_with_exactly_its_scopes() {
    let app = spawn_app().await;
    let (user_id, key) = user_with_key(&app, "admin@example.com", Role::Admin, "admin").await;
    let before = Utc::now();
    let reply = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "CI deploys", "scopes": ["requests:read"], "expires_in_days": 90})),
    )
    .await;
    let data = reply.data(201).clone();
    let obj = data.as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "key",
            "name",
            "prefix",
            "scopes"
        ]
    );
    let new_key = data["key"].as_str().unwrap();
    let body = new_key.strip_prefix("dzd_").unwrap();
    assert!(body.len() >= 43 && body.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(data["id"].as_str().unwrap().starts_with("key_"));
    assert!(new_key.starts_with(data["prefix"].as_str().unwrap()));
    assert!(data["prefix"].as_str().unwrap().len() < 16);
    assert_eq!(data["name"], "CI deploys");
    assert_eq!(data["scopes"], json!(["requests:read"]));
    let expires =
        chrono::DateTime::parse_from_rfc3339(data["expires_at"].as_str().unwrap()).unwrap();
    let expected = before + Duration::days(90);
    assert!(
        (expires.timestamp() - expected.timestamp()).abs() < 5,
        "{expires}"
    );

    // It works, with its own scopes (not the role's, not its creator's).
    let reply = me(&app, new_key).await;
    assert_eq!(reply.data(200)["scopes"], json!(["requests:read"]));
    assert_eq!(reply.data(200)["id"], user_id);

    // Listed without the secret; the stored row has only its hash.
    let list = api(&app, Method::GET, "/v1/api-keys", Some(&key), None).await;
    let keys = list.data(200)["api_keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let listed = keys.iter().find(|k| k["id"] == data["id"]).unwrap();
    assert!(listed.get("key").is_none());
    assert!(!list.body.to_string().contains(new_key));
    assert_eq!(listed["expires_at"], data["expires_at"]);
    let id = data["id"].as_str().unwrap().to_owned();
    let stored: String = app
        .with_conn(move |conn| {
            api_keys::table
                .find(id)
                .select(api_keys::key_hash)
                .first(conn)
                .unwrap()
        })
        .await;
    assert_eq!(stored, dzdesk_auth::tokens::hash_secret(new_key));
}

#[tokio::test]
async fn bad_api_key_requests_are_400_naming_the_field_and_create_nothing() {
    let app = spawn_app().await;
    let (user_id, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let long = "x".repeat(101);
    for (body, field) in [
        (json!({"scopes": ["requests:read"]}), "name"),
        (json!({"name": "", "scopes": ["requests:read"]}), "name"),
        (json!({"name": "   ", "scopes": ["requests:read"]}), "name"),
        (json!({"name": long, "scopes": ["requests:read"]}), "name"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (
            json!({"name": "x", "scopes": ["requests:delete"]}),
            "scopes",
        ),
        (
            json!({"name": "x", "scopes": ["requests:read", 7]}),
            "scopes",
        ),
        (
            json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": -30}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": "90"}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "scopes": ["requests:read"], "expires_in_days": 2.5}),
            "expires_in_days",
        ),
    ] {
        let reply = api(
            &app,
            Method::POST,
            "/v1/api-keys",
            Some(&key),
            Some(body.clone()),
        )
        .await;
        reply.assert_error(400, "BAD_REQUEST");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    // Not JSON at all, and a body too large.
    let resp = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(key_count(&app, &user_id).await, 1, "nothing was created");
}

#[tokio::test]
async fn a_credential_cannot_mint_a_key_with_scopes_it_does_not_hold() {
    let app = spawn_app().await;
    let (user_id, reader) =
        user_with_key(&app, "ann@example.com", Role::Admin, "requests:read").await;
    for scopes in [json!(["requests:write"]), json!(["requests:read", "admin"])] {
        api(
            &app,
            Method::POST,
            "/v1/api-keys",
            Some(&reader),
            Some(json!({"name": "escalate", "scopes": scopes})),
        )
        .await
        .assert_error(403, "FORBIDDEN");
    }
    // A key cannot outlive the expiring key that makes it.
    let (_, admin) = key_for(&app, &user_id, "admin").await;
    let made = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&admin),
        Some(json!({"name": "30 days", "scopes": ["admin"], "expires_in_days": 30})),
    )
    .await;
    let expiring = made.data(201)["key"].as_str().unwrap().to_owned();
    for days in [json!(null), json!(31)] {
        let reply = api(
            &app,
            Method::POST,
            "/v1/api-keys",
            Some(&expiring),
            Some(json!({"name": "renew", "scopes": ["requests:read"], "expires_in_days": days})),
        )
        .await;
        reply.assert_error(400, "BAD_REQUEST");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("expires_in_days"));
    }
    api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&expiring),
        Some(json!({"name": "shorter", "scopes": ["requests:read"], "expires_in_days": 7})),
    )
    .await
    .data(201);
    assert_eq!(key_count(&app, &user_id).await, 4);
}

/// An OAuth access token acts for a client within its grant: without
/// `admin` it cannot mint keys (which would outlive the grant), revoke them,
/// or change the allowlist; it can read them.
#[tokio::test]
async fn oauth_tokens_without_admin_cannot_manage_keys_or_the_allowlist() {
    let flow = Flow::new(
        Role::Agent,
        "requests:read requests:write users:read",
        false,
    )
    .await;
    let app = &flow.app;
    let access = flow.access_token("requests:read requests:write").await;
    let (key_id, key) = key_for(app, &flow.user_id, "requests:read").await;
    api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(&access),
        Some(json!({"name": "from an app", "scopes": ["requests:read"]})),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    api(
        app,
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&access),
        None,
    )
    .await
    .assert_error(403, "FORBIDDEN");
    api(
        app,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&access),
        Some(json!({"entries": []})),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    assert_eq!(me(app, &key).await.status, 200, "the key was not revoked");
    let list = api(app, Method::GET, "/v1/api-keys", Some(&access), None).await;
    assert_eq!(list.data(200)["api_keys"].as_array().unwrap().len(), 1);
    api(app, Method::GET, "/v1/ip-allowlist", Some(&access), None)
        .await
        .data(200);

    // An admin's token holding `admin` may.
    let admin = Flow::on(spawn_app().await, Role::Admin, "admin", false).await;
    let token = admin.access_token("admin").await;
    api(
        &admin.app,
        Method::POST,
        "/v1/api-keys",
        Some(&token),
        Some(json!({"name": "from an admin token", "scopes": ["users:read"]})),
    )
    .await
    .data(201);
}

#[tokio::test]
async fn a_revoked_key_gets_401_and_introspects_inactive_and_others_keys_are_not_found() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let (key_id, key) = key_for(app, &flow.user_id, "admin").await;
    let (_, other_key) = user_with_key(app, "eve@example.com", Role::Admin, "admin").await;

    let active = introspect(&flow, creds, &key).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "api_key");

    // Another user's key id: 404, and the key keeps working.
    let path = format!("/v1/api-keys/{key_id}");
    api(app, Method::DELETE, &path, Some(&other_key), None)
        .await
        .assert_error(404, "NOT_FOUND");
    assert_eq!(me(app, &key).await.status, 200);
    api(
        app,
        Method::DELETE,
        "/v1/api-keys/key_unknown",
        Some(&key),
        None,
    )
    .await
    .assert_error(404, "NOT_FOUND");

    let reply = api(app, Method::DELETE, &path, Some(&key), None).await;
    assert_eq!(reply.data(200), &json!({"id": key_id, "revoked": true}));
    me(app, &key).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(introspect(&flow, creds, &key).await, inactive());
    // Gone from the list; revoking again finds nothing.
    let list = api(app, Method::GET, "/v1/api-keys", Some(&other_key), None).await;
    assert_eq!(list.data(200)["api_keys"].as_array().unwrap().len(), 1);
    api(app, Method::DELETE, &path, Some(&other_key), None)
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn introspection_of_api_keys() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let (_, key) = key_for(app, &flow.user_id, "requests:read requests:write").await;
    let answer = introspect(&flow, creds, &key).await;
    let obj = answer.as_object().unwrap();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["scope"], "requests:read requests:write");
    assert_eq!(answer["sub"], flow.user_id.as_str());
    assert_eq!(answer["username"], flow.email.as_str());
    assert_eq!(answer["token_type"], "api_key");
    assert!(answer["iat"].is_i64());
    assert!(!obj.contains_key("exp"), "a key without expiry has no exp");
    assert!(!obj.contains_key("client_id"));

    let expiring = key_expiring_for(app, &flow.user_id, "requests:read", 30).await;
    let answer = introspect(&flow, creds, &expiring).await;
    let exp = answer["exp"].as_i64().unwrap();
    assert!((exp - (Utc::now() + Duration::days(30)).timestamp()).abs() < 5);

    // A client without the introspection permission does not see API keys
    // (they are no client's tokens); the hint changes nothing.
    assert_eq!(introspect(&flow, own(&flow), &key).await, inactive());
    let resp = crate::introspect::call(
        &app.address,
        "/oauth/introspect",
        Some(creds),
        &[("token", &key), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(resp.json::<Value>().await.unwrap()["active"], true);
    // Clients cannot revoke a user's API key (RFC 7009 2.2.1).
    let resp = crate::introspect::call(
        &app.address,
        "/oauth/revoke",
        Some(creds),
        &[("token", &key)],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unsupported_token_type"
    );
    assert_eq!(me(app, &key).await.status, 200);
}

async fn introspect_from(
    flow: &Flow,
    creds: (&str, &str),
    token: &str,
    ip: &str,
) -> reqwest::Response {
    crate::introspect::call(
        &flow.app.address,
        "/oauth/introspect",
        Some(creds),
        &[("token", token), ("client_ip", ip)],
    )
    .await
}

#[tokio::test]
async fn the_ip_allowlist_is_enforced_from_real_source_addresses() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    // Only a credential holding `admin` manages the allowlist through /v1.
    let (_, key) = key_for(app, &flow.user_id, "admin").await;
    let access = flow.access_token("requests:read").await;
    let from_1 = client_from("127.0.0.1");
    let from_2 = client_from("127.0.0.2");
    // The key manages the allowlist; once it is set, only from 127.0.0.2.
    let put_from_2 = |body: Option<Value>| {
        let client = from_2.clone();
        let base = app.address.clone();
        let key = key.clone();
        async move {
            api_with(
                &client,
                &base,
                Method::PUT,
                "/v1/ip-allowlist",
                Some(&key),
                body,
                &[],
            )
            .await
        }
    };
    let call = |client: &reqwest::Client, token: &str| {
        let client = client.clone();
        let token = token.to_owned();
        let base = app.address.clone();
        async move {
            api_with(
                &client,
                &base,
                Method::GET,
                "/v1/me",
                Some(&token),
                None,
                &[],
            )
            .await
        }
    };

    // Empty list: no restriction.
    let empty = api(app, Method::GET, "/v1/ip-allowlist", Some(&key), None).await;
    assert_eq!(empty.data(200), &json!({"entries": []}));
    assert_eq!(call(&from_1, &key).await.status, 200);
    assert_eq!(call(&from_2, &key).await.status, 200);

    let set = api(
        app,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&key),
        Some(json!({"entries": ["127.0.0.2", "198.51.100.0/24", "2001:db8::/32"]})),
    )
    .await;
    assert_eq!(
        set.data(200),
        &json!({"entries": ["127.0.0.2/32", "198.51.100.0/24", "2001:db8::/32"]})
    );
    let got = api(app, Method::GET, "/v1/ip-allowlist", Some(&access), None).await;
    assert_eq!(got.data(200), set.data(200));

    // The key works only from 127.0.0.2; OAuth tokens are not affected.
    call(&from_1, &key).await.assert_error(403, "FORBIDDEN");
    assert_eq!(call(&from_2, &key).await.status, 200);
    assert_eq!(call(&from_1, &access).await.status, 200);
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = api_with(
        &from_1,
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&key),
        None,
        &[("x-forwarded-for", "127.0.0.2")],
    )
    .await;
    spoofed.assert_error(403, "FORBIDDEN");

    // Introspection with the end client's address (our client_ip extension).
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let outside = introspect_from(&flow, creds, &key, "127.0.0.1").await;
    assert_eq!(outside.json::<Value>().await.unwrap(), inactive());
    let inside = introspect_from(&flow, creds, &key, "::ffff:127.0.0.2").await;
    assert_eq!(inside.json::<Value>().await.unwrap()["active"], true);
    let bad = introspect_from(&flow, creds, &key, "not-an-ip").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    // Fail closed: without client_ip a restricted key is not active.
    assert_eq!(introspect(&flow, creds, &key).await, inactive());

    // Invalid entries: 400 naming the entry, nothing saved.
    for (entries, named) in [
        (json!(["127.0.0.1", "10.0.0.300"]), "10.0.0.300"),
        (json!(["10.0.0.0/33"]), "10.0.0.0/33"),
        (json!(["example.com"]), "example.com"),
    ] {
        let reply = put_from_2(Some(json!({ "entries": entries }))).await;
        reply.assert_error(400, "BAD_REQUEST");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(named));
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.1")).collect();
    put_from_2(Some(json!({ "entries": too_many })))
        .await
        .assert_error(400, "BAD_REQUEST");
    for body in [
        json!({}),
        json!({"entries": "127.0.0.1"}),
        json!({"entries": [1]}),
    ] {
        put_from_2(Some(body))
            .await
            .assert_error(400, "BAD_REQUEST");
    }
    let got = api(app, Method::GET, "/v1/ip-allowlist", Some(&access), None).await;
    assert_eq!(got.data(200), set.data(200), "nothing saved");

    // Cleared: no restriction again.
    put_from_2(Some(json!({"entries": []}))).await.data(200);
    assert_eq!(call(&from_1, &key).await.status, 200);
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    let app = spawn_app_custom(
        |s| s.trusted_proxies = dzdesk_auth::domain::TrustedProxies::parse("127.0.0.2").unwrap(),
        |_| {},
    )
    .await;
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    api(
        &app,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&key),
        Some(json!({"entries": ["203.0.113.7"]})),
    )
    .await
    .data(200);
    let from = |ip: &str, xff: &str| {
        let client = client_from(ip);
        let base = app.address.clone();
        let key = key.clone();
        let xff = xff.to_owned();
        async move {
            api_with(
                &client,
                &base,
                Method::GET,
                "/v1/me",
                Some(&key),
                None,
                &[("x-forwarded-for", &xff)],
            )
            .await
            .status
        }
    };
    // Untrusted peer: its header is ignored.
    assert_eq!(from("127.0.0.1", "203.0.113.7").await, 403);
    // Trusted proxy: the right-most address that is not a trusted proxy.
    assert_eq!(from("127.0.0.2", "203.0.113.7").await, 200);
    assert_eq!(from("127.0.0.2", "198.51.100.1, 203.0.113.7").await, 200);
    assert_eq!(from("127.0.0.2", "203.0.113.7, 198.51.100.1").await, 403);
    assert_eq!(from("127.0.0.2", "203.0.113.7, 127.0.0.2").await, 200);
    // A header that is not ASCII is read, not skipped: the proxy itself
    // (trusted, not listed) never stands in for the client.
    let raw = |bytes: &'static [u8]| {
        let client = client_from("127.0.0.2");
        let url = app.url("/v1/me");
        let key = key.clone();
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .header(
                    "x-forwarded-for",
                    reqwest::header::HeaderValue::from_bytes(bytes).unwrap(),
                )
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(raw(b"\xff, 203.0.113.7").await, 200);
    assert_eq!(raw(b"203.0.113.7, \xff").await, 403);
}

#[tokio::test]
async fn last_used_at_is_shown_after_use() {
    let app = spawn_app().await;
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let made = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "fresh", "scopes": ["requests:read"]})),
    )
    .await;
    let fresh = made.data(201).clone();
    let listed = |reply: &Reply| {
        reply.data(200)["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == fresh["id"])
            .unwrap()
            .clone()
    };
    let list = api(&app, Method::GET, "/v1/api-keys", Some(&key), None).await;
    assert_eq!(listed(&list)["last_used_at"], Value::Null);
    assert_eq!(me(&app, fresh["key"].as_str().unwrap()).await.status, 200);
    let list = api(&app, Method::GET, "/v1/api-keys", Some(&key), None).await;
    let used = listed(&list)["last_used_at"].as_str().unwrap().to_owned();
    let used = chrono::DateTime::parse_from_rfc3339(&used).unwrap();
    assert!((Utc::now().timestamp() - used.timestamp()).abs() < 5);
}

/// With the production caches on (keys in memory, revocation view on
/// PostgreSQL), revocations still apply to the very next request.
#[tokio::test]
async fn with_production_caches_revocations_apply_at_once() {
    let app = spawn_app_custom(
        |s| {
            s.key_reload_secs = 60;
            s.client_cache_secs = 5;
        },
        |_| {},
    )
    .await;
    let (user_id, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (key_id, second) = key_for(&app, &user_id, "requests:read").await;
    for _ in 0..3 {
        assert_eq!(me(&app, &second).await.status, 200);
    }
    api(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&key),
        None,
    )
    .await
    .data(200);
    me(&app, &second).await.assert_error(401, "UNAUTHORIZED");

    // An allowlist change applies to the next request too.
    api(
        &app,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&key),
        Some(json!({"entries": ["127.0.0.2"]})),
    )
    .await
    .data(200);
    me(&app, &key).await.assert_error(403, "FORBIDDEN");
    let from_2 = client_from("127.0.0.2");
    let ok = api_with(
        &from_2,
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&key),
        None,
        &[],
    )
    .await;
    assert_eq!(ok.status, 200);

    // Disabled behind the service's back (the CLI): the key stops at once.
    app.set_disabled("ann@example.com", true).await;
    let denied = api_with(
        &from_2,
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&key),
        None,
        &[],
    )
    .await;
    denied.assert_error(401, "UNAUTHORIZED");
}

/// Two instances on one database (as behind a load balancer), production
/// caches on: a key revoked on one is refused by the other.
#[tokio::test]
async fn a_key_revoked_on_one_instance_is_refused_by_another() {
    let app = spawn_app_custom(
        |s| {
            s.key_reload_secs = 60;
            s.client_cache_secs = 5;
        },
        |_| {},
    )
    .await;
    let (second, handle) = crate::helpers::spawn_second_instance(&app).await;
    let (user_id, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (key_id, other) = key_for(&app, &user_id, "requests:read").await;
    let on_second = |token: String| {
        let base = second.clone();
        async move {
            api_with(
                &crate::helpers::client_builder().build().unwrap(),
                &base,
                Method::GET,
                "/v1/me",
                Some(&token),
                None,
                &[],
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(on_second(other.clone()).await.status, 200);
    }
    api(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&key),
        None,
    )
    .await
    .data(200);
    on_second(other).await.assert_error(401, "UNAUTHORIZED");
    handle.stop(false).await;
}

/// SQLite: a transaction that reads before it writes (counting the user's
/// keys, then inserting one) waits for another writer instead of failing at
/// once with "database is locked" (a 500): every write transaction takes
/// the write lock first (`BEGIN IMMEDIATE`). PostgreSQL has row locks and
/// nothing to wait for here.
#[tokio::test]
async fn creating_a_key_while_another_connection_writes_waits_for_it() {
    use diesel::connection::SimpleConnection;
    let app = spawn_app().await;
    let (_, key) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let url = dzdesk_auth::db::DatabaseUrl::parse(&app.database_url()).unwrap();
    if url.postgres_url().is_some() {
        return;
    }
    let other = dzdesk_auth::db::Database::connect(&url, 1).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut conn = other.conn().unwrap();
        conn.batch_execute("BEGIN IMMEDIATE; DELETE FROM sessions WHERE 1 = 0;")
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        conn.batch_execute("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let made = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "while busy", "scopes": ["requests:read"]})),
    )
    .await;
    made.data(201);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
}
