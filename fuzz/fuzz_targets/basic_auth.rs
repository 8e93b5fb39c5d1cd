//! The `Authorization: Basic` header of the token, introspection and
//! revocation endpoints (RFC 6749 2.3.1: `client_secret_basic`, id and
//! secret form-urlencoded, then base64 per RFC 7617).
//!
//! Input: the header value, a newline, a client id, a newline, a secret;
//! anything after a fourth line is the form body sent with the header.
//! Properties: credentials that parse re-encode to a header that parses to
//! the same pair; any id and secret encoded as a client must encode them
//! parse back to themselves; a header never mixes with `client_secret` in
//! the body, and a body `client_id` must be the header's.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dzdesk_auth::oauth::token::{client_auth, ClientAuth, FormParams};
use libfuzzer_sys::fuzz_target;

/// What a client library sends (RFC 6749 2.3.1, RFC 7617 2).
fn encode(id: &str, secret: &str) -> String {
    let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", form(id), form(secret)))
    )
}

fn basic_pair(auth: &ClientAuth) -> Option<(&str, &str)> {
    match auth {
        ClientAuth::Basic { id, secret } => Some((id, secret)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let header = lines.next().unwrap_or_default();
    let id = lines.next().unwrap_or_default();
    let secret = lines.next().unwrap_or_default();
    let body = lines.next().unwrap_or_default();
    let none = FormParams::default();

    // Whatever arrives: Basic or an error, never another method.
    match client_auth(Some(header), &none) {
        Ok(auth) => {
            let (id, secret) = basic_pair(&auth).expect("a header gives Basic credentials");
            let again = client_auth(Some(&encode(id, secret)), &none)
                .unwrap_or_else(|e| panic!("{header:?} re-encoded does not parse: {e:?}"));
            assert_eq!(again, auth, "{header:?} re-encoded");
        }
        Err(e) => assert_eq!(e.code(), "invalid_client", "{header:?}"),
    }

    // What a client sends parses back to what it meant.
    let sent = encode(id, secret);
    let parsed = client_auth(Some(&sent), &none).expect("an encoded pair parses");
    assert_eq!(basic_pair(&parsed), Some((id, secret)), "{sent:?}");
    assert!(parsed.used_basic() && parsed.client_id() == id);

    // With a body: one method only, one client only (RFC 6749 2.3).
    let Ok(params) = FormParams::parse(body.as_bytes()) else {
        return;
    };
    let with_body = client_auth(Some(&sent), &params);
    let body_id = params.get("client_id");
    if params.get("client_secret").is_some() || body_id.is_some_and(|b| b != id) {
        assert_eq!(
            with_body.map_err(|e| e.code()),
            Err("invalid_request"),
            "{body:?}"
        );
    } else {
        assert_eq!(with_body.ok(), Some(parsed), "{body:?}");
    }
});
