//! User accounts: creating, disabling. Blocking (argon2, diesel).

use chrono::NaiveDateTime;

use crate::auth::password;
use crate::db::models::{CreateUserError, User};
use crate::db::AnyConnection;
use crate::domain::{Email, NewPassword, Plan, Role};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("a user with this email already exists")]
    DuplicateEmail,
    #[error("no user with this email")]
    UnknownUser,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error(transparent)]
    Hashing(#[from] anyhow::Error),
}

impl From<CreateUserError> for AccountError {
    fn from(e: CreateUserError) -> Self {
        match e {
            CreateUserError::DuplicateEmail => AccountError::DuplicateEmail,
            CreateUserError::Database(e) => AccountError::Database(e),
        }
    }
}

/// Hashes the password (argon2id) and inserts the user. A duplicate email
/// (case-insensitive) changes nothing.
pub fn create_user(
    conn: &mut AnyConnection,
    email: &Email,
    role: Role,
    plan: Plan,
    password: &NewPassword,
    now: NaiveDateTime,
) -> Result<User, AccountError> {
    let hash = password::hash_password(password)?;
    let mut user = User::new(email, role, hash, now);
    user.plan = plan.name().to_owned();
    user.rate_limit = plan.custom_limit().map(i64::from);
    user.insert(conn)?;
    Ok(user)
}

/// Disables (ending every session at once) or re-enables a user.
pub fn set_disabled(
    conn: &mut AnyConnection,
    email: &Email,
    disabled: bool,
    now: NaiveDateTime,
) -> Result<User, AccountError> {
    let user = User::find_by_email(conn, email)?.ok_or(AccountError::UnknownUser)?;
    User::set_disabled(conn, &user.id, disabled, now)?;
    User::find(conn, &user.id)?.ok_or(AccountError::UnknownUser)
}
