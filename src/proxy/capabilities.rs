//! The capability lists a client is shown from NEW: the proxy terminates the login, TLS and
//! compression itself, so their capabilities are filtered out of `* CAPABILITY ...` lines and
//! `[CAPABILITY ...]` codes (after login, and in NEW's answer to the login). Pure over bytes.

/// Capabilities the proxy must not pass on: it terminates the login, TLS and compression itself.
fn keep_capability(cap: &str) -> bool {
    let up = cap.to_ascii_uppercase();
    !(up == "STARTTLS"
        || up == "LOGINDISABLED"
        || up == "SASL-IR"
        || up.starts_with("AUTH=")
        || up.starts_with("COMPRESS="))
}

/// Filters a space-separated capability list.
pub(super) fn filter_capabilities(list: &str) -> String {
    list.split_ascii_whitespace()
        .filter(|c| keep_capability(c))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The capability list inside a response line (`* CAPABILITY ...` or `[CAPABILITY ...]` in a
/// status response): `(start, end)` byte offsets of the list, or `None`.
pub(super) fn capability_span(line: &[u8]) -> Option<(usize, usize)> {
    let body_end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let sp1 = line.iter().position(|&b| b == b' ')?;
    let rest = &line[sp1 + 1..body_end];
    if line[..sp1] == *b"*" && rest.len() >= 11 && rest[..11].eq_ignore_ascii_case(b"CAPABILITY ") {
        return Some((sp1 + 12, body_end));
    }
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    let status = &rest[..sp2];
    if !["OK", "NO", "BAD", "BYE", "PREAUTH"]
        .iter()
        .any(|s| status.eq_ignore_ascii_case(s.as_bytes()))
    {
        return None;
    }
    let after = &rest[sp2 + 1..];
    if after.len() < 12 || !after[..12].eq_ignore_ascii_case(b"[CAPABILITY ") {
        return None;
    }
    let start = sp1 + 1 + sp2 + 1 + 12;
    let close = line[start..body_end].iter().position(|&b| b == b']')?;
    Some((start, start + close))
}

/// `line` with its capability list filtered, if it carries one.
pub(super) fn rewrite_capabilities(line: &[u8]) -> Option<Vec<u8>> {
    let (start, end) = capability_span(line)?;
    let list = String::from_utf8_lossy(&line[start..end]);
    let mut out = line[..start].to_vec();
    out.extend_from_slice(filter_capabilities(&list).as_bytes());
    out.extend_from_slice(&line[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_lines_are_filtered() {
        let got = rewrite_capabilities(
            b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN COMPRESS=DEFLATE IDLE STARTTLS\r\n",
        );
        assert_eq!(
            got.as_deref(),
            Some(&b"* CAPABILITY IMAP4rev1 IDLE\r\n"[..])
        );
        let got = rewrite_capabilities(b"a1 OK [CAPABILITY IMAP4rev1 LOGINDISABLED MOVE] Hi\r\n");
        assert_eq!(
            got.as_deref(),
            Some(&b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Hi\r\n"[..])
        );
        assert_eq!(
            rewrite_capabilities(b"* 1 FETCH (ENVELOPE (\"[CAPABILITY X]\"))\r\n"),
            None
        );
        assert_eq!(
            rewrite_capabilities(b"* OK [CAPABILITY IMAP4rev1\r\n"),
            None
        );
    }
}
