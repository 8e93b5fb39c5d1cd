//! Dynamic client registration (RFC 7591) and its management protocol (RFC
//! 7592). No HTTP types: the handlers pass the parsed metadata, the bearer
//! credential and the current time in, and get typed errors out.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::credentials::{Resolved, Subject};
use crate::db::models::{Client, GrantRow};
use crate::db::schema::clients;
use crate::db::AnyConnection;
use crate::domain::{GrantType, RedirectUri, Scope, ScopeSet};
use crate::oauth::clients::{register as store_client, ClientRequest, NewClient};
use crate::tokens;

/// Client metadata as sent (RFC 7591 2). Unknown fields are ignored ("The
/// authorization server MUST ignore any client metadata ... that it does not
/// understand").
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ClientMetadata {
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    /// RFC 7592 2.2: an update names the client it updates.
    pub client_id: Option<String>,
    /// The browser origins (`https://app.example.com`) that may call the
    /// token and revocation endpoints and `/v1` with this client's tokens
    /// (CORS); omitted: the origins of `redirect_uris`. Not an RFC 7591
    /// field; Hydra's name for it.
    pub allowed_cors_origins: Option<Vec<String>>,
    /// OpenID Connect RP-Initiated Logout 1.0 3.1.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// RFC 9126 6: the client's authorization requests must be pushed.
    pub require_pushed_authorization_requests: Option<bool>,
}

/// RFC 7591 3.2.2 / RFC 7592 errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// The bearer credential is missing, invalid, expired or revoked (401).
    #[error("the access token is missing, invalid or revoked")]
    InvalidToken,
    /// RFC 6750 3.1: the credential lacks the `admin` scope (403).
    #[error("registering clients needs the admin scope")]
    InsufficientScope,
    /// An API key replaced by rotation, in its grace period (403; see
    /// [`crate::credentials::Caller::is_being_replaced`]).
    #[error("an API key being replaced by rotation cannot register clients: use the key that replaced it")]
    KeyBeingReplaced,
    /// An API key used from outside its account's IP allowlist (403).
    #[error("this API key may not be used from this IP address")]
    AddressRefused,
    /// The database is unreachable or did not answer in time (503, RFC
    /// 6749 4.1.2.1's `temporarily_unavailable`, as at the token endpoint).
    #[error("the authorization server cannot reach its database; retry later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal server error")]
    Server(#[source] anyhow::Error),
}

impl RegistrationError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistrationError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            RegistrationError::InvalidClientMetadata(_) => "invalid_client_metadata",
            RegistrationError::InvalidToken => "invalid_token",
            RegistrationError::InsufficientScope => "insufficient_scope",
            // RFC 6750 3.1: "higher privileges than provided by the access
            // token".
            RegistrationError::KeyBeingReplaced => "insufficient_scope",
            RegistrationError::AddressRefused => "access_denied",
            RegistrationError::Unavailable(_) => "temporarily_unavailable",
            RegistrationError::Server(_) => "server_error",
        }
    }

    /// An error of ours: `server_error`, or `temporarily_unavailable` when
    /// the database is unavailable ([`crate::db::is_unavailable`]).
    pub fn server(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if crate::db::is_unavailable(&e) {
            RegistrationError::Unavailable(e)
        } else {
            RegistrationError::Server(e)
        }
    }
}

impl From<diesel::result::Error> for RegistrationError {
    fn from(e: diesel::result::Error) -> Self {
        RegistrationError::server(e)
    }
}

impl From<crate::db::RunError> for RegistrationError {
    fn from(e: crate::db::RunError) -> Self {
        RegistrationError::server(e)
    }
}

/// The client information response (RFC 7591 3.2.1, RFC 7592 3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientInformation {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    /// "REQUIRED if client_secret is issued": 0, it does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<String>,
    pub registration_client_uri: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: String,
    /// As registered; absent: the origins of `redirect_uris`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cors_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    /// RFC 9126 6.
    pub require_pushed_authorization_requests: bool,
}

impl ClientInformation {
    fn of(client: &Client, issuer: &str) -> Self {
        let grant_types: Vec<String> = client
            .grant_types
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        let response_types = if client.allows_grant(GrantType::AuthorizationCode) {
            vec!["code".to_owned()]
        } else {
            Vec::new()
        };
        Self {
            client_id: client.id.clone(),
            client_secret: None,
            client_id_issued_at: client.created_at.and_utc().timestamp(),
            client_secret_expires_at: None,
            registration_access_token: None,
            registration_client_uri: format!("{issuer}/oauth/register/{}", client.id),
            client_name: client.name.clone(),
            redirect_uris: client.redirect_uris.lines().map(str::to_owned).collect(),
            grant_types,
            response_types,
            token_endpoint_auth_method: client.token_endpoint_auth_method.clone(),
            scope: client.scopes.clone(),
            allowed_cors_origins: (!client.cors_origins.is_empty())
                .then(|| client.cors_origins.lines().map(str::to_owned).collect()),
            post_logout_redirect_uris: client
                .post_logout_redirect_uris
                .lines()
                .map(str::to_owned)
                .collect(),
            require_pushed_authorization_requests: client.require_par,
        }
    }
}

/// Who registers (RFC 7591 3: the initial access token): what it may give
/// the new client at most, and the user behind it.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// The scopes the registering credential holds now (limited to its
    /// user's current role).
    pub ceiling: ScopeSet,
    /// Recorded on the client: when this user loses `admin` or is disabled,
    /// the client is disabled.
    pub user_id: Option<String>,
    /// A client_credentials token registers: the registering client, whose
    /// own owner the new client inherits (or a client could launder itself
    /// out of its owner's demotion by registering another).
    pub service_client: Option<String>,
}

/// The initial access token (RFC 7591 3): any active bearer credential we
/// issue (an access token or an API key, resolved by the same check as
/// `/v1`, its IP allowlist included) carrying `admin` (RFC 6750 3.1
/// `insufficient_scope` otherwise).
pub fn initial_access(resolved: Option<Resolved>) -> Result<Registrar, RegistrationError> {
    match resolved {
        Some(Resolved::Active(caller)) if caller.is_bearer() => {
            if !caller.allows(Scope::Admin) {
                return Err(RegistrationError::InsufficientScope);
            }
            if caller.is_being_replaced() {
                return Err(RegistrationError::KeyBeingReplaced);
            }
            let service_client = match &caller.subject {
                Subject::Service { client_id } => Some(client_id.clone()),
                Subject::User { .. } => None,
            };
            Ok(Registrar {
                user_id: caller.user().map(str::to_owned),
                service_client,
                ceiling: caller.scopes,
            })
        }
        Some(Resolved::IpRefused { .. }) => Err(RegistrationError::AddressRefused),
        _ => Err(RegistrationError::InvalidToken),
    }
}

/// The scope of a client registered without `scope`.
pub const DEFAULT_SCOPE: Scope = Scope::RequestsRead;

/// How the client authenticates at the token endpoint (RFC 7591 2): `none`
/// makes a public client.
fn is_public(meta: &ClientMetadata) -> Result<bool, RegistrationError> {
    match meta
        .token_endpoint_auth_method
        .as_deref()
        .unwrap_or("client_secret_basic")
    {
        "client_secret_basic" | "client_secret_post" => Ok(false),
        "none" => Ok(true),
        other => Err(RegistrationError::InvalidClientMetadata(format!(
            "unsupported token_endpoint_auth_method '{}'",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Validates metadata into a client to store. `ceiling`: the scopes the
/// metadata may ask for at most. Public for the fuzz targets (`fuzz/`):
/// it is the whole of what a registrant's JSON can reach before the
/// database.
pub fn validate(meta: &ClientMetadata, ceiling: &ScopeSet) -> Result<NewClient, RegistrationError> {
    let bad = |m: String| RegistrationError::InvalidClientMetadata(m);
    let public = is_public(meta)?;
    // RFC 7591 2: omitted means `authorization_code`. An empty list asks
    // for no grant at all; passed on, `NewClient::parse` would read it as
    // the operator's default and register authorization_code and
    // refresh_token, which nobody asked for.
    if meta.grant_types.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad(
            "grant_types may not be empty (omit it for authorization_code)".into(),
        ));
    }
    let grant_types = meta
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    let has_code = grant_types.iter().any(|g| g == "authorization_code");
    // RFC 7591 2.1: grant_types and response_types must agree; `code` is the
    // only response type.
    let response_types = meta.response_types.clone().unwrap_or_else(|| {
        if has_code {
            vec!["code".to_owned()]
        } else {
            Vec::new()
        }
    });
    if response_types.iter().any(|r| r != "code") {
        return Err(bad("response_types may only contain code".into()));
    }
    if has_code != response_types.iter().any(|r| r == "code") {
        return Err(bad(
            "grant_type authorization_code and response_type code go together".into(),
        ));
    }
    let redirect_uris = meta.redirect_uris.clone().unwrap_or_default();
    for uri in &redirect_uris {
        // No wildcards: exact URIs only (RFC 9700 4.1.3).
        if uri.contains('*') {
            return Err(RegistrationError::InvalidRedirectUri(
                "redirect URIs may not contain wildcards".into(),
            ));
        }
        RedirectUri::parse(uri).map_err(RegistrationError::InvalidRedirectUri)?;
    }
    if has_code && redirect_uris.is_empty() {
        return Err(RegistrationError::InvalidRedirectUri(
            "the authorization_code grant needs redirect_uris".into(),
        ));
    }
    let scope = match &meta.scope {
        Some(raw) => {
            let asked = ScopeSet::parse(raw).map_err(bad)?;
            if asked.is_empty() {
                return Err(bad("no scope to grant".into()));
            }
            if !ceiling.covers(&asked) {
                return Err(bad(
                    "scope may not be wider than the registering credential holds".into(),
                ));
            }
            asked
        }
        // RFC 7591 2: "If omitted, an authorization server MAY register a
        // client with a default set of scopes." Ours is the least one,
        // `requests:read`; anything more is asked for by name. (It used to
        // be everything the registrar held but `admin`, `users:write`
        // included: a client registered with defaults could manage users.)
        None => {
            let default = ScopeSet::from_iter([DEFAULT_SCOPE]);
            if !ceiling.covers(&default) {
                return Err(bad(format!(
                    "scope is omitted and the default, {}, is more than the credential holds: name the scope",
                    DEFAULT_SCOPE.as_str()
                )));
            }
            default
        }
    };
    let mut new = NewClient::parse(ClientRequest {
        name: meta
            .client_name
            .clone()
            .unwrap_or_else(|| "Unnamed application".to_owned()),
        redirect_uris,
        scope: scope.to_string(),
        public,
        grant_types,
        require_pkce: false,
        introspect: false,
        cors_origins: meta.allowed_cors_origins.clone().unwrap_or_default(),
        post_logout_redirect_uris: meta.post_logout_redirect_uris.clone().unwrap_or_default(),
        require_par: meta.require_pushed_authorization_requests.unwrap_or(false),
    })
    .map_err(bad)?;
    new.dynamic = true;
    // Stored as registered (is_public accepted it), and read back so.
    new.auth_method = meta.token_endpoint_auth_method.clone();
    Ok(new)
}

/// `POST /oauth/register` (RFC 7591 3.1), after [`initial_access`].
pub fn register(
    conn: &mut AnyConnection,
    meta: &ClientMetadata,
    registrar: &Registrar,
    issuer: &str,
    now: DateTime<Utc>,
) -> Result<ClientInformation, RegistrationError> {
    let mut new = validate(meta, &registrar.ceiling)?;
    new.registered_by = match &registrar.service_client {
        Some(client_id) => Client::find(conn, client_id)?.and_then(|c| c.registered_by),
        None => registrar.user_id.clone(),
    };
    // The owner is re-read, locked, in the insert's transaction: a client
    // registered while its owner is being demoted or disabled is either
    // refused here or disabled by that change's cascade, never missed.
    let registered = crate::db::write_transaction(conn, |conn| {
        if let Some(owner) = &new.registered_by {
            if !crate::db::models::User::is_enabled_admin_locked(conn, owner)? {
                return Err(RegistrationError::InsufficientScope);
            }
        }
        Ok(store_client(conn, new, now.naive_utc())?)
    })?;
    let mut info = ClientInformation::of(&registered.client, issuer);
    info.client_secret_expires_at = registered.secret.as_ref().map(|_| 0);
    info.client_secret = registered.secret;
    info.registration_access_token = registered.registration_token;
    Ok(info)
}

/// RFC 7592 2: the client named in the URL, if the registration access token
/// is its own (constant-time comparison of the hashes). Anything else is
/// `invalid_token` (401), so the answer does not reveal whether the client
/// exists.
pub fn managed_client(
    conn: &mut AnyConnection,
    client_id: &str,
    bearer: Option<&str>,
) -> Result<Client, RegistrationError> {
    let token = bearer.ok_or(RegistrationError::InvalidToken)?;
    let client = Client::find(conn, client_id)?.ok_or(RegistrationError::InvalidToken)?;
    let ok = client
        .registration_token_hash
        .as_deref()
        .is_some_and(|stored| {
            tokens::constant_time_eq(tokens::hash_secret(token).as_bytes(), stored.as_bytes())
        });
    if ok {
        Ok(client)
    } else {
        Err(RegistrationError::InvalidToken)
    }
}

/// `GET /oauth/register/{client_id}` (RFC 7592 2.1), with a new
/// registration access token ([`rotate_registration_token`]).
pub fn read(
    conn: &mut AnyConnection,
    client: &Client,
    issuer: &str,
) -> Result<ClientInformation, RegistrationError> {
    let mut info = ClientInformation::of(client, issuer);
    info.registration_access_token = Some(rotate_registration_token(conn, client)?);
    Ok(info)
}

/// RFC 7592 3: the client information response carries the registration
/// access token; ours are stored hashed, so each read or update issues a
/// new one (as oidc-provider does) and the one presented stops working.
/// The swap is conditional on the hash presented: of two requests with the
/// same token, one gets the new token and the other `invalid_token`.
fn rotate_registration_token(
    conn: &mut AnyConnection,
    client: &Client,
) -> Result<String, RegistrationError> {
    let token = tokens::new_secret(crate::credentials::prefixes::REGISTRATION_TOKEN);
    let swapped = diesel::update(
        clients::table
            .filter(clients::id.eq(&client.id))
            .filter(clients::registration_token_hash.eq(&client.registration_token_hash)),
    )
    .set(clients::registration_token_hash.eq(tokens::hash_secret(&token)))
    .execute(conn)?;
    if swapped == 1 {
        Ok(token)
    } else {
        Err(RegistrationError::InvalidToken)
    }
}

/// `PUT /oauth/register/{client_id}` (RFC 7592 2.2): the metadata replaces
/// the registered values. The authentication method cannot change, and the
/// scope can only narrow.
pub fn update(
    conn: &mut AnyConnection,
    client: &Client,
    meta: &ClientMetadata,
    issuer: &str,
    now: DateTime<Utc>,
) -> Result<ClientInformation, RegistrationError> {
    if meta.client_id.as_deref() != Some(client.id.as_str()) {
        return Err(RegistrationError::InvalidClientMetadata(
            "client_id must name the client being updated".into(),
        ));
    }
    let method_given = meta.token_endpoint_auth_method.is_some();
    if method_given && is_public(meta)? != client.is_public() {
        return Err(RegistrationError::InvalidClientMetadata(
            "token_endpoint_auth_method cannot change".into(),
        ));
    }
    // Omitted: the method stays what it is.
    let mut meta_now = ClientMetadata {
        redirect_uris: meta.redirect_uris.clone(),
        grant_types: meta.grant_types.clone(),
        response_types: meta.response_types.clone(),
        token_endpoint_auth_method: meta.token_endpoint_auth_method.clone(),
        client_name: meta.client_name.clone(),
        scope: meta.scope.clone(),
        client_id: meta.client_id.clone(),
        allowed_cors_origins: meta.allowed_cors_origins.clone(),
        post_logout_redirect_uris: meta.post_logout_redirect_uris.clone(),
        require_pushed_authorization_requests: meta.require_pushed_authorization_requests,
    };
    if !method_given && client.is_public() {
        meta_now.token_endpoint_auth_method = Some("none".into());
    }
    let new = validate(&meta_now, &client.scopes())?;
    // An update may narrow the grant types, never widen them: with its
    // registration access token alone, a client must not make itself a
    // client_credentials service (or start using refresh tokens) that the
    // registrar never approved. RFC 7592 2.2: "Omitted fields MUST be treated
    // as null or empty values by the server", so omitted grant_types is the
    // registration default, authorization_code, and is checked the same way.
    let added: Vec<&str> = new
        .grant_types
        .iter()
        .filter(|g| !client.allows_grant(**g))
        .map(|g| g.as_str())
        .collect();
    if !added.is_empty() {
        return Err(RegistrationError::InvalidClientMetadata(format!(
            "grant_types may only narrow on update; not registered for: {}",
            added.join(" ")
        )));
    }
    let grant_types: Vec<&str> = new.grant_types.iter().map(|g| g.as_str()).collect();
    // Omitted: the method stays as registered; given: basic and post may
    // swap (the public/confidential kind was checked above).
    let method = meta
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| client.token_endpoint_auth_method.clone());
    let token = crate::db::write_transaction(conn, |conn| {
        // First, so that of two updates with the same token one wins.
        let token = rotate_registration_token(conn, client)?;
        diesel::update(clients::table.find(&client.id))
            .set((
                clients::name.eq(&new.name),
                clients::token_endpoint_auth_method.eq(&method),
                clients::redirect_uris.eq(crate::oauth::clients::join_uris(&new.redirect_uris)),
                clients::scopes.eq(new.scopes.to_string()),
                clients::grant_types.eq(grant_types.join(" ")),
                clients::cors_origins.eq(crate::oauth::clients::join_origins(&new.cors_origins)),
                clients::post_logout_redirect_uris.eq(crate::oauth::clients::join_uris(
                    &new.post_logout_redirect_uris,
                )),
                clients::require_par.eq(new.require_par),
                clients::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
        if new.grant_types.contains(&GrantType::ClientCredentials) {
            GrantRow {
                id: GrantRow::client_credentials_id(&client.id),
                client_id: client.id.clone(),
                user_id: None,
                scopes: new.scopes.to_string(),
                created_at: now.naive_utc(),
                revoked_at: None,
                auth_time: None,
                sid: None,
            }
            .insert_if_missing(conn)?;
        }
        Ok::<_, RegistrationError>(token)
    })?;
    let updated = Client::find(conn, &client.id)?
        .ok_or_else(|| RegistrationError::Server(anyhow::anyhow!("client vanished")))?;
    let mut info = ClientInformation::of(&updated, issuer);
    info.registration_access_token = Some(token);
    Ok(info)
}

/// `DELETE /oauth/register/{client_id}` (RFC 7592 2.3): the client and,
/// through the foreign keys, its grants, codes, refresh tokens and consents
/// go; its access tokens fail introspection at once (their grant is gone).
pub fn delete(conn: &mut AnyConnection, client: &Client) -> Result<(), RegistrationError> {
    diesel::delete(clients::table.find(&client.id)).execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> ClientMetadata {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_grant_types_list_is_refused_not_read_as_a_default() {
        // Found by the fuzz/registration property (the grant types are the
        // ones asked for): `[]` registered authorization_code and
        // refresh_token.
        let ceiling = ScopeSet::from_iter([Scope::Admin]);
        for json in [
            r#"{"redirect_uris": ["https://app.example.com/cb"], "grant_types": []}"#,
            r#"{"redirect_uris": ["https://app.example.com/cb"], "grant_types": [], "response_types": []}"#,
        ] {
            let err = validate(&meta(json), &ceiling).unwrap_err();
            assert_eq!(err.code(), "invalid_client_metadata", "{json}");
            assert!(err.to_string().contains("grant_types"), "{err}");
        }
        let omitted = meta(r#"{"redirect_uris": ["https://app.example.com/cb"]}"#);
        assert_eq!(
            validate(&omitted, &ceiling).unwrap().grant_types,
            [GrantType::AuthorizationCode]
        );
    }
}
