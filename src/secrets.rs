//! Secrets at rest. The private signing keys and the server secrets (the
//! CSRF HMAC key) are sealed in the database under `DZDESK_SECRETS_KEY`, so
//! that a leaked backup, or any read of those tables, is not enough to mint
//! a token.
//!
//! A sealed value is self-describing and versioned:
//!
//! ```text
//! b"enc1:" || nonce (24 bytes) || XChaCha20-Poly1305 ciphertext || tag (16 bytes)
//! ```
//!
//! - a fresh nonce from the CSPRNG for every write (XChaCha's 192-bit nonce
//!   makes random nonces safe for any number of writes under one key);
//! - the table and the row's id as associated data ([`Row`]), so a value
//!   copied into another row, or another table, does not open there;
//! - anything else is a plain value, stored before this existed or without a
//!   key (development). It is read as it is, and sealed at the next start
//!   with a key (`db::sealed`). A plain private key is PKCS#8 DER (it starts
//!   with 0x30) and a plain server secret is 32 bytes: neither can look
//!   sealed.
//!
//! This module is the one rule; `db::models` seal and open those columns
//! through [`Sealer`] and nothing else touches them. No database and no
//! configuration here (`config` parses the keys).

use std::sync::Arc;

use base64::alphabet;
use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::tokens;

/// The key (32 random bytes, base64) that seals secrets at rest.
pub const KEY_VAR: &str = "DZDESK_SECRETS_KEY";
/// The previous key, while rotating: what it sealed is still read.
pub const OLD_KEY_VAR: &str = "DZDESK_SECRETS_KEY_OLD";

/// Version 1: XChaCha20-Poly1305, a 24-byte nonce, [`Row::aad`].
const PREFIX: &[u8] = b"enc1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest sealed value (an empty secret).
const MIN_SEALED: usize = PREFIX.len() + NONCE_LEN + TAG_LEN;

/// Standard base64 as `openssl rand -base64 32` prints it; the padding may
/// be left off.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One 32-byte key. Its `Debug` never shows it, and it is wiped from memory
/// when dropped.
#[derive(Clone)]
pub struct SecretsKey(XChaCha20Poly1305);

impl SecretsKey {
    /// The base64 of 32 bytes (`openssl rand -base64 32`). The error says
    /// what is wrong without ever containing the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            KEY_BASE64
                .decode(raw.trim())
                .map_err(|_| "is not base64: generate a key with `openssl rand -base64 32`")?,
        );
        XChaCha20Poly1305::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| {
                format!(
                    "must be 32 bytes in base64 (`openssl rand -base64 32`), not {} bytes",
                    bytes.len()
                )
            })
    }

    /// A random key (tests).
    #[cfg(test)]
    pub fn generate() -> Self {
        let bytes = Zeroizing::new(tokens::random_bytes::<32>());
        Self(XChaCha20Poly1305::new(&(*bytes).into()))
    }
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// Which row a secret belongs to: sealed with it as associated data, so a
/// value opens only in the row it was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row<'a> {
    /// `signing_keys.private_key`, by `kid`.
    SigningKey(&'a str),
    /// `server_secrets.secret`, by `name`.
    ServerSecret(&'a str),
}

impl Row<'_> {
    /// `table NUL id`: table names hold no NUL, so no two rows share it.
    fn aad(&self) -> Vec<u8> {
        let (table, id) = match self {
            Row::SigningKey(kid) => ("signing_keys", kid),
            Row::ServerSecret(name) => ("server_secrets", name),
        };
        [table.as_bytes(), b"\0", id.as_bytes()].concat()
    }
}

impl std::fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Row::SigningKey(kid) => write!(f, "signing key {kid}"),
            Row::ServerSecret(name) => write!(f, "server secret {name}"),
        }
    }
}

/// Why a stored secret cannot be used; each names the variable to fix, and
/// start-up prints it as its one line (exit 2). Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "DZDESK_SECRETS_KEY is not set, but the stored secrets are encrypted ({row}): set it to \
         the key they were encrypted with"
    )]
    NoKey { row: String },
    #[error(
        "the stored secrets cannot be decrypted with DZDESK_SECRETS_KEY ({row}): a wrong key? \
         While rotating, set the previous one as DZDESK_SECRETS_KEY_OLD. Otherwise the row was \
         altered or copied from another row"
    )]
    Unreadable { row: String },
    #[error("the stored {row} is malformed: {why}")]
    Malformed { row: String, why: &'static str },
    #[error(
        "the stored {row} is not encrypted, but DZDESK_SECRETS_KEY is set: this service \
         encrypts plain rows only at start-up, so this one was written since by something \
         else; it is not used"
    )]
    Plain { row: String },
}

impl SecretsError {
    pub fn malformed(row: Row<'_>, why: &'static str) -> Self {
        SecretsError::Malformed {
            row: row.to_string(),
            why,
        }
    }
}

/// What a stored value was sealed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedWith {
    /// Nothing: a plain value.
    Nothing,
    /// `DZDESK_SECRETS_KEY`.
    Key,
    /// `DZDESK_SECRETS_KEY_OLD`: to be sealed again under the key
    /// (`secrets rotate`).
    OldKey,
}

/// An opened secret, wiped from memory when dropped.
pub struct Opened {
    pub secret: Zeroizing<Vec<u8>>,
    pub sealed_with: SealedWith,
}

/// Seals and opens secrets at rest with `DZDESK_SECRETS_KEY` and, while it
/// is rotated, `DZDESK_SECRETS_KEY_OLD`. Without a key (development) values
/// are stored plain. Cheap to clone; its `Debug` shows only which keys are
/// set.
#[derive(Clone, Default)]
pub struct Sealer {
    key: Option<Arc<SecretsKey>>,
    old: Option<Arc<SecretsKey>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |k: &Option<Arc<SecretsKey>>| if k.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Sealer")
            .field("key", &set(&self.key))
            .field("old", &set(&self.old))
            .finish()
    }
}

impl Sealer {
    pub fn new(key: Option<SecretsKey>, old: Option<SecretsKey>) -> Self {
        Self {
            key: key.map(Arc::new),
            old: old.map(Arc::new),
        }
    }

    /// Whether values are sealed when written (`DZDESK_SECRETS_KEY` is set).
    pub fn is_on(&self) -> bool {
        self.key.is_some()
    }

    /// The stored form of `secret` for `row`: sealed under the key with a
    /// fresh nonce, or plain without a key.
    pub fn seal(&self, row: Row<'_>, secret: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let Some(key) = &self.key else {
            // A plain value must never read back as a sealed one.
            if sealed_parts(secret).is_some() {
                return Err(SecretsError::malformed(
                    row,
                    "a plain value cannot begin with enc1:",
                ));
            }
            return Ok(secret.to_vec());
        };
        let nonce = tokens::random_bytes::<NONCE_LEN>();
        let aad = row.aad();
        let sealed = key
            .0
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::malformed(row, "too long to encrypt"))?;
        Ok([PREFIX, &nonce, &sealed].concat())
    }

    /// [`Sealer::open`] for use: with a key set, a plain value is refused.
    /// Plain rows are sealed at start-up (`db::sealed::prepare`, before any
    /// is read for use), so one found afterwards was written by someone
    /// else, perhaps a signing key of an attacker's choosing: never sign or
    /// verify with it.
    pub fn open_sealed(&self, row: Row<'_>, stored: &[u8]) -> Result<Opened, SecretsError> {
        let opened = self.open(row, stored)?;
        if self.is_on() && opened.sealed_with == SealedWith::Nothing {
            return Err(SecretsError::Plain {
                row: row.to_string(),
            });
        }
        Ok(opened)
    }

    /// The secret stored as `stored` in `row`: a plain value as it is, a
    /// sealed one opened with the key or else the old key.
    pub fn open(&self, row: Row<'_>, stored: &[u8]) -> Result<Opened, SecretsError> {
        let Some((nonce, sealed)) = sealed_parts(stored) else {
            return Ok(Opened {
                secret: Zeroizing::new(stored.to_vec()),
                sealed_with: SealedWith::Nothing,
            });
        };
        if self.key.is_none() && self.old.is_none() {
            return Err(SecretsError::NoKey {
                row: row.to_string(),
            });
        }
        let aad = row.aad();
        let candidates = [
            (&self.key, SealedWith::Key),
            (&self.old, SealedWith::OldKey),
        ];
        for (key, sealed_with) in candidates {
            let Some(key) = key else { continue };
            let payload = Payload {
                msg: sealed,
                aad: &aad,
            };
            // Poly1305 is checked (in constant time) before anything is
            // decrypted: a failure reveals nothing of the plaintext.
            if let Ok(secret) = key.0.decrypt(&XNonce::from(*nonce), payload) {
                return Ok(Opened {
                    secret: Zeroizing::new(secret),
                    sealed_with,
                });
            }
        }
        Err(SecretsError::Unreadable {
            row: row.to_string(),
        })
    }
}

/// The nonce and the ciphertext (with its tag) of a sealed value; `None`
/// for a plain one.
fn sealed_parts(stored: &[u8]) -> Option<(&[u8; NONCE_LEN], &[u8])> {
    if stored.len() < MIN_SEALED {
        return None;
    }
    let rest = stored.strip_prefix(PREFIX)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
    Some((nonce, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: Row<'static> = Row::SigningKey("kid_a");
    const SECRET: &[u8] = b"0\x81\x87 a PKCS#8 DER private key, say";

    fn sealer() -> Sealer {
        Sealer::new(Some(SecretsKey::generate()), None)
    }

    #[test]
    fn a_sealed_value_opens_to_the_secret_and_hides_it() {
        let s = sealer();
        let stored = s.seal(KID, SECRET).unwrap();
        assert!(stored.starts_with(b"enc1:"));
        assert_eq!(stored.len(), MIN_SEALED + SECRET.len());
        assert!(!stored.windows(8).any(|w| SECRET.windows(8).any(|x| x == w)));
        let opened = s.open(KID, &stored).unwrap();
        assert_eq!(opened.secret.as_slice(), SECRET);
        assert_eq!(opened.sealed_with, SealedWith::Key);
    }

    #[test]
    fn every_seal_has_a_fresh_nonce() {
        let s = sealer();
        let a = s.seal(KID, SECRET).unwrap();
        let b = s.seal(KID, SECRET).unwrap();
        assert_ne!(a[..PREFIX.len() + NONCE_LEN], b[..PREFIX.len() + NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn another_key_does_not_open_it() {
        let stored = sealer().seal(KID, SECRET).unwrap();
        assert_eq!(
            sealer().open(KID, &stored).err(),
            Some(SecretsError::Unreadable {
                row: "signing key kid_a".into()
            })
        );
    }

    #[test]
    fn a_value_moved_to_another_row_or_table_does_not_open() {
        let s = sealer();
        let stored = s.seal(KID, SECRET).unwrap();
        for other in [
            Row::SigningKey("kid_b"),
            Row::SigningKey("kid_a\0"),
            Row::ServerSecret("kid_a"),
        ] {
            assert!(
                matches!(s.open(other, &stored), Err(SecretsError::Unreadable { .. })),
                "{other:?}"
            );
        }
    }

    #[test]
    fn any_changed_byte_is_detected() {
        let s = sealer();
        let stored = s.seal(KID, SECRET).unwrap();
        // Past the prefix (changing it makes a "plain" value, see below):
        // nonce, ciphertext and tag.
        for i in PREFIX.len()..stored.len() {
            let mut tampered = stored.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(s.open(KID, &tampered), Err(SecretsError::Unreadable { .. })),
                "byte {i}"
            );
        }
        let mut cut = stored.clone();
        cut.pop();
        assert!(s.open(KID, &cut).is_err());
        // A changed prefix is no longer sealed: opened as a plain value, it
        // is not the secret (and the plain key fails to parse upstream).
        let mut unprefixed = stored.clone();
        unprefixed[0] ^= 0x01;
        assert_ne!(s.open(KID, &unprefixed).unwrap().secret.as_slice(), SECRET);
    }

    #[test]
    fn the_old_key_still_opens_what_it_sealed() {
        let old = SecretsKey::generate();
        let before = Sealer::new(Some(old.clone()), None);
        let stored = before.seal(KID, SECRET).unwrap();
        let rotating = Sealer::new(Some(SecretsKey::generate()), Some(old));
        let opened = rotating.open(KID, &stored).unwrap();
        assert_eq!(opened.secret.as_slice(), SECRET);
        assert_eq!(opened.sealed_with, SealedWith::OldKey);
        // What it writes now is under the new key alone.
        let fresh = rotating.seal(KID, &opened.secret).unwrap();
        assert_eq!(
            rotating.open(KID, &fresh).unwrap().sealed_with,
            SealedWith::Key
        );
        assert!(before.open(KID, &fresh).is_err());
    }

    #[test]
    fn without_a_key_values_are_plain_and_sealed_ones_refused() {
        let plain = Sealer::default();
        assert!(!plain.is_on());
        let stored = plain.seal(KID, SECRET).unwrap();
        assert_eq!(stored, SECRET);
        let opened = plain.open(KID, &stored).unwrap();
        assert_eq!(opened.sealed_with, SealedWith::Nothing);
        // A key opens plain values too (they are sealed at the next start).
        assert_eq!(
            sealer().open(KID, SECRET).unwrap().secret.as_slice(),
            SECRET
        );

        let sealed = sealer().seal(KID, SECRET).unwrap();
        assert_eq!(
            plain.open(KID, &sealed).err(),
            Some(SecretsError::NoKey {
                row: "signing key kid_a".into()
            })
        );
        // A plain value that would read back as sealed is refused.
        assert!(plain.seal(KID, &sealed).is_err());
    }

    #[test]
    fn plain_signing_keys_and_server_secrets_never_look_sealed() {
        // PKCS#8 DER starts with a SEQUENCE (0x30); a server secret is 32
        // bytes, shorter than any sealed value.
        assert!(sealed_parts(&[0x30; 200]).is_none());
        let mut secret = *b"enc1:...........................";
        assert_eq!(secret.len(), 32);
        assert!(sealed_parts(&secret).is_none());
        secret[5] = 0;
        assert!(sealed_parts(&secret).is_none());
    }

    #[test]
    fn keys_parse_from_32_bytes_of_base64_and_errors_never_echo_them() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretsKey::parse(&key).is_ok());
        assert!(SecretsKey::parse(key.trim_end_matches('=')).is_ok());
        assert!(SecretsKey::parse(&format!(" {key}\n")).is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        for bad in ["not base64 at all!", short.as_str(), "", "hunter2hunter2=="] {
            let err = SecretsKey::parse(bad).err().unwrap();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
            assert!(err.contains("openssl rand -base64 32"), "{err}");
        }
        assert!(SecretsKey::parse(&short)
            .unwrap_err()
            .contains("not 16 bytes"));
    }

    #[test]
    fn debug_never_shows_a_key() {
        let key = SecretsKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
            .unwrap();
        assert_eq!(format!("{key:?}"), "SecretsKey(<redacted>)");
        let s = Sealer::new(Some(key), None);
        assert_eq!(
            format!("{s:?}"),
            r#"Sealer { key: "<set>", old: "<unset>" }"#
        );
    }
}
