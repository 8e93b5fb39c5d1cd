//! Prometheus metrics (`DZDESK_METRICS_LISTEN`): one registry per
//! service (`startup::Application`), never the process-wide default, so that
//! several services in one process (the tests) count apart.
//!
//! Every counter with a fixed set of labels is made once, here, and
//! incremented through its handle (one atomic add, no allocation, no label
//! lookup). The HTTP pair is labelled by route pattern, method and status:
//! sets bounded by the route table, [`method_label`] and the status codes the
//! service answers with. Gauges that describe a state (the pool, the
//! revocation listener, the signing key's age) are read when scraped.
//!
//! Nothing is counted while metrics are off: the service holds no
//! [`Metrics`] then (`AppState::metrics` is `None`).

use std::sync::Arc;

use chrono::NaiveDateTime;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::credentials::Credentials;
use crate::db::{Database, PoolObserver};
use crate::domain::GrantType;
use crate::ratelimit::throttle::LockScope;

/// The route label of a request no route matched (any path: never the raw
/// path, whose ids and guesses have no bound).
pub const UNMATCHED: &str = "unmatched";

/// Request latency buckets, seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Database connection wait buckets, seconds.
const POOL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why a request was answered 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// `/v1`: the account's plan.
    Plan,
    /// `/v1`: requests without a usable credential, per address.
    Ip,
    /// `POST /login`: a sign-in lock.
    Login,
    /// `/oauth/token`, `/introspect`, `/revoke`: a client-authentication lock.
    ClientAuth,
}

impl Throttled {
    const ALL: [Throttled; 4] = [
        Throttled::Plan,
        Throttled::Ip,
        Throttled::Login,
        Throttled::ClientAuth,
    ];

    fn label(self) -> &'static str {
        match self {
            Throttled::Plan => "plan",
            Throttled::Ip => "ip",
            Throttled::Login => "login",
            Throttled::ClientAuth => "client_auth",
        }
    }
}

fn scope_label(scope: LockScope) -> &'static str {
    match scope {
        LockScope::Pair => "pair",
        LockScope::Address => "address",
        LockScope::Account => "account",
    }
}

const SCOPES: [LockScope; 3] = [LockScope::Pair, LockScope::Address, LockScope::Account];

const GRANTS: [GrantType; 3] = [
    GrantType::AuthorizationCode,
    GrantType::RefreshToken,
    GrantType::ClientCredentials,
];

/// The method label: the standard methods by name, anything else `other`
/// (a client may send any token as a method).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tokens: [IntCounter; 3],
    /// Active, inactive.
    introspections: [IntCounter; 2],
    refresh_reuse: IntCounter,
    throttled: [IntCounter; 4],
    signin_failures: IntCounter,
    signin_locks: [IntCounter; 3],
    /// Pair, address (a client has no lock of its own: its id is public).
    client_locks: [IntCounter; 2],
    pool_in_use: IntGauge,
    pool_idle: IntGauge,
    pool_max: IntGauge,
    /// PostgreSQL only: SQLite has no revocation listener.
    listener_up: Option<IntGauge>,
    key_age: Gauge,
    usage_dropped: IntCounter,
    usage_queued: IntGauge,
    db: Database,
    credentials: Credentials,
    usage_log: UsageLogStats,
}

/// The API usage log's entries dropped so far and queued now, read when
/// scraped (a closure: the log lives in a layer beside this one).
pub type UsageLogStats = Arc<dyn Fn() -> (u64, usize) + Send + Sync>;

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// A counter family with one label, and a handle per value of `values`.
fn counters<const N: usize>(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> prometheus::Result<[IntCounter; N]> {
    let family = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(family.clone()))?;
    let mut handles = Vec::with_capacity(N);
    for v in values {
        handles.push(family.get_metric_with_label_values(&[v])?);
    }
    handles
        .try_into()
        .map_err(|_| prometheus::Error::Msg("label handles".into()))
}

impl Metrics {
    /// A registry of its own, with every metric of the service. Counts the
    /// pool of `db` from now on; `listener` when the service runs the
    /// PostgreSQL revocation listener.
    pub fn new(
        db: Database,
        credentials: Credentials,
        listener: bool,
        usage_log: UsageLogStats,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "dzdesk_auth_http_requests_total",
                "HTTP requests answered, by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "dzdesk_auth_http_request_duration_seconds",
                "Time from a request's arrival to its answer, by route pattern, method and status",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let tokens = counters(
            &registry,
            "dzdesk_auth_tokens_issued_total",
            "Access tokens issued at /oauth/token, by grant type",
            "grant_type",
            GRANTS.map(GrantType::as_str),
        )?;
        let introspections = counters(
            &registry,
            "dzdesk_auth_introspections_total",
            "Introspection answers, by result",
            "result",
            ["active", "inactive"],
        )?;
        let refresh_reuse = counter(
            &registry,
            "dzdesk_auth_refresh_token_reuse_total",
            "Rotated refresh tokens presented again (each revokes its grant)",
        )?;
        let throttled = counters(
            &registry,
            "dzdesk_auth_rate_limited_total",
            "Requests answered 429, by kind",
            "kind",
            Throttled::ALL.map(Throttled::label),
        )?;
        let signin_failures = counter(
            &registry,
            "dzdesk_auth_signin_failures_total",
            "Browser sign-ins refused for a wrong email or password",
        )?;
        let signin_locks = counters(
            &registry,
            "dzdesk_auth_signin_locks_total",
            "Sign-in locks set, by what is locked",
            "scope",
            SCOPES.map(scope_label),
        )?;
        let client_locks = counters(
            &registry,
            "dzdesk_auth_client_auth_locks_total",
            "Client-authentication locks set, by what is locked",
            "scope",
            [LockScope::Pair, LockScope::Address].map(scope_label),
        )?;
        let pool_in_use = gauge(
            &registry,
            "dzdesk_auth_db_pool_connections_in_use",
            "Database connections lent out now",
        )?;
        let pool_idle = gauge(
            &registry,
            "dzdesk_auth_db_pool_connections_idle",
            "Database connections open and idle now",
        )?;
        let pool_max = gauge(
            &registry,
            "dzdesk_auth_db_pool_max_connections",
            "Database pool size (DZDESK_DB_POOL_SIZE)",
        )?;
        let wait = Histogram::with_opts(
            HistogramOpts::new(
                "dzdesk_auth_db_pool_wait_seconds",
                "Time a caller waited for a database connection",
            )
            .buckets(POOL_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(wait.clone()))?;
        let timeouts = counter(
            &registry,
            "dzdesk_auth_db_timeouts_total",
            "Callers that got no database connection or answer within DZDESK_DB_TIMEOUT_MS",
        )?;
        let group_size = Histogram::with_opts(
            HistogramOpts::new(
                "dzdesk_auth_db_group_size",
                "Statements of concurrent requests sent together as one (refresh rotations)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        registry.register(Box::new(group_size.clone()))?;
        let group_waiting = IntGauge::new(
            "dzdesk_auth_db_group_waiting",
            "Requests queued to be sent together now (refresh rotations)",
        )?;
        registry.register(Box::new(group_waiting.clone()))?;
        let observer = PoolObserver {
            wait,
            timeouts,
            group_size,
            group_waiting,
        };
        if db.observe_with(observer).is_err() {
            log::warn!("the database pool is counted by another metrics registry already");
        }
        let listener_up = listener
            .then(|| {
                gauge(
                    &registry,
                    "dzdesk_auth_revocation_listener_up",
                    "1 while the PostgreSQL revocation listener is connected and its view live",
                )
            })
            .transpose()?;
        let key_age = Gauge::new(
            "dzdesk_auth_signing_key_age_seconds",
            "Age of the key signing access tokens (as this instance holds it)",
        )?;
        registry.register(Box::new(key_age.clone()))?;
        let usage_dropped = counter(
            &registry,
            "dzdesk_auth_usage_log_dropped_total",
            "API usage-log entries lost: the queue was full (or the account over its share), or a batch failed to write",
        )?;
        let usage_queued = gauge(
            &registry,
            "dzdesk_auth_usage_log_queued",
            "API usage-log entries waiting to be written now",
        )?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            tokens,
            introspections,
            refresh_reuse,
            throttled,
            signin_failures,
            signin_locks,
            client_locks,
            pool_in_use,
            pool_idle,
            pool_max,
            listener_up,
            key_age,
            usage_dropped,
            usage_queued,
            db,
            credentials,
            usage_log,
        })
    }

    /// One answered request. `route` is the matched pattern or
    /// [`UNMATCHED`], `method` from [`method_label`].
    pub fn http(&self, route: &str, method: &'static str, status: &str, seconds: f64) {
        let labels = [route, method, status];
        if let Ok(c) = self.http_requests.get_metric_with_label_values(&labels) {
            c.inc();
        }
        if let Ok(h) = self.http_duration.get_metric_with_label_values(&labels) {
            h.observe(seconds);
        }
    }

    pub fn token_issued(&self, grant: GrantType) {
        let i = match grant {
            GrantType::AuthorizationCode => 0,
            GrantType::RefreshToken => 1,
            GrantType::ClientCredentials => 2,
        };
        self.tokens[i].inc();
    }

    pub fn introspected(&self, active: bool) {
        self.introspections[usize::from(!active)].inc();
    }

    pub fn refresh_reused(&self) {
        self.refresh_reuse.inc();
    }

    pub fn throttled(&self, kind: Throttled) {
        self.throttled[kind as usize].inc();
    }

    pub fn signin_failed(&self) {
        self.signin_failures.inc();
    }

    pub fn signin_locked(&self, scope: LockScope) {
        self.signin_locks[scope as usize].inc();
    }

    pub fn client_auth_locked(&self, scope: LockScope) {
        match scope {
            LockScope::Pair => self.client_locks[0].inc(),
            LockScope::Address => self.client_locks[1].inc(),
            LockScope::Account => {}
        }
    }

    /// The text exposition (format 0.0.4), gauges read now.
    pub fn render(&self, now: NaiveDateTime) -> prometheus::Result<String> {
        let pool = self.db.pool_use();
        self.pool_in_use.set(i64::from(pool.in_use));
        self.pool_idle.set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max));
        if let Some(up) = &self.listener_up {
            up.set(i64::from(self.credentials.view.is_live()));
        }
        let created = self.credentials.keys.in_memory().signing_created_at();
        let age = (now - created).num_milliseconds().max(0) as f64 / 1000.0;
        self.key_age.set(age);
        // The log counts its own losses (it runs without metrics too).
        let (dropped, queued) = (self.usage_log)();
        self.usage_dropped
            .inc_by(dropped.saturating_sub(self.usage_dropped.get()));
        self.usage_queued
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(16 * 1024);
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_fixed() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
        // Indexes of the handle arrays follow the declaration order.
        for (i, t) in Throttled::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
        for (i, s) in SCOPES.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
