//! One file per table: a struct with its diesel derives, "local methods"
//! (no I/O) and "database methods" (take a connection, run on the blocking
//! pool).

mod api_key;
mod api_key_usage;
mod authorization_code;
mod client;
mod consent;
mod grant;
mod pushed_request;
mod refresh_token;
mod revoked_access_token;
mod server_secret;
mod session;
mod signing_key;
mod user;

pub use api_key::{ApiKeyRow, ApiKeyStatus, Lineage};
pub use api_key_usage::{NewUsageRow, StatusFilter, UsageQuery, UsageRow};
pub use authorization_code::{AuthorizationCodeRow, CodeChecks, Redeemed, Redemption};
pub use client::{Client, RedirectProblem};
pub use consent::{ConnectedApp, ConsentRow};
pub use grant::{GrantRow, GrantStatus};
pub use pushed_request::PushedRequestRow;
pub use refresh_token::{RefreshTokenRow, Rotated, Rotation, Successor};
pub use revoked_access_token::RevokedAccessToken;
pub use server_secret::ServerSecret;
pub use session::Session;
pub use signing_key::SigningKeyRow;
pub use user::{CreateUserError, User, UserChanges, USER_COLUMNS};
