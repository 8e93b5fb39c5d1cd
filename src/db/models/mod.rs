//! One file per table: a struct with its diesel derives, "local methods"
//! (no I/O) and "database methods" (take a connection, run on the blocking
//! pool).

mod client;
mod grant;
mod server_secret;
mod session;
mod signing_key;
mod user;

pub use client::{Client, CLIENT_SECRET_PREFIX};
pub use grant::GrantRow;
pub use server_secret::ServerSecret;
pub use session::Session;
pub use signing_key::SigningKeyRow;
pub use user::{CreateUserError, User};
