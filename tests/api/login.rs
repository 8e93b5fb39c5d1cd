//! Browser sign-in over real HTTP: sessions, CSRF, redirects, disabled users.

use dzdesk_auth::domain::Role;

use crate::helpers::{
    assert_security_headers, cookie_value, hidden_input, location, new_client, set_cookies,
    spawn_app, spawn_app_custom, PASSWORD,
};

const EMAIL: &str = "ann@example.com";

#[tokio::test]
async fn login_page_renders_a_labelled_form_with_csrf_and_security_headers() {
    let app = spawn_app().await;
    let resp = app.get("/login?next=/settings/api").await;
    assert_eq!(resp.status(), 200);
    assert_security_headers(&resp);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(
        cookie_value(&resp, "dzdesk_pre").is_some(),
        "pre-session cookie set"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<label for="email">"#) && html.contains(r#"id="email" name="email""#));
    assert!(
        html.contains(r#"<label for="password">"#)
            && html.contains(r#"id="password" name="password""#)
    );
    assert_eq!(
        hidden_input(&html, "next").as_deref(),
        Some("/settings/api")
    );
    assert!(hidden_input(&html, "csrf_token").is_some_and(|t| t.len() >= 40));
    assert!(html.contains(r#"href="/static/style.css""#));
    let css = app.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn sign_in_with_valid_credentials_opens_a_session() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;

    let resp = app.login(EMAIL, PASSWORD, "").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/");
    let cookie = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("dzdesk_session="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    assert!(
        !cookie.contains("Secure"),
        "plain-http issuer: no Secure flag"
    );
    let secret = cookie_value(&resp, "dzdesk_session").unwrap();
    assert!(secret.starts_with("dzsess_") && secret.len() > 40);
    assert_eq!(app.session_count(&user_id).await, 1);

    let home = app.get("/").await;
    assert_eq!(home.status(), 200);
    assert_security_headers(&home);
    assert!(home.text().await.unwrap().contains(EMAIL));
}

#[tokio::test]
async fn sign_in_email_is_case_insensitive() {
    let app = spawn_app().await;
    app.create_user(EMAIL, Role::Admin).await;
    let resp = app.login("  Ann@EXAMPLE.com ", PASSWORD, "").await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;

    let wrong_password = app.login(EMAIL, "not the password at all", "").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD, "").await;
    for resp in [wrong_password, unknown_email] {
        assert_eq!(resp.status(), 200);
        assert!(cookie_value(&resp, "dzdesk_session").is_none());
        let html = resp.text().await.unwrap();
        assert!(html.contains("Wrong email or password."), "{html}");
        assert!(!html.contains(PASSWORD));
    }
    assert_eq!(app.session_count(&user_id).await, 0);
    assert_eq!(location(&app.get("/").await), "/login");
}

#[tokio::test]
async fn secure_host_prefixed_cookies_when_the_issuer_is_https() {
    // Production mode behind a TLS-terminating proxy (this test plays it):
    // every request says it came over https.
    let app = spawn_app_custom(
        |s| {
            s.issuer = "https://auth.example.com".into();
            s.trusted_proxies = dzdesk_auth::domain::TrustedProxies::parse("127.0.0.1").unwrap();
        },
        |_| {},
    )
    .await;
    app.create_user(EMAIL, Role::Agent).await;
    let page = new_client()
        .get(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookies = set_cookies(&page);
    assert!(!cookies.is_empty());
    assert!(
        cookies
            .iter()
            .all(|c| c.starts_with("__Host-") && c.contains("; Secure") && c.contains("; Path=/")),
        "{cookies:?}"
    );
    assert!(page.headers().contains_key("strict-transport-security"));
    // The cookie store will not send Secure cookies over http, so post by hand.
    let pre = cookie_value(&page, "__Host-dzdesk_pre").unwrap();
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let resp = new_client()
        .post(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("__Host-dzdesk_pre={pre}"))
        .form(&[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("next", ""),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let session = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("__Host-dzdesk_session="))
        .unwrap();
    assert!(session.contains("; Secure") && session.contains("HttpOnly"));
    assert!(!session.to_ascii_lowercase().contains("domain="));
}

#[tokio::test]
async fn next_local_path_is_followed_after_sign_in() {
    let app = spawn_app().await;
    app.create_user(EMAIL, Role::Agent).await;
    let resp = app
        .login(EMAIL, PASSWORD, "/oauth/authorize?client_id=c&state=s")
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/oauth/authorize?client_id=c&state=s");
}

#[tokio::test]
async fn next_to_another_origin_is_refused() {
    let app = spawn_app().await;
    app.create_user(EMAIL, Role::Agent).await;
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "http:evil.example",
    ] {
        let resp = app.login_with(&new_client(), EMAIL, PASSWORD, evil).await;
        assert_eq!(resp.status(), 303, "{evil}");
        assert_eq!(location(&resp), "/", "{evil} was followed");
        // The login page does not even carry it into the form.
        let page = new_client()
            .get(app.url(&format!("/login?next={}", crate::helpers::urlencode(evil))))
            .send()
            .await
            .unwrap();
        assert_eq!(
            hidden_input(&page.text().await.unwrap(), "next").as_deref(),
            Some("")
        );
    }
}

#[tokio::test]
async fn signed_in_visit_to_login_redirects_to_safe_next() {
    let app = spawn_app().await;
    app.create_user(EMAIL, Role::Agent).await;
    app.login(EMAIL, PASSWORD, "").await;
    assert_eq!(location(&app.get("/login?next=/x").await), "/x");
    assert_eq!(location(&app.get("/login?next=//evil.example").await), "/");
}

#[tokio::test]
async fn post_without_a_valid_csrf_token_is_refused() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;
    app.login_form_token(None).await; // the browser has a pre-session cookie

    let missing = app
        .post_form(
            "/login",
            &[("email", EMAIL), ("password", PASSWORD), ("next", "")],
        )
        .await;
    assert_eq!(missing.status(), 403);
    assert_security_headers(&missing);

    // A token made for another browser's pre-session is no good here.
    let other = spawn_other_browser_token(&app).await;
    let foreign = app
        .post_form(
            "/login",
            &[
                ("email", EMAIL),
                ("password", PASSWORD),
                ("next", ""),
                ("csrf_token", &other),
            ],
        )
        .await;
    assert_eq!(foreign.status(), 403);

    // No cookie at all (a cross-site form post from a fresh browser).
    let bare = new_client()
        .post(app.url("/login"))
        .form(&[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("csrf_token", &other),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    assert_eq!(app.session_count(&user_id).await, 0, "nothing changed");
}

async fn spawn_other_browser_token(app: &crate::helpers::TestApp) -> String {
    let page = new_client().get(app.url("/login")).send().await.unwrap();
    hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap()
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;
    let login = app.login(EMAIL, PASSWORD, "").await;
    let secret = cookie_value(&login, "dzdesk_session").unwrap();

    let token = app.logout_token().await;
    let resp = app.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login");
    assert!(set_cookies(&resp)
        .iter()
        .any(|c| c.starts_with("dzdesk_session=;") || c.starts_with("dzdesk_session=\"\"")));
    assert_eq!(app.session_count(&user_id).await, 0);

    // Replaying the old cookie does not sign anybody in.
    let replay = new_client()
        .get(app.url("/"))
        .header("cookie", format!("dzdesk_session={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 303);
    assert_eq!(location(&replay), "/login");
}

#[tokio::test]
async fn logout_without_csrf_token_is_refused() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;
    app.login(EMAIL, PASSWORD, "").await;
    let resp = app.post_form("/logout", &[]).await;
    assert_eq!(resp.status(), 403);
    let resp = app.post_form("/logout", &[("csrf_token", "forged")]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(app.session_count(&user_id).await, 1);
    assert_eq!(app.get("/").await.status(), 200, "still signed in");
}

#[tokio::test]
async fn disabled_user_cannot_sign_in_and_loses_sessions() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;
    app.login(EMAIL, PASSWORD, "").await;
    assert_eq!(app.get("/").await.status(), 200);

    app.set_disabled(EMAIL, true).await;
    assert_eq!(app.session_count(&user_id).await, 0);
    let home = app.get("/").await;
    assert_eq!(home.status(), 303, "session ended at once");

    let again = app.login(EMAIL, PASSWORD, "").await;
    assert_eq!(again.status(), 200);
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("Wrong email or password."));

    app.set_disabled(EMAIL, false).await;
    assert_eq!(app.login(EMAIL, PASSWORD, "").await.status(), 303);
}

#[tokio::test]
async fn malformed_login_form_is_a_400_page() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/login"))
        .header("content-type", "application/json")
        .body(r#"{"email": "ann@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let big = "a".repeat(20 * 1024);
    let resp = app.post_form("/login", &[("email", &big)]).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn signing_in_again_ends_the_session_the_browser_came_with() {
    let app = spawn_app().await;
    let user_id = app.create_user(EMAIL, Role::Agent).await;
    let first = app.login(EMAIL, PASSWORD, "").await;
    let old = cookie_value(&first, "dzdesk_session").unwrap();
    // The same browser posts a sign-in form again (one left open in another
    // tab): its cookies are set by hand, so that both go with the post.
    let bare = crate::helpers::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = bare.get(app.url("/login")).send().await.unwrap();
    let pre = cookie_value(&page, "dzdesk_pre").unwrap();
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let again = bare
        .post(app.url("/login"))
        .header("cookie", format!("dzdesk_pre={pre}; dzdesk_session={old}"))
        .form(&[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("next", "/"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert_ne!(cookie_value(&again, "dzdesk_session").unwrap(), old);
    assert_eq!(
        app.session_count(&user_id).await,
        1,
        "not two live sessions"
    );
    let replay = new_client()
        .get(app.url("/"))
        .header("cookie", format!("dzdesk_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&replay), "/login", "the old session is over");
}

/// The CSRF token of the "Sign out everywhere" form on the account page.
async fn everywhere_token(app: &crate::helpers::TestApp, client: &reqwest::Client) -> String {
    let home = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200, "not signed in");
    let html = home.text().await.unwrap();
    let form = html
        .split("action=\"/logout/everywhere\"")
        .nth(1)
        .expect("a Sign out everywhere form");
    hidden_input(form, "csrf_token").unwrap()
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_browser_session_and_keeps_grants_and_keys() {
    use crate::oauth_flow::Flow;
    use crate::v1_keys::{key_for, me};

    // Browser A (the flow's client), browser B, and another user's browser.
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let app = &flow.app;
    let other = new_client();
    let b = new_client();
    assert_eq!(
        app.login_with(&b, &flow.email, PASSWORD, "/")
            .await
            .status(),
        303
    );
    app.create_user("bob@example.com", Role::Agent).await;
    assert_eq!(
        app.login_with(&other, "bob@example.com", PASSWORD, "/")
            .await
            .status(),
        303
    );
    assert_eq!(app.session_count(&flow.user_id).await, 2);
    let home = app.get("/").await.text().await.unwrap();
    assert!(home.contains("Signed in on 2 browsers"), "{home}");
    // An OAuth grant (its refresh token) and an API key.
    let tokens = flow.tokens("requests:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, key) = key_for(app, &flow.user_id, "requests:read").await;

    // The plain sign-out token, or none, ends nothing.
    let plain = app.logout_token().await;
    for token in [plain.as_str(), ""] {
        let resp = app
            .post_form("/logout/everywhere", &[("csrf_token", token)])
            .await;
        assert_eq!(resp.status(), 403);
    }
    assert_eq!(app.session_count(&flow.user_id).await, 2);

    let token = everywhere_token(app, &app.client).await;
    let resp = app
        .post_form("/logout/everywhere", &[("csrf_token", &token)])
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login");
    assert!(set_cookies(&resp)
        .iter()
        .any(|c| c.starts_with("dzdesk_session=;") || c.starts_with("dzdesk_session=\"\"")));
    assert_eq!(app.session_count(&flow.user_id).await, 0);
    for browser in [&app.client, &b] {
        let home = browser.get(app.url("/")).send().await.unwrap();
        assert_eq!(location(&home), "/login");
    }
    // Only this user's sessions: the other user is still signed in.
    let bobs = other.get(app.url("/")).send().await.unwrap();
    assert_eq!(bobs.status(), 200);
    // Grants and keys stay.
    assert_eq!(flow.refresh(&refresh, None).await.status(), 200);
    assert_eq!(me(app, &key).await.status, 200);
}
