//! CSRF tokens (OWASP CSRF Prevention Cheat Sheet, "synchronizer token" in
//! its stateless HMAC form): token = HMAC-SHA256(server key, binding, purpose).
//! A token is valid only for the session (or pre-session cookie) it was made
//! for and for the one form purpose it names, so a token lifted from one page
//! cannot be replayed on another or by another browser.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token is bound to.
#[derive(Clone, Copy, Debug)]
pub enum CsrfBinding<'a> {
    /// The random pre-session cookie of a browser that is not signed in.
    PreSession(&'a str),
    /// The id of a signed-in session.
    Session(&'a str),
}

#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, binding: CsrfBinding<'_>, purpose: &str) -> Option<HmacSha256> {
        let (kind, value) = match binding {
            CsrfBinding::PreSession(v) => ("pre", v),
            CsrfBinding::Session(v) => ("session", v),
        };
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        // Length-prefixed fields: no two (binding, purpose) pairs share a message.
        for field in [kind, value, purpose] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        Some(mac)
    }

    pub fn token(&self, binding: CsrfBinding<'_>, purpose: &str) -> String {
        self.mac(binding, purpose)
            .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Constant-time check of a submitted token.
    pub fn verify(&self, binding: CsrfBinding<'_>, purpose: &str, token: &str) -> bool {
        let Ok(submitted) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        self.mac(binding, purpose)
            .is_some_and(|m| m.verify_slice(&submitted).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CsrfKey {
        CsrfKey::new([7; 32])
    }

    #[test]
    fn token_verifies_for_its_own_binding_and_purpose() {
        let t = key().token(CsrfBinding::Session("s1"), "logout");
        assert!(key().verify(CsrfBinding::Session("s1"), "logout", &t));
    }

    #[test]
    fn token_is_refused_for_another_session_purpose_or_kind() {
        let t = key().token(CsrfBinding::Session("s1"), "logout");
        assert!(!key().verify(CsrfBinding::Session("s2"), "logout", &t));
        assert!(!key().verify(CsrfBinding::Session("s1"), "login", &t));
        assert!(!key().verify(CsrfBinding::PreSession("s1"), "logout", &t));
        assert!(!CsrfKey::new([8; 32]).verify(CsrfBinding::Session("s1"), "logout", &t));
    }

    #[test]
    fn empty_or_garbage_token_is_refused() {
        for t in ["", "!!!", "AAAA"] {
            assert!(!key().verify(CsrfBinding::Session("s1"), "logout", t));
        }
    }
}
