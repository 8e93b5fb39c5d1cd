//! The steps of the authorization-code flow that the authorize, code and
//! refresh tests share: a signed-in browser, a registered client, the consent
//! form, the token requests.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use dzdesk_auth::domain::Role;
use reqwest::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{hidden_input, location, spawn_app, TestApp, PASSWORD};

pub const REDIRECT: &str = "https://app.example/cb";
pub const STATE: &str = "st-4242";

/// A fresh PKCE pair (RFC 7636 4.1, 4.2): a 64-character verifier and its
/// S256 challenge.
pub fn pkce() -> (String, String) {
    let bytes: [u8; 48] = rand::random();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// One authorization request's parameters.
#[derive(Clone)]
pub struct AuthRequest {
    pub params: Vec<(String, String)>,
}

impl AuthRequest {
    /// `response_type=code`, the test redirect URI, `requests:read`, a state
    /// and, when given, an S256 challenge.
    pub fn new(client_id: &str, challenge: Option<&str>) -> Self {
        let mut params = vec![
            ("response_type".to_owned(), "code".to_owned()),
            ("client_id".to_owned(), client_id.to_owned()),
            ("redirect_uri".to_owned(), REDIRECT.to_owned()),
            ("scope".to_owned(), "requests:read".to_owned()),
            ("state".to_owned(), STATE.to_owned()),
        ];
        if let Some(c) = challenge {
            params.push(("code_challenge".to_owned(), c.to_owned()));
            params.push(("code_challenge_method".to_owned(), "S256".to_owned()));
        }
        Self { params }
    }

    /// Sets (or with `None` removes) a parameter.
    pub fn with(mut self, key: &str, value: Option<&str>) -> Self {
        self.params.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.params.push((key.to_owned(), v.to_owned()));
        }
        self
    }

    pub fn path(&self) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.params)
            .finish();
        format!("/oauth/authorize?{query}")
    }
}

/// A query parameter of a redirect's Location.
pub fn param(location: &str, key: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Asserts an error redirect to the client (RFC 6749 4.1.2.1, RFC 9207).
pub fn assert_error_redirect(resp: &Response, issuer: &str, error: &str) {
    assert_eq!(
        resp.status(),
        302,
        "expected a redirect, got {}",
        resp.status()
    );
    let loc = location(resp);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some(error), "{loc}");
    assert_eq!(param(&loc, "state").as_deref(), Some(STATE), "{loc}");
    assert_eq!(param(&loc, "iss").as_deref(), Some(issuer), "{loc}");
    assert!(param(&loc, "code").is_none(), "{loc}");
    // RFC 6749 4.1.2.1: every error says why, in printable ASCII.
    let description = param(&loc, "error_description").unwrap_or_default();
    assert!(
        !description.is_empty() && description.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "{loc}"
    );
}

/// A running app, a signed-in user and one registered client.
pub struct Flow {
    pub app: TestApp,
    pub user_id: String,
    pub email: String,
    pub client_id: String,
    pub secret: Option<String>,
}

impl Flow {
    /// A signed-in user of `role` and a client registered for `scope`.
    pub async fn new(role: Role, scope: &str, public: bool) -> Flow {
        let app = spawn_app().await;
        Self::on(app, role, scope, public).await
    }

    pub async fn on(app: TestApp, role: Role, scope: &str, public: bool) -> Flow {
        let email = format!("{}@example.com", role.as_str());
        let user_id = app.create_user(&email, role).await;
        let resp = app.login(&email, PASSWORD, "/").await;
        assert_eq!(resp.status(), 303);
        let (client_id, secret) = app
            .create_client(scope, &["authorization_code", "refresh_token"], public)
            .await;
        Flow {
            app,
            user_id,
            email,
            client_id,
            secret,
        }
    }

    pub async fn get(&self, req: &AuthRequest) -> Response {
        self.app.get(&req.path()).await
    }

    /// The consent page of `req` (asserts it is shown).
    pub async fn consent_page(&self, req: &AuthRequest) -> String {
        let resp = self.get(req).await;
        assert_eq!(resp.status(), 200, "no consent page: {}", location(&resp));
        resp.text().await.unwrap()
    }

    /// Shows the consent page, then submits `decision` with its CSRF token.
    pub async fn decide(&self, req: &AuthRequest, decision: &str) -> Response {
        let html = self.consent_page(req).await;
        let token = hidden_input(&html, "csrf_token").expect("csrf token");
        self.post_decision(req, &token, decision).await
    }

    pub async fn post_decision(&self, req: &AuthRequest, token: &str, decision: &str) -> Response {
        self.app
            .post_form(
                &req.path(),
                &[("csrf_token", token), ("decision", decision)],
            )
            .await
    }

    /// Approves `req` (or finds the consent remembered) and returns the code
    /// from the redirect.
    pub async fn code(&self, req: &AuthRequest) -> String {
        let first = self.get(req).await;
        if first.status() == 302 {
            return param(&location(&first), "code").expect("code in redirect");
        }
        let html = first.text().await.unwrap();
        let token = hidden_input(&html, "csrf_token").expect("csrf token");
        let resp = self.post_decision(req, &token, "approve").await;
        assert_eq!(resp.status(), 302);
        param(&location(&resp), "code").expect("code in redirect")
    }

    /// A token request authenticated as this flow's client (Basic for a
    /// confidential client, client_id for a public one).
    pub async fn token(&self, form: &[(&str, &str)]) -> Response {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.app.client.post(self.app.url("/oauth/token"));
        match &self.secret {
            Some(secret) => {
                let basic = STANDARD.encode(format!("{}:{}", self.client_id, secret));
                req = req.header("authorization", format!("Basic {basic}"));
            }
            None => form.push(("client_id", &self.client_id)),
        }
        req.form(&form).send().await.unwrap()
    }

    pub async fn exchange(&self, code: &str, verifier: Option<&str>) -> Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        self.token(&form).await
    }

    pub async fn refresh(&self, refresh_token: &str, scope: Option<&str>) -> Response {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.token(&form).await
    }

    /// A fresh access token for `scope` (the whole flow).
    pub async fn access_token(&self, scope: &str) -> String {
        self.tokens(scope).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The whole flow with PKCE: (token response body).
    pub async fn tokens(&self, scope: &str) -> Value {
        let (verifier, challenge) = pkce();
        let req = AuthRequest::new(&self.client_id, Some(&challenge)).with("scope", Some(scope));
        let code = self.code(&req).await;
        let resp = self.exchange(&code, Some(&verifier)).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// Asserts an RFC 6749 5.2 error body with no-store.
pub async fn assert_token_error(resp: Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
}

/// Runs the requests concurrently and asserts exactly one succeeds and the
/// others fail with 400 (single use under concurrency).
pub async fn assert_exactly_one_success<F>(attempts: impl IntoIterator<Item = F>)
where
    F: std::future::Future<Output = Response>,
{
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 400),
        "{statuses:?}"
    );
}
