use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::api_key_usage;
use crate::db::AnyConnection;

/// One `/v1` request made with an API key (the API usage log), as written.
#[derive(Insertable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = api_key_usage)]
// Explicit NULLs (what COPY takes; the same rows as DEFAULT would give).
#[diesel(treat_none_as_default_value = false)]
pub struct NewUsageRow {
    pub key_id: String,
    pub at: NaiveDateTime,
    pub method: String,
    /// Without the query string, bounded in length.
    pub path: String,
    pub status: i32,
    pub client_ip: Option<String>,
    /// The slowest of the requests it stands for.
    pub duration_ms: i32,
    /// How many identical requests it stands for (1 or more).
    pub requests: i32,
}

/// A stored row of the usage log.
#[derive(Queryable, Selectable, Debug, Clone, PartialEq, Eq)]
#[diesel(table_name = api_key_usage)]
pub struct UsageRow {
    pub id: i64,
    pub key_id: String,
    pub at: NaiveDateTime,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub client_ip: Option<String>,
    pub duration_ms: i32,
    pub requests: i32,
}

/// Which answers a usage listing keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// 400 to 499.
    ClientErrors,
    /// 500 to 599.
    ServerErrors,
    /// 429 only.
    RateLimited,
}

/// Which rows of one key a listing wants, newest first.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub status: Option<StatusFilter>,
    /// At or after this instant.
    pub since: Option<NaiveDateTime>,
    /// Strictly before this `(at, id)` (the keyset cursor).
    pub before: Option<(NaiveDateTime, i64)>,
}

// Database methods
impl UsageRow {
    /// Writes `rows` in one statement (one commit), on the concrete
    /// connection: diesel's batch insert does not compile through the
    /// multi-backend connection. The caller keeps batches small
    /// (`api::usage_log::MAX_BATCH`), well within SQLite's bound-parameter
    /// limit (8 per row in its multi-row INSERT).
    pub fn insert_batch(conn: &mut AnyConnection, rows: &[NewUsageRow]) -> QueryResult<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        match conn {
            AnyConnection::Postgresql(pg) => Self::insert_copy(pg, rows),
            AnyConnection::Sqlite(sqlite) => diesel::insert_into(api_key_usage::table)
                .values(rows)
                .execute(sqlite),
        }
    }

    /// PostgreSQL: the batch by `COPY ... FROM STDIN` (binary): no SQL to
    /// parse or plan, and the server inserts the rows in bulk. The usage
    /// log's writer is the one steady writer under load, on the database's
    /// cores: a multi-row INSERT of 7,000 parameters cost it about a
    /// third of a core at 35,000 rows a second.
    fn insert_copy(pg: &mut diesel::PgConnection, rows: &[NewUsageRow]) -> QueryResult<usize> {
        diesel::copy_from(api_key_usage::table)
            .from_insertable(rows)
            .execute(pg)
    }

    /// Up to `limit` rows of `key_id` matching `query`, newest first
    /// (`at`, then `id`, descending: the order of the index).
    pub fn page(
        conn: &mut AnyConnection,
        key_id: &str,
        query: &UsageQuery,
        limit: i64,
    ) -> QueryResult<Vec<UsageRow>> {
        let mut q = api_key_usage::table
            .filter(api_key_usage::key_id.eq(key_id.to_owned()))
            .select(UsageRow::as_select())
            .order((api_key_usage::at.desc(), api_key_usage::id.desc()))
            .limit(limit)
            .into_boxed();
        q = match query.status {
            None => q,
            Some(StatusFilter::ClientErrors) => q.filter(api_key_usage::status.between(400, 499)),
            Some(StatusFilter::ServerErrors) => q.filter(api_key_usage::status.between(500, 599)),
            Some(StatusFilter::RateLimited) => q.filter(api_key_usage::status.eq(429)),
        };
        if let Some(since) = query.since {
            q = q.filter(api_key_usage::at.ge(since));
        }
        if let Some((at, id)) = query.before {
            q = q.filter(
                api_key_usage::at
                    .lt(at)
                    .or(api_key_usage::at.eq(at).and(api_key_usage::id.lt(id))),
            );
        }
        q.load(conn)
    }

    /// When `key_id` was used at or after `since`, and how many requests
    /// each time stands for: the newest `max` rows at most (for the hourly
    /// chart: memory stays bounded between sweeps).
    pub fn times_since(
        conn: &mut AnyConnection,
        key_id: &str,
        since: NaiveDateTime,
        max: i64,
    ) -> QueryResult<Vec<(NaiveDateTime, i32)>> {
        api_key_usage::table
            .filter(api_key_usage::key_id.eq(key_id))
            .filter(api_key_usage::at.ge(since))
            .order((api_key_usage::at.desc(), api_key_usage::id.desc()))
            .limit(max)
            .select((api_key_usage::at, api_key_usage::requests))
            .load(conn)
    }

    /// Retention: deletes rows older than `before` (by the index on `at`),
    /// then, for every key with more than `max_per_key` rows, its oldest
    /// beyond that many. `keys`: only these can be past the cap (the keys
    /// written since the last sweep: each costs one probe of the per-key
    /// index); None: find them with one scan of the whole table. Returns
    /// how many rows went.
    pub fn sweep(
        conn: &mut AnyConnection,
        before: NaiveDateTime,
        max_per_key: i64,
        keys: Option<&[String]>,
    ) -> QueryResult<usize> {
        let mut deleted = diesel::delete(api_key_usage::table.filter(api_key_usage::at.lt(before)))
            .execute(conn)?;
        let crowded: Vec<String> = match keys {
            Some(keys) => keys.to_vec(),
            None => api_key_usage::table
                .group_by(api_key_usage::key_id)
                .having(diesel::dsl::count_star().gt(max_per_key))
                .select(api_key_usage::key_id)
                .load(conn)?,
        };
        for key_id in crowded {
            // The newest row past the cap: it and everything older go.
            let edge: Option<(NaiveDateTime, i64)> = api_key_usage::table
                .filter(api_key_usage::key_id.eq(&key_id))
                .order((api_key_usage::at.desc(), api_key_usage::id.desc()))
                .select((api_key_usage::at, api_key_usage::id))
                .offset(max_per_key)
                .first(conn)
                .optional()?;
            let Some((at, id)) = edge else { continue };
            deleted += diesel::delete(
                api_key_usage::table
                    .filter(api_key_usage::key_id.eq(&key_id))
                    .filter(
                        api_key_usage::at
                            .lt(at)
                            .or(api_key_usage::at.eq(at).and(api_key_usage::id.le(id))),
                    ),
            )
            .execute(conn)?;
        }
        Ok(deleted)
    }
}
