//! What a token request carries and what it issues (RFC 6749 3.2, 3.3,
//! 5.1): the form body, the requested scope, the access token. Shared by
//! the grants (`oauth::grants`, `oauth::token`).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use percent_encoding::percent_decode;

use crate::credentials::jwt::{AccessClaims, KeyRing};
use crate::domain::ScopeSet;
use crate::oauth::error::OAuthError;
use crate::tokens;

/// The parameters of a form body, each present at most once.
#[derive(Debug, Default)]
pub struct FormParams(HashMap<String, String>);

pub(crate) fn form_decode(raw: &[u8]) -> Result<String, OAuthError> {
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

    /// Every parameter, in no particular order (the fuzz targets compare
    /// what was parsed with the body).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What the token endpoint hands out.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: ScopeSet,
    pub refresh_token: Option<String>,
    /// OpenID Connect: with `openid` in the scope (code exchange and
    /// refresh).
    pub id_token: Option<String>,
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
        return Ok(*allowed);
    };
    let requested = ScopeSet::parse(raw).map_err(OAuthError::InvalidScope)?;
    if !allowed.covers(&requested) {
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
