//! GET/POST /oauth/authorize (RFC 6749 4.1.1-4.1.2, RFC 7636, RFC 8252 7.3,
//! RFC 9207, RFC 9700): one test per rule of the issue.

use diesel::prelude::*;
use dzdesk_auth::db::models::AuthorizationCodeRow;
use dzdesk_auth::db::schema::authorization_codes;
use dzdesk_auth::domain::Role;
use dzdesk_auth::oauth::clients::ClientRequest;
use dzdesk_auth::tokens;

use crate::helpers::{assert_security_headers, hidden_input, location, spawn_app, PASSWORD};
use crate::oauth_flow::{assert_error_redirect, param, pkce, AuthRequest, Flow, REDIRECT, STATE};

const SCOPE: &str = "requests:read requests:write";

#[tokio::test]
async fn signed_out_user_signs_in_and_returns_to_the_same_request() {
    let app = spawn_app().await;
    app.create_user("agent@example.com", Role::Agent).await;
    let (client_id, _) = app
        .create_client(SCOPE, &["authorization_code"], false)
        .await;
    let req = AuthRequest::new(&client_id, None);

    let resp = app.get(&req.path()).await;
    assert_eq!(resp.status(), 303);
    let login = location(&resp);
    assert!(login.starts_with("/login?next="), "{login}");
    let next = url::Url::parse(&format!("http://x{login}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "next")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(next, req.path());

    let resp = app.login("agent@example.com", PASSWORD, &next).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), req.path());
    let resp = app.get(&next).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("name=\"decision\""));
}

#[tokio::test]
async fn consent_page_shows_client_scopes_email_and_two_buttons() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some(SCOPE));
    let resp = flow.get(&req).await;
    assert_eq!(resp.status(), 200);
    assert_security_headers(&resp);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Test App"), "client name");
    assert!(html.contains(&flow.email), "signed-in email");
    assert!(html.contains("Read your requests"));
    assert!(html.contains("Create and update requests"));
    assert!(html.contains(r#"name="decision" value="approve""#));
    assert!(html.contains(r#"name="decision" value="deny""#));
    assert!(hidden_input(&html, "csrf_token").is_some());
    // Nothing of the request travels in the form but the token.
    assert!(!html.contains(r#"name="scope""#) && !html.contains(r#"name="redirect_uri""#));
}

#[tokio::test]
async fn approve_redirects_with_code_state_and_iss() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    let resp = flow.decide(&req, "approve").await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
    assert!(param(&loc, "code").unwrap().starts_with("dzc_"));
    assert_eq!(param(&loc, "state").as_deref(), Some(STATE));
    assert_eq!(
        param(&loc, "iss").as_deref(),
        Some(&*flow.app.settings.issuer)
    );
    assert!(param(&loc, "error").is_none());
}

#[tokio::test]
async fn deny_redirects_with_access_denied_state_and_iss() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    let resp = flow.decide(&req, "deny").await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "access_denied");
}

#[tokio::test]
async fn unknown_client_or_bad_redirect_uri_is_an_html_400_never_a_redirect() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let good = AuthRequest::new(&flow.client_id, None);
    let cases = [
        AuthRequest::new("client_unknown", None),
        good.clone().with("client_id", None),
        // Two registered URIs: redirect_uri is required (RFC 6749 3.1.2.3).
        good.clone().with("redirect_uri", None),
        good.clone()
            .with("redirect_uri", Some("https://evil.example/cb")),
        // Exact string match: no prefix, suffix or case games.
        good.clone()
            .with("redirect_uri", Some("https://app.example/cb/../evil")),
        good.clone()
            .with("redirect_uri", Some("https://app.example/cb?x=1")),
        good.clone()
            .with("redirect_uri", Some("https://APP.example/cb")),
    ];
    for req in cases {
        let resp = flow.get(&req).await;
        assert_eq!(resp.status(), 400, "{}", req.path());
        assert!(resp.headers().get("location").is_none());
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
}

#[tokio::test]
async fn response_type_token_is_unsupported_response_type() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("response_type", Some("token"));
    let resp = flow.get(&req).await;
    assert_error_redirect(
        &resp,
        &flow.app.settings.issuer,
        "unsupported_response_type",
    );
}

#[tokio::test]
async fn public_client_loopback_redirect_accepts_any_port() {
    let flow = Flow::new(Role::Agent, SCOPE, true).await;
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge))
        .with("redirect_uri", Some("http://127.0.0.1:53127/cb"));
    let resp = flow.decide(&req, "approve").await;
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).starts_with("http://127.0.0.1:53127/cb?code="));
}

#[tokio::test]
async fn loopback_redirect_spellings_other_than_the_registered_one_are_an_html_400() {
    // Registered: http://127.0.0.1/cb. RFC 8252 7.3 lets only the port vary.
    let flow = Flow::new(Role::Agent, SCOPE, true).await;
    let (_, challenge) = pkce();
    for uri in [
        "http://127.1:53127/cb",
        "http://0x7f000001:53127/cb",
        "http://127.0.0.1:53127/cb/../cb",
        "http://127.0.0.1:53127/%63b",
    ] {
        let req =
            AuthRequest::new(&flow.client_id, Some(&challenge)).with("redirect_uri", Some(uri));
        let resp = flow.get(&req).await;
        assert_eq!(resp.status(), 400, "{uri}");
        assert!(resp.headers().get("location").is_none(), "{uri}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
}

#[tokio::test]
async fn confidential_client_loopback_redirect_needs_the_exact_port() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None)
        .with("redirect_uri", Some("http://127.0.0.1:53127/cb"));
    assert_eq!(flow.get(&req).await.status(), 400);
}

#[tokio::test]
async fn public_client_without_pkce_gets_invalid_request() {
    let flow = Flow::new(Role::Agent, SCOPE, true).await;
    let resp = flow.get(&AuthRequest::new(&flow.client_id, None)).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
}

#[tokio::test]
async fn pkce_plain_or_malformed_challenge_gets_invalid_request() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (verifier, challenge) = pkce();
    let base = AuthRequest::new(&flow.client_id, Some(&challenge));
    for req in [
        base.clone().with("code_challenge_method", Some("plain")),
        // RFC 7636 4.3: the default method is plain, which is refused too.
        base.clone().with("code_challenge_method", None),
        base.clone().with("code_challenge", Some("too-short")),
        base.clone().with("code_challenge", Some(&verifier)),
    ] {
        let resp = flow.get(&req).await;
        assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    }
}

#[tokio::test]
async fn confidential_client_flagged_require_pkce_needs_a_challenge() {
    let app = spawn_app().await;
    let flow = Flow::on(app, Role::Agent, SCOPE, false).await;
    let (client_id, _) = flow
        .app
        .register_client(ClientRequest {
            name: "Strict".into(),
            redirect_uris: vec![REDIRECT.into()],
            scope: SCOPE.into(),
            public: false,
            grant_types: vec!["authorization_code".into()],
            require_pkce: true,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    let resp = flow.get(&AuthRequest::new(&client_id, None)).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    let (_, challenge) = pkce();
    let resp = flow
        .get(&AuthRequest::new(&client_id, Some(&challenge)))
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn scope_outside_the_client_registration_is_invalid_scope() {
    let flow = Flow::new(Role::Admin, "requests:read", false).await;
    for scope in ["requests:write", "requests:read admin", "no-such-scope"] {
        let req = AuthRequest::new(&flow.client_id, None).with("scope", Some(scope));
        let resp = flow.get(&req).await;
        assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_scope");
    }
}

#[tokio::test]
async fn agent_cannot_grant_admin_and_the_page_says_it_is_left_out() {
    let flow = Flow::new(Role::Agent, "requests:read admin", false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some("requests:read admin"));
    let html = flow.consent_page(&req).await;
    let (granted, left_out) = html.split_once("id=\"left-out\"").expect("left-out list");
    assert!(granted.contains(r#"data-scope="requests:read""#));
    assert!(!granted.contains(r#"data-scope="admin""#));
    assert!(left_out.contains(r#"data-scope="admin""#));

    let code = flow.code(&req).await;
    let scopes = flow
        .app
        .with_conn(move |conn| {
            AuthorizationCodeRow::find(conn, &tokens::hash_secret(&code))
                .unwrap()
                .unwrap()
                .scopes
        })
        .await;
    assert_eq!(scopes, "requests:read");
}

#[tokio::test]
async fn agent_requesting_only_scopes_it_cannot_grant_gets_invalid_scope() {
    let flow = Flow::new(Role::Agent, "admin users:write", false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some("admin users:write"));
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_scope");
}

#[tokio::test]
async fn admin_may_grant_admin() {
    let flow = Flow::new(Role::Admin, "requests:read admin", false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some("admin"));
    let html = flow.consent_page(&req).await;
    assert!(html.contains(r#"data-scope="admin""#));
    assert!(!html.contains("id=\"left-out\""));
}

#[tokio::test]
async fn remembered_consent_skips_the_page_unless_prompt_consent() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some(SCOPE));
    flow.code(&req).await;

    // Same or fewer scopes: straight back with a code.
    for scope in [SCOPE, "requests:read"] {
        let resp = flow.get(&req.clone().with("scope", Some(scope))).await;
        assert_eq!(resp.status(), 302, "{scope}");
        assert!(param(&location(&resp), "code").is_some());
    }
    // prompt=consent asks again.
    let resp = flow.get(&req.clone().with("prompt", Some("consent"))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn consent_for_more_scopes_than_remembered_shows_the_page() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    flow.code(&req).await; // requests:read only
    let resp = flow.get(&req.with("scope", Some(SCOPE))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn prompt_none_signed_out_is_login_required() {
    let app = spawn_app().await;
    let (client_id, _) = app
        .create_client(SCOPE, &["authorization_code"], false)
        .await;
    let req = AuthRequest::new(&client_id, None).with("prompt", Some("none"));
    let resp = app.get(&req.path()).await;
    assert_error_redirect(&resp, &app.settings.issuer, "login_required");
}

#[tokio::test]
async fn prompt_none_without_remembered_consent_is_consent_required() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    let resp = flow.get(&req.clone().with("prompt", Some("none"))).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "consent_required");
    // Once approved, prompt=none succeeds silently.
    flow.code(&req).await;
    let resp = flow.get(&req.with("prompt", Some("none"))).await;
    assert_eq!(resp.status(), 302);
    assert!(param(&location(&resp), "code").is_some());
}

#[tokio::test]
async fn consent_form_without_a_valid_csrf_token_is_403() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    flow.consent_page(&req).await;
    for token in ["", "forged"] {
        let resp = flow.post_decision(&req, token, "approve").await;
        assert_eq!(resp.status(), 403);
    }
}

#[tokio::test]
async fn consent_token_is_bound_to_the_request_so_nothing_can_be_altered() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let req = AuthRequest::new(&flow.client_id, None);
    let html = flow.consent_page(&req).await;
    let token = hidden_input(&html, "csrf_token").unwrap();
    let (_, challenge) = pkce();
    for altered in [
        req.clone().with("scope", Some(SCOPE)),
        req.clone().with("state", Some("other")),
        req.clone()
            .with("redirect_uri", Some("http://127.0.0.1/cb")),
        req.clone()
            .with("code_challenge", Some(&challenge))
            .with("code_challenge_method", Some("S256")),
    ] {
        let resp = flow.post_decision(&altered, &token, "approve").await;
        assert_eq!(resp.status(), 403, "{}", altered.path());
    }
    // The token of another browser session does not work either.
    let other = crate::helpers::new_client();
    flow.app
        .login_with(&other, &flow.email, PASSWORD, "/")
        .await;
    let resp = other
        .post(flow.app.url(&req.path()))
        .form(&[("csrf_token", token.as_str()), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The untouched request still goes through.
    let resp = flow.post_decision(&req, &token, "approve").await;
    assert_eq!(resp.status(), 302);
}

#[tokio::test]
async fn codes_are_256_bit_stored_hashed_and_live_60_seconds() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (_, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    // dzc_ + 43 base64url characters = 256 bits.
    assert_eq!(code.len(), 4 + 43);
    let client_id = flow.client_id.clone();
    let user_id = flow.user_id.clone();
    let rows: Vec<AuthorizationCodeRow> = flow
        .app
        .with_conn(|conn| {
            authorization_codes::table
                .select(AuthorizationCodeRow::as_select())
                .load(conn)
                .unwrap()
        })
        .await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, tokens::hash_secret(&code));
    assert_ne!(row.id, code);
    assert_eq!((row.expires_at - row.created_at).num_seconds(), 60);
    assert_eq!(row.client_id, client_id);
    assert_eq!(row.user_id, user_id);
    assert_eq!(row.redirect_uri, REDIRECT);
    assert_eq!(row.code_challenge.as_deref(), Some(challenge.as_str()));
    assert_eq!(row.code_challenge_method.as_deref(), Some("S256"));
}

#[tokio::test]
async fn client_not_registered_for_the_code_grant_is_unauthorized_client() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (client_id, _) = flow
        .app
        .create_client(SCOPE, &["client_credentials"], false)
        .await;
    let resp = flow.get(&AuthRequest::new(&client_id, None)).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "unauthorized_client");
}

#[tokio::test]
async fn repeated_parameters_are_refused_never_silently_dropped() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let (_, challenge) = pkce();
    let base = AuthRequest::new(&flow.client_id, Some(&challenge));
    // Identity of the client or its redirect URI in doubt: the HTML page.
    for key in ["client_id", "redirect_uri"] {
        let mut req = base.clone();
        let value = req.params.iter().find(|(k, _)| k == key).unwrap().1.clone();
        req.params.push((key.to_owned(), value));
        let resp = flow.get(&req).await;
        assert_eq!(resp.status(), 400, "{key}");
        assert!(resp.headers().get("location").is_none());
    }
    // Anything else: invalid_request to the validated redirect URI (a
    // repeated code_challenge must not turn into "no PKCE").
    for (key, value) in [
        ("code_challenge", challenge.as_str()),
        ("scope", "requests:read"),
        ("prompt", "none"),
        ("response_type", "code"),
    ] {
        let mut req = base.clone().with(key, Some(value));
        req.params.push((key.to_owned(), value.to_owned()));
        let resp = flow.get(&req).await;
        assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
    }
}

#[tokio::test]
async fn empty_parameters_count_as_omitted_and_response_type_is_required() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    // RFC 6749 3.1: scope= is no scope, so the client's registered scopes.
    let req = AuthRequest::new(&flow.client_id, None).with("scope", Some(""));
    let html = flow.consent_page(&req).await;
    assert!(html.contains(r#"data-scope="requests:write""#));

    let req = AuthRequest::new(&flow.client_id, None).with("response_type", None);
    let resp = flow.get(&req).await;
    assert_error_redirect(&resp, &flow.app.settings.issuer, "invalid_request");
}

#[tokio::test]
async fn the_clients_own_redirect_query_is_kept_verbatim() {
    let flow = Flow::new(Role::Agent, SCOPE, false).await;
    let redirect = "https://app.example/cb?tenant=a%20b&flag";
    let (client_id, _) = flow
        .app
        .register_client(ClientRequest {
            name: "Query App".into(),
            redirect_uris: vec![redirect.into()],
            scope: SCOPE.into(),
            public: false,
            grant_types: vec!["authorization_code".into()],
            require_pkce: false,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    let req = AuthRequest::new(&client_id, None).with("redirect_uri", Some(redirect));
    let resp = flow.decide(&req, "approve").await;
    assert_eq!(resp.status(), 302);
    let loc = location(&resp);
    assert!(loc.starts_with(&format!("{redirect}&code=dzc_")), "{loc}");
    assert!(loc.ends_with("&iss=http%3A%2F%2F127.0.0.1"), "{loc}");
}

#[tokio::test]
async fn every_redirected_error_says_why_without_echoing_the_request() {
    // RFC 6749 4.1.2.1: error_description, so a developer need not guess.
    let public = Flow::new(Role::Agent, SCOPE, true).await;
    let issuer = public.app.settings.issuer.clone();
    let (verifier, challenge) = pkce();
    let with_challenge = AuthRequest::new(&public.client_id, Some(&challenge));
    let hostile = "<script>alert(1)</script>";
    let cases = [
        (
            AuthRequest::new(&public.client_id, None),
            "invalid_request",
            "code_challenge is required",
        ),
        (
            with_challenge
                .clone()
                .with("code_challenge_method", Some("plain")),
            "invalid_request",
            "must be S256",
        ),
        (
            with_challenge.clone().with("code_challenge_method", None),
            "invalid_request",
            "plain, is not accepted",
        ),
        (
            with_challenge.clone().with("code_challenge", Some(hostile)),
            "invalid_request",
            "43 characters",
        ),
        (
            with_challenge
                .clone()
                .with("code_challenge", Some(&verifier[..20])),
            "invalid_request",
            "43 characters",
        ),
        (
            with_challenge.clone().with("response_type", Some("token")),
            "unsupported_response_type",
            "response_type=code",
        ),
        (
            with_challenge.clone().with("scope", Some("no-such-scope")),
            "invalid_scope",
            "scope",
        ),
    ];
    for (req, error, why) in cases {
        let resp = public.get(&req).await;
        assert_error_redirect(&resp, &issuer, error);
        let loc = location(&resp);
        let description = param(&loc, "error_description").unwrap();
        assert!(description.contains(why), "{description}");
        assert!(!description.contains('<'), "{description}");
    }
}

#[tokio::test]
async fn redirect_uri_is_optional_for_a_client_with_one_registered_uri() {
    // RFC 6749 3.1.2.3: optional with exactly one registered URI, which the
    // code goes to; the token request then needs none (4.1.3).
    let mut flow = Flow::new(Role::Agent, SCOPE, true).await;
    let several = flow.client_id.clone();
    let (one, _) = flow
        .app
        .register_client(ClientRequest {
            name: "One".into(),
            redirect_uris: vec![REDIRECT.into()],
            scope: SCOPE.into(),
            public: true,
            grant_types: vec!["authorization_code".into()],
            require_pkce: true,
            introspect: false,
            cors_origins: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            require_par: false,
        })
        .await;
    flow.client_id = one;
    let flow = flow;
    let exchange = |code: String, verifier: String, redirect: Option<&'static str>| {
        let flow = &flow;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("code_verifier", verifier),
            ];
            if let Some(r) = redirect {
                form.push(("redirect_uri", r.to_owned()));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            flow.token(&form).await
        }
    };
    for (sent_at_token, status) in [
        (None, 200),
        (Some(REDIRECT), 200),
        (Some("https://app.example/other"), 400),
    ] {
        let (verifier, challenge) = pkce();
        let req = AuthRequest::new(&flow.client_id, Some(&challenge)).with("redirect_uri", None);
        let first = flow.get(&req).await;
        let code = if first.status() == 302 {
            let loc = location(&first);
            assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
            param(&loc, "code").unwrap()
        } else {
            let html = first.text().await.unwrap();
            let token = hidden_input(&html, "csrf_token").unwrap_or_else(|| panic!("{html}"));
            let resp = flow.post_decision(&req, &token, "approve").await;
            let loc = location(&resp);
            assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
            param(&loc, "code").unwrap()
        };
        let resp = exchange(code, verifier, sent_at_token).await;
        assert_eq!(resp.status(), status, "{sent_at_token:?}");
    }
    // A code asked for with a redirect_uri needs it at the token endpoint.
    let (verifier, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    assert_eq!(exchange(code, verifier, None).await.status(), 400);

    // Several registered URIs: it is required, and the page says so.
    let (_, challenge) = pkce();
    let req = AuthRequest::new(&several, Some(&challenge)).with("redirect_uri", None);
    let resp = flow.get(&req).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("redirect_uri is required"), "{page}");
}
