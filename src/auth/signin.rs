//! Sign-in's database step: the user an email names. The password is
//! checked apart, on the argon2 workers (`auth::verifier`), with no
//! database connection held. Blocking: run inside `Database::run`.

use crate::db::models::User;
use crate::db::AnyConnection;
use crate::domain::Email;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Unknown email, wrong password or disabled user: one answer for all, so
    /// that the response does not tell which emails exist.
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// The user an email names, if any (the connection is given back before
/// argon2 runs; an unknown email is then checked against the dummy hash, so
/// timing does not tell which emails exist).
pub fn find_user(conn: &mut AnyConnection, email: &str) -> Result<Option<User>, SignInError> {
    Ok(match Email::parse(email) {
        Ok(email) => User::find_by_email(conn, &email)?,
        Err(_) => None,
    })
}
