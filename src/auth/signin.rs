//! Checking an email and password and opening a session. Blocking (argon2 and
//! diesel): run inside `Database::run`.

use chrono::NaiveDateTime;

use crate::auth::password;
use crate::db::models::{Session, User};
use crate::db::AnyConnection;
use crate::domain::{Email, Password};

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Unknown email, wrong password or disabled user: one answer for all, so
    /// that the response does not tell which emails exist.
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// A successful sign-in: the user and the new session's cookie secret.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub session_secret: String,
}

/// Verifies the credentials and creates a session. Every failure path costs
/// exactly one argon2 verification, like success does (no user enumeration by
/// timing).
pub fn sign_in(
    conn: &mut AnyConnection,
    email: &str,
    password: &Password,
    now: NaiveDateTime,
) -> Result<SignedIn, SignInError> {
    let user = match Email::parse(email) {
        Ok(email) => User::find_by_email(conn, &email)?,
        Err(_) => None,
    };
    let Some(user) = user else {
        password::verify_against_dummy(password);
        return Err(SignInError::InvalidCredentials);
    };
    if !password::verify_password(password, &user.password_hash) || user.disabled {
        return Err(SignInError::InvalidCredentials);
    }
    let session_secret = Session::create(conn, &user.id, now)?;
    Ok(SignedIn {
        user,
        session_secret,
    })
}
