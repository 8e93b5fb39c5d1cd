//! POST /oauth/token with grant_type=authorization_code (RFC 6749 4.1.3,
//! RFC 7636 4.6, RFC 9700 4.8.2), and the access token it issues.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use dzdesk_auth::credentials::jwt::KeyRing;
use dzdesk_auth::db::schema::{authorization_codes, grants};
use dzdesk_auth::domain::Role;
use serde_json::Value;

use crate::helpers::spawn_app;
use crate::oauth_flow::{
    assert_exactly_one_success, assert_token_error, pkce, AuthRequest, Flow, REDIRECT,
};

const SCOPE: &str = "requests:read requests:write";

async fn verify_claims(flow: &Flow, token: &str) -> Value {
    let s = flow.app.settings.clone();
    let token = token.to_owned();
    flow.app
        .with_conn(move |conn| {
            let ring = KeyRing::load(conn, &s.secrets, Utc::now().naive_utc(), Duration::hours(1))
                .unwrap();
            let claims = ring
                .verify(&token, &s.issuer, &s.audience, Utc::now().timestamp())
                .unwrap();
            serde_json::to_value(claims).unwrap()
        })
        .await
}

#[tokio::test]
async fn code_exchange_issues_a_user_access_token_and_a_refresh_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("scope", Some(SCOPE));
    let code = flow.code(&req).await;
    let resp = flow.exchange(&code, Some(&verifier)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["pragma"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], SCOPE);
    let refresh = body["refresh_token"].as_str().unwrap();
    assert!(refresh.starts_with("dzr_") && refresh.len() == 4 + 43);

    let claims = verify_claims(&flow, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], flow.user_id);
    assert_eq!(claims["client_id"], flow.client_id);
    assert_eq!(claims["scope"], SCOPE);
    assert!(claims["grant_id"].as_str().unwrap().starts_with("grant_"));
}

#[tokio::test]
async fn confidential_client_without_pkce_exchanges_its_code() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    assert_eq!(flow.exchange(&code, None).await.status(), 200);
}

#[tokio::test]
async fn public_client_exchanges_with_client_id_and_verifier_only() {
    let flow = Flow::new(Role::Agent, SCOPE, true).await;
    assert!(flow.secret.is_none());
    let (verifier, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, challenge) = pkce();
    let (other_verifier, _) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    assert_token_error(
        flow.exchange(&code, Some(&other_verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
    // The refusal used nothing up (the check is a condition of the
    // redemption's statement): the code is still usable, and no grant was
    // left behind.
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);
    let grants = flow
        .app
        .with_conn(|conn| {
            use diesel::prelude::*;
            dzdesk_auth::db::schema::grants::table
                .count()
                .get_result::<i64>(conn)
                .unwrap()
        })
        .await;
    assert_eq!(grants, 1);
}

/// Each of the request's own checks refuses with its own description, and
/// none uses the code up: a wrong, a malformed and a missing verifier, a
/// redirect_uri that differs and one PostgreSQL could not even hold (a NUL
/// byte: the code is then only looked at, never a 500).
#[tokio::test]
async fn every_refused_check_says_why_and_leaves_the_code_usable() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, challenge) = pkce();
    let (other_verifier, _) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    let redirect = REDIRECT;
    let wrong = format!("{REDIRECT}/");
    let unholdable = format!("{REDIRECT}\0");
    let cases: [(&str, Option<&str>, &str); 5] = [
        (
            redirect,
            Some(&other_verifier),
            "code_verifier does not match code_challenge",
        ),
        (
            redirect,
            Some("too-short"),
            "code_verifier does not match code_challenge",
        ),
        (redirect, None, "code_verifier is required"),
        (&wrong, Some(&verifier), "redirect_uri does not match"),
        (&unholdable, Some(&verifier), "redirect_uri does not match"),
    ];
    for (redirect_uri, code_verifier, why) in cases {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(v) = code_verifier {
            form.push(("code_verifier", v));
        }
        let resp = flow.token(&form).await;
        assert_eq!(resp.status(), 400, "{redirect_uri:?} {code_verifier:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with(why), "{description} for {why}");
    }
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);
}

#[tokio::test]
async fn missing_verifier_is_invalid_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (_, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    assert_token_error(flow.exchange(&code, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn verifier_for_a_code_issued_without_challenge_is_refused_as_downgrade() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, _) = pkce();
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    assert_token_error(
        flow.exchange(&code, Some(&verifier)).await,
        400,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn redirect_uri_must_equal_the_authorization_requests() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    for redirect in [
        Some("http://127.0.0.1/cb"),
        Some("https://app.example/cb/"),
        None,
    ] {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
        ];
        if let Some(r) = redirect {
            form.push(("redirect_uri", r));
        }
        assert_token_error(flow.token(&form).await, 400, "invalid_grant").await;
    }
    // The failures did not use the code up.
    assert_eq!(flow.exchange(&code, None).await.status(), 200);
}

#[tokio::test]
async fn code_of_another_client_is_invalid_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    let (other_id, other_secret) = flow
        .app
        .create_client(SCOPE, &["authorization_code"], false)
        .await;
    // Same server, the other client's credentials.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(&other_id, other_secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_token_error(resp, 400, "invalid_grant").await;
}

#[tokio::test]
async fn expired_code_is_invalid_grant() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    flow.app
        .with_conn(|conn| {
            let past = Utc::now().naive_utc() - Duration::seconds(1);
            diesel::update(authorization_codes::table)
                .set(authorization_codes::expires_at.eq(past))
                .execute(conn)
                .unwrap()
        })
        .await;
    assert_token_error(flow.exchange(&code, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn unknown_code_is_invalid_grant_and_missing_code_invalid_request() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    assert_token_error(
        flow.exchange("dzc_not-a-real-code", None).await,
        400,
        "invalid_grant",
    )
    .await;
    let resp = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_token_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn replayed_code_is_invalid_grant_and_revokes_its_tokens() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    let first: Value = flow.exchange(&code, None).await.json().await.unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();

    assert_token_error(flow.exchange(&code, None).await, 400, "invalid_grant").await;

    // RFC 6749 4.1.2: the tokens issued from the code are revoked.
    let revoked: Vec<Option<chrono::NaiveDateTime>> = flow
        .app
        .with_conn(|conn| grants::table.select(grants::revoked_at).load(conn).unwrap())
        .await;
    assert!(revoked.iter().any(Option::is_some), "{revoked:?}");
    assert_token_error(flow.refresh(refresh, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn another_client_presenting_a_used_code_revokes_nothing() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    let first: Value = flow.exchange(&code, None).await.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();

    // A public client (client_id only) and a confidential one present the
    // victim client's used code.
    let (public_id, _) = flow
        .app
        .create_client(SCOPE, &["authorization_code"], true)
        .await;
    let (other_id, other_secret) = flow
        .app
        .create_client(SCOPE, &["authorization_code"], false)
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let mut public_form = form.to_vec();
    public_form.push(("client_id", public_id.as_str()));
    let as_public = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .form(&public_form)
        .send()
        .await
        .unwrap();
    assert_token_error(as_public, 400, "invalid_grant").await;
    let as_confidential = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(&other_id, other_secret.as_deref())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_token_error(as_confidential, 400, "invalid_grant").await;

    // RFC 6749 4.1.3: the code is not theirs, so its grant stays: the access
    // token is active and the refresh token works.
    let revoked: Vec<Option<chrono::NaiveDateTime>> = flow
        .app
        .with_conn(|conn| grants::table.select(grants::revoked_at).load(conn).unwrap())
        .await;
    assert!(revoked.iter().all(Option::is_none), "{revoked:?}");
    let body = crate::introspect::introspect(&flow, crate::introspect::own(&flow), access).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(flow.refresh(refresh, None).await.status(), 200);

    // The code's own client replaying it still revokes the grant.
    assert_token_error(flow.exchange(&code, None).await, 400, "invalid_grant").await;
    let body = crate::introspect::introspect(&flow, crate::introspect::own(&flow), access).await;
    assert_eq!(body["active"], false, "{body}");
}

#[tokio::test]
async fn twenty_parallel_redemptions_of_one_code_give_exactly_one_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    assert_exactly_one_success((0..20).map(|_| flow.exchange(&code, Some(&verifier)))).await;
}

#[tokio::test]
async fn disabled_user_cannot_redeem_a_code() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let code = flow.code(&AuthRequest::new(&flow.client_id, None)).await;
    flow.app.set_disabled(&flow.email, true).await;
    assert_token_error(flow.exchange(&code, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn password_and_implicit_grants_are_unsupported_grant_type() {
    let app = spawn_app().await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        let resp = flow
            .token(&[("grant_type", grant), ("username", "a"), ("password", "b")])
            .await;
        assert_token_error(resp, 400, "unsupported_grant_type").await;
    }
}

#[tokio::test]
async fn sweep_deletes_codes_and_refresh_tokens_a_day_past_expiry() {
    use dzdesk_auth::db::schema::refresh_tokens;
    use dzdesk_auth::maintenance::{sweep, Swept};

    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = flow.tokens("requests:read").await; // one used code, one refresh token
    let again = AuthRequest::new(&flow.client_id, None).with("prompt", Some("consent"));
    flow.code(&again).await; // one fresh code
    let now = Utc::now().naive_utc();
    let swept = flow
        .app
        .with_conn(move |conn| sweep(conn, now).unwrap())
        .await;
    assert_eq!(swept, Swept::default(), "nothing is old enough yet");

    // Two days later the used code and the refresh token are gone... (the
    // fresh code, too: it expired 60 s after issue).
    let later = now + Duration::days(2);
    let swept = flow
        .app
        .with_conn(move |conn| sweep(conn, later).unwrap())
        .await;
    assert_eq!(
        swept,
        Swept {
            codes: 2,
            refresh_tokens: 0,
            revoked_access_tokens: 0,
            usage_log: 0,
            pushed_requests: 0,
        }
    );
    // ...while a refresh token lives 30 days.
    let much_later = now + Duration::days(32);
    let swept = flow
        .app
        .with_conn(move |conn| sweep(conn, much_later).unwrap())
        .await;
    assert_eq!(swept.refresh_tokens, 1);
    let left: i64 = flow
        .app
        .with_conn(|conn| refresh_tokens::table.count().get_result(conn).unwrap())
        .await;
    assert_eq!(left, 0);
    assert!(body["refresh_token"].is_string());
}
