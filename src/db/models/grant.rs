use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::grants;
use crate::db::{is_unique_violation, AnyConnection};
use crate::domain::{Plan, Role};

/// A grant: the family of tokens one authorization (or one client's
/// client_credentials use) started. Access tokens carry its id.
#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = grants)]
pub struct GrantRow {
    pub id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    /// OpenID Connect: when the user signed in for the authorization that
    /// started the grant, and that browser session's `sid`; every ID token
    /// of the grant repeats them (OIDC Core 12.2). None for
    /// client_credentials grants and grants from before OIDC.
    pub auth_time: Option<NaiveDateTime>,
    pub sid: Option<String>,
}

// Local methods
impl GrantRow {
    /// The id of a client's client_credentials grant: one per client, so
    /// issuing a token costs no write.
    pub fn client_credentials_id(client_id: &str) -> String {
        format!("cc_{client_id}")
    }
}

// Database methods
impl GrantRow {
    /// Inserts the grant; an existing row with the same id is left alone.
    /// The insert runs in its own (nested: SAVEPOINT) transaction, because on
    /// PostgreSQL a failed statement aborts the enclosing transaction, whose
    /// COMMIT would then silently roll back.
    pub fn insert_if_missing(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        let inserted = crate::db::write_transaction(conn, |conn| {
            diesel::insert_into(grants::table)
                .values(self)
                .execute(conn)
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<GrantRow>> {
        grants::table
            .find(id)
            .select(GrantRow::as_select())
            .first(conn)
            .optional()
    }
}

impl GrantRow {
    pub fn insert(&self, conn: &mut AnyConnection) -> QueryResult<()> {
        diesel::insert_into(grants::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }

    /// Revokes every grant of the user (the user was disabled).
    pub fn revoke_all_for_user(
        conn: &mut AnyConnection,
        user_id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(
            grants::table
                .filter(grants::user_id.eq(user_id))
                .filter(grants::revoked_at.is_null()),
        )
        .set(grants::revoked_at.eq(now))
        .execute(conn)
    }

    /// Revokes the grant: its refresh tokens stop working at once, and its
    /// access tokens (which carry the grant id) fail introspection. Returns
    /// whether this call revoked it (false if it already was, or is unknown).
    pub fn revoke(conn: &mut AnyConnection, id: &str, now: NaiveDateTime) -> QueryResult<bool> {
        let updated = diesel::update(
            grants::table
                .filter(grants::id.eq(id))
                .filter(grants::revoked_at.is_null()),
        )
        .set(grants::revoked_at.eq(now))
        .execute(conn)?;
        Ok(updated == 1)
    }
}

/// One row of `GrantStatus::load`, in select order.
#[derive(Queryable)]
struct StatusRow {
    client_id: String,
    user_id: Option<String>,
    revoked_at: Option<NaiveDateTime>,
    client_disabled: bool,
    user_disabled: Option<bool>,
    email: Option<String>,
    role: Option<Role>,
    jti_revoked: bool,
    user_plan: Option<String>,
    user_rate_limit: Option<i64>,
    client_plan: String,
    client_rate_limit: Option<i64>,
}

/// Everything that decides whether a token of a grant is still active, read
/// in one indexed query (introspection's one lookup).
#[derive(Debug, Clone)]
pub struct GrantStatus {
    pub client_id: String,
    pub user_id: Option<String>,
    /// The user's email and role (user grants only).
    pub email: Option<String>,
    pub role: Option<Role>,
    pub grant_revoked: bool,
    pub client_disabled: bool,
    /// `None` for client_credentials grants.
    pub user_disabled: Option<bool>,
    /// Whether the access token `jti` was revoked on its own.
    pub jti_revoked: bool,
    /// The plan of the account the token counts against: the user's, or
    /// the client's for client_credentials grants.
    pub plan: Plan,
}

impl GrantStatus {
    /// Active: grant not revoked, client and user (if any) enabled, the
    /// token itself not revoked.
    pub fn is_active(&self) -> bool {
        !self.grant_revoked
            && !self.client_disabled
            && self.user_disabled != Some(true)
            && !self.jti_revoked
            && (self.user_id.is_none() || self.email.is_some())
    }

    /// The grant `grant_id` with its client and user, and whether `jti` is
    /// in the revoked list. None when the grant (or its client) is gone.
    pub fn load(
        conn: &mut AnyConnection,
        grant_id: &str,
        jti: &str,
    ) -> QueryResult<Option<GrantStatus>> {
        use crate::db::schema::{clients, revoked_access_tokens, users};
        use diesel::dsl::exists;
        let row: Option<StatusRow> = grants::table
            .inner_join(clients::table)
            .left_join(users::table)
            .filter(grants::id.eq(grant_id))
            .select((
                grants::client_id,
                grants::user_id,
                grants::revoked_at,
                clients::disabled,
                users::disabled.nullable(),
                users::email.nullable(),
                users::role.nullable(),
                exists(revoked_access_tokens::table.filter(revoked_access_tokens::jti.eq(jti))),
                users::plan.nullable(),
                users::rate_limit.nullable(),
                clients::plan,
                clients::rate_limit,
            ))
            .first(conn)
            .optional()?;
        let Some(r) = row else {
            return Ok(None);
        };
        let plan = match &r.user_plan {
            Some(user_plan) => Plan::from_stored(user_plan, r.user_rate_limit),
            None => Plan::from_stored(&r.client_plan, r.client_rate_limit),
        }
        .map_err(|e| diesel::result::Error::DeserializationError(e.into()))?;
        Ok(Some(GrantStatus {
            plan,
            client_id: r.client_id,
            user_id: r.user_id,
            email: r.email,
            role: r.role,
            grant_revoked: r.revoked_at.is_some(),
            client_disabled: r.client_disabled,
            user_disabled: r.user_disabled,
            jti_revoked: r.jti_revoked,
        }))
    }
}
