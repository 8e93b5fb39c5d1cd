use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{api_keys, grants, users};
use crate::db::AnyConnection;
use crate::domain::{IpAllowlist, Plan, Role, ScopeSet};

/// An API key (seed: "API Keys"). Only the key's SHA-256 is stored.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// Hex SHA-256 of the whole key (`dzd_...`).
    pub key_hash: String,
    /// The first characters of the key, to tell keys apart in lists.
    pub prefix: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    /// The API key that minted this one, if one did: revoking it revokes
    /// this one too.
    pub parent_id: Option<String>,
    /// The OAuth grant whose access token minted this key, if one did:
    /// the key works only while that grant is active.
    pub parent_grant_id: Option<String>,
}

// Database methods
impl ApiKeyRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(api_keys::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    /// The user's keys that are not revoked, newest first (expired ones
    /// included: their owner should see them lapse).
    pub fn list_for_user(conn: &mut AnyConnection, user_id: &str) -> QueryResult<Vec<ApiKeyRow>> {
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null())
            .order((api_keys::created_at.desc(), api_keys::id.desc()))
            .select(ApiKeyRow::as_select())
            .load(conn)
    }

    /// How many keys the user has that are not revoked.
    pub fn count_for_user(conn: &mut AnyConnection, user_id: &str) -> QueryResult<i64> {
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null())
            .count()
            .get_result(conn)
    }

    /// Whether the key `id` is neither revoked nor expired at `now`, read
    /// with the row locked on PostgreSQL (as [`super::User::is_enabled_admin_locked`]),
    /// so that a key it mints cannot slip past a concurrent revocation's
    /// cascade.
    pub fn is_live_locked(
        conn: &mut AnyConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let query = api_keys::table
            .find(id)
            .select((api_keys::revoked_at, api_keys::expires_at));
        type Row = (Option<NaiveDateTime>, Option<NaiveDateTime>);
        let row: Option<Row> = match conn {
            AnyConnection::Postgresql(pg) => query.for_update().first(pg).optional()?,
            AnyConnection::Sqlite(sqlite) => query.first(sqlite).optional()?,
        };
        Ok(matches!(row, Some((None, expires)) if expires.is_none_or(|e| e > now)))
    }

    /// Revokes the user's key `id` and, in the same transaction, every key
    /// it minted (and theirs): a child never outlives its parent. False when
    /// the user has no such key (unknown, another user's, or already
    /// revoked).
    pub fn revoke(
        conn: &mut AnyConnection,
        user_id: &str,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let updated = diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(id))
                    .filter(api_keys::user_id.eq(user_id))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(now))
            .execute(conn)?;
            if updated == 1 {
                Self::revoke_descendants(conn, id, now)?;
            }
            Ok(updated == 1)
        })
    }

    /// Revokes the keys minted by `id`, their children, and so on, breadth
    /// first. A key already revoked had its own children revoked with it,
    /// so the walk stops there. Chains are acyclic (a parent exists before
    /// its child) and bounded by the per-account key cap.
    fn revoke_descendants(
        conn: &mut AnyConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        let mut frontier = vec![id.to_owned()];
        let mut revoked = 0;
        while let Some(parent) = frontier.pop() {
            let children: Vec<String> = diesel::update(
                api_keys::table
                    .filter(api_keys::parent_id.eq(&parent))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(now))
            .returning(api_keys::id)
            .get_results(conn)?;
            revoked += children.len();
            frontier.extend(children);
        }
        Ok(revoked)
    }

    /// Revokes every key of the user (the user was disabled).
    pub fn revoke_all_for_user(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            api_keys::table
                .filter(api_keys::user_id.eq(user_id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(now))
        .execute(conn)
    }

    /// Records that the key was used at `at` (never moves it backwards).
    pub fn touch(conn: &mut AnyConnection, id: &str, at: NaiveDateTime) -> QueryResult<()> {
        diesel::update(
            api_keys::table.filter(api_keys::id.eq(id)).filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.lt(at)),
            ),
        )
        .set(api_keys::last_used_at.eq(at))
        .execute(conn)
        .map(|_| ())
    }
}

/// One row of `ApiKeyStatus::load`, in select order.
type StatusRow = (
    String,
    String,
    ScopeSet,
    NaiveDateTime,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    String,
    Role,
    bool,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
);

/// Everything that decides whether an API key may be used, and who it is:
/// the key and its user, read in one indexed query.
#[derive(Debug, Clone)]
pub struct ApiKeyStatus {
    pub key_id: String,
    pub user_id: String,
    /// The key's own scopes, as stored (see `credentials` for what they
    /// grant now).
    pub scopes: ScopeSet,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub revoked: bool,
    pub email: String,
    pub role: Role,
    pub user_disabled: bool,
    /// The user's allowlist.
    pub ip_allowlist: IpAllowlist,
    /// The user's plan: every key of the account shares its budget.
    pub plan: Plan,
    /// The grant that minted the key (see [`ApiKeyRow::parent_grant_id`]).
    pub parent_grant: Option<String>,
    /// That grant is revoked or gone.
    pub parent_grant_revoked: bool,
}

impl ApiKeyStatus {
    /// The key whose SHA-256 is `key_hash`, with its user.
    pub fn load(conn: &mut AnyConnection, key_hash: &str) -> QueryResult<Option<ApiKeyStatus>> {
        let row: Option<StatusRow> = api_keys::table
            .inner_join(users::table)
            .left_join(grants::table.on(grants::id.nullable().eq(api_keys::parent_grant_id)))
            .filter(api_keys::key_hash.eq(key_hash))
            .select((
                api_keys::id,
                api_keys::user_id,
                api_keys::scopes,
                api_keys::created_at,
                api_keys::expires_at,
                api_keys::revoked_at,
                users::email,
                users::role,
                users::disabled,
                users::ip_allowlist,
                users::plan,
                users::rate_limit,
                api_keys::parent_grant_id,
                grants::id.nullable(),
                grants::revoked_at.nullable(),
            ))
            .first(conn)
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let plan = Plan::from_stored(&row.10, row.11)
            .map_err(|e| diesel::result::Error::DeserializationError(e.into()))?;
        Ok(Some(row).map(
            |(
                key_id,
                user_id,
                scopes,
                created_at,
                expires_at,
                revoked_at,
                email,
                role,
                disabled,
                ip_allowlist,
                _,
                _,
                parent_grant,
                found_grant,
                grant_revoked_at,
            )| {
                let parent_grant_revoked =
                    parent_grant.is_some() && (found_grant.is_none() || grant_revoked_at.is_some());
                ApiKeyStatus {
                    key_id,
                    user_id,
                    scopes,
                    created_at,
                    expires_at,
                    revoked: revoked_at.is_some(),
                    email,
                    role,
                    user_disabled: disabled,
                    ip_allowlist: IpAllowlist::from_stored(&ip_allowlist),
                    plan,
                    parent_grant,
                    parent_grant_revoked,
                }
            },
        ))
    }
}
