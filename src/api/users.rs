//! The users API (`/v1/users`): scopes `users:read` and `users:write`;
//! anything that makes or touches an admin also needs `admin`. Blocking
//! (diesel, argon2): call on the pool.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::principal::{self, Authorize, Principal};
use crate::api::{decode_cursor, encode_cursor, field_error, page_limit, timestamp};
use crate::auth::password;
use crate::db::models::{CreateUserError, User, UserChanges};
use crate::db::AnyConnection;
use crate::domain::{Email, NewPassword, Plan, Role, Scope};
use crate::error::ApiError;

pub use crate::api::{DEFAULT_LIMIT, MAX_LIMIT};

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    /// The account's plan (seed: "Rate Limits") and its requests per
    /// minute.
    pub plan: &'static str,
    pub rate_limit: u32,
    pub created_at: String,
    pub updated_at: String,
}

impl UserView {
    /// A stored plan that does not parse is an error, never a default.
    fn of(u: User) -> Result<Self, ApiError> {
        let plan = u
            .plan()
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        Ok(Self {
            created_at: timestamp(u.created_at),
            updated_at: timestamp(u.updated_at),
            id: u.id,
            email: u.email,
            role: u.role.as_str().to_owned(),
            disabled: u.disabled,
            plan: plan.name(),
            rate_limit: plan.limit(),
        })
    }
}

/// A role, as the API document lists them.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Admin,
    Agent,
}

/// A plan, as the API document lists them.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanName {
    Standard,
    Professional,
    Enterprise,
}

/// The `POST /v1/users` body as the API document shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateUserRequest {
    #[schema(format = "email")]
    email: String,
    /// 12 characters at least, 1024 bytes at most, no control characters.
    #[schema(
        min_length = 12,
        max_length = 1024,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    password: String,
    /// `agent` unless given.
    #[schema(nullable = false)]
    role: Option<RoleName>,
}

/// The `PATCH /v1/users/{id}` body as the API document shows it: any of
/// the fields, at least one.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
#[allow(dead_code)]
pub struct UpdateUserRequest {
    #[schema(format = "email", nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    role: Option<RoleName>,
    #[schema(nullable = false)]
    disabled: Option<bool>,
    #[schema(
        min_length = 12,
        max_length = 1024,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        nullable = false
    )]
    password: Option<String>,
    /// Changing it needs `admin`.
    #[schema(nullable = false)]
    plan: Option<PlanName>,
    /// Requests per minute: with `"plan": "enterprise"` only, and required there.
    #[schema(minimum = 1)]
    rate_limit: Option<i64>,
}

/// One page of `GET /v1/users`; `next_cursor` is null on the last page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    pub next_cursor: Option<String>,
}

/// `limit` (1 to 100) and `cursor` (opaque, from `next_cursor`).
pub fn list(
    conn: &mut AnyConnection,
    principal: &Principal,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<UserPage, ApiError> {
    principal.require(Scope::UsersRead)?;
    let limit = page_limit(limit)?;
    let after = decode_cursor(cursor)?;
    let mut users = User::page(conn, after.as_deref(), limit + 1)?;
    let more = users.len() as i64 > limit;
    users.truncate(limit as usize);
    let next_cursor = more
        .then(|| users.last().map(|u| encode_cursor(&u.id)))
        .flatten();
    Ok(UserPage {
        users: users
            .into_iter()
            .map(UserView::of)
            .collect::<Result<_, _>>()?,
        next_cursor,
    })
}

pub fn get(
    conn: &mut AnyConnection,
    principal: &Principal,
    id: &str,
) -> Result<UserView, ApiError> {
    principal.require(Scope::UsersRead)?;
    UserView::of(find(conn, id)?)
}

fn find(conn: &mut AnyConnection, id: &str) -> Result<User, ApiError> {
    User::find(conn, id)?.ok_or_else(|| ApiError::NotFound("No such user".into()))
}

/// Admins are made, changed and removed only with the `admin` scope: a
/// `users:write` credential must not be able to take over an admin account
/// or lock every admin out.
fn require_admin_for(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.allows(Scope::Admin) {
        Ok(())
    } else {
        Err(needs_admin(what))
    }
}

/// The 403 of [`require_admin_for`], also for an admin met only under lock.
fn needs_admin(what: &str) -> ApiError {
    principal::insufficient(Scope::Admin, format!("{what} needs the 'admin' scope"))
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| ApiError::BadRequest("The body must be a JSON object".into()))
}

fn string_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|m| field_error("email", &m))
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    raw.parse().map_err(|m: String| field_error("role", &m))
}

fn hash_new_password(raw: &str) -> Result<String, ApiError> {
    let new = NewPassword::parse(raw.to_owned()).map_err(|m| field_error("password", &m))?;
    password::hash_password(&new).map_err(ApiError::internal)
}

fn duplicate_email(e: CreateUserError) -> ApiError {
    match e {
        CreateUserError::DuplicateEmail => {
            field_error("email", "a user with this email already exists")
        }
        CreateUserError::Database(e) => e.into(),
    }
}

fn no_unknown_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(field_error(
            &k.chars().take(40).collect::<String>(),
            &format!("unknown field (expected one of: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The `password` of a users body, checked and hashed (argon2id), after
/// the caller's `users:write`. Blocking, CPU only: run it on the blocking
/// pool *without* a database connection, so a burst of password hashing
/// cannot hold the connection pool.
pub fn hashed_password(principal: &Principal, body: &Value) -> Result<Option<String>, ApiError> {
    principal.require_to_manage(Scope::UsersWrite)?;
    string_field(object(body)?, "password")?
        .map(hash_new_password)
        .transpose()
}

/// `POST /v1/users` `{"email", "password", "role"}` (role: agent unless
/// given), with the password already through [`hashed_password`].
pub fn create(
    conn: &mut AnyConnection,
    principal: &Principal,
    body: &Value,
    password_hash: Option<String>,
    now: DateTime<Utc>,
) -> Result<UserView, ApiError> {
    principal.require_to_manage(Scope::UsersWrite)?;
    let obj = object(body)?;
    no_unknown_fields(obj, &["email", "password", "role"])?;
    let email = parse_email(
        string_field(obj, "email")?.ok_or_else(|| field_error("email", "is required"))?,
    )?;
    let role = match string_field(obj, "role")? {
        Some(r) => parse_role(r)?,
        None => Role::Agent,
    };
    let hash = password_hash.ok_or_else(|| field_error("password", "is required"))?;
    if role == Role::Admin {
        require_admin_for(principal, "Creating an admin")?;
    }
    let user = User::new(&email, role, hash, now.naive_utc());
    user.insert(conn).map_err(duplicate_email)?;
    UserView::of(user)
}

/// `PATCH /v1/users/{id}` with any of `email`, `role`, `disabled`,
/// `password`. Disabling ends the user's sessions, grants (so tokens) and
/// API keys for good; a new password (already through [`hashed_password`])
/// ends their sessions.
pub fn update(
    conn: &mut AnyConnection,
    principal: &Principal,
    id: &str,
    body: &Value,
    password_hash: Option<String>,
    now: DateTime<Utc>,
) -> Result<UserView, ApiError> {
    principal.require_to_manage(Scope::UsersWrite)?;
    let obj = object(body)?;
    no_unknown_fields(
        obj,
        &[
            "email",
            "role",
            "disabled",
            "password",
            "plan",
            "rate_limit",
        ],
    )?;
    if obj.is_empty() {
        return Err(ApiError::BadRequest(
            "Nothing to change: give email, role, disabled, password or plan".into(),
        ));
    }
    let plan = plan_fields(obj)?;
    if plan.is_some() {
        require_admin_for(principal, "Changing a plan")?;
    }
    let email = string_field(obj, "email")?.map(parse_email).transpose()?;
    let role = string_field(obj, "role")?.map(parse_role).transpose()?;
    let disabled = match obj.get("disabled") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(field_error("disabled", "must be true or false")),
    };
    let target = find(conn, id)?;
    if target.role() == Role::Admin {
        require_admin_for(principal, "Changing an admin")?;
    }
    if role == Some(Role::Admin) {
        require_admin_for(principal, "Making a user an admin")?;
    }
    let changes = UserChanges {
        email: email.map(|e| e.as_ref().to_owned()),
        role: role.map(|r| r.as_str().to_owned()),
        password_hash,
        plan: plan.map(|p| p.name().to_owned()),
        rate_limit: plan.map(|p| p.custom_limit().map(i64::from)),
        updated_at: now.naive_utc(),
    };
    let naive_now = now.naive_utc();
    let spare_admins = !principal.allows(Scope::Admin);
    let found = diesel::Connection::transaction(conn, |conn| {
        if !User::update(conn, id, &changes, spare_admins).map_err(duplicate_email)? {
            return Ok(false);
        }
        if let Some(disabled) = disabled {
            if disabled != target.disabled {
                User::set_disabled(conn, id, disabled, naive_now)?;
            }
        }
        Ok::<_, ApiError>(true)
    })?;
    if !found {
        // Gone, or made an admin since it was read.
        find(conn, id)?;
        return Err(needs_admin("Changing an admin"));
    }
    UserView::of(find(conn, id)?)
}

/// `plan` (and, for enterprise, `rate_limit`) of a PATCH body.
fn plan_fields(obj: &Map<String, Value>) -> Result<Option<Plan>, ApiError> {
    let rate_limit = match obj.get("rate_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(crate::api::whole_number(v).ok_or_else(|| {
            field_error(
                "rate_limit",
                "must be a whole number of requests per minute",
            )
        })?),
    };
    match string_field(obj, "plan")? {
        Some(name) => Plan::parse(name, rate_limit).map(Some).map_err(|m| {
            field_error(
                if m.contains("rate_limit") {
                    "rate_limit"
                } else {
                    "plan"
                },
                &m,
            )
        }),
        None if rate_limit.is_some() => Err(field_error(
            "plan",
            "is required with rate_limit (\"plan\": \"enterprise\")",
        )),
        None => Ok(None),
    }
}

/// `DELETE /v1/users/{id}`: the user and everything of theirs.
pub fn delete(
    conn: &mut AnyConnection,
    principal: &Principal,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    principal.require_to_manage(Scope::UsersWrite)?;
    let target = find(conn, id)?;
    if target.role() == Role::Admin {
        require_admin_for(principal, "Deleting an admin")?;
    }
    if User::delete(conn, id, !principal.allows(Scope::Admin), now.naive_utc())? {
        return Ok(());
    }
    // Gone, or made an admin since it was read.
    find(conn, id)?;
    Err(needs_admin("Deleting an admin"))
}
