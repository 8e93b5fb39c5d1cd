//! OpenID Connect Core 1.0 on the code flow: the ID token (claims, nonce,
//! at_hash, refresh), UserInfo, discovery, and the rules that keep an ID
//! token from ever counting as an access token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dzdesk_auth::domain::Role;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{location, spawn_app};
use crate::oauth_flow::{assert_error_redirect, param, pkce, AuthRequest, Flow};
use crate::v1_keys::key_for;

/// A nonce with every character a URL and a JSON string must carry safely.
pub(crate) const NONCE: &str = "n-0S6_WzA2Mj &<>\"'%+/=?#üλ\\";

const SCOPE: &str = "requests:read openid profile email";

/// Verifies an ID token with the published keys: ES256, `typ: JWT`, our
/// issuer, audience `client_id`, not expired. Its claims.
pub(crate) async fn verify_id_token(flow: &Flow, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.alg, Algorithm::ES256);
    let set: jsonwebtoken::jwk::JwkSet = flow
        .app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&flow.app.settings.issuer]);
    validation.set_audience(&[&flow.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

fn at_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

/// The whole flow with `scope` and `nonce`: the token response.
async fn tokens(flow: &Flow, scope: &str, nonce: Option<&str>) -> Value {
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some(scope))
        .with("nonce", nonce);
    let code = flow.code(&req).await;
    let resp = flow.exchange(&code, Some(&verifier)).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_code_exchange_returns_an_id_token_with_the_exact_nonce_and_at_hash() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let before = chrono::Utc::now().timestamp();
    let body = tokens(&flow, "openid email requests:read", Some(NONCE)).await;
    assert_eq!(body["scope"], "requests:read openid email");
    let access = body["access_token"].as_str().unwrap();
    let claims = verify_id_token(&flow, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(claims["iss"], flow.app.settings.issuer.as_str());
    assert_eq!(claims["sub"], flow.user_id.as_str(), "the /v1/me id");
    assert_eq!(claims["aud"], flow.client_id.as_str());
    assert_eq!(claims["nonce"], NONCE, "echoed exactly");
    assert_eq!(claims["at_hash"], at_hash(access));
    assert_eq!(claims["email"], flow.email.as_str());
    assert_eq!(claims["email_verified"], false);
    let iat = claims["iat"].as_i64().unwrap();
    assert!(iat >= before - 1);
    assert!(claims["exp"].as_i64().unwrap() > iat);
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(auth_time <= iat && auth_time >= before - 60, "{auth_time}");
    let sid = claims["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 32);
    // /v1/me names the same subject.
    let me: Value = flow
        .app
        .client
        .get(flow.app.url("/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["id"], claims["sub"]);
    // /v1 ignores the identity scopes.
    assert_eq!(me["data"]["scopes"], serde_json::json!(["requests:read"]));

    // Refresh (OIDC Core 12.2): a new ID token with the same sub, aud,
    // auth_time and sid, no nonce, and the new access token's at_hash.
    let resp = flow
        .refresh(body["refresh_token"].as_str().unwrap(), None)
        .await;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await.unwrap();
    let again = verify_id_token(&flow, refreshed["id_token"].as_str().expect("id_token")).await;
    assert_eq!(again["sub"], claims["sub"]);
    assert_eq!(again["aud"], claims["aud"]);
    assert_eq!(again["auth_time"], claims["auth_time"]);
    assert_eq!(again["sid"], claims["sid"]);
    assert!(again.get("nonce").is_none(), "{again}");
    assert_eq!(
        again["at_hash"],
        at_hash(refreshed["access_token"].as_str().unwrap())
    );

    // A refresh narrowed to API scopes: no ID token.
    let resp = flow
        .refresh(
            refreshed["refresh_token"].as_str().unwrap(),
            Some("requests:read"),
        )
        .await;
    let narrowed: Value = resp.json().await.unwrap();
    assert!(narrowed.get("id_token").is_none(), "{narrowed}");
}

#[tokio::test]
async fn without_openid_there_is_no_id_token_and_without_email_no_email_claims() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = tokens(&flow, "requests:read", None).await;
    assert!(body.get("id_token").is_none(), "{body}");
    let body = tokens(&flow, "openid", None).await;
    let claims = verify_id_token(&flow, body["id_token"].as_str().unwrap()).await;
    assert!(claims.get("email").is_none() && claims.get("email_verified").is_none());
    assert!(claims.get("nonce").is_none(), "none was sent");
}

#[tokio::test]
async fn a_public_client_must_send_a_nonce_with_openid() {
    let flow = Flow::new(Role::Agent, SCOPE, true).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("scope", Some("openid"));
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    assert!(param(&location(&resp), "error_description")
        .unwrap()
        .contains("nonce"));
    // Not needed without openid; with a nonce the flow goes through.
    let body = tokens(&flow, "requests:read", None).await;
    assert!(body.get("id_token").is_none());
    let body = tokens(&flow, "openid", Some(NONCE)).await;
    let claims = verify_id_token(&flow, body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["nonce"], NONCE);
    // An overlong nonce is refused.
    let long = "n".repeat(513);
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some("openid"))
        .with("nonce", Some(&long));
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
}

#[tokio::test]
async fn an_id_token_is_never_an_access_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = tokens(&flow, "openid requests:read", Some("n")).await;
    let id_token = body["id_token"].as_str().unwrap();
    // Not at /v1 ...
    let resp = flow
        .app
        .client
        .get(flow.app.url("/v1/me"))
        .bearer_auth(id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // ... nor at UserInfo ...
    let resp = flow
        .app
        .client
        .get(flow.app.url("/oauth/userinfo"))
        .bearer_auth(id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // ... nor at introspection (its own client asks).
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/introspect"))
        .basic_auth(&flow.client_id, flow.secret.as_deref())
        .form(&[("token", id_token)])
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({"active": false}));
}

async fn userinfo(flow: &Flow, bearer: Option<&str>, post: bool) -> reqwest::Response {
    let url = flow.app.url("/oauth/userinfo");
    let mut req = if post {
        flow.app.client.post(url)
    } else {
        flow.app.client.get(url)
    };
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn userinfo_answers_the_granted_claims_and_rfc_6750_errors() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let body = tokens(&flow, "openid email", Some("n")).await;
    let access = body["access_token"].as_str().unwrap();
    for post in [false, true] {
        let resp = userinfo(&flow, Some(access), post).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let claims: Value = resp.json().await.unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"sub": flow.user_id, "email": flow.email, "email_verified": false})
        );
    }
    let body = tokens(&flow, "openid profile", Some("n")).await;
    let claims: Value = userinfo(&flow, body["access_token"].as_str(), false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims,
        serde_json::json!({"sub": flow.user_id, "preferred_username": flow.email})
    );

    // Without openid: 403 insufficient_scope.
    let body = tokens(&flow, "requests:read", None).await;
    let resp = userinfo(&flow, body["access_token"].as_str(), false).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="insufficient_scope", scope="openid""#
    );
    // No token: the bare challenge. A bad one, or an API key: invalid_token.
    let resp = userinfo(&flow, None, false).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (_, key) = key_for(&flow.app, &flow.user_id, "requests:read").await;
    for bad in ["nope", key.as_str()] {
        let resp = userinfo(&flow, Some(bad), false).await;
        assert_eq!(resp.status(), 401, "{bad}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
}

#[tokio::test]
async fn discovery_matches_the_server_metadata_and_names_the_oidc_features() {
    let app = spawn_app().await;
    let oidc: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    let oauth: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(oidc, oauth, "one document");
    assert_eq!(oidc["issuer"], app.settings.issuer.as_str());
    assert_eq!(
        oidc["userinfo_endpoint"],
        format!("{}/oauth/userinfo", app.settings.issuer)
    );
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(
        oidc["subject_types_supported"],
        serde_json::json!(["public"])
    );
    for claim in [
        "sub",
        "auth_time",
        "nonce",
        "at_hash",
        "sid",
        "email",
        "email_verified",
    ] {
        assert!(
            oidc["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from(claim)),
            "{claim}"
        );
    }
    for scope in ["openid", "profile", "email"] {
        assert!(
            oidc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from(scope)),
            "{scope}"
        );
    }
}

#[tokio::test]
async fn identity_scopes_are_for_sign_in_only() {
    let app = spawn_app().await;
    let user = app.create_user("agent@example.com", Role::Agent).await;
    // Not on API keys.
    let (_, admin_key) = {
        let admin = app.create_user("admin@example.com", Role::Admin).await;
        key_for(&app, &admin, "admin").await
    };
    let _ = user;
    let resp = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"name": "x", "scopes": ["openid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OpenID"),
        "{body}"
    );
    // Not on client_credentials tokens: a service has no identity.
    let (id, secret) = app
        .create_client("requests:read openid", &["client_credentials"], false)
        .await;
    let token = |scope: Option<&'static str>| {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        app.client
            .post(app.url("/oauth/token"))
            .basic_auth(&id, secret.as_deref())
            .form(&form)
            .send()
    };
    let resp = token(Some("openid")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
    let body: Value = token(None).await.unwrap().json().await.unwrap();
    assert_eq!(body["scope"], "requests:read");
    assert!(body.get("id_token").is_none());
}

#[tokio::test]
async fn an_agent_may_grant_the_identity_scopes_and_the_consent_page_says_what_they_are() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some("openid profile email"))
        .with("nonce", Some("n"));
    let page = flow.consent_page(&req).await;
    assert!(page.contains("See your email address"), "{page}");
    assert!(page.contains("Know who you are"), "{page}");
    // select_account cannot be honoured: said so.
    let req = req.with("prompt", Some("select_account"));
    let resp = flow.get(&req).await;
    assert_error_redirect(
        &resp,
        &flow.app.settings.issuer,
        "account_selection_required",
    );
}

/// Signs in again on the login page `login_path` (a `/login?...&reauth=1`
/// the service redirected to): the page shows its form although the
/// browser is signed in, with the account's email filled in. The redirect
/// after the sign-in.
pub(crate) async fn sign_in_again(flow: &Flow, login_path: &str) -> String {
    let page = flow.app.get(login_path).await;
    assert_eq!(page.status(), 200, "the form, though signed in");
    let html = page.text().await.unwrap();
    assert!(html.contains(&flow.email), "the email is filled in");
    let csrf = crate::helpers::hidden_input(&html, "csrf_token").unwrap();
    // As a browser reads the attribute: entities decoded.
    let next = crate::helpers::hidden_input(&html, "next")
        .unwrap_or_default()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let resp = flow
        .app
        .post_form(
            "/login",
            &[
                ("csrf_token", csrf.as_str()),
                ("email", flow.email.as_str()),
                ("password", crate::helpers::PASSWORD),
                ("next", next.as_str()),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    location(&resp)
}

#[tokio::test]
async fn prompt_login_makes_a_signed_in_user_sign_in_again_and_auth_time_says_when() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    // The first sign-in's time, as the ID token says it.
    let first = tokens(&flow, "openid", None).await;
    let first = verify_id_token(&flow, first["id_token"].as_str().unwrap()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some("openid"))
        .with("prompt", Some("login consent"));
    let resp = flow.get(&req).await;
    assert_eq!(resp.status(), 303, "to the login page, though signed in");
    let login = location(&resp);
    assert!(
        login.starts_with("/login?") && login.contains("reauth=1"),
        "{login}"
    );
    let back = sign_in_again(&flow, &login).await;
    // Back to the request without prompt=login (no loop), with max_age.
    assert!(back.starts_with("/oauth/authorize?"), "{back}");
    let back_url = url::Url::parse(&format!("http://x{back}")).unwrap();
    let pairs: Vec<(String, String)> = back_url.query_pairs().into_owned().collect();
    assert!(
        pairs.contains(&("prompt".into(), "consent".into())),
        "{back}"
    );
    assert!(pairs.contains(&("max_age".into(), "600".into())), "{back}");
    // The consent page (prompt=consent kept), approved: a code.
    let page = flow.app.get(&back).await;
    assert_eq!(page.status(), 200);
    let csrf = crate::helpers::hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let resp = flow
        .app
        .post_form(
            &back,
            &[("csrf_token", csrf.as_str()), ("decision", "approve")],
        )
        .await;
    assert_eq!(resp.status(), 302);
    let code = param(&location(&resp), "code").unwrap();
    let body: Value = flow
        .exchange(&code, Some(&verifier))
        .await
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&flow, body["id_token"].as_str().unwrap()).await;
    assert!(
        claims["auth_time"].as_i64().unwrap() > first["auth_time"].as_i64().unwrap(),
        "auth_time is the new sign-in's: {claims} vs {first}"
    );
}

#[tokio::test]
async fn max_age_sends_an_old_sign_in_back_to_the_login_page() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    // Consent remembered for openid first.
    tokens(&flow, "openid", None).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (_, challenge) = pkce();
    let req = |max_age: &str| {
        AuthRequest::new(&flow.client_id, Some(&challenge))
            .with("scope", Some("openid"))
            .with("max_age", Some(max_age))
    };
    // Young enough: straight to the code.
    let resp = flow.get(&req("3600")).await;
    assert_eq!(resp.status(), 302);
    assert!(param(&location(&resp), "code").is_some());
    // Too old: sign in again.
    let resp = flow.get(&req("1")).await;
    assert_eq!(resp.status(), 303);
    let login = location(&resp);
    assert!(login.contains("reauth=1"), "{login}");
    let back = sign_in_again(&flow, &login).await;
    let resp = flow.app.get(&back).await;
    assert_eq!(
        resp.status(),
        302,
        "remembered consent, fresh sign-in: a code"
    );
    assert!(param(&location(&resp), "code").is_some());
    // prompt=none cannot sign in: login_required.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let resp = flow.get(&req("1").with("prompt", Some("none"))).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "login_required");
    // Malformed values.
    let resp = flow.get(&req("soon")).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    let resp = flow
        .get(&req("60").with("prompt", Some("none login")))
        .await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
}

#[tokio::test]
async fn review_fixes_identity_only_tokens_refresh_widening_and_request_objects() {
    let flow = Flow::new(Role::Admin, "admin openid email", false).await;
    // An openid-only access token: nothing on /v1, /v1/me included.
    let body = tokens(&flow, "openid", None).await;
    let access = body["access_token"].as_str().unwrap();
    let resp = flow
        .app
        .client
        .get(flow.app.url("/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    // Its own client's introspection does not name the email either.
    let answer: Value = flow
        .app
        .client
        .post(flow.app.url("/oauth/introspect"))
        .basic_auth(&flow.client_id, flow.secret.as_deref())
        .form(&[("token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], true);
    assert!(answer.get("username").is_none(), "{answer}");

    // A grant without openid cannot gain it on refresh, admin or not.
    let body = tokens(&flow, "admin", None).await;
    let resp = flow
        .refresh(body["refresh_token"].as_str().unwrap(), Some("openid"))
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_scope");

    // Request objects are refused, not ignored.
    let (_, challenge) = pkce();
    for (key, error) in [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
    ] {
        let req = AuthRequest::new(&flow.client_id, Some(&challenge))
            .with("scope", Some("openid"))
            .with(key, Some("eyJhbGciOiJub25lIn0.e30."));
        let resp = flow.get(&req).await;
        assert_error_redirect(&resp, &flow.app.settings.issuer, error);
    }

    // UserInfo without any credential: the bare challenge (RFC 6750 3.1),
    // the JSON body of every /oauth error.
    let resp = userinfo(&flow, None, false).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn a_public_clients_default_scope_with_openid_needs_a_nonce_too() {
    let flow = Flow::new(Role::Agent, "openid requests:read", true).await;
    let (_, challenge) = pkce();
    // No scope parameter: the client's registered scopes, openid included.
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("scope", None);
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    // Client-credentials tokens are no way into UserInfo.
    let app = spawn_app().await;
    let (id, secret) = app
        .create_client("requests:read", &["client_credentials"], false)
        .await;
    let token: Value = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, secret.as_deref())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = app
        .client
        .get(app.url("/oauth/userinfo"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Signs the flow's browser out, then in as `email`.
async fn switch_user(flow: &Flow, email: &str) {
    let token = flow.app.logout_token().await;
    let resp = flow
        .app
        .post_form("/logout", &[("csrf_token", &token)])
        .await;
    assert_eq!(resp.status(), 303);
    let resp = flow.app.login(email, crate::helpers::PASSWORD, "/").await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn id_token_hint_names_the_user_and_another_signed_in_user_gets_login_required() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let ann = tokens(&flow, "openid requests:read", None).await;
    let ann_hint = ann["id_token"].as_str().unwrap().to_owned();
    let ann_access = ann["access_token"].as_str().unwrap().to_owned();
    // Bob, in the same browser, for the same client (and so consented).
    flow.app.create_user("bob@example.com", Role::Agent).await;
    switch_user(&flow, "bob@example.com").await;
    let bob = tokens(&flow, "openid", None).await;
    let bob_hint = bob["id_token"].as_str().unwrap().to_owned();

    let (_, challenge) = pkce();
    let req = |hint: &str, prompt: Option<&str>| {
        AuthRequest::new(&flow.client_id, Some(&challenge))
            .with("scope", Some("openid"))
            .with("id_token_hint", Some(hint))
            .with("prompt", prompt)
    };
    // Bob signed in, Bob's hint: a code, silently.
    let resp = flow.get(&req(&bob_hint, Some("none"))).await;
    assert_eq!(resp.status(), 302);
    assert!(param(&location(&resp), "code").is_some());
    // Ann's hint while Bob is signed in: login_required, although Bob has
    // consented to this client, with or without prompt=none.
    for prompt in [Some("none"), None] {
        let resp = flow.get(&req(&ann_hint, prompt)).await;
        assert_error_redirect(&resp, &flow.app.settings.issuer, "login_required");
    }
    // An access token is no hint, nor is an ID token of another client.
    let resp = flow.get(&req(&ann_access, Some("none"))).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    let (other_id, other_secret) = flow
        .app
        .create_client(SCOPE, &["authorization_code", "refresh_token"], false)
        .await;
    let (verifier, challenge2) = pkce();
    let code = flow
        .code(&AuthRequest::new(&other_id, Some(&challenge2)).with("scope", Some("openid")))
        .await;
    let other: Value = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .basic_auth(&other_id, other_secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", crate::oauth_flow::REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_hint = other["id_token"].as_str().expect("id_token").to_owned();
    // Same user (Bob), same keys, another audience.
    let resp = flow.get(&req(&other_hint, Some("none"))).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
}

const SIGNED_OUT: &str = "https://app.example/signed-out";

/// A signed-in user and a confidential client registered with a
/// post-logout redirect URI.
async fn logout_flow() -> Flow {
    let app = spawn_app().await;
    let email = "agent@example.com".to_owned();
    let user_id = app.create_user(&email, Role::Agent).await;
    assert_eq!(
        app.login(&email, crate::helpers::PASSWORD, "/")
            .await
            .status(),
        303
    );
    let (client_id, secret) = app
        .register_client(dzdesk_auth::oauth::clients::ClientRequest {
            name: "Logout App".into(),
            redirect_uris: vec![crate::oauth_flow::REDIRECT.into()],
            scope: SCOPE.into(),
            post_logout_redirect_uris: vec![SIGNED_OUT.into()],
            require_par: false,
            ..Default::default()
        })
        .await;
    Flow {
        app,
        user_id,
        email,
        client_id,
        secret,
    }
}

fn logout_path(pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("/oauth/logout?{query}")
}

#[tokio::test]
async fn rp_initiated_logout_confirms_ends_the_session_and_redirects_with_state() {
    let flow = logout_flow().await;
    let body = tokens(&flow, "openid", None).await;
    let hint = body["id_token"].as_str().unwrap().to_owned();
    let path = logout_path(&[
        ("id_token_hint", &hint),
        ("post_logout_redirect_uri", SIGNED_OUT),
        ("state", "st&<x>"),
    ]);
    // The confirmation page: no session ends on a GET.
    let page = flow.app.get(&path).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Logout App") && html.contains(&flow.email),
        "{html}"
    );
    assert!(!html.contains("st&<x>"), "state is escaped in the page");
    assert!(!html.contains("logout-problem"));
    assert_eq!(flow.app.session_count(&flow.user_id).await, 1);
    // The form as the browser posts it: the page's own hidden fields.
    let field = |name: &str| {
        crate::helpers::hidden_input(&html, name)
            .unwrap_or_default()
            .replace("&#38;", "&")
            .replace("&#60;", "<")
            .replace("&#62;", ">")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
    };
    assert_eq!(field("client_id"), flow.client_id);
    assert_eq!(field("post_logout_redirect_uri"), SIGNED_OUT);
    assert_eq!(field("state"), "st&<x>");
    let form = |token: &str| {
        vec![
            ("csrf_token".to_owned(), token.to_owned()),
            ("client_id".to_owned(), field("client_id")),
            (
                "post_logout_redirect_uri".to_owned(),
                field("post_logout_redirect_uri"),
            ),
            ("state".to_owned(), field("state")),
        ]
    };
    // A forged post (a wrong token) ends nothing.
    let forged = flow
        .app
        .client
        .post(flow.app.url("/oauth/logout"))
        .form(&form("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(flow.app.session_count(&flow.user_id).await, 1);
    // Confirmed: the session ends, and the browser goes back with state.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/logout"))
        .form(&form(&field("csrf_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let to = location(&resp);
    assert!(to.starts_with(SIGNED_OUT), "{to}");
    assert_eq!(param(&to, "state").as_deref(), Some("st&<x>"));
    assert_eq!(flow.app.session_count(&flow.user_id).await, 0);
    // Signed out already: straight back, no page.
    let resp = flow.app.get(&path).await;
    assert_eq!(resp.status(), 303);
    assert!(location(&resp).starts_with(SIGNED_OUT));
}

#[tokio::test]
async fn rp_initiated_logout_never_redirects_where_the_client_did_not_register() {
    let flow = logout_flow().await;
    let body = tokens(&flow, "openid", None).await;
    let hint = body["id_token"].as_str().unwrap().to_owned();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let long_state = "s".repeat(513);
    let id = flow.client_id.as_str();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        // Not registered (a prefix, another host).
        (
            vec![
                ("id_token_hint", hint.as_str()),
                (
                    "post_logout_redirect_uri",
                    "https://app.example/signed-out/x",
                ),
            ],
            "not registered",
        ),
        (
            vec![
                ("client_id", id),
                ("post_logout_redirect_uri", "https://evil.example/"),
            ],
            "not registered",
        ),
        // No client to check it against.
        (
            vec![("post_logout_redirect_uri", SIGNED_OUT)],
            "needs the client",
        ),
        // An access token is no hint; the hint and client_id disagree.
        (
            vec![
                ("id_token_hint", access.as_str()),
                ("post_logout_redirect_uri", SIGNED_OUT),
            ],
            "not an ID token",
        ),
        (
            vec![
                ("id_token_hint", hint.as_str()),
                ("client_id", "client_other"),
            ],
            "does not match",
        ),
        (
            vec![
                ("client_id", id),
                ("post_logout_redirect_uri", SIGNED_OUT),
                ("state", long_state.as_str()),
            ],
            "too long",
        ),
    ];
    // Signed in: the page says why, and offers to sign out without going
    // back anywhere (its form carries no URI).
    for (pairs, why) in &cases {
        let resp = flow.app.get(&logout_path(pairs)).await;
        assert_eq!(resp.status(), 200, "{pairs:?}");
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("logout-problem") && html.contains(why),
            "{why}: {html}"
        );
        assert_eq!(
            crate::helpers::hidden_input(&html, "post_logout_redirect_uri").as_deref(),
            Some("")
        );
    }
    assert_eq!(
        flow.app.session_count(&flow.user_id).await,
        1,
        "nothing ended"
    );
    // A tampered form (an unregistered URI) signs out, and goes to the
    // login page only.
    let page = flow.app.get(&logout_path(&[("client_id", id)])).await;
    let csrf = crate::helpers::hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/logout"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("client_id", id),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login");
    assert_eq!(flow.app.session_count(&flow.user_id).await, 0);
    // Signed out: error pages, never a redirect.
    for (pairs, _) in &cases {
        let resp = flow.app.get(&logout_path(pairs)).await;
        assert_eq!(resp.status(), 400, "{pairs:?}");
        assert!(resp.headers().get("location").is_none());
    }
    // A post without the session cookie (a cross-site form) makes the
    // browser drop no cookie.
    let stranger = crate::helpers::new_client();
    let resp = stranger
        .post(flow.app.url("/oauth/logout"))
        .form(&[("client_id", id), ("post_logout_redirect_uri", SIGNED_OUT)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "no cookie removed"
    );
    // Discovery names the endpoint.
    let meta: Value = flow
        .app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["end_session_endpoint"],
        format!("{}/oauth/logout", flow.app.settings.issuer)
    );
}

#[tokio::test]
async fn post_logout_redirect_uris_are_registered_like_redirect_uris() {
    let app = spawn_app().await;
    let admin = app.create_user("admin@example.com", Role::Admin).await;
    let (_, key) = key_for(&app, &admin, "admin").await;
    let register = |uris: Vec<&str>| {
        app.client
            .post(app.url("/oauth/register"))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "redirect_uris": ["https://app.example/cb"],
                "post_logout_redirect_uris": uris,
            }))
            .send()
    };
    let resp = register(vec![SIGNED_OUT]).await.unwrap();
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(
        info["post_logout_redirect_uris"],
        serde_json::json!([SIGNED_OUT])
    );
    for bad in [
        "http://evil.example/out",
        "https://app.example/out#x",
        "not a url",
    ] {
        let resp = register(vec![bad]).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // The CLI takes them too.
    let out = crate::cli::run(
        &[
            "client",
            "create",
            "--name",
            "App",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "openid",
            "--post-logout-redirect-uri",
            SIGNED_OUT,
        ],
        &[("DATABASE_URL", app.database_url().as_str())],
        None,
    );
    assert!(out.status.success());
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["client_id"].as_str().unwrap().to_owned();
    let stored = app.stored_client(&id).await;
    assert!(stored.allows_post_logout_redirect(SIGNED_OUT));
    assert!(!stored.allows_post_logout_redirect("https://app.example/signed-out/"));
}
