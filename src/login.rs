//! Account identity: the name a typed login is known by (DESIGN.md §1, "one NEW mailbox is one
//! account"). NEW servers normalise logins (Dovecot's `auth_username_format`, `%Lu` by default),
//! so `User2` and `USER2` are one mailbox; the proxy keys accounts by the same normal form. Pure.

/// A subset of Dovecot's `auth_username_format`: `%u` (the whole login), `%n` (before the `@`),
/// `%d` (after it), each optionally lower- (`%Lu`) or upper-cased (`%Uu`); `%%` is a `%`; other
/// text is kept. The default `%Lu` is Dovecot's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginFormat(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var { part: Part, case: Case },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    User,
    Local,
    Domain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Default for LoginFormat {
    fn default() -> Self {
        LoginFormat(vec![Piece::Var {
            part: Part::User,
            case: Case::Lower,
        }])
    }
}

impl LoginFormat {
    pub fn parse(format: &str) -> Result<LoginFormat, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let mut next = chars.next();
            if next == Some('%') {
                text.push('%');
                continue;
            }
            let case = match next {
                Some('L') => Case::Lower,
                Some('U') => Case::Upper,
                _ => Case::Keep,
            };
            if case != Case::Keep {
                next = chars.next();
            }
            let part = match next {
                Some('u') => Part::User,
                Some('n') => Part::Local,
                Some('d') => Part::Domain,
                other => {
                    return Err(format!(
                        "{format:?}: unknown variable %{} (known: %u %n %d, with L or U)",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var { part, case });
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Var { .. })) {
            return Err(format!(
                "{format:?} names no part of the login (%u, %n or %d)"
            ));
        }
        Ok(LoginFormat(pieces))
    }

    /// The account name of a login as typed.
    pub fn apply(&self, typed: &str) -> String {
        let (local, domain) = typed.split_once('@').unwrap_or((typed, ""));
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Var { part, case } => {
                    let value = match part {
                        Part::User => typed,
                        Part::Local => local,
                        Part::Domain => domain,
                    };
                    match case {
                        Case::Keep => value.to_string(),
                        Case::Lower => value.to_lowercase(),
                        Case::Upper => value.to_uppercase(),
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_become_account_names() {
        for (format, typed, name) in [
            ("%Lu", "User2", "user2"),
            ("%Lu", "USER2", "user2"),
            ("%Lu", "Jürgen@Example.DE", "jürgen@example.de"),
            ("%u", "User2", "User2"),
            ("%Ln", "Ann@Example.com", "ann"),
            ("%Ln@%Ld", "Ann@Example.COM", "ann@example.com"),
            ("%n@example.org", "bob@old.example", "bob@example.org"),
            ("%Uu", "bob", "BOB"),
            ("%d", "bob", ""),
            ("100%%-%Lu", "X", "100%-x"),
        ] {
            let f = LoginFormat::parse(format).unwrap();
            assert_eq!(f.apply(typed), name, "{format} {typed}");
        }
        assert_eq!(LoginFormat::default(), LoginFormat::parse("%Lu").unwrap());
    }

    #[test]
    fn bad_formats_are_refused() {
        for bad in ["", "user", "%x", "%L", "%Lq", "%"] {
            assert!(LoginFormat::parse(bad).is_err(), "{bad:?}");
        }
    }
}
