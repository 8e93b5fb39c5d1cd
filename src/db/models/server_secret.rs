use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::server_secrets;
use crate::db::{is_unique_violation, AnyConnection};
use crate::tokens;

/// A named random key generated on first start and shared by every instance
/// on the same database.
#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = server_secrets)]
pub struct ServerSecret {
    pub name: String,
    pub secret: Vec<u8>,
    pub created_at: NaiveDateTime,
}

impl ServerSecret {
    /// The 32-byte key called `name`, created if it does not exist yet. Two
    /// instances racing here both end up with the row that won.
    pub fn get_or_create(
        conn: &mut AnyConnection,
        name: &str,
        now: NaiveDateTime,
    ) -> QueryResult<[u8; 32]> {
        if let Some(key) = Self::get(conn, name)? {
            return Ok(key);
        }
        let row = ServerSecret {
            name: name.to_owned(),
            secret: tokens::random_bytes::<32>().to_vec(),
            created_at: now,
        };
        match diesel::insert_into(server_secrets::table)
            .values(&row)
            .execute(conn)
        {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e),
        }
        Self::get(conn, name)?.ok_or(diesel::result::Error::NotFound)
    }

    fn get(conn: &mut AnyConnection, name: &str) -> QueryResult<Option<[u8; 32]>> {
        let bytes: Option<Vec<u8>> = server_secrets::table
            .find(name)
            .select(server_secrets::secret)
            .first(conn)
            .optional()?;
        Ok(bytes.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
    }
}
