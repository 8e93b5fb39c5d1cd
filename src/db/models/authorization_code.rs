use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::authorization_codes;
use crate::db::AnyConnection;

/// An authorization code (RFC 6749 4.1.2). The row's id is the SHA-256 of the
/// code; the code itself is never stored.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = authorization_codes)]
pub struct AuthorizationCodeRow {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The redirect_uri of the authorization request, exactly as sent.
    pub redirect_uri: String,
    pub scopes: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub grant_id: Option<String>,
    /// OpenID Connect: the authorization request's `nonce` (returned as is
    /// in the ID token), when the user signed in, and the session's `sid`.
    pub nonce: Option<String>,
    pub auth_time: Option<NaiveDateTime>,
    pub sid: Option<String>,
}

// Database methods
impl AuthorizationCodeRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(authorization_codes::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Self>> {
        authorization_codes::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Marks the code used by the grant `grant_id`. Returns false when another
    /// redemption got there first: `UPDATE ... WHERE used_at IS NULL` is
    /// atomic on both backends, so exactly one caller sees true.
    pub fn consume(
        conn: &mut AnyConnection,
        id: &str,
        grant_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let updated = diesel::update(
            authorization_codes::table
                .filter(authorization_codes::id.eq(id))
                .filter(authorization_codes::used_at.is_null()),
        )
        .set((
            authorization_codes::used_at.eq(now),
            authorization_codes::grant_id.eq(grant_id),
        ))
        .execute(conn)?;
        Ok(updated == 1)
    }

    /// Deletes codes that expired before `before` (used or not).
    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(
            authorization_codes::table.filter(authorization_codes::expires_at.lt(before)),
        )
        .execute(conn)
    }
}
