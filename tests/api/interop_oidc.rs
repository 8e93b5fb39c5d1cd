//! Interop: a third-party OpenID Connect relying party (the `openidconnect`
//! crate) runs the whole flow against the service, and a real headless
//! Chromium signs in and approves on our pages: discovery from the issuer
//! alone, the code flow with PKCE (S256) and a nonce, the ID token checked by
//! the crate's own verifier (ES256 via the JWKS, issuer, audience, nonce,
//! expiry, `at_hash`), UserInfo, and the ID token of a refresh (OIDC Core
//! 12.2).

use std::net::SocketAddr;

use fantoccini::Locator;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreTokenResponse, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, Audience, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;

use crate::browser::{click, start_browser, type_into};
use crate::helpers::{spawn_app_custom, TestApp, PASSWORD};
use crate::interop::{approve_and_land, callback_listener, query_value};

/// The service with an issuer a client can reach: the test settings' issuer
/// (`http://127.0.0.1`) names no port, and discovery starts from the issuer.
/// Binds a free port first, so the issuer can name it.
async fn spawn_app_at_a_reachable_issuer() -> TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    spawn_app_custom(
        move |s| {
            s.listen = SocketAddr::from(([127, 0, 0, 1], port));
            s.issuer = format!("http://127.0.0.1:{port}");
            s.audience = s.issuer.clone();
        },
        |_| {},
    )
    .await
}

/// OIDC Core 3.1.3.8: the left half of the access token's hash, under the
/// ID token's own algorithm, computed by the crate.
fn at_hash_of(token: &CoreTokenResponse, verifier: &CoreIdTokenVerifier<'_>) -> AccessTokenHash {
    let id_token = token.id_token().expect("an ID token");
    AccessTokenHash::from_token(
        token.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(verifier).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn openidconnect_crate_with_chromium_runs_discovery_code_pkce_nonce_userinfo_and_refresh() {
    let app = spawn_app_at_a_reachable_issuer().await;
    let email = "ann@example.com";
    let user_id = app.create_user(email, Role::Agent).await;
    let port = callback_listener().await;
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (client_id, secret) = app
        .register_client(ClientRequest {
            name: "Interop App".into(),
            redirect_uris: vec![redirect.clone()],
            scope: "requests:read openid email profile".into(),
            public: false,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            require_pkce: true,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    let http = crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Discovery: the metadata at /.well-known/openid-configuration, then the
    // JWKS at its jwks_uri. The crate checks the issuer it names.
    let issuer = IssuerUrl::new(app.settings.issuer.clone()).unwrap();
    let provider = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .unwrap();
    assert_eq!(
        *provider.id_token_signing_alg_values_supported(),
        vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]
    );
    assert_eq!(
        provider.userinfo_endpoint().map(|u| u.url().as_str()),
        Some(app.url("/oauth/userinfo").as_str())
    );
    assert!(!provider.jwks().keys().is_empty());

    let client = CoreClient::from_provider_metadata(
        provider,
        ClientId::new(client_id.clone()),
        Some(ClientSecret::new(secret.unwrap())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.clone()).unwrap());

    // Discovery needs no browser: it ran above in any case.
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;

    // `openid` is added by the crate itself.
    let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf_state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("requests:read".into()))
        .set_pkce_challenge(pkce_challenge)
        .url();

    // Signed out: the login page first, then straight back to consent.
    c.goto(auth_url.as_str()).await.unwrap();
    type_into(c, "input[name=email]", email).await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    let name = c
        .wait()
        .for_element(Locator::Css("#client-name"))
        .await
        .unwrap();
    assert_eq!(name.text().await.unwrap(), "Interop App");
    let landed = approve_and_land(c).await;
    assert!(landed.as_str().starts_with(&redirect), "{landed}");
    let get = |k: &str| query_value(&landed, k);
    assert_eq!(get("state").as_deref(), Some(csrf_state.secret().as_str()));
    assert_eq!(get("iss").as_deref(), Some(app.settings.issuer.as_str()));
    let code = get("code").expect("code");
    browser.client.clone().close().await.unwrap();

    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("a token endpoint in the metadata")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .unwrap();
    let mut granted: Vec<&str> = token
        .scopes()
        .expect("scope in the token response")
        .iter()
        .map(|s| s.as_str())
        .collect();
    granted.sort_unstable();
    assert_eq!(granted, ["email", "openid", "profile", "requests:read"]);

    // The crate's verifier: signature (ES256, key from the JWKS), iss, aud,
    // exp, and the nonce of the authorization request.
    let verifier = client.id_token_verifier();
    let id_token = token
        .id_token()
        .expect("an ID token: the scope holds openid");
    assert_eq!(
        *id_token.signing_alg().unwrap(),
        CoreJwsSigningAlgorithm::EcdsaP256Sha256
    );
    let claims = id_token.claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.issuer().as_str(), app.settings.issuer);
    assert_eq!(*claims.audiences(), vec![Audience::new(client_id.clone())]);
    assert_eq!(
        claims.access_token_hash(),
        Some(&at_hash_of(&token, &verifier))
    );
    assert_eq!(claims.subject().as_str(), user_id);
    assert_eq!(claims.email().map(|e| e.as_str()), Some(email));
    assert_eq!(claims.email_verified(), Some(false));
    assert!(claims.auth_time().is_some());

    // UserInfo with the access token; the crate refuses another subject.
    let userinfo: CoreUserInfoClaims = client
        .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        .expect("a userinfo endpoint in the metadata")
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(userinfo.subject().as_str(), user_id);
    assert_eq!(userinfo.email().map(|e| e.as_str()), Some(email));
    // `profile` gives preferred_username (the email: users have no other
    // name).
    assert_eq!(
        userinfo.preferred_username().map(|u| u.as_str()),
        Some(email)
    );

    // Refresh: a new ID token (OIDC Core 12.2) with the same sub and
    // auth_time, and no nonce.
    let refreshed = client
        .exchange_refresh_token(token.refresh_token().expect("a refresh token"))
        .expect("a token endpoint in the metadata")
        .request_async(&http)
        .await
        .unwrap();
    let refreshed_id_token = refreshed
        .id_token()
        .expect("an ID token in the refresh response");
    let again = refreshed_id_token
        .claims(&verifier, |nonce: Option<&Nonce>| match nonce {
            None => Ok(()),
            Some(_) => Err("a nonce in the ID token of a refresh".to_owned()),
        })
        .unwrap();
    assert_eq!(again.subject(), claims.subject());
    assert_eq!(again.auth_time(), claims.auth_time());
    assert_eq!(
        again.access_token_hash(),
        Some(&at_hash_of(&refreshed, &verifier))
    );
    assert_ne!(
        token.access_token().secret(),
        refreshed.access_token().secret()
    );
}
