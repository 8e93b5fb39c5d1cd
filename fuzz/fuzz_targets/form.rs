//! `application/x-www-form-urlencoded` bodies of `/oauth/token`,
//! `/oauth/introspect` and `/oauth/revoke` (`FormParams::parse`), bytes as
//! they arrive: repeated keys, `+`, broken and overlong percent escapes,
//! invalid UTF-8.
//!
//! Properties, against an independent decoder written from the WHATWG
//! urlencoded parser and RFC 6749 3.1/3.2: a body is refused exactly when a
//! key or value is not UTF-8 once decoded, or a key with a value comes
//! twice (spelled alike or not); otherwise the parameters are exactly the
//! pairs with a value, decoded. No replacement character is ever made up.
//! What parses re-encodes to a body that parses to the same parameters.
#![no_main]

use std::collections::BTreeMap;

use dzdesk_auth::oauth::token::FormParams;
use libfuzzer_sys::fuzz_target;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `+` is a space, `%XY` the byte XY, anything else (a lone `%` too) itself.
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                raw.get(i + 1).and_then(|&b| hex(b)),
                raw.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `Err(())`: the body must be refused.
fn expected(body: &[u8]) -> Result<BTreeMap<String, String>, ()> {
    let mut params = BTreeMap::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let (k, v) = (decode(k).ok_or(())?, decode(v).ok_or(())?);
        if v.is_empty() {
            continue;
        }
        if params.insert(k, v).is_some() {
            return Err(());
        }
    }
    Ok(params)
}

fn parsed(params: &FormParams) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fuzz_target!(|body: &[u8]| {
    let got = FormParams::parse(body);
    let want = expected(body);
    match (&got, &want) {
        (Ok(params), Ok(want)) => assert_eq!(&parsed(params), want, "{body:?}"),
        (Err(e), Err(())) => assert_eq!(e.code(), "invalid_request"),
        _ => panic!("{body:?}: parsed {got:?}, expected {want:?}"),
    }
    let Ok(params) = got else {
        return;
    };
    for (k, v) in params.iter() {
        assert!(!v.is_empty(), "a parameter without a value is omitted");
        assert_eq!(params.get(k), Some(v));
    }
    let mut again = url::form_urlencoded::Serializer::new(String::new());
    again.extend_pairs(params.iter());
    let again = again.finish();
    let reparsed = FormParams::parse(again.as_bytes())
        .unwrap_or_else(|e| panic!("{body:?} re-encoded as {again:?}: {e:?}"));
    assert_eq!(
        parsed(&reparsed),
        parsed(&params),
        "{body:?} re-encoded as {again:?}"
    );
});
