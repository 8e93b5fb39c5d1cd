//! The pages people look at, in a real headless Chromium at a desktop width
//! (1200 px) and a phone width (390 px): nothing wider than the window, every
//! form control labelled, no script, and the signed-in pages share one
//! header with the current page marked. A screenshot of every page at both
//! widths is kept in `target/screenshots/` for review.

use std::path::PathBuf;

use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;
use fantoccini::{Client, Locator};
use serde_json::Value;

use crate::browser::{choose, click, shown_key, start_browser, type_into};
use crate::helpers::{spawn_app, PASSWORD};
use crate::oauth_flow::pkce;

const WIDTHS: [u32; 2] = [1200, 390];

/// Where the screenshots go: `target/screenshots/` of this checkout (or of
/// `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the page itself says about its layout and its controls.
const INSPECT: &str = r#"
const unlabelled = [];
for (const el of document.querySelectorAll('input, select, textarea, button')) {
  if (el.type === 'hidden') continue;
  const named = (el.labels && el.labels.length > 0)
    || (el.getAttribute('aria-label') || '').trim() !== ''
    || (el.getAttribute('aria-labelledby') || '').trim() !== ''
    || (el.tagName === 'BUTTON' && el.textContent.trim() !== '');
  if (!named) unlabelled.push(el.outerHTML.slice(0, 120));
}
const handlers = [];
for (const el of document.querySelectorAll('*')) {
  for (const a of el.getAttributeNames()) {
    if (a.toLowerCase().startsWith('on')) handlers.push(el.tagName + '[' + a + ']');
  }
}
const wide = [];
for (const el of document.querySelectorAll('body *')) {
  const r = el.getBoundingClientRect();
  if (r.right > window.innerWidth + 0.5) wide.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right));
}
return {
  innerWidth: window.innerWidth,
  scrollWidth: document.documentElement.scrollWidth,
  unlabelled: unlabelled,
  scripts: document.scripts.length,
  handlers: handlers,
  wide: wide.slice(0, 5),
  current: Array.from(document.querySelectorAll('header nav [aria-current=page]')).map(a => a.getAttribute('href')),
  navLinks: Array.from(document.querySelectorAll('header nav a')).map(a => a.getAttribute('href')),
  signOut: document.querySelectorAll('header form[action="/logout"] button').length,
};
"#;

/// Checks the page now shown at both widths and keeps a screenshot of each.
/// `current` is the header link a signed-in page marks, None for the
/// signed-out pages (which have no navigation).
async fn check_page(c: &Client, name: &str, current: Option<&str>) {
    for width in WIDTHS {
        c.set_window_size(width, 900).await.unwrap();
        let seen = c.execute(INSPECT, vec![]).await.unwrap();
        let inner = seen["innerWidth"].as_u64().unwrap();
        // The window is the viewport in headless mode; a few pixels of
        // difference would be a scrollbar.
        assert!(
            inner <= u64::from(width) && inner + 20 >= u64::from(width),
            "{name} at {width}: the viewport is {inner} px"
        );
        assert!(
            seen["scrollWidth"].as_u64().unwrap() <= inner,
            "{name} at {width}: horizontal overflow: {seen}"
        );
        assert_eq!(
            seen["unlabelled"],
            Value::Array(vec![]),
            "{name} at {width}: controls without a label"
        );
        assert_eq!(seen["scripts"], 0, "{name}: a page needs no script");
        assert_eq!(seen["handlers"], Value::Array(vec![]), "{name}");
        match current {
            Some(href) => {
                assert_eq!(seen["current"], serde_json::json!([href]), "{name}");
                assert_eq!(
                    seen["navLinks"],
                    serde_json::json!(["/", "/settings/api", "/settings/apps"]),
                    "{name}"
                );
                assert_eq!(seen["signOut"], 1, "{name}: one Sign out in the header");
            }
            None => assert_eq!(seen["navLinks"], serde_json::json!([]), "{name}"),
        }
        // The whole page, not only what fits in 900 px.
        let height = c
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap();
        c.set_window_size(width, u32::try_from(height).unwrap().clamp(900, 4000))
            .await
            .unwrap();
        let png = c.screenshot().await.unwrap();
        std::fs::write(screenshot_dir().join(format!("{name}-{width}.png")), png).unwrap();
    }
}

#[tokio::test]
async fn every_page_fits_phone_and_desktop_widths_with_labelled_controls() {
    let app = spawn_app().await;
    let email = "a.person.with.a.rather.long.address@example-company.com";
    app.create_user(email, Role::Agent).await;
    let port = crate::interop::callback_listener().await;
    let redirect = format!("http://127.0.0.1:{port}/a/rather/long/callback/path/for/an/app");
    let (client_id, _) = app
        .register_client(ClientRequest {
            name: "Quarterly Reporting and Analytics".into(),
            redirect_uris: vec![redirect.clone()],
            scope: "requests:read requests:write users:read".into(),
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

    c.goto(&app.url("/docs")).await.unwrap();
    check_page(c, "docs", None).await;
    c.goto(&app.url("/no/such/page")).await.unwrap();
    check_page(c, "not-found", None).await;

    // The authorization request signs in first, then asks for consent.
    let (_, challenge) = pkce();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "requests:read requests:write users:read")
        .append_pair("state", "s1")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    c.goto(&app.url(&format!("/oauth/authorize?{query}")))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();
    check_page(c, "login", None).await;
    type_into(c, "input[name=email]", email).await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#approve"))
        .await
        .unwrap();
    check_page(c, "consent", None).await;
    click(c, "#approve").await;
    c.wait()
        .for_element(Locator::Css("#callback"))
        .await
        .unwrap();

    c.goto(&app.url("/")).await.unwrap();
    check_page(c, "account", Some("/")).await;
    let shown = c
        .find(Locator::Css("#nav-email"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, email);

    // From the header, not from links on the account card.
    click(c, "header nav a[href='/settings/apps']").await;
    c.wait().for_element(Locator::Css("li.app")).await.unwrap();
    check_page(c, "connected-apps", Some("/settings/apps")).await;

    click(c, "header nav a[href='/settings/api']").await;
    c.wait().for_element(Locator::Css("#create")).await.unwrap();
    type_into(
        c,
        "input[name=name]",
        "Nightly export of every request to the data warehouse",
    )
    .await;
    for scope in ["requests:read", "requests:write", "users:read"] {
        click(c, &format!("input[name=scopes][value='{scope}']")).await;
    }
    click(c, "#create").await;
    let key = shown_key(c).await;
    check_page(c, "api-key-created", Some("/settings/api")).await;
    // A request with the key, and one refused for its scope, for the usage
    // page (the path is long: it must wrap, not widen the page).
    let me = app.url("/v1/me");
    let long =
        app.url("/v1/users/user_with_a_rather_long_identifier_that_does_not_exist_0123456789");
    for url in [&me, &long] {
        app.client
            .get(url)
            .bearer_auth(key.trim())
            .send()
            .await
            .unwrap();
    }

    // The usage page of the key, once the log is written (about a second).
    c.goto(&app.url("/settings/api")).await.unwrap();
    click(c, "tr.api-key a.usage-link").await;
    c.wait()
        .for_element(Locator::Css("#hourly-chart"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.find(Locator::Css("#usage-table")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no usage row after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    check_page(c, "key-usage", Some("/settings/api")).await;

    // Rotate with a day's grace: the new key once, then the list shows the
    // old key being replaced beside the new one.
    c.goto(&app.url("/settings/api")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("tr.api-key"))
        .await
        .unwrap();
    check_page(c, "settings-api", Some("/settings/api")).await;
    choose(c, "tr.api-key form.rotate-key select", "24").await;
    click(c, "tr.api-key form.rotate-key button").await;
    c.wait()
        .for_element(Locator::Css("#old-key-until"))
        .await
        .unwrap();
    check_page(c, "api-key-rotated", Some("/settings/api")).await;
    c.goto(&app.url("/settings/api")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("tr.api-key.replaced"))
        .await
        .unwrap();
    check_page(c, "settings-api-rotating", Some("/settings/api")).await;

    // Sign out from the header.
    click(c, "header form[action='/logout'] button").await;
    c.wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    browser.client.clone().close().await.unwrap();
}
