use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::db::models::User;
use crate::db::schema::{consents, sessions, users};
use crate::db::AnyConnection;
use crate::tokens;

/// A browser sign-in. The cookie holds a random secret; the row holds only its
/// SHA-256, so a database dump does not sign anybody in.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// Absolute lifetime of a browser session.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

// Database methods
impl Session {
    /// Creates a session for `user_id` and returns the cookie secret (shown
    /// once, never stored). Expired sessions of the same user are purged.
    pub fn create(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<String> {
        let secret = tokens::new_secret("dzsess_");
        let row = Session {
            id: tokens::hash_secret(&secret),
            user_id: user_id.to_owned(),
            created_at: now,
            expires_at: now + SESSION_LIFETIME,
        };
        crate::db::write_transaction(conn, |conn| {
            diesel::delete(
                sessions::table
                    .filter(sessions::user_id.eq(user_id))
                    .filter(sessions::expires_at.le(now)),
            )
            .execute(conn)?;
            diesel::insert_into(sessions::table)
                .values(&row)
                .execute(conn)
        })?;
        Ok(secret)
    }

    /// The live session for a cookie secret, with its user: not expired, user
    /// not disabled.
    pub fn find_active(
        conn: &mut AnyConnection,
        secret: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(Session, User)>> {
        sessions::table
            .inner_join(users::table)
            .filter(sessions::id.eq(tokens::hash_secret(secret)))
            .filter(sessions::expires_at.gt(now))
            .filter(users::disabled.eq(false))
            .select((Session::as_select(), User::as_select()))
            .first(conn)
            .optional()
    }

    /// [`Session::find_active`], and in the same statement the scopes the
    /// user has approved for `client_id`, if any (`consents.scopes`, as
    /// [`super::ConsentRow::find`] reads them): the authorization endpoint needs both,
    /// in one round trip instead of two.
    pub fn find_active_with_consent(
        conn: &mut AnyConnection,
        secret: &str,
        now: NaiveDateTime,
        client_id: &str,
    ) -> QueryResult<Option<(Session, User, Option<String>)>> {
        sessions::table
            .inner_join(users::table)
            .left_join(
                consents::table.on(consents::user_id
                    .eq(sessions::user_id)
                    .and(consents::client_id.eq(client_id))),
            )
            .filter(sessions::id.eq(tokens::hash_secret(secret)))
            .filter(sessions::expires_at.gt(now))
            .filter(users::disabled.eq(false))
            .select((
                Session::as_select(),
                User::as_select(),
                consents::scopes.nullable(),
            ))
            .first(conn)
            .optional()
    }

    pub fn delete(conn: &mut AnyConnection, id: &str) -> QueryResult<usize> {
        diesel::delete(sessions::table.find(id)).execute(conn)
    }

    /// Ends every browser session of `user_id` ("Sign out everywhere").
    /// OAuth grants and API keys are not sessions: they stay.
    pub fn delete_all_for_user(conn: &mut AnyConnection, user_id: &str) -> QueryResult<usize> {
        diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(conn)
    }

    /// The user's sessions that have not expired.
    pub fn count_live_for_user(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<i64> {
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::expires_at.gt(now))
            .count()
            .get_result(conn)
    }

    pub fn count_for_user(conn: &mut AnyConnection, user_id: &str) -> QueryResult<i64> {
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .count()
            .get_result(conn)
    }
}
