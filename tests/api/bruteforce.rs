//! Brute-force throttling at sign-in and at client authentication, over
//! real HTTP from real source addresses (127.0.0.1 and 127.0.0.2), or from
//! many addresses behind a trusted proxy.

use dzdesk_auth::domain::{Role, TrustedProxies};
use reqwest::redirect::Policy;
use reqwest::Response;
use serde_json::Value;

use crate::helpers::{hidden_input, spawn_app, spawn_app_custom, TestApp, PASSWORD};

const WRONG: &str = "not the password at all";
const LOCKED: &str = "Too many sign-in attempts. Try again later.";
const WRONG_PAGE: &str = "Wrong email or password.";

/// A browser (cookie jar) whose requests leave from `from`.
pub fn browser_from(from: &str) -> reqwest::Client {
    crate::helpers::client_builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// GET /login then POST it, optionally saying (through the trusted proxy)
/// which address the browser is at.
pub async fn sign_in(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let html = browser
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = hidden_input(&html, "csrf_token").unwrap();
    let mut req = browser.post(app.url("/login")).form(&[
        ("email", email),
        ("password", password),
        ("next", "/"),
        ("csrf_token", &token),
    ]);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

/// What a sign-in answer was: "ok" (signed in), "wrong", "locked".
pub async fn outcome(resp: Response) -> &'static str {
    match resp.status().as_u16() {
        303 => "ok",
        200 => {
            assert!(resp.text().await.unwrap().contains(WRONG_PAGE));
            "wrong"
        }
        429 => {
            assert!(resp.headers().contains_key("retry-after"));
            assert!(resp.text().await.unwrap().contains(LOCKED));
            "locked"
        }
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn five_failures_lock_the_pair_the_right_password_too_and_not_other_addresses() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let here = browser_from("127.0.0.1");
    for _ in 0..5 {
        assert_eq!(
            outcome(sign_in(&app, &here, "ann@example.com", WRONG, None).await).await,
            "wrong"
        );
    }
    let right = sign_in(&app, &here, "ann@example.com", PASSWORD, None).await;
    assert_eq!(
        outcome(right).await,
        "locked",
        "the right password is refused while locked"
    );
    // The same account from another address is not affected.
    let there = browser_from("127.0.0.2");
    assert_eq!(
        outcome(sign_in(&app, &there, "ann@example.com", PASSWORD, None).await).await,
        "ok"
    );
    // An unknown email is told the very same thing after as many guesses.
    for _ in 0..5 {
        assert_eq!(
            outcome(sign_in(&app, &here, "nobody@example.com", WRONG, None).await).await,
            "wrong"
        );
    }
    assert_eq!(
        outcome(sign_in(&app, &here, "nobody@example.com", WRONG, None).await).await,
        "locked"
    );
}

#[tokio::test]
async fn fifty_parallel_wrong_passwords_get_no_more_than_five_guesses() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let here = browser_from("127.0.0.1");
    // Fetch the form once: every attempt replays one pre-session and token.
    let html = here
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = hidden_input(&html, "csrf_token").unwrap();
    let attempts = (0..50).map(|_| {
        let (browser, url, token) = (here.clone(), app.url("/login"), token.clone());
        tokio::spawn(async move {
            let resp = browser
                .post(url)
                .form(&[
                    ("email", "ann@example.com"),
                    ("password", WRONG),
                    ("next", "/"),
                    ("csrf_token", &token),
                ])
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        })
    });
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    let guessed = statuses.iter().filter(|s| **s == 200).count();
    assert!(guessed <= 5, "{guessed} guesses got through: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 429, 503].contains(s)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_success_resets_its_pairs_count() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let here = browser_from("127.0.0.1");
    for _ in 0..4 {
        sign_in(&app, &here, "ann@example.com", WRONG, None).await;
    }
    assert_eq!(
        outcome(sign_in(&app, &here, "ann@example.com", PASSWORD, None).await).await,
        "ok"
    );
    let fresh = browser_from("127.0.0.1");
    for _ in 0..4 {
        assert_eq!(
            outcome(sign_in(&app, &fresh, "ann@example.com", WRONG, None).await).await,
            "wrong"
        );
    }
    assert_eq!(
        outcome(sign_in(&app, &fresh, "ann@example.com", PASSWORD, None).await).await,
        "ok"
    );
}

/// Twenty colleagues behind one address sign in at once: each reservation
/// is counted before any password is checked, so the address reaches its
/// limit of 20, but every guess was right, so nothing stays locked: all are
/// signed in, and so is a twenty-first just after.
pub async fn colleagues_signing_in_at_once_lock_nothing(app: &TestApp) {
    let mut people = Vec::new();
    for i in 0..20 {
        let email = format!("colleague{i}@example.com");
        app.create_user(&email, Role::Agent).await;
        people.push(email);
    }
    let outcomes = futures_util::future::join_all(people.iter().map(|email| async move {
        let browser = browser_from("127.0.0.1");
        outcome(sign_in(app, &browser, email, PASSWORD, None).await).await
    }))
    .await;
    assert!(outcomes.iter().all(|o| *o == "ok"), "{outcomes:?}");
    app.create_user("late@example.com", Role::Agent).await;
    let late = browser_from("127.0.0.1");
    assert_eq!(
        outcome(sign_in(app, &late, "late@example.com", PASSWORD, None).await).await,
        "ok"
    );
}

#[tokio::test]
async fn colleagues_signing_in_at_once_from_one_address_lock_nothing() {
    colleagues_signing_in_at_once_lock_nothing(&spawn_app().await).await;
}

#[tokio::test]
async fn twenty_failures_from_one_address_across_accounts_get_it_429() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let here = browser_from("127.0.0.1");
    for i in 0..20 {
        let email = format!("user{i}@example.com");
        assert_eq!(
            outcome(sign_in(&app, &here, &email, WRONG, None).await).await,
            "wrong",
            "{i}"
        );
    }
    let resp = sign_in(&app, &here, "ann@example.com", PASSWORD, None).await;
    assert_eq!(outcome(resp).await, "locked");
    let there = browser_from("127.0.0.2");
    assert_eq!(
        outcome(sign_in(&app, &there, "ann@example.com", PASSWORD, None).await).await,
        "ok"
    );
}

#[tokio::test]
async fn a_hundred_failures_from_many_addresses_lock_the_account_for_everyone() {
    let app = spawn_app_custom(
        |s| s.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap(),
        |_| {},
    )
    .await;
    app.create_user("ann@example.com", Role::Agent).await;
    let proxy = browser_from("127.0.0.1");
    for i in 0..100 {
        let from = format!("203.0.{}.{}", i / 200, i % 200 + 1);
        let got = outcome(sign_in(&app, &proxy, "ann@example.com", WRONG, Some(&from)).await).await;
        assert_eq!(got, "wrong", "{i} from {from}");
    }
    // Credential stuffing: now locked for every address, the owner's too.
    let got = outcome(
        sign_in(
            &app,
            &proxy,
            "ann@example.com",
            PASSWORD,
            Some("198.51.100.7"),
        )
        .await,
    )
    .await;
    assert_eq!(got, "locked");
    // Other accounts are not.
    app.create_user("bob@example.com", Role::Agent).await;
    let got = outcome(
        sign_in(
            &app,
            &proxy,
            "bob@example.com",
            PASSWORD,
            Some("198.51.100.7"),
        )
        .await,
    )
    .await;
    assert_eq!(got, "ok");
}

async fn token(app: &TestApp, from: &str, id: &str, secret: &str) -> Response {
    crate::helpers::client_builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn failed_client_authentication_locks_the_client_and_address_pair_only() {
    let app = spawn_app().await;
    let (id, secret) = app
        .create_client("requests:read", &["client_credentials"], false)
        .await;
    let secret = secret.unwrap();
    for _ in 0..5 {
        assert_eq!(
            token(&app, "127.0.0.1", &id, "dzs_wrong").await.status(),
            401
        );
    }
    let resp = token(&app, "127.0.0.1", &id, &secret).await;
    assert_eq!(
        resp.status(),
        429,
        "the right secret is refused too while locked"
    );
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body["error_description"].is_string());
    // Never locked for every address: a client_id is public.
    assert_eq!(token(&app, "127.0.0.2", &id, &secret).await.status(), 200);
}
