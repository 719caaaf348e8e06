//! A sans-I/O parser for the PROXY protocol (HAProxy's, v1 text and v2 binary) that load
//! balancers put in front of a connection to tell the client's real address. [`parse`] says
//! "need more", "header of N bytes" or "invalid"; [`bytes_needed`] tells a reader how much it may
//! read next without reading past the header (the client's own bytes follow it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Largest v2 address block (addresses and TLVs) accepted. The format allows 65535 bytes; real
/// balancers send a few hundred at most.
pub const V2_MAX_ADDRESS_LEN: usize = 2048;
/// Shortest possible header (`PROXY UNKNOWN\r\n`).
const MIN_HEADER: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: v1 `TCP4`/`TCP6`, or v2 `PROXY` over `AF_INET`/`AF_INET6` STREAM.
    Proxied {
        version: Version,
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// No client address: v2 `LOCAL` (the balancer's own health check), v1 `UNKNOWN`, v2 with an
    /// unspecified or unix address family. The socket's own addresses stay in force.
    Local { version: Version },
}

impl Header {
    /// The client's address when the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxied { source, .. } => Some(*source),
            Header::Local { .. } => None,
        }
    }
}

/// Why bytes are not a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 header longer than {V1_MAX} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    #[error("unsupported PROXY v2 version {0}")]
    V2Version(u8),
    #[error("unsupported PROXY v2 command {0}")]
    V2Command(u8),
    #[error("PROXY v2 address block of {0} bytes is too long")]
    V2TooLong(usize),
    #[error("PROXY v2 address block too short for its family")]
    V2Truncated,
    #[error("unsupported PROXY v2 family/transport 0x{0:02x}")]
    V2Family(u8),
}

/// Parses the header at the start of `buf`: `Ok(None)` when `buf` is a valid beginning of a
/// header but incomplete, `Ok(Some((header, consumed)))` when complete (the bytes after
/// `consumed` belong to the client), `Err` when `buf` cannot start a header.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return parse_v1(buf);
    }
    Err(Error::NotProxy)
}

/// How many more bytes a reader may read from the stream without going past the header, given
/// that `buf` (all read so far) made [`parse`] return `Ok(None)`. Always at least 1.
pub fn bytes_needed(buf: &[u8]) -> usize {
    if buf.len() < MIN_HEADER {
        return MIN_HEADER - buf.len();
    }
    if !buf.starts_with(&V2_SIGNATURE) {
        // v1: up to the CRLF, which may come with any byte.
        return 1;
    }
    let total = match buf.get(14..16) {
        Some(len) => 16 + usize::from(u16::from_be_bytes([len[0], len[1]])),
        None => 16,
    };
    total.saturating_sub(buf.len()).max(1)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let scan = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = scan.iter().position(|&b| b == b'\r') else {
        if let Some(&bad) = scan.iter().find(|&&b| !(b == b' ' || b.is_ascii_graphic())) {
            return Err(if bad == b'\n' {
                Error::V1Malformed("bare LF")
            } else {
                Error::V1Malformed("not printable ASCII")
            });
        }
        if buf.len() >= V1_MAX {
            return Err(Error::V1TooLong);
        }
        return Ok(None);
    };
    let line = &scan[..cr];
    if line.iter().any(|&b| !(b == b' ' || b.is_ascii_graphic())) {
        return Err(Error::V1Malformed("not printable ASCII"));
    }
    match scan.get(cr + 1) {
        None if cr + 1 >= V1_MAX => return Err(Error::V1TooLong),
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(Error::V1Malformed("CR without LF")),
    }
    let consumed = cr + 2;
    // Printable ASCII only, so this cannot fail.
    let text = std::str::from_utf8(line).map_err(|_| Error::V1Malformed("not ASCII"))?;
    let mut fields = text.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(Error::V1Malformed("no PROXY keyword"));
    }
    let family = fields.next().ok_or(Error::V1Malformed("no protocol"))?;
    let v6 = match family {
        // Whatever follows UNKNOWN is ignored (the specification says so).
        "UNKNOWN" => {
            return Ok(Some((
                Header::Local {
                    version: Version::V1,
                },
                consumed,
            )));
        }
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Error::V1Malformed("unknown protocol")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Error::V1Malformed("wrong number of fields"));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| Error::V1Malformed("bad IPv6 address"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| Error::V1Malformed("bad IPv4 address"))
        }
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Some((
        Header::Proxied {
            version: Version::V1,
            source,
            destination,
        },
        consumed,
    )))
}

/// A decimal port: 1 to 5 digits, no sign, no leading zero, at most 65535.
fn v1_port(s: &str) -> Result<u16, Error> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(Error::V1Malformed("bad port"));
    }
    s.parse().map_err(|_| Error::V1Malformed("bad port"))
}

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 1;
const AF_INET6: u8 = 2;
const AF_UNIX: u8 = 3;
const STREAM: u8 = 1;

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() < 16 {
        // Version and command are known from byte 12 on: fail early when wrong.
        if let Some(&vc) = buf.get(12) {
            check_version_command(vc)?;
        }
        return Ok(None);
    }
    let local = check_version_command(buf[12])?;
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_ADDRESS_LEN {
        return Err(Error::V2TooLong(len));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let addr = &buf[16..total];
    let local_header = Ok(Some((
        Header::Local {
            version: Version::V2,
        },
        total,
    )));
    if local {
        // LOCAL: the address block (if any) is to be ignored.
        return local_header;
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    let (source, destination) = match family {
        AF_UNSPEC | AF_UNIX => return local_header,
        AF_INET if transport == STREAM => {
            let a = addr.get(..12).ok_or(Error::V2Truncated)?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        AF_INET6 if transport == STREAM => {
            let a = addr.get(..36).ok_or(Error::V2Truncated)?;
            let ip = |o: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        _ => return Err(Error::V2Family(fam)),
    };
    // TLVs after the addresses are skipped.
    Ok(Some((
        Header::Proxied {
            version: Version::V2,
            source,
            destination,
        },
        total,
    )))
}

/// Checks the version/command byte; true for LOCAL, false for PROXY.
fn check_version_command(vc: u8) -> Result<bool, Error> {
    if vc >> 4 != 2 {
        return Err(Error::V2Version(vc >> 4));
    }
    match vc & 0x0f {
        0 => Ok(true),
        1 => Ok(false),
        c => Err(Error::V2Command(c)),
    }
}

/// Encodes a v2 header (for tests and for tools that speak to the proxy). `None`: LOCAL.
pub fn encode_v2(addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match addresses {
        None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
        Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        Some((s, d)) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

/// The properties the fuzz target and the property test check on any input: no panic; a
/// complete header parses the same from exactly its bytes; every shorter prefix of it is
/// "need more" and [`bytes_needed`] never asks for more than the header's remaining bytes.
pub fn fuzz_parse(data: &[u8]) {
    let result = parse(data);
    if let Ok(Some((header, consumed))) = result {
        assert!(consumed <= data.len() && consumed >= MIN_HEADER);
        assert_eq!(parse(&data[..consumed]), Ok(Some((header, consumed))));
        for k in 0..consumed {
            assert_eq!(parse(&data[..k]), Ok(None), "prefix of {k} bytes");
            let need = bytes_needed(&data[..k]);
            assert!(need >= 1 && k + need <= consumed, "over-read at {k}");
        }
    }
    if let Ok(None) = result {
        assert!(bytes_needed(data) >= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(version: Version, src: &str, dst: &str) -> Header {
        Header::Proxied {
            version,
            source: sa(src),
            destination: sa(dst),
        }
    }

    type Parsed = Result<Option<(Header, usize)>, Error>;

    #[test]
    fn v1_table() {
        let v1 = Version::V1;
        let cases: &[(&[u8], Parsed)] = &[
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\nA1 LOGIN",
                Ok(Some((
                    proxied(v1, "192.0.2.7:56324", "198.51.100.1:143"),
                    45,
                ))),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 993\r\n",
                Ok(Some((
                    proxied(v1, "[2001:db8::7]:65535", "[2001:db8::1]:993"),
                    46,
                ))),
            ),
            (
                b"PROXY UNKNOWN\r\n",
                Ok(Some((Header::Local { version: v1 }, 15))),
            ),
            (
                b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                Ok(Some((Header::Local { version: v1 }, 35))),
            ),
            (b"", Ok(None)),
            (b"P", Ok(None)),
            (b"PROXY TCP4 192.0.2.7", Ok(None)),
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r", Ok(None)),
            (b"a1 LOGIN x y\r\n", Err(Error::NotProxy)),
            (b"PROXZ", Err(Error::NotProxy)),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
                Err(Error::V1Malformed("bare LF")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\rx",
                Err(Error::V1Malformed("CR without LF")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
                Err(Error::V1Malformed("wrong number of fields")),
            ),
            (
                b"PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n",
                Err(Error::V1Malformed("wrong number of fields")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n",
                Err(Error::V1Malformed("wrong number of fields")),
            ),
            (
                b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
                Err(Error::V1Malformed("bad IPv4 address")),
            ),
            (
                b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
                Err(Error::V1Malformed("bad IPv6 address")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
                Err(Error::V1Malformed("bad port")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
                Err(Error::V1Malformed("bad port")),
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",
                Err(Error::V1Malformed("bad port")),
            ),
            (
                b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
                Err(Error::V1Malformed("unknown protocol")),
            ),
            (
                b"PROXY TCP4 192.0.2.7\x00",
                Err(Error::V1Malformed("not printable ASCII")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input), want, "{:?}", String::from_utf8_lossy(input));
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX));
        assert_eq!(parse(long.as_bytes()), Err(Error::V1TooLong));
        assert_eq!(parse(&long.as_bytes()[..V1_MAX]), Err(Error::V1TooLong));
        // Exactly 107 bytes, CRLF included, is still fine.
        let max = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(max.len(), V1_MAX);
        assert_eq!(
            parse(max.as_bytes()),
            Ok(Some((Header::Local { version: v1 }, V1_MAX)))
        );
    }

    #[test]
    fn v2_table() {
        let v2 = Version::V2;
        let four = encode_v2(Some((sa("192.0.2.7:40000"), sa("198.51.100.1:143"))));
        assert_eq!(four.len(), 28);
        assert_eq!(
            parse(&four),
            Ok(Some((
                proxied(v2, "192.0.2.7:40000", "198.51.100.1:143"),
                28
            )))
        );
        let six = encode_v2(Some((sa("[2001:db8::7]:1"), sa("[2001:db8::1]:993"))));
        assert_eq!(
            parse(&six),
            Ok(Some((
                proxied(v2, "[2001:db8::7]:1", "[2001:db8::1]:993"),
                52
            )))
        );
        let local = encode_v2(None);
        assert_eq!(parse(&local), Ok(Some((Header::Local { version: v2 }, 16))));
        // Client bytes after the header are not consumed.
        let mut with_data = four.clone();
        with_data.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&with_data).map(|h| h.map(|(_, n)| n)), Ok(Some(28)));
        // TLVs after the addresses are skipped.
        let mut tlv = four[..16].to_vec();
        tlv[15] = 12 + 7;
        tlv.extend_from_slice(&four[16..]);
        tlv.extend_from_slice(&[0x04, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        assert_eq!(
            parse(&tlv),
            Ok(Some((
                proxied(v2, "192.0.2.7:40000", "198.51.100.1:143"),
                35
            )))
        );
        // Incomplete.
        for k in 0..four.len() {
            assert_eq!(parse(&four[..k]), Ok(None), "{k}");
        }
        // LOCAL with an address block: skipped.
        let mut local_addr = four.clone();
        local_addr[12] = 0x20;
        assert_eq!(
            parse(&local_addr),
            Ok(Some((Header::Local { version: v2 }, 28)))
        );
        // AF_UNSPEC and AF_UNIX: the socket's addresses stay.
        let mut unspec = local.clone();
        unspec[12] = 0x21;
        assert_eq!(
            parse(&unspec),
            Ok(Some((Header::Local { version: v2 }, 16)))
        );
        let mut unix = vec![0u8; 16 + 216];
        unix[..16].copy_from_slice(&four[..16]);
        unix[13] = 0x31;
        unix[14..16].copy_from_slice(&216u16.to_be_bytes());
        assert_eq!(parse(&unix), Ok(Some((Header::Local { version: v2 }, 232))));
        // Errors.
        let mut bad = four.clone();
        bad[12] = 0x11;
        assert_eq!(parse(&bad), Err(Error::V2Version(1)));
        assert_eq!(parse(&bad[..13]), Err(Error::V2Version(1)));
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err(Error::V2Command(2)));
        let mut udp = four.clone();
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err(Error::V2Family(0x12)));
        let mut short = four[..16].to_vec();
        short[15] = 4;
        short.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&short), Err(Error::V2Truncated));
        let mut huge = four[..16].to_vec();
        huge[14..16].copy_from_slice(&65535u16.to_be_bytes());
        assert_eq!(parse(&huge), Err(Error::V2TooLong(65535)));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(Error::NotProxy));
    }

    #[test]
    fn readers_never_read_past_the_header() {
        for header in [
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\n".to_vec(),
            encode_v2(None),
            encode_v2(Some((sa("192.0.2.7:1"), sa("192.0.2.8:2")))),
            encode_v2(Some((sa("[2001:db8::7]:1"), sa("[2001:db8::8]:2")))),
        ] {
            fuzz_parse(&header);
            // What a reader does: read bytes_needed, parse, repeat.
            let mut got = 0;
            loop {
                match parse(&header[..got]) {
                    Ok(Some((_, n))) => {
                        assert_eq!(n, header.len());
                        break;
                    }
                    Ok(None) => got += bytes_needed(&header[..got]),
                    Err(e) => panic!("{e}"),
                }
                assert!(got <= header.len());
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            fuzz_parse(&data);
        }

        #[test]
        fn never_panics_near_valid_headers(
            kind in 0usize..3,
            tail in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b':'),
                            (b'0'..=b'9'), any::<u8>()],
                0..120,
            ),
        ) {
            let mut data = match kind {
                0 => b"PROXY TCP4 ".to_vec(),
                1 => b"PROXY TCP6 ".to_vec(),
                _ => V2_SIGNATURE.to_vec(),
            };
            data.extend_from_slice(&tail);
            fuzz_parse(&data);
        }

        #[test]
        fn encoded_v2_round_trips(a in any::<[u8; 4]>(), b in any::<[u8; 16]>(), p in any::<u16>(), q in any::<u16>()) {
            let s = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p);
            let d = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), q);
            let four = encode_v2(Some((s, SocketAddr::new(s.ip(), q))));
            prop_assert_eq!(parse(&four).map(|h| h.and_then(|(h, _)| h.source())), Ok(Some(s)));
            let six = encode_v2(Some((d, d)));
            prop_assert_eq!(parse(&six).map(|h| h.and_then(|(h, _)| h.source())), Ok(Some(d)));
            fuzz_parse(&four);
            fuzz_parse(&six);
        }
    }
}
