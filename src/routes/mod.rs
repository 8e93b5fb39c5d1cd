//! Thin HTTP handlers: extract, call the domain, translate. The route table is
//! in `startup.rs`.

pub mod cors;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod oidc;
pub mod openapi;
pub mod register;
pub mod static_files;
pub mod surface;
pub mod v1;
pub mod web;
pub mod well_known;
