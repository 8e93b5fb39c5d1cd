//! Settings from the environment, validated once at start-up. A bad value
//! stops start-up with one line naming the variable (exit code 2).
//! Every variable is documented in `.env.example`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::db::DatabaseUrl;
use crate::domain::TrustedProxies;
use crate::secrets::{Sealer, SecretsKey, KEY_VAR, OLD_KEY_VAR};

/// By default, a Redis answer slower than this counts as late: the request
/// is decided in process instead (`DZDESK_REDIS_TIMEOUT_MS`).
pub const DEFAULT_REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);
/// The usage log's buffer is written at least this often.
pub const DEFAULT_USAGE_LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

pub const DEFAULT_DATABASE_URL: &str = "sqlite://dzdesk-auth.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ISSUER: &str = "http://localhost:8080";

#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    /// Where the HTTP listener binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Public base URL, without a trailing slash (`https://auth.dzdesk.com`).
    pub issuer: String,
    /// `DZDESK_ISSUER` was not set: the issuer is the listener's address
    /// ([`issuer_from_listen`]), fixed up with the bound port when the
    /// listen port is 0 (and the audience with it, when it is the issuer).
    pub issuer_from_listen: bool,
    /// actix worker threads; `None`: one per core.
    pub workers: Option<usize>,
    /// Headers, body and answer of one request within this, or 408 and the
    /// connection closed (`DZDESK_REQUEST_TIMEOUT_SECS`, default 10).
    pub request_timeout: std::time::Duration,
    /// After SIGTERM or SIGINT, how long the service keeps accepting while
    /// `/readyz` says 503, so load balancers stop sending first
    /// (`DZDESK_SHUTDOWN_SECS`, default 10; 0 stops accepting at once).
    pub shutdown_drain: std::time::Duration,
    /// Open connections at most, across workers (`DZDESK_MAX_CONNECTIONS`,
    /// default 4096): past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Maximum connections in the database pool.
    pub db_pool_size: u32,
    /// How long a request waits for the database: a pooled connection, a
    /// new one, and its queries (`DZDESK_DB_TIMEOUT_MS`, default 2000).
    /// Past it the request gets 503.
    pub db_timeout: std::time::Duration,
    /// `aud` of access tokens (default: the issuer).
    pub audience: String,
    /// Lifetime of access tokens, seconds (default 3600).
    pub access_token_ttl_secs: i64,
    /// Lifetime of refresh tokens, seconds (default 30 days).
    pub refresh_token_ttl_secs: i64,
    /// How often a running instance re-reads the signing keys, seconds
    /// (picks up `dzdesk-auth keys rotate`; default 60).
    pub key_reload_secs: i64,
    /// How long an instance may answer client authentication from memory,
    /// seconds (default 5; 0 reads the database every time). A disabled
    /// client or a changed secret takes at most this long to take effect.
    pub client_cache_secs: i64,
    /// Peers whose `X-Forwarded-For` is believed (`DZDESK_TRUSTED_PROXIES`:
    /// addresses or CIDRs, comma-separated; default none).
    pub trusted_proxies: TrustedProxies,
    /// Where rate-limit counters live when several instances must share
    /// them (`DZDESK_REDIS_URL`); None: in this process.
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key (`DZDESK_REDIS_PREFIX`, default `dzdesk:`).
    pub redis_prefix: String,
    /// Unauthenticated or failed-authentication `/v1` requests an address
    /// may make per minute (`DZDESK_AUTH_FAILURES_PER_MIN`, default 60).
    pub auth_failures_per_min: u32,
    /// A Redis answer slower than this counts as a failure: the request is
    /// decided in process (`DZDESK_REDIS_TIMEOUT_MS`, default 50 ms).
    pub redis_timeout: std::time::Duration,
    /// `DZDESK_TLS_CERT` and `DZDESK_TLS_KEY`: the listener speaks TLS.
    pub tls: Option<TlsFiles>,
    /// `DZDESK_HTTP_LISTEN` (with TLS only): a second, plain-HTTP listener,
    /// for probes (`/healthz`, `/readyz`) and redirects to https.
    pub http_listen: Option<SocketAddr>,
    /// `DZDESK_METRICS_LISTEN`: a listener of its own serving Prometheus
    /// text at `/metrics` (default: none, and nothing is counted).
    pub metrics_listen: Option<SocketAddr>,
    /// `DZDESK_RATE_LIMITS=off` turns the `/v1` limits off (benchmarks; a
    /// service exposed to anyone keeps them on).
    pub rate_limits: bool,
    /// `DZDESK_USAGE_LOG=off` stops recording `/v1` requests made with API
    /// keys (the API usage log; default on).
    pub usage_log: bool,
    /// How often the usage log's buffer is written (1 s; not configurable
    /// from the environment: tests lengthen it to see the shutdown flush).
    pub usage_log_flush: std::time::Duration,
    /// Seals the private signing keys and server secrets at rest
    /// (`DZDESK_SECRETS_KEY`, and `DZDESK_SECRETS_KEY_OLD` while rotating
    /// it); its `Debug` shows no key. Read it through [`Settings::sealer`].
    pub secrets: Sealer,
}

/// The PEM files of the TLS listener: the certificate chain (leaf first)
/// and its private key (PKCS#8, SEC1 or PKCS#1). Re-read on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A `redis://` or `rediss://` URL. Its `Debug` never shows it: it may hold
/// a password.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("redis://")
            || raw.starts_with("rediss://")
            || raw.starts_with("redis+unix://")
            || raw.starts_with("unix://")
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be a redis:// URL (redis://host:6379/0)".into())
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

/// A setting that could not be used: which variable, and why.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

/// A variable's value; unset and empty both mean "use the default".
fn var(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(name, "is not valid UTF-8")),
    }
}

impl Settings {
    /// Production mode: the public issuer is `https://`. HTTPS is then
    /// required (TLS here or at a trusted proxy), HSTS is sent, cookies are
    /// `Secure`, and secrets at rest must be encrypted.
    pub fn production(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// The sealer of secrets at rest, for whatever reads or writes them
    /// (start-up, `keys rotate`, `secrets rotate`). Production mode refuses
    /// to run without `DZDESK_SECRETS_KEY`: its signing keys would sit in
    /// the database in the clear.
    pub fn sealer(&self) -> Result<&Sealer, ConfigError> {
        if self.production() && !self.secrets.is_on() {
            return Err(ConfigError::new(
                KEY_VAR,
                "is required in production (an https DZDESK_ISSUER): it encrypts the signing \
                 keys and server secrets in the database; generate one with \
                 `openssl rand -base64 32` and back it up like the database",
            ));
        }
        Ok(&self.secrets)
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = var("DATABASE_URL")?;
        let listen = var("DZDESK_LISTEN")?;
        let issuer = var("DZDESK_ISSUER")?;
        let workers = var("DZDESK_WORKERS")?;
        let request_timeout = var("DZDESK_REQUEST_TIMEOUT_SECS")?;
        let max_connections = var("DZDESK_MAX_CONNECTIONS")?;
        let shutdown = var("DZDESK_SHUTDOWN_SECS")?;
        let pool = var("DZDESK_DB_POOL_SIZE")?;
        let db_timeout = var("DZDESK_DB_TIMEOUT_MS")?
            .map(|r| parse_count(&r, 100, 60_000))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_DB_TIMEOUT_MS", m))?
            .map_or(crate::db::DEFAULT_TIMEOUT, |ms| {
                std::time::Duration::from_millis(ms as u64)
            });
        let audience = var("DZDESK_AUDIENCE")?;
        let access_ttl = var("DZDESK_ACCESS_TOKEN_TTL")?;
        let refresh_ttl = var("DZDESK_REFRESH_TOKEN_TTL")?;
        let key_reload = var("DZDESK_KEY_RELOAD_SECS")?;
        let client_cache = var("DZDESK_CLIENT_CACHE_SECS")?;
        let trusted_proxies = var("DZDESK_TRUSTED_PROXIES")?;
        let tls = match (var("DZDESK_TLS_CERT")?, var("DZDESK_TLS_KEY")?) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert.trim()),
                key: PathBuf::from(key.trim()),
            }),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "DZDESK_TLS_KEY",
                    "is not set, but DZDESK_TLS_CERT is: TLS needs both files",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "DZDESK_TLS_CERT",
                    "is not set, but DZDESK_TLS_KEY is: TLS needs both files",
                ))
            }
        };
        let http_listen = var("DZDESK_HTTP_LISTEN")?
            .map(|l| parse_listen(&l))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_HTTP_LISTEN", m))?;
        let metrics_listen = var("DZDESK_METRICS_LISTEN")?
            .map(|l| parse_listen(&l))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_METRICS_LISTEN", m))?;
        let redis_url = var("DZDESK_REDIS_URL")?
            .map(|u| RedisUrl::parse(&u))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_REDIS_URL", m))?;
        let redis_prefix = var("DZDESK_REDIS_PREFIX")?.unwrap_or_else(|| "dzdesk:".to_owned());
        let redis_timeout = var("DZDESK_REDIS_TIMEOUT_MS")?
            .map(|r| parse_count(&r, 1, 10_000))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_REDIS_TIMEOUT_MS", m))?
            .map_or(DEFAULT_REDIS_TIMEOUT, |ms| {
                std::time::Duration::from_millis(ms as u64)
            });
        let auth_failures_per_min = var("DZDESK_AUTH_FAILURES_PER_MIN")?
            .map(|r| parse_count(&r, 1, 100_000))
            .transpose()
            .map_err(|m| ConfigError::new("DZDESK_AUTH_FAILURES_PER_MIN", m))?
            .map_or(60, |n| n as u32);
        let rate_limits = match var("DZDESK_RATE_LIMITS")?.as_deref().map(str::trim) {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err(ConfigError::new("DZDESK_RATE_LIMITS", "must be on or off")),
        };
        let usage_log = match var("DZDESK_USAGE_LOG")?.as_deref().map(str::trim) {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err(ConfigError::new("DZDESK_USAGE_LOG", "must be on or off")),
        };
        let secrets = parse_secrets(var(KEY_VAR)?, var(OLD_KEY_VAR)?)?;
        let listen = parse_listen(listen.as_deref().unwrap_or(DEFAULT_LISTEN))
            .map_err(|m| ConfigError::new("DZDESK_LISTEN", m))?;
        let issuer_env_unset = issuer.is_none();
        let issuer = match issuer {
            Some(raw) => parse_issuer(&raw).map_err(|m| ConfigError::new("DZDESK_ISSUER", m))?,
            // An https issuer is production mode: never guessed from an
            // address (it would also name `localhost` in HSTS, redirects and
            // every token's iss and aud).
            None if tls.is_some() => {
                return Err(ConfigError::new(
                    "DZDESK_ISSUER",
                    "is required with DZDESK_TLS_CERT: the public https:// URL clients reach",
                ))
            }
            None => issuer_from_listen(listen).map_err(|m| ConfigError::new("DZDESK_ISSUER", m))?,
        };
        let seconds =
            |raw: Option<String>, var: &'static str, default: i64, min: usize, max: usize| {
                raw.map(|r| parse_count(&r, min, max))
                    .transpose()
                    .map_err(|m| ConfigError::new(var, m))
                    .map(|n| n.map_or(default, |n| n as i64))
            };
        let settings = Self {
            tls,
            http_listen,
            metrics_listen,
            db_timeout,
            secrets,
            redis_url,
            redis_prefix,
            auth_failures_per_min,
            redis_timeout,
            rate_limits,
            usage_log,
            usage_log_flush: DEFAULT_USAGE_LOG_FLUSH,
            database_url: DatabaseUrl::parse(
                database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL),
            )
            .map_err(|m| ConfigError::new("DATABASE_URL", m))?,
            listen,
            issuer_from_listen: issuer_env_unset,
            audience: audience.map_or_else(|| issuer.clone(), |a| a.trim().to_owned()),
            issuer,
            access_token_ttl_secs: seconds(
                access_ttl,
                "DZDESK_ACCESS_TOKEN_TTL",
                3600,
                60,
                86_400,
            )?,
            refresh_token_ttl_secs: seconds(
                refresh_ttl,
                "DZDESK_REFRESH_TOKEN_TTL",
                30 * 86_400,
                60,
                365 * 86_400,
            )?,
            key_reload_secs: seconds(key_reload, "DZDESK_KEY_RELOAD_SECS", 60, 0, 86_400)?,
            client_cache_secs: seconds(client_cache, "DZDESK_CLIENT_CACHE_SECS", 5, 0, 300)?,
            trusted_proxies: TrustedProxies::parse(trusted_proxies.as_deref().unwrap_or(""))
                .map_err(|m| ConfigError::new("DZDESK_TRUSTED_PROXIES", m))?,
            request_timeout: std::time::Duration::from_secs(seconds(
                request_timeout,
                "DZDESK_REQUEST_TIMEOUT_SECS",
                10,
                1,
                3600,
            )? as u64),
            shutdown_drain: std::time::Duration::from_secs(seconds(
                shutdown,
                "DZDESK_SHUTDOWN_SECS",
                10,
                0,
                3600,
            )? as u64),
            max_connections: max_connections
                .map(|m| parse_count(&m, 1, 1_000_000))
                .transpose()
                .map_err(|m| ConfigError::new("DZDESK_MAX_CONNECTIONS", m))?
                .unwrap_or(4096),
            workers: workers
                .map(|w| parse_count(&w, 1, 256))
                .transpose()
                .map_err(|m| ConfigError::new("DZDESK_WORKERS", m))?,
            db_pool_size: pool
                .map(|p| parse_count(&p, 1, 1000))
                .transpose()
                .map_err(|m| ConfigError::new("DZDESK_DB_POOL_SIZE", m))?
                .map_or(10, |n| n as u32),
        };
        settings.check_transport()?;
        Ok(settings)
    }

    /// Settings that could never serve anything are refused: production
    /// mode answers only requests that arrived over TLS, here or at a
    /// trusted proxy, so it needs one of them; a plain-HTTP second listener
    /// makes sense only beside a TLS one.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        if self.production() && self.tls.is_none() && self.trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "DZDESK_ISSUER",
                "is https://, but there is neither TLS here (DZDESK_TLS_CERT and \
                 DZDESK_TLS_KEY) nor a TLS-terminating proxy (DZDESK_TRUSTED_PROXIES): \
                 every request would be refused as not HTTPS",
            ));
        }
        if self.http_listen.is_some() && (self.tls.is_none() || !self.production()) {
            return Err(ConfigError::new(
                "DZDESK_HTTP_LISTEN",
                "is a second, plain-HTTP listener for probes and redirects beside a TLS one: \
                 it needs DZDESK_TLS_CERT and DZDESK_TLS_KEY and an https:// DZDESK_ISSUER \
                 (else it would serve everything in plain HTTP)",
            ));
        }
        Ok(())
    }
}

pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    raw.trim().parse().map_err(|_| {
        format!(
            "'{raw}' is not a socket address: expected IP:PORT, e.g. 127.0.0.1:8080 or [::]:8080"
        )
    })
}

/// The issuer when `DZDESK_ISSUER` is not set: the listener's own address,
/// so that what metadata and tokens say matches where a client on this
/// machine reaches the server (a strict client checks it: RFC 8414 3.3,
/// RFC 9207). A loopback or unspecified address (0.0.0.0, ::) becomes
/// `localhost`. Always http: with TLS the issuer must be given (an https
/// issuer is production mode). For port 0 the caller passes the bound
/// address (`startup`).
pub fn issuer_from_listen(listen: SocketAddr) -> Result<String, String> {
    let ip = listen.ip();
    let host = if ip.is_unspecified() || ip.is_loopback() {
        "localhost".to_owned()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    parse_issuer(&format!("http://{host}:{}", listen.port()))
}

/// The issuer: an absolute http(s) URL with a host, no query, no fragment
/// (RFC 8414 2: "a URL that uses the https scheme and has no query or fragment
/// components"; http is allowed for local development). Returned without a
/// trailing slash.
pub fn parse_issuer(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("'{raw}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unknown URL scheme '{}': expected https:// (or http:// for development)",
            url.scheme()
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err("must be an absolute URL with a host and no query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `DZDESK_SECRETS_KEY` and `DZDESK_SECRETS_KEY_OLD`: each the base64 of 32
/// bytes; the old one only beside a new one. Errors never echo a value.
fn parse_secrets(key: Option<String>, old: Option<String>) -> Result<Sealer, ConfigError> {
    let parse = |raw: Option<String>, var: &'static str| {
        raw.map(|r| SecretsKey::parse(&r))
            .transpose()
            .map_err(|m| ConfigError::new(var, m))
    };
    let key = parse(key, KEY_VAR)?;
    let old = parse(old, OLD_KEY_VAR)?;
    if old.is_some() && key.is_none() {
        return Err(ConfigError::new(
            OLD_KEY_VAR,
            "is set without DZDESK_SECRETS_KEY: while rotating, the new key goes there and the \
             previous one here",
        ));
    }
    Ok(Sealer::new(key, old))
}

fn parse_count(raw: &str, min: usize, max: usize) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{raw}' is not a whole number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_ipv4_ipv6_and_port_zero() {
        assert!(parse_listen("127.0.0.1:8080").is_ok());
        assert!(parse_listen("[::1]:0").is_ok());
        assert!(parse_listen("localhost:8080").is_err());
        assert!(parse_listen("8080").is_err());
    }

    #[test]
    fn without_dzdesk_issuer_the_issuer_is_the_listen_address() {
        let at = |l: &str| issuer_from_listen(parse_listen(l).unwrap()).unwrap();
        assert_eq!(at(DEFAULT_LISTEN), DEFAULT_ISSUER);
        assert_eq!(at("0.0.0.0:9000"), "http://localhost:9000");
        assert_eq!(at("[::]:9000"), "http://localhost:9000");
        assert_eq!(at("[::1]:9000"), "http://localhost:9000");
        assert_eq!(at("192.0.2.7:8443"), "http://192.0.2.7:8443");
        assert_eq!(at("[2001:db8::7]:80"), "http://[2001:db8::7]");
    }

    #[test]
    fn issuer_is_http_or_https_without_query_and_loses_trailing_slash() {
        assert_eq!(
            parse_issuer("https://auth.dzdesk.com/").unwrap(),
            "https://auth.dzdesk.com"
        );
        assert_eq!(
            parse_issuer("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            parse_issuer("https://x.example/auth/").unwrap(),
            "https://x.example/auth"
        );
        for bad in [
            "ftp://x.example",
            "x.example",
            "https://x.example/?a=b",
            "https://x.example/#f",
            "https://u:p@x.example",
        ] {
            assert!(parse_issuer(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn secrets_keys_are_32_bytes_of_base64_and_the_old_one_needs_a_new_one() {
        use base64::Engine;
        let key = || Some(base64::engine::general_purpose::STANDARD.encode([1u8; 32]));
        assert!(!parse_secrets(None, None).unwrap().is_on());
        assert!(parse_secrets(key(), None).unwrap().is_on());
        assert!(parse_secrets(key(), key()).unwrap().is_on());
        let err = parse_secrets(Some("c2hvcnQ=".into()), None).unwrap_err();
        assert_eq!(err.var, "DZDESK_SECRETS_KEY");
        assert!(!err.to_string().contains("c2hvcnQ"), "{err}");
        let err = parse_secrets(key(), Some("nope!".into())).unwrap_err();
        assert_eq!(err.var, "DZDESK_SECRETS_KEY_OLD");
        let err = parse_secrets(None, key()).unwrap_err();
        assert_eq!(err.var, "DZDESK_SECRETS_KEY_OLD");
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(parse_count("4", 1, 8), Ok(4));
        assert!(parse_count("0", 1, 8).is_err());
        assert!(parse_count("x", 1, 8).is_err());
    }

    #[test]
    fn an_https_issuer_needs_tls_or_a_trusted_proxy_and_a_plain_listener_needs_tls() {
        let files = TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        let settings = |issuer: &str, tls: Option<TlsFiles>, proxies: &str, http: bool| {
            let mut s = Settings::from_env().unwrap();
            s.issuer = issuer.into();
            s.tls = tls;
            s.trusted_proxies = TrustedProxies::parse(proxies).unwrap();
            s.http_listen = http.then(|| "127.0.0.1:0".parse().unwrap());
            s
        };
        let refused = |s: Settings| s.check_transport().unwrap_err().var;
        assert_eq!(
            refused(settings("https://a.example", None, "", false)),
            "DZDESK_ISSUER"
        );
        assert!(
            settings("https://a.example", Some(files.clone()), "", false)
                .check_transport()
                .is_ok()
        );
        assert!(settings("https://a.example", None, "10.0.0.1", false)
            .check_transport()
            .is_ok());
        assert!(settings("http://localhost:8080", None, "", false)
            .check_transport()
            .is_ok());
        assert_eq!(
            refused(settings("http://localhost:8080", None, "", true)),
            "DZDESK_HTTP_LISTEN"
        );
        assert!(settings("https://a.example", Some(files.clone()), "", true)
            .check_transport()
            .is_ok());
        assert_eq!(
            refused(settings("http://localhost:8080", Some(files), "", true)),
            "DZDESK_HTTP_LISTEN"
        );
    }
}
