//! `X-Forwarded-For` chains behind `DZDESK_TRUSTED_PROXIES`
//! (`TrustedProxies::client_ip`): the address that rate limits, lockouts and
//! IP allowlists are about.
//!
//! Input: the trusted proxies setting, a newline, the socket peer (an
//! address; empty: unknown), then one `X-Forwarded-For` header per line.
//! Properties: the chosen client is the peer or an address of the chain,
//! and is the peer when the peer is untrusted; every hop right of the chosen
//! one was written by a trusted proxy; the walk stops only at an untrusted
//! address, an unreadable hop or the left end; what a client forges left of
//! its own address changes nothing; one header or several, the same answer.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use dzdesk_auth::domain::net::normalize;
use dzdesk_auth::domain::TrustedProxies;
use libfuzzer_sys::fuzz_target;

/// One hop as a proxy writes it: an address, or an address and port.
fn hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    let ip = raw
        .parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(normalize(ip))
}

fuzz_target!(|data: &[u8]| {
    // Header values are bytes; the service reads them lossily (AppState::client_ip).
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let Ok(proxies) = TrustedProxies::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let peer_raw = lines.next().unwrap_or_default();
    let headers: Vec<&str> = lines.collect();
    let peer: Option<SocketAddr> = peer_raw.parse::<SocketAddr>().ok().or_else(|| {
        peer_raw
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 40000))
    });
    let client = proxies.client_ip(peer, headers.iter().copied());
    let Some(peer) = peer.map(|p| normalize(p.ip())) else {
        assert_eq!(client, None, "no peer, no client");
        return;
    };
    let client = client.expect("a peer gives a client");
    if !proxies.trusts(peer) {
        assert_eq!(client, peer, "an untrusted peer's header changes nothing");
        return;
    }

    let hops: Vec<Option<IpAddr>> = headers.iter().flat_map(|h| h.split(',')).map(hop).collect();
    // The hops right of where the walk stopped: all readable, all proxies.
    let trusted_tail = hops
        .iter()
        .rev()
        .take_while(|h| h.is_some_and(|ip| proxies.trusts(ip)))
        .count();
    let stop = hops.len() - trusted_tail;
    let expected = match stop.checked_sub(1).map(|i| hops[i]) {
        // Stopped at an untrusted address: that is the client.
        Some(Some(untrusted)) => untrusted,
        // Stopped at an unreadable hop or the left end, after proxies
        // only: the last proxy read, else the peer.
        _ if trusted_tail > 0 => hops[stop].expect("a trusted hop is readable"),
        _ => peer,
    };
    assert_eq!(client, expected, "peer {peer}, hops {hops:?}");
    assert!(
        client == peer || hops.contains(&Some(client)),
        "{client} came from nowhere"
    );

    // Hops split over headers or joined in one: the same client.
    let joined = headers.join(",");
    assert_eq!(
        proxies.client_ip(
            Some(SocketAddr::new(peer, 1)),
            [joined.as_str()].into_iter()
        ),
        Some(client)
    );
    // What the client wrote left of its own address changes nothing.
    if let Some((forged, rest)) = headers.split_first() {
        let without = proxies.client_ip(Some(SocketAddr::new(peer, 1)), rest.iter().copied());
        if without.is_some_and(|c| !proxies.trusts(c)) {
            assert_eq!(
                without,
                Some(client),
                "forged {forged:?} changed the client"
            );
        }
    }
});
