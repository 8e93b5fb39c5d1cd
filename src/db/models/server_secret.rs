use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::server_secrets;
use crate::db::sealed::SealedError;
use crate::db::{is_unique_violation, AnyConnection};
use crate::secrets::{Row, Sealer, SecretsError};
use crate::tokens;

/// A named random key generated on first start and shared by every instance
/// on the same database. `secret` is its stored form: sealed by the
/// [`Sealer`] (plain only without `DZDESK_SECRETS_KEY`).
#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = server_secrets)]
pub struct ServerSecret {
    pub name: String,
    pub secret: Vec<u8>,
    pub created_at: NaiveDateTime,
}

impl ServerSecret {
    /// The 32-byte key called `name`, created (and sealed) if it does not
    /// exist yet. Two instances racing here both end up with the row that
    /// won.
    pub fn get_or_create(
        conn: &mut AnyConnection,
        sealer: &Sealer,
        name: &str,
        now: NaiveDateTime,
    ) -> Result<[u8; 32], SealedError> {
        if let Some(key) = Self::get(conn, sealer, name)? {
            return Ok(key);
        }
        let key = zeroize::Zeroizing::new(tokens::random_bytes::<32>());
        let row = ServerSecret {
            name: name.to_owned(),
            secret: sealer.seal(Row::ServerSecret(name), key.as_slice())?,
            created_at: now,
        };
        match diesel::insert_into(server_secrets::table)
            .values(&row)
            .execute(conn)
        {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Self::get(conn, sealer, name)?.ok_or(diesel::result::Error::NotFound.into())
    }

    fn get(
        conn: &mut AnyConnection,
        sealer: &Sealer,
        name: &str,
    ) -> Result<Option<[u8; 32]>, SealedError> {
        let stored: Option<Vec<u8>> = server_secrets::table
            .find(name)
            .select(server_secrets::secret)
            .first(conn)
            .optional()?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let row = Row::ServerSecret(name);
        let opened = sealer.open_sealed(row, &stored)?;
        <[u8; 32]>::try_from(opened.secret.as_slice())
            .map(Some)
            .map_err(|_| SecretsError::malformed(row, "not 32 bytes").into())
    }
}
