//! Integration tests: the real service on a free port, a fresh database per
//! test (a temporary SQLite file, or a new PostgreSQL database when
//! `TEST_DATABASE_URL=postgres://...` is set), real HTTP.
//! One test binary, so it links once.

mod apps;
mod authorize;
mod bodies;
mod browser;
mod bruteforce;
mod cli;
mod code_grant;
mod cors;
mod credentials;
mod envelope;
mod faults;
mod health;
mod helpers;
mod https;
mod interop;
mod interop_oidc;
mod introspect;
mod logging;
mod login;
mod metadata;
mod metrics;
mod oauth_flow;
mod oidc;
mod openapi;
mod pages;
mod par;
mod ratelimits;
mod refresh;
mod register;
mod rotation;
mod secrets;
mod settings_api;
mod setup_script;
mod shutdown;
mod slow_clients;
mod token;
mod usage_log;
mod v1_keys;
mod v1_users;
