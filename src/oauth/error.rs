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
    #[error("internal server error")]
    ServerError(#[source] anyhow::Error),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::UnsupportedTokenType(_) => "unsupported_token_type",
            OAuthError::TooManyAttempts(_) => "temporarily_unavailable",
            OAuthError::ServerError(_) => "server_error",
        }
    }

    pub fn server(e: impl Into<anyhow::Error>) -> Self {
        OAuthError::ServerError(e.into())
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
