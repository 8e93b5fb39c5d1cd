//! OAuth errors as RFC 6749 5.2 names them.

/// An error of the token endpoint (RFC 6749 5.2). `Display` is the
/// description sent as `error_description`: never a secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed (401).
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    /// `invalid_grant` for a rotated refresh token presented again (RFC
    /// 9700 4.14.2): its grant has just been revoked. Told apart from
    /// [`OAuthError::InvalidGrant`] only for counting; the client sees the
    /// same answer.
    #[error("{0}")]
    RefreshTokenReused(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
    /// RFC 7009 2.2.1: revocation of this token type is not supported.
    #[error("{0}")]
    UnsupportedTokenType(String),
    /// Too many failed client authentications from this address (429,
    /// with `Retry-After` in seconds). RFC 6749 has no code for it; RFC
    /// 6749 4.1.2.1's `temporarily_unavailable` says what it is.
    #[error("too many failed client authentications: try again in {0} s")]
    TooManyAttempts(i64),
    /// RFC 9126 2.3 (429, `Retry-After` in seconds): the client has as many
    /// pushed requests waiting for a browser as it may, or (a public client)
    /// pushed as many from this address this minute as it may (see
    /// `oauth::par`).
    #[error("too many pushed authorization requests: try again in {0} s")]
    TooManyPushed(i64),
    /// An error of the authorization endpoint's own (RFC 6749 4.1.2.1,
    /// OIDC Core 3.1.2.6) for a request validated elsewhere: the pushed
    /// authorization request endpoint (RFC 9126 2.3).
    #[error("{1}")]
    AuthorizationRequest(&'static str, String),
    /// The database is unreachable or did not answer in time (503). RFC
    /// 6749 4.1.2.1: "temporarily_unavailable: The authorization server is
    /// currently unable to handle the request due to a temporary
    /// overloading or maintenance of the server." (RFC 6749 5.2 has no such
    /// code for the token endpoint; the same word says what it is.)
    #[error("the authorization server cannot reach its database; retry later")]
    TemporarilyUnavailable(#[source] anyhow::Error),
    #[error("internal server error")]
    ServerError(#[source] anyhow::Error),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) | OAuthError::RefreshTokenReused(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::UnsupportedTokenType(_) => "unsupported_token_type",
            OAuthError::TooManyAttempts(_)
            | OAuthError::TooManyPushed(_)
            | OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            OAuthError::AuthorizationRequest(code, _) => code,
            OAuthError::ServerError(_) => "server_error",
        }
    }

    /// An error of ours: `server_error`, or `temporarily_unavailable` when
    /// the database is unavailable ([`crate::db::is_unavailable`]).
    pub fn server(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if crate::db::is_unavailable(&e) {
            OAuthError::TemporarilyUnavailable(e)
        } else {
            OAuthError::ServerError(e)
        }
    }
}

impl From<crate::db::RunError> for OAuthError {
    fn from(e: crate::db::RunError) -> Self {
        OAuthError::server(e)
    }
}

impl From<diesel::result::Error> for OAuthError {
    fn from(e: diesel::result::Error) -> Self {
        OAuthError::server(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_database_is_temporarily_unavailable_and_a_bug_server_error() {
        let e = OAuthError::from(crate::db::RunError::TimedOut(crate::db::DEFAULT_TIMEOUT));
        assert_eq!(e.code(), "temporarily_unavailable");
        assert!(matches!(e, OAuthError::TemporarilyUnavailable(_)));
        let e = OAuthError::server(anyhow::anyhow!("a row that does not parse"));
        assert_eq!(e.code(), "server_error");
    }
}
