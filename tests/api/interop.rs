//! Interop: a third-party OAuth 2.0 client (the `oauth2` crate) runs the whole
//! flow against the service, and a real headless Chromium signs in and
//! approves on our pages: authorization URL with PKCE, sign-in, consent, code
//! exchange, refresh, and the refused reuse of a rotated refresh token.

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;

use crate::browser::{click, start_browser, type_into};
use crate::helpers::{spawn_app, PASSWORD};

/// The client application's redirect endpoint: answers every request with a
/// small page, so the browser lands on the callback URL.
pub async fn callback_listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = r#"<p id="callback">done</p>"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

/// Clicks Approve on the consent page and waits for the client's callback
/// page: the URL the browser landed on.
pub async fn approve_and_land(c: &fantoccini::Client) -> url::Url {
    click(c, "#approve").await;
    if c.wait()
        .for_element(fantoccini::Locator::Css("#callback"))
        .await
        .is_err()
    {
        panic!(
            "no callback page: at {:?}\n{}",
            c.current_url().await,
            c.source().await.unwrap_or_default()
        );
    }
    c.current_url().await.unwrap()
}

/// A query parameter of `url`.
pub fn query_value(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn oauth2_crate_with_chromium_runs_code_pkce_and_refresh() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let port = callback_listener().await;
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (client_id, secret) = app
        .register_client(ClientRequest {
            name: "Interop App".into(),
            redirect_uris: vec![redirect.clone()],
            scope: "requests:read requests:write admin".into(),
            public: false,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            require_pkce: true,
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

    let client = BasicClient::new(ClientId::new(client_id))
        .set_client_secret(ClientSecret::new(secret.unwrap()))
        .set_auth_uri(AuthUrl::new(app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(redirect.clone()).unwrap());
    let http = crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf_state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("requests:read".into()))
        .add_scope(Scope::new("requests:write".into()))
        .add_scope(Scope::new("admin".into()))
        .set_pkce_challenge(challenge)
        .url();

    // Signed out: the login page first, then straight back to consent.
    c.goto(auth_url.as_str()).await.unwrap();
    type_into(c, "input[name=email]", "ann@example.com").await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    let name = c
        .wait()
        .for_element(fantoccini::Locator::Css("#client-name"))
        .await
        .unwrap();
    assert_eq!(name.text().await.unwrap(), "Interop App");
    // An agent cannot grant admin: the page lists it as left out.
    let left_out = c.find(fantoccini::Locator::Css("#left-out")).await.unwrap();
    assert!(left_out.text().await.unwrap().contains("admin"));
    let landed = approve_and_land(c).await;
    assert!(landed.as_str().starts_with(&redirect), "{landed}");
    let get = |k: &str| query_value(&landed, k);
    assert_eq!(get("state").as_deref(), Some(csrf_state.secret().as_str()));
    assert_eq!(get("iss").as_deref(), Some(app.settings.issuer.as_str()));
    let code = get("code").expect("code");
    browser.client.clone().close().await.unwrap();

    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let granted: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(granted, ["requests:read", "requests:write"]);
    assert!(token.expires_in().is_some());
    let first_refresh = token.refresh_token().unwrap().clone();

    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&http)
        .await
        .unwrap();
    let second_refresh = refreshed.refresh_token().unwrap().clone();
    assert_ne!(first_refresh.secret(), second_refresh.secret());
    assert_ne!(
        token.access_token().secret(),
        refreshed.access_token().secret()
    );

    // The rotated token is refused, and the client library reads the RFC
    // error body.
    let reused = client
        .exchange_refresh_token(&RefreshToken::new(first_refresh.secret().clone()))
        .request_async(&http)
        .await;
    match reused {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
}
