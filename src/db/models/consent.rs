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
        Self::parse_scopes(&self.scopes)
    }

    /// The approved scopes of a stored `consents.scopes` (none if it does
    /// not parse: a consent page is shown again).
    pub fn parse_scopes(stored: &str) -> ScopeSet {
        ScopeSet::parse(stored).unwrap_or_default()
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
            // In its own (nested: SAVEPOINT) transaction, as
            // `GrantRow::insert_if_missing`: a caller may already be in one
            // (a pushed request's), which on PostgreSQL the unique violation
            // of a concurrent approval would otherwise abort.
            let inserted = crate::db::write_transaction(conn, |conn| {
                diesel::insert_into(consents::table)
                    .values(&ConsentRow {
                        user_id: user_id.to_owned(),
                        client_id: client_id.to_owned(),
                        scopes: scopes.to_string(),
                        created_at: now,
                        updated_at: now,
                    })
                    .execute(conn)
            });
            match inserted {
                Ok(_) => return Ok(()),
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
        crate::db::write_transaction(conn, |conn| {
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

/// A client the user has granted access to, for the connected-apps page.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    pub client_id: String,
    pub client_name: String,
    pub scopes: String,
    pub granted_at: NaiveDateTime,
}

impl ConsentRow {
    /// The user's remembered consents with the clients' names, newest first.
    pub fn connected_apps(
        conn: &mut AnyConnection,
        user_id: &str,
    ) -> QueryResult<Vec<ConnectedApp>> {
        use crate::db::schema::clients;
        let rows: Vec<(String, String, String, NaiveDateTime)> = consents::table
            .inner_join(clients::table)
            .filter(consents::user_id.eq(user_id))
            .order(consents::updated_at.desc())
            .select((
                consents::client_id,
                clients::name,
                consents::scopes,
                consents::updated_at,
            ))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(
                |(client_id, client_name, scopes, granted_at)| ConnectedApp {
                    client_id,
                    client_name,
                    scopes,
                    granted_at,
                },
            )
            .collect())
    }

    /// Forgets the consent and revokes every grant of the user for the
    /// client (their refresh tokens stop working, their access tokens fail
    /// introspection), in one transaction. Returns the grants revoked.
    pub fn disconnect(
        conn: &mut AnyConnection,
        user_id: &str,
        client_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        use crate::db::schema::{authorization_codes, grants};
        crate::db::write_transaction(conn, |conn| {
            let revoked = diesel::update(
                grants::table
                    .filter(grants::user_id.eq(user_id))
                    .filter(grants::client_id.eq(client_id))
                    .filter(grants::revoked_at.is_null()),
            )
            .set(grants::revoked_at.eq(now))
            .execute(conn)?;
            diesel::delete(consents::table.find((user_id, client_id))).execute(conn)?;
            // Codes issued but not yet redeemed would start new grants.
            diesel::delete(
                authorization_codes::table
                    .filter(authorization_codes::user_id.eq(user_id))
                    .filter(authorization_codes::client_id.eq(client_id))
                    .filter(authorization_codes::used_at.is_null()),
            )
            .execute(conn)?;
            Ok(revoked)
        })
    }
}
