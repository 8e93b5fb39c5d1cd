//! CORS over real HTTP: preflights, the public documents, and the
//! client-bound endpoints (token, revocation, /v1) from an origin the client
//! registered and from one it did not; then the same in headless Chromium,
//! where the browser itself enforces the answers.

use dzdesk_auth::domain::Role;
use reqwest::{Method, Response};
use serde_json::Value;

use crate::browser::start_browser;
use crate::helpers::spawn_app;
use crate::interop::callback_listener;
use crate::oauth_flow::Flow;
use crate::v1_keys::key_for;

/// An origin of the flow's client (the origin of its redirect URI
/// `https://app.example/cb`).
const ALLOWED: &str = "https://app.example";
const REFUSED: &str = "https://evil.example";

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn assert_no_credentials(resp: &Response) {
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "credentials are never allowed"
    );
}

async fn preflight(
    app: &crate::helpers::TestApp,
    path: &str,
    origin: &str,
    method: &str,
) -> Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preflights_are_answered_for_the_cors_endpoints_only() {
    let app = spawn_app().await;
    for (path, method) in [
        ("/oauth/token", "POST"),
        ("/oauth/revoke", "POST"),
        ("/v1/me", "GET"),
    ] {
        let resp = preflight(&app, path, ALLOWED, method).await;
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some(ALLOWED),
            "{path}"
        );
        assert!(header(&resp, "access-control-allow-methods")
            .unwrap()
            .contains(method));
        let allowed_headers = header(&resp, "access-control-allow-headers")
            .unwrap()
            .to_lowercase();
        assert!(
            allowed_headers.contains("authorization") && allowed_headers.contains("content-type")
        );
        assert!(header(&resp, "access-control-max-age").is_some());
        assert!(header(&resp, "vary").unwrap().contains("Origin"));
        assert_no_credentials(&resp);
        // Not an https (or loopback http) origin: no permission at all.
        let resp = preflight(&app, path, "http://evil.example", method).await;
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{path}"
        );
        let resp = preflight(&app, path, "null", method).await;
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    ] {
        let resp = preflight(&app, path, REFUSED, "GET").await;
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&resp, "access-control-allow-methods"), Some("GET"));
        let resp = app
            .client
            .get(app.url(path))
            .header("origin", REFUSED)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert_no_credentials(&resp);
    }
    // Browser pages, introspection and registration take no part.
    for path in [
        "/oauth/introspect",
        "/oauth/register",
        "/login",
        "/oauth/authorize",
    ] {
        let resp = preflight(&app, path, ALLOWED, "POST").await;
        assert_ne!(resp.status(), 204, "{path}");
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{path}"
        );
        let resp = app
            .client
            .post(app.url(path))
            .header("origin", ALLOWED)
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{path}"
        );
    }
}

/// A token request of the flow's public client from a page on `origin`.
async fn refresh_from(flow: &Flow, origin: &str, refresh_token: &str) -> Response {
    flow.app
        .client
        .post(flow.app.url("/oauth/token"))
        .header("origin", origin)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &flow.client_id),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_token_endpoint_answers_a_page_on_a_registered_origin_and_refuses_others_before_acting()
{
    let flow = Flow::new(Role::Agent, "requests:read", true).await;
    let tokens = flow.tokens("requests:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // Another origin: refused before the refresh token is touched.
    let resp = refresh_from(&flow, REFUSED, refresh).await;
    assert_eq!(resp.status(), 400);
    assert!(header(&resp, "access-control-allow-origin").is_none());
    assert!(header(&resp, "vary").unwrap().contains("Origin"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("origin"),
        "{body}"
    );

    // The registered origin: the refresh token still works (it was not
    // rotated by the refused request), and the page may read the answer.
    let resp = refresh_from(&flow, ALLOWED, refresh).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(ALLOWED));
    assert!(header(&resp, "access-control-expose-headers").is_some());
    assert_no_credentials(&resp);
    let rotated: Value = resp.json().await.unwrap();
    let next = rotated["refresh_token"].as_str().unwrap();

    // Its errors are readable there too (the reused token: invalid_grant).
    let resp = refresh_from(&flow, ALLOWED, refresh).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(ALLOWED));

    // Without Origin (a server, a native app), nothing changes.
    let resp = flow.refresh(next, None).await;
    assert_eq!(resp.status(), 400, "the reuse revoked the grant");
    assert!(header(&resp, "access-control-allow-origin").is_none());

    // An unknown client from any origin: invalid_client (a failed
    // authentication), not readable by the page.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/token"))
        .header("origin", ALLOWED)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "client_nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn revocation_from_another_origin_is_refused_and_revokes_nothing() {
    let flow = Flow::new(Role::Agent, "requests:read", true).await;
    let tokens = flow.tokens("requests:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let revoke = |origin: &'static str, token: String| {
        flow.app
            .client
            .post(flow.app.url("/oauth/revoke"))
            .header("origin", origin)
            .form(&[("token", token), ("client_id", flow.client_id.clone())])
            .send()
    };
    let resp = revoke(REFUSED, refresh.to_owned()).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(header(&resp, "access-control-allow-origin").is_none());
    // Not revoked: the token still refreshes.
    let resp = flow.refresh(refresh, None).await;
    assert_eq!(resp.status(), 200, "the refused call revoked nothing");
    let rotated: Value = resp.json().await.unwrap();
    let refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    let resp = revoke(ALLOWED, refresh.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(ALLOWED));
    assert_no_credentials(&resp);
    // Revoked now, by the allowed call.
    let resp = flow.refresh(&refresh, None).await;
    assert_eq!(resp.status(), 400);
}

async fn me_from(app: &crate::helpers::TestApp, origin: &str, bearer: Option<&str>) -> Response {
    let mut req = app.client.get(app.url("/v1/me")).header("origin", origin);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn v1_answers_pages_on_the_tokens_client_origins_and_never_api_keys() {
    let flow = Flow::new(Role::Agent, "requests:read", true).await;
    let token = flow.access_token("requests:read").await;

    let resp = me_from(&flow.app, ALLOWED, Some(&token)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(ALLOWED));
    let exposed = header(&resp, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-ratelimit-remaining"), "{exposed}");
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    assert_no_credentials(&resp);

    let resp = me_from(&flow.app, REFUSED, Some(&token)).await;
    assert_eq!(resp.status(), 403);
    assert!(header(&resp, "access-control-allow-origin").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "FORBIDDEN");

    // An API key is a server-side secret: from no page at all.
    let (_, key) = key_for(&flow.app, &flow.user_id, "requests:read").await;
    for origin in [ALLOWED, REFUSED] {
        let resp = me_from(&flow.app, origin, Some(&key)).await;
        assert_eq!(resp.status(), 403, "{origin}");
        assert!(header(&resp, "access-control-allow-origin").is_none());
    }
    // Without Origin the key works as ever.
    let resp = flow
        .app
        .client
        .get(flow.app.url("/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // No credential, or a bad one: the page may read the 401 (and its
    // challenge), which says nothing about any account.
    for bearer in [None, Some("not-a-token")] {
        let resp = me_from(&flow.app, ALLOWED, bearer).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(header(&resp, "access-control-allow-origin"), Some(ALLOWED));
        assert!(header(&resp, "www-authenticate").is_some());
    }
}

#[tokio::test]
async fn explicit_origins_replace_the_redirect_uris_origins_and_registration_takes_them() {
    let app = spawn_app().await;
    let admin = app.create_user("admin@example.com", Role::Admin).await;
    let (_, key) = key_for(&app, &admin, "admin").await;
    let register = |body: Value| {
        app.client
            .post(app.url("/oauth/register"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let resp = register(serde_json::json!({
        "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "allowed_cors_origins": ["https://spa.example.com", "http://localhost:5173"],
    }))
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(
        info["allowed_cors_origins"],
        serde_json::json!(["https://spa.example.com", "http://localhost:5173"])
    );
    let client_id = info["client_id"].as_str().unwrap();
    let token_from = |origin: &'static str| {
        app.client
            .post(app.url("/oauth/token"))
            .header("origin", origin)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", client_id),
            ])
            .send()
    };
    // Admitted (and then told invalid_grant, readably) ...
    let resp = token_from("https://spa.example.com").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://spa.example.com")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    // ... while the redirect URI's origin is no longer one of them.
    let resp = token_from(ALLOWED).await.unwrap();
    assert!(header(&resp, "access-control-allow-origin").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // Wildcards and paths are refused at registration.
    for bad in ["https://*.example.com", "https://spa.example.com/app", "*"] {
        let resp = register(serde_json::json!({
            "redirect_uris": ["https://app.example/cb"],
            "allowed_cors_origins": [bad],
        }))
        .await
        .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client_metadata", "{bad}");
    }
}

#[tokio::test]
async fn the_issuers_own_origin_is_not_a_cross_origin_call() {
    // The test issuer is http://127.0.0.1: an API key, refused from any
    // other page, is not refused from the issuer's own.
    let app = spawn_app().await;
    let user = app.create_user("agent@example.com", Role::Agent).await;
    let (_, key) = key_for(&app, &user, "requests:read").await;
    let resp = me_from(&app, "http://127.0.0.1", Some(&key)).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "access-control-allow-origin").is_none());
    let resp = me_from(&app, "http://127.0.0.1:8080", Some(&key)).await;
    assert_eq!(resp.status(), 403);
}

/// In the page the browser shows, `fetch`es `url` (POST of the form `form`
/// when given, else GET with `bearer`): "status <n>" and the body's first
/// characters, or "refused: <error>" when the browser did not let the page
/// read the answer.
async fn fetch_in_page(
    c: &fantoccini::Client,
    url: &str,
    form: Option<&[(&str, &str)]>,
    bearer: Option<&str>,
) -> String {
    let script = r#"
        const [url, form, bearer, done] = arguments;
        const init = form
            ? { method: "POST", body: new URLSearchParams(form) }
            : { headers: bearer ? { "Authorization": "Bearer " + bearer } : {} };
        fetch(url, init)
            .then(async (r) => done("status " + r.status + " " + (await r.text())))
            .catch((e) => done("refused: " + e));
    "#;
    let form = form.map(|pairs| {
        serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect(),
        )
    });
    let out = c
        .execute_async(
            script,
            vec![
                Value::String(url.to_owned()),
                form.unwrap_or(Value::Null),
                bearer.map_or(Value::Null, |b| Value::String(b.to_owned())),
            ],
        )
        .await
        .unwrap();
    out.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_page_on_another_loopback_origin_calls_the_token_endpoint_in_chromium() {
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;
    let app = spawn_app().await;
    // Two pages, each on a loopback origin of its own; the service is on a
    // third. The client registered the first page's origin only.
    let allowed_port = callback_listener().await;
    let refused_port = callback_listener().await;
    let user_id = app.create_user("agent@example.com", Role::Agent).await;
    assert_eq!(
        app.login("agent@example.com", crate::helpers::PASSWORD, "/")
            .await
            .status(),
        303
    );
    let (client_id, _) = app
        .register_client(dzdesk_auth::oauth::clients::ClientRequest {
            name: "SPA".into(),
            redirect_uris: vec![
                crate::oauth_flow::REDIRECT.into(),
                format!("http://127.0.0.1:{allowed_port}/cb"),
            ],
            scope: "requests:read".into(),
            public: true,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
            ..Default::default()
        })
        .await;
    let flow = Flow {
        app,
        user_id,
        email: "agent@example.com".into(),
        client_id,
        secret: None,
    };
    let tokens = flow.tokens("requests:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let token_url = flow.app.url("/oauth/token");
    let f = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", flow.client_id.as_str()),
    ];

    // The refused origin: the browser gets no permission to read, and the
    // service did nothing (the refresh token is not rotated).
    c.goto(&format!("http://127.0.0.1:{refused_port}/"))
        .await
        .unwrap();
    let out = fetch_in_page(c, &token_url, Some(&f), None).await;
    assert!(out.starts_with("refused: TypeError"), "{out}");

    // The registered origin: the page reads its new tokens.
    c.goto(&format!("http://127.0.0.1:{allowed_port}/"))
        .await
        .unwrap();
    let out = fetch_in_page(c, &token_url, Some(&f), None).await;
    assert!(out.starts_with("status 200 "), "{out}");
    let body: Value = serde_json::from_str(out.trim_start_matches("status 200 ")).unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(body["refresh_token"].as_str().unwrap(), refresh, "rotated");

    // /v1 with the token: a preflighted request (Authorization), allowed
    // here ...
    let me = flow.app.url("/v1/me");
    let out = fetch_in_page(c, &me, None, Some(&access)).await;
    assert!(
        out.starts_with("status 200 ") && out.contains("agent@example.com"),
        "{out}"
    );
    // ... and not from the other page.
    c.goto(&format!("http://127.0.0.1:{refused_port}/"))
        .await
        .unwrap();
    let out = fetch_in_page(c, &me, None, Some(&access)).await;
    assert!(out.starts_with("refused: TypeError"), "{out}");
    // The metadata is for every page.
    let out = fetch_in_page(
        c,
        &flow.app.url("/.well-known/oauth-authorization-server"),
        None,
        None,
    )
    .await;
    assert!(
        out.starts_with("status 200 ") && out.contains("token_endpoint"),
        "{out}"
    );

    browser.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn an_origin_header_does_not_escape_the_client_authentication_lock() {
    // Made-up client_ids with an Origin are failed authentications like
    // any other (invalid_client), so the (client, address) pair locks.
    let app = spawn_app().await;
    let attempt = || {
        app.client
            .post(app.url("/oauth/token"))
            .header("origin", REFUSED)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", "client_made_up"),
            ])
            .send()
    };
    for _ in 0..5 {
        let resp = attempt().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
    }
    let resp = attempt().await.unwrap();
    assert_eq!(resp.status(), 429, "locked");
    // The lock's answer is readable by the page (it names no client).
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(REFUSED));
}
