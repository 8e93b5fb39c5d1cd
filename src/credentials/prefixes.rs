//! Every token prefix the service issues, in one place.
//!
//! !!! CHANGING A PREFIX REVOKES EVERY TOKEN THAT CARRIES IT !!!
//!
//! A presented string is classified by its prefix before anything is looked
//! up (`credentials::Kind::of`), and secret scanners (GitHub's, GitLab's)
//! match leaked credentials by these prefixes. Renaming one makes every
//! token of that kind already handed out unrecognisable: API keys, refresh
//! tokens and client secrets stop working at once, for every customer. Add
//! a new prefix instead, and accept both for as long as old tokens live.

/// API keys (seed: "API Keys"): `dzd_` + 50 base62 characters.
pub const API_KEY: &str = "dzd_";
/// Refresh tokens (RFC 6749 1.5).
pub const REFRESH_TOKEN: &str = "dzr_";
/// Authorization codes (RFC 6749 4.1.2).
pub const AUTHORIZATION_CODE: &str = "dzc_";
/// Client secrets (RFC 6749 2.3.1).
pub const CLIENT_SECRET: &str = "dzs_";
/// RFC 7592 registration access tokens.
pub const REGISTRATION_TOKEN: &str = "dzrat_";
