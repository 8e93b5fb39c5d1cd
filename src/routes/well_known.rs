//! `/.well-known/*`. Changing a path in the route table means changing the
//! server metadata too.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use serde::Serialize;

use crate::domain::Scope;
use crate::error::WebError;
use crate::state::AppState;

/// `GET /.well-known/jwks.json` (RFC 7517 5): the public signing keys, the
/// retired ones included until every token they signed has expired. Served
/// from memory; re-read from the database after `DZDESK_KEY_RELOAD_SECS`, as
/// for signing, so a rotation shows on every instance within that interval.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "well-known", operation_id = "jwks",
    responses((status = 200, description = "RFC 7517 JWK Set", body = Object),
        (status = 503, description = "The keys are not in memory and the database is unavailable", content_type = "text/html")))]
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    let ring = match state.credentials.keys.cached() {
        Some(ring) => ring,
        None => {
            let st = state.clone();
            state
                .db
                .run(move |conn| {
                    st.credentials
                        .keys
                        .current(conn)
                        .map_err(WebError::internal)
                })
                .await?
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(ring.jwks()))
}

/// RFC 8414 2: the authorization server metadata, which is also the OpenID
/// Connect discovery document (Discovery 1.0 3; RFC 8414 2 lets the OIDC
/// fields appear here). Every URL is built from `DZDESK_ISSUER`; only
/// endpoints that exist are advertised.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    registration_endpoint: String,
    jwks_uri: String,
    scopes_supported: Vec<&'static str>,
    response_types_supported: [&'static str; 1],
    response_modes_supported: [&'static str; 1],
    grant_types_supported: [&'static str; 3],
    code_challenge_methods_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    /// `none`: a public client revokes its own tokens by client_id (RFC
    /// 7009 2.1).
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    /// RFC 9207 3.
    authorization_response_iss_parameter_supported: bool,
    service_documentation: String,
    /// OpenID Connect Discovery 1.0 3.
    userinfo_endpoint: String,
    /// OpenID Connect RP-Initiated Logout 1.0 2.1.
    end_session_endpoint: String,
    id_token_signing_alg_values_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    claims_supported: [&'static str; 12],
    /// Discovery 1.0 3: `request_uri_parameter_supported` defaults to true
    /// when left out; request objects are not taken.
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
    /// RFC 9126 5.
    pushed_authorization_request_endpoint: String,
    /// RFC 9126 5: false, a client may be registered to require it
    /// (`require_pushed_authorization_requests`).
    require_pushed_authorization_requests: bool,
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 3).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "well-known", operation_id = "serverMetadata",
    responses((status = 200, description = "RFC 8414 metadata", body = Metadata)))]
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.settings.issuer;
    let url = |path: &str| format!("{issuer}{path}");
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(Metadata {
            issuer: issuer.clone(),
            authorization_endpoint: url("/oauth/authorize"),
            token_endpoint: url("/oauth/token"),
            introspection_endpoint: url("/oauth/introspect"),
            revocation_endpoint: url("/oauth/revoke"),
            registration_endpoint: url("/oauth/register"),
            jwks_uri: url("/.well-known/jwks.json"),
            scopes_supported: Scope::ALL.iter().map(|s| s.as_str()).collect(),
            response_types_supported: ["code"],
            response_modes_supported: ["query"],
            grant_types_supported: ["authorization_code", "refresh_token", "client_credentials"],
            code_challenge_methods_supported: ["S256"],
            token_endpoint_auth_methods_supported: [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            introspection_endpoint_auth_methods_supported: [
                "client_secret_basic",
                "client_secret_post",
            ],
            revocation_endpoint_auth_methods_supported: [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            authorization_response_iss_parameter_supported: true,
            service_documentation: url("/docs"),
            userinfo_endpoint: url("/oauth/userinfo"),
            end_session_endpoint: url("/oauth/logout"),
            id_token_signing_alg_values_supported: ["ES256"],
            subject_types_supported: ["public"],
            claims_supported: crate::oauth::oidc::CLAIMS_SUPPORTED,
            request_parameter_supported: false,
            // Discovery 1.0 3 means request objects by reference; the
            // request_uri of a pushed request (RFC 9126 4) is advertised by
            // pushed_authorization_request_endpoint.
            request_uri_parameter_supported: false,
            pushed_authorization_request_endpoint: url("/oauth/par"),
            require_pushed_authorization_requests: false,
        })
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0
/// 4): the same document as the RFC 8414 metadata, so the two never
/// disagree.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "well-known", operation_id = "openidConfiguration",
    responses((status = 200, description = "OpenID Connect Discovery 1.0 3 (the RFC 8414 metadata)", body = Metadata)))]
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    metadata(state).await
}

/// `GET /.well-known/oauth-authorization-server/{issuer_path}` (RFC 8414
/// 3.1): for an issuer with a path (`https://example.com/auth`), clients
/// look for the metadata at the host's root with the path after the
/// well-known suffix. Only the issuer's own path answers; any other is 404.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server/{issuer_path}", tag = "well-known", operation_id = "serverMetadataForIssuerPath",
    params(("issuer_path" = String, Path, description = "The issuer's path, without its leading slash")),
    responses((status = 200, description = "RFC 8414 metadata", body = Metadata),
        (status = 404, description = "Not the issuer's path", content_type = "text/html")))]
pub async fn metadata_for_path(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    // RFC 8414 3.1: "any terminating "/" MUST be removed".
    let own = issuer_path(&state.settings.issuer);
    if own.is_empty() || path.trim_end_matches('/') != own {
        return Err(WebError::NotFound);
    }
    Ok(metadata(state).await)
}

/// The issuer's path without its leading and trailing slashes ("" for none).
fn issuer_path(issuer: &str) -> String {
    url::Url::parse(issuer)
        .map(|u| u.path().trim_matches('/').to_owned())
        .unwrap_or_default()
}
