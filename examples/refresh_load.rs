//! Load driver for the refresh_token grant and for whole authorization-code
//! round trips (used by `bench/run.sh`).
//!
//! Every refresh request needs a refresh token never used before, so `oha`
//! cannot drive it. This driver first runs the real authorization-code flow
//! over HTTP once per connection (sign in, consent, code exchange with PKCE),
//! then each connection refreshes in a loop, always presenting the token the
//! previous response returned (rotation). Prints one line:
//! `scenario=refresh rps=... p50_ms=... p99_ms=... non2xx=... requests=...`.
//!
//! With the environment variable `FLOW_SCOPE` set (e.g. `requests:read` or
//! `openid requests:read`), it measures authorization-code round trips
//! instead: each connection is a browser of its own (cookie store) that
//! signs in once and approves the consent for that scope once (remembered
//! after), then loops: `GET /oauth/authorize` (a fresh state and PKCE
//! challenge, and a nonce when the scope has `openid`) answered by a 302
//! carrying a code, then the code exchange at `POST /oauth/token` (HTTP
//! Basic, the verifier) answered by 200, with an `id_token` when `openid`.
//! Both steps make one round trip; rps counts round trips, and one whose
//! step answered otherwise counts in non2xx. Prints one line:
//! `scenario=flow rps=...` (`scenario=flow_openid` when the scope has
//! `openid`), with the fields above.
//!
//! With the environment variable `LOGINS=1`, it measures sign-ins instead:
//! each connection loops a real browser sign-in as a fresh browser (no
//! cookie kept from the last one): `GET /login` (a pre-session cookie and the
//! CSRF token of the form), then `POST /login` with the right password,
//! answered by a 303 that sets the session cookie. rps counts sign-ins, the
//! latencies are those of both requests, and a sign-in answered otherwise
//! counts in non2xx (its statuses are listed in `failed=`). Every connection
//! comes from an address of its own when BASE is on loopback (127.1.0.x;
//! `LOGINS_ONE_ADDRESS=1` keeps them all on one): the sign-in throttle
//! reserves a failure per (account, address) and per address before the
//! password is checked, so 32 concurrent sign-ins from one address measure
//! its locks, not argon2. Prints one line: `scenario=logins rps=...` with
//! the fields above.
//!
//! cargo run --release --example refresh_load -- BASE CLIENT_ID CLIENT_SECRET EMAIL PASSWORD [CONNS] [SECONDS]
//! (the password is read from the environment variable named by PASSWORD if
//! it starts with `env:`). The client must have the redirect URI
//! `http://127.0.0.1/cb` and the scopes asked for.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The redirect URI the bench client is registered with.
const REDIRECT_URI: &str = "http://127.0.0.1/cb";
/// What the refresh scenario's tokens are granted.
const REFRESH_SCOPE: &str = "requests:read";

struct Config {
    base: String,
    client_id: String,
    client_secret: String,
    email: String,
    password: String,
    conns: usize,
    duration: Duration,
}

fn config() -> Result<Config, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: refresh_load BASE CLIENT_ID CLIENT_SECRET EMAIL PASSWORD [CONNS] [SECONDS]"
                .into(),
        );
    }
    let password = match args[4].strip_prefix("env:") {
        Some(var) => std::env::var(var)?,
        None => args[4].clone(),
    };
    Ok(Config {
        base: args[0].trim_end_matches('/').to_owned(),
        client_id: args[1].clone(),
        client_secret: args[2].clone(),
        email: args[3].clone(),
        password,
        conns: args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(32),
        duration: Duration::from_secs(args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(10)),
    })
}

fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

fn query_param(location: &str, key: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A fresh PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn wants_openid(scope: &str) -> bool {
    scope.split_whitespace().any(|s| s == "openid")
}

/// An authorization request for `scope` with a fresh state (and nonce, for
/// OpenID Connect).
fn authorize_url(cfg: &Config, scope: &str, challenge: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", scope)
        .append_pair("state", &random_hex())
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    if wants_openid(scope) {
        query.append_pair("nonce", &random_hex());
    }
    format!("{}/oauth/authorize?{}", cfg.base, query.finish())
}

/// The code of an authorization response: a 302 to the redirect URI.
fn code_of(resp: &reqwest::Response) -> Result<String, BoxError> {
    if resp.status() != 302 {
        return Err(format!("authorize answered {}", resp.status()).into());
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("authorize did not redirect")?;
    query_param(location, "code").ok_or_else(|| "no code in the redirect".into())
}

/// A browser of its own (cookie store, redirects not followed), signed in
/// as the configured user.
async fn sign_in(cfg: &Config) -> Result<reqwest::Client, BoxError> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = browser
        .get(format!("{}/login", cfg.base))
        .send()
        .await?
        .text()
        .await?;
    let csrf = hidden_input(&login, "csrf_token").ok_or("no CSRF token on /login")?;
    let resp = browser
        .post(format!("{}/login", cfg.base))
        .form(&[
            ("email", cfg.email.as_str()),
            ("password", cfg.password.as_str()),
            ("next", "/"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await?;
    if resp.status() != 303 || resp.headers().get("set-cookie").is_none() {
        return Err("sign-in failed".into());
    }
    Ok(browser)
}

/// Approves `scope` on the consent page if it is shown (the first time the
/// user meets the client with these scopes); after that the consent is
/// remembered and authorization requests are answered at once. The code of
/// this request is left unused.
async fn approve_once(
    browser: &reqwest::Client,
    cfg: &Config,
    scope: &str,
) -> Result<(), BoxError> {
    let (_, challenge) = pkce();
    let url = authorize_url(cfg, scope, &challenge);
    let mut resp = browser.get(&url).send().await?;
    if resp.status() == 200 {
        let page = resp.text().await?;
        let csrf = hidden_input(&page, "csrf_token").ok_or("no consent form")?;
        resp = browser
            .post(&url)
            .form(&[("csrf_token", csrf.as_str()), ("decision", "approve")])
            .send()
            .await?;
    }
    code_of(&resp).map(drop)
}

/// One authorization-code round trip of a signed-in browser whose consent
/// to `scope` is remembered: authorize (a 302 with a code), then the code
/// exchange with PKCE (a 200, with an ID token for `openid`). Returns the
/// token response.
async fn round_trip(
    browser: &reqwest::Client,
    cfg: &Config,
    scope: &str,
) -> Result<serde_json::Value, BoxError> {
    let (verifier, challenge) = pkce();
    let resp = browser
        .get(authorize_url(cfg, scope, &challenge))
        .send()
        .await?;
    let code = code_of(&resp);
    // Read to the end, so that the keep-alive connection is reused.
    resp.bytes().await?;
    let code = code?;
    let resp = browser
        .post(format!("{}/oauth/token", cfg.base))
        .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?;
    if resp.status() != 200 {
        return Err(format!("the code exchange answered {}", resp.status()).into());
    }
    let body: serde_json::Value = resp.json().await?;
    if wants_openid(scope) && body["id_token"].as_str().is_none() {
        return Err("no id_token in the code exchange".into());
    }
    Ok(body)
}

/// Runs the authorization-code flow once per connection (one browser,
/// consent approved once); returns the refresh tokens.
async fn seed(cfg: &Config) -> Result<Vec<String>, BoxError> {
    let browser = sign_in(cfg).await?;
    approve_once(&browser, cfg, REFRESH_SCOPE).await?;
    let mut tokens = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        let body = round_trip(&browser, cfg, REFRESH_SCOPE).await?;
        let refresh = body["refresh_token"]
            .as_str()
            .ok_or("no refresh_token in the code exchange")?;
        tokens.push(refresh.to_owned());
    }
    Ok(tokens)
}

/// One browser per connection (a session belongs to a browser), each
/// signed in and having approved `scope`. One after another: a sign-in
/// costs an argon2 hash, and parallel ones would only queue on it.
async fn sign_in_browsers(cfg: &Config, scope: &str) -> Result<Vec<reqwest::Client>, BoxError> {
    let mut browsers = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        let browser = sign_in(cfg).await?;
        approve_once(&browser, cfg, scope).await?;
        browsers.push(browser);
    }
    Ok(browsers)
}

#[derive(Default)]
struct WorkerResult {
    latencies: Vec<Duration>,
    failures: usize,
    /// Why they failed: an HTTP status, or 0 for no answer (logins only).
    failed: BTreeMap<u16, usize>,
}

/// The `name=value` pairs of a response's `Set-Cookie` headers, as a
/// `Cookie` header.
fn cookies_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One browser sign-in of a fresh browser: `GET /login`, then `POST /login`
/// with its pre-session cookie and CSRF token. Ok for a 303 that sets a
/// cookie; else the status (0: no answer).
async fn sign_in_once(http: &reqwest::Client, cfg: &Config) -> Result<(), u16> {
    let url = format!("{}/login", cfg.base);
    let status = |e: reqwest::Error| e.status().map_or(0, |s| s.as_u16());
    let resp = http.get(&url).send().await.map_err(status)?;
    if resp.status() != 200 {
        let code = resp.status().as_u16();
        resp.bytes().await.map_err(status)?;
        return Err(code);
    }
    let cookie = cookies_of(&resp);
    let page = resp.text().await.map_err(status)?;
    let csrf = hidden_input(&page, "csrf_token").ok_or(200u16)?;
    let resp = http
        .post(&url)
        .header("cookie", cookie)
        .form(&[
            ("email", cfg.email.as_str()),
            ("password", cfg.password.as_str()),
            ("next", "/"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .map_err(status)?;
    let code = resp.status().as_u16();
    let signed_in = code == 303 && resp.headers().get("set-cookie").is_some();
    // Read to the end, so that the keep-alive connection is reused.
    resp.bytes().await.map_err(status)?;
    if signed_in {
        Ok(())
    } else {
        Err(code)
    }
}

/// Connection `i`'s own source address on loopback (127.1.0.1, ...), so
/// that the sign-in throttle sees one address per connection, as with
/// people signing in from their own machines. None off loopback, or with
/// `LOGINS_ONE_ADDRESS=1`.
fn login_address(cfg: &Config, i: usize) -> Option<IpAddr> {
    let host = url::Url::parse(&cfg.base).ok()?.host_str()?.to_owned();
    let loopback = host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback());
    let one = std::env::var("LOGINS_ONE_ADDRESS").is_ok_and(|v| v == "1");
    if !loopback || one {
        return None;
    }
    let [hi, lo] = u16::try_from(i % 65_000 + 1).ok()?.to_be_bytes();
    Some(IpAddr::V4(Ipv4Addr::new(127, 1, hi, lo)))
}

/// One connection signing in again and again until `until`, as a fresh
/// browser each time (cookies are not kept), on one keep-alive connection.
async fn login_worker(cfg: &Config, address: Option<IpAddr>, until: Instant) -> WorkerResult {
    let mut result = WorkerResult::default();
    let Ok(http) = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1)
        .local_address(address)
        .build()
    else {
        result.failures += 1;
        return result;
    };
    while Instant::now() < until {
        let started = Instant::now();
        match sign_in_once(&http, cfg).await {
            Ok(()) => result.latencies.push(started.elapsed()),
            Err(code) => {
                result.failures += 1;
                *result.failed.entry(code).or_default() += 1;
            }
        }
    }
    result
}

/// One keep-alive connection refreshing its own token chain until `until`.
async fn refresh_worker(cfg: &Config, mut token: String, until: Instant) -> WorkerResult {
    let mut result = WorkerResult::default();
    let Ok(http) = reqwest::Client::builder().pool_max_idle_per_host(1).build() else {
        result.failures += 1;
        return result;
    };
    let url = format!("{}/oauth/token", cfg.base);
    while Instant::now() < until {
        let started = Instant::now();
        let sent = http
            .post(&url)
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
            .send()
            .await;
        let next = match sent {
            Ok(resp) if resp.status().is_success() => resp
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| b["refresh_token"].as_str().map(str::to_owned)),
            _ => None,
        };
        match next {
            Some(next) => {
                result.latencies.push(started.elapsed());
                token = next;
            }
            None => {
                // The chain is broken (a rotated token cannot be retried).
                result.failures += 1;
                break;
            }
        }
    }
    result
}

/// One signed-in browser running authorization-code round trips until
/// `until`. A failed round trip is counted and the next one starts.
async fn flow_worker(
    cfg: &Config,
    scope: &str,
    browser: reqwest::Client,
    until: Instant,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    while Instant::now() < until {
        let started = Instant::now();
        match round_trip(&browser, cfg, scope).await {
            Ok(_) => result.latencies.push(started.elapsed()),
            Err(_) => result.failures += 1,
        }
    }
    result
}

/// Starts one worker per connection at once, all stopping after
/// `duration`; returns their results together and the seconds they ran.
async fn run_all<S, F, Fut>(
    conns: Vec<S>,
    duration: Duration,
    work: F,
) -> Result<(WorkerResult, f64), BoxError>
where
    F: Fn(S, Instant) -> Fut,
    Fut: Future<Output = WorkerResult> + Send + 'static,
{
    let started = Instant::now();
    let until = started + duration;
    let handles: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(work(conn, until)))
        .collect();
    let mut total = WorkerResult::default();
    for h in handles {
        let r = h.await?;
        total.latencies.extend(r.latencies);
        total.failures += r.failures;
        for (code, n) in r.failed {
            *total.failed.entry(code).or_default() += n;
        }
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // reqwest's rustls is built without a provider of its own (the tests'
    // TLS client brings aws-lc-rs): install it before any client is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = Arc::new(config()?);
    let flow_scope = std::env::var("FLOW_SCOPE")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let logins = std::env::var("LOGINS").is_ok_and(|v| v == "1");
    let (scenario, result, elapsed) = match flow_scope {
        None if logins => {
            let addresses: Vec<_> = (0..cfg.conns).map(|i| login_address(&cfg, i)).collect();
            let (result, elapsed) = run_all(addresses, cfg.duration, |address, until| {
                let cfg = cfg.clone();
                async move { login_worker(&cfg, address, until).await }
            })
            .await?;
            ("logins", result, elapsed)
        }
        None => {
            let tokens = seed(&cfg).await?;
            let (result, elapsed) = run_all(tokens, cfg.duration, |token, until| {
                let cfg = cfg.clone();
                async move { refresh_worker(&cfg, token, until).await }
            })
            .await?;
            ("refresh", result, elapsed)
        }
        Some(scope) => {
            let browsers = sign_in_browsers(&cfg, &scope).await?;
            let (result, elapsed) = run_all(browsers, cfg.duration, |browser, until| {
                let (cfg, scope) = (cfg.clone(), scope.clone());
                async move { flow_worker(&cfg, &scope, browser, until).await }
            })
            .await?;
            let scenario = if wants_openid(&scope) {
                "flow_openid"
            } else {
                "flow"
            };
            (scenario, result, elapsed)
        }
    };
    let WorkerResult {
        mut latencies,
        failures,
        failed,
    } = result;
    latencies.sort_unstable();
    // Statuses of the failed sign-ins (logins only; 0: no answer).
    let failed = if scenario == "logins" {
        let list: Vec<String> = failed.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        format!(" failed={{{}}}", list.join(","))
    } else {
        String::new()
    };
    println!(
        "scenario={scenario} rps={:.prec$} p50_ms={:.2} p99_ms={:.2} non2xx={} requests={}{failed}",
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        failures,
        latencies.len(),
        // Sign-ins are tens per second: one decimal.
        prec = usize::from(scenario == "logins"),
    );
    Ok(())
}
