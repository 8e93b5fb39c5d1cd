use std::sync::LazyLock;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamp};

use crate::db::models::{GrantRow, RefreshTokenRow, Successor, User, USER_COLUMNS};
use crate::db::prepared::{Bind, Prepared};
use crate::db::schema::authorization_codes;
use crate::db::AnyConnection;

/// An authorization code (RFC 6749 4.1.2). The row's id is the SHA-256 of the
/// code; the code itself is never stored.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = authorization_codes)]
pub struct AuthorizationCodeRow {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The redirect_uri of the authorization request, exactly as sent.
    pub redirect_uri: String,
    pub scopes: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub grant_id: Option<String>,
    /// OpenID Connect: the authorization request's `nonce` (returned as is
    /// in the ID token), when the user signed in, and the session's `sid`.
    pub nonce: Option<String>,
    pub auth_time: Option<NaiveDateTime>,
    pub sid: Option<String>,
}

/// Which presented code may be redeemed, as SQL over `authorization_codes`
/// and the parameters `$1` now, `$2` the code's id, `$3` the authenticated
/// client, `$4` and `$5` the redirect_uris and `$6` the challenge the token
/// request accepts ([`CodeChecks`]). The rules of a redemption, checked at
/// the moment of the write:
/// - RFC 6749 4.1.2: not used before (`used_at IS NULL`): of concurrent
///   redemptions exactly one matches (the others wait for its row lock and
///   then see it used);
/// - RFC 6749 4.1.3: issued to the authenticated client, not expired (60
///   s), and its user is not disabled;
/// - RFC 6749 4.1.3: the redirect_uri of the authorization request, when
///   it had one, and RFC 7636 4.6 the challenge the code_verifier answers
///   (none without a verifier: no PKCE downgrade, RFC 9700 4.8.2; spelt
///   out, not `IS NOT DISTINCT FROM`, which a system SQLite before 3.39
///   lacks). A request these refuse uses nothing up: the code stays
///   usable.
///
/// When no row matches, the code grant (`oauth::grants`) reads the code
/// again to tell which rule refused it (and revokes on a replay).
const REDEEMABLE: &str = "id = $2 AND used_at IS NULL AND expires_at > $1 \
     AND client_id = $3 AND user_id IN (SELECT id FROM users WHERE NOT disabled) \
     AND redirect_uri IN ($4, $5) \
     AND (code_challenge = $6 OR (code_challenge IS NULL AND $6 IS NULL))";

/// The columns of [`AuthorizationCodeRow::insert`] and their parameters.
macro_rules! insert_code {
    ($values:literal) => {
        concat!(
            "INSERT INTO authorization_codes (id, client_id, user_id, redirect_uri, scopes, \
             code_challenge, code_challenge_method, created_at, expires_at, used_at, grant_id, \
             nonce, auth_time, sid) ",
            $values
        )
    };
}

/// [`AuthorizationCodeRow::insert`].
const INSERT: &str =
    insert_code!("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)");

/// [`INSERT`] with an asynchronous commit, for PostgreSQL outside any
/// transaction: `set_config(..., true)` sets `synchronous_commit = off` for
/// the statement's own transaction, which its commit then reads
/// (PostgreSQL 15 docs, 30.4 "Asynchronous Commit").
const INSERT_ASYNC_COMMIT: &str = insert_code!(
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
);

/// The token request's own checks of a code exchange, as values the
/// stored code must hold ([`REDEEMABLE`]); made by `oauth::grants`.
pub struct CodeChecks {
    /// The stored redirect_uri may be either (the same one twice when only
    /// one is accepted).
    pub redirect_uris: [String; 2],
    /// The stored code_challenge must be this (None: the code was issued
    /// without one).
    pub code_challenge: Option<String>,
}

/// The redemption on PostgreSQL: one statement ($7 the new grant's id, $8
/// the first refresh token's or NULL, $9 its expiry).
static REDEEM_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH code AS (UPDATE authorization_codes SET used_at = $1, grant_id = $7 \
         WHERE {REDEEMABLE} RETURNING *), \
         new_grant AS (INSERT INTO grants \
         (id, client_id, user_id, scopes, created_at, revoked_at, auth_time, sid) \
         SELECT $7, client_id, user_id, scopes, $1, NULL, auth_time, sid FROM code), \
         refresh AS (INSERT INTO refresh_tokens \
         (id, grant_id, scopes, created_at, expires_at, used_at) \
         SELECT $8::text, $7, scopes, $1, $9, NULL FROM code \
         WHERE $8::text IS NOT NULL) \
         SELECT code.scopes AS code_scopes, code.nonce AS code_nonce, \
         code.auth_time AS code_auth_time, code.sid AS code_sid, {USER_COLUMNS} \
         FROM code JOIN users u ON u.id = code.user_id"
    )
});

/// The claim of a redemption on SQLite (the rest follows in its
/// transaction).
static REDEEM_ON_SQLITE: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE authorization_codes SET used_at = $1 WHERE {REDEEMABLE}"));

/// One redemption's new rows: the grant's id and the refresh token's (None
/// for a client without the refresh_token grant).
pub struct Redemption<'a> {
    pub code_id: &'a str,
    pub client_id: &'a str,
    pub checks: &'a CodeChecks,
    pub grant_id: &'a str,
    pub refresh: Option<&'a Successor<'a>>,
    pub now: NaiveDateTime,
}

/// What a redemption read back: what the code's request asked for and
/// the user (its redirect_uri and challenge are conditions of the
/// redemption, [`REDEEMABLE`], not read back).
#[derive(QueryableByName)]
pub struct Redeemed {
    // Named apart from the user's columns, which come by name too.
    #[diesel(sql_type = Text, column_name = code_scopes)]
    pub scopes: String,
    #[diesel(sql_type = Nullable<Text>, column_name = code_nonce)]
    pub nonce: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>, column_name = code_auth_time)]
    pub auth_time: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Text>, column_name = code_sid)]
    pub sid: Option<String>,
    #[diesel(embed)]
    pub user: User,
}

// Database methods
impl AuthorizationCodeRow {
    /// One prepared statement (diesel's own insert of this row, with its
    /// optional columns, is planned anew on every call: one per
    /// authorization).
    ///
    /// On PostgreSQL, outside a transaction, its commit does not wait for
    /// the WAL to reach the disk ([`INSERT_ASYNC_COMMIT`]): one of the two
    /// commits of every authorization-code round trip. What a crash can
    /// lose is at most the last fraction of a second of codes, each of which
    /// then fails its exchange with `invalid_grant` (the user signs in to the
    /// client again); nothing is granted that was not. It cannot lose a
    /// code that was redeemed: the redemption commits synchronously, and
    /// its flush of the WAL carries every earlier commit with it. Inside a
    /// transaction (a pushed request's) the transaction's COMMIT decides,
    /// synchronously.
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        let binds = [
            Bind::Text(&self.id),
            Bind::Text(&self.client_id),
            Bind::Text(&self.user_id),
            Bind::Text(&self.redirect_uri),
            Bind::Text(&self.scopes),
            Bind::NullableText(self.code_challenge.as_deref()),
            Bind::NullableText(self.code_challenge_method.as_deref()),
            Bind::Timestamp(self.created_at),
            Bind::Timestamp(self.expires_at),
            Bind::NullableTimestamp(self.used_at),
            Bind::NullableText(self.grant_id.as_deref()),
            Bind::NullableText(self.nonce.as_deref()),
            Bind::NullableTimestamp(self.auth_time),
            Bind::NullableText(self.sid.as_deref()),
        ];
        let postgres = matches!(conn, AnyConnection::Postgresql(_));
        let sql = if postgres && crate::db::outside_transactions(conn)? {
            INSERT_ASYNC_COMMIT
        } else {
            INSERT
        };
        Prepared::new(sql, &binds).execute(conn).map(|_| ())
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Self>> {
        authorization_codes::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Redeems the code (`id`, its hash) if [`REDEEMABLE`] holds (the
    /// request's own checks included): marks it used by the new grant
    /// `grant_id`, inserts that grant (the code's user, scopes, auth_time
    /// and sid) and, when given, its first refresh token; then asks
    /// `accept` (what to issue, from what was read back). `Ok(None)` when
    /// no row matched.
    ///
    /// PostgreSQL: one statement (a data-modifying CTE) that commits on its
    /// own ([`crate::db::commit_alone`]: sent only while the caller still
    /// waits), where two reads, two inserts and an update took a round trip
    /// each, then a transaction around it two more. Nothing the client
    /// chose is left for `accept` to refuse (only stored scopes that do not
    /// parse, a bug: the code is used up then, and the new grant revoked).
    /// SQLite (no data-modifying CTE): the same guard, then the rest
    /// in-process, in one transaction ([`crate::db::claim_once`]).
    pub fn redeem<T, E: From<diesel::result::Error>>(
        conn: &mut AnyConnection,
        redemption: &Redemption,
        accept: impl FnOnce(&Redeemed) -> Result<T, E>,
    ) -> Result<Option<(Redeemed, T)>, E> {
        if let AnyConnection::Postgresql(_) = conn {
            let redeemed =
                crate::db::commit_alone(conn, |conn| Self::redeem_here(conn, redemption))?;
            let Some(redeemed) = redeemed else {
                return Ok(None);
            };
            return match accept(&redeemed) {
                Ok(accepted) => Ok(Some((redeemed, accepted))),
                Err(refusal) => {
                    // Nobody gets the grant's tokens: end it.
                    if let Err(e) = GrantRow::revoke(conn, redemption.grant_id, redemption.now) {
                        log::warn!("a refused redemption's grant could not be revoked: {e}");
                    }
                    Err(refusal)
                }
            };
        }
        // SQLite: a code that does not exist takes no write lock.
        if Self::find(conn, redemption.code_id)?.is_none() {
            return Ok(None);
        }
        crate::db::claim_once(conn, |conn| Self::redeem_here(conn, redemption), accept)
    }

    fn redeem_here(conn: &mut AnyConnection, r: &Redemption) -> QueryResult<Option<Redeemed>> {
        let lite = match conn {
            AnyConnection::Postgresql(pg) => {
                let binds = [
                    Bind::Timestamp(r.now),
                    Bind::Text(r.code_id),
                    Bind::Text(r.client_id),
                    Bind::Text(&r.checks.redirect_uris[0]),
                    Bind::Text(&r.checks.redirect_uris[1]),
                    Bind::NullableText(r.checks.code_challenge.as_deref()),
                    Bind::Text(r.grant_id),
                    Bind::NullableText(r.refresh.map(|s| s.id)),
                    Bind::Timestamp(r.refresh.map_or(r.now, |s| s.expires_at)),
                ];
                return Prepared::new(&REDEEM_ON_POSTGRES, &binds)
                    .get_result::<Redeemed>(pg)
                    .optional();
            }
            AnyConnection::Sqlite(lite) => lite,
        };
        let binds = [
            Bind::Timestamp(r.now),
            Bind::Text(r.code_id),
            Bind::Text(r.client_id),
            Bind::Text(&r.checks.redirect_uris[0]),
            Bind::Text(&r.checks.redirect_uris[1]),
            Bind::NullableText(r.checks.code_challenge.as_deref()),
        ];
        let claimed = Prepared::new(&REDEEM_ON_SQLITE, &binds).execute(lite)?;
        if claimed != 1 {
            return Ok(None);
        }
        // Claimed in this transaction: both are there (else roll back).
        let code = Self::find(conn, r.code_id)?.ok_or(diesel::result::Error::NotFound)?;
        let user = User::find(conn, &code.user_id)?.ok_or(diesel::result::Error::NotFound)?;
        GrantRow {
            id: r.grant_id.to_owned(),
            client_id: code.client_id.clone(),
            user_id: Some(code.user_id.clone()),
            scopes: code.scopes.clone(),
            created_at: r.now,
            revoked_at: None,
            auth_time: code.auth_time,
            sid: code.sid.clone(),
        }
        .insert(conn)?;
        // After the grant: the code's grant_id refers to it.
        diesel::update(authorization_codes::table.find(r.code_id))
            .set(authorization_codes::grant_id.eq(r.grant_id))
            .execute(conn)?;
        if let Some(refresh) = r.refresh {
            RefreshTokenRow {
                id: refresh.id.to_owned(),
                grant_id: r.grant_id.to_owned(),
                scopes: code.scopes.clone(),
                created_at: refresh.created_at,
                expires_at: refresh.expires_at,
                used_at: None,
            }
            .insert(conn)?;
        }
        Ok(Some(Redeemed {
            scopes: code.scopes,
            nonce: code.nonce,
            auth_time: code.auth_time,
            sid: code.sid,
            user,
        }))
    }

    /// Deletes codes that expired before `before` (used or not).
    pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(
            authorization_codes::table.filter(authorization_codes::expires_at.lt(before)),
        )
        .execute(conn)
    }
}
