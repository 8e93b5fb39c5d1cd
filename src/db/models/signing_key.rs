use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::signing_keys;
use crate::db::AnyConnection;

/// An access-token signing key, shared by every instance on the database.
#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = signing_keys)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_jwk: String,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

// Database methods
impl SigningKeyRow {
    /// Keys still worth loading: the active ones, and retired ones retired
    /// after `retired_after` (tokens they signed may still be valid).
    pub fn load_current(
        conn: &mut AnyConnection,
        retired_after: NaiveDateTime,
    ) -> QueryResult<Vec<SigningKeyRow>> {
        signing_keys::table
            .filter(
                signing_keys::retired_at
                    .is_null()
                    .or(signing_keys::retired_at.gt(retired_after)),
            )
            .order(signing_keys::created_at.desc())
            .select(SigningKeyRow::as_select())
            .load(conn)
    }

    /// Inserts `self` as the new signing key and retires every other active
    /// key, in one transaction.
    pub fn insert_and_retire_others(
        &self,
        conn: &mut AnyConnection,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        conn.transaction(|conn| {
            diesel::update(
                signing_keys::table
                    .filter(signing_keys::retired_at.is_null())
                    .filter(signing_keys::kid.ne(&self.kid)),
            )
            .set(signing_keys::retired_at.eq(now))
            .execute(conn)?;
            diesel::insert_into(signing_keys::table)
                .values(self)
                .execute(conn)
                .map(|_| ())
        })
    }
}
