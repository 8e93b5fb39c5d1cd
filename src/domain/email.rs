use std::fmt;

/// An e-mail address, normalised (trimmed, lower-case) so that equality and
/// the database's unique index are case-insensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// A deliberately plain check: one `@`, a non-empty local part, a domain
    /// with a dot and no empty label, no whitespace or control characters,
    /// at most 254 characters (RFC 5321 4.5.3.1.3).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("email is empty".into());
        }
        if email.len() > 254 {
            return Err("email is longer than 254 characters".into());
        }
        if email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','))
        {
            return Err("email contains spaces or characters that are not allowed".into());
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("email has no @".into());
        };
        if local.is_empty() || local.contains('@') || local.len() > 64 {
            return Err("email has an empty, too long or ambiguous local part".into());
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err("email domain is not a domain name".into());
        }
        Ok(Self(email))
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn email_is_normalised_to_lower_case() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_ref(),
            "ann@example.com"
        );
    }

    #[test]
    fn invalid_emails_are_rejected() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@example..com",
            "a@b@example.com",
            "ann@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn overlong_email_is_rejected() {
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
