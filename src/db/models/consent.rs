use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::consents;
use crate::db::{is_unique_violation, AnyConnection};
use crate::domain::ScopeSet;

/// What a user has approved for a client (remembered consent).
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = consents)]
pub struct ConsentRow {
    pub user_id: String,
    pub client_id: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

// Local methods
impl ConsentRow {
    pub fn scopes(&self) -> ScopeSet {
        ScopeSet::parse(&self.scopes).unwrap_or_default()
    }
}

// Database methods
impl ConsentRow {
    pub fn find(
        conn: &mut AnyConnection,
        user_id: &str,
        client_id: &str,
    ) -> QueryResult<Option<Self>> {
        consents::table
            .find((user_id, client_id))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Adds `scopes` to what the user has approved for the client. Two
    /// approvals racing to create the row both end up recorded: the one that
    /// loses the insert merges into the winner's row.
    pub fn remember(
        conn: &mut AnyConnection,
        user_id: &str,
        client_id: &str,
        scopes: &ScopeSet,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        if Self::find(conn, user_id, client_id)?.is_none() {
            let inserted = diesel::insert_into(consents::table)
                .values(&ConsentRow {
                    user_id: user_id.to_owned(),
                    client_id: client_id.to_owned(),
                    scopes: scopes.to_string(),
                    created_at: now,
                    updated_at: now,
                })
                .execute(conn);
            match inserted {
                Ok(_) => return Ok(()),
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
        conn.transaction(|conn| {
            // Write first: it takes the row lock (PostgreSQL) or the write
            // lock (SQLite) before the read, so a concurrent merge is seen
            // and no deferred SQLite transaction has to upgrade.
            diesel::update(consents::table.find((user_id, client_id)))
                .set(consents::updated_at.eq(now))
                .execute(conn)?;
            let existing = Self::find(conn, user_id, client_id)?
                .map(|c| c.scopes())
                .unwrap_or_default();
            let all: ScopeSet = existing.iter().chain(scopes.iter()).collect();
            diesel::update(consents::table.find((user_id, client_id)))
                .set((
                    consents::scopes.eq(all.to_string()),
                    consents::updated_at.eq(now),
                ))
                .execute(conn)
                .map(|_| ())
        })
    }
}
