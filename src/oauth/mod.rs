//! The OAuth 2.0 protocol core: no actix types. Functions take the current
//! time as an argument and return typed errors that speak RFC 6749.

pub mod authorize;
pub mod client_cache;
pub mod clients;
pub mod cors;
pub mod error;
pub mod grants;
pub mod introspect;
pub mod logout;
pub mod oidc;
pub mod par;
pub mod params;
pub mod registration;
pub mod request;
pub mod token;
