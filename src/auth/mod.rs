//! Authentication of people: passwords, sign-in, CSRF tokens, safe redirects.
//! No actix types here; the HTTP side lives in `routes::web`.

pub mod csrf;
pub mod password;
pub mod signin;
pub mod verifier;

/// The target of a post-sign-in redirect, if it is safe to follow: a local
/// absolute path only. Anything that a browser could resolve to another
/// origin is refused (open redirect, RFC 9700 4.11 / OWASP "Unvalidated
/// Redirects"): a scheme (`https://evil`), a scheme-relative `//evil`, `/\evil`
/// (browsers read `\` as `/`), and control characters (`/%09/evil` decoded).
pub fn local_redirect_target(next: &str) -> Option<&str> {
    let safe = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 2048
        && !next.chars().any(|c| c == '\\' || c.is_control());
    safe.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::local_redirect_target;

    #[test]
    fn local_paths_are_followed() {
        for ok in ["/", "/settings/api", "/oauth/authorize?client_id=x&state=y"] {
            assert_eq!(local_redirect_target(ok), Some(ok));
        }
    }

    #[test]
    fn other_origins_are_refused() {
        for bad in [
            "",
            "//evil.example",
            "//evil.example/path",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "/\\evil.example",
            "/\t/evil.example",
            "evil.example",
        ] {
            assert_eq!(local_redirect_target(bad), None, "{bad:?} accepted");
        }
    }
}
