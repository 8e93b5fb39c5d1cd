//! The users API: `GET/POST /v1/users`, `GET/PATCH/DELETE /v1/users/{id}`.

use std::collections::HashSet;

use dzdesk_auth::domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use crate::introspect::{inactive, introspect, service};
use crate::oauth_flow::Flow;
use crate::v1_keys::{api, key_for, me, user_with_key};

async fn admin_key(app: &TestApp, scopes: &str) -> String {
    user_with_key(app, "root@example.com", Role::Admin, scopes)
        .await
        .1
}

#[tokio::test]
async fn users_are_listed_in_pages_that_chain_by_cursor() {
    let app = spawn_app().await;
    let key = admin_key(&app, "users:read").await;
    let mut created = HashSet::new();
    for i in 0..4 {
        created.insert(
            app.create_user(&format!("u{i}@example.com"), Role::Agent)
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=2".to_owned();
    loop {
        let reply = api(&app, Method::GET, &path, Some(&key), None).await;
        let data = reply.data(200).clone();
        let users = data["users"].as_array().unwrap();
        assert!(users.len() <= 2);
        for u in users {
            assert!(u.get("password_hash").is_none());
            seen.push(u["id"].as_str().unwrap().to_owned());
        }
        match data["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "every user once: {seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
    assert!(created.iter().all(|id| seen.contains(id)));

    let all = api(&app, Method::GET, "/v1/users", Some(&key), None).await;
    assert_eq!(all.data(200)["users"].as_array().unwrap().len(), 5);
    assert_eq!(all.data(200)["next_cursor"], Value::Null);

    for (path, field) in [
        ("/v1/users?limit=0", "limit"),
        ("/v1/users?limit=101", "limit"),
        ("/v1/users?limit=ten", "limit"),
        ("/v1/users?cursor=%%%", "cursor"),
    ] {
        let reply = api(&app, Method::GET, path, Some(&key), None).await;
        reply.assert_error(400, "BAD_REQUEST");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_user_is_read_by_id_and_an_unknown_id_is_404() {
    let app = spawn_app().await;
    let key = admin_key(&app, "users:read").await;
    let id = app.create_user("ann@example.com", Role::Agent).await;
    let reply = api(
        &app,
        Method::GET,
        &format!("/v1/users/{id}"),
        Some(&key),
        None,
    )
    .await;
    let data = reply.data(200);
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["email"], "ann@example.com");
    assert_eq!(data["role"], "agent");
    assert_eq!(data["disabled"], false);
    api(&app, Method::GET, "/v1/users/user_nobody", Some(&key), None)
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn creating_users_needs_users_write_and_admins_need_admin() {
    let app = spawn_app().await;
    let reader = admin_key(&app, "users:read").await;
    let (_, writer) = user_with_key(&app, "ops@example.com", Role::Admin, "users:write").await;
    let (_, admin) = user_with_key(&app, "boss@example.com", Role::Admin, "admin").await;
    let body =
        |email: &str, role: &str| json!({"email": email, "password": PASSWORD, "role": role});

    api(
        &app,
        Method::POST,
        "/v1/users",
        Some(&reader),
        Some(body("a@example.com", "agent")),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    let made = api(
        &app,
        Method::POST,
        "/v1/users",
        Some(&writer),
        Some(body("A@Example.com", "agent")),
    )
    .await;
    let data = made.data(201).clone();
    assert!(data["id"].as_str().unwrap().starts_with("user_"));
    assert_eq!(data["email"], "a@example.com");
    assert_eq!(data["role"], "agent");
    // The new user can sign in with the password.
    let login = app.login("a@example.com", PASSWORD, "/").await;
    assert_eq!(login.status(), 303);

    api(
        &app,
        Method::POST,
        "/v1/users",
        Some(&writer),
        Some(body("b@example.com", "admin")),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    api(
        &app,
        Method::POST,
        "/v1/users",
        Some(&admin),
        Some(body("b@example.com", "admin")),
    )
    .await
    .data(201);

    for (bad, field) in [
        (json!({"password": PASSWORD}), "email"),
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            "email",
        ),
        (json!({"email": "c@example.com"}), "password"),
        (
            json!({"email": "c@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "c@example.com", "password": PASSWORD, "role": "owner"}),
            "role",
        ),
        (
            json!({"email": "c@example.com", "password": PASSWORD, "admin": true}),
            "admin",
        ),
    ] {
        let reply = api(
            &app,
            Method::POST,
            "/v1/users",
            Some(&admin),
            Some(bad.clone()),
        )
        .await;
        reply.assert_error(400, "BAD_REQUEST");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{bad}: {message}");
        assert!(!message.contains(PASSWORD));
    }
    let all = api(&app, Method::GET, "/v1/users", Some(&admin), None).await;
    assert_eq!(
        all.data(200)["users"].as_array().unwrap().len(),
        5,
        "nothing else created"
    );
}

#[tokio::test]
async fn patching_users_and_protecting_admins() {
    let app = spawn_app().await;
    let (_, writer) = user_with_key(
        &app,
        "ops@example.com",
        Role::Admin,
        "users:write users:read",
    )
    .await;
    let (_, admin) = user_with_key(&app, "boss@example.com", Role::Admin, "admin").await;
    let agent = app.create_user("ann@example.com", Role::Agent).await;
    let other_admin = app.create_user("root@example.com", Role::Admin).await;
    let path = format!("/v1/users/{agent}");

    let changed = api(
        &app,
        Method::PATCH,
        &path,
        Some(&writer),
        Some(json!({"email": "Ann.New@Example.com"})),
    )
    .await;
    assert_eq!(changed.data(200)["email"], "ann.new@example.com");
    for (bad, field) in [
        (json!({"email": "nope"}), "email"),
        (json!({"email": "boss@example.com"}), "email"),
        (json!({"role": "owner"}), "role"),
        (json!({"disabled": "yes"}), "disabled"),
        (json!({"password": "short"}), "password"),
        (json!({"nickname": "x"}), "nickname"),
    ] {
        let reply = api(&app, Method::PATCH, &path, Some(&writer), Some(bad.clone())).await;
        reply.assert_error(400, "BAD_REQUEST");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{bad}"
        );
    }
    api(&app, Method::PATCH, &path, Some(&writer), Some(json!({})))
        .await
        .assert_error(400, "BAD_REQUEST");
    api(
        &app,
        Method::PATCH,
        "/v1/users/user_nobody",
        Some(&writer),
        Some(json!({"disabled": true})),
    )
    .await
    .assert_error(404, "NOT_FOUND");

    // Promoting, or touching an admin, needs the admin scope.
    api(
        &app,
        Method::PATCH,
        &path,
        Some(&writer),
        Some(json!({"role": "admin"})),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    let admin_path = format!("/v1/users/{other_admin}");
    for body in [
        json!({"password": "a brand new password"}),
        json!({"disabled": true}),
    ] {
        api(&app, Method::PATCH, &admin_path, Some(&writer), Some(body))
            .await
            .assert_error(403, "FORBIDDEN");
    }
    api(&app, Method::DELETE, &admin_path, Some(&writer), None)
        .await
        .assert_error(403, "FORBIDDEN");
    let promoted = api(
        &app,
        Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(promoted.data(200)["role"], "admin");
    let demoted = api(
        &app,
        Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"role": "agent"})),
    )
    .await;
    assert_eq!(demoted.data(200)["role"], "agent");
    let unchanged = api(&app, Method::GET, &admin_path, Some(&writer), None).await;
    assert_eq!(unchanged.data(200)["disabled"], false);
}

#[tokio::test]
async fn a_demoted_admins_credentials_lose_admin_scopes_at_once() {
    let app = spawn_app().await;
    let (_, boss) = user_with_key(&app, "boss@example.com", Role::Admin, "admin").await;
    let (ann, ann_key) = user_with_key(
        &app,
        "ann@example.com",
        Role::Admin,
        "admin users:write requests:read",
    )
    .await;
    assert_eq!(
        me(&app, &ann_key).await.data(200)["scopes"],
        json!(["requests:read", "users:write", "admin"])
    );
    api(
        &app,
        Method::PATCH,
        &format!("/v1/users/{ann}"),
        Some(&boss),
        Some(json!({"role": "agent"})),
    )
    .await
    .data(200);
    let after = me(&app, &ann_key).await;
    assert_eq!(after.data(200)["scopes"], json!(["requests:read"]));
    assert_eq!(after.data(200)["role"], "agent");
    api(&app, Method::GET, "/v1/users", Some(&ann_key), None)
        .await
        .assert_error(403, "FORBIDDEN");
}

/// Disabling or deleting a user ends at once their sessions, grants, API
/// keys and tokens (401 on /v1, inactive at introspection).
#[tokio::test]
async fn disabling_or_deleting_a_user_ends_everything_of_theirs() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let app = &flow.app;
    let (_, admin) = user_with_key(app, "boss@example.com", Role::Admin, "admin").await;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let tokens = flow.tokens("requests:read").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, key) = key_for(app, &flow.user_id, "requests:read").await;
    assert_eq!(me(app, &access).await.status, 200);
    assert_eq!(me(app, &key).await.status, 200);
    assert_eq!(app.session_count(&flow.user_id).await, 1);

    let path = format!("/v1/users/{}", flow.user_id);
    let reply = api(
        app,
        Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(reply.data(200)["disabled"], true);
    me(app, &access).await.assert_error(401, "UNAUTHORIZED");
    me(app, &key).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
    assert_eq!(introspect(&flow, creds, &key).await, inactive());
    assert_eq!(introspect(&flow, creds, &refresh).await, inactive());
    assert_eq!(app.session_count(&flow.user_id).await, 0);
    assert_eq!(flow.refresh(&refresh, None).await.status(), 400);

    // Re-enabled: the old credentials stay ended.
    api(
        app,
        Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"disabled": false})),
    )
    .await
    .data(200);
    me(app, &key).await.assert_error(401, "UNAUTHORIZED");
    me(app, &access).await.assert_error(401, "UNAUTHORIZED");

    // Deleted: a fresh key of theirs stops too, and the user is gone.
    let (_, fresh) = key_for(app, &flow.user_id, "requests:read").await;
    assert_eq!(me(app, &fresh).await.status, 200);
    let reply = api(app, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(
        reply.data(200),
        &json!({"id": flow.user_id, "deleted": true})
    );
    me(app, &fresh).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(introspect(&flow, creds, &fresh).await, inactive());
    api(app, Method::GET, &path, Some(&admin), None)
        .await
        .assert_error(404, "NOT_FOUND");
    api(app, Method::DELETE, &path, Some(&admin), None)
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_new_password_ends_the_users_sessions() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let app = &flow.app;
    let (_, admin) = user_with_key(app, "boss@example.com", Role::Admin, "admin").await;
    assert_eq!(app.session_count(&flow.user_id).await, 1);
    let path = format!("/v1/users/{}", flow.user_id);
    api(
        app,
        Method::PATCH,
        &path,
        Some(&admin),
        Some(json!({"password": "a brand new password"})),
    )
    .await
    .data(200);
    assert_eq!(app.session_count(&flow.user_id).await, 0);
    let old = app.login(&flow.email, PASSWORD, "/").await;
    assert_ne!(old.status(), 303, "the old password no longer works");
    let new = app.login(&flow.email, "a brand new password", "/").await;
    assert_eq!(new.status(), 303);
}
