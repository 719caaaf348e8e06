//! Message identity: imapsync's header key (reference §2.1), a fallback content key for messages
//! without identifying headers, and the pairing of OLD and NEW messages by key, duplicates included.
//! Pure functions; the engine fetches the header bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use md5::{Digest, Md5};

/// Perl's `\s`: space, tab, LF, VT, FF, CR.
fn is_perl_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses a header block into `(name, value)` pairs in order. Folded lines are joined to the
/// previous value with a single space; lines without `name: value` are ignored; parsing stops
/// at the first empty line (end of the header).
pub fn header_lines(raw_header_fields: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut in_field = false;
    for line in raw_header_fields.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if is_perl_space(line[0]) {
            if let (true, Some((_, value))) = (in_field, out.last_mut()) {
                let rest = line
                    .iter()
                    .position(|&b| !is_perl_space(b))
                    .map_or(&[][..], |i| &line[i..]);
                value.push(b' ');
                value.extend_from_slice(rest);
            }
            continue;
        }
        in_field = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            continue;
        }
        let value = &line[colon + 1..];
        let start = value
            .iter()
            .position(|&b| !is_perl_space(b))
            .unwrap_or(value.len());
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            value[start..].to_vec(),
        ));
        in_field = true;
    }
    out
}

/// Which headers make up the identity key (`--useheader`) and whether the size is part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOptions {
    /// Header names, compared case-insensitively; `ALL` means every header.
    pub use_headers: Vec<String>,
    /// `--skipsize` (imapsync's default): the key does not include RFC822.SIZE.
    pub skip_size: bool,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            use_headers: vec!["Message-Id".into(), "Received".into()],
            skip_size: true,
        }
    }
}

/// imapsync's `header_line_normalize`: 8-bit bytes → `X`, tabs → space, trim, collapse
/// whitespace, then `uc("Name: value")`.
fn normalize_line(name: &str, value: &[u8]) -> String {
    let ascii: String = value
        .iter()
        .map(|&b| if b >= 0x80 { 'X' } else { char::from(b) })
        .collect();
    let words: Vec<&str> = ascii
        .split(|c: char| is_perl_space(c as u8))
        .filter(|w| !w.is_empty())
        .collect();
    format!("{name}: {}", words.join(" ")).to_ascii_uppercase()
}

/// Perl's `Digest::MD5::md5_base64`: standard alphabet, no padding.
fn md5_base64(data: &[u8]) -> String {
    STANDARD_NO_PAD.encode(Md5::digest(data))
}

/// imapsync's identity key of a message: md5_base64 of the sorted, concatenated, normalised lines of
/// the wanted headers, plus `:SIZE` unless `skip_size`. `None` when no wanted header is present
/// (an "unidentified" message).
pub fn identity_key(header_block: &[u8], size: u32, opts: &IdentityOptions) -> Option<String> {
    let all = opts
        .use_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("ALL"));
    let mut lines: Vec<String> = header_lines(header_block)
        .into_iter()
        .filter(|(name, _)| {
            all || opts
                .use_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        })
        .map(|(name, value)| normalize_line(&name, &value))
        .collect();
    if lines.is_empty() {
        return None;
    }
    lines.sort();
    let key = md5_base64(lines.concat().as_bytes());
    Some(if opts.skip_size {
        key
    } else {
        format!("{key}:{size}")
    })
}

/// Fallback key for unidentified messages: md5_base64 of the raw header bytes, `:`, and the size.
/// Used only to recognise our own copies, never imapsync's.
pub fn content_key(full_header: &[u8], size: u32) -> String {
    format!("{}:{size}", md5_base64(full_header))
}

/// Pairs OLD UIDs with NEW UIDs of equal key: the i-th OLD message with a key (ascending UID) pairs
/// with the i-th NEW message with that key; extras on either side stay unmatched. Result in
/// ascending OLD UID order.
pub fn match_by_key<K: Eq + Hash + Clone>(old: &[(u32, K)], new: &[(u32, K)]) -> Vec<(u32, u32)> {
    let mut new_sorted: Vec<&(u32, K)> = new.iter().collect();
    new_sorted.sort_by_key(|(uid, _)| *uid);
    let mut by_key: HashMap<&K, VecDeque<u32>> = HashMap::new();
    for (uid, key) in new_sorted {
        by_key.entry(key).or_default().push_back(*uid);
    }
    let mut old_sorted: Vec<&(u32, K)> = old.iter().collect();
    old_sorted.sort_by_key(|(uid, _)| *uid);
    old_sorted
        .into_iter()
        .filter_map(|(uid, key)| Some((*uid, by_key.get_mut(key)?.pop_front()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_base64_matches_perl() {
        for (input, expected) in [
            ("", "1B2M2Y8AsgTpgAmY7PhCfg"),
            ("abc", "kAFQmDzST7DWlj99KOF/cg"),
        ] {
            assert_eq!(md5_base64(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn parses_header_lines() {
        let block = b"Message-ID: <a@b>\r\nReceived: from x\r\n\tby y;\r\n   Mon, 1 Jan\r\n\
                      not a header\r\n continuation of nothing\r\nX-Empty:\r\n\r\nBody: no\r\n";
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("Message-ID".into(), b"<a@b>".to_vec()),
            ("Received".into(), b"from x by y; Mon, 1 Jan".to_vec()),
            ("X-Empty".into(), b"".to_vec()),
        ];
        assert_eq!(header_lines(block), expected);
    }

    #[test]
    fn keys() {
        let std = IdentityOptions::default();
        let mid_only = IdentityOptions {
            use_headers: vec!["message-id".into()],
            skip_size: true,
        };
        let sized = IdentityOptions {
            skip_size: false,
            ..IdentityOptions::default()
        };
        let base = identity_key(
            b"Message-Id: <a@b>\r\nReceived: r1\r\nReceived: r2\r\n",
            10,
            &std,
        );
        // The key is md5_base64 of the sorted upper-cased lines.
        assert_eq!(
            base,
            Some(md5_base64(b"MESSAGE-ID: <A@B>RECEIVED: R1RECEIVED: R2"))
        );
        for (block, opts, expected) in [
            // Received order, name case, whitespace, folding and other headers do not matter.
            (
                &b"Received: r2\r\nreceived: r1\r\nMESSAGE-ID: <a@b>\r\n"[..],
                &std,
                base.clone(),
            ),
            (
                b"Subject: x\r\nmessage-id:   <A@B>  \r\nReceived: r1\nReceived:\tr2\n",
                &std,
                base.clone(),
            ),
            (
                b"Message-Id: <a@b>\r\nReceived:\r\n r1\r\nReceived: r2\r\n",
                &std,
                base.clone(),
            ),
            // 8-bit bytes become X, one per byte.
            (
                "Message-Id: <é@b>\r\n".as_bytes(),
                &std,
                Some(md5_base64(b"MESSAGE-ID: <XX@B>")),
            ),
            // --useheader Message-Id ignores Received.
            (
                b"Message-Id: <a@b>\r\nReceived: r9\r\n",
                &mid_only,
                Some(md5_base64(b"MESSAGE-ID: <A@B>")),
            ),
            // --noskipsize appends the size.
            (
                b"Message-Id: <a@b>\r\n",
                &sized,
                Some(format!("{}:10", md5_base64(b"MESSAGE-ID: <A@B>"))),
            ),
            // Unidentified.
            (b"", &std, None),
            (b"Subject: hello\r\nFrom: a@b\r\n", &std, None),
        ] {
            assert_eq!(
                identity_key(block, 10, opts),
                expected,
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
        let all = IdentityOptions {
            use_headers: vec!["ALL".into()],
            skip_size: true,
        };
        assert_eq!(
            identity_key(b"Subject: hi\r\n", 1, &all),
            Some(md5_base64(b"SUBJECT: HI"))
        );
    }

    #[test]
    fn content_keys() {
        assert_eq!(content_key(b"", 0), "1B2M2Y8AsgTpgAmY7PhCfg:0");
        assert_ne!(
            content_key(b"Subject: a\r\n", 5),
            content_key(b"Subject: b\r\n", 5)
        );
        assert_ne!(
            content_key(b"Subject: a\r\n", 5),
            content_key(b"Subject: a\r\n", 6)
        );
    }

    #[test]
    fn matching() {
        for (old, new, expected) in [
            (
                vec![(1, "a"), (2, "b")],
                vec![(10, "b"), (11, "a")],
                vec![(1, 11), (2, 10)],
            ),
            // duplicates pair in UID order; extras stay unmatched
            (
                vec![(3, "a"), (1, "a"), (2, "a")],
                vec![(20, "a"), (10, "a")],
                vec![(1, 10), (2, 20)],
            ),
            (vec![(1, "a")], vec![(12, "a"), (11, "a")], vec![(1, 11)]),
            (vec![(1, "a"), (2, "c")], vec![(10, "b")], vec![]),
            (vec![], vec![(10, "b")], vec![]),
        ] {
            assert_eq!(match_by_key(&old, &new), expected, "{old:?} {new:?}");
        }
    }
}
