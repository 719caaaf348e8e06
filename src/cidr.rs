//! Client addresses as the proxy counts them: CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) and
//! whether an address is inside one, and [`network_of`], the key under which a client is limited
//! and throttled (an IPv4 address, or the /64 of an IPv6 address: one subscriber's whole prefix).
//! Pure.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// An address block: `address/prefix`, or a bare address (a block of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address (host bits cleared).
    base: IpAddr,
    prefix: u8,
}

/// Why a CIDR block did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{text:?}: prefix length must be 0..={max}")]
    Prefix { text: String, max: u8 },
    #[error("{0:?} has host bits set after the prefix (write the block's first address)")]
    HostBits(String),
}

impl Cidr {
    /// True when `ip` is inside the block. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as
    /// a dual-stack socket reports an IPv4 client) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.base.is_ipv4() && mask(bits(ip), self.prefix) == bits(self.base)
    }
}

/// An address as 128 bits, left-aligned (an IPv4 address in the top 32), so one prefix mask
/// serves both families.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The top `prefix` bits of `bits`.
fn mask(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(text.to_string()))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or(CidrError::Prefix {
                        text: text.to_string(),
                        max,
                    })?
            }
        };
        if mask(bits(base), prefix) != bits(base) {
            return Err(CidrError::HostBits(text.to_string()));
        }
        // `::ffff:10.0.0.0/104` is the IPv4 block it maps (addresses are compared canonical).
        Ok(match base.to_canonical() {
            IpAddr::V4(v4) if base.is_ipv6() && prefix >= 96 => Cidr {
                base: IpAddr::V4(v4),
                prefix: prefix - 96,
            },
            _ => Cidr { base, prefix },
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// True when `ip` is inside any of `blocks`.
pub fn any_contains(blocks: &[Cidr], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

/// The key a client is counted under: its IPv4 address (an IPv4-mapped IPv6 address counts as
/// IPv4), or for IPv6 its /64 with the interface bits cleared, since one subscriber or host
/// usually holds a whole /64 and can pick any address in it.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask(u128::from(v6), 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        for (block, inside, outside) in [
            ("10.0.0.0/8", "10.255.1.2", "11.0.0.1"),
            ("127.0.0.1/32", "127.0.0.1", "127.0.0.2"),
            ("127.0.0.1", "127.0.0.1", "127.0.0.2"),
            ("192.0.2.128/25", "192.0.2.200", "192.0.2.127"),
            ("0.0.0.0/0", "203.0.113.9", "2001:db8::1"),
            ("10.0.0.0/8", "::ffff:10.1.2.3", "::ffff:11.1.2.3"),
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::1"),
            (
                "2001:db8:1:2::/64",
                "2001:db8:1:2:ffff::9",
                "2001:db8:1:3::1",
            ),
            ("::1", "::1", "::2"),
            ("::/0", "2001:db8::1", "192.0.2.1"),
            ("::ffff:0:0/96", "::ffff:1.2.3.4", "2001:db8::1"),
            ("::ffff:10.0.0.0/104", "10.9.9.9", "11.0.0.1"),
        ] {
            let c: Cidr = block.parse().unwrap();
            assert!(c.contains(ip(inside)), "{block} ∋ {inside}");
            assert!(!c.contains(ip(outside)), "{block} ∌ {outside}");
        }
    }

    #[test]
    fn bad_blocks_are_refused() {
        for (text, err) in [
            ("10.0.0.0/33", "prefix"),
            ("2001:db8::/129", "prefix"),
            ("10.0.0.0/", "prefix"),
            ("10.0.0.0/-1", "prefix"),
            ("10.0.0.1/8", "host bits"),
            ("2001:db8::1/64", "host bits"),
            ("localhost", "not an IP"),
            ("", "not an IP"),
            ("10.0.0.0/8/8", "prefix"),
        ] {
            let e = text.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(err), "{text}: {e}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "2001:db8::5".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::5/128"
        );
    }

    #[test]
    fn clients_are_counted_by_address_or_slash_64() {
        for (a, b, same) in [
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("::ffff:192.0.2.1", "192.0.2.1", true),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.2", false),
        ] {
            assert_eq!(network_of(ip(a)) == network_of(ip(b)), same, "{a} {b}");
        }
        assert_eq!(network_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(network_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
