//! Perl `s///`, `tr///` and `y///` expressions, as imapsync evaluates `--regextrans2` values
//! (`$h2_fold =~ VALUE`), parsed and applied without Perl. Patterns compile with `regex`, falling
//! back to `fancy-regex` for look-around and backreferences; code evaluation (`/e`) is refused.

/// Why a `--regextrans2` value could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PerlError {
    #[error("unknown Perl operator in {0:?}: only s///, tr/// and y/// are supported")]
    UnknownOperator(String),
    #[error("unterminated expression {0:?}")]
    Unterminated(String),
    #[error("bad regex {pattern:?}: {message}")]
    BadRegex { pattern: String, message: String },
    #[error("{0:?}: the /e flag would run Perl code and is not supported")]
    CodeEvaluation(String),
    #[error("{expr:?}: unknown or unsupported flag {flag:?}")]
    UnknownFlag { expr: String, flag: char },
    #[error("{expr:?}: invalid range {from}-{to} in tr///")]
    InvalidRange { expr: String, from: char, to: char },
    #[error("{expr:?}: {what} is not supported")]
    Unsupported { expr: String, what: String },
}

/// A compiled `s///` or `tr///` expression.
#[derive(Debug, Clone)]
pub struct PerlSubst {
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Subst {
        re: Engine,
        repl: Vec<Piece>,
        global: bool,
    },
    Tr(Tr),
}

#[derive(Debug, Clone)]
enum Engine {
    Std(regex::Regex),
    Fancy(fancy_regex::Regex),
}

/// Spans of the whole match (index 0) and of each group, as byte ranges of the input.
type Spans = Vec<Option<(usize, usize)>>;

impl Engine {
    fn spans(&self, input: &str, global: bool) -> Vec<Spans> {
        match self {
            Engine::Std(re) => {
                let one = |c: regex::Captures| -> Spans {
                    c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect()
                };
                if global {
                    re.captures_iter(input).map(one).collect()
                } else {
                    re.captures(input).map(one).into_iter().collect()
                }
            }
            Engine::Fancy(re) => {
                let one = |c: fancy_regex::Captures<str>| -> Spans {
                    (0..c.len())
                        .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                        .collect()
                };
                // A runtime error (backtrack limit) ends the substitution, like a failed match.
                if global {
                    re.captures_iter(input)
                        .map_while(Result::ok)
                        .map(one)
                        .collect()
                } else {
                    re.captures(input)
                        .ok()
                        .flatten()
                        .map(one)
                        .into_iter()
                        .collect()
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Upper,
    Lower,
}

/// One element of a parsed replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
    /// `\U` or `\L`, until `\E`.
    Case(Case),
    /// `\Q`, until `\E`.
    Quote,
    /// `\E`.
    End,
    /// `\u` or `\l`: the next character only.
    One(Case),
}

#[derive(Debug, Clone)]
struct Tr {
    search: Vec<char>,
    repl: Vec<char>,
    complement: bool,
    delete: bool,
    squeeze: bool,
}

impl PerlSubst {
    /// Parses and compiles a Perl `s/PATTERN/REPLACEMENT/FLAGS`, `tr/SEARCH/REPLACE/FLAGS` or
    /// `y/SEARCH/REPLACE/FLAGS`, with any delimiter, including bracket pairs (`s{a}{b}`).
    pub fn parse(expr: &str) -> Result<PerlSubst, PerlError> {
        let chars: Vec<char> = expr.trim().chars().collect();
        let word_len = chars
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
            .unwrap_or(chars.len());
        let word: String = chars[..word_len].iter().collect();
        let is_tr = match word.as_str() {
            "s" => false,
            "tr" | "y" => true,
            _ => return Err(PerlError::UnknownOperator(expr.to_string())),
        };
        let mut i = word_len;
        let (open, close) = open_delim(&chars, &mut i, expr)?;
        let first = read_until(&chars, &mut i, open, close, expr)?;
        let (open2, close2) = if open == close {
            (open, close)
        } else {
            open_delim(&chars, &mut i, expr)?
        };
        let second = read_until(&chars, &mut i, open2, close2, expr)?;
        let flags_len = chars[i..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .unwrap_or(chars.len() - i);
        let flags: Vec<char> = chars[i..i + flags_len].to_vec();
        let trailing: String = chars[i + flags_len..].iter().collect();
        if !trailing.trim().trim_end_matches(';').trim().is_empty() {
            return Err(unsupported(
                expr,
                format!("text after the expression ({trailing:?})"),
            ));
        }
        let op = if is_tr {
            Op::Tr(compile_tr(expr, &first, &second, &flags)?)
        } else {
            compile_subst(expr, &first, (open, close), &second, open2, &flags)?
        };
        Ok(PerlSubst { op })
    }

    /// Applies the expression to `input` and returns the result (the input when nothing matches).
    pub fn apply(&self, input: &str) -> String {
        match &self.op {
            Op::Subst { re, repl, global } => {
                let mut out = String::with_capacity(input.len());
                let mut last = 0;
                for spans in re.spans(input, *global) {
                    let Some(Some((start, end))) = spans.first().copied() else {
                        continue;
                    };
                    out.push_str(&input[last..start]);
                    expand(repl, input, &spans, &mut out);
                    last = end;
                }
                out.push_str(&input[last..]);
                out
            }
            Op::Tr(tr) => tr.apply(input),
        }
    }
}

fn unsupported(expr: &str, what: impl Into<String>) -> PerlError {
    PerlError::Unsupported {
        expr: expr.to_string(),
        what: what.into(),
    }
}

/// Skips whitespace and reads an opening delimiter, returning it with its closing partner.
fn open_delim(chars: &[char], i: &mut usize, expr: &str) -> Result<(char, char), PerlError> {
    while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
        *i += 1;
    }
    let open = *chars
        .get(*i)
        .ok_or_else(|| PerlError::Unterminated(expr.to_string()))?;
    if open.is_alphanumeric() || open == '_' {
        return Err(PerlError::UnknownOperator(expr.to_string()));
    }
    *i += 1;
    let close = match open {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        c => c,
    };
    Ok((open, close))
}

/// Reads up to the closing delimiter (consumed, not returned). Escapes are kept as written;
/// bracket delimiters nest when unescaped.
fn read_until(
    chars: &[char],
    i: &mut usize,
    open: char,
    close: char,
    expr: &str,
) -> Result<String, PerlError> {
    let unterminated = || PerlError::Unterminated(expr.to_string());
    let mut out = String::new();
    let mut depth = 0usize;
    loop {
        let c = *chars.get(*i).ok_or_else(unterminated)?;
        *i += 1;
        if c == '\\' {
            let next = *chars.get(*i).ok_or_else(unterminated)?;
            *i += 1;
            out.push(c);
            out.push(next);
            continue;
        }
        if c == close {
            if depth == 0 {
                return Ok(out);
            }
            depth -= 1;
        } else if c == open {
            depth += 1;
        }
        out.push(c);
    }
}

fn compile_subst(
    expr: &str,
    pattern: &str,
    delims: (char, char),
    replacement: &str,
    repl_delim: char,
    flags: &[char],
) -> Result<Op, PerlError> {
    if flags.contains(&'e') {
        return Err(PerlError::CodeEvaluation(expr.to_string()));
    }
    let mut inline = String::new();
    let mut global = false;
    for &f in flags {
        match f {
            'g' => global = true,
            'i' | 'm' | 's' | 'x' => {
                if !inline.contains(f) {
                    inline.push(f);
                }
            }
            'o' | 'p' => {}
            'r' => return Err(unsupported(expr, "/r (it would leave the name unchanged)")),
            _ => {
                return Err(PerlError::UnknownFlag {
                    expr: expr.to_string(),
                    flag: f,
                });
            }
        }
    }
    if pattern.is_empty() {
        return Err(unsupported(
            expr,
            "an empty pattern (Perl reuses the last match)",
        ));
    }
    let body = translate_pattern(expr, pattern, delims)?;
    let full = if inline.is_empty() {
        body
    } else {
        format!("(?{inline}){body}")
    };
    let re = match regex::Regex::new(&full) {
        Ok(re) => Engine::Std(re),
        Err(err) => match fancy_regex::Regex::new(&full) {
            Ok(re) => Engine::Fancy(re),
            Err(fancy) => {
                return Err(PerlError::BadRegex {
                    pattern: pattern.to_string(),
                    message: format!("{err} (fancy-regex: {fancy})"),
                });
            }
        },
    };
    let repl = if repl_delim == '\'' {
        // Perl does not interpolate a replacement delimited by single quotes.
        vec![Piece::Text(replacement.to_string())]
    } else {
        parse_replacement(expr, replacement)?
    };
    Ok(Op::Subst { re, repl, global })
}

/// Perl pattern to `regex` syntax: `\Q…\E` quoted with `regex::escape`, stray `\E` dropped,
/// escaped `<`/`>` delimiters unescaped (`\<` is a word boundary in `regex`), and variable
/// interpolation refused.
fn translate_pattern(expr: &str, pattern: &str, delims: (char, char)) -> Result<String, PerlError> {
    let mut out = String::with_capacity(pattern.len());
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('Q') => {
                    let mut quoted = String::new();
                    while let Some(q) = it.next() {
                        if q == '\\' {
                            match it.next() {
                                Some('E') | None => break,
                                Some(n) => quoted.push(n),
                            }
                        } else {
                            quoted.push(q);
                        }
                    }
                    out.push_str(&regex::escape(&quoted));
                }
                Some('E') => {}
                Some(n @ ('<' | '>')) if delims == ('<', '>') => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '$' | '@'
                if it
                    .peek()
                    .is_some_and(|n| n.is_alphabetic() || *n == '_' || *n == '{') =>
            {
                return Err(unsupported(
                    expr,
                    "Perl variable interpolation in the pattern",
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn push_text(pieces: &mut Vec<Piece>, c: char) {
    if let Some(Piece::Text(t)) = pieces.last_mut() {
        t.push(c);
    } else {
        pieces.push(Piece::Text(c.to_string()));
    }
}

/// Parses a replacement as a Perl double-quoted string: `$1`, `${1}`, `$&`, `\1`, case ops and
/// the usual backslash escapes.
fn parse_replacement(expr: &str, repl: &str) -> Result<Vec<Piece>, PerlError> {
    let mut pieces = Vec::new();
    let mut it = repl.chars().peekable();
    let variable =
        |what: String| unsupported(expr, format!("Perl variable {what} in the replacement"));
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                let Some(n) = it.next() else {
                    push_text(&mut pieces, '\\');
                    break;
                };
                match n {
                    'U' => pieces.push(Piece::Case(Case::Upper)),
                    'L' => pieces.push(Piece::Case(Case::Lower)),
                    'Q' => pieces.push(Piece::Quote),
                    'E' => pieces.push(Piece::End),
                    'u' => pieces.push(Piece::One(Case::Upper)),
                    'l' => pieces.push(Piece::One(Case::Lower)),
                    '1'..='9' => pieces.push(Piece::Group(n as usize - '0' as usize)),
                    'n' => push_text(&mut pieces, '\n'),
                    't' => push_text(&mut pieces, '\t'),
                    'r' => push_text(&mut pieces, '\r'),
                    'f' => push_text(&mut pieces, '\x0c'),
                    'e' => push_text(&mut pieces, '\x1b'),
                    'a' => push_text(&mut pieces, '\x07'),
                    '0' => push_text(&mut pieces, '\0'),
                    'x' => {
                        let mut hex = String::new();
                        if it.peek() == Some(&'{') {
                            it.next();
                            for h in it.by_ref() {
                                if h == '}' {
                                    break;
                                }
                                hex.push(h);
                            }
                        } else {
                            while hex.len() < 2 && it.peek().is_some_and(|h| h.is_ascii_hexdigit())
                            {
                                hex.extend(it.next());
                            }
                        }
                        let code = if hex.is_empty() {
                            Some('\0')
                        } else {
                            u32::from_str_radix(hex.trim(), 16)
                                .ok()
                                .and_then(char::from_u32)
                        };
                        let code =
                            code.ok_or_else(|| unsupported(expr, format!("escape \\x{{{hex}}}")))?;
                        push_text(&mut pieces, code);
                    }
                    other => push_text(&mut pieces, other),
                }
            }
            '$' => match it.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut digits = String::new();
                    while it.peek().is_some_and(|d| d.is_ascii_digit()) {
                        digits.extend(it.next());
                    }
                    match digits.parse::<usize>() {
                        Ok(n) if n > 0 => pieces.push(Piece::Group(n)),
                        _ => return Err(variable(format!("${digits}"))),
                    }
                }
                Some('&') => {
                    it.next();
                    pieces.push(Piece::Group(0));
                }
                Some('{') => {
                    it.next();
                    let mut name = String::new();
                    let mut closed = false;
                    for n in it.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    match name.parse::<usize>() {
                        Ok(n) if closed && n > 0 => pieces.push(Piece::Group(n)),
                        _ if closed && name == "&" => pieces.push(Piece::Group(0)),
                        _ => return Err(variable(format!("${{{name}}}"))),
                    }
                }
                Some(other) => return Err(variable(format!("${other}"))),
                None => {
                    return Err(unsupported(
                        expr,
                        "a final $ in the replacement (write \\$)",
                    ));
                }
            },
            '@' if it
                .peek()
                .is_some_and(|n| n.is_alphabetic() || *n == '_' || *n == '{') =>
            {
                return Err(unsupported(
                    expr,
                    "Perl array interpolation in the replacement",
                ));
            }
            c => push_text(&mut pieces, c),
        }
    }
    Ok(pieces)
}

/// Appends the replacement for one match, applying the case operators to the substituted text.
fn expand(pieces: &[Piece], input: &str, spans: &Spans, out: &mut String) {
    let mut case: Option<Case> = None;
    let mut quote = false;
    let mut one: Option<Case> = None;
    for piece in pieces {
        match piece {
            Piece::Text(t) => emit(t, case, quote, &mut one, out),
            Piece::Group(n) => {
                if let Some(Some((start, end))) = spans.get(*n) {
                    emit(&input[*start..*end], case, quote, &mut one, out);
                }
            }
            Piece::Case(c) => case = Some(*c),
            Piece::Quote => quote = true,
            Piece::End => {
                case = None;
                quote = false;
            }
            Piece::One(c) => one = Some(*c),
        }
    }
}

/// Appends `text` with the active `\U`/`\L` case, a pending `\u`/`\l` and `\Q` quoting.
fn emit(text: &str, case: Option<Case>, quote: bool, one: &mut Option<Case>, out: &mut String) {
    let mut text = match case {
        Some(Case::Upper) => text.to_uppercase(),
        Some(Case::Lower) => text.to_lowercase(),
        None => text.to_string(),
    };
    if let Some(c) = *one
        && let Some(first) = text.chars().next()
    {
        let changed: String = match c {
            Case::Upper => first.to_uppercase().collect(),
            Case::Lower => first.to_lowercase().collect(),
        };
        text.replace_range(..first.len_utf8(), &changed);
        *one = None;
    }
    for ch in text.chars() {
        if quote && ch.is_ascii() && !(ch.is_ascii_alphanumeric() || ch == '_') {
            out.push('\\');
        }
        out.push(ch);
    }
}

fn compile_tr(expr: &str, search: &str, repl: &str, flags: &[char]) -> Result<Tr, PerlError> {
    let mut tr = Tr {
        search: tr_list(expr, search)?,
        repl: tr_list(expr, repl)?,
        complement: false,
        delete: false,
        squeeze: false,
    };
    for &f in flags {
        match f {
            'c' => tr.complement = true,
            'd' => tr.delete = true,
            's' => tr.squeeze = true,
            'r' => return Err(unsupported(expr, "/r (it would leave the name unchanged)")),
            _ => {
                return Err(PerlError::UnknownFlag {
                    expr: expr.to_string(),
                    flag: f,
                });
            }
        }
    }
    Ok(tr)
}

/// Expands a `tr` list: backslash escapes, then `a-z` ranges (a `-` first or last is literal).
fn tr_list(expr: &str, list: &str) -> Result<Vec<char>, PerlError> {
    let mut items: Vec<(char, bool)> = Vec::new();
    let mut it = list.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            let n = it.next().unwrap_or('\\');
            let n = match n {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'f' => '\x0c',
                'e' => '\x1b',
                'a' => '\x07',
                '0' => '\0',
                other => other,
            };
            items.push((n, true));
        } else {
            items.push((c, false));
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        if i + 2 < items.len() && items[i + 1] == ('-', false) {
            let (from, to) = (items[i].0, items[i + 2].0);
            if from > to {
                return Err(PerlError::InvalidRange {
                    expr: expr.to_string(),
                    from,
                    to,
                });
            }
            out.extend((from as u32..=to as u32).filter_map(char::from_u32));
            i += 3;
        } else {
            out.push(items[i].0);
            i += 1;
        }
    }
    Ok(out)
}

impl Tr {
    /// `None`: not in the search list; `Some(None)`: deleted; `Some(Some(c))`: becomes `c`.
    fn map(&self, ch: char) -> Option<Option<char>> {
        let index = if self.complement {
            if self.search.contains(&ch) {
                return None;
            }
            // Position in the (sorted) complement of the search list.
            let mut below: Vec<char> = self.search.iter().copied().filter(|&s| s < ch).collect();
            below.sort_unstable();
            below.dedup();
            ch as usize - below.len()
        } else {
            self.search.iter().position(|&s| s == ch)?
        };
        if let Some(&r) = self.repl.get(index) {
            return Some(Some(r));
        }
        if self.delete {
            return Some(None);
        }
        Some(Some(self.repl.last().copied().unwrap_or(ch)))
    }

    fn apply(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        let mut last: Option<char> = None;
        for ch in input.chars() {
            match self.map(ch) {
                None => {
                    out.push(ch);
                    last = None;
                }
                Some(None) => {}
                Some(Some(c)) => {
                    if !(self.squeeze && last == Some(c)) {
                        out.push(c);
                    }
                    last = Some(c);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: &str, input: &str) -> String {
        PerlSubst::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .apply(input)
    }

    #[test]
    fn substitutions() {
        for (expr, input, expected) in [
            (r"s/^INBOX\.(.+)/$1/", "INBOX.Sent", "Sent"),
            (r"s{^INBOX$}{Inbox_Migrated}", "INBOX", "Inbox_Migrated"),
            (r"s{^INBOX$}{Inbox_Migrated}", "INBOX.x", "INBOX.x"),
            (r"s {^INBOX$} {X}", "INBOX", "X"),
            (r"s{^INBOX$}/X/", "INBOX", "X"),
            (r"s/.*/INBOX/", "Anything", "INBOX"),
            (r"s,\.,_,g", "a.b.c", "a_b_c"),
            (r"s,\.,_,", "a.b.c", "a_b.c"),
            (r#"s,\",_,g"#, r#"a"b"c"#, "a_b_c"),
            (r"s,^mail/Sent Items$,Sent,", "mail/Sent Items", "Sent"),
            (r"s,^INBOX(.*),INBOX.FOO$1,", "INBOX.bar", "INBOX.FOO.bar"),
            (r"s,(.*),\U$1,", "INBOX.TEST.test", "INBOX.TEST.TEST"),
            (r"s,\[Gmail\].,,", "[Gmail]/Sent Mail", "Sent Mail"),
            (r"s,^ +| +$,,g", "  a b  ", "a b"),
            (r#"s/['\\^"]/_/g"#, r#"a'b\c^d"e"#, "a_b_c_d_e"),
            (r"s,^Inbox\\(.*),$1,i", r"inbox\Work", "Work"),
            (r"s/^(?!INBOX)(.*)/INBOX.$1/", "Sent", "INBOX.Sent"),
            (r"s/^(?!INBOX)(.*)/INBOX.$1/", "INBOX.Sent", "INBOX.Sent"),
            (r"s/(?<=INBOX\.)sent/Sent/", "INBOX.sent", "INBOX.Sent"),
            (r"s/(?<=INBOX\.)sent/Sent/", "sent", "sent"),
            (r"s/(a)\1/X/", "aab", "Xb"),
            (r"s/(\w+)/$1a/", "x", "xa"),
            (r"s/(\w+)/${1}1/", "x", "x1"),
            (r"s/(\w+)/\1!/", "x", "x!"),
            (r"s/b/[$&]/g", "abcb", "a[b]c[b]"),
            (r"s/(x)(y)?/$2-$3-$1/", "x", "--x"),
            (r"s/x/\$1\\\//", "x", r"$1\/"),
            (r"s/(\w+)/\u\L$1/", "hELLO", "Hello"),
            (r"s/(\w+)/\L\u$1/", "hELLO", "Hello"),
            (r"s/(\w+) (\w+)/\U$1\E $2/", "ab cd", "AB cd"),
            (r"s/(.)/\l$1/", "ABC", "aBC"),
            (r"s/(.*)/\L$1/", "INBOX.Ünïcode", "inbox.ünïcode"),
            (r"s/\Qa.b\E/X/g", "a.b axb", "X axb"),
            (r"s,\Q[Gmail]/\E,,", "[Gmail]/Sent", "Sent"),
            (r"s/\Q[Gmail]\/\E//", "[Gmail]/Sent", "Sent"),
            (r"s/\[Gmail\]\///", "[Gmail]/Sent", "Sent"),
            (r"s!a\!b!X!", "a!b", "X"),
            (r"s,a\,b,X,", "a,b", "X"),
            (r"s#a\#b#X#", "a#b", "X"),
            (r"s|a\|b|X|", "a|b", "X"),
            (r"s(a)(b)", "a", "b"),
            (r"s<a><b>", "a", "b"),
            (r"s<a\>><b>", "a>", "b"),
            (r"s[a][b]", "a", "b"),
            (r"s{a{2}}{X}", "aa", "X"),
            (r"s/a/b/gi", "AaA", "bbb"),
            (r"s/^a$/X/m", "b\na", "b\nX"),
            (r"s/a.b/X/s", "a\nb", "X"),
            (r"s/a b/X/x", "ab", "X"),
            (r"s/^INBOX$/Inbox/x", "INBOX", "Inbox"),
            (r"s'(a)'$1'", "a", "$1"),
            (r"s/a/\x41\x{42}/", "a", "AB"),
            ("  s/a/b/;  ", "a", "b"),
        ] {
            assert_eq!(run(expr, input), expected, "{expr} on {input:?}");
        }
    }

    #[test]
    fn transliterations() {
        for (expr, input, expected) in [
            ("tr/a-z/A-Z/", "abc.Def", "ABC.DEF"),
            ("tr/./_/", "a.b.c", "a_b_c"),
            ("y,/,.,", "a/b/c", "a.b.c"),
            ("tr,*%.#,_,", "a*b%c.d#e", "a_b_c_d_e"),
            ("tr/a-c//d", "abcd", "d"),
            ("tr/ab/x/d", "abc", "xc"),
            ("tr/a-zA-Z//cd", "a.b-c", "abc"),
            ("tr/a-z/_/c", "a.B", "a__"),
            ("tr/a//s", "aaabaa", "aba"),
            ("tr/a-z/_/s", "ab.cd", "_._"),
            ("tr/a-z//", "abc", "abc"),
            (r"tr/\-\\/_/", r"a-b\c", "a_b_c"),
            ("tr/a-/x/", "a-b", "xxb"),
            (r"tr/\//./", "a/b", "a.b"),
            ("tr{a}{b}", "aa", "bb"),
        ] {
            assert_eq!(run(expr, input), expected, "{expr} on {input:?}");
        }
    }

    #[test]
    fn errors() {
        for expr in ["s/a/b/e", "s/a/b/ee", "s/a/b/ge"] {
            let err = PerlSubst::parse(expr).unwrap_err();
            assert!(
                matches!(err, PerlError::CodeEvaluation(_)),
                "{expr}: {err:?}"
            );
            assert!(err.to_string().contains("would run Perl code"), "{err}");
        }
        for expr in ["s/a/b", "s/a", "s", "s{a}", "s{a}{b", "tr/a/", r"s/a\/b/"] {
            let err = PerlSubst::parse(expr).unwrap_err();
            assert!(matches!(err, PerlError::Unterminated(_)), "{expr}: {err:?}");
        }
        for expr in ["q/x/", "m/x/", "", "sx/a/b/", "s a b "] {
            let err = PerlSubst::parse(expr).unwrap_err();
            assert!(
                matches!(err, PerlError::UnknownOperator(_)),
                "{expr}: {err:?}"
            );
        }
        let err = PerlSubst::parse("s/(/x/").unwrap_err();
        assert!(matches!(err, PerlError::BadRegex { .. }), "{err:?}");
        assert!(err.to_string().contains("unclosed group"), "{err}");
        assert!(matches!(
            PerlSubst::parse("s/a/b/z").unwrap_err(),
            PerlError::UnknownFlag { flag: 'z', .. }
        ));
        assert!(matches!(
            PerlSubst::parse("tr/z-a//").unwrap_err(),
            PerlError::InvalidRange { .. }
        ));
        for expr in [
            "s/a/$foo/",
            "s/a/${h2_prefix}x/",
            "s/$x/b/",
            "s/a/b$/",
            "s/a/$0/",
            "s/a/b/r",
            "s//b/",
            r#"s/a/b/; system("x")"#,
        ] {
            let err = PerlSubst::parse(expr).unwrap_err();
            assert!(
                matches!(err, PerlError::Unsupported { .. }),
                "{expr}: {err:?}"
            );
        }
    }
}
