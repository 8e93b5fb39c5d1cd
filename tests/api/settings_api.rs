//! Settings > API (/settings/api): generating, listing and revoking API
//! keys, and the IP allowlist (over HTTP, and in headless Chromium).

use chrono::DateTime;
use dzdesk_auth::db::models::{ApiKeyRow, User};
use dzdesk_auth::domain::Role;
use fantoccini::Locator;
use serde_json::{json, Value};

use crate::browser::{choose, click, shown_key, start_browser, type_into};
use crate::helpers::{location, spawn_app, TestApp, PASSWORD};

const AGENT_SCOPES: [&str; 3] = ["requests:read", "requests:write", "users:read"];
const ADMIN_ONLY_SCOPES: [&str; 2] = ["users:write", "admin"];

/// The CSRF token of the form posting to `action` on a page.
fn form_token(html: &str, action: &str) -> String {
    let form = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action}"));
    crate::helpers::hidden_input(&html[form..], "csrf_token").expect("csrf token in the form")
}

fn scope_checkbox(scope: &str) -> String {
    format!(r#"type="checkbox" name="scopes" value="{scope}""#)
}

/// A signed-in user of `role` on a fresh app; returns the app and user id.
async fn signed_in(role: Role) -> (TestApp, String) {
    let app = spawn_app().await;
    let id = app.create_user("ann@example.com", role).await;
    let resp = app.login("ann@example.com", PASSWORD, "/").await;
    assert_eq!(resp.status(), 303);
    (app, id)
}

async fn settings_html(app: &TestApp) -> String {
    let resp = app.get("/settings/api").await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

async fn key_count(app: &TestApp, user_id: &str) -> i64 {
    let id = user_id.to_owned();
    app.with_conn(move |conn| ApiKeyRow::count_for_user(conn, &id).unwrap())
        .await
}

async fn stored_allowlist(app: &TestApp, user_id: &str) -> String {
    let id = user_id.to_owned();
    app.with_conn(move |conn| User::find(conn, &id).unwrap().unwrap().ip_allowlist)
        .await
}

async fn me(app: &TestApp, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/me"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in() {
    let app = spawn_app().await;
    let resp = app.get("/settings/api").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/login?next=%2Fsettings%2Fapi");
    // The forms refuse a visitor who is not signed in.
    for path in [
        "/settings/api/keys",
        "/settings/api/keys/revoke",
        "/settings/api/allowlist",
    ] {
        let resp = app.post_form(path, &[("csrf_token", "x")]).await;
        assert_eq!(resp.status(), 403, "{path}");
    }
}

#[tokio::test]
async fn an_agent_is_offered_only_the_scopes_an_agent_can_grant() {
    let (app, _) = signed_in(Role::Agent).await;
    let html = settings_html(&app).await;
    for scope in AGENT_SCOPES {
        assert!(html.contains(&scope_checkbox(scope)), "{scope} missing");
    }
    for scope in ADMIN_ONLY_SCOPES {
        assert!(!html.contains(&scope_checkbox(scope)), "{scope} offered");
    }
    assert!(html.contains("Read your requests"));
    assert!(html.contains(r#"name="expires_in_days""#));
    for value in ["", "30", "90", "365"] {
        assert!(
            html.contains(&format!(r#"<option value="{value}""#)),
            "{value}"
        );
    }
    assert!(html.contains(r#"id="no-keys""#));
    assert!(html.contains(r#"name="entries""#));
    // The account page links here.
    let home = app.get("/").await.text().await.unwrap();
    assert!(home.contains(r#"href="/settings/api""#));
}

#[tokio::test]
async fn an_admin_is_offered_every_scope() {
    let (app, _) = signed_in(Role::Admin).await;
    let html = settings_html(&app).await;
    for scope in AGENT_SCOPES.iter().chain(ADMIN_ONLY_SCOPES.iter()) {
        assert!(html.contains(&scope_checkbox(scope)), "{scope} missing");
    }
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused_and_change_nothing() {
    let (app, user_id) = signed_in(Role::Agent).await;
    let html = settings_html(&app).await;
    // The token of another form on the page does not do either.
    let wrong_form = form_token(&html, "/settings/api/allowlist");
    for token in [None, Some("x"), Some(wrong_form.as_str())] {
        let mut form = vec![("name", "CI"), ("scopes", "requests:read")];
        if let Some(t) = token {
            form.push(("csrf_token", t));
        }
        let resp = app.post_form("/settings/api/keys", &form).await;
        assert_eq!(resp.status(), 403, "{token:?}");
    }
    assert_eq!(key_count(&app, &user_id).await, 0);

    let resp = app
        .post_form(
            "/settings/api/allowlist",
            &[("entries", "203.0.113.7"), ("csrf_token", "x")],
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(stored_allowlist(&app, &user_id).await, "");

    let resp = app
        .post_form(
            "/settings/api/keys/revoke",
            &[("key_id", "key_x"), ("csrf_token", "x")],
        )
        .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn invalid_keys_are_refused_with_the_reason_and_nothing_is_created() {
    let (app, user_id) = signed_in(Role::Agent).await;
    let html = settings_html(&app).await;
    let token = form_token(&html, "/settings/api/keys");
    let cases: [(&[(&str, &str)], &str); 5] = [
        // A scope the role cannot grant, even next to one it can.
        (
            &[
                ("name", "CI"),
                ("scopes", "requests:read"),
                ("scopes", "users:write"),
            ],
            "users:write",
        ),
        (&[("name", "CI"), ("scopes", "admin")], "admin"),
        (
            &[("name", "CI"), ("scopes", "requests:delete")],
            "requests:delete",
        ),
        (&[("name", "  "), ("scopes", "requests:read")], "name"),
        (&[("name", "CI")], "scopes"),
    ];
    for (fields, named) in cases {
        let mut form = fields.to_vec();
        form.push(("expires_in_days", "30"));
        form.push(("csrf_token", token.as_str()));
        let resp = app.post_form("/settings/api/keys", &form).await;
        assert_eq!(resp.status(), 400, "{fields:?}");
        let html = resp.text().await.unwrap();
        let error = html
            .split(r#"id="form-error">"#)
            .nth(1)
            .unwrap_or_else(|| panic!("no #form-error for {fields:?}: {html}"));
        let error = &error[..error.find("</p>").unwrap()];
        assert!(error.contains(named), "{fields:?}: {error}");
        // The form is shown again, filled in.
        assert!(
            html.contains(r#"<option value="30" selected>"#),
            "{fields:?}"
        );
    }
    // An expiry the form does not offer and the API would refuse.
    let resp = app
        .post_form(
            "/settings/api/keys",
            &[
                ("name", "CI"),
                ("scopes", "requests:read"),
                ("expires_in_days", "0"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("expires_in_days"));
    assert_eq!(key_count(&app, &user_id).await, 0);
}

#[tokio::test]
async fn a_key_made_over_http_is_shown_once_and_unknown_keys_are_not_found() {
    let (app, user_id) = signed_in(Role::Admin).await;
    let html = settings_html(&app).await;
    let token = form_token(&html, "/settings/api/keys");
    let resp = app
        .post_form(
            "/settings/api/keys",
            &[
                ("csrf_token", &token),
                ("name", "Reporting"),
                ("scopes", "users:write"),
                ("scopes", "requests:read"),
                ("expires_in_days", ""),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    let key = html
        .split(r#"<code id="new-api-key" class="secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_owned();
    assert!(key.starts_with("dzd_"), "{key}");
    assert!(html.contains(r#"href="/settings/api""#));
    assert_eq!(key_count(&app, &user_id).await, 1);

    let resp = me(&app, &key).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["data"]["scopes"],
        json!(["requests:read", "users:write"])
    );

    // The list shows the key's prefix, never the key.
    let html = settings_html(&app).await;
    assert!(!html.contains(&key));
    assert!(html.contains(&key[..10]));
    assert!(html.contains("Reporting"));
    assert!(html.contains("Never"), "no expiry");

    let token = form_token(&html, "/settings/api/keys/revoke");
    let resp = app
        .post_form(
            "/settings/api/keys/revoke",
            &[("key_id", "key_unknown"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(me(&app, &key).await.status(), 200);
}

#[tokio::test]
async fn the_allowlist_is_saved_in_canonical_form_and_a_bad_entry_saves_nothing() {
    let (app, user_id) = signed_in(Role::Agent).await;
    let html = settings_html(&app).await;
    let token = form_token(&html, "/settings/api/allowlist");
    let resp = app
        .post_form(
            "/settings/api/allowlist",
            &[
                (
                    "entries",
                    " 203.0.113.7\r\n\r\n198.51.100.9/24, 2001:db8::/32\n",
                ),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/settings/api?saved=1");
    let html = app.get("/settings/api?saved=1").await.text().await.unwrap();
    assert!(html.contains(r#"id="saved-notice""#));
    for entry in ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"] {
        assert!(html.contains(&format!("<code>{entry}</code>")), "{entry}");
    }
    let saved = "203.0.113.7/32\n198.51.100.0/24\n2001:db8::/32";
    assert!(html.contains(&format!(">{saved}</textarea>")), "{html}");
    assert_eq!(stored_allowlist(&app, &user_id).await, saved);

    let resp = app
        .post_form(
            "/settings/api/allowlist",
            &[("entries", "10.0.0.1\nnot-an-ip"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), 400);
    let html = resp.text().await.unwrap();
    let error = html.split(r#"id="form-error">"#).nth(1).unwrap();
    let error = &error[..error.find("</p>").unwrap()];
    assert!(error.contains("not-an-ip"), "{error}");
    // What was typed is shown again to fix; the saved list is unchanged.
    assert!(html.contains(">10.0.0.1\nnot-an-ip</textarea>"));
    assert_eq!(stored_allowlist(&app, &user_id).await, saved);

    // Empty: no restriction.
    let resp = app
        .post_form(
            "/settings/api/allowlist",
            &[("entries", "\n"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(stored_allowlist(&app, &user_id).await, "");
    assert!(settings_html(&app)
        .await
        .contains(r#"id="allowlist-status" class="muted""#));
}

#[tokio::test]
async fn browser_generates_uses_and_revokes_an_api_key() {
    let app = spawn_app().await;
    let user_id = app.create_user("ann@example.com", Role::Agent).await;
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;

    // Signing in from Settings > API comes back to it.
    c.goto(&app.url("/settings/api")).await.unwrap();
    type_into(c, "input[name=email]", "ann@example.com").await;
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    c.wait().for_element(Locator::Css("#create")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/settings/api");

    // Generate API Key: name, scope, 30 days, Create.
    type_into(c, "input[name=name]", "Nightly export").await;
    click(c, "input[name=scopes][value='requests:read']").await;
    choose(c, "select[name=expires_in_days]", "30").await;
    click(c, "#create").await;
    let key = shown_key(c).await;
    assert!(key.starts_with("dzd_") && key.len() == 54, "{key}");
    let warning = c
        .find(Locator::Css("#shown-once"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(warning.contains("shown only once"), "{warning}");

    // Back on the settings page: listed by name and prefix, the key is gone.
    c.goto(&app.url("/settings/api")).await.unwrap();
    let listed = c
        .wait()
        .for_element(Locator::Css("tr.api-key"))
        .await
        .unwrap();
    let text = listed.text().await.unwrap();
    assert!(text.contains("Nightly export"), "{text}");
    assert!(text.contains(&key[..10]), "{text}");
    assert!(text.contains("requests:read"), "{text}");
    assert!(!c.source().await.unwrap().contains(&key));

    // The key works on the API, with what was ticked and a 30-day expiry.
    let resp = me(&app, &key).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": true, "data": {
            "id": user_id,
            "email": "ann@example.com",
            "role": "agent",
            "scopes": ["requests:read"],
        }})
    );
    let listing: Value = app
        .client
        .get(app.url("/v1/api-keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = &listing["data"]["api_keys"][0];
    let created = DateTime::parse_from_rfc3339(stored["created_at"].as_str().unwrap()).unwrap();
    let expires = DateTime::parse_from_rfc3339(stored["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::days(30));

    // Revoke in the browser: the key stops working at once.
    click(c, "tr.api-key form.revoke-key button").await;
    c.wait()
        .for_element(Locator::Css("#revoked-notice"))
        .await
        .unwrap();
    c.find(Locator::Css("#no-keys")).await.unwrap();
    browser.client.clone().close().await.unwrap();

    let resp = me(&app, &key).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
}
