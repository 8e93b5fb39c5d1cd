use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::{GrantRow, User};
use crate::db::schema::{grants, refresh_tokens, users};
use crate::db::AnyConnection;

/// A refresh token (`dzr_...`). The row's id is the SHA-256 of the token.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub id: String,
    pub grant_id: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

// Database methods
impl RefreshTokenRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(refresh_tokens::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Self>> {
        refresh_tokens::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// The token with its grant and the grant's user, in one round trip.
    pub fn find_with_grant(
        conn: &mut AnyConnection,
        id: &str,
    ) -> QueryResult<Option<(Self, GrantRow, User)>> {
        refresh_tokens::table
            .inner_join(grants::table.inner_join(users::table))
            .filter(refresh_tokens::id.eq(id))
            .select((Self::as_select(), GrantRow::as_select(), User::as_select()))
            .first(conn)
            .optional()
    }

    /// Marks the token rotated. False when it already was: the affected-row
    /// count of `UPDATE ... WHERE used_at IS NULL` lets exactly one of many
    /// concurrent uses win.
    pub fn mark_used(conn: &mut AnyConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
        let updated = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::id.eq(id))
                .filter(refresh_tokens::used_at.is_null()),
        )
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)?;
        Ok(updated == 1)
    }
}

impl RefreshTokenRow {
    /// Deletes tokens that expired before `before` (used or not).
    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(before)))
            .execute(conn)
    }
}
