use std::sync::LazyLock;

use chrono::NaiveDateTime;
use diesel::deserialize::{self, QueryableByName};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::row::NamedRow;
use diesel::sql_types::{Nullable, Text, Timestamp};

use crate::db::models::{GrantRow, User, USER_COLUMNS};
use crate::db::prepared::{Bind, PgBind, Prepared};
use crate::db::schema::{grants, refresh_tokens, users};
use crate::db::AnyConnection;
use crate::db::{Database, RunError};

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

/// Which presented token may be rotated, as SQL over `refresh_tokens`, at
/// `now`, presented as `id` by the authenticated `client` (each a
/// parameter or a column of the statement around). The rules of a
/// rotation that only the database can check at the moment of the write:
/// - RFC 9700 4.14.2: not rotated before (`used_at IS NULL`): of many
///   concurrent uses, exactly one matches (the others wait for its row lock
///   and then see it used);
/// - RFC 6749 6: issued to the authenticated client, not expired, of a
///   grant not revoked, whose user is not disabled.
///
/// When no row matches, the refresh grant (`oauth::grants`) reads the token again to
/// tell which rule refused it (and revokes the grant on reuse).
fn rotatable(now: &str, id: &str, client: &str) -> String {
    format!(
        "refresh_tokens.id = {id} AND refresh_tokens.used_at IS NULL \
         AND refresh_tokens.expires_at > {now} \
         AND refresh_tokens.grant_id IN (SELECT g.id FROM grants g JOIN users u ON u.id = g.user_id \
         WHERE g.client_id = {client} AND g.revoked_at IS NULL AND NOT u.disabled)"
    )
}

/// [`rotatable`] over the parameters `$1` now, `$2` the presented token's
/// id, `$3` the authenticated client.
static ROTATABLE: LazyLock<String> = LazyLock::new(|| rotatable("$1", "$2", "$3"));

/// The rotation on PostgreSQL: one statement ($4 the successor's id, $5
/// and $6 its creation and expiry).
static ROTATE_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH used AS (UPDATE refresh_tokens SET used_at = $1 WHERE {rotatable} \
         RETURNING grant_id, scopes), \
         successor AS (INSERT INTO refresh_tokens \
         (id, grant_id, scopes, created_at, expires_at, used_at) \
         SELECT $4, grant_id, scopes, $5, $6, NULL FROM used) \
         SELECT used.grant_id, used.scopes AS token_scopes, \
         g.auth_time AS grant_auth_time, g.sid AS grant_sid, {USER_COLUMNS} \
         FROM used JOIN grants g ON g.id = used.grant_id \
         JOIN users u ON u.id = g.user_id",
        rotatable = *ROTATABLE,
    )
});

/// The rotations of a group ([`crate::db::group`]) on PostgreSQL, in one
/// statement: [`ROTATE_ON_POSTGRES`] over the requests' arrays (`unnest`),
/// `$1` the presented tokens' ids, `$2` the authenticated clients, `$3` the
/// successors' ids, `$4` the requests' times, `$5` and `$6` the successors'
/// creation and expiry; [`rotatable`]'s rules per request. `UPDATE ...
/// FROM` re-checks a presented token's row as it is after a concurrent
/// rotation (used: nothing matches). A token presented twice in one group
/// is one target row, updated once, by one of its requests (RFC 9700
/// 4.14.2: of concurrent uses exactly one wins): only that one's successor
/// is returned and inserted, and the other is told it matched nothing, as
/// the loser of a race between two statements is.
static ROTATE_TOGETHER_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH asked AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6) \
         AS a (presented, client, successor, at, successor_created, successor_expires)), \
         used AS (UPDATE refresh_tokens SET used_at = a.at FROM asked a WHERE {rotatable} \
         RETURNING a.successor, a.successor_created, a.successor_expires, \
         refresh_tokens.grant_id, refresh_tokens.scopes), \
         inserted AS (INSERT INTO refresh_tokens \
         (id, grant_id, scopes, created_at, expires_at, used_at) \
         SELECT successor, grant_id, scopes, successor_created, successor_expires, NULL \
         FROM used) \
         SELECT used.successor AS successor_id, used.grant_id, used.scopes AS token_scopes, \
         g.auth_time AS grant_auth_time, g.sid AS grant_sid, {USER_COLUMNS} \
         FROM used JOIN grants g ON g.id = used.grant_id \
         JOIN users u ON u.id = g.user_id",
        rotatable = rotatable("a.at", "a.presented", "a.client"),
    )
});

/// The undoing of a refused rotation on PostgreSQL: `$1` the presented
/// token's id, `$2` its successor's, `$3` the rotation's time.
const UNROTATE_ON_POSTGRES: &str = "WITH gone AS (DELETE FROM refresh_tokens \
     WHERE id = $2 AND used_at IS NULL RETURNING grant_id) \
     UPDATE refresh_tokens SET used_at = NULL \
     WHERE id = $1 AND used_at = $3 AND grant_id IN (SELECT grant_id FROM gone)";

/// The claim of a rotation on SQLite (the rest follows in its transaction).
static ROTATE_ON_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE refresh_tokens SET used_at = $1 WHERE {}",
        *ROTATABLE
    )
});

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

/// A rotation sent in a group ([`RefreshTokenRow::rotate_in_group`]):
/// what [`RefreshTokenRow::rotate`] is given.
pub struct Rotation {
    pub presented_id: String,
    pub client_id: String,
    pub successor_id: String,
    pub successor_created_at: NaiveDateTime,
    pub successor_expires_at: NaiveDateTime,
    pub now: NaiveDateTime,
}

/// A row of [`ROTATE_TOGETHER_ON_POSTGRES`]: whose rotation it is (by the
/// successor's id, unique to one request), and what it read back, or why
/// that did not load (a role this build does not know): that request's
/// error alone, not its group's (the rotations committed).
struct RotatedTogether {
    successor_id: String,
    rotated: QueryResult<Rotated>,
}

impl QueryableByName<Pg> for RotatedTogether {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        let successor_id = NamedRow::get::<Text, String>(row, "successor_id")?;
        let rotated = Rotated::build(row).map_err(diesel::result::Error::DeserializationError);
        Ok(Self {
            successor_id,
            rotated,
        })
    }
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
    pub fn unrotate(
        conn: &mut AnyConnection,
        id: &str,
        successor_id: &str,
        used_at: NaiveDateTime,
    ) {
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

    /// [`RefreshTokenRow::rotate`] on PostgreSQL for a request that cannot
    /// be refused for a reason the client chose (no `scope` asked), sent
    /// with the concurrent ones in one statement ([`Database::together`]:
    /// group commit), where each rotation alone was its own statement and
    /// commit. The same rules, checked by the database at the write, and
    /// the same answer: what the rotation read back, or None when it
    /// matched nothing. What `accept` would refuse is the caller's to
    /// check, and to undo with [`RefreshTokenRow::unrotate`] on a
    /// connection of its own.
    pub async fn rotate_in_group<E>(db: &Database, rotation: Rotation) -> Result<Option<Rotated>, E>
    where
        E: From<RunError> + From<diesel::result::Error> + Send + 'static,
    {
        db.together(rotation, Self::rotate_together, Self::rotate_alone)
            .await
    }

    /// One [`Rotation`] of a group, alone.
    fn rotate_alone(conn: &mut AnyConnection, r: &Rotation) -> QueryResult<Option<Rotated>> {
        let successor = Successor {
            id: &r.successor_id,
            created_at: r.successor_created_at,
            expires_at: r.successor_expires_at,
        };
        Self::rotate_here(conn, &r.presented_id, &r.client_id, &successor, r.now)
    }

    /// The [`Rotation`]s of a group in one statement on PostgreSQL; an
    /// answer per rotation, in their order.
    fn rotate_together(
        conn: &mut AnyConnection,
        group: &[&Rotation],
    ) -> QueryResult<Vec<QueryResult<Option<Rotated>>>> {
        let AnyConnection::Postgresql(pg) = conn else {
            // SQLite's rotation is three statements in a transaction: never
            // grouped (Database::together runs it alone).
            return Err(diesel::result::Error::QueryBuilderError(
                "rotations are grouped on PostgreSQL only".into(),
            ));
        };
        // In the order of the presented ids: two groups (of this instance
        // or another) that share tokens are likely to lock them in the same
        // order (the plan decides; a deadlock is retried one by one).
        let mut sorted: Vec<&Rotation> = group.to_vec();
        sorted.sort_by(|a, b| a.presented_id.cmp(&b.presented_id));
        let texts = |f: fn(&Rotation) -> &str| PgBind::Texts(sorted.iter().map(|r| f(r)).collect());
        let times = |f: fn(&Rotation) -> NaiveDateTime| {
            PgBind::Timestamps(sorted.iter().map(|r| f(r)).collect())
        };
        let binds = [
            texts(|r| &r.presented_id),
            texts(|r| &r.client_id),
            texts(|r| &r.successor_id),
            times(|r| r.now),
            times(|r| r.successor_created_at),
            times(|r| r.successor_expires_at),
        ];
        let mut rows =
            Prepared::new(&ROTATE_TOGETHER_ON_POSTGRES, &binds).load::<RotatedTogether>(pg)?;
        Ok(group
            .iter()
            .map(|r| {
                match rows
                    .iter()
                    .position(|row| row.successor_id == r.successor_id)
                {
                    Some(at) => rows.swap_remove(at).rotated.map(Some),
                    None => Ok(None),
                }
            })
            .collect())
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
