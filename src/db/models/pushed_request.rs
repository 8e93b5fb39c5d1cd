use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::pushed_requests;
use crate::db::AnyConnection;

/// A pushed authorization request (RFC 9126). The row's id is the SHA-256
/// of the request_uri's random part; the request_uri itself is never
/// stored.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = pushed_requests)]
pub struct PushedRequestRow {
    pub id: String,
    pub client_id: String,
    /// The pushed parameters, form-encoded.
    pub params: String,
    /// None until a browser takes the request_uri; then the SHA-256 of
    /// that browser's binding cookie.
    pub browser_hash: Option<String>,
    /// A sign-in the request forced (prompt=login, max_age): only a
    /// session that began at or after this satisfies it.
    pub reauth_after: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

// Database methods
impl PushedRequestRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(pushed_requests::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    /// The row, if it has not expired at `now`.
    pub fn find_live(
        conn: &mut AnyConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Self>> {
        pushed_requests::table
            .find(id)
            .filter(pushed_requests::expires_at.gt(now))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Binds a pushed request no browser has taken yet to `browser_hash`,
    /// until `until`. `UPDATE ... WHERE browser_hash IS NULL` is atomic on
    /// both backends: of two browsers, exactly one sees true.
    pub fn take(
        conn: &mut AnyConnection,
        id: &str,
        browser_hash: &str,
        now: NaiveDateTime,
        until: NaiveDateTime,
    ) -> QueryResult<bool> {
        let updated = diesel::update(
            pushed_requests::table
                .filter(pushed_requests::id.eq(id))
                .filter(pushed_requests::browser_hash.is_null())
                .filter(pushed_requests::expires_at.gt(now)),
        )
        .set((
            pushed_requests::browser_hash.eq(browser_hash),
            pushed_requests::expires_at.eq(until),
        ))
        .execute(conn)?;
        Ok(updated == 1)
    }

    /// Records that the taken request sent its browser to sign in again
    /// at `now` (kept if already set: a later mark would only raise the
    /// bar for a sign-in already under way).
    pub fn mark_reauth(
        conn: &mut AnyConnection,
        id: &str,
        browser_hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let updated = diesel::update(
            pushed_requests::table
                .filter(pushed_requests::id.eq(id))
                .filter(pushed_requests::browser_hash.eq(browser_hash))
                .filter(pushed_requests::reauth_after.is_null()),
        )
        .set(pushed_requests::reauth_after.eq(now))
        .execute(conn)?;
        Ok(updated == 1)
    }

    /// Ends a taken request: false when it was already ended (another tab
    /// of the same browser finished first).
    pub fn finish(conn: &mut AnyConnection, id: &str, browser_hash: &str) -> QueryResult<bool> {
        let deleted = diesel::delete(
            pushed_requests::table
                .filter(pushed_requests::id.eq(id))
                .filter(pushed_requests::browser_hash.eq(browser_hash)),
        )
        .execute(conn)?;
        Ok(deleted == 1)
    }

    /// Deletes requests that expired before `before`.
    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(pushed_requests::table.filter(pushed_requests::expires_at.lt(before)))
            .execute(conn)
    }

    /// How many live requests a client has pushed and no browser has
    /// taken: a bound on what one client can store.
    pub fn count_waiting(
        conn: &mut AnyConnection,
        client_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<i64> {
        pushed_requests::table
            .filter(pushed_requests::client_id.eq(client_id))
            .filter(pushed_requests::browser_hash.is_null())
            .filter(pushed_requests::expires_at.gt(now))
            .count()
            .get_result(conn)
    }
}
