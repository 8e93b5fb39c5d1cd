//! Pushed authorization requests (RFC 9126): the PAR endpoint, the
//! single-use request_uri bound to the browser that takes it, and the
//! clients that must push.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dzdesk_auth::domain::Role;
use reqwest::Response;
use serde_json::Value;

use crate::helpers::{hidden_input, location, new_client, urlencode};
use crate::oauth_flow::{
    assert_error_redirect, assert_token_error, param, pkce, AuthRequest, Flow, REDIRECT, STATE,
};
use crate::oidc::{sign_in_again, verify_id_token, NONCE};

const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// `POST /oauth/par` as the flow's client (Basic for a confidential one,
/// client_id in the body for a public one).
async fn push(flow: &Flow, params: &[(String, String)]) -> Response {
    let mut form: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "client_id")
        .cloned()
        .collect();
    let mut req = flow.app.client.post(flow.app.url("/oauth/par"));
    match &flow.secret {
        Some(secret) => {
            let basic = STANDARD.encode(format!("{}:{}", flow.client_id, secret));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        None => form.push(("client_id".into(), flow.client_id.clone())),
    }
    req.form(&form).send().await.unwrap()
}

/// Pushes `req` and returns its request_uri.
async fn pushed(flow: &Flow, req: &AuthRequest) -> String {
    let resp = push(flow, &req.params).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 60);
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with(PREFIX) && uri.len() > PREFIX.len() + 40,
        "{uri}"
    );
    uri
}

/// Pushes `req`: the authorization URL (path) of its request_uri.
async fn pushed_path(flow: &Flow, req: &AuthRequest) -> String {
    let uri = pushed(flow, req).await;
    authorize_path(&flow.client_id, &uri, "")
}

fn authorize_path(client_id: &str, request_uri: &str, extra: &str) -> String {
    format!(
        "/oauth/authorize?client_id={}&request_uri={}{extra}",
        urlencode(client_id),
        urlencode(request_uri)
    )
}

/// Approves `path`'s consent page in the flow's browser.
async fn approve(flow: &Flow, path: &str) -> Response {
    let page = flow.app.get(path).await;
    assert_eq!(page.status(), 200, "no consent page: {}", location(&page));
    let csrf = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    flow.app
        .post_form(
            path,
            &[("csrf_token", csrf.as_str()), ("decision", "approve")],
        )
        .await
}

async fn assert_invalid_request_uri(resp: Response) {
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains("invalid_request_uri"), "{html}");
}

#[tokio::test]
async fn a_pushed_request_runs_once_with_the_pushed_parameters_only() {
    let flow = Flow::new(Role::Agent, "requests:read openid email", false).await;
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("scope", Some("openid email requests:read"))
        .with("nonce", Some(NONCE));
    let uri = pushed(&flow, &req).await;

    // Parameters beside client_id + request_uri are ignored (RFC 9126 4):
    // another redirect URI, scope and state change nothing.
    let path = authorize_path(
        &flow.client_id,
        &uri,
        "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&scope=requests%3Awrite&state=forged&response_type=token",
    );
    let page = flow.app.get(&path).await;
    assert_eq!(page.status(), 200, "{}", location(&page));
    let cookies = crate::helpers::set_cookies(&page);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("dzdesk_par=dzpar_") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains("requests:write"));
    // The consent form posts back to the request_uri, not the parameters.
    let csrf = hidden_input(&html, "csrf_token").unwrap();
    assert!(
        !html.contains(&urlencode(REDIRECT)),
        "pushed values stay on the server"
    );
    let resp = flow
        .app
        .post_form(
            &path,
            &[("csrf_token", csrf.as_str()), ("decision", "approve")],
        )
        .await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(param(&loc, "state").as_deref(), Some(STATE));
    let code = param(&loc, "code").unwrap();
    let resp = flow.exchange(&code, Some(&verifier)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "requests:read openid email");
    let claims = verify_id_token(&flow, body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["nonce"], NONCE, "the pushed nonce, exactly");

    // Single use: the same browser again, and another browser.
    assert_invalid_request_uri(flow.app.get(&path).await).await;
    let other = new_client();
    let resp = other.get(flow.app.url(&path)).send().await.unwrap();
    assert_invalid_request_uri(resp).await;
    // The row is gone: nothing of the request is left behind.
    assert_eq!(pushed_rows(&flow.app).await, 0);
}

#[tokio::test]
async fn a_taken_request_uri_belongs_to_its_browser_and_of_two_racing_browsers_one_wins() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));

    // Taken by the signed-in browser: another browser (with its own
    // session) gets the replay's answer, and the owner goes on.
    let path = pushed_path(&flow, &req).await;
    assert_eq!(flow.app.get(&path).await.status(), 200);
    let thief = new_client();
    flow.app.create_user("thief@example.com", Role::Agent).await;
    let resp = flow
        .app
        .login_with(&thief, "thief@example.com", crate::helpers::PASSWORD, "/")
        .await;
    assert_eq!(resp.status(), 303);
    let resp = thief.get(flow.app.url(&path)).send().await.unwrap();
    assert_invalid_request_uri(resp).await;
    assert_eq!(flow.app.get(&path).await.status(), 200, "still the owner's");

    // Eight browsers at once on a fresh request_uri: exactly one takes it.
    let path = pushed_path(&flow, &req).await;
    let browsers: Vec<reqwest::Client> = (0..8).map(|_| new_client()).collect();
    let answers =
        futures_util::future::join_all(browsers.iter().map(|b| b.get(flow.app.url(&path)).send()))
            .await;
    let statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    // Signed out, the winner is sent to sign in (303); the rest get 400.
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_request_uri_of_another_client_expired_or_made_up_is_refused() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (other_id, _) = flow
        .app
        .create_client("requests:read", &["authorization_code"], false)
        .await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));

    // RFC 9126 4: the client_id must be the pushing client's.
    let uri = pushed(&flow, &req).await;
    assert_invalid_request_uri(flow.app.get(&authorize_path(&other_id, &uri, "")).await).await;
    // That refusal did not use it up.
    assert_eq!(
        flow.app
            .get(&authorize_path(&flow.client_id, &uri, ""))
            .await
            .status(),
        200
    );

    // 60 s: a request_uri past its expiry is unknown.
    let uri = pushed(&flow, &req).await;
    flow.app
        .with_conn(|conn| {
            use diesel::prelude::*;
            use dzdesk_auth::db::schema::pushed_requests::dsl::*;
            diesel::update(pushed_requests.filter(browser_hash.is_null()))
                .set(expires_at.eq(chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1)))
                .execute(conn)
                .unwrap();
        })
        .await;
    assert_invalid_request_uri(
        flow.app
            .get(&authorize_path(&flow.client_id, &uri, ""))
            .await,
    )
    .await;

    // Made up, or not ours at all.
    let made_up = format!("{PREFIX}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_invalid_request_uri(
        flow.app
            .get(&authorize_path(&flow.client_id, &made_up, ""))
            .await,
    )
    .await;
    // A request object by reference is still not supported (an error
    // redirect: the request's own redirect_uri is registered).
    let by_reference = req
        .clone()
        .with("request_uri", Some("https://app.example/request.jwt"));
    let resp = flow.get(&by_reference).await;
    assert_error_redirect(
        &resp,
        &flow.app.settings.issuer,
        "request_uri_not_supported",
    );
}

#[tokio::test]
async fn pushed_requests_are_checked_as_authorization_requests_are() {
    let flow = Flow::new(Role::Agent, "requests:read openid", true).await;
    let (_, challenge) = pkce();
    let good = AuthRequest::new(&flow.client_id, Some(&challenge));
    // A public client pushes with its client_id (RFC 9126 2.1).
    pushed(&flow, &good).await;

    let cases: Vec<(AuthRequest, &str)> = vec![
        (
            good.clone().with("request_uri", Some("urn:x")),
            "invalid_request",
        ),
        (
            good.clone()
                .with("redirect_uri", Some("https://evil.example/cb")),
            "invalid_request",
        ),
        (
            good.clone().with("scope", Some("requests:write")),
            "invalid_scope",
        ),
        (good.clone().with("scope", Some("bogus")), "invalid_scope"),
        (
            good.clone().with("response_type", Some("token")),
            "unsupported_response_type",
        ),
        (good.clone().with("code_challenge", None), "invalid_request"),
        (
            good.clone().with("code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (
            good.clone().with("scope", Some("openid")),
            "invalid_request",
        ),
        (
            good.clone().with("prompt", Some("select_account")),
            "account_selection_required",
        ),
        (good.clone().with("max_age", Some("-1")), "invalid_request"),
        (
            good.clone().with("request", Some("eyJ...")),
            "request_not_supported",
        ),
    ];
    for (req, error) in cases {
        let resp = push(&flow, &req.params).await;
        assert_token_error(resp, 400, error).await;
    }
    // A repeated parameter.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/par"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id={}&response_type=code&scope=a&scope=b",
            flow.client_id
        ))
        .send()
        .await
        .unwrap();
    assert_token_error(resp, 400, "invalid_request").await;

    // Client authentication as at the token endpoint.
    let conf = Flow::on(
        crate::helpers::spawn_app().await,
        Role::Agent,
        "requests:read",
        false,
    )
    .await;
    let resp = conf
        .app
        .client
        .post(conf.app.url("/oauth/par"))
        .basic_auth(&conf.client_id, Some("dzs_wrong"))
        .form(&[("response_type", "code")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"dzdesk-auth\""
    );
    assert_token_error(resp, 401, "invalid_client").await;
    let resp = conf
        .app
        .client
        .post(conf.app.url("/oauth/par"))
        .form(&[
            ("response_type", "code"),
            ("client_id", conf.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_token_error(resp, 401, "invalid_client").await;
    // A client without the code grant.
    let (service, secret) = conf
        .app
        .create_client("requests:read", &["client_credentials"], false)
        .await;
    let resp = conf
        .app
        .client
        .post(conf.app.url("/oauth/par"))
        .basic_auth(&service, secret.as_deref())
        .form(&[("response_type", "code")])
        .send()
        .await
        .unwrap();
    assert_token_error(resp, 400, "unauthorized_client").await;
    // Nothing was stored for any of them.
    assert_eq!(pushed_rows(&flow.app).await, 1, "the good one only");
    assert_eq!(pushed_rows(&conf.app).await, 0);
}

async fn pushed_rows(app: &crate::helpers::TestApp) -> i64 {
    app.with_conn(|conn| {
        use diesel::prelude::*;
        dzdesk_auth::db::schema::pushed_requests::table
            .count()
            .get_result::<i64>(conn)
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_client_that_requires_par_must_push_and_registration_says_so() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    flow.app
        .with_conn({
            let client_id = flow.client_id.clone();
            move |conn| {
                use diesel::prelude::*;
                use dzdesk_auth::db::schema::clients;
                let changed = diesel::update(clients::table.find(client_id))
                    .set(clients::require_par.eq(true))
                    .execute(conn)
                    .unwrap();
                assert_eq!(changed, 1);
            }
        })
        .await;
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));
    // RFC 9126 5: the same request in the query is refused...
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    assert!(param(&location(&resp), "error_description")
        .unwrap()
        .contains("/oauth/par"));
    // ...and pushed, it runs.
    let path = pushed_path(&flow, &req).await;
    let resp = approve(&flow, &path).await;
    let code = param(&location(&resp), "code").unwrap();
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);

    // RFC 7591 / RFC 9126 6: require_pushed_authorization_requests.
    let admin = flow
        .app
        .create_user("par-admin@example.com", Role::Admin)
        .await;
    let (_, admin_key) = crate::v1_keys::key_for(&flow.app, &admin, "admin").await;
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/register"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({
            "redirect_uris": [REDIRECT],
            "scope": "requests:read",
            "require_pushed_authorization_requests": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["require_pushed_authorization_requests"], true);
    let client_id = info["client_id"].as_str().unwrap();
    let resp = flow
        .app
        .get(&AuthRequest::new(client_id, Some(&challenge)).path())
        .await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    // Left out: false.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/register"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"redirect_uris": [REDIRECT], "scope": "requests:read"}))
        .send()
        .await
        .unwrap();
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["require_pushed_authorization_requests"], false);
    // A rule of authorization requests: not for a client without the code
    // grant.
    let resp = flow
        .app
        .client
        .post(flow.app.url("/oauth/register"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({
            "grant_types": ["client_credentials"],
            "scope": "requests:read",
            "require_pushed_authorization_requests": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata", "{body}");
}

#[tokio::test]
async fn prompt_login_in_a_pushed_request_signs_in_again_and_comes_back_by_request_uri() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("prompt", Some("login"));
    let path = pushed_path(&flow, &req).await;
    let resp = flow.app.get(&path).await;
    assert_eq!(resp.status(), 303);
    let login = location(&resp);
    assert!(login.contains("reauth=1"), "{login}");
    let back = sign_in_again(&flow, &login).await;
    // Back by request_uri, not by the parameters.
    assert_eq!(back, path);
    // The consent page, not another sign-in.
    let resp = approve(&flow, &back).await;
    let code = param(&location(&resp), "code").unwrap();
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);
}

#[tokio::test]
async fn both_discovery_documents_name_the_par_endpoint() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let doc: Value = flow.app.get(path).await.json().await.unwrap();
        assert_eq!(
            doc["pushed_authorization_request_endpoint"],
            format!("{}/oauth/par", flow.app.settings.issuer),
            "{path}"
        );
        assert_eq!(doc["require_pushed_authorization_requests"], false);
    }
    let docs = flow.app.get("/docs").await.text().await.unwrap();
    assert!(docs.contains("/oauth/par</code>"), "/docs lists it");
    assert!(docs.contains("require_pushed_authorization_requests"));
    // And the API document has the operation.
    let api: Value = flow.app.get("/openapi.json").await.json().await.unwrap();
    assert!(api["paths"]["/oauth/par"]["post"].is_object());
}

#[tokio::test]
async fn the_cli_registers_a_client_that_requires_par() {
    let app = crate::helpers::spawn_app().await;
    let create = |extra: &[&str]| {
        let mut args = vec![
            "client",
            "create",
            "--name",
            "App",
            "--scope",
            "requests:read",
        ];
        args.extend_from_slice(extra);
        crate::cli::run(
            &args,
            &[("DATABASE_URL", app.database_url().as_str())],
            None,
        )
    };
    let out = create(&["--redirect-uri", REDIRECT, "--require-par"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let stored = app.stored_client(&id).await;
    assert!(stored.require_par);
    // Without the code grant it cannot mean anything: exit 2.
    let out = create(&["--grant-type", "client_credentials", "--require-par"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--require-par"));
}

#[tokio::test]
async fn max_age_in_a_pushed_request_is_kept_and_a_reload_does_not_skip_the_sign_in() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (verifier, challenge) = pkce();
    // A generous max_age the fresh session meets: straight to consent, and
    // the form (bound to the pushed parameters) approves.
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("max_age", Some("3600"));
    let path = pushed_path(&flow, &req).await;
    let resp = approve(&flow, &path).await;
    assert_eq!(resp.status(), 302, "approved, not 403 or another sign-in");
    let code = param(&location(&resp), "code").unwrap();
    assert_eq!(flow.exchange(&code, Some(&verifier)).await.status(), 200);

    // prompt=login: the login page; coming back without signing in (a
    // reload) is sent there again, as often as it comes back.
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("prompt", Some("login"))
        .with("scope", Some("requests:read"));
    let path = pushed_path(&flow, &req).await;
    for _ in 0..2 {
        let resp = flow.app.get(&path).await;
        assert_eq!(resp.status(), 303);
        assert!(location(&resp).contains("reauth=1"), "{}", location(&resp));
    }
    // max_age=0 as well: no sign-in can be that fresh but the one it asks.
    let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("max_age", Some("0"));
    let path = pushed_path(&flow, &req).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..2 {
        let resp = flow.app.get(&path).await;
        assert_eq!(resp.status(), 303, "sign in again");
    }
    let login = location(&flow.app.get(&path).await);
    let back = sign_in_again(&flow, &login).await;
    assert_eq!(back, path);
    let resp = flow.app.get(&back).await;
    assert_eq!(resp.status(), 302, "consent remembered: the code");
    let code = param(&location(&resp), "code").unwrap();
    let resp = flow.exchange(&code, Some(&verifier)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn of_two_tabs_approving_one_pushed_request_one_gets_a_code() {
    let flow = Flow::new(Role::Agent, "requests:read", false).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));
    let path = pushed_path(&flow, &req).await;
    // Two tabs of one browser show the consent page, then both approve.
    let first = flow.app.get(&path).await.text().await.unwrap();
    let second = flow.app.get(&path).await.text().await.unwrap();
    let tokens = [first, second].map(|html| hidden_input(&html, "csrf_token").unwrap());
    let answers = futures_util::future::join_all(tokens.iter().map(|csrf| async {
        let form = [("csrf_token", csrf.as_str()), ("decision", "approve")];
        flow.app.post_form(&path, &form).await
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        1,
        "{statuses:?}"
    );
    // Exactly one code was stored.
    let codes = flow
        .app
        .with_conn(|conn| {
            use diesel::prelude::*;
            dzdesk_auth::db::schema::authorization_codes::table
                .count()
                .get_result::<i64>(conn)
                .unwrap()
        })
        .await;
    assert_eq!(codes, 1);
}

#[tokio::test]
async fn pushes_are_bounded_per_client_and_per_address_and_swept() {
    let flow = Flow::new(Role::Agent, "requests:read", true).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));
    // A public client: anyone may push for it, so pushes are limited per
    // address (60 a minute, then 429 with Retry-After).
    let mut statuses = Vec::new();
    for _ in 0..61 {
        statuses.push(push(&flow, &req.params).await);
    }
    let last = statuses.pop().unwrap();
    assert!(statuses.iter().all(|r| r.status() == 201));
    assert!(
        last.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            >= 1
    );
    assert_token_error(last, 429, "temporarily_unavailable").await;

    // A confidential client: at most 1000 waiting for a browser.
    let conf = Flow::on(
        crate::helpers::spawn_app().await,
        Role::Agent,
        "requests:read",
        false,
    )
    .await;
    let req = AuthRequest::new(&conf.client_id, Some(&challenge));
    let client_id = conf.client_id.clone();
    conf.app
        .with_conn(move |conn| {
            let at = chrono::Utc::now().naive_utc();
            for i in 0..1000 {
                dzdesk_auth::db::models::PushedRequestRow {
                    id: format!("filler-{i}"),
                    client_id: client_id.clone(),
                    params: String::new(),
                    browser_hash: None,
                    reauth_after: None,
                    created_at: at,
                    expires_at: at + chrono::Duration::seconds(60),
                }
                .insert(conn)
                .unwrap();
            }
        })
        .await;
    let resp = push(&conf, &req.params).await;
    assert_eq!(resp.headers()["retry-after"], "60");
    assert_token_error(resp, 429, "temporarily_unavailable").await;
    // Past their 60 s the sweep deletes them, and pushing works again.
    let later = chrono::Utc::now().naive_utc() + chrono::Duration::seconds(61);
    let swept = conf
        .app
        .with_conn(move |conn| dzdesk_auth::maintenance::sweep(conn, later).unwrap())
        .await;
    assert_eq!(swept.pushed_requests, 1000);
    pushed(&conf, &req).await;
}
