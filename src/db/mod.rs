//! The one place that owns the database: the connection type over both
//! backends, the r2d2 pool, migrations, and the helper that runs diesel off the
//! actix worker threads.
//!
//! Rules that keep one code base working on PostgreSQL and SQLite (see
//! `shared/stack-notes.md`): only the column types both share, `returning` into
//! `Queryable` structs, one row per `insert`, and a connection manager of our
//! own that picks the backend from the URL scheme and keeps the real error.

pub(crate) mod group;
pub mod models;
pub mod prepared;
pub mod schema;
pub mod sealed;
mod types;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A connection to either backend. Code that needs the backend matches on it.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Which database a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A validated `DATABASE_URL`. Its `Debug` never shows the URL, which may
/// carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
    /// For PostgreSQL the whole URL (libpq parses it); for SQLite the file path.
    target: String,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl DatabaseUrl {
    /// Accepts `postgres://`, `postgresql://` and `sqlite://PATH`
    /// (`sqlite:///abs/path.db` or `sqlite://relative.db`). Anything else is
    /// refused: falling through to SQLite would create a file named after the
    /// string, password included. Error messages never repeat the URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(
                "not a URL: expected postgres://..., postgresql://... or sqlite://PATH".into(),
            );
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self {
                backend: Backend::Postgres,
                target: raw.to_owned(),
            }),
            "sqlite" => {
                if rest.is_empty() || rest.contains('?') || rest == ":memory:" {
                    return Err("sqlite:// needs a file path, e.g. sqlite://dzdesk-auth.db (no query string, no :memory:)".into());
                }
                Ok(Self {
                    backend: Backend::Sqlite,
                    target: rest.to_owned(),
                })
            }
            other => Err(format!(
                "unknown URL scheme '{}': expected postgres://, postgresql:// or sqlite://",
                other.chars().take(20).collect::<String>()
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The whole URL, for PostgreSQL URLs (never log it: it may carry a
    /// password).
    pub fn postgres_url(&self) -> Option<&str> {
        (self.backend == Backend::Postgres).then_some(self.target.as_str())
    }

    /// The SQLite file path, for SQLite URLs.
    pub fn sqlite_path(&self) -> Option<&str> {
        (self.backend == Backend::Sqlite).then_some(self.target.as_str())
    }
}

/// Why a connection could not be made or checked. Keeps the backend's error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Connection(#[from] diesel::ConnectionError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// r2d2 manager that picks the backend from the URL scheme.
/// (`AnyConnection::establish` tries each backend in turn and throws the real
/// error away.)
#[derive(Debug)]
pub struct ConnectionManager {
    url: DatabaseUrl,
    /// libpq's bound on opening a connection (`DZDESK_DB_TIMEOUT_MS`).
    timeout: Duration,
}

impl ConnectionManager {
    /// Opens one connection to the URL's backend.
    fn open(&self) -> Result<AnyConnection, ConnectError> {
        match self.url.backend {
            Backend::Postgres => {
                let mut pg = PgConnection::establish(&libpq_url(&self.url.target, self.timeout))?;
                set_lock_timeout(&mut pg, self.timeout)?;
                Ok(AnyConnection::Postgresql(pg))
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url.target)?;
                // busy_timeout first: switching to WAL takes a lock, and without
                // the timeout a second pool connection fails with
                // "database is locked" instead of waiting.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;",
                )?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

/// A connection tested at checkout at most once per this interval: the
/// test (`SELECT 1`) was a round trip of its own before every request's
/// work (perf and the server's statement log: one per refresh, beside BEGIN,
/// the rotation and COMMIT; leaving it out gave 8% more refreshes/s and 24%
/// more authorization-code round trips/s in one A/B run of `bench/ab.sh`).
/// The price: a connection the server closed (a restart, a failover, an
/// idle timeout) can be handed to requests for at most this long after its
/// last test, each answered 503 ([`is_unavailable`]), before the next
/// checkout tests it and r2d2 replaces it.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A pooled connection, and when it was last known to answer (opened or
/// tested). Dereferences to the connection.
pub struct Pooled {
    conn: AnyConnection,
    checked_at: Instant,
}

impl Pooled {
    /// Whether a checkout at `now` tests the connection first
    /// ([`CHECK_EVERY`]).
    fn needs_check(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.checked_at) >= CHECK_EVERY
    }
}

impl std::ops::Deref for Pooled {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = Pooled;
    type Error = ConnectError;

    fn connect(&self) -> Result<Pooled, ConnectError> {
        Ok(Pooled {
            conn: self.open()?,
            checked_at: Instant::now(),
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), ConnectError> {
        let now = Instant::now();
        if pooled.needs_check(now) {
            pooled.conn.batch_execute("SELECT 1")?;
            pooled.checked_at = now;
        }
        Ok(())
    }

    /// Checked when a connection goes back to the pool (no I/O): one left
    /// inside a transaction (a panic in a transaction's closure) or whose
    /// transaction state diesel lost (the server went away in the middle
    /// of one) is dropped, not handed to the next request, where every
    /// transaction would fail on it or run inside the one left open.
    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        std::thread::panicking()
            || match &mut pooled.conn {
                AnyConnection::Postgresql(pg) => {
                    AnsiTransactionManager::is_broken_transaction_manager(pg)
                }
                AnyConnection::Sqlite(lite) => {
                    AnsiTransactionManager::is_broken_transaction_manager(lite)
                }
            }
    }
}

/// `lock_timeout` for every statement of a new PostgreSQL connection: the
/// request timeout (`DZDESK_DB_TIMEOUT_MS`). It ends a statement that waits
/// longer than that for a lock held elsewhere: the caller has given up by
/// then, or (a statement that commits on its own, [`commit_alone`]) waits
/// for it, and gets its 503 ([`is_unavailable`]) instead of a late answer.
/// Migrations and [`exclusively`] wait for their advisory locks without it.
/// A `SET` once per connection, not a startup parameter (`options`), which
/// connection poolers such as PgBouncer refuse, and which would replace an
/// operator's own `PGOPTIONS`. Warns once when the server's messages are
/// not in English: a lock timeout is told by its message (diesel gives no
/// SQLSTATE for it), so it would then answer 500, not 503.
fn set_lock_timeout(pg: &mut PgConnection, timeout: Duration) -> QueryResult<()> {
    #[derive(QueryableByName)]
    struct Messages {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lc_messages: String,
    }
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    let answer: Messages = diesel::sql_query(
        "SELECT set_config('lock_timeout', $1, false) AS lock_timeout, \
         current_setting('lc_messages') AS lc_messages",
    )
    .bind::<diesel::sql_types::Text, _>(ms)
    .get_result(pg)?;
    if !messages_in_english(&answer.lc_messages)
        && !WARNED_LC_MESSAGES.swap(true, Ordering::Relaxed)
    {
        log::warn!(
            "PostgreSQL's lc_messages is '{}': a statement that waited past lock_timeout will \
             answer 500 instead of 503 (set lc_messages to C or en_US for this database's role)",
            answer.lc_messages
        );
    }
    Ok(())
}

static WARNED_LC_MESSAGES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether PostgreSQL's messages under `lc_messages` are its English ones.
fn messages_in_english(lc_messages: &str) -> bool {
    let lc = lc_messages.to_ascii_lowercase();
    lc.is_empty() || lc == "c" || lc == "posix" || lc.starts_with("c.") || lc.starts_with("en")
}

/// The URL libpq opens: `url` with bounds on a server that went away or
/// stopped answering, each only where the URL does not set it already.
/// `connect_timeout` (whole seconds, at least 2 in libpq) bounds opening
/// a connection; TCP keepalives and `tcp_user_timeout` let a connection to
/// a peer that vanished fail within seconds instead of hanging a pool
/// thread on it for the kernel's default of two hours. (A server process
/// that is alive but does not answer is caught by [`Database::run`]'s
/// deadline; a lock held elsewhere, by `lock_timeout`: [`set_lock_timeout`].)
fn libpq_url(url: &str, timeout: Duration) -> String {
    let connect_secs = timeout.as_millis().div_ceil(1000).max(2).to_string();
    let params = [
        ("connect_timeout", connect_secs.as_str()),
        ("keepalives", "1"),
        ("keepalives_idle", "5"),
        ("keepalives_interval", "2"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "15000"),
    ];
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let given: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .collect();
    let mut out = url.to_owned();
    for (key, value) in params {
        if given.contains(&key) {
            continue;
        }
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

pub type DbPool = Pool<ConnectionManager>;
pub type DbConn = PooledConnection<ConnectionManager>;

/// How long a request waits for the database by default
/// (`DZDESK_DB_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);

/// Errors of [`Database::run`] that are not the closure's own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No connection within the timeout: every one is busy, or none can be
    /// opened (the server is down or unreachable).
    #[error("no database connection available")]
    Pool(#[from] r2d2::PoolError),
    /// The work did not finish within the timeout (a server that stopped
    /// answering). It may still finish on its blocking thread, all of it or
    /// nothing (a transaction commits or rolls back whole).
    #[error("the database did not answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the database task panicked or was cancelled")]
    Blocking,
    /// Too many requests wait for the database already ([`group`]): the
    /// load is more than it answers.
    #[error("too many requests wait for the database")]
    Saturated,
}

/// The database could not be reached or did not answer in time, somewhere
/// in `err`'s chain: every surface answers this with 503 (the `/v1`
/// envelope `SERVICE_UNAVAILABLE`, `temporarily_unavailable` on `/oauth`,
/// a page for browsers; see `error.rs`, `oauth::error`) instead of 500.
/// What counts: no connection within the timeout ([`RunError::Pool`]), work
/// past it ([`RunError::TimedOut`]), a connection that could not be opened,
/// a query whose connection broke (diesel's `ClosedConnection`, set
/// whenever libpq reports the connection bad, and `UnableToSendCommand`),
/// and a statement that waited past `lock_timeout` for a lock.
/// Anything else (a constraint, a row that does not parse, a panic) is a
/// bug of ours and stays a 500.
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    err.chain().any(cause_is_unavailable)
}

/// Logs an unavailable database once a second at most, whatever the number
/// of requests that met it (every surface's 503 calls this).
pub fn log_unavailable(err: &anyhow::Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        log::warn!("database unavailable, answering 503: {err:#}");
    }
}

fn cause_is_unavailable(cause: &(dyn std::error::Error + 'static)) -> bool {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    if let Some(e) = cause.downcast_ref::<RunError>() {
        return matches!(
            e,
            RunError::Pool(_) | RunError::TimedOut(_) | RunError::Saturated
        );
    }
    if let Some(e) = cause.downcast_ref::<DieselError>() {
        return match e {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => true,
            // `lock_timeout` ([`set_lock_timeout`]): diesel gives no SQLSTATE
            // (55P03) but the message, in English unless the server's
            // lc_messages says otherwise (then a 500).
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
                info.message() == "canceling statement due to lock timeout"
            }
            _ => false,
        };
    }
    if let Some(e) = cause.downcast_ref::<ConnectError>() {
        return match e {
            ConnectError::Connection(_) => true,
            ConnectError::Query(q) => cause_is_unavailable(q),
        };
    }
    cause.downcast_ref::<r2d2::PoolError>().is_some()
        || cause.downcast_ref::<diesel::ConnectionError>().is_some()
}

/// The database handle every part of the service shares.
#[derive(Clone)]
pub struct Database {
    pool: DbPool,
    backend: Backend,
    /// How long a request waits for the database (`DZDESK_DB_TIMEOUT_MS`).
    timeout: Duration,
    /// Where waits and timeouts are counted, once metrics are on
    /// ([`Database::observe_with`]); unset, counting costs one load.
    observer: Arc<OnceLock<PoolObserver>>,
    /// Statements of concurrent callers sent together ([`group`]).
    groups: Arc<group::Groups>,
}

/// The pool's metrics (`DZDESK_METRICS_LISTEN`), made and registered by
/// the service's metrics registry and fed here.
#[derive(Clone)]
pub struct PoolObserver {
    /// From asking for a connection to having one (or giving up), seconds.
    pub wait: prometheus::Histogram,
    /// Callers that got no connection ([`RunError::Pool`]) or no answer
    /// ([`RunError::TimedOut`]) within the timeout: once per caller.
    pub timeouts: prometheus::IntCounter,
    /// Requests of each group of statements sent together ([`group`]).
    pub group_size: prometheus::Histogram,
    /// Requests queued for a group now ([`group`]).
    pub group_waiting: prometheus::IntGauge,
}

/// Connections of the pool now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUse {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Builds the pool and checks that one connection can be made now, with
    /// the default [`DEFAULT_TIMEOUT`].
    pub fn connect(url: &DatabaseUrl, max_size: u32) -> Result<Self, r2d2::PoolError> {
        Self::connect_with_timeout(url, max_size, DEFAULT_TIMEOUT)
    }

    /// Builds the pool and checks that one connection can be made now.
    /// `timeout` bounds every wait for the database: a pooled connection,
    /// opening one, and the work of [`Database::run`].
    pub fn connect_with_timeout(
        url: &DatabaseUrl,
        max_size: u32,
        timeout: Duration,
    ) -> Result<Self, r2d2::PoolError> {
        let pool = Self::builder(max_size, timeout).build(Self::manager(url, timeout))?;
        Ok(Self {
            pool,
            backend: url.backend,
            timeout,
            observer: Arc::default(),
            groups: Arc::default(),
        })
    }

    /// One connection outside any pool, for short-lived commands (the CLI):
    /// a pool keeps helper threads that may still be opening connections
    /// when the process exits, and libpq crashes if torn down under them.
    pub fn establish(url: &DatabaseUrl) -> Result<AnyConnection, ConnectError> {
        Self::manager(url, DEFAULT_TIMEOUT).open()
    }

    /// Builds the pool without connecting: for a service that must start (and
    /// say "not ready") while its database is down.
    pub fn connect_lazy(url: &DatabaseUrl, max_size: u32) -> Self {
        let pool = Self::builder(max_size, DEFAULT_TIMEOUT)
            .build_unchecked(Self::manager(url, DEFAULT_TIMEOUT));
        Self {
            pool,
            backend: url.backend,
            timeout: DEFAULT_TIMEOUT,
            observer: Arc::default(),
            groups: Arc::default(),
        }
    }

    fn manager(url: &DatabaseUrl, timeout: Duration) -> ConnectionManager {
        ConnectionManager {
            url: url.clone(),
            timeout,
        }
    }

    /// Checkouts are tested (r2d2's `test_on_check_out`, on by default,
    /// said explicitly here), each connection at most once per
    /// [`CHECK_EVERY`]: a connection the server closed while it sat in the
    /// pool is replaced, not handed to a request.
    fn builder(max_size: u32, timeout: Duration) -> r2d2::Builder<ConnectionManager> {
        Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(Some(1))
            .test_on_check_out(true)
            .connection_timeout(timeout)
    }

    /// How long a request waits for the database.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Counts connection waits and timeouts into `observer` from now on
    /// (every clone of this handle shares it). Once per pool: a second
    /// observer is refused and returned.
    pub fn observe_with(&self, observer: PoolObserver) -> Result<(), PoolObserver> {
        self.observer.set(observer)
    }

    /// The pool's connections now (r2d2's state; no I/O).
    pub fn pool_use(&self) -> PoolUse {
        let state = self.pool.state();
        PoolUse {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// A pooled connection, blocking. Only for code that is not on an actix
    /// worker (CLI, start-up, inside [`Database::run`]).
    pub fn conn(&self) -> Result<DbConn, r2d2::PoolError> {
        self.pool.get()
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, never on
    /// an actix worker: both taking a connection and running a query block.
    ///
    /// Answers within the timeout (`DZDESK_DB_TIMEOUT_MS`), whatever the
    /// database does: no connection by then is [`RunError::Pool`], work not
    /// done by then [`RunError::TimedOut`] (a server that stopped answering
    /// holds a query for as long as it likes). A caller that stopped waiting
    /// (this timeout, or the request's own deadline) before a connection was
    /// found leaves nothing behind: `f` is not run at all. Once `f` has
    /// started it runs to its end on its thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<RunError> + Send + 'static,
    {
        let commitment = Arc::new(AtomicU8::new(WORKING));
        // Also when this future is dropped: after an answer, `f` is done
        // and it changes nothing.
        let _abandon_on_drop = AbandonOnDrop(commitment.clone());
        let work = self.run_with(f, Some(commitment.clone()));
        futures_util::pin_mut!(work);
        match actix_web::rt::time::timeout(self.timeout, &mut work).await {
            Ok(result) => result,
            // Given up before `f` reached a COMMIT: it will roll back
            // (`write_transaction`), so the 503 is true, nothing happened.
            Err(_) if abandon(&commitment) => {
                if let Some(o) = self.observer.get() {
                    o.timeouts.inc();
                }
                Err(RunError::TimedOut(self.timeout).into())
            }
            // A COMMIT is under way: what happened is decided, so wait for
            // it rather than answer 503 for work that took effect (a
            // rotated refresh token whose successor the client never got).
            Err(_) => work.await,
        }
    }

    /// [`Database::run`] without its deadline once `f` has started, for
    /// housekeeping whose work may take longer than a request should wait
    /// (the hourly sweep, usage writes, the revocation listener's load of the
    /// revoked jtis). Taking the connection is still bounded.
    pub async fn run_unbounded<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<RunError> + Send + 'static,
    {
        self.run_with(f, None).await
    }

    /// Runs `request`'s single statement (`alone`), which commits on its
    /// own, as [`commit_alone`] under [`Database::run`] would, but sent in
    /// one statement (`together`) with the concurrent requests of its kind
    /// `R` when there are some ([`group`]: group commit). Waiting for the
    /// group takes no connection and no thread. The deadline is `run`'s:
    /// given up before its group is sent, the request is left out (503,
    /// nothing done); once sent, its caller waits for the outcome. Callers
    /// on a backend other than PostgreSQL, or needing their statement in a
    /// transaction of theirs, use [`Database::run`].
    pub async fn together<R, T, E>(
        &self,
        request: R,
        together: group::Together<R, T>,
        alone: group::Alone<R, T>,
    ) -> Result<Option<T>, E>
    where
        R: Send + 'static,
        T: Send + 'static,
        E: From<RunError> + From<diesel::result::Error> + Send + 'static,
    {
        // Leaders leave a connection of the pool to the rest of the
        // service (telling a refusal apart, code exchanges, the readiness
        // probe); with a pool of one, or on SQLite (its writes are one at a
        // time, and a group is PostgreSQL's statement), the request is its
        // own statement on its own connection.
        let leaders = (self.pool.max_size() as usize)
            .saturating_sub(1)
            .min(group::IN_FLIGHT);
        if self.backend != Backend::Postgres {
            return self
                .run(move |conn| {
                    write_transaction(conn, |conn| alone(conn, &request).map_err(E::from))
                })
                .await;
        }
        if leaders == 0 {
            return self
                .run(move |conn| commit_alone(conn, |conn| alone(conn, &request)).map_err(E::from))
                .await;
        }
        let group = self.groups.of(together, alone);
        let commitment = Arc::new(AtomicU8::new(WORKING));
        let _abandon_on_drop = AbandonOnDrop(commitment.clone());
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        let member = group::Member {
            request,
            commitment: commitment.clone(),
            answer,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        };
        match group.enqueue(member, leaders, self.observer.get()) {
            Ok(true) => self.lead(group),
            Ok(false) => {}
            Err(_) => {
                if let Some(o) = self.observer.get() {
                    o.timeouts.inc();
                }
                return Err(RunError::Saturated.into());
            }
        }
        let done = match actix_web::rt::time::timeout(self.timeout, &mut answered).await {
            Ok(done) => done,
            Err(_) if abandon(&commitment) => {
                if let Some(o) = self.observer.get() {
                    o.timeouts.inc();
                }
                return Err(RunError::TimedOut(self.timeout).into());
            }
            // Sent: wait for the outcome (see `run`).
            Err(_) => answered.await,
        };
        // Dropped without an answer: the leader panicked. Past its deadline
        // when a refused group was sent again: not sent, 503.
        let done = done.map_err(|_| RunError::Blocking)?;
        if let (Err(RunError::TimedOut(_)), Some(o)) = (&done, self.observer.get()) {
            o.timeouts.inc();
        }
        done?.map_err(E::from)
    }

    /// Starts a leader of `group` ([`group`]) on the blocking pool: it
    /// takes a connection and sends groups until nobody waits; when the
    /// connection fails (or none comes within the timeout) it takes
    /// another while callers still wait.
    fn lead<R, T>(&self, group: Arc<group::Group<R, T>>)
    where
        R: Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let observer = self.observer.clone();
        let leading = group::Leading(Some(group));
        actix_web::rt::task::spawn_blocking(move || {
            let mut leading = leading;
            let Some(group) = leading.0.clone() else {
                return;
            };
            loop {
                let asked = Instant::now();
                let got = pool.get();
                if let Some(o) = observer.get() {
                    o.wait.observe(asked.elapsed().as_secs_f64());
                }
                let done = match got {
                    Ok(mut conn) => group.lead(&mut conn, observer.get()),
                    Err(e) => {
                        log::debug!("a group's leader got no connection: {e}");
                        // Not at once again (a pool that fails fast).
                        std::thread::sleep(Duration::from_millis(100));
                        group.done_if_idle(observer.get())
                    }
                };
                if done {
                    // No longer leading: counted down already.
                    leading.0 = None;
                    return;
                }
            }
        });
    }

    async fn run_with<T, E, F>(&self, f: F, commitment: Option<Arc<AtomicU8>>) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<RunError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let observer = self.observer.clone();
        let asked = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        actix_web::rt::task::spawn_blocking(move || {
            let got = pool.get();
            if let Some(o) = observer.get() {
                o.wait.observe(asked.elapsed().as_secs_f64());
                // Once per caller: whoever gives up first counts, this
                // thread (no connection) or `run` (its deadline).
                if got.is_err() && commitment.as_deref().is_none_or(abandon) {
                    o.timeouts.inc();
                }
            }
            let result = match got {
                // Nobody waits for the answer any more: do nothing.
                Ok(_) if tx.is_closed() => return,
                Ok(mut conn) => {
                    let _caller = CallerGuard::install(commitment);
                    f(&mut conn)
                }
                Err(e) => Err(RunError::from(e).into()),
            };
            let _ = tx.send(result);
        });
        // Dropped without an answer: `f` panicked.
        rx.await.map_err(|_| RunError::Blocking)?
    }

    /// True when the database answers a trivial query within the timeout.
    pub async fn ping(&self) -> bool {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(anyhow::Error::from))
            .await
            .is_ok()
    }

    /// Applies pending migrations (blocking). Safe with several instances
    /// starting at once on PostgreSQL: they queue on an advisory lock.
    pub fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        run_migrations(&mut conn).map(|_| ())
    }
}

/// Arbitrary constant naming our migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK_ID: i64 = 0x647a_6465_736b;

/// Advisory lock ids of [`exclusively`]: one per thing that must be done
/// once by whichever instance gets there first.
#[derive(Clone, Copy, Debug)]
pub enum Exclusive {
    /// Creating the first signing key of an empty database.
    FirstSigningKey,
}

impl Exclusive {
    fn lock_id(self) -> i64 {
        match self {
            Exclusive::FirstSigningKey => 0x647a_6465_736c,
        }
    }
}

/// Between [`Database::run`] and the work it runs on a blocking thread:
/// whether the caller may still give up (answering 503), or a COMMIT has
/// begun and the caller waits for it. Without it, work that outlived the
/// caller's timeout committed after the client was told it failed.
const WORKING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

thread_local! {
    static CALLER: std::cell::RefCell<Option<Arc<AtomicU8>>> =
        const { std::cell::RefCell::new(None) };
}

/// The caller gives up, unless a COMMIT has begun.
fn abandon(commitment: &AtomicU8) -> bool {
    commitment
        .compare_exchange(WORKING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Whether the work on this thread may commit: yes unless its caller gave
/// up; once yes, the caller waits for the outcome.
fn may_commit() -> bool {
    begin_commit().is_some()
}

/// [`may_commit`], and whether this call is the one that made the caller
/// wait (`Some(true)`): only that one may let it give up again
/// ([`end_commit_unused`]). `None`: the caller gave up.
fn begin_commit() -> Option<bool> {
    CALLER.with(|caller| begin_commit_of(caller.borrow().as_deref()))
}

/// [`begin_commit`] for the caller whose `commitment` it is (None: a caller
/// that cannot give up).
fn begin_commit_of(commitment: Option<&AtomicU8>) -> Option<bool> {
    let Some(commitment) = commitment else {
        return Some(false);
    };
    match commitment.compare_exchange(WORKING, COMMITTING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(true),
        Err(now) => (now == COMMITTING).then_some(false),
    }
}

/// The commit [`begin_commit`] announced changed nothing: the caller may
/// give up again (answering 503 is true again).
fn end_commit_unused() {
    CALLER.with(|caller| end_commit_unused_of(caller.borrow().as_deref()))
}

/// [`end_commit_unused`] for the caller whose `commitment` it is.
fn end_commit_unused_of(commitment: Option<&AtomicU8>) {
    if let Some(commitment) = commitment {
        let _ =
            commitment.compare_exchange(COMMITTING, WORKING, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Gives up for a caller of [`Database::run`] whose future was dropped
/// before an answer (the request's own deadline, a client gone): work not
/// yet committing then rolls back, as after `run`'s own deadline.
struct AbandonOnDrop(Arc<AtomicU8>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        abandon(&self.0);
    }
}

/// Installs the commitment of the work on this thread, until dropped
/// (blocking threads are reused).
struct CallerGuard;

impl CallerGuard {
    fn install(commitment: Option<Arc<AtomicU8>>) -> Self {
        CALLER.with(|caller| *caller.borrow_mut() = commitment);
        CallerGuard
    }
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        CALLER.with(|caller| *caller.borrow_mut() = None);
    }
}

/// A single-use claim (a code redeemed, a refresh token rotated) in a
/// [`write_transaction`]: `claim` makes the writes and reads back what it
/// claimed, None when its guard matched nothing; `accept` then checks what
/// was read back. It commits only when both succeed. A claim that matched
/// nothing, or that `accept` refused, rolls back without having asked to
/// commit, so the caller may still give up (503) while the refusal is told
/// apart and answered.
pub(crate) fn claim_once<R, T, E: From<diesel::result::Error>>(
    conn: &mut AnyConnection,
    claim: impl FnOnce(&mut AnyConnection) -> QueryResult<Option<R>>,
    accept: impl FnOnce(&R) -> Result<T, E>,
) -> Result<Option<(R, T)>, E> {
    enum Claim<E> {
        Missed,
        Failed(E),
    }
    impl<E: From<diesel::result::Error>> From<diesel::result::Error> for Claim<E> {
        fn from(e: diesel::result::Error) -> Self {
            Claim::Failed(E::from(e))
        }
    }
    let outcome = write_transaction(conn, |conn| {
        let Some(claimed) = claim(conn)? else {
            return Err(Claim::Missed);
        };
        let accepted = accept(&claimed).map_err(Claim::Failed)?;
        Ok((claimed, accepted))
    });
    match outcome {
        Ok(both) => Ok(Some(both)),
        Err(Claim::Missed) => Ok(None),
        Err(Claim::Failed(e)) => Err(e),
    }
}

/// Whether `conn` is outside any transaction: what it does next commits
/// (or is the outermost transaction's), not a transaction around it.
pub(crate) fn outside_transactions(conn: &mut AnyConnection) -> QueryResult<bool> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let depth = match conn {
        AnyConnection::Sqlite(lite) => {
            AnsiTransactionManager::transaction_manager_status_mut(lite).transaction_depth()?
        }
        AnyConnection::Postgresql(pg) => {
            AnsiTransactionManager::transaction_manager_status_mut(pg).transaction_depth()?
        }
    };
    Ok(depth.is_none())
}

/// One statement that commits on its own (autocommit), in the place of a
/// transaction around it: it saves the BEGIN and COMMIT round trips, as
/// many as the statement's own. The 503 rule of [`write_transaction`]
/// holds in its form for a COMMIT: the statement is sent only if the caller
/// of [`Database::run`] still waits, and from then on the caller waits for
/// it (a COMMIT under way), so a 503 still means nothing was done. The price
/// is the one a COMMIT always had, for longer: a server that stops
/// answering once the statement is sent holds the caller until it answers
/// again or the connection fails. A statement that matched nothing
/// (`Ok(None)`) changed nothing: the caller may give up again. Inside a
/// transaction already, the statement is just run (the transaction's
/// COMMIT decides).
pub(crate) fn commit_alone<T>(
    conn: &mut AnyConnection,
    statement: impl FnOnce(&mut AnyConnection) -> QueryResult<Option<T>>,
) -> QueryResult<Option<T>> {
    if !outside_transactions(conn)? {
        return statement(conn);
    }
    let Some(began) = begin_commit() else {
        return Err(diesel::result::Error::RollbackTransaction);
    };
    let done = statement(conn);
    if began && matches!(done, Ok(None)) {
        end_commit_unused();
    }
    done
}

/// Runs `f` in a transaction that writes: on SQLite it begins with
/// `BEGIN IMMEDIATE`, taking the write lock first, so that it waits for
/// another writer (`busy_timeout`) instead of failing at once with
/// "database is locked": SQLite does not wait when a transaction that has
/// read tries to start writing while another connection writes. Inside a
/// transaction already, a savepoint. PostgreSQL: a plain transaction. Every
/// transaction of ours that writes goes through here. Blocking.
pub fn write_transaction<T, E>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let outermost = outside_transactions(conn).map_err(E::from)?;
    // The outermost transaction commits only if the caller of
    // `Database::run` still waits for it (else it rolls back, and the 503
    // the caller gave is true).
    let guarded = |conn: &mut AnyConnection| -> Result<T, E> {
        let value = f(conn)?;
        if outermost && !may_commit() {
            return Err(E::from(diesel::result::Error::RollbackTransaction));
        }
        Ok(value)
    };
    let AnyConnection::Sqlite(lite) = conn else {
        return conn.transaction(guarded);
    };
    if !outermost {
        return conn.transaction(guarded);
    }
    AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN IMMEDIATE").map_err(E::from)?;
    let result = guarded(conn);
    let AnyConnection::Sqlite(lite) = conn else {
        return result;
    };
    match result {
        Ok(value) => match AnsiTransactionManager::commit_transaction(lite) {
            Ok(()) => Ok(value),
            Err(e) => {
                // A failed COMMIT (SQLITE_BUSY) leaves the transaction open.
                if let Err(rollback) = AnsiTransactionManager::rollback_transaction(lite) {
                    log::debug!("rollback after a failed commit: {rollback}");
                }
                Err(E::from(e))
            }
        },
        Err(e) => {
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(lite) {
                log::warn!("rollback failed: {rollback}");
            }
            Err(e)
        }
    }
}

/// Runs `f` in a transaction that no other connection to the database runs
/// at the same time: several instances starting at once on one database
/// take turns, and each finds what the one before it committed. PostgreSQL:
/// a transaction-scoped advisory lock (`pg_advisory_xact_lock`, released at
/// commit or rollback); SQLite: `BEGIN IMMEDIATE`, which takes the write
/// lock first (a deferred transaction that read before writing would fail
/// with SQLITE_BUSY instead of waiting). Transactions inside `f` are
/// savepoints. Blocking.
pub fn exclusively<T>(
    conn: &mut AnyConnection,
    lock: Exclusive,
    f: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    exclusively_by(conn, lock.lock_id(), f)
}

fn exclusively_by<T>(
    conn: &mut AnyConnection,
    lock_id: i64,
    f: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if let AnyConnection::Postgresql(_) = conn {
        return conn.transaction(|conn| {
            // Another instance may hold it for longer than lock_timeout;
            // `f` itself runs under lock_timeout again.
            let AnyConnection::Postgresql(pg) = conn else {
                unreachable!("matched above")
            };
            without_lock_timeout(pg, true, |pg| {
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({lock_id})")).execute(pg)
            })?;
            f(conn)
        });
    }
    if let AnyConnection::Sqlite(lite) = conn {
        AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN IMMEDIATE")?;
    }
    // Through the multi-backend connection, whose transaction manager is
    // the SQLite connection's: it now knows it is inside a transaction.
    let result = f(conn);
    if let AnyConnection::Sqlite(lite) = conn {
        match &result {
            Ok(_) => AnsiTransactionManager::commit_transaction(lite)?,
            Err(_) => {
                if let Err(e) = AnsiTransactionManager::rollback_transaction(lite) {
                    log::warn!("rollback failed: {e}");
                }
            }
        }
    }
    result
}

/// Runs `f` with `lock_timeout` off (`local`: until the transaction ends),
/// then sets it back to what it was, whatever `f` returned.
fn without_lock_timeout<T, E: From<diesel::result::Error>>(
    pg: &mut PgConnection,
    local: bool,
    f: impl FnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        was: String,
    }
    let set = |pg: &mut PgConnection, value: &str| {
        diesel::sql_query("SELECT set_config('lock_timeout', $1, $2)")
            .bind::<diesel::sql_types::Text, _>(value)
            .bind::<diesel::sql_types::Bool, _>(local)
            .execute(pg)
    };
    let was: Setting =
        diesel::sql_query("SELECT current_setting('lock_timeout') AS was").get_result(pg)?;
    set(pg, "0")?;
    let result = f(pg);
    // After a failed `f` (an aborted transaction, a broken connection) the
    // setting may not be restored: `f`'s error is the one to report, and
    // a transaction's rollback undoes a local one anyway.
    let restored = set(pg, &was.was);
    let value = result?;
    restored?;
    Ok(value)
}

/// Returns the versions it applied, oldest first (none: already up to date).
pub fn run_migrations(conn: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            // A session lock, not `exclusively`: each migration runs in a
            // transaction of its own. Without lock_timeout: another instance
            // may migrate for longer, and a migration may wait for a table
            // that requests use.
            without_lock_timeout(pg, false, |pg| {
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
                    .execute(pg)?;
                let result = pg
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|applied| names_of::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS, &applied))
                    .map_err(|e| anyhow::anyhow!("PostgreSQL migration failed: {e}"));
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
                    .execute(pg)?;
                result
            })
        }
        // Two instances starting at once on one file: the second waits for
        // the write lock (busy_timeout), then finds nothing pending (each
        // migration's own transaction is a savepoint inside this one).
        AnyConnection::Sqlite(_) => exclusively_by(conn, MIGRATION_LOCK_ID, |conn| match conn {
            AnyConnection::Sqlite(lite) => lite
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|applied| names_of::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS, &applied))
                .map_err(|e| anyhow::anyhow!("SQLite migration failed: {e}")),
            AnyConnection::Postgresql(_) => anyhow::bail!("not a SQLite connection"),
        }),
    }
}

/// The directory names (`2026-11-28-000001_foundation`) of the migrations
/// of `source` whose versions are `applied`, in that order.
fn names_of<DB: diesel::backend::Backend>(
    source: &EmbeddedMigrations,
    applied: &[diesel::migration::MigrationVersion<'_>],
) -> Vec<String>
where
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let all = MigrationSource::<DB>::migrations(source).unwrap_or_default();
    applied
        .iter()
        .map(|version| {
            all.iter()
                .map(|m| m.name())
                .find(|name| name.version() == *version)
                .map_or_else(|| version.to_string(), |name| name.to_string())
        })
        .collect()
}

/// `true` when a diesel error is a unique-constraint violation (both backends
/// report it with the same kind).
pub fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_connection_is_tested_once_check_every_has_passed() {
        let opened = Instant::now();
        let pooled = Pooled {
            conn: AnyConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap()),
            checked_at: opened,
        };
        assert!(!pooled.needs_check(opened));
        assert!(!pooled.needs_check(opened + CHECK_EVERY - Duration::from_millis(1)));
        assert!(pooled.needs_check(opened + CHECK_EVERY));
        // A clock read before the last check (another thread's `now`).
        assert!(!pooled.needs_check(opened - Duration::from_secs(5)));
    }

    #[test]
    fn postgres_urls_are_accepted_with_either_scheme() {
        for url in [
            "postgres://u:p@h/db",
            "postgresql://h/db",
            "POSTGRES://h/db",
        ] {
            assert_eq!(
                DatabaseUrl::parse(url).unwrap().backend(),
                Backend::Postgres
            );
        }
    }

    #[test]
    fn sqlite_urls_give_a_file_path() {
        let url = DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap();
        assert_eq!(url.sqlite_path(), Some("/tmp/x.db"));
        let url = DatabaseUrl::parse("sqlite://dzdesk-auth.db").unwrap();
        assert_eq!(url.sqlite_path(), Some("dzdesk-auth.db"));
    }

    #[test]
    fn unknown_schemes_and_bare_strings_are_refused() {
        for url in [
            "mysql://h/db",
            "host=localhost password=secret",
            "dzdesk.db",
            "sqlite://",
            "sqlite://:memory:",
        ] {
            assert!(DatabaseUrl::parse(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn lock_timeouts_are_told_by_english_messages_only() {
        for english in ["", "C", "POSIX", "C.UTF-8", "en_US.UTF-8", "en_GB"] {
            assert!(messages_in_english(english), "{english}");
        }
        for other in ["de_DE.UTF-8", "fr_FR", "ja_JP.UTF-8"] {
            assert!(!messages_in_english(other), "{other}");
        }
    }

    #[test]
    fn libpq_gets_timeouts_unless_the_url_sets_them() {
        let url = libpq_url("postgres://h/db", Duration::from_millis(2500));
        assert!(url.starts_with("postgres://h/db?connect_timeout=3&keepalives=1&"));
        assert!(url.contains("&tcp_user_timeout="), "{url}");
        // Below libpq's minimum of 2 s, 2 s.
        let url = libpq_url("postgres://h/db", Duration::from_millis(300));
        assert!(url.contains("connect_timeout=2&"), "{url}");
        let url = libpq_url(
            "postgres://h/db?sslmode=disable&connect_timeout=9",
            Duration::from_millis(2000),
        );
        assert!(url.starts_with("postgres://h/db?sslmode=disable&connect_timeout=9&keepalives=1"));
        assert_eq!(url.matches("connect_timeout").count(), 1, "{url}");
        // No startup `options` (poolers refuse it; PGOPTIONS stays the
        // operator's): lock_timeout is a SET (set_lock_timeout).
        assert!(!url.contains("options"), "{url}");
    }

    #[test]
    fn only_an_unreachable_database_counts_as_unavailable() {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        let closed = || {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection,
                Box::new("server closed the connection unexpectedly".to_owned()),
            )
        };
        let unavailable: Vec<anyhow::Error> = vec![
            RunError::TimedOut(DEFAULT_TIMEOUT).into(),
            closed().into(),
            anyhow::Error::from(closed()).context("loading the grant"),
            DieselError::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand,
                Box::new("no connection to the server".to_owned()),
            )
            .into(),
            ConnectError::from(diesel::ConnectionError::BadConnection("refused".into())).into(),
            DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new("canceling statement due to lock timeout".to_owned()),
            )
            .into(),
        ];
        for e in &unavailable {
            assert!(is_unavailable(e), "{e:#}");
        }
        let bugs: Vec<anyhow::Error> = vec![
            RunError::Blocking.into(),
            DieselError::NotFound.into(),
            DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                Box::new("duplicate key".to_owned()),
            )
            .into(),
            anyhow::anyhow!("stored scopes do not parse"),
            DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new("column \"x\" does not exist".to_owned()),
            )
            .into(),
        ];
        for e in &bugs {
            assert!(!is_unavailable(e), "{e:#}");
        }
    }

    #[actix_web::test]
    async fn work_whose_caller_gave_up_before_it_had_a_connection_is_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let url =
            DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        let db = Database::connect_with_timeout(&url, 1, Duration::from_secs(5)).unwrap();
        // The only connection is busy for 300 ms.
        let held = db.conn().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let work = db.run(move |_conn| {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, anyhow::Error>(())
        });
        // The caller stops waiting (a request's deadline) after 50 ms.
        let gave_up = actix_web::rt::time::timeout(Duration::from_millis(50), work).await;
        assert!(gave_up.is_err());
        release.join().unwrap();
        // The connection is free now; the abandoned work had its chance.
        db.run(|conn| conn.batch_execute("SELECT 1").map_err(anyhow::Error::from))
            .await
            .unwrap();
        assert!(!ran.load(Ordering::SeqCst), "abandoned work ran");
    }

    #[actix_web::test]
    async fn run_answers_within_its_timeout_when_no_connection_comes() {
        let dir = tempfile::tempdir().unwrap();
        let url =
            DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("t.db").display())).unwrap();
        // Opening the pool waits for its first connection, which can take
        // longer than 200 ms on a loaded machine (CI failed so once): open it
        // with time to spare, then give requests 200 ms.
        let mut db = Database::connect_with_timeout(&url, 1, Duration::from_secs(10)).unwrap();
        db.timeout = Duration::from_millis(200);
        let held = db.conn().unwrap();
        let started = std::time::Instant::now();
        let result = db
            .run(|conn| conn.batch_execute("SELECT 1").map_err(anyhow::Error::from))
            .await;
        let err = result.unwrap_err();
        assert!(is_unavailable(&err), "{err:#}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(held);
    }

    #[test]
    fn errors_and_debug_never_repeat_the_url() {
        let err = DatabaseUrl::parse("mysql://user:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"));
        let url = DatabaseUrl::parse("postgres://user:hunter2@h/db").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
