//! The rules of an authorization request's own parameters (RFC 6749 4.1.1,
//! RFC 7636, OpenID Connect Core 3.1.2.1): what the authorization endpoint
//! checks before oxide-auth runs, and what the pushed authorization request
//! endpoint checks of a pushed request (RFC 9126 2.1: "validate the pushed
//! request as it would an authorization request"). Pure: no I/O.

use crate::db::models::Client;
use crate::domain::{GrantType, Scope, ScopeSet};

/// The authorization request's own parameters; each may appear once (and
/// only these are kept of a pushed request).
pub const PROTOCOL_PARAMS: [&str; 11] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "nonce",
    "max_age",
    "id_token_hint",
];

/// The longest `nonce` kept (OIDC Core 3.1.2.1 sets no limit; ours is
/// stored with the code and echoed in the ID token).
pub const MAX_NONCE_LEN: usize = 512;

/// The `error_description` of `unsupported_response_type`.
pub const CODE_FLOW_ONLY: &str =
    "only response_type=code is supported (the authorization code flow)";

/// What makes a request with a trusted client and redirect URI fail before
/// oxide-auth sees it, with a description the client can act on (RFC 6749
/// 4.1.2.1: `error_description`, "human-readable ASCII"). The descriptions
/// never repeat the request's values: they are fixed texts.
fn request_problem(
    response_type: Option<&str>,
    challenge: Option<&str>,
    method: Option<&str>,
    pkce_required: bool,
) -> Option<(&'static str, String)> {
    let problem = |error, text: &str| Some((error, text.to_owned()));
    // RFC 6749 4.1.1 and 4.1.2.1: the code flow only.
    if response_type != Some("code") {
        return problem("unsupported_response_type", CODE_FLOW_ONLY);
    }
    // RFC 7636 4.3, 4.4.1 and RFC 9700 2.1.1.
    if method.is_some_and(|m| m != "S256") {
        return problem(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)",
        );
    }
    match challenge {
        None if pkce_required => problem(
            "invalid_request",
            "code_challenge is required for this client (PKCE with S256, RFC 7636)",
        ),
        None if method.is_some() => problem(
            "invalid_request",
            "code_challenge_method was sent without a code_challenge",
        ),
        // RFC 7636 4.3: without a method the challenge is plain.
        Some(_) if method.is_none() => problem(
            "invalid_request",
            "code_challenge_method=S256 is required with a code_challenge (the default, plain, is not accepted)",
        ),
        // RFC 7636 4.2: an S256 challenge is BASE64URL(SHA256(verifier)),
        // 43 characters of the base64url alphabet.
        Some(c)
            if c.len() != 43
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            problem(
                "invalid_request",
                "code_challenge must be the S256 challenge: 43 characters of A-Z, a-z, 0-9, '-' and '_' (RFC 7636 4.2)",
            )
        }
        _ => None,
    }
}

/// What is wrong with an authorization request's own parameters, for a
/// client whose redirect URI is trusted: the authorization endpoint checks
/// every request with it before oxide-auth runs, and the pushed
/// authorization request endpoint every pushed one (RFC 9126 2.1: "validate
/// the pushed request as it would an authorization request"). The
/// descriptions are fixed texts, never the request's values.
pub fn parameter_problem(
    client: &Client,
    param: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    let problem = |error, text: &str| Some((error, text.to_owned()));
    // RFC 6749 4.1.2.1 unauthorized_client: "The client is not authorized
    // to request an authorization code using this method."
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return problem(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        );
    }
    let found = request_problem(
        param("response_type").as_deref(),
        param("code_challenge").as_deref(),
        param("code_challenge_method").as_deref(),
        client.is_public() || client.require_pkce,
    );
    if found.is_some() {
        return found;
    }
    // OIDC Core 6: request objects are not supported (and the discovery
    // document says so); a request_uri is one of our PAR endpoint's or
    // nothing (`oauth::par`).
    if param("request").is_some() {
        return problem("request_not_supported", "request objects are not supported");
    }
    if param("request_uri").is_some() {
        return problem(
            "request_uri_not_supported",
            "request_uri must be one this server issued at its pushed authorization request endpoint (request objects by reference are not supported)",
        );
    }
    if let Err((error, description)) = Prompt::parse(param("prompt").as_deref()) {
        return problem(error, description);
    }
    if parse_max_age(param("max_age").as_deref()).is_err() {
        return problem(
            "invalid_request",
            "max_age must be a whole number of seconds",
        );
    }
    let nonce = param("nonce");
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE_LEN) {
        return problem("invalid_request", "nonce is too long (at most 512 bytes)");
    }
    // Issue 15: a public client's ID token is bound to its request by the
    // nonce alone (no client authentication at the token endpoint). The
    // request asks for `openid` (by name, or as a registered default).
    let openid = match param("scope") {
        Some(raw) => ScopeSet::parse(&raw).is_ok_and(|s| s.contains(Scope::Openid)),
        None => client.scopes().contains(Scope::Openid),
    };
    if openid && nonce.is_none() && client.is_public() {
        return problem(
            "invalid_request",
            "nonce is required: an OpenID Connect request of a public client must carry one",
        );
    }
    None
}

/// `prompt` (OpenID Connect Core 3.1.2.1): a space-delimited set of
/// `none`, `login`, `consent` (`select_account` is refused: a browser holds
/// one account's session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

impl Prompt {
    /// The parsed set, or the error and description to redirect with.
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, (&'static str, &'static str)> {
        let mut prompt = Prompt::default();
        for value in raw.unwrap_or_default().split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => {
                    return Err((
                        "account_selection_required",
                        "prompt=select_account is not supported: a browser is signed in to one account (sign out to change it)",
                    ))
                }
                _ => {
                    return Err((
                        "invalid_request",
                        "prompt must be none, login or consent",
                    ))
                }
            }
        }
        // OIDC Core 3.1.2.1: "If this parameter contains none with any other
        // value, an error is returned."
        if prompt.none && (prompt.login || prompt.consent) {
            return Err((
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ));
        }
        Ok(prompt)
    }
}

/// `max_age` (OIDC Core 3.1.2.1): whole seconds, at most ten years.
pub(crate) fn parse_max_age(raw: Option<&str>) -> Result<Option<i64>, ()> {
    match raw {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=10 * 366 * 86_400).contains(n))
            .map(Some)
            .ok_or(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_challenge_shape() {
        let problem = |c: &str| request_problem(Some("code"), Some(c), Some("S256"), true);
        assert!(problem("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").is_none());
        assert!(problem("short").is_some());
        assert!(problem("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM").is_some());
    }
}
