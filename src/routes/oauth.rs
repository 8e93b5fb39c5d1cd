//! `/oauth/*` handlers: extract, call the protocol core, translate to the
//! RFC 6749 response shapes.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use chrono::Utc;
use oxide_auth_actix::OAuthRequest;
use serde::Serialize;

use crate::credentials::jwt::KeyRing;
use crate::db::models::Client;
use crate::db::AnyConnection;
use crate::domain::GrantType;
use crate::error::WebError;
use crate::http::{no_store, rfc_error};
use crate::metrics::Throttled;
use crate::oauth::authorize::{
    self, AuthorizeInput, AuthorizeOutcome, ConsentPrompt, SignedInUser,
};
use crate::oauth::error::OAuthError;
use crate::oauth::grants;
use crate::oauth::token::{self, ClientAuth, FormParams, IssuedTokens};
use crate::oauth::{introspect, par};
use crate::ratelimit::address_key;
use crate::ratelimit::throttle::{self, Begin, LockScope};
use crate::routes::cors;
use crate::routes::web::session::{OurCookie, SignedIn};
use crate::routes::web::{render, see_other};
use crate::state::AppState;

/// Largest body of a token, introspection or revocation request (larger:
/// 413, see `routes::surface`).
pub const TOKEN_BODY_LIMIT: usize = 16 * 1024;

/// RFC 6749 5.1 access token response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// OpenID Connect Core 3.1.3.3: when the scope holds `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// A grant type of the token endpoint.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantTypeName {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// The token request (RFC 6749 4.1.3, 4.4.2, 6), form-encoded. Client
/// authentication: HTTP Basic, or `client_id` and `client_secret` here
/// (client_secret_post); a public client sends `client_id` alone.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    grant_type: GrantTypeName,
    /// authorization_code: the code.
    code: Option<String>,
    /// authorization_code: as in the authorization request.
    redirect_uri: Option<String>,
    /// authorization_code with PKCE (RFC 7636 4.5).
    code_verifier: Option<String>,
    /// refresh_token: the refresh token.
    refresh_token: Option<String>,
    /// Space-separated scopes, within the client's (or the grant's).
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The introspection request (RFC 7662 2.1), form-encoded.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IntrospectRequest {
    #[schema(min_length = 1)]
    token: String,
    token_type_hint: Option<String>,
    /// Extension: the address the end client used the token from; an API
    /// key whose account has an IP allowlist is active only with a
    /// `client_ip` inside it.
    #[schema(format = "ip")]
    client_ip: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The revocation request (RFC 7009 2.1), form-encoded.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RevokeRequest {
    #[schema(min_length = 1)]
    token: String,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The authorization request (RFC 6749 4.1.1, RFC 7636 4.3, OIDC `prompt`),
/// or `client_id` and the `request_uri` of a pushed one (RFC 9126 4).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuthorizeQuery {
    /// `code` (required unless `request_uri` is given).
    response_type: Option<String>,
    client_id: String,
    /// From `POST /oauth/par`; every other parameter is then ignored.
    request_uri: Option<String>,
    /// One of the client's registered redirect URIs (required when it has several).
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    /// Required for public clients.
    code_challenge: Option<String>,
    /// `S256`.
    code_challenge_method: Option<String>,
    /// `consent` or `none`.
    prompt: Option<String>,
}

/// The pushed authorization request (RFC 9126 2.1): the authorization
/// request's parameters, form-encoded, with client authentication as at
/// the token endpoint.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ParRequest {
    /// `code`.
    response_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// One of the client's registered redirect URIs (required when it has several).
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    /// Required for public clients.
    code_challenge: Option<String>,
    /// `S256`.
    code_challenge_method: Option<String>,
    /// OpenID Connect: echoed in the ID token; required for public clients with `openid`.
    nonce: Option<String>,
    /// `none`, `login` and/or `consent`.
    prompt: Option<String>,
    max_age: Option<i64>,
}

/// The pushed authorization response (RFC 9126 2.2).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ParBody {
    /// `urn:ietf:params:oauth:request_uri:...`: single use, for
    /// `GET /oauth/authorize?client_id=...&request_uri=...`.
    request_uri: String,
    /// Seconds left to use it (60).
    expires_in: i64,
}

/// The consent page's answer, form-encoded.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConsentForm {
    csrf_token: String,
    /// `approve` or `deny`.
    decision: String,
}

impl ResponseError for OAuthError {
    /// RFC 6749 5.2: 400, except `invalid_client`, which is 401.
    fn status_code(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            OAuthError::TooManyAttempts(_) | OAuthError::TooManyPushed(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            OAuthError::ServerError(e) => log::error!("token endpoint: {e:?}"),
            OAuthError::TemporarilyUnavailable(e) => crate::db::log_unavailable(e),
            _ => {}
        }
        let mut resp = rfc_error(self.status_code(), self.code(), self.to_string());
        if matches!(self, OAuthError::TemporarilyUnavailable(_)) {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::error::RETRY_AFTER_UNAVAILABLE),
            );
        }
        if let OAuthError::TooManyAttempts(secs) | OAuthError::TooManyPushed(secs) = self {
            if let Ok(v) = HeaderValue::from_str(&secs.max(&1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self, OAuthError::InvalidClient(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dzdesk-auth\""),
            );
        }
        resp
    }
}

/// `POST /oauth/token` (RFC 6749 3.2).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth", operation_id = "token",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Tokens issued (Cache-Control: no-store)", body = TokenBody)))]
pub async fn token_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (params, auth, grant) = client_request(&req, &body, &state, token::grant_type).await?;

    // Hot path of service-to-service traffic: client_credentials with the
    // client and the keys in memory needs no database and no blocking-pool
    // hop (ES256 signing with aws-lc takes tens of microseconds). A cached
    // client that fails authentication is re-read below, so a new secret
    // works at once.
    if grant == GrantType::ClientCredentials {
        if let (Some(client), Some(keys)) = (
            cached_client(&state, &auth),
            state.credentials.keys.cached(),
        ) {
            let cfg = state.token_config();
            let issued = token::client_credentials(&client, &params, &keys, &cfg, Utc::now())?;
            if let Some(m) = state.metrics() {
                m.token_issued(grant);
            }
            return Ok(token_response(issued));
        }
    }

    let client_id = auth.client_id().to_owned();
    let issued: Result<IssuedTokens, OAuthError> = if grant == GrantType::RefreshToken {
        // Its rotation may be sent together with concurrent ones, waiting
        // without a connection.
        match client_and_keys(&state, auth).await {
            Ok((client, keys)) => {
                let cfg = state.token_config();
                grants::refresh_token_in_group(&state.db, client, params, keys, cfg, Utc::now())
                    .await
            }
            Err(e) => Err(e),
        }
    } else {
        let state2 = state.clone();
        state
            .db
            .run(move |conn| {
                let (client, keys) = client_and_keys_on(conn, &state2, &auth)?;
                let cfg = state2.token_config();
                token::exchange(conn, &client, grant, &params, &keys, &cfg, Utc::now())
            })
            .await
    };
    note_client_failure(&state, &req, &client_id, &issued).await;
    if let Err(OAuthError::InvalidGrant(_) | OAuthError::RefreshTokenReused(_)) = &issued {
        // A replayed code or a reused refresh token may just have revoked a
        // grant: let this instance's view catch up before answering.
        state.credentials.fence().await;
    }
    if let Some(m) = state.metrics() {
        match &issued {
            Ok(_) => m.token_issued(grant),
            Err(OAuthError::RefreshTokenReused(_)) => m.refresh_reused(),
            Err(_) => {}
        }
    }
    Ok(token_response(issued?))
}

/// `POST /oauth/par` (RFC 9126): stores an authorization request of an
/// authenticated client, validated as the authorization endpoint would, and
/// answers the single-use `request_uri` that stands for it.
#[utoipa::path(post, path = "/oauth/par", tag = "oauth", operation_id = "pushAuthorizationRequest",
    request_body(content = ParRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "Stored (Cache-Control: no-store)", body = ParBody)))]
pub async fn par_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (params, auth, ()) = client_request(&req, &body, &state, |_| Ok(())).await?;
    if let ClientAuth::Public { .. } = auth {
        public_push_limit(&state, &req).await?;
    }
    let client_id = auth.client_id().to_owned();
    let state2 = state.clone();
    let pushed = state
        .db
        .run(move |conn| {
            let client = authenticated_client(conn, &state2, &auth)?;
            par::push(conn, &client, &params, Utc::now())
        })
        .await;
    note_client_failure(&state, &req, &client_id, &pushed).await;
    let pushed = pushed?;
    // RFC 9126 2.2: "201 Created".
    let mut resp = HttpResponse::Created().json(ParBody {
        request_uri: pushed.request_uri,
        expires_in: pushed.expires_in,
    });
    no_store(&mut resp);
    Ok(resp)
}

/// Pushes of public clients from one address ([`par::PUBLIC_PUSHES_PER_MIN`],
/// counted in Redis when configured): without a secret, anyone may push for
/// a public client, and every push stores a row until it expires.
async fn public_push_limit(state: &AppState, req: &HttpRequest) -> Result<(), OAuthError> {
    if !state.settings.rate_limits {
        return Ok(());
    }
    let address = address_key(state.client_ip(req));
    let now = Utc::now().timestamp_micros();
    let decision = state
        .limiter
        .check(&format!("par:{address}"), par::PUBLIC_PUSHES_PER_MIN, now)
        .await;
    if decision.allowed {
        return Ok(());
    }
    if let Some(m) = state.metrics() {
        m.throttled(Throttled::Ip);
    }
    Err(OAuthError::TooManyPushed(decision.retry_after_secs()))
}

/// What the token, revocation and pushed authorization request endpoints
/// do first: the form, the endpoint's own parameter (`param`: a malformed
/// request is told so before its credentials are looked at), the client's
/// credentials, the client-authentication lock, and the page's origin
/// (CORS), in that order; an error before the client is known is readable
/// from any origin (`readable`).
async fn client_request<T>(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    param: impl FnOnce(&FormParams) -> Result<T, OAuthError>,
) -> Result<(FormParams, ClientAuth, T), OAuthError> {
    let (params, authorization) = readable(req, read_form(req, body))?;
    let own = readable(req, param(&params))?;
    let auth = readable(req, token::client_auth(authorization.as_deref(), &params))?;
    readable(req, client_guard(state, req, &auth))?;
    cross_origin(state, req, auth.client_id()).await?;
    Ok((params, auth, own))
}

/// The form body and Authorization header of a request to the token,
/// introspection or revocation endpoint. RFC 6749 3.2 (and RFC 7662 2.1, RFC
/// 7009 2.1): "using the application/x-www-form-urlencoded format".
fn read_form(req: &HttpRequest, body: &[u8]) -> Result<(FormParams, Option<String>), OAuthError> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let params = FormParams::parse(body)?;
    // A header that is not visible ASCII cannot be valid credentials.
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    Ok((params, authorization))
}

/// The `token` parameter of introspection and revocation requests.
fn token_param(params: &FormParams) -> Result<String, OAuthError> {
    params
        .get("token")
        .map(str::to_owned)
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))
}

/// Introspection callers: confidential clients only (RFC 7662 2.1: "the
/// endpoint MUST also require some form of authorization"). Blocking.
fn authenticated_confidential(
    conn: &mut AnyConnection,
    state: &AppState,
    auth: &ClientAuth,
) -> Result<Arc<Client>, OAuthError> {
    let client = authenticated_client(conn, state, auth)?;
    if !client.confidential {
        return Err(OAuthError::InvalidClient(
            "a confidential client must authenticate".into(),
        ));
    }
    Ok(client)
}

/// `POST /oauth/introspect` (RFC 7662).
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth", operation_id = "introspect",
    request_body(content = IntrospectRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "RFC 7662 2.2; inactive is exactly {\"active\": false}", body = crate::oauth::introspect::Introspection)))]
pub async fn introspect_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (params, authorization) = read_form(&req, &body)?;
    let auth = token::client_auth(authorization.as_deref(), &params)?;
    let token = token_param(&params)?;
    let client_ip = client_ip_param(&params)?;
    client_guard(&state, &req, &auth)?;

    // Hot path (other DZDESK services call this on every request): the
    // caller from the client cache and the token from memory (keys and
    // revocation view), so no database and no blocking-pool hop.
    let caller = match cached_client(&state, &auth).filter(|c| c.confidential) {
        Some(caller) => caller,
        None => {
            let client_id = auth.client_id().to_owned();
            let st = state.clone();
            let caller = state
                .db
                .run(move |conn| authenticated_confidential(conn, &st, &auth))
                .await;
            note_client_failure(&state, &req, &client_id, &caller).await;
            caller?
        }
    };
    let answer =
        introspect::introspect(&state.credentials, &caller, &token, client_ip, Utc::now()).await?;
    if let Some(m) = state.metrics() {
        m.introspected(answer.active);
    }
    Ok(introspection_response(&answer))
}

/// Our extension to RFC 7662 2.1: `client_ip`, the address the resource
/// server saw the token used from. With it, an API key whose account's IP
/// allowlist excludes that address introspects inactive.
fn client_ip_param(params: &FormParams) -> Result<Option<IpAddr>, OAuthError> {
    params
        .get("client_ip")
        .map(|raw| {
            raw.trim().parse::<IpAddr>().map_err(|_| {
                OAuthError::InvalidRequest("client_ip must be an IPv4 or IPv6 address".into())
            })
        })
        .transpose()
}

fn introspection_response(answer: &introspect::Introspection) -> HttpResponse {
    let mut resp = HttpResponse::Ok().json(answer);
    no_store(&mut resp);
    resp
}

/// `POST /oauth/revoke` (RFC 7009): 200 with an empty body.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth", operation_id = "revoke",
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Revoked, or not a token of the caller (RFC 7009 2.2)")))]
pub async fn revoke_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (_, auth, token) = client_request(&req, &body, &state, token_param).await?;
    let client_id = auth.client_id().to_owned();
    let st = state.clone();
    let revoked = state
        .db
        .run(move |conn| {
            // RFC 7009 2.1: a public client revokes its own tokens, named by
            // its client_id (the check that the token is the caller's is
            // `introspect::revoke`'s); a confidential one authenticates.
            let caller = authenticated_client(conn, &st, &auth)?;
            let credentials = &st.credentials;
            let keys = credentials.keys.current(conn).map_err(OAuthError::server)?;
            introspect::revoke(
                conn,
                &caller,
                &token,
                &keys,
                &credentials.audience,
                Utc::now(),
            )
        })
        .await;
    note_client_failure(&state, &req, &client_id, &revoked).await;
    // Read-your-writes: the answer leaves once this instance's view has
    // applied the revocation. Only when something was revoked: a token
    // that is unknown, or already revoked, costs no round of the
    // revocation listener (a public client_id alone reaches this point).
    if revoked? {
        state.credentials.fence().await;
    }
    let mut resp = HttpResponse::Ok().finish();
    no_store(&mut resp);
    Ok(resp)
}

/// A page on another origin calls the token or revocation endpoint: only
/// from an origin the named client registered, refused before anything
/// else is done (see `oauth::cors`). An unknown client is `invalid_client`
/// and counts as a failed authentication: a flood of made-up client_ids
/// with an `Origin` meets the same lock as one without.
async fn cross_origin(
    state: &AppState,
    req: &HttpRequest,
    client_id: &str,
) -> Result<(), OAuthError> {
    let admitted = cors::admit(state, req, Some(client_id))
        .await
        .map_err(|e| match e {
            cors::AdmitError::Refused(cors::Refused::UnknownClient) => {
                OAuthError::InvalidClient("client authentication failed".into())
            }
            cors::AdmitError::Refused(cors::Refused::Origin) => OAuthError::InvalidRequest(
                "this client may not be called from a web page on this origin (its allowed_cors_origins, or the origins of its redirect URIs)".into(),
            ),
            cors::AdmitError::Lookup(e) => {
                cors::admit_failure(req);
                OAuthError::server(e)
            }
        });
    note_client_failure(state, req, client_id, &admitted).await;
    admitted
}

/// An error found before the client is known (a malformed request, a
/// locked client): it says nothing about any client, so a page on any
/// well-formed origin may read it (`cors::admit_failure`).
fn readable<T>(req: &HttpRequest, result: Result<T, OAuthError>) -> Result<T, OAuthError> {
    if result.is_err() {
        cors::admit_failure(req);
    }
    result
}

/// Brute force at client authentication (token, introspection and
/// revocation endpoints): a (client_id, address) pair or an address locked
/// by failed authentications gets 429 before anything is checked, the right
/// secret too. Never the client alone: a client_id is public. Returns the
/// subjects to count a failure against.
fn client_guard(state: &AppState, req: &HttpRequest, auth: &ClientAuth) -> Result<(), OAuthError> {
    // The hot path pays one atomic load while nothing is locked anywhere.
    if state.limiter.throttle_holds_nothing() {
        return Ok(());
    }
    let now = Utc::now().timestamp();
    let subjects = client_subjects(state, req, auth.client_id());
    match subjects
        .iter()
        .find_map(|s| state.limiter.locked_here(&s.key, now))
    {
        Some(left) => {
            if let Some(m) = state.metrics() {
                m.throttled(Throttled::ClientAuth);
            }
            Err(OAuthError::TooManyAttempts(left))
        }
        None => Ok(()),
    }
}

fn client_subjects(state: &AppState, req: &HttpRequest, client_id: &str) -> Vec<throttle::Subject> {
    throttle::client_subjects(client_id, &address_key(state.client_ip(req)))
}

/// Counts a failed client authentication (in Redis when configured; a lock
/// Redis reports is mirrored here for the hot path) and logs the lock it
/// may set. Only failures count: a service's burst of parallel token
/// requests must never lock itself, and a 256-bit client secret is not
/// guessed by racing a handful of requests past the limit.
async fn note_client_failure<T>(
    state: &AppState,
    req: &HttpRequest,
    client_id: &str,
    result: &Result<T, OAuthError>,
) {
    if !matches!(result, Err(OAuthError::InvalidClient(_))) {
        return;
    }
    let subjects = client_subjects(state, req, client_id);
    if let Begin::Allowed { locked_now, .. } = state
        .limiter
        .throttle_begin(&subjects, Utc::now().timestamp())
        .await
    {
        for (key, secs) in locked_now {
            if let Some(m) = state.metrics() {
                m.client_auth_locked(LockScope::of(&key));
            }
            log::warn!(
                "client authentication locked for {secs} s: {} from {}",
                client_id.escape_debug(),
                state
                    .client_ip(req)
                    .map_or_else(|| "-".to_owned(), |ip| ip.to_string())
            );
        }
    }
}

/// The cached client, if the presented credentials match it. No I/O.
fn cached_client(state: &AppState, auth: &ClientAuth) -> Option<Arc<Client>> {
    let client = state.clients.get(auth.client_id())?;
    token::authenticate(Some(client), auth, Utc::now().naive_utc()).ok()
}

/// The authenticated client: from the cache when its credentials match
/// there, else re-read from the database (a new secret or a disabled flag
/// applies at once on a mismatch). Blocking.
fn authenticated_client(
    conn: &mut AnyConnection,
    state: &AppState,
    auth: &ClientAuth,
) -> Result<Arc<Client>, OAuthError> {
    if let Some(client) = cached_client(state, auth) {
        return Ok(client);
    }
    let client = state.clients.read(conn, auth.client_id())?;
    token::authenticate(client, auth, Utc::now().naive_utc())
}

/// The authenticated client and the signing keys: from memory when there,
/// else read on the blocking pool ([`authenticated_client`],
/// `KeyStore::current`).
async fn client_and_keys(
    state: &web::Data<AppState>,
    auth: ClientAuth,
) -> Result<(Arc<Client>, Arc<KeyRing>), OAuthError> {
    if let (Some(client), Some(keys)) =
        (cached_client(state, &auth), state.credentials.keys.cached())
    {
        return Ok((client, keys));
    }
    let state2 = state.clone();
    state
        .db
        .run(move |conn| client_and_keys_on(conn, &state2, &auth))
        .await
}

/// [`client_and_keys`] on a connection. Blocking.
fn client_and_keys_on(
    conn: &mut AnyConnection,
    state: &AppState,
    auth: &ClientAuth,
) -> Result<(Arc<Client>, Arc<KeyRing>), OAuthError> {
    let client = authenticated_client(conn, state, auth)?;
    let keys = state
        .credentials
        .keys
        .current(conn)
        .map_err(OAuthError::server)?;
    Ok((client, keys))
}

/// RFC 6749 5.1: the successful token response, never cached.
fn token_response(issued: IssuedTokens) -> HttpResponse {
    let mut resp = HttpResponse::Ok().json(TokenBody {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: issued.scope.to_string(),
        refresh_token: issued.refresh_token,
        id_token: issued.id_token,
    });
    no_store(&mut resp);
    resp
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    prompt: &'a ConsentPrompt,
}

/// `GET` and `POST /oauth/authorize` (RFC 6749 3.1, 4.1.1). GET shows the
/// consent page (or skips it); the page's form POSTs the decision back to
/// the same URL.
#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth", operation_id = "authorize",
    params(AuthorizeQuery),
    responses(
        (status = 200, description = "The consent page", content_type = "text/html"),
        (status = 302, description = "Back to the client's redirect URI with code (or error), state and iss"),
        (status = 303, description = "To the sign-in page"),
        (status = 400, description = "An error page: the client or redirect URI cannot be trusted with an error redirect", content_type = "text/html"),
        (status = 403, description = "An error page", content_type = "text/html"),
        (status = 503, description = "An error page: the database is unavailable", content_type = "text/html")))]
pub async fn authorize_get(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    authorize(req, payload, state).await
}

/// The consent page's decision, posted back with the request's query.
#[utoipa::path(post, path = "/oauth/authorize", tag = "oauth", operation_id = "authorizeDecision",
    params(AuthorizeQuery),
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "Back to the client's redirect URI with code (or error), state and iss"),
        (status = 303, description = "To the sign-in page"),
        (status = 400, description = "An error page", content_type = "text/html"),
        (status = 403, description = "An error page (CSRF token missing or wrong)", content_type = "text/html"),
        (status = 413, description = "An error page: the body is too large", content_type = "text/html"),
        (status = 503, description = "An error page: the database is unavailable", content_type = "text/html")))]
pub async fn authorize_post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    authorize(req, payload, state).await
}

async fn authorize(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let request = OAuthRequest::new(req.clone(), payload.into_inner())
        .await
        .map_err(|_| WebError::BadRequest("The authorization request is malformed.".into()))?;
    let method = if req.method() == actix_web::http::Method::POST {
        authorize::Method::Post
    } else {
        authorize::Method::Get
    };
    let raw_query = req.query_string().to_owned();
    // RFC 9126: a browser that brings a request_uri is bound to it by a
    // cookie of its own (`oauth::par`).
    let secure = state.secure_cookies();
    let pushed = url::form_urlencoded::parse(raw_query.as_bytes()).any(|(k, _)| k == "request_uri");
    let existing = OurCookie::PushedRequest.value(&req, secure);
    let par_cookie = (pushed && existing.is_none()).then(|| OurCookie::PushedRequest.fresh());
    let par_browser = existing.or_else(|| par_cookie.clone());
    let session = SignedIn::cookie(&req, &state);
    // The client the query names (once), whose remembered consent is read
    // with the session.
    let mut named = url::form_urlencoded::parse(raw_query.as_bytes())
        .filter(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned());
    let client_id = match (named.next(), named.next()) {
        (Some(id), None) => Some(id),
        _ => None,
    };
    let state2 = state.clone();
    let outcome = state
        .db
        .run(move |conn| {
            let now = Utc::now();
            // In this round trip to the blocking pool, not an extractor's
            // own, and with the consent in the same statement.
            let signed_in = match (session, &client_id) {
                (Some(secret), Some(id)) => {
                    SignedIn::find_with_consent(conn, &secret, now.naive_utc(), id)?
                        .map(|(s, consent)| (s, Some((id.as_str(), consent))))
                }
                (Some(secret), None) => {
                    SignedIn::find(conn, &secret, now.naive_utc())?.map(|s| (s, None))
                }
                (None, _) => None,
            };
            let keys = state2
                .credentials
                .keys
                .current(conn)
                .map_err(WebError::internal)?;
            let input = AuthorizeInput {
                request,
                raw_query: &raw_query,
                method,
                signed_in: signed_in.as_ref().map(|(s, consent)| SignedInUser {
                    session_id: &s.session_id,
                    user: &s.user,
                    signed_in_at: s.signed_in_at,
                    consent_read: consent
                        .as_ref()
                        .map(|(id, stored)| (*id, stored.as_deref())),
                }),
                csrf: &state2.csrf,
                issuer: &state2.settings.issuer,
                keys: &keys,
                par_browser: par_browser.as_deref(),
                clients: state2.credentials.view.is_live().then_some(&state2.clients),
                now,
            };
            authorize::authorize(conn, input).map_err(WebError::internal)
        })
        .await?;
    let mut resp = match outcome {
        AuthorizeOutcome::Redirect(location) => HttpResponse::Found()
            .insert_header((header::LOCATION, location))
            .finish(),
        AuthorizeOutcome::Login { next, reauth } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("next", &next);
            if reauth {
                query.append_pair("reauth", "1");
            }
            see_other(&format!("/login?{}", query.finish()))
        }
        AuthorizeOutcome::Consent(prompt) => {
            render(StatusCode::OK, &ConsentPage { prompt: &prompt })?
        }
        AuthorizeOutcome::BadRequest(message) => return Err(WebError::BadRequest(message.into())),
        AuthorizeOutcome::Forbidden => return Err(WebError::Forbidden),
    };
    if let Some(value) = par_cookie {
        resp.add_cookie(&OurCookie::PushedRequest.set(value, secure))
            .map_err(WebError::internal)?;
    }
    // Pages and redirects carry a code or a CSRF token: never cache them.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
