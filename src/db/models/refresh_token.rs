use std::sync::LazyLock;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamp};

use crate::db::models::{GrantRow, User, USER_COLUMNS};
use crate::db::prepared::{Bind, Prepared};
use crate::db::schema::{grants, refresh_tokens, users};
use crate::db::AnyConnection;

/// A refresh token (`dzr_...`). The row's id is the SHA-256 of the token.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub id: String,
    pub grant_id: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

// Database methods
impl RefreshTokenRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(refresh_tokens::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Self>> {
        refresh_tokens::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// The token with its grant and the grant's user, in one round trip.
    pub fn find_with_grant(
        conn: &mut AnyConnection,
        id: &str,
    ) -> QueryResult<Option<(Self, GrantRow, User)>> {
        refresh_tokens::table
            .inner_join(grants::table.inner_join(users::table))
            .filter(refresh_tokens::id.eq(id))
            .select((Self::as_select(), GrantRow::as_select(), User::as_select()))
            .first(conn)
            .optional()
    }
}

/// Which presented token may be rotated, as SQL over `refresh_tokens` and
/// the parameters `$1` now, `$2` the presented token's id, `$3` the
/// authenticated client. The rules of a rotation that only the database can
/// check at the moment of the write:
/// - RFC 9700 4.14.2: not rotated before (`used_at IS NULL`): of many
///   concurrent uses, exactly one matches (the others wait for its row lock
///   and then see it used);
/// - RFC 6749 6: issued to the authenticated client, not expired, of a
///   grant not revoked, whose user is not disabled.
///
/// When no row matches, the refresh grant (`oauth::grants`) reads the token again to
/// tell which rule refused it (and revokes the grant on reuse).
const ROTATABLE: &str = "id = $2 AND used_at IS NULL AND expires_at > $1 \
     AND grant_id IN (SELECT g.id FROM grants g JOIN users u ON u.id = g.user_id \
     WHERE g.client_id = $3 AND g.revoked_at IS NULL AND NOT u.disabled)";

/// The rotation on PostgreSQL: one statement ($4 the successor's id, $5
/// and $6 its creation and expiry).
static ROTATE_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH used AS (UPDATE refresh_tokens SET used_at = $1 WHERE {ROTATABLE} \
         RETURNING grant_id, scopes), \
         successor AS (INSERT INTO refresh_tokens \
         (id, grant_id, scopes, created_at, expires_at, used_at) \
         SELECT $4, grant_id, scopes, $5, $6, NULL FROM used) \
         SELECT used.grant_id, used.scopes AS token_scopes, \
         g.auth_time AS grant_auth_time, g.sid AS grant_sid, {USER_COLUMNS} \
         FROM used JOIN grants g ON g.id = used.grant_id \
         JOIN users u ON u.id = g.user_id"
    )
});

/// The undoing of a refused rotation on PostgreSQL: `$1` the presented
/// token's id, `$2` its successor's, `$3` the rotation's time.
const UNROTATE_ON_POSTGRES: &str = "WITH gone AS (DELETE FROM refresh_tokens \
     WHERE id = $2 AND used_at IS NULL RETURNING grant_id) \
     UPDATE refresh_tokens SET used_at = NULL \
     WHERE id = $1 AND used_at = $3 AND grant_id IN (SELECT grant_id FROM gone)";

/// The claim of a rotation on SQLite (the rest follows in its transaction).
static ROTATE_ON_SQLITE: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE refresh_tokens SET used_at = $1 WHERE {ROTATABLE}"));

/// What a rotation read back: the presented token's grant and scopes, and
/// the grant's user.
#[derive(QueryableByName)]
pub struct Rotated {
    #[diesel(sql_type = Text)]
    pub grant_id: String,
    /// The presented token's scopes (the successor keeps them).
    #[diesel(sql_type = Text)]
    pub token_scopes: String,
    #[diesel(sql_type = Nullable<Timestamp>)]
    pub grant_auth_time: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Text>)]
    pub grant_sid: Option<String>,
    #[diesel(embed)]
    pub user: User,
}

/// The successor a rotation inserts.
pub struct Successor<'a> {
    pub id: &'a str,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

impl RefreshTokenRow {
    /// Rotates the presented token (`id`, its hash) if [`ROTATABLE`] holds:
    /// marks it used and inserts its successor with the same grant and
    /// scopes, then asks `accept` (the checks that need what was read
    /// back). `Ok(None)` when no row matched.
    ///
    /// `refusable`: whether `accept` may refuse for a reason the client
    /// chose (a `scope` it asks for). Such a refusal leaves the presented
    /// token as it was (RFC 6749 6: an error, not a use) and no successor:
    /// the rotation and `accept` run in one transaction
    /// ([`crate::db::claim_once`]: a refusal rolls back).
    ///
    /// Otherwise on PostgreSQL, the common case (a client refreshing what
    /// it holds): one statement (a data-modifying CTE) that commits on its
    /// own ([`crate::db::commit_alone`]: sent only while the caller still
    /// waits), where a transaction around it took three round trips. What
    /// `accept` can still refuse then is the client's or the user's role
    /// narrowed to nothing, or stored scopes that do not parse: the grant
    /// is of no use any more, and the rotation is undone at best
    /// ([`RefreshTokenRow::unrotate`]); the refusal is answered either way.
    ///
    /// SQLite has no data-modifying CTE: the same guard, then the read and
    /// the insert, in one transaction ([`crate::db::claim_once`]).
    #[allow(clippy::too_many_arguments)]
    pub fn rotate<T, E: From<diesel::result::Error>>(
        conn: &mut AnyConnection,
        id: &str,
        client_id: &str,
        successor: &Successor,
        now: NaiveDateTime,
        refusable: bool,
        accept: impl FnOnce(&Rotated) -> Result<T, E>,
    ) -> Result<Option<(Rotated, T)>, E> {
        if let (AnyConnection::Postgresql(_), false) = (&*conn, refusable) {
            let rotated = crate::db::commit_alone(conn, |conn| {
                Self::rotate_here(conn, id, client_id, successor, now)
            })?;
            let Some(rotated) = rotated else {
                return Ok(None);
            };
            return match accept(&rotated) {
                Ok(accepted) => Ok(Some((rotated, accepted))),
                Err(refusal) => {
                    Self::unrotate(conn, id, successor.id, now);
                    Err(refusal)
                }
            };
        }
        // SQLite: a token that does not exist takes no write lock (junk
        // tokens must not queue every writer).
        if matches!(conn, AnyConnection::Sqlite(_)) && Self::find(conn, id)?.is_none() {
            return Ok(None);
        }
        crate::db::claim_once(
            conn,
            |conn| Self::rotate_here(conn, id, client_id, successor, now),
            accept,
        )
    }

    /// Undoes, at best, a rotation on PostgreSQL that `accept` refused
    /// (not for a reason the client chose: see [`RefreshTokenRow::rotate`]),
    /// in one statement: deletes the successor (never handed out) and marks
    /// the presented token unused again. Meanwhile the presented token was
    /// used: presented again in that moment, it counted as reused (RFC
    /// 9700 4.14.2), as a second of two concurrent uses does. If it cannot
    /// be undone the token stays used, and the refusal is answered anyway.
    fn unrotate(conn: &mut AnyConnection, id: &str, successor_id: &str, used_at: NaiveDateTime) {
        let binds = [
            Bind::Text(id),
            Bind::Text(successor_id),
            Bind::Timestamp(used_at),
        ];
        match Prepared::new(UNROTATE_ON_POSTGRES, &binds).execute(conn) {
            Ok(1) => {}
            Ok(_) => log::warn!("a refused refresh could not be undone: its token stays used"),
            Err(e) => {
                log::warn!("a refused refresh could not be undone ({e}): its token stays used")
            }
        }
    }

    fn rotate_here(
        conn: &mut AnyConnection,
        id: &str,
        client_id: &str,
        successor: &Successor,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Rotated>> {
        let lite = match conn {
            AnyConnection::Postgresql(pg) => {
                let binds = [
                    Bind::Timestamp(now),
                    Bind::Text(id),
                    Bind::Text(client_id),
                    Bind::Text(successor.id),
                    Bind::Timestamp(successor.created_at),
                    Bind::Timestamp(successor.expires_at),
                ];
                return Prepared::new(&ROTATE_ON_POSTGRES, &binds)
                    .get_result::<Rotated>(pg)
                    .optional();
            }
            AnyConnection::Sqlite(lite) => lite,
        };
        let binds = [Bind::Timestamp(now), Bind::Text(id), Bind::Text(client_id)];
        let claimed = Prepared::new(&ROTATE_ON_SQLITE, &binds).execute(lite)?;
        if claimed != 1 {
            return Ok(None);
        }
        // Claimed in this transaction: it is there (else roll back).
        let (row, grant, user) =
            Self::find_with_grant(conn, id)?.ok_or(diesel::result::Error::NotFound)?;
        RefreshTokenRow {
            id: successor.id.to_owned(),
            grant_id: row.grant_id.clone(),
            scopes: row.scopes.clone(),
            created_at: successor.created_at,
            expires_at: successor.expires_at,
            used_at: None,
        }
        .insert(conn)?;
        Ok(Some(Rotated {
            grant_id: row.grant_id,
            token_scopes: row.scopes,
            grant_auth_time: grant.auth_time,
            grant_sid: grant.sid,
            user,
        }))
    }
}

impl RefreshTokenRow {
    /// Deletes tokens that expired before `before` (used or not).
    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(before)))
            .execute(conn)
    }
}
