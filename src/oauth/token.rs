//! The token endpoint's protocol core (RFC 6749 3.2, 2.3.1, 4.4, 5): request
//! parsing, client authentication, and the grants. No HTTP types: the handler
//! passes the body bytes and the Authorization header in and gets typed
//! errors out.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::credentials::jwt::KeyRing;
use crate::db::models::{Client, GrantRow};
use crate::db::AnyConnection;
use crate::domain::GrantType;
use crate::oauth::error::OAuthError;
use crate::oauth::grants;
use crate::oauth::request::form_decode;
pub use crate::oauth::request::{
    requested_scope, sign_access_token, FormParams, IssuedTokens, TokenConfig,
};

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
            // go into the Basic header, so decode them. One that is not
            // UTF-8 once decoded is as malformed as the rest (`invalid_client`
            // and its 401), not an error in the request body.
            let decode = |part: &str| {
                form_decode(part.as_bytes())
                    .map_err(|_| OAuthError::InvalidClient("malformed Basic credentials".into()))
            };
            Some((decode(id)?, decode(secret)?))
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
/// in constant time; a secret replaced by `client rotate-secret` counts until
/// its grace ends at `now`.
pub fn authenticate(
    client: Option<Arc<Client>>,
    auth: &ClientAuth,
    now: chrono::NaiveDateTime,
) -> Result<Arc<Client>, OAuthError> {
    let fail = || OAuthError::InvalidClient("client authentication failed".into());
    let client = client.filter(|c| !c.disabled).ok_or_else(fail)?;
    let ok = match auth {
        ClientAuth::Basic { secret, .. } | ClientAuth::Post { secret, .. } => {
            client.confidential && client.verify_secret(secret, now)
        }
        ClientAuth::Public { .. } => client.is_public(),
    };
    if ok {
        Ok(client)
    } else {
        Err(fail())
    }
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
    // The OIDC identity scopes are about a user; a client acting for itself
    // has none, so its tokens carry API scopes only.
    let scope = requested_scope(params, &client.scopes())?.api_only();
    if scope.is_empty() {
        return Err(OAuthError::InvalidScope(
            "openid, profile and email need a user: the client_credentials grant carries API scopes only".into(),
        ));
    }
    let grant_id = GrantRow::client_credentials_id(&client.id);
    let (access_token, expires_in) =
        sign_access_token(keys, cfg, &client.id, &client.id, &scope, &grant_id, now)?;
    Ok(IssuedTokens {
        access_token,
        expires_in,
        scope,
        refresh_token: None,
        id_token: None,
    })
}

/// The grant a token request asks for (RFC 6749 5.2
/// `unsupported_grant_type`); password and implicit are not offered (RFC
/// 9700 2.4, 2.1.2).
pub fn grant_type(params: &FormParams) -> Result<GrantType, OAuthError> {
    let raw = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
    GrantType::parse(raw).ok_or_else(|| {
        OAuthError::UnsupportedGrantType(
            "supported grant types: authorization_code, refresh_token, client_credentials".into(),
        )
    })
}

/// `POST /oauth/token` for an authenticated `client` (RFC 6749 3.2):
/// dispatches on the grant. Blocking (the code and refresh grants query).
pub fn exchange(
    conn: &mut AnyConnection,
    client: &Client,
    grant: GrantType,
    params: &FormParams,
    keys: &KeyRing,
    cfg: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, OAuthError> {
    match grant {
        GrantType::AuthorizationCode => {
            grants::authorization_code(conn, client, params, keys, cfg, now)
        }
        GrantType::RefreshToken => grants::refresh_token(conn, client, params, keys, cfg, now),
        GrantType::ClientCredentials => client_credentials(client, params, keys, cfg, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &str) -> FormParams {
        FormParams::parse(body.as_bytes()).unwrap()
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
    fn basic_credentials_that_decode_to_invalid_utf8_are_invalid_client() {
        // Found by fuzz/basic_auth: `%B0` in the id was "the request body is
        // not valid UTF-8" (invalid_request).
        for (id, secret) in [("my%B0client", "s"), ("c", "%FF%FE")] {
            let err = client_auth(Some(&basic(id, secret)), &params("")).unwrap_err();
            assert_eq!(err.code(), "invalid_client", "{id}:{secret}");
            assert_eq!(err.to_string(), "malformed Basic credentials");
        }
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
}
