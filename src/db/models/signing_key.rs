use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::signing_keys;
use crate::db::sealed::SealedError;
use crate::db::AnyConnection;
use crate::secrets::{Row, Sealer, SecretsError};

/// An access-token signing key, shared by every instance on the database.
#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = signing_keys)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER. In memory only: in the database the column holds it
    /// sealed by the [`Sealer`] (plain only without `DZDESK_SECRETS_KEY`);
    /// the methods below seal it on insert and open it on load.
    pub private_key: Vec<u8>,
    pub public_jwk: String,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
    /// Revoked outright (`keys rotate --revoke-previous`): never loaded
    /// again, so it leaves the JWKS and every token it signed fails
    /// verification.
    pub revoked_at: Option<NaiveDateTime>,
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
    /// after `retired_after` (tokens they signed may still be valid); never
    /// a revoked one. Private keys opened with `sealer`.
    pub fn load_current(
        conn: &mut AnyConnection,
        sealer: &Sealer,
        retired_after: NaiveDateTime,
    ) -> Result<Vec<SigningKeyRow>, SealedError> {
        let mut rows = signing_keys::table
            .filter(signing_keys::revoked_at.is_null())
            .filter(
                signing_keys::retired_at
                    .is_null()
                    .or(signing_keys::retired_at.gt(retired_after)),
            )
            .order(signing_keys::created_at.desc())
            .select(SigningKeyRow::as_select())
            .load(conn)?;
        let mut usable = Vec::with_capacity(rows.len());
        for mut row in rows.drain(..) {
            match sealer.open_sealed(Row::SigningKey(&row.kid), &row.private_key) {
                Ok(opened) => {
                    row.private_key = opened.secret.to_vec();
                    usable.push(row);
                }
                // Not written by this service (it seals at start-up): left
                // out, so it signs and verifies nothing.
                Err(e @ SecretsError::Plain { .. }) => log::error!("{e}"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(usable)
    }

    /// Inserts `self` (its private key sealed with `sealer`) as the new
    /// signing key and retires every other active key, in one transaction.
    pub fn insert_and_retire_others(
        &self,
        conn: &mut AnyConnection,
        sealer: &Sealer,
        now: NaiveDateTime,
    ) -> Result<(), SealedError> {
        let stored = SigningKeyRow {
            private_key: sealer.seal(Row::SigningKey(&self.kid), &self.private_key)?,
            ..self.clone()
        };
        crate::db::write_transaction(conn, |conn| {
            diesel::update(
                signing_keys::table
                    .filter(signing_keys::retired_at.is_null())
                    .filter(signing_keys::kid.ne(&self.kid)),
            )
            .set(signing_keys::retired_at.eq(now))
            .execute(conn)?;
            diesel::insert_into(signing_keys::table)
                .values(&stored)
                .execute(conn)
                .map(|_| ())
        })
        .map_err(SealedError::from)
    }

    /// Revokes every key but `kid` (`keys rotate --revoke-previous`).
    /// Returns how many.
    pub fn revoke_all_except(
        conn: &mut AnyConnection,
        kid: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            signing_keys::table
                .filter(signing_keys::kid.ne(kid))
                .filter(signing_keys::revoked_at.is_null()),
        )
        .set(signing_keys::revoked_at.eq(now))
        .execute(conn)
    }

    /// What changes whenever a key is added, retired or revoked: compared
    /// by instances that get no notification of it (SQLite).
    pub fn fingerprint(conn: &mut AnyConnection) -> QueryResult<String> {
        use diesel::dsl::{count, count_star, max};
        let (n, newest, retired, revoked): (i64, Option<NaiveDateTime>, i64, i64) =
            signing_keys::table
                .select((
                    count_star(),
                    max(signing_keys::created_at),
                    count(signing_keys::retired_at),
                    count(signing_keys::revoked_at),
                ))
                .first(conn)?;
        Ok(format!("{n}/{newest:?}/{retired}/{revoked}"))
    }
}
