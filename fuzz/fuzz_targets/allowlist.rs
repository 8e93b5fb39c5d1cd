//! IP allowlist entries (`PUT /v1/ip-allowlist`, Settings > API) and the
//! stored list they become; the same entry parser reads
//! `DZDESK_TRUSTED_PROXIES`.
//!
//! Input: one entry per line.
//! Properties: a list that parses re-serialises (stored form and shown
//! entries) and re-parses equal; an accepted entry allows the address it
//! names and every address that shares its prefix (but the IPv4-mapped
//! ones of an IPv6 network: IPv4 clients only match IPv4 entries), and its
//! one-entry list refuses an address just outside the prefix; a non-empty list never allows
//! an unknown address; whatever is stored loads, and loads to a fixed point.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dzdesk_auth::domain::net::MAX_ENTRIES;
use dzdesk_auth::domain::IpAllowlist;
use libfuzzer_sys::fuzz_target;

/// An address as 128 bits, and its width (32 or 128).
fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn from_bits(value: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// What an entry says, read with the standard library alone: an address
/// and a prefix length (the full width for a bare address).
fn claim(entry: &str) -> Option<(IpAddr, u8)> {
    let entry = entry.trim();
    match entry.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            (len <= bits(addr).1).then_some((addr, len))
        }
        None => entry.parse().ok().map(|a| (a, bits(a).1)),
    }
}

/// `ip` with the bits after the first `len` replaced by those of `noise`.
fn with_host_bits(ip: IpAddr, len: u8, noise: u128) -> IpAddr {
    let (value, width) = bits(ip);
    let host = width - len;
    let mask = if host == 0 {
        0
    } else {
        !0u128 >> (128 - u32::from(host))
    };
    from_bits((value & !mask) | (noise & mask), width)
}

fn noise(seed: &str) -> u128 {
    // FNV-1a, widened: any spread of host bits will do.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in seed.bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whatever a row holds loads, and what it loads stores and loads the same.
    let loaded = IpAllowlist::from_stored(text);
    assert_eq!(
        IpAllowlist::from_stored(&loaded.to_stored()),
        loaded,
        "{text:?}"
    );
    // A row with entries never loads as "no restriction", parsable or not.
    if text.lines().any(|l| !l.trim().is_empty()) {
        assert!(!loaded.is_empty(), "{text:?} loads as no restriction");
    }

    let entries: Vec<&str> = text.split('\n').collect();
    let Ok(list) = IpAllowlist::parse_entries(&entries) else {
        return;
    };
    assert!(entries.len() <= MAX_ENTRIES);
    assert_eq!(
        IpAllowlist::from_stored(&list.to_stored()),
        list,
        "stored and loaded"
    );
    let shown = list.entries();
    assert_eq!(
        IpAllowlist::parse_entries(&shown).as_ref(),
        Ok(&list),
        "shown and re-parsed"
    );
    assert_eq!(
        IpAllowlist::parse_entries(&shown).map(|l| l.entries()),
        Ok(shown.clone())
    );
    assert!(shown.len() <= entries.len());
    assert!(
        !list.is_empty() && !list.allows(None),
        "an unknown address is never allowed"
    );

    for entry in &entries {
        let Some((addr, len)) = claim(entry) else {
            continue;
        };
        let one = IpAllowlist::parse_entries(&[entry]).expect("an entry of a valid list");
        assert!(
            one.allows(Some(addr)),
            "{entry:?} does not allow its own address"
        );
        assert!(list.allows(Some(addr)));
        let inside = with_host_bits(addr, len, noise(entry));
        if addr.to_canonical().is_ipv6() && inside.to_canonical().is_ipv4() {
            // An IPv6 network that spans the IPv4-mapped range never matches
            // an IPv4 client (clients are normalised): fail closed, never
            // widen to IPv4 what was written as IPv6.
            assert!(
                !one.allows(Some(inside)),
                "IPv6 {entry:?} allows IPv4 {inside}"
            );
        } else {
            assert!(
                list.allows(Some(inside)),
                "{entry:?} does not allow {inside}"
            );
        }
        if len > 0 {
            let (value, width) = bits(addr);
            let outside = from_bits(value ^ (1u128 << (width - len)), width);
            assert!(
                !one.allows(Some(outside)),
                "{entry:?} allows {outside}, outside its prefix"
            );
        }
    }
});
