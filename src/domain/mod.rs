//! Validated domain types: parse once at the edge, then trust the type.

mod email;
mod grant_type;
pub mod net;
mod origin;
mod password;
mod plan;
mod redirect_uri;
mod role;
mod scope;

pub use email::Email;
pub use grant_type::GrantType;
pub use net::{IpAllowlist, TrustedProxies};
pub use origin::{Origin, MAX_ORIGINS};
pub use password::{NewPassword, Password};
pub use plan::{Plan, MAX_RATE_LIMIT};
pub use redirect_uri::RedirectUri;
pub use role::Role;
pub use scope::{Scope, ScopeSet};
