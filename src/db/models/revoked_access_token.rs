use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::revoked_access_tokens;
use crate::db::{is_unique_violation, AnyConnection};

/// An access token revoked on its own (RFC 7009), by `jti`, kept until the
/// token would have expired anyway.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = revoked_access_tokens)]
pub struct RevokedAccessToken {
    pub jti: String,
    pub grant_id: String,
    pub revoked_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

// Database methods
impl RevokedAccessToken {
    /// Records the revocation; revoking twice is not an error.
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        // Own (nested) transaction: see GrantRow::insert_if_missing.
        let inserted = crate::db::write_transaction(conn, |conn| {
            diesel::insert_into(revoked_access_tokens::table)
                .values(self)
                .execute(conn)
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(
            revoked_access_tokens::table.filter(revoked_access_tokens::expires_at.lt(before)),
        )
        .execute(conn)
    }
}

impl RevokedAccessToken {
    /// The jtis of revoked access tokens that have not expired yet, with
    /// their expiry (epoch seconds); at most `limit` of them.
    pub fn live_jtis(
        conn: &mut AnyConnection,
        now: NaiveDateTime,
        limit: usize,
    ) -> QueryResult<std::collections::HashMap<String, i64>> {
        let rows: Vec<(String, NaiveDateTime)> = revoked_access_tokens::table
            .filter(revoked_access_tokens::expires_at.gt(now))
            .select((
                revoked_access_tokens::jti,
                revoked_access_tokens::expires_at,
            ))
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(jti, exp)| (jti, exp.and_utc().timestamp()))
            .collect())
    }
}
