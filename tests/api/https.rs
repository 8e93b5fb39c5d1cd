//! HTTPS: the TLS listener (certificates made here with rcgen, a real rustls
//! client that trusts their CA, the `oauth2` crate over it), production mode
//! refusing plain HTTP before any credential is read, HSTS, `__Host-`
//! cookies, start-up refusals, and the certificate reloaded on SIGHUP.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, PkceCodeVerifier, RedirectUrl,
    TokenResponse, TokenUrl,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::redirect::Policy;
use reqwest::Method;
use serde_json::Value;

use dzdesk_auth::config::{Settings, TlsFiles};
use dzdesk_auth::domain::{Role, TrustedProxies};

use crate::cli::run;
use crate::helpers::{
    cookie_value, hidden_input, set_cookies, spawn_app_custom, TestApp, TestDatabase, PASSWORD,
    TEST_SECRETS_KEY,
};
use crate::oauth_flow::{pkce, AuthRequest, Flow, REDIRECT};
use crate::v1_keys::{api_with, key_for};

const BIN: &str = env!("CARGO_BIN_EXE_dzdesk-auth");
const HSTS: &str = "max-age=31536000";

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A server certificate for 127.0.0.1 and localhost: (chain PEM, key PEM).
    pub fn leaf(&self) -> (String, String) {
        let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a fresh leaf into `dir` and returns the two paths.
    pub fn write_leaf(&self, dir: &Path) -> TlsFiles {
        let (cert, key) = self.leaf();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    /// A TLS client (rustls on aws-lc-rs) that trusts this CA only:
    /// cookies on, redirects off, like the other test clients.
    pub fn client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        crate::helpers::client_builder()
            .use_preconfigured_tls(config)
            .redirect(Policy::none())
            .cookie_store(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// The service with a TLS listener (and production mode: an https issuer),
/// addressed and browsed over https.
async fn spawn_tls_app(ca: &TestCa, dir: &Path, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let files = ca.write_leaf(dir);
    let mut app = spawn_app_custom(
        |s| {
            s.issuer = "https://127.0.0.1".into();
            s.audience = s.issuer.clone();
            s.tls = Some(files);
            adjust(s);
        },
        |_| {},
    )
    .await;
    app.address = app.address.replace("http://", "https://");
    app.client = ca.client();
    app
}

#[tokio::test]
async fn the_tls_listener_serves_the_code_flow_to_the_oauth2_crate() {
    let ca = TestCa::new("flow CA");
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca, dir.path(), |_| {}).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["strict-transport-security"], HSTS);
    // The session cookie of production mode: __Host-, Secure, Path=/, no
    // Domain (set over https, so the cookie store keeps and sends it).
    let page = app.get("/login").await;
    let pre = set_cookies(&page);
    assert!(
        pre.iter().any(|c| c.starts_with("__Host-dzdesk_pre=")),
        "{pre:?}"
    );
    let flow = Flow::on(app, Role::Agent, "requests:read", false).await;
    let (verifier, challenge) = pkce();
    let req = AuthRequest::new(&flow.client_id, Some(&challenge));
    let code = flow.code(&req).await;

    let client = BasicClient::new(ClientId::new(flow.client_id.clone()))
        .set_client_secret(ClientSecret::new(flow.secret.clone().unwrap()))
        .set_auth_uri(AuthUrl::new(flow.app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(flow.app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let http = ca.client();
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&http)
        .await
        .unwrap();
    assert!(!token.access_token().secret().is_empty());
    let refreshed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await
        .unwrap();
    assert_ne!(
        refreshed.access_token().secret(),
        token.access_token().secret()
    );

    // A client that does not trust the CA gets no answer at all.
    let stranger = TestCa::new("another CA").client();
    assert!(stranger.get(flow.app.url("/healthz")).send().await.is_err());
}

/// A public client (no secret) through the `oauth2` crate, over TLS (the
/// crate insists on https for revocation, RFC 7009 2): code with PKCE, then
/// revocation of its refresh token identified by its client_id alone (RFC
/// 7009 2.1), which the crate sends for a client without a secret.
#[tokio::test]
async fn the_oauth2_crate_revokes_a_public_clients_refresh_token() {
    use oauth2::{RevocationUrl, StandardRevocableToken};
    let ca = TestCa::new("revocation CA");
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca, dir.path(), |_| {}).await;
    let flow = Flow::on(app, Role::Agent, "requests:read", true).await;
    let (verifier, challenge) = pkce();
    let code = flow
        .code(&AuthRequest::new(&flow.client_id, Some(&challenge)))
        .await;
    let client = BasicClient::new(ClientId::new(flow.client_id.clone()))
        .set_auth_uri(AuthUrl::new(flow.app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(flow.app.url("/oauth/token")).unwrap())
        .set_revocation_url(RevocationUrl::new(flow.app.url("/oauth/revoke")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let http = ca.client();
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&http)
        .await
        .unwrap();
    let refresh = token.refresh_token().unwrap().clone();
    client
        .revoke_token(StandardRevocableToken::RefreshToken(refresh.clone()))
        .unwrap()
        .request_async(&http)
        .await
        .expect("a public client revokes its own token");
    match client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
    {
        Err(oauth2::RequestTokenError::ServerResponse(e)) => {
            assert_eq!(
                *e.error(),
                oauth2::basic::BasicErrorResponseType::InvalidGrant
            )
        }
        other => panic!("expected invalid_grant after revocation, got {other:?}"),
    }
}

#[tokio::test]
async fn signing_in_over_tls_sets_a_host_prefixed_secure_session_cookie() {
    let ca = TestCa::new("cookie CA");
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_tls_app(&ca, dir.path(), |_| {}).await;
    app.create_user("ann@example.com", Role::Agent).await;
    let resp = app.login("ann@example.com", PASSWORD, "/").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["strict-transport-security"], HSTS);
    let session = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("__Host-dzdesk_session="))
        .expect("__Host- session cookie");
    for part in ["; Secure", "; HttpOnly", "; Path=/"] {
        assert!(session.contains(part), "{session}");
    }
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "{session}"
    );
    // The unprefixed name means nothing in production mode: a cookie a
    // plain-HTTP page or a sibling subdomain planted cannot sign anyone in.
    let home = app.get("/").await;
    assert_eq!(home.status(), 200, "signed in through the __Host- cookie");
    let secret = cookie_value(&resp, "__Host-dzdesk_session").unwrap();
    let planted = ca
        .client()
        .get(app.url("/"))
        .header("cookie", format!("dzdesk_session={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 303, "the unprefixed cookie was honoured");
}

/// A plain-HTTP client whose requests leave from `from` (a loopback address).
fn plain_from(from: &str) -> reqwest::Client {
    crate::helpers::client_builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn production_refuses_plain_http_before_reading_any_credential() {
    // Production mode behind a TLS-terminating proxy at 127.0.0.2: requests
    // from 127.0.0.1 are from an untrusted peer, whatever they claim.
    let app = spawn_app_custom(
        |s| {
            s.issuer = "https://auth.example.com".into();
            s.trusted_proxies = TrustedProxies::parse("127.0.0.2").unwrap();
        },
        |_| {},
    )
    .await;
    let user_id = app.create_user("ann@example.com", Role::Admin).await;
    let (key_id, key) = key_for(&app, &user_id, "admin").await;
    let (_, lister) = key_for(&app, &user_id, "admin").await;
    let direct = plain_from("127.0.0.1");
    let proxy = plain_from("127.0.0.2");
    let https = [("x-forwarded-proto", "https")];

    // /v1 over plain HTTP, and with a forged X-Forwarded-Proto from an
    // untrusted peer: 403 FORBIDDEN, HTTPS named; the key is not looked at.
    for (client, headers) in [
        (&direct, &[][..]),
        (&direct, &https[..]),
        (&proxy, &[("x-forwarded-proto", "http")][..]),
    ] {
        for _ in 0..3 {
            let reply = api_with(
                client,
                &app.address,
                Method::GET,
                "/v1/me",
                Some(&key),
                None,
                headers,
            )
            .await;
            assert_eq!(reply.status, 403, "{}", reply.body);
            assert_eq!(reply.body["success"], false);
            assert_eq!(reply.body["error"]["code"], "FORBIDDEN");
            assert!(
                reply.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("HTTPS is required"),
                "{}",
                reply.body
            );
        }
    }
    // Through the proxy, over https: the first request this key's counter
    // sees (Remaining is Limit - 1), and it was never used before.
    let resp = proxy
        .get(app.url("/v1/me"))
        .bearer_auth(&key)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], HSTS);
    let limit: u64 = resp.headers()["x-ratelimit-limit"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let remaining: u64 = resp.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining, limit - 1, "refused requests were counted");
    // The refused requests left no last_used_at: only this one did. The
    // listing (by another key) shows the key used exactly now, and a key
    // refused only over plain HTTP shows none.
    let (idle_id, idle) = key_for(&app, &user_id, "admin").await;
    let refused = api_with(
        &direct,
        &app.address,
        Method::GET,
        "/v1/me",
        Some(&idle),
        None,
        &[],
    )
    .await;
    assert_eq!(refused.status, 403);
    let list = api_with(
        &proxy,
        &app.address,
        Method::GET,
        "/v1/api-keys",
        Some(&lister),
        None,
        &https,
    )
    .await;
    let keys = list.data(200)["api_keys"].as_array().unwrap().clone();
    let find = |id: &str| keys.iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(find(&idle_id)["last_used_at"], Value::Null, "{keys:?}");
    assert_ne!(find(&key_id)["last_used_at"], Value::Null, "{keys:?}");

    // /oauth over plain HTTP: 403 invalid_request, HTTPS named, and no
    // introspection answer at all.
    for path in [
        "/oauth/introspect",
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/register",
    ] {
        let resp = direct
            .post(app.url(path))
            .basic_auth("some-client", Some("some-secret"))
            .form(&[
                ("token", key.as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        assert_eq!(resp.headers()["strict-transport-security"], HSTS);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("HTTPS is required"),
            "{body}"
        );
        assert!(body.get("active").is_none(), "{body}");
    }
    let authorize = direct
        .get(app.url("/oauth/authorize?client_id=x&response_type=code"))
        .send()
        .await
        .unwrap();
    assert_eq!(authorize.status(), 403);

    // Browser pages: GET redirects to the same path on the https issuer
    // (never to the Host header's idea of it); a form post is refused.
    let login = direct
        .get(app.url("/login?next=%2Fsettings%2Fapi"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 301);
    assert_eq!(
        login.headers()["location"],
        "https://auth.example.com/login?next=%2Fsettings%2Fapi"
    );
    assert_eq!(login.headers()["strict-transport-security"], HSTS);
    let post = direct
        .post(app.url("/login"))
        .form(&[("email", "ann@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    assert!(post.text().await.unwrap().contains("HTTPS only"));
    assert!(set_cookies(&login).is_empty());

    // Probes stay reachable over plain HTTP.
    for path in ["/healthz", "/readyz"] {
        let resp = direct.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["strict-transport-security"], HSTS);
    }

    // Through the proxy, the browser pages work, with __Host- cookies.
    let page = proxy
        .get(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookies = set_cookies(&page);
    assert!(
        cookies
            .iter()
            .all(|c| c.starts_with("__Host-") && c.contains("; Secure")),
        "{cookies:?}"
    );
    let pre = cookie_value(&page, "__Host-dzdesk_pre").unwrap();
    let token = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let signed_in = proxy
        .post(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("__Host-dzdesk_pre={pre}"))
        .form(&[
            ("email", "ann@example.com"),
            ("password", PASSWORD),
            ("next", ""),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert!(cookie_value(&signed_in, "__Host-dzdesk_session").is_some());
}

#[tokio::test]
async fn the_plain_listener_beside_tls_serves_probes_and_redirects_only() {
    let ca = TestCa::new("plain CA");
    let dir = tempfile::tempdir().unwrap();
    let plain_port = free_port();
    let app = spawn_tls_app(&ca, dir.path(), |s| {
        s.http_listen = Some(format!("127.0.0.1:{plain_port}").parse().unwrap());
    })
    .await;
    let plain = plain_from("127.0.0.1");
    let base = format!("http://127.0.0.1:{plain_port}");
    assert_eq!(
        plain
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let home = plain.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(home.status(), 301);
    assert_eq!(home.headers()["location"], "https://127.0.0.1/");
    let me = plain
        .get(format!("{base}/v1/me"))
        .bearer_auth("dzd_whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 403);
    // And the TLS port still answers.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn development_over_http_sends_no_hsts_and_refuses_nothing() {
    let app = spawn_app_custom(|_| {}, |_| {}).await;
    let resp = app.get("/login").await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("strict-transport-security"));
    assert!(set_cookies(&resp)
        .iter()
        .all(|c| c.starts_with("dzdesk_pre=") && !c.contains("Secure")));
}

fn one_error_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_owned()
}

#[test]
fn bad_tls_settings_stop_start_up_with_one_line_naming_the_file() {
    let db = TestDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("start-up CA");
    let good = ca.write_leaf(dir.path());
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let s = |p: &Path| p.display().to_string();
    // (environment, the variable the line names, what else it names)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, String);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("DZDESK_TLS_CERT", s(&missing)),
                ("DZDESK_TLS_KEY", s(&good.key)),
            ],
            "DZDESK_TLS_CERT",
            s(&missing),
        ),
        (
            vec![
                ("DZDESK_TLS_CERT", s(&garbage)),
                ("DZDESK_TLS_KEY", s(&good.key)),
            ],
            "DZDESK_TLS_CERT",
            s(&garbage),
        ),
        (
            vec![
                ("DZDESK_TLS_CERT", s(&good.cert)),
                ("DZDESK_TLS_KEY", s(&missing)),
            ],
            "DZDESK_TLS_KEY",
            s(&missing),
        ),
        (
            vec![
                ("DZDESK_TLS_CERT", s(&good.cert)),
                ("DZDESK_TLS_KEY", s(&good.cert)),
            ],
            "DZDESK_TLS_KEY",
            s(&good.cert),
        ),
        (
            vec![
                ("DZDESK_TLS_CERT", s(&good.cert)),
                ("DZDESK_TLS_KEY", s(&other_key)),
            ],
            "DZDESK_TLS_KEY",
            s(&other_key),
        ),
        (
            vec![("DZDESK_TLS_CERT", s(&good.cert))],
            "DZDESK_TLS_KEY",
            String::new(),
        ),
        (
            vec![("DZDESK_ISSUER", "https://auth.example.com".into())],
            "DZDESK_ISSUER",
            "DZDESK_TRUSTED_PROXIES".into(),
        ),
        (
            vec![("DZDESK_HTTP_LISTEN", "127.0.0.1:0".into())],
            "DZDESK_HTTP_LISTEN",
            String::new(),
        ),
    ];
    for (env, var, named) in cases {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // The file checks, with the issuer TLS needs (its absence is a case
        // of its own below).
        if env.iter().any(|(k, _)| *k == "DZDESK_TLS_KEY") {
            env.push(("DZDESK_ISSUER", "https://localhost"));
        }
        env.push(("DATABASE_URL", &db.url));
        env.push(("DZDESK_LISTEN", "127.0.0.1:0"));
        let started = Instant::now();
        let out = run(&["serve"], &env, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{env:?}: {}",
            one_error_line(&out)
        );
        let line = one_error_line(&out);
        assert!(
            line.starts_with("error: ") && line.contains(var),
            "{env:?}: {line}"
        );
        assert!(line.contains(&named), "{env:?}: {line}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Good files but no DZDESK_ISSUER: an https issuer (production mode) is
    // never guessed from the listen address.
    let (cert, key) = (s(&good.cert), s(&good.key));
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DZDESK_LISTEN", "127.0.0.1:0"),
        ("DZDESK_TLS_CERT", cert.as_str()),
        ("DZDESK_TLS_KEY", key.as_str()),
    ];
    let out = run(&["serve"], &env, None);
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out);
    assert!(
        line.contains("DZDESK_ISSUER") && line.contains("https://"),
        "{line}"
    );
    // With the files right, a trusted proxy alone is enough for an https
    // issuer to start (checked by the tests above); and TLS alone too:
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DZDESK_LISTEN", "127.0.0.1:0"),
        ("DZDESK_ISSUER", "https://127.0.0.1"),
        ("DZDESK_TLS_CERT", &s(&good.cert)),
        ("DZDESK_TLS_KEY", &s(&good.key)),
    ];
    let mut server = Server::start(&env);
    let port = server.port();
    server.stop();
    assert!(port > 0);
}

/// The real binary serving, with its stderr read line by line.
pub struct Server {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl Server {
    /// Starts `serve` with `env` (drain period 0 unless `env` says) and
    /// waits for its "listening" line.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("DZDESK_LISTEN")
            .env_remove("DZDESK_ISSUER")
            .env("RUST_LOG", "info")
            .env("DZDESK_SHUTDOWN_SECS", "0")
            .env("DZDESK_SECRETS_KEY", TEST_SECRETS_KEY)
            .env_remove("DZDESK_SECRETS_KEY_OLD")
            .env_remove("DZDESK_TLS_CERT")
            .env_remove("DZDESK_TLS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            port: 0,
        };
        let line = server
            .wait_for("listening on ")
            .expect("the server did not start");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        server.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next log line containing `needle`, within 20 s.
    pub fn wait_for(&mut self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn stop(&mut self) {
        self.signal("-TERM");
        let status = self.exit_within(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
    }

    /// The exit status, if the process ends within `limit` (else it is
    /// killed and the test fails).
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answers(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_a_restart() {
    let db = TestDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("renewed CA"));
    let files = old_ca.write_leaf(dir.path());
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("DZDESK_LISTEN", "127.0.0.1:0"),
        ("DZDESK_ISSUER", "https://127.0.0.1"),
        ("DZDESK_TLS_CERT", cert.as_str()),
        ("DZDESK_TLS_KEY", key.as_str()),
    ];
    let mut server = Server::start(&env);
    let url = format!("https://127.0.0.1:{}/healthz", server.port());
    let (trusts_old, trusts_new) = (old_ca.client(), new_ca.client());
    assert!(answers(&trusts_old, &url).await);
    assert!(!answers(&trusts_new, &url).await);

    // A renewal: new files in place, then SIGHUP. Connections made after it
    // get the new certificate. (The waits block this test's own runtime:
    // nothing else runs on it meanwhile.)
    new_ca.write_leaf(dir.path());
    server.signal("-HUP");
    assert!(server.wait_for("TLS certificate reloaded").is_some());
    let (trusts_old, trusts_new) = (old_ca.client(), new_ca.client());
    assert!(
        answers(&trusts_new, &url).await,
        "the renewed certificate is not served"
    );
    assert!(
        !answers(&trusts_old, &url).await,
        "the old certificate is still served"
    );

    // A broken renewal is refused and the working certificate stays.
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nxx\n",
    )
    .unwrap();
    server.signal("-HUP");
    assert!(server.wait_for("TLS certificate kept").is_some());
    assert!(answers(&new_ca.client(), &url).await);
    server.stop();
}
