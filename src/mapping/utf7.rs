//! IMAP modified UTF-7 (RFC 3501 §5.1.3), the encoding of folder names on the wire.
//! Mapping works on the encoded form; these conversions are for display and for options given in UTF-8.

use base64::Engine;
use base64::alphabet::IMAP_MUTF7;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Base64 with `,` instead of `/`, no padding, and zero trailing bits required.
const B64: GeneralPurpose = GeneralPurpose::new(
    &IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Decodes a modified UTF-7 name. `None` when it is not valid modified UTF-7: a byte outside
/// printable ASCII, an unterminated `&` run, bad base64, an odd byte count or a lone surrogate.
pub fn utf7_decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c != '&' {
            if !is_direct(c) {
                return None;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let end = rest.find('-')?;
        let run = &rest[1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            let bytes = B64.decode(run).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &rest[end + 1..];
    }
    Some(out)
}

/// Encodes a name into modified UTF-7: printable ASCII stays, `&` becomes `&-`, every other run of
/// characters becomes `&<base64 of UTF-16BE>-`.
pub fn utf7_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u8> = Vec::new();
    for c in s.chars() {
        if is_direct(c) {
            flush(&mut run, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                run.extend_from_slice(&unit.to_be_bytes());
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

fn flush(run: &mut Vec<u8>, out: &mut String) {
    if !run.is_empty() {
        out.push('&');
        out.push_str(&B64.encode(&run));
        out.push('-');
        run.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (encoded, decoded) in [
            ("INBOX", "INBOX"),
            ("&-", "&"),
            ("Tom &- Jerry", "Tom & Jerry"),
            ("Entw&APw-rfe", "Entwürfe"),
            ("&ZeVnLIqe-", "日本語"),
            ("&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-", "Отправленные"),
            (
                "INBOX.&AMk-l&AOk-ments envoy&AOk-s",
                "INBOX.Éléments envoyés",
            ),
            ("&2D3eAA-", "😀"),
            ("", ""),
        ] {
            assert_eq!(utf7_decode(encoded).as_deref(), Some(decoded), "{encoded}");
            assert_eq!(utf7_encode(decoded), encoded, "{decoded}");
        }
    }

    #[test]
    fn invalid_input() {
        for bad in [
            "&",         // unterminated
            "&AGE",      // unterminated
            "a&Jjo!-",   // '!' is not base64
            "Entwürfe",  // raw non-ASCII
            "tab\there", // control character
            "&AA-",      // one byte: odd length
            "&2D0-",     // lone high surrogate
            "&AGF-",     // non-zero trailing bits
        ] {
            assert_eq!(utf7_decode(bad), None, "{bad}");
        }
    }
}
