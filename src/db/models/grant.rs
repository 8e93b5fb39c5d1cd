use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::grants;
use crate::db::{is_unique_violation, AnyConnection};

/// A grant: the family of tokens one authorization (or one client's
/// client_credentials use) started. Access tokens carry its id.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = grants)]
pub struct GrantRow {
    pub id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

// Local methods
impl GrantRow {
    /// The id of a client's client_credentials grant: one per client, so
    /// issuing a token costs no write.
    pub fn client_credentials_id(client_id: &str) -> String {
        format!("cc_{client_id}")
    }
}

// Database methods
impl GrantRow {
    /// Inserts the grant; an existing row with the same id is left alone.
    pub fn insert_if_missing(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        match diesel::insert_into(grants::table)
            .values(self)
            .execute(conn)
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<GrantRow>> {
        grants::table
            .find(id)
            .select(GrantRow::as_select())
            .first(conn)
            .optional()
    }
}

impl GrantRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(grants::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    /// Revokes the grant: its refresh tokens stop working at once, and its
    /// access tokens (which carry the grant id) fail introspection. Returns
    /// whether this call revoked it (false if it already was, or is unknown).
    pub fn revoke(conn: &mut AnyConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
        let updated = diesel::update(
            grants::table
                .filter(grants::id.eq(id))
                .filter(grants::revoked_at.is_null()),
        )
        .set(grants::revoked_at.eq(now))
        .execute(conn)?;
        Ok(updated == 1)
    }
}
