//! Redirect URIs: registration (`RedirectUri::parse`) and the authorization
//! request's `redirect_uri` against a registered one (`matches`).
//!
//! Input: the registered URI, a newline, the requested one (absent: the
//! registered one with another port, set by `url` and spliced into the
//! text); the last byte picks the port and where it is spliced.
//! Properties: a URI that parses keeps its exact text and re-parses equal;
//! it always matches itself; without the loopback exception matching is
//! exact string equality; and a requested URI that matches is itself a
//! valid redirect URI that compares equal to the registered one after URL
//! normalisation, but for the port, and only for loopback http.
#![no_main]

use dzdesk_auth::domain::RedirectUri;
use libfuzzer_sys::fuzz_target;

/// `url` with no port: what is left to compare once the port may vary.
fn without_port(raw: &str) -> url::Url {
    let mut url = url::Url::parse(raw).expect("a matched redirect URI is a URL");
    url.set_port(None).expect("http URLs have ports");
    url
}

fn check_match(registered: &RedirectUri, requested: &str) {
    for allow_any_port in [false, true] {
        if !registered.matches(requested, allow_any_port) {
            continue;
        }
        if requested == registered.as_str() {
            continue;
        }
        assert!(
            allow_any_port && registered.is_loopback_http(),
            "{registered:?} matched {requested:?} by more than string equality"
        );
        let parsed = RedirectUri::parse(requested).unwrap_or_else(|e| {
            panic!("{requested:?} matched {registered:?} but does not parse: {e}")
        });
        assert!(parsed.is_loopback_http());
        assert_eq!(
            without_port(registered.as_str()),
            without_port(requested),
            "{requested:?} matched {registered:?} but is another URL"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&port_byte, data)) = data.split_last() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, requested) = match text.split_once('\n') {
        Some((raw, requested)) => (raw, Some(requested)),
        None => (text, None),
    };
    let Ok(registered) = RedirectUri::parse(raw) else {
        return;
    };
    assert_eq!(
        registered.as_str(),
        raw,
        "the registered text is kept as sent"
    );
    assert_eq!(
        RedirectUri::parse(registered.as_str()).as_ref(),
        Ok(&registered)
    );
    assert!(registered.matches(raw, false) && registered.matches(raw, true));
    let url = url::Url::parse(raw).expect("accepted URIs are URLs");
    assert!(url.fragment().is_none() && url.username().is_empty() && url.password().is_none());
    assert!(matches!(url.scheme(), "https" | "http"));
    assert_eq!(registered.is_loopback_http(), url.scheme() == "http");

    match requested {
        Some(requested) => check_match(&registered, requested),
        None => {
            let port = 1024 + u16::from(port_byte);
            // The registered URI with another port, spelled as `url` does.
            let mut other = url.clone();
            if other.set_port(Some(port)).is_ok() {
                check_match(&registered, other.as_str());
            }
            // And spliced into its text wherever the byte says: the port
            // exception must find the authority where a browser does.
            let at = usize::from(port_byte) % (raw.len() + 1);
            if raw.is_char_boundary(at) {
                check_match(&registered, &format!("{}:{port}{}", &raw[..at], &raw[at..]));
            }
        }
    }
});
