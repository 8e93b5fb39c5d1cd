//! The token endpoint's protocol core (RFC 6749 3.2, 2.3.1, 4.4, 5): request
//! parsing, client authentication, and the grants. No HTTP types: the handler
//! passes the body bytes and the Authorization header in and gets typed
//! errors out.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use percent_encoding::percent_decode;

use crate::db::models::{Client, GrantRow};
use crate::domain::{GrantType, ScopeSet};
use crate::oauth::error::OAuthError;
use crate::oauth::jwt::{AccessClaims, KeyRing};
use crate::tokens;

/// The parameters of a form body, each present at most once.
#[derive(Debug, Default)]
pub struct FormParams(HashMap<String, String>);

fn form_decode(raw: &[u8]) -> Result<String, OAuthError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OAuthError::InvalidRequest("the request body is not valid UTF-8".into()))
}

impl FormParams {
    /// Parses `application/x-www-form-urlencoded`. RFC 6749 3.2: "Request and
    /// response parameters MUST NOT be included more than once", so a
    /// repeated parameter is `invalid_request`; RFC 6749 3.1: "Parameters
    /// sent without a value MUST be treated as if they were omitted".
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let (key, value) = (form_decode(k)?, form_decode(v)?);
            if value.is_empty() {
                continue;
            }
            if params.insert(key.clone(), value).is_some() {
                let shown: String = key.chars().take(40).collect();
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter '{shown}' is repeated"
                )));
            }
        }
        Ok(Self(params))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// How the client identified itself (RFC 6749 2.3.1, 2.2).
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Basic { id: String, secret: String },
    /// `client_secret_post`.
    Post { id: String, secret: String },
    /// A public client: `client_id` only.
    Public { id: String },
}

impl ClientAuth {
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::Basic { id, .. }
            | ClientAuth::Post { id, .. }
            | ClientAuth::Public { id } => id,
        }
    }

    pub fn used_basic(&self) -> bool {
        matches!(self, ClientAuth::Basic { .. })
    }
}

/// Reads the client's credentials from the Authorization header and the body.
pub fn client_auth(
    authorization: Option<&str>,
    params: &FormParams,
) -> Result<ClientAuth, OAuthError> {
    let basic = match authorization {
        Some(value) => {
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::InvalidClient(
                    "client authentication must use the Basic scheme".into(),
                ));
            }
            let decoded = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            // RFC 6749 2.3.1: id and secret are form-urlencoded before they
            // go into the Basic header, so decode them.
            Some((form_decode(id.as_bytes())?, form_decode(secret.as_bytes())?))
        }
        None => None,
    };
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    match (basic, body_id, body_secret) {
        // RFC 6749 2.3: "The client MUST NOT use more than one authentication
        // method in each request."
        (Some(_), _, Some(_)) => Err(OAuthError::InvalidRequest(
            "more than one client authentication method".into(),
        )),
        (Some((id, _)), Some(other), None) if other != id => Err(OAuthError::InvalidRequest(
            "client_id does not match the Basic credentials".into(),
        )),
        (Some((id, secret)), _, None) => Ok(ClientAuth::Basic { id, secret }),
        (None, Some(id), Some(secret)) => Ok(ClientAuth::Post {
            id: id.to_owned(),
            secret: secret.to_owned(),
        }),
        (None, Some(id), None) => Ok(ClientAuth::Public { id: id.to_owned() }),
        (None, None, _) => Err(OAuthError::InvalidClient(
            "client authentication required".into(),
        )),
    }
}

/// Checks the credentials against the registered client (RFC 6749 2.3.1,
/// 3.2.1). Unknown, disabled, wrong secret, a secret for a public client, no
/// secret for a confidential one: all `invalid_client`. Secrets are compared
/// in constant time.
pub fn authenticate(
    client: Option<Arc<Client>>,
    auth: &ClientAuth,
) -> Result<Arc<Client>, OAuthError> {
    let fail = || OAuthError::InvalidClient("client authentication failed".into());
    let client = client.filter(|c| !c.disabled).ok_or_else(fail)?;
    let ok = match auth {
        ClientAuth::Basic { secret, .. } | ClientAuth::Post { secret, .. } => {
            client.confidential && client.verify_secret(secret)
        }
        ClientAuth::Public { .. } => client.is_public(),
    };
    if ok {
        Ok(client)
    } else {
        Err(fail())
    }
}

/// What the token endpoint hands out.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: ScopeSet,
    pub refresh_token: Option<String>,
}

/// Token settings from the configuration.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    /// Lifetime of each refresh token (sliding: a rotation starts a new one).
    pub refresh_token_ttl: Duration,
}

/// Requested scope (RFC 6749 3.3): unknown or outside `allowed` is
/// `invalid_scope`; absent means all of `allowed`.
pub fn requested_scope(params: &FormParams, allowed: &ScopeSet) -> Result<ScopeSet, OAuthError> {
    let Some(raw) = params.get("scope") else {
        return Ok(allowed.clone());
    };
    let requested = ScopeSet::parse(raw).map_err(OAuthError::InvalidScope)?;
    if !requested.is_subset(allowed) {
        return Err(OAuthError::InvalidScope(
            "requested scope exceeds what was granted".into(),
        ));
    }
    if requested.is_empty() {
        return Err(OAuthError::InvalidScope("no scope requested".into()));
    }
    Ok(requested)
}

/// Signs an access token for `subject` in `grant_id`.
pub fn sign_access_token(
    keys: &KeyRing,
    cfg: &TokenConfig,
    subject: &str,
    client_id: &str,
    scope: &ScopeSet,
    grant_id: &str,
    now: DateTime<Utc>,
) -> Result<(String, i64), OAuthError> {
    let ttl = cfg.access_token_ttl.num_seconds();
    let claims = AccessClaims {
        iss: cfg.issuer.clone(),
        sub: subject.to_owned(),
        aud: cfg.audience.clone(),
        client_id: client_id.to_owned(),
        scope: scope.to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + ttl,
        jti: tokens::new_id(""),
        grant_id: grant_id.to_owned(),
    };
    Ok((keys.sign(&claims).map_err(OAuthError::server)?, ttl))
}

/// The client_credentials grant (RFC 6749 4.4): confidential clients
/// registered for it only ("MUST only be used by confidential clients"),
/// scope within the client's, the client itself is the subject, and no
/// refresh token (RFC 6749 4.4.3: "A refresh token SHOULD NOT be included").
pub fn client_credentials(
    client: &Client,
    params: &FormParams,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    if !client.confidential || !client.allows_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::UnauthorizedClient(
            "this client is not registered for the client_credentials grant".into(),
        ));
    }
    let scope = requested_scope(params, &client.scopes())?;
    let grant_id = GrantRow::client_credentials_id(&client.id);
    let (access_token, expires_in) =
        sign_access_token(keys, cfg, &client.id, &client.id, &scope, &grant_id, now)?;
    Ok(IssuedTokens {
        access_token,
        expires_in,
        scope,
        refresh_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &str) -> FormParams {
        FormParams::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn form_params_decode_plus_and_percent() {
        let p = params("a=x+y%2Bz&b=%C3%A9&empty=");
        assert_eq!(p.get("a"), Some("x y+z"));
        assert_eq!(p.get("b"), Some("é"));
        assert_eq!(p.get("empty"), None);
    }

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let err = FormParams::parse(b"grant_type=a&grant_type=b").unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }

    #[test]
    fn invalid_utf8_is_invalid_request() {
        assert_eq!(
            FormParams::parse(b"a=%FF%FE").unwrap_err().code(),
            "invalid_request"
        );
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let auth = client_auth(Some(&basic("my%20client", "p%3Ass")), &params("")).unwrap();
        assert_eq!(
            auth,
            ClientAuth::Basic {
                id: "my client".into(),
                secret: "p:ss".into()
            }
        );
    }

    #[test]
    fn two_authentication_methods_are_invalid_request() {
        let err = client_auth(
            Some(&basic("c", "s")),
            &params("client_id=c&client_secret=s"),
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        let err = client_auth(Some(&basic("c", "s")), &params("client_id=other")).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }

    #[test]
    fn post_public_and_missing_credentials() {
        assert_eq!(
            client_auth(None, &params("client_id=c&client_secret=s")).unwrap(),
            ClientAuth::Post {
                id: "c".into(),
                secret: "s".into()
            }
        );
        assert_eq!(
            client_auth(None, &params("client_id=c")).unwrap(),
            ClientAuth::Public { id: "c".into() }
        );
        assert_eq!(
            client_auth(None, &params("")).unwrap_err().code(),
            "invalid_client"
        );
        assert_eq!(
            client_auth(Some("Bearer x"), &params(""))
                .unwrap_err()
                .code(),
            "invalid_client"
        );
    }

    #[test]
    fn scope_may_narrow_but_not_widen() {
        let allowed = ScopeSet::parse("requests:read requests:write").unwrap();
        assert_eq!(requested_scope(&params(""), &allowed).unwrap(), allowed);
        assert_eq!(
            requested_scope(&params("scope=requests:read"), &allowed)
                .unwrap()
                .to_string(),
            "requests:read"
        );
        assert_eq!(
            requested_scope(&params("scope=admin"), &allowed)
                .unwrap_err()
                .code(),
            "invalid_scope"
        );
        assert_eq!(
            requested_scope(&params("scope=nope"), &allowed)
                .unwrap_err()
                .code(),
            "invalid_scope"
        );
    }
}
