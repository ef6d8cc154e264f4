//! The client's address for audit records and per-IP limits: the socket's
//! peer, unless that peer is a configured trusted proxy, in which case the
//! nearest untrusted hop in `X-Forwarded-For`.
//!
//! Walking the header from the right and stopping at the first address no
//! trusted proxy vouches for is what keeps a client from choosing its own
//! audit address: anything it prepends stays to the left of that hop.

use std::net::IpAddr;

use http::HeaderMap;

/// An address range like `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n`, or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as dual-stack sockets report) as
/// plain IPv4, so one rule covers both spellings.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address and, when it came from a trusted proxy's header,
/// the proxy (the socket's peer).
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> (IpAddr, Option<IpAddr>) {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return (peer, None);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    if client == peer {
        (peer, None)
    } else {
        (client, Some(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in xff {
            m.append("x-forwarded-for", v.parse().unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.1.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_header_ignored() {
        let (c, via) = resolve(ip("203.0.113.9"), &h(&["1.2.3.4"]), &[]);
        assert_eq!((c, via), (ip("203.0.113.9"), None));
    }

    #[test]
    fn trusted_proxy_gives_nearest_untrusted_hop() {
        let lb = [Cidr::parse("10.0.0.0/8").unwrap()];
        // A client-forged left part never wins over the hop the LB saw.
        let (c, via) = resolve(ip("10.0.0.5"), &h(&["6.6.6.6, 198.51.100.7"]), &lb);
        assert_eq!((c, via), (ip("198.51.100.7"), Some(ip("10.0.0.5"))));
        // Chained trusted proxies are skipped; separate headers join in order.
        let (c, _) = resolve(ip("10.0.0.5"), &h(&["198.51.100.7", "10.1.1.1"]), &lb);
        assert_eq!(c, ip("198.51.100.7"));
        // Garbage stops the walk at the last trusted hop.
        let (c, via) = resolve(ip("10.0.0.5"), &h(&["198.51.100.7, garbage"]), &lb);
        assert_eq!((c, via), (ip("10.0.0.5"), None));
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.5"), &h(&[]), &lb).0, ip("10.0.0.5"));
    }
}
