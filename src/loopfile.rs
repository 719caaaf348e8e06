//! imapsync's loop file, parsed without I/O: one account per line, `host1;user1;password1;host2;
//! user2;password2;` (6 columns, the form documented for years) or with a 7th `extra` column of
//! options, each with or without the trailing `;`, LF or CRLF. Used by `imapferry batch`,
//! `accounts import` and the proxy's `auth = "accounts"` policy.

/// One account line of the loop file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLine {
    /// 1-based line number in the file.
    pub number: usize,
    /// The line as it was, without its line ending (what goes to the failures file).
    pub raw: String,
    pub host1: String,
    pub user1: String,
    pub password1: String,
    pub host2: String,
    pub user2: String,
    pub password2: String,
    /// The 7th column, word-split on whitespace (the shell's unquoted `$extra`); empty for a
    /// 6-column line.
    pub extra: Vec<String>,
}

/// What one line of the loop file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank or a `#` comment.
    Skip,
    Account(AccountLine),
    /// Not usable; the text says why. Never run.
    Malformed {
        number: usize,
        reason: String,
    },
}

/// Parses one line (`number` is 1-based). Trailing `\r`s are dropped first: CRLF files, and
/// files converted to CRLF twice (`\r\r\n`, found by fuzzing).
pub fn parse_line(number: usize, line: &str) -> Line {
    let raw = line.strip_suffix('\n').unwrap_or(line);
    let raw = raw.trim_end_matches('\r');
    if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
        return Line::Skip;
    }
    let malformed = |reason: &str| Line::Malformed {
        number,
        reason: reason.to_string(),
    };
    let mut fields: Vec<&str> = raw.split(';').collect();
    // The trailing ';' that imapsync's examples insist on leaves an empty last piece.
    if fields.len() > 6 && fields.last().is_some_and(|f| f.trim().is_empty()) {
        fields.pop();
    }
    if fields.len() < 6 {
        return malformed(&format!(
            "{} columns; expected host1;user1;password1;host2;user2;password2[;extra][;]",
            fields.len()
        ));
    }
    // The shell loop puts anything after the 7th column in an ignored variable; here it is more
    // likely a ';' inside a password that shifted every column, so refuse the line.
    if fields.len() > 7 && fields[7..].iter().any(|f| !f.trim().is_empty()) {
        return malformed("text after the 7th column (a ';' inside a field?)");
    }
    let field = |i: usize| fields[i].trim().to_string();
    let account = AccountLine {
        number,
        raw: raw.to_string(),
        host1: field(0),
        user1: field(1),
        // Passwords are kept byte for byte: spaces may belong to them.
        password1: fields[2].to_string(),
        host2: field(3),
        user2: field(4),
        password2: fields[5].to_string(),
        extra: fields
            .get(6)
            .map(|f| f.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    };
    for (value, name) in [
        (&account.host1, "host1"),
        (&account.user1, "user1"),
        (&account.host2, "host2"),
        (&account.user2, "user2"),
    ] {
        if value.is_empty() {
            return malformed(&format!("{name} is empty"));
        }
    }
    Line::Account(account)
}

/// Parses a whole loop file.
pub fn parse_file(text: &str) -> Vec<Line> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| parse_line(i + 1, l))
        .collect()
}

/// Parses `data` (any bytes, as text) as a loop file and checks what the batch relies on: one
/// result per line, numbered in order; an account's fields come from its own line, hosts and
/// users are trimmed and non-empty, no field holds a `;`. For fuzzing.
pub fn fuzz_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = parse_file(&text);
    assert_eq!(lines.len(), text.split('\n').count());
    for (i, line) in lines.iter().enumerate() {
        match line {
            Line::Skip => {}
            Line::Malformed { number, reason } => {
                assert_eq!(*number, i + 1);
                assert!(!reason.is_empty());
            }
            Line::Account(a) => {
                assert_eq!(a.number, i + 1);
                assert!(!a.raw.contains('\n') && !a.raw.ends_with('\r'));
                for f in [&a.host1, &a.user1, &a.host2, &a.user2] {
                    assert!(!f.is_empty() && f.trim() == f && !f.contains(';'));
                    assert!(a.raw.contains(f.as_str()));
                }
                for p in [&a.password1, &a.password2] {
                    assert!(!p.contains(';') && a.raw.contains(p.as_str()));
                }
                assert!(a.extra.iter().all(|w| !w.is_empty() && !w.contains(';')));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// LF, CRLF and a twice-converted CRCRLF line are the same account (the failures file gets
    /// the line without its ending).
    #[test]
    fn line_endings() {
        let lf = super::parse_line(1, "h1;u1;p1;h2;u2;p2;\n");
        for ending in ["\r\n", "\r\r\n", "\r"] {
            let line = format!("h1;u1;p1;h2;u2;p2;{ending}");
            assert_eq!(super::parse_line(1, &line), lf, "{ending:?}");
        }
        let super::Line::Account(a) = lf else {
            panic!("{lf:?}")
        };
        assert_eq!(
            (a.raw.as_str(), a.password2.as_str()),
            ("h1;u1;p1;h2;u2;p2;", "p2")
        );
    }

    #[test]
    fn fuzz_samples() {
        for s in [
            &b""[..],
            b"h1;u1;p1;h2;u2;p2;\n",
            b"h1;u1;p;1;h2;u2;p2;--x\r\n# c\r\n\r\n;;;;;;\n",
            b"h1 ; u1 ;\xff;h2;u2;p2;a  b ;;\n",
            b"h1;u1;p1;h2;u2;p2;\rA\r\r\n",
        ] {
            super::fuzz_parse(s);
        }
    }

    proptest! {
        #[test]
        fn any_text_keeps_the_invariants(data in proptest::collection::vec(
            prop_oneof![Just(b';'), Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'#'), any::<u8>()],
            0..512,
        )) {
            super::fuzz_parse(&data);
        }
    }
}
