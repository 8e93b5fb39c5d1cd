//! Secrets at rest in the database: `signing_keys.private_key` and
//! `server_secrets.secret`, sealed by [`crate::secrets`]. The models seal
//! what they write and open what they read; this module brings the stored
//! rows up to date, each time in one transaction, so that no start or
//! rotation leaves some rows under one key and some under another:
//!
//! - at every start ([`prepare`], also before `keys rotate`): every row must
//!   open with the keys set, so a wrong key, or a missing one for rows that
//!   are encrypted, stops start-up before anything is served or written; and
//!   rows stored plain (before encryption existed, or while no key was set)
//!   are sealed under `DZDESK_SECRETS_KEY`. Rows under
//!   `DZDESK_SECRETS_KEY_OLD` are left as they are: instances not yet
//!   restarted with the new key must still read them.
//! - `secrets rotate` ([`reseal_all`]): every row is sealed again under
//!   `DZDESK_SECRETS_KEY`, with a fresh nonce; after it the old key can go.

use diesel::prelude::*;

use crate::db::schema::{server_secrets, signing_keys};
use crate::db::AnyConnection;
use crate::secrets::{Row, SealedWith, Sealer, SecretsError};

/// A stored secret could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// The [`SecretsError`] behind `err`, if that is what stopped it (start-up
/// and the CLI turn it into one line naming `DZDESK_SECRETS_KEY`, exit 2).
pub fn secrets_error(err: &anyhow::Error) -> Option<&SecretsError> {
    err.chain().find_map(|e| {
        e.downcast_ref::<SecretsError>()
            .or_else(|| match e.downcast_ref::<SealedError>() {
                Some(SealedError::Secrets(s)) => Some(s),
                _ => None,
            })
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reseal {
    /// Plain rows only (start-up).
    Plain,
    /// Every row (`secrets rotate`).
    All,
}

/// Checks that every stored secret opens and seals the plain ones under the
/// key (see the module doc). Returns how many were sealed.
pub fn prepare(conn: &mut AnyConnection, sealer: &Sealer) -> Result<usize, SealedError> {
    reseal(conn, sealer, Reseal::Plain)
}

/// Seals every stored secret again under the key, reading those under the
/// old one (`secrets rotate`). Returns how many rows were rewritten.
pub fn reseal_all(conn: &mut AnyConnection, sealer: &Sealer) -> Result<usize, SealedError> {
    reseal(conn, sealer, Reseal::All)
}

fn reseal(conn: &mut AnyConnection, sealer: &Sealer, mode: Reseal) -> Result<usize, SealedError> {
    crate::db::write_transaction(conn, |conn| {
        let mut changed = 0;
        let keys: Vec<(String, Vec<u8>)> = signing_keys::table
            .select((signing_keys::kid, signing_keys::private_key))
            .load(conn)?;
        for (kid, stored) in keys {
            if let Some(fresh) = resealed(sealer, Row::SigningKey(&kid), &stored, mode)? {
                // Only if unchanged meanwhile (another instance starting).
                changed += diesel::update(
                    signing_keys::table
                        .filter(signing_keys::kid.eq(&kid))
                        .filter(signing_keys::private_key.eq(&stored)),
                )
                .set(signing_keys::private_key.eq(fresh))
                .execute(conn)?;
            }
        }
        let secrets: Vec<(String, Vec<u8>)> = server_secrets::table
            .select((server_secrets::name, server_secrets::secret))
            .load(conn)?;
        for (name, stored) in secrets {
            if let Some(fresh) = resealed(sealer, Row::ServerSecret(&name), &stored, mode)? {
                changed += diesel::update(
                    server_secrets::table
                        .filter(server_secrets::name.eq(&name))
                        .filter(server_secrets::secret.eq(&stored)),
                )
                .set(server_secrets::secret.eq(fresh))
                .execute(conn)?;
            }
        }
        Ok(changed)
    })
}

/// The new stored form of `stored`, if `mode` says it is out of date.
fn resealed(
    sealer: &Sealer,
    row: Row<'_>,
    stored: &[u8],
    mode: Reseal,
) -> Result<Option<Vec<u8>>, SecretsError> {
    let opened = sealer.open(row, stored)?;
    let stale = sealer.is_on()
        && match mode {
            Reseal::Plain => opened.sealed_with == SealedWith::Nothing,
            Reseal::All => true,
        };
    stale.then(|| sealer.seal(row, &opened.secret)).transpose()
}
