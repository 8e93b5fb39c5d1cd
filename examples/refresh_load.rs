//! Load driver for the refresh_token grant (used by `bench/run.sh`).
//!
//! Every refresh request needs a refresh token never used before, so `oha`
//! cannot drive it. This driver first runs the real authorization-code flow
//! over HTTP once per connection (sign in, consent, code exchange with PKCE),
//! then each connection refreshes in a loop, always presenting the token the
//! previous response returned (rotation). Prints one line:
//! `scenario=refresh rps=... p50_ms=... p99_ms=... non2xx=... requests=...`.
//!
//! cargo run --release --example refresh_load -- BASE CLIENT_ID CLIENT_SECRET EMAIL PASSWORD [CONNS] [SECONDS]
//! (the password is read from the environment variable named by PASSWORD if
//! it starts with `env:`).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Runs the authorization-code flow once per connection; returns the
/// refresh tokens.
async fn seed(cfg: &Config) -> Result<Vec<String>, BoxError> {
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
    let redirect = "http://127.0.0.1/cb";
    let mut tokens = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &cfg.client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", "requests:read")
            .append_pair("state", &format!("s{i}"))
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let url = format!("{}/oauth/authorize?{query}", cfg.base);
        let mut resp = browser.get(&url).send().await?;
        if resp.status() == 200 {
            // First time: approve on the consent page (remembered after).
            let page = resp.text().await?;
            let csrf = hidden_input(&page, "csrf_token").ok_or("no consent form")?;
            resp = browser
                .post(&url)
                .form(&[("csrf_token", csrf.as_str()), ("decision", "approve")])
                .send()
                .await?;
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("authorize did not redirect")?;
        let code = query_param(location, "code").ok_or("no code in the redirect")?;
        let body: serde_json::Value = browser
            .post(format!("{}/oauth/token", cfg.base))
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?
            .json()
            .await?;
        let refresh = body["refresh_token"]
            .as_str()
            .ok_or("no refresh_token in the code exchange")?;
        tokens.push(refresh.to_owned());
    }
    Ok(tokens)
}

struct WorkerResult {
    latencies: Vec<Duration>,
    failures: usize,
}

/// One keep-alive connection refreshing its own token chain until `until`.
async fn worker(cfg: &Config, mut token: String, until: Instant) -> WorkerResult {
    let mut result = WorkerResult {
        latencies: Vec::new(),
        failures: 0,
    };
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
    let cfg = config()?;
    let tokens = seed(&cfg).await?;
    let cfg = std::sync::Arc::new(cfg);
    let started = Instant::now();
    let until = started + cfg.duration;
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let cfg = cfg.clone();
            tokio::spawn(async move { worker(&cfg, t, until).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for h in handles {
        let r = h.await?;
        latencies.extend(r.latencies);
        failures += r.failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "scenario=refresh rps={:.0} p50_ms={:.2} p99_ms={:.2} non2xx={} requests={}",
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        failures,
        latencies.len()
    );
    Ok(())
}
