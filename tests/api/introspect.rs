//! POST /oauth/introspect (RFC 7662) and POST /oauth/revoke (RFC 7009).

use chrono::{Duration, Utc};
use diesel::prelude::*;
use dzdesk_auth::credentials::jwt::{AccessClaims, KeyRing};
use dzdesk_auth::db::schema::clients;
use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{spawn_second_instance_with_view, PASSWORD};
use crate::oauth_flow::{assert_token_error, Flow, REDIRECT};

const SCOPE: &str = "requests:read requests:write";

/// A client as an internal service registers: confidential, may introspect
/// every token.
pub(crate) async fn service(flow: &Flow, introspect: bool) -> (String, String) {
    let (id, secret) = flow
        .app
        .register_client(ClientRequest {
            name: "Service".into(),
            redirect_uris: vec![REDIRECT.into()],
            scope: "requests:read".into(),
            public: false,
            grant_types: vec!["client_credentials".into()],
            require_pkce: false,
            introspect,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    (id, secret.unwrap())
}

pub(crate) async fn call(
    base: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> Response {
    let mut req = crate::helpers::client_builder()
        .build()
        .unwrap()
        .post(format!("{base}{path}"))
        .form(form);
    if let Some((id, secret)) = creds {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap()
}

pub(crate) async fn introspect_at(base: &str, creds: (&str, &str), token: &str) -> Value {
    let resp = call(base, "/oauth/introspect", Some(creds), &[("token", token)]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

pub(crate) async fn introspect(flow: &Flow, creds: (&str, &str), token: &str) -> Value {
    introspect_at(&flow.app.address, creds, token).await
}

/// Revokes `token` as the flow's own client.
pub(crate) async fn revoke_own(flow: &Flow, token: &str) -> Response {
    call(
        &flow.app.address,
        "/oauth/revoke",
        Some(own(flow)),
        &[("token", token)],
    )
    .await
}

/// After a disable and re-enable (which ended the session): signs in again
/// and returns a new access token.
async fn signed_in_again(flow: &Flow) -> String {
    let resp = flow.app.login(&flow.email, PASSWORD, "/").await;
    assert_eq!(resp.status(), 303);
    flow.access_token(SCOPE).await
}

pub(crate) fn inactive() -> Value {
    json!({"active": false})
}

pub(crate) fn own(flow: &Flow) -> (&str, &str) {
    (&flow.client_id, flow.secret.as_deref().unwrap())
}

#[tokio::test]
async fn active_access_token_has_every_rfc7662_field() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let body = introspect(&flow, own(&flow), access).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], SCOPE);
    assert_eq!(body["client_id"], flow.client_id);
    assert_eq!(body["sub"], flow.user_id);
    assert_eq!(body["username"], flow.email);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["iss"], flow.app.settings.issuer);
    assert_eq!(body["aud"], flow.app.settings.audience);
    assert!(body["jti"].is_string());
    let (iat, exp) = (body["iat"].as_i64().unwrap(), body["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600);
}

#[tokio::test]
async fn client_credentials_token_introspects_with_the_client_as_subject() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (id, secret) = service(&flow, false).await;
    let resp = call(
        &flow.app.address,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let access: Value = resp.json().await.unwrap();
    let body = introspect(
        &flow,
        (&id, &secret),
        access["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], id);
    assert!(body.get("username").is_none());
}

#[tokio::test]
async fn a_client_sees_only_its_own_tokens_unless_it_may_introspect() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (other, other_secret) = service(&flow, false).await;
    let (internal, internal_secret) = service(&flow, true).await;
    for token in [access, refresh] {
        assert_eq!(
            introspect(&flow, (&other, &other_secret), token).await,
            inactive()
        );
        let seen = introspect(&flow, (&internal, &internal_secret), token).await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["client_id"], flow.client_id);
    }
}

#[tokio::test]
async fn introspection_needs_confidential_client_credentials() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let base = &flow.app.address;
    let resp = call(base, "/oauth/introspect", None, &[("token", access)]).await;
    assert_token_error(resp, 401, "invalid_client").await;
    let resp = call(
        base,
        "/oauth/introspect",
        Some((&flow.client_id, "dzs_wrong")),
        &[("token", access)],
    )
    .await;
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"dzdesk-auth\""
    );
    assert_token_error(resp, 401, "invalid_client").await;
    // A public client cannot authenticate, so it cannot introspect.
    let public = Flow::on(crate::helpers::spawn_app().await, Role::Agent, SCOPE, true).await;
    let resp = call(
        &public.app.address,
        "/oauth/introspect",
        None,
        &[("token", access), ("client_id", &public.client_id)],
    )
    .await;
    assert_token_error(resp, 401, "invalid_client").await;
}

/// Signs `claims` with the server's current key (for expiry and issuer cases).
pub(crate) async fn sign_with_server_key(flow: &Flow, claims: AccessClaims) -> String {
    let sealer = flow.app.settings.secrets.clone();
    flow.app
        .with_conn(move |conn| {
            KeyRing::load(conn, &sealer, Utc::now().naive_utc(), Duration::hours(1))
                .unwrap()
                .sign(&claims)
                .unwrap()
        })
        .await
}

#[tokio::test]
async fn every_kind_of_bad_token_is_exactly_active_false() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();

    // Tampered payload (scope widened), signature kept.
    let claims: Value = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let mut widened = claims.clone();
    widened["scope"] = json!("admin");
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    parts[1] = b64(&widened);
    let tampered = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt"})),
        b64(&claims)
    );

    let base_claims: AccessClaims = serde_json::from_value(claims.clone()).unwrap();
    let mut expired = base_claims.clone();
    expired.iat -= 7200;
    expired.exp = Utc::now().timestamp() - 120;
    let expired = sign_with_server_key(&flow, expired).await;
    // Within the verifier's 30 s clock-skew leeway, but expired all the same.
    let mut just_expired = base_claims.clone();
    just_expired.exp = Utc::now().timestamp() - 5;
    let just_expired = sign_with_server_key(&flow, just_expired).await;
    let mut foreign = base_claims.clone();
    foreign.iss = "https://evil.example".into();
    let foreign = sign_with_server_key(&flow, foreign).await;
    let other_key = {
        let row = dzdesk_auth::credentials::jwt::generate_key(Utc::now().naive_utc()).unwrap();
        KeyRing::from_rows(&[row])
            .unwrap()
            .sign(&base_claims)
            .unwrap()
    };

    for bad in [
        "nonsense",
        "a.b.c",
        "dzr_unknown",
        &tampered,
        &alg_none,
        &expired,
        &just_expired,
        &foreign,
        &other_key,
    ] {
        assert_eq!(
            introspect(&flow, own(&flow), bad).await,
            inactive(),
            "{bad}"
        );
    }
    // The genuine one still is active.
    assert_eq!(introspect(&flow, own(&flow), &access).await["active"], true);
}

#[tokio::test]
async fn token_type_hint_never_changes_the_answer() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    for token in ["access_token", "refresh_token"] {
        let value = tokens[token].as_str().unwrap();
        for hint in ["access_token", "refresh_token", "something_else"] {
            let resp = call(
                &flow.app.address,
                "/oauth/introspect",
                Some(own(&flow)),
                &[("token", value), ("token_type_hint", hint)],
            )
            .await;
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["active"], true, "{token} with hint {hint}");
        }
    }
}

#[tokio::test]
async fn refresh_token_is_active_until_rotated() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let body = introspect(&flow, own(&flow), refresh).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    assert_eq!(body["username"], flow.email);
    assert_eq!(flow.refresh(refresh, None).await.status(), 200);
    assert_eq!(introspect(&flow, own(&flow), refresh).await, inactive());
}

#[tokio::test]
async fn disabled_user_or_client_makes_tokens_inactive_at_once() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let access = flow.access_token(SCOPE).await;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    flow.app.set_disabled(&flow.email, true).await;
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
    // Disabling ended the grant for good: re-enabling does not revive it.
    flow.app.set_disabled(&flow.email, false).await;
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
    let access = signed_in_again(&flow).await;
    assert_eq!(introspect(&flow, creds, &access).await["active"], true);

    let client_id = flow.client_id.clone();
    flow.app
        .with_conn(move |conn| {
            diesel::update(clients::table.find(client_id))
                .set(clients::disabled.eq(true))
                .execute(conn)
                .unwrap()
        })
        .await;
    assert_eq!(introspect(&flow, creds, &access).await, inactive());
}

#[tokio::test]
async fn deleted_client_makes_its_tokens_inactive() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let access = flow.access_token(SCOPE).await;
    let (internal, secret) = service(&flow, true).await;
    let client_id = flow.client_id.clone();
    flow.app
        .with_conn(move |conn| {
            diesel::delete(clients::table.find(client_id))
                .execute(conn)
                .unwrap()
        })
        .await;
    assert_eq!(
        introspect(&flow, (&internal, &secret), &access).await,
        inactive()
    );
}

#[tokio::test]
async fn revoked_grant_by_refresh_reuse_makes_access_tokens_inactive() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(flow.refresh(refresh, None).await.status(), 200);
    assert_eq!(introspect(&flow, own(&flow), access).await["active"], true);
    flow.refresh(refresh, None).await; // reuse: the grant is revoked
    assert_eq!(introspect(&flow, own(&flow), access).await, inactive());
}

#[tokio::test]
async fn revoking_an_access_token_affects_only_that_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = revoke_own(&flow, access).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(introspect(&flow, own(&flow), access).await, inactive());
    // The grant lives on: the refresh token still works and its new access
    // token is active.
    let body: Value = flow.refresh(refresh, None).await.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(introspect(&flow, own(&flow), fresh).await["active"], true);
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_the_grant_and_its_access_tokens() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = call(
        &flow.app.address,
        "/oauth/revoke",
        Some(own(&flow)),
        &[("token", refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(introspect(&flow, own(&flow), access).await, inactive());
    assert_eq!(introspect(&flow, own(&flow), refresh).await, inactive());
    assert_token_error(flow.refresh(refresh, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn revoking_unknown_or_revoked_tokens_is_200_and_others_tokens_refused() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let base = &flow.app.address;
    for token in ["nonsense", "dzr_unknown", "a.b.c"] {
        let resp = call(base, "/oauth/revoke", Some(own(&flow)), &[("token", token)]).await;
        assert_eq!(resp.status(), 200, "{token}");
    }
    // RFC 7009 2.1: a token of another client is refused, and stays active.
    let (other, other_secret) = service(&flow, true).await;
    let resp = call(
        base,
        "/oauth/revoke",
        Some((&other, &other_secret)),
        &[("token", access)],
    )
    .await;
    assert_token_error(resp, 400, "unauthorized_client").await;
    assert_eq!(introspect(&flow, own(&flow), access).await["active"], true);
    // Twice is fine.
    for _ in 0..2 {
        let resp = call(
            base,
            "/oauth/revoke",
            Some(own(&flow)),
            &[("token", access)],
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let resp = call(base, "/oauth/revoke", None, &[("token", access)]).await;
    assert_token_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn two_instances_on_one_database_see_each_others_tokens_and_revocations_at_once() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (second, handle, second_view) = spawn_second_instance_with_view(&flow.app).await;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    let tokens = flow.tokens(SCOPE).await; // issued by the first instance
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(introspect_at(&second, creds, access).await["active"], true);

    let resp = revoke_own(&flow, refresh).await;
    assert_eq!(resp.status(), 200);
    // Once the second instance has applied what was committed (see
    // two_cached_instances_agree_after_a_revocation).
    dzdesk_auth::credentials::listener::fence(&flow.app.db, &second_view).await;
    assert_eq!(introspect_at(&second, creds, access).await, inactive());
    handle.stop(false).await;
}

/// The production configuration: caller and keys cached, so on PostgreSQL
/// introspection answers from the revocation view.
async fn cached_flow() -> Flow {
    let app = crate::helpers::spawn_app_custom(
        |s| {
            s.client_cache_secs = 60;
            s.key_reload_secs = 60;
        },
        |_| {},
    )
    .await;
    Flow::on(app, Role::Agent, SCOPE, false).await
}

fn grant_and_jti(access: &str) -> (String, String) {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    (
        claims["grant_id"].as_str().unwrap().to_owned(),
        claims["jti"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_revocation_view_answers_and_never_serves_a_revoked_grant() {
    let flow = cached_flow().await;
    let pg = flow.app.settings.database_url.postgres_url().is_some();
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (grant, jti) = grant_and_jti(access);
    for _ in 0..3 {
        assert_eq!(introspect(&flow, own(&flow), access).await["active"], true);
    }
    // On PostgreSQL the grant is now held in memory (SQLite: never).
    assert_eq!(flow.app.revocations.lookup(&grant, &jti).is_some(), pg);

    // Revoking through the service: inactive on the very next call.
    let resp = revoke_own(&flow, refresh).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(introspect(&flow, own(&flow), access).await, inactive());
}

#[tokio::test]
async fn the_revocation_view_sees_changes_made_behind_the_services_back() {
    let flow = cached_flow().await;
    let access = flow.access_token(SCOPE).await;
    assert_eq!(introspect(&flow, own(&flow), &access).await["active"], true);
    // The CLI path: `user disable` writes to the database directly.
    flow.app.set_disabled(&flow.email, true).await;
    assert_eq!(introspect(&flow, own(&flow), &access).await, inactive());
    flow.app.set_disabled(&flow.email, false).await;
    assert_eq!(introspect(&flow, own(&flow), &access).await, inactive());
    let access = signed_in_again(&flow).await;
    assert_eq!(introspect(&flow, own(&flow), &access).await["active"], true);
    // A revoked jti, inserted by hand.
    let (grant, jti) = grant_and_jti(&access);
    flow.app
        .with_conn(move |conn| {
            dzdesk_auth::db::models::RevokedAccessToken {
                jti,
                grant_id: grant,
                revoked_at: Utc::now().naive_utc(),
                expires_at: Utc::now().naive_utc() + Duration::hours(1),
            }
            .insert(conn)
            .unwrap()
        })
        .await;
    assert_eq!(introspect(&flow, own(&flow), &access).await, inactive());
}

#[tokio::test]
async fn two_cached_instances_agree_after_a_revocation() {
    let flow = cached_flow().await;
    let (second, handle, second_view) = spawn_second_instance_with_view(&flow.app).await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            introspect_at(&second, own(&flow), access).await["active"],
            true
        );
    }
    let resp = revoke_own(&flow, refresh).await;
    assert_eq!(resp.status(), 200);
    // The revocation reaches the second instance by NOTIFY, delivered to
    // both listeners at its commit; the first fenced its own before
    // answering. Wait until the second has applied everything committed so
    // far (a marker behind the revocation), not for a time: under load its
    // listener task may run a few milliseconds after the answer.
    dzdesk_auth::credentials::listener::fence(&flow.app.db, &second_view).await;
    assert_eq!(introspect_at(&second, own(&flow), access).await, inactive());
    handle.stop(false).await;
}

#[tokio::test]
async fn client_disable_cli_makes_its_tokens_inactive_at_once() {
    let flow = cached_flow().await;
    let access = flow.access_token(SCOPE).await;
    let (internal, secret) = service(&flow, true).await;
    let creds = (internal.as_str(), secret.as_str());
    assert_eq!(introspect(&flow, creds, &access).await["active"], true);
    let url = flow.app.database_url();
    let out = crate::cli::run(
        &["client", "disable", "--id", &flow.client_id],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["disabled"], true);
    flow.app.settle_revocations().await;
    assert_eq!(introspect(&flow, creds, &access).await, inactive());

    let out = crate::cli::run(
        &["client", "enable", "--id", &flow.client_id],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert!(out.status.success());
    flow.app.settle_revocations().await;
    assert_eq!(introspect(&flow, creds, &access).await["active"], true);
    let out = crate::cli::run(
        &["client", "disable", "--id", "client_nope"],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn a_token_signed_with_a_key_this_instance_has_not_loaded_yet_is_active() {
    // Keys re-read only every 60 s, as in production.
    let flow = cached_flow().await;
    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let claims: AccessClaims = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    // Another instance (here: the CLI's code) rotates and signs with the new key.
    let sealer = flow.app.settings.secrets.clone();
    let resigned = flow
        .app
        .with_conn(move |conn| {
            let now = Utc::now().naive_utc();
            dzdesk_auth::credentials::jwt::rotate(conn, &sealer, now, false).unwrap();
            KeyRing::load(conn, &sealer, now, Duration::hours(1))
                .unwrap()
                .sign(&claims)
                .unwrap()
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        introspect(&flow, own(&flow), &resigned).await["active"],
        true
    );
}

/// `token` with its ES256 signature (r, s) replaced by (r, n - s): a valid
/// ECDSA signature of the same bytes, with the high S when `token`'s is low.
fn signature_twin(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p256::ecdsa::Signature;
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let twin = Signature::from_scalars(r, -s).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
}

#[tokio::test]
async fn the_high_s_twin_of_an_access_token_is_inactive_and_gets_401() {
    // Both verification paths: the database one and the cached one (caller
    // and keys in memory), where the original is verified and remembered first.
    for flow in [
        Flow::new(Role::Agent, SCOPE, false).await,
        cached_flow().await,
    ] {
        let access = flow.access_token(SCOPE).await;
        let twin = signature_twin(&access);
        assert_ne!(twin, access);
        assert_eq!(introspect(&flow, own(&flow), &access).await["active"], true);
        assert_eq!(introspect(&flow, own(&flow), &twin).await, inactive());
        let (service, service_secret) = service(&flow, true).await;
        assert_eq!(
            introspect(&flow, (&service, &service_secret), &twin).await,
            inactive()
        );
        let me = crate::v1_keys::me(&flow.app, &access).await;
        assert_eq!(me.data(200)["id"], flow.user_id);
        crate::v1_keys::me(&flow.app, &twin)
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn a_public_client_revokes_its_own_tokens_by_client_id_and_nothing_else() {
    // RFC 7009 2.1: public clients revoke too, identified by client_id.
    let public = Flow::new(Role::Agent, SCOPE, true).await;
    let app = &public.app;
    let tokens = public.tokens(SCOPE).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    // Another public client's tokens: not this one's to revoke.
    let (other_id, _) = app
        .create_client(SCOPE, &["authorization_code", "refresh_token"], true)
        .await;
    let resp = call(
        &app.address,
        "/oauth/revoke",
        None,
        &[("token", refresh), ("client_id", &other_id)],
    )
    .await;
    assert_token_error(resp, 400, "unauthorized_client").await;
    let resp = public.refresh(refresh, None).await;
    assert_eq!(resp.status(), 200, "the other client revoked nothing");
    let body: Value = resp.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // Its own: the refresh token (so the grant) and an access token.
    for token in [access, refresh.as_str()] {
        let resp = call(
            &app.address,
            "/oauth/revoke",
            None,
            &[("token", token), ("client_id", &public.client_id)],
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    assert_token_error(public.refresh(&refresh, None).await, 400, "invalid_grant").await;
    crate::v1_keys::me(app, access)
        .await
        .assert_error(401, "UNAUTHORIZED");
    // A confidential client's token, on the same server: the public
    // client names itself and is refused, and the token still works.
    let mut public = public;
    let public_id = public.client_id.clone();
    let (conf_id, conf_secret) = public
        .app
        .create_client(SCOPE, &["authorization_code", "refresh_token"], false)
        .await;
    public.client_id = conf_id;
    public.secret = conf_secret;
    let theirs = public.tokens(SCOPE).await;
    let their_refresh = theirs["refresh_token"].as_str().unwrap();
    let resp = call(
        &public.app.address,
        "/oauth/revoke",
        None,
        &[("token", their_refresh), ("client_id", &public_id)],
    )
    .await;
    assert_token_error(resp, 400, "unauthorized_client").await;
    assert_eq!(public.refresh(their_refresh, None).await.status(), 200);

    // A confidential client still authenticates: its client_id alone is 401.
    let confidential = Flow::on(crate::helpers::spawn_app().await, Role::Agent, SCOPE, false).await;
    let tokens = confidential.tokens(SCOPE).await;
    let resp = call(
        &confidential.app.address,
        "/oauth/revoke",
        None,
        &[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &confidential.client_id),
        ],
    )
    .await;
    assert_token_error(resp, 401, "invalid_client").await;
}
