//! Password hashing with argon2id. Blocking and deliberately slow: call only
//! from the blocking pool (`Database::run`) or the CLI, never on an actix
//! worker.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::domain::{NewPassword, Password};
use crate::tokens;

/// OWASP Password Storage Cheat Sheet, argon2id: m=19456 KiB (19 MiB), t=2, p=1.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

fn hasher() -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) with a fresh
/// random salt.
pub fn hash_password(password: &NewPassword) -> anyhow::Result<String> {
    let hash = hasher()
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?
        .hash_password(password.as_password().expose().as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string, with the parameters stored
/// in it. A malformed hash never matches.
pub fn verify_password(password: &Password, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.expose().as_bytes(), phc)
        .is_ok()
}

/// A hash of a random password with the same parameters as real ones, so that
/// checking an unknown email costs one argon2 verification too and timing does
/// not tell which emails exist.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = tokens::new_secret("");
        NewPassword::parse(random)
            .ok()
            .and_then(|p| hash_password(&p).ok())
            // Unreachable in practice; a fixed well-formed hash keeps the cost.
            .unwrap_or_else(|| {
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()
            })
    })
}

/// Spends one verification on the dummy hash; always false.
pub fn verify_against_dummy(password: &Password) -> bool {
    let _ = verify_password(password, dummy_hash());
    false
}

/// Computes the dummy hash now, so the first unknown-email sign-in does not
/// pay for two hashes. Blocking.
pub fn warm_up() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters() {
        let p = NewPassword::parse("correct horse battery".into()).unwrap();
        let phc = hash_password(&p).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(p.as_password(), &phc));
        assert!(!verify_password(
            &Password::new("wrong horse battery".into()),
            &phc
        ));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let p = NewPassword::parse("correct horse battery".into()).unwrap();
        assert_ne!(hash_password(&p).unwrap(), hash_password(&p).unwrap());
    }

    #[test]
    fn malformed_hash_never_matches() {
        assert!(!verify_password(&Password::new("x".into()), "not a hash"));
        assert!(!verify_against_dummy(&Password::new("anything".into())));
    }
}
