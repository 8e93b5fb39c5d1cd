//! /settings/apps: the applications a user granted access to, and revoking
//! them (over HTTP, and in headless Chromium).

use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;
use serde_json::Value;

use crate::browser::{click, start_browser, type_into};
use crate::helpers::{hidden_input, location, spawn_app, PASSWORD};
use crate::oauth_flow::{pkce, Flow};

const SCOPE: &str = "requests:read requests:write";

async fn introspect(flow: &Flow, token: &str) -> Value {
    flow.app
        .client
        .post(flow.app.url("/oauth/introspect"))
        .basic_auth(&flow.client_id, flow.secret.as_deref())
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in() {
    let app = spawn_app().await;
    let resp = app.get("/settings/apps").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login?next=%2Fsettings%2Fapps");
}

#[tokio::test]
async fn the_page_lists_granted_clients_and_revoke_ends_every_token() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let resp = flow.app.get("/settings/apps").await;
    assert!(resp.text().await.unwrap().contains("id=\"no-apps\""));

    let tokens = flow.tokens(SCOPE).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = flow.app.get("/settings/apps").await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Test App"));
    assert!(html.contains(&format!("data-client-id=\"{}\"", flow.client_id)));
    assert!(html.contains(r#"data-scope="requests:write""#));
    // The revoke form's token (the header's Sign out form has its own).
    let form = html.find(r#"action="/settings/apps/revoke""#).unwrap();
    let token = hidden_input(&html[form..], "csrf_token").unwrap();
    // A code issued (remembered consent) but not redeemed before the revoke.
    let pending = flow
        .code(&crate::oauth_flow::AuthRequest::new(&flow.client_id, None))
        .await;

    // Without the CSRF token: refused, nothing revoked.
    let resp = flow
        .app
        .post_form(
            "/settings/apps/revoke",
            &[("client_id", &flow.client_id), ("csrf_token", "x")],
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(introspect(&flow, access).await["active"], true);

    let resp = flow
        .app
        .post_form(
            "/settings/apps/revoke",
            &[("client_id", &flow.client_id), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(introspect(&flow, access).await["active"], false);
    assert_eq!(introspect(&flow, refresh).await["active"], false);
    assert_eq!(flow.refresh(refresh, None).await.status(), 400);
    // The pending code died with the consent.
    assert_eq!(flow.exchange(&pending, None).await.status(), 400);
    let html = flow.app.get("/settings/apps").await.text().await.unwrap();
    assert!(html.contains("id=\"no-apps\""));
    // Consent is forgotten: the next authorization asks again.
    let req = crate::oauth_flow::AuthRequest::new(&flow.client_id, None);
    assert_eq!(flow.get(&req).await.status(), 200);
}

#[tokio::test]
async fn browser_revokes_a_connected_app() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let port = crate::interop::callback_listener().await;
    let redirect = format!("http://127.0.0.1:{port}/cb");
    let (client_id, secret) = app
        .register_client(ClientRequest {
            name: "Reporting App".into(),
            redirect_uris: vec![redirect.clone()],
            scope: SCOPE.into(),
            public: false,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            require_pkce: false,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;
    let (verifier, challenge) = pkce();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", SCOPE)
        .append_pair("state", "s1")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    c.goto(&app.url(&format!("/oauth/authorize?{query}")))
        .await
        .unwrap();
    type_into(c, "input[name=email]", "ann@example.com").await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    c.wait()
        .for_element(fantoccini::Locator::Css("#approve"))
        .await
        .unwrap();
    click(c, "#approve").await;
    c.wait()
        .for_element(fantoccini::Locator::Css("#callback"))
        .await
        .unwrap();
    let landed = c.current_url().await.unwrap();
    let code = landed
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(&client_id, secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // From the account page to the connected apps, then Revoke.
    c.goto(&app.url("/")).await.unwrap();
    click(c, "#connected-apps").await;
    let listed = c
        .wait()
        .for_element(fantoccini::Locator::Css(&format!(
            "li.app[data-client-id='{client_id}']"
        )))
        .await
        .unwrap();
    assert!(listed.text().await.unwrap().contains("Reporting App"));
    click(c, "li.app form button").await;
    c.wait()
        .for_element(fantoccini::Locator::Css("#revoked-notice"))
        .await
        .unwrap();
    c.find(fantoccini::Locator::Css("#no-apps")).await.unwrap();
    browser.client.clone().close().await.unwrap();

    let answer: Value = app
        .client
        .post(app.url("/oauth/introspect"))
        .basic_auth(&client_id, secret.as_deref())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, serde_json::json!({"active": false}));
}
