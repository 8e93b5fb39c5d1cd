//! OpenID Connect RP-Initiated Logout 1.0: which client a logout request
//! comes from and where the browser may go afterwards. No HTTP types: the
//! handlers (`routes::oidc`) show the confirmation page, end the session and
//! redirect.

use url::Url;

use crate::credentials::jwt::KeyRing;
use crate::db::models::Client;
use crate::db::AnyConnection;

/// The parameters of `GET /oauth/logout` (RP-Initiated Logout 1.0 2), and
/// of the confirmation form that posts them back.
#[derive(Debug, Default, Clone)]
pub struct LogoutRequest {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

/// Why a logout request is refused: an error page, never a redirect (2:
/// "the OP MUST NOT perform post-logout redirection" to an unverified URI).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    #[error("The id_token_hint is not an ID token this server issued.")]
    BadHint,
    #[error("The client_id does not match the id_token_hint.")]
    ClientMismatch,
    #[error("This application is not registered.")]
    UnknownClient,
    #[error("A post_logout_redirect_uri needs the client: send id_token_hint or client_id.")]
    NoClient,
    #[error("This post_logout_redirect_uri is not registered for this application.")]
    Unregistered,
    #[error("The state is too long (at most 512 bytes).")]
    StateTooLong,
}

/// A logout request that checked out: the client it names (if any) and the
/// URL to send the browser to afterwards (the registered URI with `state`),
/// if one was asked for.
#[derive(Debug)]
pub struct Checked {
    pub client: Option<Client>,
    pub redirect: Option<String>,
}

/// The longest `state` kept (it goes back in the redirect).
const MAX_STATE_LEN: usize = 512;

/// Checks a logout request (RP-Initiated Logout 1.0 2, 3). The client comes
/// from the hint's `aud` (its signature checked with the keys, expiry
/// not: "the OP ... SHOULD accept ID Tokens ... even when they have
/// expired") or from `client_id`; both given, they must agree. A
/// `post_logout_redirect_uri` must be one the client registered, compared
/// as exact strings. Blocking (one query).
pub fn check(
    conn: &mut AnyConnection,
    keys: &KeyRing,
    issuer: &str,
    req: &LogoutRequest,
) -> anyhow::Result<Result<Checked, LogoutError>> {
    // `keys`: the ring that knows the hint's key, if any instance made it
    // (`KeyStore::for_token`); a retired key's hints fail, and the handler
    // still lets the user sign out (without the redirect).
    let hinted = match &req.id_token_hint {
        Some(token) => match audience_of(token).and_then(|aud| {
            keys.verify_id_token_hint(token, issuer, &aud)
                .ok()
                .map(|_| aud)
        }) {
            Some(aud) => Some(aud),
            None => return Ok(Err(LogoutError::BadHint)),
        },
        None => None,
    };
    let client_id = match (hinted, &req.client_id) {
        (Some(aud), Some(given)) if aud != *given => return Ok(Err(LogoutError::ClientMismatch)),
        (Some(aud), _) => Some(aud),
        (None, given) => given.clone(),
    };
    let client = match &client_id {
        Some(id) => match Client::find(conn, id)?.filter(|c| !c.disabled) {
            Some(c) => Some(c),
            None => return Ok(Err(LogoutError::UnknownClient)),
        },
        None => None,
    };
    let redirect = match (&req.post_logout_redirect_uri, &client) {
        (None, _) => None,
        (Some(_), None) => return Ok(Err(LogoutError::NoClient)),
        (Some(uri), Some(c)) if c.allows_post_logout_redirect(uri) => {
            let Ok(mut url) = Url::parse(uri) else {
                return Ok(Err(LogoutError::Unregistered));
            };
            if let Some(state) = req.state.as_deref() {
                // Dropped silently, the client would get a redirect without
                // its state.
                if state.len() > MAX_STATE_LEN {
                    return Ok(Err(LogoutError::StateTooLong));
                }
                url.query_pairs_mut().append_pair("state", state);
            }
            Some(url.to_string())
        }
        (Some(_), Some(_)) => return Ok(Err(LogoutError::Unregistered)),
    };
    Ok(Ok(Checked { client, redirect }))
}

/// The `aud` of an unverified JWT (a single string, as ours are); the
/// signature is checked next, against that audience.
fn audience_of(token: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("aud")?.as_str().map(str::to_owned)
}
