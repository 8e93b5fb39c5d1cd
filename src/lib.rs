//! dzdesk-auth: the DZDESK authorization server.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accounts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod oauth;
pub mod ratelimit;
pub mod routes;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tokens;
