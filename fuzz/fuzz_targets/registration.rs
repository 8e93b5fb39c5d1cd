//! Client metadata JSON of `POST /oauth/register` and `PUT
//! /oauth/register/{id}` (RFC 7591 2, RFC 7592 2.2): decoded by serde, then
//! `registration::validate` against the registering credential's scopes.
//!
//! Input: the JSON body (starting with `{`), or bytes that choose each
//! field from the values the validator knows and some it must refuse. It is
//! validated under two ceilings, `admin` (which covers everything) and
//! `requests:read requests:write`.
//! Properties: accepted metadata, written back as the metadata of the
//! client it makes (as a client reads it and sends it again on update),
//! re-validates to the same client; what is accepted keeps every rule:
//! scope within the ceiling and not empty, grant types the ones asked for
//! (or the RFC 7591 default), redirect URIs present for the code grant and
//! valid, public clients without client_credentials and with PKCE.
#![no_main]

use dzdesk_auth::domain::{GrantType, RedirectUri, ScopeSet};
use dzdesk_auth::oauth::clients::NewClient;
use dzdesk_auth::oauth::registration::{validate, ClientMetadata};
use libfuzzer_sys::fuzz_target;

/// The metadata that describes `client` (RFC 7591 3.2.1's response fields).
fn metadata_of(client: &NewClient) -> serde_json::Value {
    let code = client.grant_types.contains(&GrantType::AuthorizationCode);
    serde_json::json!({
        "client_name": client.name,
        "redirect_uris": client.redirect_uris.iter().map(RedirectUri::as_str).collect::<Vec<_>>(),
        "grant_types": client.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "response_types": if code { vec!["code"] } else { vec![] },
        "token_endpoint_auth_method": if client.public { "none" } else { "client_secret_basic" },
        "scope": client.scopes.to_string(),
    })
}

fn same(a: &NewClient, b: &NewClient) -> bool {
    (
        &a.name,
        a.public,
        &a.redirect_uris,
        a.scopes,
        &a.grant_types,
        a.require_pkce,
        a.dynamic,
    ) == (
        &b.name,
        b.public,
        &b.redirect_uris,
        b.scopes,
        &b.grant_types,
        b.require_pkce,
        b.dynamic,
    )
}

fn check(meta: &ClientMetadata, ceiling: &ScopeSet) {
    let Ok(client) = validate(meta, ceiling) else {
        return;
    };
    assert!(
        !client.scopes.is_empty() && ceiling.covers(&client.scopes),
        "{meta:?}"
    );
    if let Some(scope) = &meta.scope {
        assert_eq!(Ok(client.scopes), ScopeSet::parse(scope));
    }
    let asked: Vec<GrantType> = match &meta.grant_types {
        Some(asked) => asked
            .iter()
            .map(|g| GrantType::parse(g).expect("accepted grant types are ours"))
            .collect(),
        None => vec![GrantType::AuthorizationCode],
    };
    for grant in [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ] {
        assert_eq!(
            client.grant_types.contains(&grant),
            asked.contains(&grant),
            "{meta:?} asked {asked:?}, registered {:?}",
            client.grant_types
        );
    }
    let code = client.grant_types.contains(&GrantType::AuthorizationCode);
    let response_code = meta
        .response_types
        .as_ref()
        .map_or(code, |r| r.iter().any(|t| t == "code"));
    assert_eq!(
        code, response_code,
        "grant_types and response_types agree: {meta:?}"
    );
    assert!(!code || !client.redirect_uris.is_empty());
    for uri in &client.redirect_uris {
        assert!(!uri.as_str().contains('*'));
        assert_eq!(RedirectUri::parse(uri.as_str()).as_ref(), Ok(uri));
    }
    if client.public {
        assert!(client.require_pkce && !client.grant_types.contains(&GrantType::ClientCredentials));
    }
    assert!(client.dynamic && !client.can_introspect && client.registered_by.is_none());
    let name = client.name.as_str();
    assert!(!name.is_empty() && name == name.trim() && name.chars().count() <= 100);

    let written = metadata_of(&client);
    let read: ClientMetadata =
        serde_json::from_value(written.clone()).expect("our metadata decodes");
    let again = validate(&read, ceiling).unwrap_or_else(|e| {
        panic!("{meta:?} registered as {written}, which does not validate: {e}")
    });
    assert!(
        same(&again, &client),
        "{meta:?} registered as {client:?}, re-validated as {again:?}"
    );
}

/// The input's bytes as choices.
struct Choices<'a>(std::slice::Iter<'a, u8>);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn pick<'v>(&mut self, vocabulary: &[&'v str]) -> &'v str {
        vocabulary[usize::from(self.byte()) % vocabulary.len()]
    }

    /// A field absent, null, empty, or a value: `None` when absent.
    fn field(&mut self, list: bool, vocabulary: &[&str]) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match self.byte() % 4 {
            0 => return None,
            1 => Value::Null,
            2 if list => Value::Array(Vec::new()),
            2 => Value::String(String::new()),
            _ if list => {
                let n = 1 + self.byte() % 3;
                Value::Array((0..n).map(|_| self.pick(vocabulary).into()).collect())
            }
            _ => self.pick(vocabulary).into(),
        })
    }
}

/// Metadata built from choices (inputs that do not start with `{`): each
/// field absent, null, empty, or made of values the validator knows and
/// some it must refuse, so that combinations that mutated JSON text rarely
/// spells (an empty list, a public client_credentials client) come soon.
fn generated(data: &[u8]) -> serde_json::Value {
    let long_name = "n".repeat(101);
    let fields: [(&str, bool, Vec<&str>); 7] = [
        (
            "redirect_uris",
            true,
            vec![
                "https://app.example.com/cb",
                "http://127.0.0.1/cb",
                "http://[::1]:8080/cb?x=1",
                "http://localhost:3000/cb",
                "https://*.example.com/cb",
                "http://app.example.com/cb",
                "https://app.example.com/cb#f",
                "",
            ],
        ),
        (
            "grant_types",
            true,
            vec![
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "password",
                "",
            ],
        ),
        ("response_types", true, vec!["code", "token", ""]),
        (
            "token_endpoint_auth_method",
            false,
            vec![
                "client_secret_basic",
                "client_secret_post",
                "none",
                "private_key_jwt",
            ],
        ),
        (
            "client_name",
            false,
            vec!["App", "  padded  ", "bell\u{7}", "  ", &long_name],
        ),
        (
            "scope",
            false,
            vec![
                "requests:read",
                "requests:read requests:write",
                "admin",
                "users:write users:read",
                " ",
                "openid",
            ],
        ),
        ("client_id", false, vec!["client_1"]),
    ];
    let mut choices = Choices(data.iter());
    let mut object = serde_json::Map::new();
    for (name, list, vocabulary) in &fields {
        if let Some(value) = choices.field(*list, vocabulary) {
            object.insert((*name).to_owned(), value);
        }
    }
    serde_json::Value::Object(object)
}

fuzz_target!(|data: &[u8]| {
    let meta = if data.first() == Some(&b'{') {
        serde_json::from_slice::<ClientMetadata>(data)
    } else {
        serde_json::from_value::<ClientMetadata>(generated(data))
    };
    let Ok(meta) = meta else {
        return;
    };
    for ceiling in ["admin", "requests:read requests:write"] {
        check(&meta, &ScopeSet::parse(ceiling).expect("a ceiling"));
    }
});
