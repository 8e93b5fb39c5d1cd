//! Random identifiers and opaque secrets.
//!
//! Secrets (session cookies, later refresh tokens, API keys, client secrets)
//! are 256 bits from a CSPRNG, carry a short type prefix so secret scanners
//! recognise a leaked one, and are stored only as their SHA-256: they are
//! high-entropy, so a fast hash is right (argon2id is for human passwords).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::distr::Alphanumeric;
use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` bytes from the thread-local CSPRNG (ChaCha12, seeded and periodically
/// reseeded from the operating system).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A 256-bit secret, URL-safe base64, behind `prefix` (e.g. `dzr_`).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A public identifier: `prefix` + 24 alphanumerics (about 143 bits), e.g.
/// `user_…`. Not a secret, only unguessable and unique.
pub fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{suffix}")
}

/// Hex SHA-256 of a secret: what the database stores and looks up by.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two byte strings (length is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_their_prefix_and_256_bits() {
        let s = new_secret("dzr_");
        let body = s.strip_prefix("dzr_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(new_secret("dzr_"), s);
    }

    #[test]
    fn ids_have_prefix_and_24_alphanumerics() {
        let id = new_id("user_");
        let body = id.strip_prefix("user_").unwrap();
        assert_eq!(body.len(), 24);
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn hash_is_stable_hex_sha256() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_compares_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
