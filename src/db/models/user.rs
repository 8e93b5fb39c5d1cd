use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::{ApiKeyRow, Client, GrantRow};
use crate::db::schema::{sessions, users};
use crate::db::{is_unique_violation, AnyConnection};
use crate::domain::{Email, Plan, Role};
use crate::tokens;

#[derive(Queryable, QueryableByName, Selectable, Insertable, Clone)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Newline-separated canonical CIDRs (see `domain::net`); empty: no
    /// restriction.
    pub ip_allowlist: String,
    /// The account's plan (`standard`, `professional`, `enterprise`) and,
    /// for enterprise, its requests per minute: see [`User::plan`].
    pub plan: String,
    pub rate_limit: Option<i64>,
}

/// [`User`]'s columns of `users u`, for statements written as SQL that
/// read a user by name (`QueryableByName`). Named one by one, never `u.*`:
/// a prepared statement whose result gains a column (a migration of a newer
/// instance) fails on PostgreSQL with "cached plan must not change result
/// type".
pub const USER_COLUMNS: &str = "u.id, u.email, u.role, u.password_hash, u.disabled, \
     u.created_at, u.updated_at, u.ip_allowlist, u.plan, u.rate_limit";

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Columns `PATCH /v1/users/{id}` may change (None: unchanged).
#[derive(AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<String>,
    pub role: Option<String>,
    pub password_hash: Option<String>,
    pub plan: Option<String>,
    /// Some(None): back to a plan without a custom limit.
    pub rate_limit: Option<Option<i64>>,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("a user with this email already exists")]
    DuplicateEmail,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

// Local methods
impl User {
    pub fn new(email: &Email, role: Role, password_hash: String, now: NaiveDateTime) -> Self {
        Self {
            id: tokens::new_id("user_"),
            email: email.as_ref().to_owned(),
            role,
            password_hash,
            disabled: false,
            created_at: now,
            updated_at: now,
            ip_allowlist: String::new(),
            plan: Plan::Standard.name().to_owned(),
            rate_limit: None,
        }
    }

    /// The plan; a stored plan that does not parse is an error.
    pub fn plan(&self) -> Result<Plan, String> {
        Plan::from_stored(&self.plan, self.rate_limit)
    }

    /// The role (a row whose role does not parse fails to load).
    pub fn role(&self) -> Role {
        self.role
    }
}

/// The role a guarded write must not touch: "admin", or none ("" is no
/// role: the CHECK constraint allows only admin and agent).
fn excluded_role(spare_admins: bool) -> &'static str {
    if spare_admins {
        "admin"
    } else {
        ""
    }
}

// Database methods
impl User {
    pub fn insert(&self, conn: &mut AnyConnection) -> Result<(), CreateUserError> {
        diesel::insert_into(users::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
            .map_err(|e| {
                if is_unique_violation(&e) {
                    CreateUserError::DuplicateEmail
                } else {
                    CreateUserError::Database(e)
                }
            })
    }

    pub fn find_by_email(conn: &mut AnyConnection, email: &Email) -> QueryResult<Option<User>> {
        users::table
            .filter(users::email.eq(email.as_ref()))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<User>> {
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// Up to `limit` users with ids after `after`, by id.
    pub fn page(
        conn: &mut AnyConnection,
        after: Option<&str>,
        limit: i64,
    ) -> QueryResult<Vec<User>> {
        let mut query = users::table
            .select(User::as_select())
            .order(users::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(users::id.gt(after.to_owned()));
        }
        query.load(conn)
    }

    /// Applies `changes`; a password change ends every session of the user.
    /// A taken email: `DuplicateEmail`, nothing changed. With
    /// `spare_admins`, an admin is not touched (false), checked in the same
    /// statement as the write so a concurrent promotion cannot slip between.
    pub fn update(
        conn: &mut AnyConnection,
        id: &str,
        changes: &UserChanges,
        spare_admins: bool,
    ) -> Result<bool, CreateUserError> {
        crate::db::write_transaction(conn, |conn| {
            let target = users::table
                .filter(users::id.eq(id))
                .filter(users::role.ne(excluded_role(spare_admins)));
            let updated = diesel::update(target)
                .set(changes)
                .execute(conn)
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        CreateUserError::DuplicateEmail
                    } else {
                        CreateUserError::Database(e)
                    }
                })?;
            if changes.password_hash.is_some() {
                diesel::delete(sessions::table.filter(sessions::user_id.eq(id))).execute(conn)?;
            }
            // No longer an admin: the clients they registered go (RFC 7591
            // registration needs `admin`; a client must not outlive it).
            if updated > 0
                && changes
                    .role
                    .as_deref()
                    .is_some_and(|r| r != Role::Admin.as_str())
            {
                let now = changes.updated_at;
                Client::disable_registered_by(conn, id, now)?;
            }
            Ok(updated > 0)
        })
    }

    /// Deletes the user; sessions, grants, API keys, consents and codes go
    /// with it (ON DELETE CASCADE). False when no such user exists.
    /// With `spare_admins`, an admin is not deleted (false), as in
    /// [`User::update`].
    /// The clients the user registered are disabled in the same
    /// transaction.
    pub fn delete(
        conn: &mut AnyConnection,
        id: &str,
        spare_admins: bool,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let target = users::table
                .filter(users::id.eq(id))
                .filter(users::role.ne(excluded_role(spare_admins)));
            let deleted = diesel::delete(target).execute(conn)? > 0;
            if deleted {
                Client::disable_registered_by(conn, id, now)?;
            }
            Ok(deleted)
        })
    }

    /// Whether the user is an enabled admin, read with the row locked for
    /// the rest of the transaction on PostgreSQL (`FOR UPDATE`), so that a
    /// concurrent demotion or disable either waits for this transaction (and
    /// then sees what it wrote) or has already committed (and this read sees
    /// it). SQLite serialises writers: a demotion committed after this read
    /// makes this transaction's first write fail instead.
    pub fn is_enabled_admin_locked(conn: &mut AnyConnection, id: &str) -> QueryResult<bool> {
        let query = users::table.find(id).select((users::role, users::disabled));
        let row: Option<(Role, bool)> = match conn {
            AnyConnection::Postgresql(pg) => query.for_update().first(pg).optional()?,
            AnyConnection::Sqlite(sqlite) => query.first(sqlite).optional()?,
        };
        Ok(matches!(row, Some((Role::Admin, false))))
    }

    /// Sets the account's plan; false when no such user exists.
    pub fn set_plan(
        conn: &mut AnyConnection,
        id: &str,
        plan: Plan,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(users::table.find(id))
            .set((
                users::plan.eq(plan.name()),
                users::rate_limit.eq(plan.custom_limit().map(i64::from)),
                users::updated_at.eq(now),
            ))
            .execute(conn)
            .map(|n| n > 0)
    }

    pub fn set_ip_allowlist(
        conn: &mut AnyConnection,
        id: &str,
        stored: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(users::table.find(id))
            .set((users::ip_allowlist.eq(stored), users::updated_at.eq(now)))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// Disables or re-enables a user. Disabling ends, in the same
    /// transaction, every session, grant (so every token) and API key of the
    /// user for good: re-enabling the account does not bring them back.
    /// Returns false when no such user exists.
    pub fn set_disabled(
        conn: &mut AnyConnection,
        id: &str,
        disabled: bool,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let updated = diesel::update(users::table.find(id))
                .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
                .execute(conn)?;
            if disabled && updated > 0 {
                diesel::delete(sessions::table.filter(sessions::user_id.eq(id))).execute(conn)?;
                GrantRow::revoke_all_for_user(conn, id, now)?;
                ApiKeyRow::revoke_all_for_user(conn, id, now)?;
                Client::disable_registered_by(conn, id, now)?;
            }
            Ok(updated > 0)
        })
    }
}
