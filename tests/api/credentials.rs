//! The credentials module's rules, as a customer, an operator and an
//! attacker meet them: one check of "who is calling" for `/v1`,
//! introspection and registration (issue: "One place that answers who is
//! calling").

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use dzdesk_auth::db::schema::clients;
use dzdesk_auth::domain::Role;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_custom, spawn_second_instance, TestApp};
use crate::introspect::{inactive, introspect, introspect_at, service};
use crate::oauth_flow::{pkce, AuthRequest, Flow, REDIRECT};
use crate::v1_keys::{api, api_with, client_from, key_expiring_for, key_for, me};

fn metadata(scope: Option<&str>) -> Value {
    let mut meta = json!({
        "client_name": "Partner",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
    });
    if let Some(scope) = scope {
        meta["scope"] = json!(scope);
    }
    meta
}

async fn register_with(
    client: &reqwest::Client,
    base: &str,
    bearer: &str,
    meta: &Value,
) -> Response {
    client
        .post(format!("{base}/oauth/register"))
        .bearer_auth(bearer)
        .json(meta)
        .send()
        .await
        .unwrap()
}

async fn register(app: &TestApp, bearer: &str, meta: &Value) -> Response {
    register_with(&app.client, &app.address, bearer, meta).await
}

async fn error_is(resp: Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    let header = URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn client_credentials(app: &TestApp, id: &str, secret: &str) -> Response {
    app.client
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

/// Polls `check` every 50 ms for up to `within`; true once it holds.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// 1. Registration accepts an admin's API key, resolved like /v1.

#[tokio::test]
async fn registration_accepts_an_admin_api_key_with_its_expiry_revocation_and_allowlist() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (key_id, key) = key_for(app, &flow.user_id, "admin").await;
    let resp = register(app, &key, &metadata(Some("requests:read"))).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["scope"], "requests:read");

    // A key without admin: 403 insufficient_scope, as for tokens.
    let (_, reader) = key_for(app, &flow.user_id, "requests:read").await;
    error_is(
        register(app, &reader, &metadata(Some("requests:read"))).await,
        403,
        "insufficient_scope",
    )
    .await;

    // An expired key: 401.
    let expired = key_expiring_for(app, &flow.user_id, "admin", 1).await;
    app.with_conn(|conn| {
        diesel::update(dzdesk_auth::db::schema::api_keys::table)
            .filter(dzdesk_auth::db::schema::api_keys::expires_at.is_not_null())
            .set(
                dzdesk_auth::db::schema::api_keys::expires_at
                    .eq(chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1)),
            )
            .execute(conn)
            .unwrap();
    })
    .await;
    error_is(
        register(app, &expired, &metadata(Some("requests:read"))).await,
        401,
        "invalid_token",
    )
    .await;

    // The account's allowlist: only 127.0.0.2 may use its keys (the socket
    // peer decides).
    api_with(
        &client_from("127.0.0.2"),
        &app.address,
        Method::PUT,
        "/v1/ip-allowlist",
        Some(&key),
        Some(json!({"entries": ["127.0.0.2"]})),
        &[],
    )
    .await
    .data(200);
    let from_1 = client_from("127.0.0.1");
    error_is(
        register_with(
            &from_1,
            &app.address,
            &key,
            &metadata(Some("requests:read")),
        )
        .await,
        403,
        "access_denied",
    )
    .await;
    let from_2 = client_from("127.0.0.2");
    let resp = register_with(
        &from_2,
        &app.address,
        &key,
        &metadata(Some("requests:read")),
    )
    .await;
    assert_eq!(resp.status(), 201);

    // Revoked: 401 at once.
    api_with(
        &from_2,
        &app.address,
        Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&key),
        None,
        &[],
    )
    .await
    .data(200);
    error_is(
        register_with(
            &from_2,
            &app.address,
            &key,
            &metadata(Some("requests:read")),
        )
        .await,
        401,
        "invalid_token",
    )
    .await;
}

// 2. `admin` covers every scope in every ceiling.

#[tokio::test]
async fn a_token_of_exactly_admin_registers_narrower_clients_refreshes_narrower_and_consents() {
    let flow = Flow::new(Role::Admin, "admin", false).await;
    let app = &flow.app;
    let tokens = flow.tokens("admin").await;
    assert_eq!(tokens["scope"], "admin");
    let access = tokens["access_token"].as_str().unwrap();

    // Registration ceiling.
    let resp = register(app, access, &metadata(Some("requests:read users:write"))).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["scope"], "requests:read users:write");

    // Refresh narrowing (RFC 6749 6): admin was granted, requests:read is
    // within it.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = flow.refresh(refresh, Some("requests:read")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "requests:read");

    // Consent: a client registered for admin may ask for requests:read.
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some("requests:read"))
        .with("prompt", Some("consent"));
    let resp = flow.get(&req).await;
    assert_eq!(resp.status(), 200, "the consent page, not invalid_scope");

    // API-key creation: an admin-only key mints a requests:read key.
    let (_, key) = key_for(app, &flow.user_id, "admin").await;
    let made = api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "reader", "scopes": ["requests:read"]})),
    )
    .await;
    made.data(201);
}

// 3. Without admin, no credential changes keys or the allowlist via /v1.

#[tokio::test]
async fn a_read_only_key_cannot_change_keys_or_the_allowlist() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, reader) = key_for(app, &flow.user_id, "requests:read users:write").await;
    let (other_id, other) = key_for(app, &flow.user_id, "requests:read").await;
    let refused = [
        api(
            app,
            Method::PUT,
            "/v1/ip-allowlist",
            Some(&reader),
            Some(json!({"entries": ["10.0.0.1"]})),
        )
        .await,
        api(
            app,
            Method::POST,
            "/v1/api-keys",
            Some(&reader),
            Some(json!({"name": "child", "scopes": ["requests:read"]})),
        )
        .await,
        api(
            app,
            Method::DELETE,
            &format!("/v1/api-keys/{other_id}"),
            Some(&reader),
            None,
        )
        .await,
    ];
    for reply in refused {
        reply.assert_error(403, "FORBIDDEN");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("'admin'") && message.contains("Settings > API"),
            "{message}"
        );
    }
    // Nothing changed: the other key works, the allowlist is empty, no key
    // was added; reading is still allowed.
    assert_eq!(me(app, &other).await.status, 200);
    let list = api(app, Method::GET, "/v1/ip-allowlist", Some(&reader), None).await;
    assert_eq!(list.data(200), &json!({"entries": []}));
    let keys = api(app, Method::GET, "/v1/api-keys", Some(&reader), None).await;
    assert_eq!(keys.data(200)["api_keys"].as_array().unwrap().len(), 2);
}

// 5. keys rotate is seen within about a second; --revoke-previous.

fn rotate(app: &TestApp, revoke_previous: bool) -> String {
    let url = app.database_url();
    let mut args = vec!["keys", "rotate"];
    if revoke_previous {
        args.push("--revoke-previous");
    }
    let out = crate::cli::run(&args, &[("DATABASE_URL", &url)], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    printed["kid"].as_str().unwrap().to_owned()
}

async fn production_flow() -> Flow {
    // Keys re-read only every 60 s and clients cached, as in production.
    let app = spawn_app_custom(
        |s| {
            s.key_reload_secs = 60;
            s.client_cache_secs = 5;
        },
        |_| {},
    )
    .await;
    Flow::on(app, Role::Admin, "requests:read", false).await
}

#[tokio::test]
async fn a_rotation_signs_with_the_new_key_within_a_second() {
    let flow = production_flow().await;
    let app = &flow.app;
    let (id, secret) = service(&flow, false).await;
    let token = |app: &TestApp| {
        let (id, secret) = (id.clone(), secret.clone());
        let app_client = app.client.clone();
        let url = app.url("/oauth/token");
        async move {
            let resp = app_client
                .post(url)
                .basic_auth(&id, Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let before = token(app).await;
    let new_kid = rotate(app, false);
    assert_ne!(kid_of(&before), new_kid);
    let switched = eventually(Duration::from_millis(1500), || {
        let t = token(app);
        let new_kid = new_kid.clone();
        async move { kid_of(&t.await) == new_kid }
    })
    .await;
    assert!(switched, "still signing with the old key after 1.5 s");
    // A plain rotation keeps old tokens valid.
    assert_eq!(me(app, &before).await.status, 200);
}

#[tokio::test]
async fn revoke_previous_kills_every_token_of_the_old_key_on_every_instance_for_good() {
    let flow = production_flow().await;
    let app = &flow.app;
    let access = flow.access_token("requests:read").await;
    let old_kid = kid_of(&access);
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let (second, handle) = spawn_second_instance(app).await;
    assert_eq!(me(app, &access).await.status, 200);
    assert_eq!(introspect_at(&second, creds, &access).await["active"], true);

    let new_kid = rotate(app, true);
    assert_ne!(old_kid, new_kid);
    for base in [app.address.clone(), second.clone()] {
        let refused = eventually(Duration::from_millis(1000), || {
            let (base, access) = (base.clone(), access.clone());
            async move {
                api_with(
                    &crate::helpers::client_builder().build().unwrap(),
                    &base,
                    Method::GET,
                    "/v1/me",
                    Some(&access),
                    None,
                    &[],
                )
                .await
                .status
                    == 401
            }
        })
        .await;
        assert!(refused, "{base}: the old key's token still works");
        assert_eq!(introspect_at(&base, creds, &access).await, inactive());
        let jwks: Value = crate::helpers::http_get(format!("{base}/.well-known/jwks.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [new_kid.as_str()], "{base}");
    }
    handle.stop(false).await;
    // A restart (a fresh instance on the same database) keeps it so, and
    // new tokens work.
    let (restarted, handle) = spawn_second_instance(app).await;
    assert_eq!(introspect_at(&restarted, creds, &access).await, inactive());
    let fresh = flow.access_token("requests:read").await;
    assert_eq!(kid_of(&fresh), new_kid);
    assert_eq!(me(app, &fresh).await.status, 200);
    handle.stop(false).await;
}

// 6. The user's current role, everywhere; clients registered by a user who
// loses admin are disabled.

#[tokio::test]
async fn a_demoted_admin_loses_admin_at_introspection_and_registration_and_their_clients() {
    let flow = Flow::new(Role::Admin, "requests:read users:write admin", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let access = flow.access_token("requests:read users:write admin").await;
    assert_eq!(
        introspect(&flow, creds, &access).await["scope"],
        "requests:read users:write admin"
    );
    // While an admin, they register a client_credentials client.
    let mut meta = metadata(Some("requests:read users:write"));
    meta["grant_types"] = json!(["client_credentials"]);
    meta.as_object_mut().unwrap().remove("redirect_uris");
    let resp = register(app, &access, &meta).await;
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    let (cid, csecret) = (
        info["client_id"].as_str().unwrap().to_owned(),
        info["client_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(client_credentials(app, &cid, &csecret).await.status(), 200);

    // Another admin demotes them.
    let other_admin = app.create_user("boss@example.com", Role::Admin).await;
    let (_, boss_key) = key_for(app, &other_admin, "admin").await;
    api(
        app,
        Method::PATCH,
        &format!("/v1/users/{}", flow.user_id),
        Some(&boss_key),
        Some(json!({"role": "agent"})),
    )
    .await
    .data(200);

    // Introspection: the token's scope as the role allows now.
    assert_eq!(
        introspect(&flow, creds, &access).await["scope"],
        "requests:read"
    );
    // The still-valid token can no longer register anything with admin.
    error_is(
        register(app, &access, &meta).await,
        403,
        "insufficient_scope",
    )
    .await;
    // The client they registered is disabled.
    error_is(
        client_credentials(app, &cid, &csecret).await,
        401,
        "invalid_client",
    )
    .await;
    let registered_by: Option<String> = app
        .with_conn(move |conn| {
            clients::table
                .find(cid)
                .select(clients::registered_by)
                .first(conn)
                .unwrap()
        })
        .await;
    assert_eq!(registered_by.as_deref(), Some(flow.user_id.as_str()));
}

#[tokio::test]
async fn clients_registered_by_a_disabled_user_are_disabled() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, key) = key_for(app, &flow.user_id, "admin").await;
    let mut meta = metadata(Some("requests:read"));
    meta["grant_types"] = json!(["client_credentials"]);
    meta.as_object_mut().unwrap().remove("redirect_uris");
    let info: Value = register(app, &key, &meta).await.json().await.unwrap();
    let (cid, csecret) = (
        info["client_id"].as_str().unwrap().to_owned(),
        info["client_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(client_credentials(app, &cid, &csecret).await.status(), 200);
    app.set_disabled(&flow.email, true).await;
    error_is(
        client_credentials(app, &cid, &csecret).await,
        401,
        "invalid_client",
    )
    .await;
}

// 9. A key minted by a key does not outlive it.

#[tokio::test]
async fn revoking_a_key_revokes_the_keys_it_minted_and_theirs() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (parent_id, parent) = key_for(app, &flow.user_id, "admin").await;
    let mint = |by: String| {
        let base = app.address.clone();
        async move {
            let reply = api_with(
                &crate::helpers::client_builder().build().unwrap(),
                &base,
                Method::POST,
                "/v1/api-keys",
                Some(&by),
                Some(json!({"name": "child", "scopes": ["admin"]})),
                &[],
            )
            .await;
            reply.data(201)["key"].as_str().unwrap().to_owned()
        }
    };
    let child = mint(parent.clone()).await;
    let grandchild = mint(child.clone()).await;
    let (_, sibling) = key_for(app, &flow.user_id, "requests:read").await;
    for key in [&child, &grandchild, &sibling] {
        assert_eq!(me(app, key).await.status, 200);
    }
    api(
        app,
        Method::DELETE,
        &format!("/v1/api-keys/{parent_id}"),
        Some(&parent),
        None,
    )
    .await
    .data(200);
    for key in [&parent, &child, &grandchild] {
        me(app, key).await.assert_error(401, "UNAUTHORIZED");
    }
    assert_eq!(me(app, &sibling).await.status, 200, "not minted by it");
}

// 11. The revoked-jti set is bounded; 12. the view heals itself.

#[tokio::test]
async fn revoked_access_tokens_are_remembered_with_their_expiry_and_pruned() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let access = flow.access_token("requests:read").await;
    let resp = crate::introspect::call(
        &app.address,
        "/oauth/revoke",
        Some((&flow.client_id, flow.secret.as_deref().unwrap())),
        &[("token", &access)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
    let view = &app.revocations;
    if view.is_live() {
        // PostgreSQL: the notification carried the token's exp.
        assert_eq!(view.revoked_jti_count(), 1);
        let exp = chrono::Utc::now().timestamp() + 3600;
        view.prune(exp - 120);
        assert_eq!(view.revoked_jti_count(), 1, "not expired yet");
        view.prune(exp + 120);
        assert_eq!(view.revoked_jti_count(), 0, "expired: forgotten");
    } else {
        // SQLite: no view; the database answers every time.
        assert_eq!(view.revoked_jti_count(), 0);
    }
    // Either way the revoked token stays inactive until it expires.
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
}

#[tokio::test]
async fn the_revocation_view_heals_after_a_failed_fence() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let live_before = app.revocations.is_live();
    // What a fence that timed out does: take the view down.
    app.revocations.went_down();
    if live_before {
        let healed = eventually(Duration::from_secs(8), || async {
            app.revocations.is_live()
        })
        .await;
        assert!(healed, "the view stayed down after a failed fence");
    }
    // Revocations keep applying at once, down or healed.
    let access = flow.access_token("requests:read").await;
    assert_eq!(introspect(&flow, creds, &access).await["active"], true);
    app.set_disabled(&flow.email, true).await;
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
}

#[tokio::test]
async fn a_client_registered_by_a_service_inherits_its_owner_and_is_disabled_with_it() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (_, key) = key_for(app, &flow.user_id, "admin").await;
    let mut meta = metadata(Some("admin"));
    meta["grant_types"] = json!(["client_credentials"]);
    meta.as_object_mut().unwrap().remove("redirect_uris");
    // The admin's key registers a service with admin ...
    let first: Value = register(app, &key, &meta).await.json().await.unwrap();
    let (c1, s1) = (
        first["client_id"].as_str().unwrap().to_owned(),
        first["client_secret"].as_str().unwrap().to_owned(),
    );
    let resp = client_credentials(app, &c1, &s1).await;
    let token: Value = resp.json().await.unwrap();
    // ... whose own token registers a second one.
    let second: Value = register(app, token["access_token"].as_str().unwrap(), &meta)
        .await
        .json()
        .await
        .unwrap();
    let (c2, s2) = (
        second["client_id"].as_str().unwrap().to_owned(),
        second["client_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(client_credentials(app, &c2, &s2).await.status(), 200);
    // Disabling the admin disables both.
    app.set_disabled(&flow.email, true).await;
    for (id, secret) in [(&c1, &s1), (&c2, &s2)] {
        error_is(
            client_credentials(app, id, secret).await,
            401,
            "invalid_client",
        )
        .await;
    }
}

#[tokio::test]
async fn a_key_minted_by_an_app_token_dies_with_the_apps_grant() {
    let flow = Flow::new(Role::Admin, "admin", false).await;
    let app = &flow.app;
    let tokens = flow.tokens("admin").await;
    let access = tokens["access_token"].as_str().unwrap();
    let made = api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(access),
        Some(json!({"name": "from the app", "scopes": ["requests:read"]})),
    )
    .await;
    let minted = made.data(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(me(app, &minted).await.status, 200);
    // A key minted by an admin key it minted, and a key it rotated: each
    // dies with the grant too.
    let made = api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(access),
        Some(json!({"name": "minter", "scopes": ["admin"]})),
    )
    .await;
    let minter = made.data(201)["key"].as_str().unwrap().to_owned();
    let made = api(
        app,
        Method::POST,
        "/v1/api-keys",
        Some(&minter),
        Some(json!({"name": "grandchild", "scopes": ["requests:read"]})),
    )
    .await;
    let grandchild = made.data(201)["key"].as_str().unwrap().to_owned();
    let rotated = api(
        app,
        Method::POST,
        &format!(
            "/v1/api-keys/{}/rotate",
            made.body["data"]["id"].as_str().unwrap()
        ),
        Some(access),
        Some(json!({"grace_hours": 0})),
    )
    .await;
    let successor = rotated.data(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(me(app, &grandchild).await.status, 401);
    assert_eq!(me(app, &successor).await.status, 200);
    // The token rotates only keys minted under its grant.
    let (owners_id, owners) = key_for(app, &flow.user_id, "requests:read").await;
    let refused = api(
        app,
        Method::POST,
        &format!("/v1/api-keys/{owners_id}/rotate"),
        Some(access),
        None,
    )
    .await;
    refused.assert_error(403, "FORBIDDEN");
    // The app's grant is revoked (RFC 7009: its refresh token).
    let resp = crate::introspect::call(
        &app.address,
        "/oauth/revoke",
        Some((&flow.client_id, flow.secret.as_deref().unwrap())),
        &[("token", tokens["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(resp.status(), 200);
    me(app, &minted).await.assert_error(401, "UNAUTHORIZED");
    me(app, &minter).await.assert_error(401, "UNAUTHORIZED");
    me(app, &successor).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(me(app, &owners).await.status, 200);
}
