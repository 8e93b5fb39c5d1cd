use std::fmt;

use super::RedirectUri;

/// A browser origin allowed to call us cross-origin (CORS): the ASCII
/// serialization a browser puts in the `Origin` header (WHATWG URL 4.4,
/// RFC 6454 6.2): `scheme://host[:port]`, lower case, default port left
/// out, no path. https, or http on a loopback host only, the rule of
/// redirect URIs (RFC 9700 2.1). Matched against the header by exact string
/// comparison: no wildcards, no suffix rules.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

/// At most this many origins per client.
pub const MAX_ORIGINS: usize = 20;

impl Origin {
    /// Parses an origin as an operator or a registrant writes it. It must
    /// already be in the serialized form (`https://app.example.com`, not
    /// `https://App.Example.com:443/`), so that what is stored is what
    /// browsers send.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let shown: String = raw.chars().take(80).collect();
        if raw.len() > 300 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "origin {shown:?} is too long or contains whitespace"
            ));
        }
        if raw.contains('*') {
            return Err(format!(
                "origin {shown:?}: no wildcards, exact origins only"
            ));
        }
        let url = url::Url::parse(raw).map_err(|_| {
            format!("origin {shown:?} is not scheme://host[:port] (for example https://app.example.com)")
        })?;
        let redirect = RedirectUri::parse(&format!("{}/", url.origin().ascii_serialization()))
            .map_err(|_| {
                format!("origin {shown:?} must use https (or http on loopback: 127.0.0.1, [::1], localhost)")
            })?;
        let origin = Self::of(&redirect)
            .ok_or_else(|| format!("origin {shown:?} is not scheme://host[:port]"))?;
        if origin.0 != raw {
            return Err(format!(
                "origin {shown:?} must be written as browsers send it: {}",
                origin.0
            ));
        }
        Ok(origin)
    }

    /// The origin of a registered redirect URI: the page that the
    /// authorization response lands on is the one that calls the token
    /// endpoint.
    pub fn of(uri: &RedirectUri) -> Option<Self> {
        let url = url::Url::parse(uri.as_str()).ok()?;
        match url.origin() {
            origin @ url::Origin::Tuple(..) => Some(Self(origin.ascii_serialization())),
            url::Origin::Opaque(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_taken_in_the_form_browsers_send() {
        for ok in [
            "https://app.example.com",
            "https://app.example.com:8443",
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
        ] {
            assert_eq!(Origin::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://App.example.com",
            "https://app.example.com:443",
            "http://app.example.com",
            "ftp://app.example.com",
            "*",
            "null",
            "https://*.example.com",
            "https://user@app.example.com",
            "",
            "https://app.example.com ",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_redirect_uri_gives_its_origin() {
        let uri = RedirectUri::parse("https://app.example.com:443/cb?x=1").unwrap();
        assert_eq!(
            Origin::of(&uri).unwrap().as_str(),
            "https://app.example.com"
        );
        let uri = RedirectUri::parse("http://localhost:3000/callback").unwrap();
        assert_eq!(Origin::of(&uri).unwrap().as_str(), "http://localhost:3000");
    }
}
