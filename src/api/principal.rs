//! Who is calling `/v1/`: an OAuth access token (RFC 6750 bearer, RFC 9068
//! JWT) or an API key, checked into a [`Principal`].

use std::net::IpAddr;

use crate::api::keys;
use crate::db::models::{ApiKeyStatus, GrantStatus};
use crate::db::AnyConnection;
use crate::domain::{Role, Scope, ScopeSet};
use crate::error::ApiError;
use crate::oauth::introspect::{Resolved, TokenCheck};
use crate::oauth::jwt::AccessClaims;

/// The message of every 401 for a credential that was presented (seed:
/// "Invalid or expired token"): it never says which check failed.
pub const INVALID_TOKEN: &str = "Invalid or expired token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User {
        id: String,
        email: String,
        role: Role,
    },
    /// A client acting for itself (client_credentials).
    Service { client_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiKey {
        id: String,
        expires_at: Option<chrono::NaiveDateTime>,
    },
}

/// An authenticated caller and what its credential may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: Subject,
    pub credential: Credential,
    /// The credential's scopes, limited to what the user's role allows now.
    pub scopes: ScopeSet,
}

impl Principal {
    /// Whether the credential holds `scope`; `admin` implies every other.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(Scope::Admin) || self.scopes.contains(scope)
    }

    /// 403 `FORBIDDEN` unless the credential holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "This credential lacks the '{}' scope",
                scope.as_str()
            )))
        }
    }

    /// The user behind the credential; a client_credentials token has none.
    pub fn user_id(&self) -> Result<&str, ApiError> {
        match &self.subject {
            Subject::User { id, .. } => Ok(id),
            Subject::Service { .. } => Err(ApiError::Forbidden(
                "This endpoint acts for a user; a client_credentials token has none".into(),
            )),
        }
    }

    /// The user whose API keys and IP allowlist this credential may change.
    /// An OAuth access token acts for a (possibly third-party) client within
    /// the scopes it was granted (RFC 6749 1.4, 3.3): minting a key would
    /// outlive that grant's revocation, and clearing the allowlist would
    /// lift a restriction the user set. So only the user's own API keys, or
    /// a token holding `admin`, manage them (and the browser, at Settings >
    /// API).
    pub fn credential_manager(&self) -> Result<&str, ApiError> {
        let user_id = self.user_id()?;
        if self.credential == Credential::AccessToken && !self.allows(Scope::Admin) {
            return Err(ApiError::Forbidden(
                "An OAuth access token without the 'admin' scope cannot manage API keys or the IP allowlist: use an API key or Settings > API".into(),
            ));
        }
        Ok(user_id)
    }

    /// The API key used, if one was.
    pub fn api_key_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { id, .. } => Some(id),
            Credential::AccessToken => None,
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized(INVALID_TOKEN.into())
}

/// Authentication from memory alone, when possible: a token that fails
/// verification or is of no usable shape needs nothing else; a valid access
/// token or API key needs the live revocation view to hold its grant or key.
/// None: ask the database ([`authenticate`]). No I/O.
pub fn authenticate_cached(
    token: &str,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Option<Result<Principal, ApiError>> {
    Some(principal_of(check.resolve_cached(token)?, check, client_ip))
}

/// Checks a bearer credential against the database. 401 for anything
/// missing, malformed, unknown, expired or revoked (grant, key, client or
/// user); 403 for an API key used from outside its account's allowlist.
/// Blocking.
pub fn authenticate(
    conn: &mut AnyConnection,
    token: &str,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    principal_of(check.resolve(conn, token)?, check, client_ip)
}

fn principal_of(
    resolved: Resolved<'_>,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    match resolved {
        Resolved::Access(claims, status) => access_principal(claims, status),
        Resolved::ApiKey(status) => key_principal(status.as_deref(), check, client_ip),
        // A refresh token is for the token endpoint only (RFC 6749 1.5).
        Resolved::Refresh(_) | Resolved::Invalid => Err(unauthorized()),
    }
}

/// RFC 6750 3.1 `invalid_token`: expired, revoked or otherwise invalid;
/// RFC 9068 4: the grant behind the token must still be active.
fn access_principal(
    claims: AccessClaims,
    status: Option<GrantStatus>,
) -> Result<Principal, ApiError> {
    let status = status
        .filter(|s| s.is_active() && s.client_id == claims.client_id)
        .ok_or_else(unauthorized)?;
    let scopes = ScopeSet::parse(&claims.scope).map_err(|_| unauthorized())?;
    let subject = match (status.user_id, status.email) {
        (Some(id), Some(email)) => {
            let role: Role = status
                .role
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(Role::Agent);
            return Ok(Principal {
                scopes: scopes.split_by_role(role).0,
                subject: Subject::User { id, email, role },
                credential: Credential::AccessToken,
            });
        }
        (Some(_), None) => return Err(unauthorized()),
        (None, _) => Subject::Service {
            client_id: claims.client_id,
        },
    };
    Ok(Principal {
        subject,
        credential: Credential::AccessToken,
        scopes,
    })
}

/// An API key: usable (not revoked or expired, its user enabled), then used
/// from an address its account allows (spec: "an API key used from any
/// other address gets 403 FORBIDDEN").
fn key_principal(
    status: Option<&ApiKeyStatus>,
    check: &TokenCheck<'_>,
    client_ip: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let status = status
        .filter(|s| keys::usable(s, check.now))
        .ok_or_else(unauthorized)?;
    if !status.ip_allowlist.allows(client_ip) {
        return Err(ApiError::Forbidden(
            "This API key may not be used from this IP address (see the account's IP allowlist)"
                .into(),
        ));
    }
    let role = status.role.parse().unwrap_or(Role::Agent);
    Ok(Principal {
        subject: Subject::User {
            id: status.user_id.clone(),
            email: status.email.clone(),
            role,
        },
        credential: Credential::ApiKey {
            id: status.key_id.clone(),
            expires_at: status.expires_at,
        },
        scopes: keys::effective_scopes(status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &str) -> Principal {
        Principal {
            subject: Subject::Service {
                client_id: "client_a".into(),
            },
            credential: Credential::AccessToken,
            scopes: ScopeSet::parse(scopes).unwrap(),
        }
    }

    #[test]
    fn admin_implies_every_scope() {
        let admin = principal("admin");
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let reader = principal("requests:read");
        assert!(reader.allows(Scope::RequestsRead));
        assert!(!reader.allows(Scope::RequestsWrite));
        assert!(matches!(
            reader.require(Scope::UsersRead),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(reader.user_id(), Err(ApiError::Forbidden(_))));
    }
}
