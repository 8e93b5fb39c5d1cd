//! Cross-origin calls from browsers (the Fetch standard's CORS protocol):
//! which endpoints a page on another origin may call, and whose answers it
//! may read. No HTTP types: `routes::cors` extracts the headers and applies
//! the decision.
//!
//! - Server metadata and the JWKS are public documents: any origin reads
//!   them (`*`).
//! - The token and revocation endpoints, and `/v1` with an OAuth access
//!   token, are the reason a public client (a single-page app) exists: a
//!   page may call them only from an origin that the client registered
//!   ([`Client::allowed_origins`]: its `allowed_cors_origins`, else the
//!   origins of its redirect URIs). The client is the one the request names
//!   (`client_id`, Basic credentials) or the one the access token was issued
//!   to. A request from any other origin is refused before it has any
//!   effect: no code is redeemed, no refresh token rotated, no token
//!   revoked.
//! - API keys are server-side secrets: no origin may use one from a page.
//! - Credentials (cookies) are never allowed: no endpoint here answers with
//!   `Access-Control-Allow-Credentials`, so a browser never attaches the
//!   sign-in session to a cross-origin call.

use crate::db::models::Client;

/// The CORS rules of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Metadata and JWKS: `Access-Control-Allow-Origin: *`, GET only.
    Public,
    /// `POST /oauth/token`, `POST /oauth/revoke`, `POST /oauth/par`: the named client's
    /// origins.
    Token,
    /// `/v1/...`: the access token's client's origins.
    Api,
    /// `GET`/`POST /oauth/userinfo`: the access token's client's origins.
    UserInfo,
}

impl Surface {
    /// The CORS rules of `path`; None: no cross-origin access at all (the
    /// browser pages, introspection, registration).
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/oauth/token" | "/oauth/revoke" | "/oauth/par" => Some(Surface::Token),
            "/oauth/userinfo" => Some(Surface::UserInfo),
            "/.well-known/jwks.json"
            | "/.well-known/oauth-authorization-server"
            | "/.well-known/openid-configuration" => Some(Surface::Public),
            p if p.starts_with("/.well-known/oauth-authorization-server/") => Some(Surface::Public),
            p if p == "/v1" || p.starts_with("/v1/") => Some(Surface::Api),
            _ => None,
        }
    }

    /// The methods a preflight may ask for.
    pub fn methods(self) -> &'static str {
        match self {
            Surface::Public => "GET",
            Surface::Token => "POST",
            Surface::Api => "GET, POST, PUT, PATCH, DELETE",
            Surface::UserInfo => "GET, POST",
        }
    }

    /// The request headers a page may set beyond the CORS-safelisted ones.
    pub fn request_headers(self) -> &'static str {
        match self {
            Surface::Public => "",
            Surface::Token | Surface::Api | Surface::UserInfo => "Authorization, Content-Type",
        }
    }

    /// The response headers a page may read beyond the safelisted ones.
    pub fn exposed_headers(self) -> &'static str {
        match self {
            Surface::Public => "",
            Surface::Token | Surface::UserInfo => "WWW-Authenticate, Retry-After, X-Request-Id",
            Surface::Api => "WWW-Authenticate, Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset",
        }
    }
}

/// What a request's `Origin` header means for a client-bound endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrossOrigin {
    /// No `Origin`, or the issuer's own: not a cross-origin call.
    No,
    /// A page on this origin calls us; whether it may depends on the client.
    From(String),
}

impl CrossOrigin {
    /// `header`: the request's `Origin`, if any (a value that is not text
    /// is kept as is, so that it matches nothing). `issuer`: our public base
    /// URL.
    pub fn of(header: Option<&str>, issuer: &str) -> Self {
        match header {
            None => CrossOrigin::No,
            Some(origin) if Some(origin) == issuer_origin(issuer).as_deref() => CrossOrigin::No,
            Some(origin) => CrossOrigin::From(origin.to_owned()),
        }
    }
}

/// The ASCII serialization of the issuer's origin (`https://auth.example.com`).
fn issuer_origin(issuer: &str) -> Option<String> {
    let url = url::Url::parse(issuer).ok()?;
    match url.origin() {
        o @ url::Origin::Tuple(..) => Some(o.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

/// Whether a page on `origin` may call us on behalf of `client` (None: an
/// unknown client, or a credential that belongs to none, an API key): only
/// from an origin the client registered, compared as exact strings (no
/// wildcard, no `null`), and never for a disabled client.
pub fn admits(client: Option<&Client>, origin: &str) -> bool {
    client.is_some_and(|c| !c.disabled && c.allows_origin(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(redirects: &str, origins: &str) -> Client {
        let now = chrono::Utc::now().naive_utc();
        Client {
            id: "client_spa".into(),
            name: "SPA".into(),
            confidential: false,
            secret_hash: None,
            redirect_uris: redirects.into(),
            scopes: "requests:read".into(),
            grant_types: "authorization_code refresh_token".into(),
            require_pkce: true,
            disabled: false,
            created_at: now,
            updated_at: now,
            can_introspect: false,
            registration_token_hash: None,
            registered_by: None,
            plan: "standard".into(),
            rate_limit: None,
            token_endpoint_auth_method: "none".into(),
            previous_secret_hash: None,
            previous_secret_expires_at: None,
            cors_origins: origins.into(),
            post_logout_redirect_uris: String::new(),
            require_par: false,
        }
    }

    #[test]
    fn a_client_admits_its_redirect_origins_or_its_registered_ones_only() {
        let derived = client("https://app.example.com/cb\nhttp://localhost:3000/cb", "");
        assert!(admits(Some(&derived), "https://app.example.com"));
        assert!(admits(Some(&derived), "http://localhost:3000"));
        for other in [
            "https://app.example.com.evil.example",
            "https://evil.example",
            "http://app.example.com",
            "http://localhost:3001",
            "https://app.example.com/",
            "null",
            "*",
            "",
        ] {
            assert!(!admits(Some(&derived), other), "{other}");
        }
        // Registered explicitly: those, and the redirect URIs' no longer.
        let explicit = client("https://app.example.com/cb", "https://spa.example.com");
        assert!(admits(Some(&explicit), "https://spa.example.com"));
        assert!(!admits(Some(&explicit), "https://app.example.com"));
        // A stored list that no longer parses fails closed: no origin, not
        // the redirect URIs' ones.
        let unreadable = client("https://app.example.com/cb", "https://*.example.com");
        assert!(!admits(Some(&unreadable), "https://app.example.com"));
        assert!(unreadable.allowed_origins().is_empty());
        let mut disabled = explicit.clone();
        disabled.disabled = true;
        assert!(!admits(Some(&disabled), "https://spa.example.com"));
        assert!(!admits(None, "https://spa.example.com"));
    }

    #[test]
    fn the_issuers_own_origin_is_no_cross_origin_call() {
        let issuer = "https://auth.example.com";
        assert_eq!(CrossOrigin::of(None, issuer), CrossOrigin::No);
        assert_eq!(
            CrossOrigin::of(Some("https://auth.example.com"), issuer),
            CrossOrigin::No
        );
        assert_eq!(
            CrossOrigin::of(Some("https://auth.example.com:8443"), issuer),
            CrossOrigin::From("https://auth.example.com:8443".into())
        );
        assert_eq!(
            CrossOrigin::of(Some("http://localhost:8080"), "http://localhost:8080/"),
            CrossOrigin::No
        );
    }

    #[test]
    fn only_the_documented_paths_take_part() {
        assert_eq!(Surface::of("/oauth/token"), Some(Surface::Token));
        assert_eq!(Surface::of("/oauth/revoke"), Some(Surface::Token));
        assert_eq!(Surface::of("/v1/me"), Some(Surface::Api));
        assert_eq!(Surface::of("/oauth/userinfo"), Some(Surface::UserInfo));
        assert_eq!(
            Surface::of("/.well-known/openid-configuration"),
            Some(Surface::Public)
        );
        assert_eq!(Surface::of("/.well-known/jwks.json"), Some(Surface::Public));
        assert_eq!(
            Surface::of("/.well-known/oauth-authorization-server/auth"),
            Some(Surface::Public)
        );
        for none in [
            "/oauth/introspect",
            "/oauth/register",
            "/oauth/authorize",
            "/login",
            "/v1x",
            "/settings/api",
        ] {
            assert_eq!(Surface::of(none), None, "{none}");
        }
    }
}
