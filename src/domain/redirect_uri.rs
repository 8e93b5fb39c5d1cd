use std::fmt;

/// A redirect URI as registered: an absolute https URL without fragment, or
/// http on a loopback host only (RFC 6749 3.1.2, RFC 9700 2.1, RFC 8252 7.3).
/// The original string is kept: requests are matched against it by exact
/// string comparison (RFC 9700 4.1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct RedirectUri {
    raw: String,
    loopback: bool,
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl RedirectUri {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > 2000 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("redirect URI is too long or contains whitespace".into());
        }
        // RFC 3986 has no `\` (it is `%5C`), but URL parsers read it as `/`
        // in http(s): `http://127.0.0.1\cb` is the path `/cb` to them and
        // all authority to `matches`, which then let the loopback port
        // exception accept `http://127.0.0.1\cb:5555`, the path `/cb:5555`.
        if raw.contains('\\') {
            return Err("redirect URI must not contain a backslash (write %5C)".into());
        }
        let url = url::Url::parse(raw)
            .map_err(|e| format!("redirect URI is not an absolute URL: {e}"))?;
        // RFC 6749 3.1.2: "The endpoint URI MUST NOT include a fragment component."
        if url.fragment().is_some() || raw.contains('#') {
            return Err("redirect URI must not have a fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("redirect URI must not contain credentials".into());
        }
        let loopback = is_loopback_host(&url);
        match url.scheme() {
            "https" if url.host().is_some() => {}
            // RFC 8252 7.3 / RFC 9700 2.1: plain http only for loopback.
            "http" if loopback && splits_as_parsed(raw, &url) => {}
            "http" if loopback => {
                return Err(
                    "loopback redirect URIs must be written plainly: http://HOST[:PORT]/path, HOST as 127.0.0.1, [::1] or localhost"
                        .into(),
                )
            }
            "http" => {
                return Err(
                    "http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)"
                        .into(),
                )
            }
            _ => return Err("redirect URI must use https (or http on loopback)".into()),
        }
        Ok(Self {
            raw: raw.to_owned(),
            loopback: loopback && url.scheme() == "http",
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// An http URL on a loopback host.
    pub fn is_loopback_http(&self) -> bool {
        self.loopback
    }

    /// Whether `requested` may be used with this registration: the exact
    /// string (RFC 9700 4.1.3), or, for loopback http redirects of native
    /// (public) clients, the same string with any port (RFC 8252 7.3: "The
    /// authorization server MUST allow any port to be specified at the time of
    /// the request for loopback IP redirect URIs"; RFC 9700 2.1: "authorization
    /// servers MUST utilize exact string matching except for port numbers in
    /// localhost redirection URIs of native apps").
    ///
    /// Only the port varies: scheme, host and the rest are compared byte for
    /// byte as registered. Nothing is parsed into a URL first, which would
    /// normalise `127.1`, `0x7f000001` or `/cb/../cb` into the registered
    /// form and accept them.
    pub fn matches(&self, requested: &str, allow_any_loopback_port: bool) -> bool {
        if self.raw == requested {
            return true;
        }
        if !(allow_any_loopback_port && self.loopback) {
            return false;
        }
        match (split_port(&self.raw), split_port(requested)) {
            (Some(registered), Some(requested)) => {
                registered.origin == requested.origin && registered.rest == requested.rest
            }
            _ => false,
        }
    }
}

/// Whether [`split_port`] finds in `raw` the scheme and host that `url`
/// (the URL parser, as a browser) found. The loopback port exception of
/// [`RedirectUri::matches`] works on the text; a registration it would
/// misread, such as `http:[::1]//x/t://127.0.0.1/cb` (no `//` after the
/// scheme, another `://` in the path: the "port" went into the path) or
/// `http://@127.0.0.1/cb`, is refused instead.
fn splits_as_parsed(raw: &str, url: &url::Url) -> bool {
    let Some((scheme, host)) = split_port(raw).and_then(|s| s.origin.split_once("://")) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(url.scheme())
        && url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host))
}

/// A URI split textually around its port: `scheme://host`, the port, and
/// everything after the authority (path, query).
struct PortSplit<'a> {
    origin: &'a str,
    rest: &'a str,
}

/// Splits `uri` around the port of its authority, without normalising
/// anything. `None` when there is no `scheme://` or the port is not a
/// canonical decimal port (1 to 65535, no sign, no leading zero), so that
/// `127.0.0.1:80@evil.example` never counts as a port.
fn split_port(uri: &str) -> Option<PortSplit<'_>> {
    let authority_start = uri.find("://")? + 3;
    let authority_end = uri[authority_start..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| authority_start + i);
    let authority = &uri[authority_start..authority_end];
    let host_len = if authority.starts_with('[') {
        authority.find(']')? + 1
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let port = &authority[host_len..];
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        let canonical = !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u16>().is_ok_and(|p| p > 0);
        if !canonical {
            return None;
        }
    }
    Some(PortSplit {
        origin: &uri[..authority_start + host_len],
        rest: &uri[authority_end..],
    })
}

impl AsRef<str> for RedirectUri {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedirectUri({})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::RedirectUri;

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for ok in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1",
            "http://127.0.0.1:8000/cb",
            "http://[::1]/cb",
            "http://localhost:3000/callback",
        ] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn fragments_plain_http_and_other_schemes_are_refused() {
        for bad in [
            "https://app.example.com/cb#frag",
            "http://app.example.com/cb",
            "ftp://app.example.com/cb",
            "/relative/cb",
            "javascript:alert(1)",
            "https://user:pw@app.example.com/cb",
            "custom.scheme:/cb",
        ] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_is_exact_string() {
        let r = RedirectUri::parse("https://app.example.com/cb").unwrap();
        assert!(r.matches("https://app.example.com/cb", true));
        for other in [
            "https://app.example.com/cb/",
            "https://app.example.com/cb?x=1",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/cb/../cb",
        ] {
            assert!(!r.matches(other, true), "{other}");
        }
    }

    #[test]
    fn loopback_matching_compares_everything_but_the_port_as_registered() {
        for registered in ["http://127.0.0.1/cb", "http://127.0.0.1:5000/cb"] {
            let r = RedirectUri::parse(registered).unwrap();
            // Only the port may vary: another one, or none.
            for ok in [
                "http://127.0.0.1:5555/cb",
                "http://127.0.0.1:65535/cb",
                "http://127.0.0.1/cb",
            ] {
                assert!(r.matches(ok, true), "{registered} vs {ok}");
            }
            for bad in [
                // Other spellings of the same address.
                "http://127.1:5555/cb",
                "http://0x7f000001:5555/cb",
                "http://2130706433:5555/cb",
                "http://0177.0.0.1:5555/cb",
                "http://127.0.0.01:5555/cb",
                // Dot segments, case, slashes, percent-encoding.
                "http://127.0.0.1:5555/cb/../cb",
                "http://127.0.0.1:5555/./cb",
                "http://127.0.0.1:5555/cb/",
                "http://127.0.0.1:5555/CB",
                "http://127.0.0.1:5555//cb",
                "http://127.0.0.1:5555/%63b",
                "http://127.0.0.1:5555/c%62",
                "HTTP://127.0.0.1:5555/cb",
                // A query or fragment the registration does not have.
                "http://127.0.0.1:5555/cb?x=1",
                "http://127.0.0.1:5555/cb?",
                "http://127.0.0.1:5555/cb#x",
                // Userinfo, and ports that are not ports.
                "http://x@127.0.0.1:5555/cb",
                "http://127.0.0.1:5555@evil.example/cb",
                "http://127.0.0.1:/cb",
                "http://127.0.0.1:05555/cb",
                "http://127.0.0.1:+5555/cb",
                "http://127.0.0.1:0/cb",
                "http://127.0.0.1:65536/cb",
                "http://127.0.0.1:5555\\@evil.example/cb",
                // Another host or scheme.
                "http://127.0.0.2:5555/cb",
                "https://127.0.0.1:5555/cb",
                "http://localhost:5555/cb",
            ] {
                assert!(!r.matches(bad, true), "{registered} vs {bad}");
            }
        }
        let v6 = RedirectUri::parse("http://[::1]/cb").unwrap();
        assert!(v6.matches("http://[::1]:5555/cb", true));
        assert!(!v6.matches("http://[0:0:0:0:0:0:0:1]:5555/cb", true));
        assert!(!v6.matches("http://[::1]5555/cb", true));
    }

    #[test]
    fn backslashes_are_refused() {
        // Found by the fuzz/redirect_uri property (a match must be the same
        // URL but for the port): registered `http://127.0.0.1\cb` matched
        // `http://127.0.0.1\cb:5555`, which a browser reads as `/cb:5555`.
        for bad in [
            "http://127.0.0.1\\cb",
            "http://localhost:3000\\callback",
            "https://app.example.com\\cb",
            "https://app.example.com/cb\\x",
        ] {
            let err = RedirectUri::parse(bad).unwrap_err();
            assert!(err.contains("backslash"), "{bad}: {err}");
        }
        assert!(RedirectUri::parse("https://app.example.com/c%5Cb").is_ok());
    }

    #[test]
    fn loopback_redirects_must_be_written_as_the_port_exception_reads_them() {
        // Found by fuzz/redirect_uri: registered
        // `http:[::1]//[:::00]/t://127.0.0.1/c7/cb` (host [::1] to a
        // browser) matched the same with `:1057` spliced into its path.
        for bad in [
            "http:[::1]//[:::00]/t://127.0.0.1/c7/cb",
            "http:127.0.0.1/cb",
            "http:///127.0.0.1/cb",
            "http://@127.0.0.1/cb",
            "http://127.1/cb",
            "http://[0:0:0:0:0:0:0:1]/cb",
            "http://127.0.0.1:080/cb",
        ] {
            let err = RedirectUri::parse(bad).unwrap_err();
            assert!(err.contains("plainly"), "{bad}: {err}");
        }
        for ok in [
            "HTTP://LOCALHOST:3000/cb",
            "http://[::1]/cb",
            "http://127.0.0.1",
        ] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn loopback_port_may_vary_only_when_allowed() {
        let r = RedirectUri::parse("http://127.0.0.1/cb").unwrap();
        assert!(r.matches("http://127.0.0.1:53117/cb", true));
        assert!(!r.matches("http://127.0.0.1:53117/cb", false));
        assert!(!r.matches("http://127.0.0.1:53117/other", true));
        assert!(!r.matches("http://localhost:53117/cb", true));
    }
}
