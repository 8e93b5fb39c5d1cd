use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{sessions, users};
use crate::db::{is_unique_violation, AnyConnection};
use crate::domain::{Email, Role};
use crate::tokens;

#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

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
            role: role.as_str().to_owned(),
            password_hash,
            disabled: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// The role; a row with an unknown role (impossible through the CHECK
    /// constraint) is treated as the least privileged one.
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Agent)
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

    /// Disables or re-enables a user. Disabling ends every session of the
    /// user in the same transaction. Returns false when no such user exists.
    pub fn set_disabled(
        conn: &mut AnyConnection,
        id: &str,
        disabled: bool,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        conn.transaction(|conn| {
            let updated = diesel::update(users::table.find(id))
                .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
                .execute(conn)?;
            if disabled && updated > 0 {
                diesel::delete(sessions::table.filter(sessions::user_id.eq(id))).execute(conn)?;
            }
            Ok(updated > 0)
        })
    }
}
