//! Who is calling `/v1/`: the caller that `credentials` resolved from an
//! OAuth access token (RFC 6750 bearer, RFC 9068 JWT) or an API key, and the
//! `/v1` rules about what it may do.

use crate::credentials::{Caller, Resolved};
use crate::domain::Scope;
use crate::error::ApiError;

pub use crate::credentials::{Credential, Subject};

/// An authenticated `/v1` caller and what its credential may do.
pub type Principal = Caller;

/// The message of every 401 for a credential that was presented (seed:
/// "Invalid or expired token"): it never says which check failed.
pub const INVALID_TOKEN: &str = "Invalid or expired token";

/// The 403 of an access token with OIDC identity scopes only.
pub const NO_API_SCOPE: &str = "This access token carries no API scope: openid, profile and email are for signing in (the ID token, /oauth/userinfo) and grant nothing on /v1";

/// The 403 of a credential without `admin` that tries to change API keys or
/// the IP allowlist.
pub const NEEDS_ADMIN_TO_MANAGE: &str = "Changing API keys or the IP allowlist through the API needs a credential with the 'admin' scope (least privilege: a key or token holds only the scopes it needs); without it, use Settings > API in the browser";

/// Why an API key in its rotation grace period manages nothing
/// ([`crate::credentials::Caller::is_being_replaced`]).
pub const BEING_REPLACED: &str = "This API key has been rotated: until its grace period ends it can call the API, but creating, rotating or revoking credentials, creating, changing or removing users, changing the IP allowlist or registering clients needs the key that replaced it";

/// The 403 of a credential without `scope`, with its RFC 6750 3.1
/// challenge (`error="insufficient_scope"`).
pub fn insufficient(scope: Scope, message: impl Into<String>) -> ApiError {
    ApiError::InsufficientScope {
        message: message.into(),
        scope: scope.as_str(),
    }
}

/// The `/v1` answer for a resolved credential: 401 `UNAUTHORIZED` for
/// anything missing, malformed, unknown, expired or revoked (a refresh token
/// too: it is for the token endpoint only, RFC 6749 1.5); 403 `FORBIDDEN`
/// for an API key used from outside its account's allowlist (spec: "an API
/// key used from any other address gets 403 FORBIDDEN").
pub fn principal_of(resolved: Resolved) -> Result<Principal, ApiError> {
    match resolved {
        // OIDC identity scopes grant nothing here: /v1 sees the API scopes
        // alone, and a token with none (only openid, profile, email) is
        // refused everywhere, /v1/me included: its consent page promised
        // the user id alone.
        Resolved::Active(mut caller) if caller.is_bearer() => {
            caller.scopes = caller.scopes.api_only();
            if caller.scopes.is_empty() {
                return Err(insufficient(Scope::RequestsRead, NO_API_SCOPE));
            }
            Ok(caller)
        }
        Resolved::IpRefused { .. } => Err(ApiError::Forbidden(
            "This API key may not be used from this IP address (see the account's IP allowlist)"
                .into(),
        )),
        Resolved::Active(_) | Resolved::Invalid => {
            Err(ApiError::Unauthorized(INVALID_TOKEN.into()))
        }
    }
}

/// The `/v1` permission checks of a caller, as envelope errors.
pub trait Authorize {
    /// 403 `FORBIDDEN` unless the credential holds `scope` (`admin` implies
    /// every other).
    fn require(&self, scope: Scope) -> Result<(), ApiError>;

    /// [`Authorize::require`] for a change that makes or changes a way in
    /// (users and their passwords, emails, roles): also 403 for an API key
    /// in its rotation grace, which must not leave behind a credential that
    /// outlives it.
    fn require_to_manage(&self, scope: Scope) -> Result<(), ApiError>;

    /// The user behind the credential; a client_credentials token has none
    /// (403).
    fn user_id(&self) -> Result<&str, ApiError>;

    /// The user whose API keys and IP allowlist this credential may change.
    /// Least privilege (seed: "Only grant needed scopes"): only a credential
    /// holding `admin` changes them through `/v1`. Without it, a read-only
    /// key that leaked could mint itself a successor that outlives its
    /// revocation, or lift the allowlist the user set; everyone else uses
    /// Settings > API, where the browser session and its CSRF token are the
    /// proof.
    fn credential_manager(&self) -> Result<&str, ApiError>;
}

impl Authorize for Caller {
    fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(insufficient(
                scope,
                format!("This credential lacks the '{}' scope", scope.as_str()),
            ))
        }
    }

    fn require_to_manage(&self, scope: Scope) -> Result<(), ApiError> {
        self.require(scope)?;
        if self.is_being_replaced() {
            return Err(ApiError::Forbidden(BEING_REPLACED.into()));
        }
        Ok(())
    }

    fn user_id(&self) -> Result<&str, ApiError> {
        self.user().ok_or_else(|| {
            ApiError::Forbidden(
                "This endpoint acts for a user; a client_credentials token has none".into(),
            )
        })
    }

    fn credential_manager(&self) -> Result<&str, ApiError> {
        let user_id = self.user_id()?;
        if !self.allows(Scope::Admin) {
            return Err(insufficient(Scope::Admin, NEEDS_ADMIN_TO_MANAGE));
        }
        if self.is_being_replaced() {
            return Err(ApiError::Forbidden(BEING_REPLACED.into()));
        }
        Ok(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::jwt::AccessClaims;
    use crate::domain::ScopeSet;

    fn principal(scopes: &str) -> Principal {
        Caller {
            subject: Subject::Service {
                client_id: "client_a".into(),
            },
            credential: Credential::AccessToken(AccessClaims {
                iss: "i".into(),
                sub: "client_a".into(),
                aud: "i".into(),
                client_id: "client_a".into(),
                scope: scopes.into(),
                iat: 0,
                exp: 0,
                jti: "j".into(),
                grant_id: "g".into(),
            }),
            account: crate::credentials::Account {
                plan: crate::domain::Plan::Standard,
            },
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
            Err(ApiError::InsufficientScope {
                scope: "users:read",
                ..
            })
        ));
        assert!(matches!(reader.user_id(), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn only_admin_credentials_manage_keys_and_the_allowlist() {
        let mut key = principal("requests:read users:write");
        key.subject = Subject::User {
            id: "user_a".into(),
            email: "a@example.com".into(),
            role: crate::domain::Role::Admin,
        };
        key.credential = Credential::ApiKey {
            id: "key_a".into(),
            created_at: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            expires_at: None,
            replaced: false,
        };
        match key.credential_manager() {
            Err(ApiError::InsufficientScope {
                message,
                scope: "admin",
            }) => assert!(message.contains("'admin'"), "{message}"),
            other => panic!("{other:?}"),
        }
        key.scopes = ScopeSet::parse("admin").unwrap();
        assert_eq!(key.credential_manager().unwrap(), "user_a");
        // An admin key being replaced by rotation manages nothing.
        if let Credential::ApiKey { replaced, .. } = &mut key.credential {
            *replaced = true;
        }
        match key.credential_manager() {
            Err(ApiError::Forbidden(m)) => assert!(m.contains("rotated"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
