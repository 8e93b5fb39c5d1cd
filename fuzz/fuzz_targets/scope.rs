//! Scope strings (RFC 6749 3.3), as `scope=` on the token endpoint, in
//! registration metadata and in every stored scope list.
//!
//! Input: two scope strings, separated by the first newline.
//! Properties: a string that parses prints back to a string that parses to
//! the same set (and that canonical string is a fixed point); the set holds
//! exactly the tokens of the string; `covers` and `within` agree with set
//! inclusion, `admin` covering everything.
#![no_main]

use dzdesk_auth::domain::{Scope, ScopeSet};
use libfuzzer_sys::fuzz_target;

/// The scopes named in `raw` by an independent reading of RFC 6749 3.3:
/// space-separated tokens, each one of ours.
fn tokens(raw: &str) -> Option<Vec<Scope>> {
    raw.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| Scope::ALL.into_iter().find(|s| s.as_str() == t))
        .collect()
}

fn check(raw: &str) -> Option<ScopeSet> {
    let parsed = ScopeSet::parse(raw);
    let named = tokens(raw);
    assert_eq!(
        parsed.is_ok(),
        named.is_some(),
        "accepted iff every token is a scope: {raw:?}"
    );
    let set = parsed.ok()?;
    let named = named?;
    for scope in Scope::ALL {
        assert_eq!(
            set.contains(scope),
            named.contains(&scope),
            "{raw:?}: {scope:?}"
        );
    }
    assert_eq!(set.is_empty(), named.is_empty());

    let printed = set.to_string();
    let reparsed = ScopeSet::parse(&printed).expect("the printed form parses");
    assert_eq!(reparsed, set, "{raw:?} printed as {printed:?}");
    assert_eq!(
        reparsed.to_string(),
        printed,
        "the canonical form is a fixed point"
    );
    assert_eq!(set.to_vec().join(" "), printed);
    assert!(!printed.starts_with(' ') && !printed.ends_with(' ') && !printed.contains("  "));
    Some(set)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let (Some(a), Some(b)) = (check(a), check(b)) else {
        return;
    };
    assert!(a.covers(&a) && a.covers(&ScopeSet::default()));
    let subset = a.iter().all(|s| b.contains(s));
    assert_eq!(
        b.covers(&a),
        b.contains(Scope::Admin) || subset,
        "{b} covers {a}"
    );
    let within = a.within(&b);
    assert!(b.covers(&within), "{a} within {b} = {within}");
    assert!(a.covers(&within), "within only narrows");
    if !b.contains(Scope::Admin) {
        for s in Scope::ALL {
            assert_eq!(within.contains(s), a.contains(s) && b.contains(s));
        }
    } else {
        assert_eq!(within, a);
    }
});
