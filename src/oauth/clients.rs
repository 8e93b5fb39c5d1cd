//! Client registration: validation and creation. No HTTP here; the CLI and
//! (later) RFC 7591 registration both call it.

use chrono::NaiveDateTime;

use crate::credentials::prefixes;
use crate::db::models::{Client, GrantRow};
use crate::db::AnyConnection;
use crate::domain::{GrantType, Origin, Plan, RedirectUri, ScopeSet, MAX_ORIGINS};
use crate::tokens;

/// A client to register, validated.
#[derive(Debug)]
pub struct NewClient {
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<RedirectUri>,
    pub scopes: ScopeSet,
    pub grant_types: Vec<GrantType>,
    pub require_pkce: bool,
    /// May introspect every token, not only its own.
    pub can_introspect: bool,
    /// Registered through RFC 7591: gets a registration access token.
    pub dynamic: bool,
    /// The user whose credential registered it (RFC 7591).
    pub registered_by: Option<String>,
    /// The plan of its client_credentials tokens (new clients: Standard).
    pub plan: Plan,
    /// RFC 7591 2, as registered; None: `none` for a public client,
    /// `client_secret_basic` for a confidential one.
    pub auth_method: Option<String>,
    /// Browser origins allowed to call us (CORS); empty: those of the
    /// redirect URIs ([`Client::allowed_origins`]).
    pub cors_origins: Vec<Origin>,
    /// OIDC RP-Initiated Logout: where the browser may go after a logout.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// RFC 9126 6: authorization requests must be pushed first.
    pub require_par: bool,
}

/// The registration request as typed by an operator or sent by a client.
#[derive(Debug, Default)]
pub struct ClientRequest {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub public: bool,
    pub grant_types: Vec<String>,
    pub require_pkce: bool,
    pub introspect: bool,
    pub cors_origins: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub require_par: bool,
}

impl NewClient {
    /// Validates a registration request. Defaults: grant types
    /// `authorization_code` + `refresh_token`.
    pub fn parse(req: ClientRequest) -> Result<Self, String> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("name must be 1 to 100 printable characters".into());
        }
        let mut grant_types = Vec::new();
        for g in &req.grant_types {
            let grant = GrantType::parse(g).ok_or_else(|| {
                format!("unsupported grant type '{g}': use authorization_code, refresh_token or client_credentials")
            })?;
            if !grant_types.contains(&grant) {
                grant_types.push(grant);
            }
        }
        if grant_types.is_empty() {
            grant_types = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
        }
        grant_types.sort();
        // RFC 6749 4.4: "The client credentials grant type MUST only be used
        // by confidential clients."
        if req.public && grant_types.contains(&GrantType::ClientCredentials) {
            return Err("a public client cannot use client_credentials".into());
        }
        let redirect_uris = req
            .redirect_uris
            .iter()
            .map(|u| RedirectUri::parse(u).map_err(|e| format!("{e}: {u}")))
            .collect::<Result<Vec<_>, _>>()?;
        // RFC 9126 6: a rule of authorization requests.
        if req.require_par && !grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(
                "require_pushed_authorization_requests (--require-par) needs the authorization_code grant"
                    .into(),
            );
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            return Err("the authorization_code grant needs at least one --redirect-uri".into());
        }
        if req.cors_origins.len() > MAX_ORIGINS {
            return Err(format!("at most {MAX_ORIGINS} CORS origins"));
        }
        let mut cors_origins: Vec<Origin> = Vec::new();
        for raw in &req.cors_origins {
            let origin = Origin::parse(raw)?;
            if !cors_origins.contains(&origin) {
                cors_origins.push(origin);
            }
        }
        // The rules of redirect URIs (https, or http on loopback; no
        // fragment, no credentials), exact strings.
        let post_logout_redirect_uris = req
            .post_logout_redirect_uris
            .iter()
            .map(|u| {
                RedirectUri::parse(u).map_err(|e| format!("post-logout redirect URI: {e}: {u}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if post_logout_redirect_uris.len() > 20 {
            return Err("at most 20 post-logout redirect URIs".into());
        }
        let scopes = ScopeSet::parse(&req.scope)?;
        if scopes.is_empty() {
            return Err("at least one scope is required".into());
        }
        Ok(Self {
            name,
            public: req.public,
            redirect_uris,
            scopes,
            grant_types,
            // RFC 9700 2.1.1: PKCE is required for public clients.
            require_pkce: req.require_pkce || req.public,
            can_introspect: req.introspect,
            dynamic: false,
            registered_by: None,
            plan: Plan::Standard,
            auth_method: None,
            cors_origins,
            post_logout_redirect_uris,
            require_par: req.require_par,
        })
    }
}

/// A registered client and its secret, shown this once (confidential only).
#[derive(Debug)]
pub struct Registered {
    pub client: Client,
    pub secret: Option<String>,
    /// RFC 7592 registration access token (dynamic registrations only).
    pub registration_token: Option<String>,
}

/// Stores the client; the secret (256-bit, `dzs_` prefix) is kept only as its
/// SHA-256.
pub fn register(
    conn: &mut AnyConnection,
    new: NewClient,
    now: NaiveDateTime,
) -> diesel::QueryResult<Registered> {
    let secret = (!new.public).then(|| tokens::new_secret(prefixes::CLIENT_SECRET));
    let registration_token = new
        .dynamic
        .then(|| tokens::new_secret(prefixes::REGISTRATION_TOKEN));
    let grant_types = new.grant_types.clone();
    let client = Client {
        id: tokens::new_id("client_"),
        name: new.name,
        confidential: !new.public,
        secret_hash: secret.as_deref().map(tokens::hash_secret),
        redirect_uris: join_uris(&new.redirect_uris),
        scopes: new.scopes.to_string(),
        grant_types: new
            .grant_types
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        require_pkce: new.require_pkce,
        disabled: false,
        created_at: now,
        updated_at: now,
        can_introspect: new.can_introspect,
        registration_token_hash: registration_token.as_deref().map(tokens::hash_secret),
        registered_by: new.registered_by,
        plan: new.plan.name().to_owned(),
        rate_limit: new.plan.custom_limit().map(i64::from),
        token_endpoint_auth_method: match new.auth_method {
            Some(m) => m,
            None if new.public => "none".to_owned(),
            None => "client_secret_basic".to_owned(),
        },
        previous_secret_hash: None,
        previous_secret_expires_at: None,
        cors_origins: join_origins(&new.cors_origins),
        post_logout_redirect_uris: join_uris(&new.post_logout_redirect_uris),
        require_par: new.require_par,
    };
    crate::db::write_transaction(conn, |conn| {
        client.insert(conn)?;
        if grant_types.contains(&GrantType::ClientCredentials) {
            GrantRow {
                id: GrantRow::client_credentials_id(&client.id),
                client_id: client.id.clone(),
                user_id: None,
                scopes: client.scopes.clone(),
                created_at: now,
                revoked_at: None,
                auth_time: None,
                sid: None,
            }
            .insert_if_missing(conn)?;
        }
        Ok::<(), diesel::result::Error>(())
    })?;
    Ok(Registered {
        client,
        secret,
        registration_token,
    })
}

/// Redirect URIs as stored: one per line.
pub fn join_uris(uris: &[RedirectUri]) -> String {
    uris.iter()
        .map(RedirectUri::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Origins as stored: one per line.
pub fn join_origins(origins: &[Origin]) -> String {
    origins
        .iter()
        .map(Origin::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new client secret for `client rotate-secret`, shown once.
pub struct RotatedSecret {
    pub secret: String,
    /// Until when the replaced secret still authenticates (None: it
    /// stopped at once).
    pub old_works_until: Option<NaiveDateTime>,
}

impl std::fmt::Debug for RotatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedSecret")
            .field("secret", &"<redacted>")
            .field("old_works_until", &self.old_works_until)
            .finish()
    }
}

/// Why a secret was not rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no such client")]
    Unknown,
    #[error("a public client has no secret to rotate")]
    Public,
    #[error("the client's secret changed meanwhile (another rotation?): nothing was changed")]
    Changed,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// `client rotate-secret`: a new 256-bit secret (stored as its SHA-256)
/// replaces the client's; the old one keeps working for `grace` (zero: it
/// stops at once, as far as each instance's client cache allows:
/// `DZDESK_CLIENT_CACHE_SECS`, and is forgotten).
pub fn rotate_secret(
    conn: &mut AnyConnection,
    client_id: &str,
    grace: chrono::Duration,
    now: NaiveDateTime,
) -> Result<RotatedSecret, RotateError> {
    let client = Client::find(conn, client_id)?.ok_or(RotateError::Unknown)?;
    let current = match (&client.secret_hash, client.is_public()) {
        (Some(hash), false) => hash.clone(),
        _ => return Err(RotateError::Public),
    };
    let secret = tokens::new_secret(prefixes::CLIENT_SECRET);
    let old_works_until = (grace > chrono::Duration::zero()).then(|| now + grace);
    let rotated = Client::rotate_secret(
        conn,
        client_id,
        &current,
        &tokens::hash_secret(&secret),
        old_works_until,
        now,
    )?;
    if !rotated {
        return Err(RotateError::Changed);
    }
    Ok(RotatedSecret {
        secret,
        old_works_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ClientRequest {
        ClientRequest {
            name: "Zapier".into(),
            redirect_uris: vec!["https://zapier.example/cb".into()],
            scope: "requests:read requests:write".into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_grant_types_are_code_and_refresh() {
        let c = NewClient::parse(req()).unwrap();
        assert_eq!(
            c.grant_types,
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
        assert!(!c.require_pkce);
    }

    #[test]
    fn public_clients_require_pkce_and_cannot_use_client_credentials() {
        let mut r = req();
        r.public = true;
        assert!(NewClient::parse(r).unwrap().require_pkce);
        let mut r = req();
        r.public = true;
        r.grant_types = vec!["client_credentials".into()];
        assert!(NewClient::parse(r).is_err());
    }

    #[test]
    fn invalid_redirect_scope_or_grant_is_rejected() {
        let mut r = req();
        r.redirect_uris = vec!["http://evil.example/cb".into()];
        assert!(NewClient::parse(r).is_err());
        let mut r = req();
        r.scope = "requests:read offline_access".into();
        assert!(NewClient::parse(r).is_err());
        let mut r = req();
        r.grant_types = vec!["password".into()];
        assert!(NewClient::parse(r).is_err());
        let mut r = req();
        r.redirect_uris.clear();
        assert!(NewClient::parse(r).is_err());
    }

    #[test]
    fn client_credentials_only_client_needs_no_redirect_uri() {
        let mut r = req();
        r.redirect_uris.clear();
        r.grant_types = vec!["client_credentials".into()];
        assert!(NewClient::parse(r).is_ok());
    }
}
