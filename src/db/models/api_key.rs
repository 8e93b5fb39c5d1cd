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
    /// The key that replaced this one by rotation: this one works until its
    /// `expires_at` (the end of the grace period) and cannot be rotated
    /// again.
    pub replaced_by: Option<String>,
}

/// Parents followed at most up a key's lineage (a guard against a corrupt
/// table; real chains are bounded by the account's keys).
const MAX_ROTATION_CHAIN: usize = 1_000;

/// A key as the parent of a key being minted or rotated, or as the caller
/// doing it ([`ApiKeyRow::lineage_locked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lineage {
    /// Works: not revoked, not expired, not replaced by rotation. `grant`:
    /// the OAuth grant it dies with, which a key it mints inherits.
    Live {
        expires_at: Option<NaiveDateTime>,
        grant: Option<String>,
    },
    /// Replaced by rotation, in its grace period: it still calls the API
    /// but manages no credentials.
    Replaced,
    /// Revoked, expired, or unknown.
    Gone,
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

    /// The key `id` (of `user_id`, when given), in any state (revoked or
    /// expired included).
    pub fn find(
        conn: &mut AnyConnection,
        id: &str,
        user_id: Option<&str>,
    ) -> QueryResult<Option<ApiKeyRow>> {
        let row: Option<ApiKeyRow> = api_keys::table
            .find(id)
            .select(ApiKeyRow::as_select())
            .first(conn)
            .optional()?;
        Ok(row.filter(|k| user_id.is_none_or(|u| k.user_id == u)))
    }

    /// How many keys the user has that count against the key cap: not
    /// revoked and not replaced by rotation (a key in its grace period, or
    /// past it, does not block the rotation that replaced it).
    pub fn count_for_user(conn: &mut AnyConnection, user_id: &str) -> QueryResult<i64> {
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::replaced_by.is_null())
            .count()
            .get_result(conn)
    }

    /// How many of the user's rotated keys still work at `now` (in their
    /// grace period).
    pub fn count_in_grace(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<i64> {
        api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::replaced_by.is_not_null())
            .filter(api_keys::expires_at.gt(now))
            .count()
            .get_result(conn)
    }

    /// Marks revoked the user's rotated keys whose grace period ended
    /// before `now` (they stopped working then; this only takes them off
    /// the list). Their children were re-parented at rotation.
    pub fn retire_replaced(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            api_keys::table
                .filter(api_keys::user_id.eq(user_id))
                .filter(api_keys::revoked_at.is_null())
                .filter(api_keys::replaced_by.is_not_null())
                .filter(api_keys::expires_at.le(now)),
        )
        .set(api_keys::revoked_at.eq(now))
        .execute(conn)
    }

    /// The key `id` (of `user_id`, when given), read with the row locked on
    /// PostgreSQL: rotation decides on it (SQLite's write transactions are
    /// serial already).
    pub fn find_locked(
        conn: &mut AnyConnection,
        id: &str,
        user_id: Option<&str>,
    ) -> QueryResult<Option<ApiKeyRow>> {
        let query = || api_keys::table.find(id);
        let row = match conn {
            AnyConnection::Postgresql(pg) => query()
                .select(ApiKeyRow::as_select())
                .for_update()
                .first(pg)
                .optional()?,
            AnyConnection::Sqlite(sqlite) => query()
                .select(ApiKeyRow::as_select())
                .first(sqlite)
                .optional()?,
        };
        Ok(row.filter(|k| user_id.is_none_or(|u| k.user_id == u)))
    }

    /// Rotation, the old key's side: `id` is replaced by `new_id` and works
    /// until `works_until`; the keys it minted now hang off `new_id` (a
    /// rotation changes the secret, it revokes nothing). False when `id` was
    /// replaced meanwhile. Run inside the rotation's transaction.
    pub fn mark_replaced(
        conn: &mut AnyConnection,
        id: &str,
        new_id: &str,
        works_until: NaiveDateTime,
    ) -> QueryResult<bool> {
        let updated = diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(id))
                .filter(api_keys::revoked_at.is_null())
                .filter(api_keys::replaced_by.is_null()),
        )
        .set((
            api_keys::replaced_by.eq(new_id),
            // Written even when unchanged: the PostgreSQL trigger fires on
            // it, so every instance forgets the cached status.
            api_keys::expires_at.eq(works_until),
        ))
        .execute(conn)?;
        if updated != 1 {
            return Ok(false);
        }
        diesel::update(
            api_keys::table
                .filter(api_keys::parent_id.eq(id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::parent_id.eq(new_id))
        .execute(conn)?;
        Ok(true)
    }

    /// The key `id` as a parent or caller at `now`, read with the row
    /// locked on PostgreSQL (as [`super::User::is_enabled_admin_locked`]),
    /// so that a key minted or rotated under it cannot slip past a
    /// concurrent revocation's cascade (which locks the parent first, then
    /// its children: lock in that order too).
    pub fn lineage_locked(
        conn: &mut AnyConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Lineage> {
        let query = api_keys::table.find(id).select((
            api_keys::revoked_at,
            api_keys::expires_at,
            api_keys::replaced_by,
            api_keys::parent_grant_id,
        ));
        type Row = (
            Option<NaiveDateTime>,
            Option<NaiveDateTime>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = match conn {
            AnyConnection::Postgresql(pg) => query.for_update().first(pg).optional()?,
            AnyConnection::Sqlite(sqlite) => query.first(sqlite).optional()?,
        };
        Ok(match row {
            Some((None, expires, replaced_by, grant)) if expires.is_none_or(|e| e > now) => {
                if replaced_by.is_some() {
                    Lineage::Replaced
                } else {
                    Lineage::Live {
                        expires_at: expires,
                        grant,
                    }
                }
            }
            _ => Lineage::Gone,
        })
    }

    /// Whether the OAuth grant `id` still exists and is not revoked (a key
    /// minted under it works only then, see [`ApiKeyStatus`]).
    pub fn grant_alive(conn: &mut AnyConnection, id: &str) -> QueryResult<bool> {
        let revoked_at: Option<Option<NaiveDateTime>> = grants::table
            .find(id)
            .select(grants::revoked_at)
            .first(conn)
            .optional()?;
        Ok(matches!(revoked_at, Some(None)))
    }

    /// Whether `ancestor` minted the key whose parent is `parent`, directly
    /// or through keys it minted (parents are followed upwards; a corrupt
    /// table's cycle stops at [`MAX_ROTATION_CHAIN`]).
    pub fn descends_from(
        conn: &mut AnyConnection,
        mut parent: Option<String>,
        ancestor: &str,
    ) -> QueryResult<bool> {
        for _ in 0..MAX_ROTATION_CHAIN {
            let Some(id) = parent else { return Ok(false) };
            if id == ancestor {
                return Ok(true);
            }
            parent = api_keys::table
                .find(&id)
                .select(api_keys::parent_id)
                .first::<Option<String>>(conn)
                .optional()?
                .flatten();
        }
        Ok(false)
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
    Option<String>,
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
    /// Replaced by rotation: it works until `expires_at` (the grace end)
    /// but manages no credentials.
    pub replaced: bool,
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
                api_keys::replaced_by,
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
                replaced_by,
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
                    replaced: replaced_by.is_some(),
                }
            },
        ))
    }
}
