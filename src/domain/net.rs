//! Client addresses: the per-account IP allowlist (seed: "IP Allowlisting
//! (Optional) ... Only listed IPs can access") and the trusted reverse
//! proxies whose `X-Forwarded-For` is believed. Plain values: no I/O.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Entries an account may list at most.
pub const MAX_ENTRIES: usize = 100;

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address it
/// carries: a dual-stack listener reports IPv4 peers that way.
pub fn normalize(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The allowed networks of one account. Empty: no restriction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Validates what a user submitted: each entry an IPv4/IPv6 address or
    /// CIDR, at most [`MAX_ENTRIES`]. The first invalid entry is named in
    /// the error; nothing is partly accepted. Addresses become /32 or /128
    /// networks, host bits are cleared, duplicates count once, order is kept.
    pub fn parse_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        if entries.len() > MAX_ENTRIES {
            return Err(format!(
                "entries: at most {MAX_ENTRIES} entries are allowed, got {}",
                entries.len()
            ));
        }
        let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
        for entry in entries {
            let net = parse_entry(entry.as_ref())?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self(nets))
    }

    /// Parses the stored form (newline-separated, written by
    /// [`IpAllowlist::to_stored`]). A line that does not parse (edited by
    /// hand) is skipped rather than widening the list to "anything": an
    /// unparsable list with nothing left allows nothing.
    pub fn from_stored(stored: &str) -> Self {
        let lines: Vec<&str> = stored.lines().filter(|l| !l.trim().is_empty()).collect();
        let nets: Vec<IpNet> = lines.iter().filter_map(|l| parse_entry(l).ok()).collect();
        if nets.is_empty() && !lines.is_empty() {
            // Deny all. The discard-only prefix (RFC 6666), which no client
            // comes from, keeps the list non-empty without matching anyone.
            let discard = IpAddr::V6(std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1));
            return Self(vec![IpNet::from(discard)]);
        }
        Self(nets)
    }

    pub fn to_stored(&self) -> String {
        self.entries().join("\n")
    }

    /// The entries in their canonical form (`203.0.113.7/32`).
    pub fn entries(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` may use the account's API keys: always when the list is
    /// empty; otherwise only from a listed network. An unknown address is
    /// never allowed by a non-empty list.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(ip) = ip.map(normalize) else {
            return false;
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

fn parse_entry(raw: &str) -> Result<IpNet, String> {
    let entry = raw.trim();
    let invalid = || {
        let shown: String = entry.chars().take(60).collect();
        format!("entries: '{shown}' is not an IPv4/IPv6 address or CIDR")
    };
    if entry.contains('/') {
        let net: IpNet = entry.parse().map_err(|_| invalid())?;
        // A mapped IPv4 network in IPv6 form would never match the
        // normalised (IPv4) client address. Below /96 it is an IPv6 network
        // that spans all of the mapped range, and an IPv6 network never
        // matches an IPv4 client: refused, rather than accepted naming an
        // address it cannot match (or widened to every IPv4 address).
        let net = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| invalid())?
                }
                Some(_) => {
                    let shown: String = entry.chars().take(60).collect();
                    return Err(format!(
                        "entries: '{shown}' is an IPv4 address in IPv6 form: its prefix must be /96 or longer (or write the IPv4 network)"
                    ));
                }
                None => net,
            },
            v4 => v4,
        };
        Ok(net.trunc())
    } else {
        let ip: IpAddr = entry.parse().map_err(|_| invalid())?;
        Ok(IpNet::from(normalize(ip)))
    }
}
/// Networks whose `X-Forwarded-For` is believed (`DZDESK_TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma- or space-separated addresses or CIDRs.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split([',', ' '])
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                parse_entry(s).map_err(|_| format!("'{}' is not an address or CIDR", s.trim()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (normalised, see [`normalize`]) is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the socket peer, unless the peer is a trusted
    /// proxy; then `X-Forwarded-For` (all its headers, in order) read from
    /// the right, skipping trusted proxies: the first address that is not
    /// one is the client. Whatever an untrusted peer sends in the header
    /// changes nothing. An unreadable entry ends the walk at the last
    /// trusted hop (everything left of it was written by the client).
    pub fn client_ip<'a>(
        &self,
        peer: Option<SocketAddr>,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let peer = normalize(peer?.ip());
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|h| h.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

impl TrustedProxies {
    /// Whether a request that reached this process over plain TCP came to
    /// a TLS-terminating proxy over https: only if the socket peer is a
    /// trusted proxy and the last `X-Forwarded-Proto` value (the one the
    /// nearest proxy wrote) is `https`. From anyone else the header is
    /// ignored, as `X-Forwarded-For` is: a client could write it.
    pub fn forwarded_https<'a>(
        &self,
        peer: Option<SocketAddr>,
        forwarded_proto: impl Iterator<Item = &'a str>,
    ) -> bool {
        let Some(peer) = peer else {
            return false;
        };
        if !self.trusts(normalize(peer.ip())) {
            return false;
        }
        forwarded_proto
            .flat_map(|h| h.split(','))
            .last()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(normalize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_are_addresses_or_cidrs_in_canonical_form() {
        let list = IpAllowlist::parse_entries(&["203.0.113.7", "198.51.100.9/24", "2001:db8::/32"])
            .unwrap();
        assert_eq!(
            list.entries(),
            ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"]
        );
        assert_eq!(IpAllowlist::from_stored(&list.to_stored()), list);
    }

    #[test]
    fn an_invalid_entry_is_named() {
        for bad in [
            "10.0.0.300",
            "10.0.0.0/33",
            "example.com",
            "",
            "2001:db8::/129",
        ] {
            let err = IpAllowlist::parse_entries(&["10.0.0.1", bad]).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("10.0.{i}.1")).collect();
        assert!(IpAllowlist::parse_entries(&many).is_err());
    }

    #[test]
    fn empty_allows_everyone_and_a_list_only_its_networks() {
        assert!(IpAllowlist::default().allows(Some(ip("192.0.2.1"))));
        assert!(IpAllowlist::default().allows(None));
        let list = IpAllowlist::parse_entries(&["198.51.100.0/24", "2001:db8::/32"]).unwrap();
        assert!(list.allows(Some(ip("198.51.100.200"))));
        assert!(list.allows(Some(ip("::ffff:198.51.100.7"))));
        assert!(list.allows(Some(ip("2001:db8:1::5"))));
        assert!(!list.allows(Some(ip("198.51.101.1"))));
        assert!(!list.allows(None));
    }

    #[test]
    fn mapped_ipv4_entries_match_ipv4_clients() {
        let list =
            IpAllowlist::parse_entries(&["::ffff:127.0.0.2", "::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(list.entries(), ["127.0.0.2/32", "10.0.0.0/8"]);
        assert!(list.allows(Some(ip("127.0.0.2"))));
    }

    #[test]
    fn a_mapped_address_with_a_prefix_shorter_than_96_is_refused() {
        // Found by fuzz/allowlist: `::ffff:10.0.0.0/52` was accepted, and
        // allowed neither 10.0.0.0 nor any IPv4 client.
        for bad in ["::ffff:10.0.0.0/52", "::ffff:10.0.0.0/95", "::ffff:0:0/0"] {
            let err = IpAllowlist::parse_entries(&[bad]).unwrap_err();
            assert!(
                err.contains(&format!("'{bad}'")) && err.contains("/96"),
                "{err}"
            );
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        // An IPv6 network over the mapped range still is one, for IPv6 only.
        let v6 = IpAllowlist::parse_entries(&["::/64"]).unwrap();
        assert!(v6.allows(Some(ip("::1"))));
        assert!(!v6.allows(Some(ip("::ffff:10.0.0.1"))));
        let mapped = IpAllowlist::parse_entries(&["::ffff:10.0.0.0/96"]).unwrap();
        assert_eq!(mapped.entries(), ["0.0.0.0/0"]);
    }

    #[test]
    fn a_stored_list_that_no_longer_parses_allows_nobody() {
        assert!(!IpAllowlist::from_stored("garbage").allows(Some(ip("192.0.2.1"))));
        assert!(IpAllowlist::from_stored("").allows(Some(ip("192.0.2.1"))));
    }

    fn sock(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip(s), 40000))
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let got = proxies.client_ip(sock("192.0.2.1"), ["203.0.113.7"].into_iter());
        assert_eq!(got, Some(ip("192.0.2.1")));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(sock("::ffff:192.0.2.1"), ["203.0.113.7"].into_iter()),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.2").unwrap();
        // The client forged the left-most entry; the proxies appended the rest.
        let got = proxies.client_ip(
            sock("127.0.0.2"),
            ["1.1.1.1, 203.0.113.7", "10.1.2.3"].into_iter(),
        );
        assert_eq!(got, Some(ip("203.0.113.7")));
        // Ports and mapped addresses.
        let got = proxies.client_ip(sock("10.0.0.1"), ["[::ffff:198.51.100.1]:5000"].into_iter());
        assert_eq!(got, Some(ip("198.51.100.1")));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_ip(sock("10.0.0.1"), std::iter::empty()),
            Some(ip("10.0.0.1"))
        );
        // Garbage stops the walk at the last trusted hop.
        let got = proxies.client_ip(sock("10.0.0.1"), ["evil, 10.9.9.9"].into_iter());
        assert_eq!(got, Some(ip("10.9.9.9")));
    }

    #[test]
    fn trusted_proxies_refuse_garbage() {
        assert!(TrustedProxies::parse("10.0.0.0/8 nonsense").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
    }

    #[test]
    fn forwarded_proto_counts_only_from_a_trusted_peer_and_only_its_last_value() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let https =
            |peer, values: &[&str]| proxies.forwarded_https(Some(peer), values.iter().copied());
        assert!(https(proxy, &["https"]));
        assert!(https(proxy, &["HTTPS "]));
        assert!(!https(proxy, &[]));
        assert!(!https(proxy, &["http"]));
        // The nearest proxy's value is the last one.
        assert!(!https(proxy, &["https, http"]));
        assert!(!https(proxy, &["https", "http"]));
        assert!(https(proxy, &["http, https"]));
        // An unreadable last value (the caller passes it as "") is not https.
        assert!(!https(proxy, &["https", ""]));
        // An untrusted peer's claim, and no peer at all, count for nothing.
        assert!(!https(stranger, &["https"]));
        assert!(!proxies.forwarded_https(None, ["https"].into_iter()));
        // IPv4-mapped IPv6 peers are the IPv4 address.
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        assert!(https(mapped, &["https"]));
        assert!(!TrustedProxies::default().forwarded_https(Some(proxy), ["https"].into_iter()));
    }
}
