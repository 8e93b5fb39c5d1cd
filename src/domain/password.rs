use std::fmt;

/// A password as typed, for checking. `Debug` never shows it.
pub struct Password(String);

impl Password {
    pub fn new(raw: String) -> Self {
        Self(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A password that meets the rules for a new one.
#[derive(Debug)]
pub struct NewPassword(Password);

/// Lower bound, as in NIST SP 800-63B 5.1.1.2 with our own, stricter minimum.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Upper bound, so that hashing cost stays bounded.
pub const MAX_PASSWORD_BYTES: usize = 1024;

impl NewPassword {
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!(
                "password must be at least {MIN_PASSWORD_CHARS} characters"
            ));
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "password must be at most {MAX_PASSWORD_BYTES} bytes"
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err("password must not contain control characters".into());
        }
        Ok(Self(Password(raw)))
    }

    pub fn as_password(&self) -> &Password {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_needs_twelve_characters() {
        assert!(NewPassword::parse("elevenchars".into()).is_err());
        assert!(NewPassword::parse("twelve chars".into()).is_ok());
        // Characters, not bytes: twelve "é" are 24 bytes but twelve characters.
        assert!(NewPassword::parse("é".repeat(11)).is_err());
        assert!(NewPassword::parse("é".repeat(12)).is_ok());
    }

    #[test]
    fn overlong_password_is_rejected() {
        assert!(NewPassword::parse("a".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = NewPassword::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
