//! Validated domain types: parse once at the edge, then trust the type.

mod email;
mod password;
mod role;

pub use email::Email;
pub use password::{NewPassword, Password};
pub use role::Role;
