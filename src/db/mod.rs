//! The one place that owns the database: the connection type over both
//! backends, the r2d2 pool, migrations, and the helper that runs diesel off the
//! actix worker threads.
//!
//! Rules that keep one code base working on PostgreSQL and SQLite (see
//! `shared/stack-notes.md`): only the column types both share, `returning` into
//! `Queryable` structs, one row per `insert`, and a connection manager of our
//! own that picks the backend from the URL scheme and keeps the real error.

pub mod models;
pub mod schema;
pub mod sealed;
mod types;

use std::fmt;
use std::time::Duration;

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
}

impl ManageConnection for ConnectionManager {
    type Connection = AnyConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<AnyConnection, ConnectError> {
        match self.url.backend {
            Backend::Postgres => Ok(AnyConnection::Postgresql(PgConnection::establish(
                &self.url.target,
            )?)),
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

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectError> {
        conn.batch_execute("SELECT 1")?;
        Ok(())
    }

    fn has_broken(&self, _conn: &mut AnyConnection) -> bool {
        false
    }
}

pub type DbPool = Pool<ConnectionManager>;
pub type DbConn = PooledConnection<ConnectionManager>;

/// Errors of [`Database::run`] that are not the closure's own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no database connection available")]
    Pool(#[from] r2d2::PoolError),
    #[error("the database task panicked or was cancelled")]
    Blocking,
}

/// The database handle every part of the service shares.
#[derive(Clone)]
pub struct Database {
    pool: DbPool,
    backend: Backend,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

impl Database {
    /// Builds the pool and checks that one connection can be made now.
    pub fn connect(url: &DatabaseUrl, max_size: u32) -> Result<Self, r2d2::PoolError> {
        let pool = Self::builder(max_size).build(ConnectionManager { url: url.clone() })?;
        Ok(Self {
            pool,
            backend: url.backend,
        })
    }

    /// One connection outside any pool, for short-lived commands (the CLI):
    /// a pool keeps helper threads that may still be opening connections
    /// when the process exits, and libpq crashes if torn down under them.
    pub fn establish(url: &DatabaseUrl) -> Result<AnyConnection, ConnectError> {
        ConnectionManager { url: url.clone() }.connect()
    }

    /// Builds the pool without connecting: for a service that must start (and
    /// say "not ready") while its database is down.
    pub fn connect_lazy(url: &DatabaseUrl, max_size: u32) -> Self {
        let pool = Self::builder(max_size).build_unchecked(ConnectionManager { url: url.clone() });
        Self {
            pool,
            backend: url.backend,
        }
    }

    fn builder(max_size: u32) -> r2d2::Builder<ConnectionManager> {
        Pool::builder()
            .max_size(max_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_TIMEOUT)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection, blocking. Only for code that is not on an actix
    /// worker (CLI, start-up, inside [`Database::run`]).
    pub fn conn(&self) -> Result<DbConn, r2d2::PoolError> {
        self.pool.get()
    }

    /// Runs `f` with a pooled connection on the blocking thread pool, never on
    /// an actix worker: both taking a connection and running a query block.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<RunError> + Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::rt::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(RunError::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|_| RunError::Blocking)?
    }

    /// True when the database answers a trivial query within two seconds.
    pub async fn ping(&self) -> bool {
        let pool = self.pool.clone();
        actix_web::rt::task::spawn_blocking(move || {
            pool.get_timeout(PING_TIMEOUT)
                .ok()
                .is_some_and(|mut conn| conn.batch_execute("SELECT 1").is_ok())
        })
        .await
        .unwrap_or(false)
    }

    /// Applies pending migrations (blocking). Safe with several instances
    /// starting at once on PostgreSQL: they queue on an advisory lock.
    pub fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        run_migrations(&mut conn)
    }
}

/// Arbitrary constant naming our migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK_ID: i64 = 0x647a_6465_736b;

pub fn run_migrations(conn: &mut AnyConnection) -> anyhow::Result<()> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
                .execute(pg)?;
            let result = pg
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("PostgreSQL migration failed: {e}"));
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
                .execute(pg)?;
            result
        }
        AnyConnection::Sqlite(lite) => lite
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("SQLite migration failed: {e}")),
    }
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
    fn errors_and_debug_never_repeat_the_url() {
        let err = DatabaseUrl::parse("mysql://user:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"));
        let url = DatabaseUrl::parse("postgres://user:hunter2@h/db").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
