//! API key rotation (seed: "Rotate regularly"): `POST
//! /v1/api-keys/{id}/rotate`, Settings > API's Rotate form, and `api-key
//! rotate` of the CLI against a running server.

use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use dzdesk_auth::api::keys::{
    create_for_user, rotate_key, Grace, MintedBy, NewKey, Rotator, MAX_KEYS_PER_USER,
};
use dzdesk_auth::db::models::ApiKeyRow;
use dzdesk_auth::db::schema::api_keys;
use dzdesk_auth::domain::{Role, ScopeSet};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_second_instance, TestApp, PASSWORD};
use crate::introspect::{inactive, introspect, service};
use crate::oauth_flow::Flow;
use crate::v1_keys::{api, api_with, key_for, me, user_with_key, Reply};

async fn rotate(app: &TestApp, bearer: &str, id: &str, body: Option<Value>) -> Reply {
    let path = format!("/v1/api-keys/{id}/rotate");
    api(app, Method::POST, &path, Some(bearer), body).await
}

async fn stored(app: &TestApp, id: &str) -> ApiKeyRow {
    let id = id.to_owned();
    app.with_conn(move |conn| {
        api_keys::table
            .find(id)
            .select(ApiKeyRow::as_select())
            .first(conn)
            .unwrap()
    })
    .await
}

/// Ends a rotated key's grace period now, as the clock would (behind the
/// service's back; the revocation view has applied it on return).
async fn end_grace(app: &TestApp, id: &str) {
    let id = id.to_owned();
    app.with_conn(move |conn| {
        diesel::update(api_keys::table.find(id))
            .set(api_keys::expires_at.eq(Utc::now().naive_utc() - chrono::Duration::seconds(1)))
            .execute(conn)
            .unwrap()
    })
    .await;
}

/// A key of `user_id` made directly: (id, key).
async fn named_key(
    app: &TestApp,
    user_id: &str,
    name: &str,
    scopes: &str,
    days: Option<i64>,
) -> (String, String) {
    let user_id = user_id.to_owned();
    let new = NewKey {
        name: name.into(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        expires_in_days: days,
    };
    app.with_conn(move |conn| {
        let c = create_for_user(conn, &user_id, &new, MintedBy::Owner, Utc::now()).unwrap();
        (c.id, c.key)
    })
    .await
}

/// A key minted through `/v1` by `parent` (so `parent` may rotate it):
/// (id, key).
async fn minted(
    app: &TestApp,
    parent: &str,
    name: &str,
    scopes: &str,
    days: Option<i64>,
) -> (String, String) {
    let mut body = json!({"name": name, "scopes": scopes.split(' ').collect::<Vec<_>>()});
    if let Some(days) = days {
        body["expires_in_days"] = json!(days);
    }
    let reply = api(app, Method::POST, "/v1/api-keys", Some(parent), Some(body)).await;
    let data = reply.data(201);
    (
        data["id"].as_str().unwrap().to_owned(),
        data["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_rotated_key_keeps_working_for_its_grace_then_is_refused_and_inactive() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    let app = &flow.app;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let (_, admin) = key_for(app, &flow.user_id, "admin").await;
    let (old_id, old) = minted(
        app,
        &admin,
        "CI deploy",
        "requests:read requests:write",
        Some(30),
    )
    .await;
    assert_eq!(me(app, &old).await.status, 200);
    let before = stored(app, &old_id).await;

    let reply = rotate(app, &admin, &old_id, Some(json!({"grace_hours": 2}))).await;
    let new = reply.data(201).clone();
    let new_key = new["key"].as_str().unwrap().to_owned();
    let new_id = new["id"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("dzd_") && new_key != old);
    assert_ne!(new_id, old_id);
    assert_eq!(new["name"], "CI deploy");
    assert_eq!(new["scopes"], json!(["requests:read", "requests:write"]));
    // The same expiry, to the second.
    let expiry = before.expires_at.unwrap();
    assert_eq!(
        new["expires_at"],
        dzdesk_auth::api::timestamp(expiry).as_str()
    );
    assert!(new["prefix"].as_str().is_some());
    assert!(new["created_at"].as_str().is_some());

    // Both work during the grace period; the old one is listed as replaced,
    // working until about two hours from now.
    assert_eq!(me(app, &new_key).await.status, 200);
    assert_eq!(me(app, &old).await.status, 200);
    assert_eq!(introspect(&flow, creds, &old).await["active"], true);
    let list = api(app, Method::GET, "/v1/api-keys", Some(&admin), None).await;
    let keys = list.data(200)["api_keys"].as_array().unwrap().clone();
    let old_view = keys.iter().find(|k| k["id"] == old_id.as_str()).unwrap();
    assert_eq!(old_view["replaced_by"], new_id.as_str());
    let until =
        chrono::DateTime::parse_from_rfc3339(old_view["expires_at"].as_str().unwrap()).unwrap();
    let want = Utc::now() + chrono::Duration::hours(2);
    assert!((until.timestamp() - want.timestamp()).abs() < 10, "{until}");
    let new_view = keys.iter().find(|k| k["id"] == new_id.as_str()).unwrap();
    assert_eq!(new_view["replaced_by"], Value::Null);

    // Rotating the old key again while it is in its grace period: 409.
    rotate(app, &admin, &old_id, None)
        .await
        .assert_error(409, "CONFLICT");

    // The grace ends: the old key is refused and inactive; the new one
    // carries on. Rotating it now: 404 (it has expired).
    end_grace(app, &old_id).await;
    me(app, &old).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(introspect(&flow, creds, &old).await, inactive());
    assert_eq!(me(app, &new_key).await.status, 200);
    assert_eq!(introspect(&flow, creds, &new_key).await["active"], true);
    rotate(app, &admin, &old_id, None)
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn the_grace_ends_by_the_clock_on_every_instance_without_a_notification() {
    // A grace that ends while both instances hold the key in memory (on
    // PostgreSQL, their revocation views): no notification comes when it
    // ends, and none is needed, as the end is a time the cached status
    // carries and every request compares with its clock.
    let app = spawn_app().await;
    let (_, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (old_id, old) = minted(&app, &admin, "k", "requests:read", None).await;
    let (second, stop) = spawn_second_instance(&app).await;
    let second_me = |key: String| {
        let base = second.clone();
        async move {
            api_with(
                &crate::helpers::new_client(),
                &base,
                Method::GET,
                "/v1/me",
                Some(&key),
                None,
                &[],
            )
            .await
        }
    };
    assert_eq!(second_me(old.clone()).await.status, 200);
    // A grace of one hour, moved to end three seconds from now.
    rotate(&app, &admin, &old_id, Some(json!({"grace_hours": 1})))
        .await
        .data(201);
    let id = old_id.clone();
    app.with_conn(move |conn| {
        diesel::update(api_keys::table.find(id))
            .set(api_keys::expires_at.eq(Utc::now().naive_utc() + chrono::Duration::seconds(3)))
            .execute(conn)
            .unwrap()
    })
    .await;
    // Cached on both instances now, with the three-second end.
    assert_eq!(me(&app, &old).await.status, 200);
    assert_eq!(second_me(old.clone()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    me(&app, &old).await.assert_error(401, "UNAUTHORIZED");
    second_me(old.clone())
        .await
        .assert_error(401, "UNAUTHORIZED");
    stop.stop(false).await;
}

#[tokio::test]
async fn a_grace_of_zero_cuts_the_old_key_at_once_on_every_instance() {
    let app = spawn_app().await;
    let (_, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (old_id, old) = minted(&app, &admin, "k", "requests:read", None).await;
    let (second, stop) = spawn_second_instance(&app).await;
    let client = crate::helpers::new_client();
    let on_second = |key: String| {
        let (base, client) = (second.clone(), client.clone());
        async move { api_with(&client, &base, Method::GET, "/v1/me", Some(&key), None, &[]).await }
    };
    // Both instances have the key in memory.
    assert_eq!(me(&app, &old).await.status, 200);
    assert_eq!(on_second(old.clone()).await.status, 200);

    let reply = rotate(&app, &admin, &old_id, Some(json!({"grace_hours": 0}))).await;
    let new_key = reply.data(201)["key"].as_str().unwrap().to_owned();
    // This instance: from the answer on.
    me(&app, &old).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(me(&app, &new_key).await.status, 200);
    // The other: within about a second (PostgreSQL's notification; SQLite
    // has no cache).
    let start = Instant::now();
    loop {
        let status = on_second(old.clone()).await.status;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still {status} after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(on_second(new_key).await.status, 200);
    stop.stop(false).await;
}

#[tokio::test]
async fn bad_grace_others_keys_revoked_keys_and_the_permission_rule() {
    let app = spawn_app().await;
    let (user_id, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (_, reader) = key_for(&app, &user_id, "requests:read users:write").await;
    let (id, key) = minted(&app, &admin, "k", "requests:read", None).await;
    let (_, eve) = user_with_key(&app, "eve@example.com", Role::Admin, "admin").await;

    for body in [
        json!({"grace_hours": 169}),
        json!({"grace_hours": -1}),
        json!({"grace_hours": "24"}),
        json!({"grace_hours": 1.5}),
        json!([24]),
    ] {
        let reply = rotate(&app, &admin, &id, Some(body.clone())).await;
        reply.assert_error(400, "BAD_REQUEST");
        if body.is_object() {
            let message = reply.body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("grace_hours"), "{body}: {message}");
        }
    }
    // A credential without admin: 403, as for creating a key.
    let reply = rotate(&app, &reader, &id, None).await;
    reply.assert_error(403, "FORBIDDEN");
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'admin'"));
    // Another user's key, an unknown one: 404.
    rotate(&app, &eve, &id, None)
        .await
        .assert_error(404, "NOT_FOUND");
    rotate(&app, &admin, "key_unknown", None)
        .await
        .assert_error(404, "NOT_FOUND");
    // Nothing changed by any of these.
    let row = stored(&app, &id).await;
    assert_eq!(row.replaced_by, None);
    assert_eq!(row.expires_at, None);
    assert_eq!(me(&app, &key).await.status, 200);
    // A revoked key: 404.
    let path = format!("/v1/api-keys/{id}");
    api(&app, Method::DELETE, &path, Some(&admin), None)
        .await
        .data(200);
    rotate(&app, &admin, &id, None)
        .await
        .assert_error(404, "NOT_FOUND");
    // The default grace is 24 hours.
    let (id, _) = minted(&app, &admin, "k2", "requests:read", None).await;
    rotate(&app, &admin, &id, None).await.data(201);
    let until = stored(&app, &id).await.expires_at.unwrap();
    let want = Utc::now().naive_utc() + chrono::Duration::hours(24);
    assert!((until - want).num_seconds().abs() < 10);
}

#[tokio::test]
async fn rotation_works_at_the_key_cap_and_minted_keys_follow_the_new_key() {
    let app = spawn_app().await;
    let (user_id, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    // A parent key and the key it minted.
    let (parent_id, parent) = minted(&app, &admin, "parent", "admin", None).await;
    let child = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&parent),
        Some(json!({"name": "child", "scopes": ["requests:read"]})),
    )
    .await;
    let child = child.data(201).clone();
    let (child_id, child_key) = (
        child["id"].as_str().unwrap().to_owned(),
        child["key"].as_str().unwrap().to_owned(),
    );
    // Fill the account up to the cap.
    let uid = user_id.clone();
    app.with_conn(move |conn| {
        let have = ApiKeyRow::count_for_user(conn, &uid).unwrap();
        for i in have..MAX_KEYS_PER_USER {
            let new = NewKey {
                name: format!("filler {i}"),
                scopes: ScopeSet::parse("requests:read").unwrap(),
                expires_in_days: None,
            };
            create_for_user(conn, &uid, &new, MintedBy::Owner, Utc::now()).unwrap();
        }
    })
    .await;
    api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&admin),
        Some(json!({"name": "one too many", "scopes": ["requests:read"]})),
    )
    .await
    .assert_error(400, "BAD_REQUEST");

    // At the cap, rotation still works.
    let reply = rotate(&app, &admin, &parent_id, None).await;
    let new_parent = reply.data(201).clone();
    let new_parent_id = new_parent["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stored(&app, &child_id).await.parent_id,
        Some(new_parent_id.clone())
    );
    // A key the old one mints during its grace hangs off the new one too.
    let grandchild = api(
        &app,
        Method::POST,
        "/v1/api-keys",
        Some(&admin),
        Some(json!({"name": "x", "scopes": ["requests:read"]})),
    )
    .await;
    grandchild.assert_error(400, "BAD_REQUEST"); // still at the cap
                                                 // Revoking the old key during its grace revokes it alone.
    api(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{parent_id}"),
        Some(&admin),
        None,
    )
    .await
    .data(200);
    me(&app, &parent).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(me(&app, &child_key).await.status, 200);
    // Revoking the new key cascades to the child.
    api(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{new_parent_id}"),
        Some(&admin),
        None,
    )
    .await
    .data(200);
    me(&app, &child_key).await.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_key_in_its_grace_calls_the_api_but_manages_no_credentials() {
    let app = spawn_app().await;
    let (user_id, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (old_id, old) = minted(&app, &admin, "minter", "admin", None).await;
    let (child_id, _) = minted(&app, &old, "child", "requests:read", None).await;
    let new_id = rotate(&app, &admin, &old_id, None).await.data(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Still a working credential for the API...
    assert_eq!(me(&app, &old).await.status, 200);
    api(&app, Method::GET, "/v1/api-keys", Some(&old), None)
        .await
        .data(200);
    // ...but it mints, rotates and revokes nothing, changes no allowlist
    // and registers no client: a leaked key its owner rotated cannot make
    // itself a successor that outlives the grace.
    let refused = [
        api(
            &app,
            Method::POST,
            "/v1/api-keys",
            Some(&old),
            Some(json!({"name": "late child", "scopes": ["requests:read"]})),
        )
        .await,
        rotate(&app, &old, &child_id, None).await,
        api(
            &app,
            Method::DELETE,
            &format!("/v1/api-keys/{new_id}"),
            Some(&old),
            None,
        )
        .await,
        api(
            &app,
            Method::PUT,
            "/v1/ip-allowlist",
            Some(&old),
            Some(json!({"entries": ["10.0.0.1"]})),
        )
        .await,
        // Nor does it make, change or remove users: an admin it created, or
        // the owner's new password, would outlive the grace.
        api(
            &app,
            Method::POST,
            "/v1/users",
            Some(&old),
            Some(json!({"email": "mallory@example.com", "password": "a long new password", "role": "admin"})),
        )
        .await,
        api(
            &app,
            Method::PATCH,
            &format!("/v1/users/{user_id}"),
            Some(&old),
            Some(json!({"password": "a long new password"})),
        )
        .await,
        api(
            &app,
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            Some(&old),
            None,
        )
        .await,
    ];
    for reply in refused {
        reply.assert_error(403, "FORBIDDEN");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("has been rotated"), "{message}");
    }
    let resp = app
        .client
        .post(format!("{}/oauth/register", app.address))
        .bearer_auth(&old)
        .json(&json!({"redirect_uris": ["https://app.example.com/cb"], "client_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    // Nothing was made or changed; the child now hangs off the new key.
    let users = api(&app, Method::GET, "/v1/users", Some(&admin), None).await;
    let users = users.data(200);
    assert!(!users.to_string().contains("mallory"), "{users}");
    assert_eq!(
        stored(&app, &child_id).await.parent_id,
        Some(new_id.clone())
    );
    assert_eq!(stored(&app, &new_id).await.revoked_at, None);
    // The same holds below the API: minting under a key in its grace is
    // refused inside the transaction that reads it locked.
    let uid = user_id.clone();
    let refused = app
        .with_conn(move |conn| {
            let new = NewKey {
                name: "late child".into(),
                scopes: ScopeSet::parse("requests:read").unwrap(),
                expires_in_days: None,
            };
            create_for_user(conn, &uid, &new, MintedBy::Key(&old_id), Utc::now())
        })
        .await;
    assert!(
        matches!(refused, Err(dzdesk_auth::error::ApiError::Forbidden(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_key_rotates_only_itself_and_what_it_minted_never_outliving_itself() {
    let app = spawn_app().await;
    let (user_id, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    // A: the owner's admin key. P: minted by A, expiring in 10 days. C:
    // minted by P. S: the owner's, never expiring.
    let (parent_id, parent) = minted(&app, &admin, "P", "admin", Some(10)).await;
    let (child_id, _) = minted(&app, &parent, "C", "requests:read", Some(5)).await;
    let (sibling_id, sibling) = named_key(&app, &user_id, "S", "requests:read", None).await;
    // P may not rotate S: the new key would escape P's revocation and
    // outlive P (a credential replaces only keys it could have minted).
    let reply = rotate(&app, &parent, &sibling_id, None).await;
    reply.assert_error(403, "FORBIDDEN");
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only itself and the keys it made"));
    assert_eq!(stored(&app, &sibling_id).await.replaced_by, None);
    assert_eq!(me(&app, &sibling).await.status, 200);
    // Nor A, which made it.
    let admin_id = app
        .with_conn({
            let pid = parent_id.clone();
            move |conn| stored_parent(conn, &pid)
        })
        .await
        .unwrap();
    rotate(&app, &parent, &admin_id, None)
        .await
        .assert_error(403, "FORBIDDEN");
    // C, which it made: yes, and the new C hangs off P as the old one did.
    let reply = rotate(&app, &parent, &child_id, Some(json!({"grace_hours": 0}))).await;
    let new_child = reply.data(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stored(&app, &new_child).await.parent_id,
        Some(parent_id.clone())
    );
    // Itself: yes, with its own expiry (never further).
    let before = stored(&app, &parent_id).await.expires_at;
    let reply = rotate(&app, &parent, &parent_id, Some(json!({"grace_hours": 0}))).await;
    let new_parent = reply.data(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(stored(&app, &new_parent).await.expires_at, before);
    assert_eq!(
        stored(&app, &new_child).await.parent_id,
        Some(new_parent.clone())
    );
    // Revoking A ends them all.
    api(
        &app,
        Method::DELETE,
        &format!("/v1/api-keys/{admin_id}"),
        Some(&admin),
        None,
    )
    .await
    .data(200);
    for id in [&new_parent, &new_child] {
        assert!(stored(&app, id).await.revoked_at.is_some(), "{id}");
    }
}

fn stored_parent(conn: &mut dzdesk_auth::db::AnyConnection, id: &str) -> Option<String> {
    api_keys::table
        .find(id)
        .select(api_keys::parent_id)
        .first::<Option<String>>(conn)
        .unwrap()
}

#[tokio::test]
async fn a_rotation_racing_the_revocation_of_the_parent_never_leaves_a_live_child() {
    // The revocation cascade locks the parent, then its children; the
    // rotation locks the parent, then the key: one of them goes first, and
    // either the rotation finds the parent revoked (404) or the cascade
    // finds the new key. Every other round the child rotates itself: its
    // own row is then locked after its parent's too (locked first, it
    // deadlocked with the cascade on PostgreSQL: a 500).
    let app = spawn_app().await;
    let (_, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    for round in 0..8 {
        let (parent_id, parent) = minted(&app, &admin, &format!("P{round}"), "admin", None).await;
        let (child_id, child) = minted(&app, &parent, "C", "admin", None).await;
        let revoke_path = format!("/v1/api-keys/{parent_id}");
        let rotator = if round % 2 == 0 { &admin } else { &child };
        let (revoked, rotated) = tokio::join!(
            api(&app, Method::DELETE, &revoke_path, Some(&admin), None),
            rotate(&app, rotator, &child_id, Some(json!({"grace_hours": 0})))
        );
        assert_eq!(revoked.status, 200, "round {round}");
        // 401: the child's own key was already revoked when it called.
        assert!(
            [201, 401, 404].contains(&rotated.status.as_u16()),
            "round {round}: {} {:?}",
            rotated.status,
            rotated.body
        );
        if rotated.status == 201 {
            let key = rotated.body["data"]["key"].as_str().unwrap();
            me(&app, key).await.assert_error(401, "UNAUTHORIZED");
        }
        let pid = parent_id.clone();
        let live: i64 = app
            .with_conn(move |conn| {
                api_keys::table
                    .filter(api_keys::parent_id.eq(pid))
                    .filter(api_keys::revoked_at.is_null())
                    .count()
                    .get_result(conn)
                    .unwrap()
            })
            .await;
        assert_eq!(live, 0, "round {round}: a live key under a revoked parent");
    }
}

#[tokio::test]
async fn concurrent_rotations_of_one_key_exactly_one_wins() {
    let app = spawn_app().await;
    let (_, admin) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    for round in 0..4 {
        let (id, _) = minted(&app, &admin, &format!("k{round}"), "requests:read", None).await;
        let (a, b, c) = tokio::join!(
            rotate(&app, &admin, &id, None),
            rotate(&app, &admin, &id, None),
            rotate(&app, &admin, &id, None)
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16(), c.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409, 409], "round {round}");
        let id2 = id.clone();
        let successors: i64 = app
            .with_conn(move |conn| {
                api_keys::table
                    .filter(api_keys::name.eq(format!("k{round}")))
                    .filter(api_keys::id.ne(id2))
                    .count()
                    .get_result(conn)
                    .unwrap()
            })
            .await;
        assert_eq!(successors, 1, "round {round}: one new key");
    }
}

#[tokio::test]
async fn the_cli_rotates_a_key_and_a_running_server_refuses_the_old_one_within_a_second() {
    let app = spawn_app().await;
    let (user_id, _) = user_with_key(&app, "ann@example.com", Role::Admin, "admin").await;
    let (old_id, old) = named_key(&app, &user_id, "k", "requests:read", None).await;
    assert_eq!(me(&app, &old).await.status, 200);
    let url = app.database_url();
    let id = old_id.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::cli::run(
            &["api-key", "rotate", "--id", &id, "--grace-hours", "0"],
            &[("DATABASE_URL", &url)],
            None,
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = printed.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{printed}");
    let new_key = printed["key"].as_str().unwrap().to_owned();
    assert!(printed["id"].as_str().unwrap().starts_with("key_"));
    let start = Instant::now();
    loop {
        let status = me(&app, &old).await.status;
        if status == 401 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(me(&app, &new_key).await.status, 200);

    // Again: 1 (conflict: the key is being replaced... and expired here).
    let url = app.database_url();
    let out = tokio::task::spawn_blocking(move || {
        crate::cli::run(
            &["api-key", "rotate", "--id", &old_id],
            &[("DATABASE_URL", &url)],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A bad grace: 2, before touching anything.
    let url = app.database_url();
    let out = tokio::task::spawn_blocking(move || {
        crate::cli::run(
            &["api-key", "rotate", "--id", "key_x", "--grace-hours", "200"],
            &[("DATABASE_URL", &url)],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Help on every flag.
    let out = crate::cli::run(&["api-key", "rotate", "--help"], &[], None);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--id") && help.contains("The id of the key"),
        "{help}"
    );
    assert!(
        help.contains("--grace-hours") && help.contains("0 (at once) to 168"),
        "{help}"
    );
}

/// The CSRF token of the form posting to `action` on a page.
fn form_token(html: &str, action: &str) -> String {
    let form = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action}"));
    crate::helpers::hidden_input(&html[form..], "csrf_token").expect("csrf token in the form")
}

#[tokio::test]
async fn settings_rotates_a_key_shows_the_new_one_once_and_marks_the_old_one() {
    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    assert_eq!(
        app.login("ann@example.com", PASSWORD, "/").await.status(),
        303
    );
    let (id, old) = named_key(&app, &user_id, "deploy", "requests:read", None).await;
    let html = app.get("/settings/api").await.text().await.unwrap();
    // A labelled grace choice and a Rotate button per key.
    assert!(
        html.contains(&format!(r#"<label for="grace-{id}" class="small">"#)),
        "{html}"
    );
    assert!(html.contains(&format!(r#"<select id="grace-{id}" name="grace_hours">"#)));
    for (value, label) in [
        ("0", "At once"),
        ("1", "1 hour"),
        ("24", "24 hours"),
        ("168", "7 days"),
    ] {
        assert!(html.contains(&format!(r#"value="{value}""#)), "{value}");
        assert!(html.contains(label), "{label}");
    }
    assert!(html.contains(&format!(r#"href="/settings/api/keys/{id}/usage""#)));
    let token = form_token(&html, "/settings/api/keys/rotate");

    // Without the CSRF token: refused, nothing changed.
    let resp = app
        .post_form(
            "/settings/api/keys/rotate",
            &[("key_id", &id), ("grace_hours", "1"), ("csrf_token", "x")],
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(stored(&app, &id).await.replaced_by, None);
    // A grace that is no choice: 400.
    let resp = app
        .post_form(
            "/settings/api/keys/rotate",
            &[
                ("key_id", &id),
                ("grace_hours", "9999"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), 400);

    let resp = app
        .post_form(
            "/settings/api/keys/rotate",
            &[
                ("key_id", &id),
                ("grace_hours", "1"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let page = resp.text().await.unwrap();
    let start = page
        .find(r#"<code id="new-api-key" class="secret">"#)
        .unwrap();
    let new_key: String = page[start..]
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(new_key.starts_with("dzd_"), "{new_key}");
    assert!(page.contains("shown only once"));
    assert!(page.contains(r#"id="old-key-until""#));
    assert_eq!(me(&app, &new_key).await.status, 200);
    assert_eq!(me(&app, &old).await.status, 200);

    // The list says the old key is being replaced, until when, and offers
    // no second rotation for it; the key is never shown again.
    let html = app.get("/settings/api").await.text().await.unwrap();
    assert!(
        html.contains("Being replaced by a rotation: this key works until"),
        "{html}"
    );
    assert!(!html.contains(&format!(r#"<select id="grace-{id}""#)));
    assert!(!html.contains(&new_key));
    // Rotating it again through the form: 400 page, nothing minted.
    let token = form_token(&html, "/settings/api/keys/rotate");
    let resp = app
        .post_form(
            "/settings/api/keys/rotate",
            &[
                ("key_id", &id),
                ("grace_hours", "0"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(me(&app, &old).await.status, 200);
}

#[tokio::test]
async fn browser_rotates_a_key_at_once_and_opens_its_usage_page() {
    use crate::browser::{choose, click, shown_key, start_browser, type_into};
    use fantoccini::Locator;

    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let (id, old) = named_key(&app, &user_id, "deploy", "requests:read", None).await;
    assert_eq!(me(&app, &old).await.status, 200);
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;
    c.goto(&app.url("/settings/api")).await.unwrap();
    type_into(c, "input[name=email]", "ann@example.com").await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    c.wait().for_element(Locator::Css("#create")).await.unwrap();

    // The usage page: the request made above, and the chart.
    click(c, "a.usage-link").await;
    c.wait()
        .for_element(Locator::Css("#hourly-chart"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // Written within about a second: reload until the row is there.
        if c.find(Locator::Css("#usage-table")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no usage row after 3 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    let table = c
        .find(Locator::Css("#usage-table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(table.contains("/v1/me") && table.contains("200"), "{table}");
    c.find(Locator::Css("#back-to-settings"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#create")).await.unwrap();

    // Rotate, at once: the new key is shown once; the old one is refused.
    choose(c, &format!("#grace-{id}"), "0").await;
    click(c, "form.rotate-key button").await;
    let new_key = shown_key(c).await;
    assert!(new_key.starts_with("dzd_"), "{new_key}");
    browser.client.clone().close().await.unwrap();
    assert_eq!(me(&app, &new_key).await.status, 200);
    me(&app, &old).await.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn keys_stored_without_their_lineages_grant_get_it_from_the_migration_and_from_rotation() {
    // Before 2026-12-06 a key minted by a key that an app token minted was
    // stored without the grant (parent_grant_id NULL): it outlived the
    // grant's revocation. The migration fills it in down every lineage,
    // and a rotation takes the grant from the locked parent, not from the
    // key's own (possibly empty) column.
    let flow = Flow::new(Role::Admin, "admin", false).await;
    let app = &flow.app;
    let tokens = flow.tokens("admin").await;
    let access = tokens["access_token"].as_str().unwrap();
    let (minter_id, minter) = minted(app, access, "minter", "admin", None).await;
    let grant = stored(app, &minter_id).await.parent_grant_id.unwrap();
    let (child_id, child) = minted(app, &minter, "child", "admin", None).await;
    let (grandchild_id, grandchild) =
        minted(app, &child, "grandchild", "requests:read", None).await;
    let (rotated_id, _) = minted(app, &minter, "to rotate", "requests:read", None).await;
    // The rows as the old code stored them.
    let ids = [child_id.clone(), grandchild_id.clone(), rotated_id.clone()];
    app.with_conn(move |conn| {
        diesel::update(api_keys::table.filter(api_keys::id.eq_any(ids)))
            .set(api_keys::parent_grant_id.eq(None::<String>))
            .execute(conn)
            .unwrap()
    })
    .await;
    // Rotation by the owner (Settings > API, the CLI) inherits the grant.
    let (uid, rid) = (flow.user_id.clone(), rotated_id.clone());
    let successor = app
        .with_conn(move |conn| {
            rotate_key(
                conn,
                Rotator::Owner(Some(&uid)),
                &rid,
                Grace::hours(0).unwrap(),
                Utc::now(),
            )
            .unwrap()
        })
        .await;
    assert_eq!(
        stored(app, &successor.new.id).await.parent_grant_id,
        Some(grant.clone())
    );
    // The migration, run again on these rows, fills in the rest.
    let postgres = app.database_url().starts_with("postgres");
    app.with_conn(move |conn| {
        let sql = if postgres {
            include_str!("../../migrations/postgres/2026-12-06-000009_api_key_grant_lineage/up.sql")
        } else {
            include_str!("../../migrations/sqlite/2026-12-06-000009_api_key_grant_lineage/up.sql")
        };
        diesel::sql_query(sql).execute(conn).unwrap()
    })
    .await;
    for id in [&child_id, &grandchild_id] {
        assert_eq!(
            stored(app, id).await.parent_grant_id,
            Some(grant.clone()),
            "{id}"
        );
    }
    // So the whole lineage dies with the grant (RFC 7009 2.1).
    let resp =
        crate::introspect::revoke_own(&flow, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    for key in [&minter, &child, &grandchild, &successor.new.key] {
        me(app, key).await.assert_error(401, "UNAUTHORIZED");
    }
}
