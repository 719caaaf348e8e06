//! Which OLD folders a pass handles: imapsync's `--folder`, `--folderrec`, `--subfolder1`,
//! `--include` and `--exclude`.
//! Names are matched in their raw modified UTF-7 form, as imapsync does.

use regex::Regex;

use super::Side;

/// Compiles an imapsync `--include`/`--exclude` value. The value is the body of a Perl `m//`
/// (no delimiters), matched unanchored and case-sensitively; inline flags such as `(?i)` work as in
/// Perl. Perl-only syntax (`\Q…\E`, look-around, back-references) is rejected with an error.
pub fn perl_regex(s: &str) -> Result<Regex, regex::Error> {
    Regex::new(s)
}

/// The folder selection options of one pass.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--folder`: exact OLD names.
    pub folders: Vec<String>,
    /// `--include`: every OLD folder matching one of these is added.
    pub include: Vec<Regex>,
    /// `--exclude`: applied last, removes every match.
    pub exclude: Vec<Regex>,
}

impl Selection {
    /// Selects from `all` (OLD's LIST): the `--folder` names that exist plus the `--include`
    /// matches, or every folder when neither is given; then drops the `--exclude` matches.
    /// The result is byte-sorted (Perl `sort`) without duplicates.
    pub fn select(&self, all: &[String]) -> Vec<String> {
        self.select_with(all, None)
    }

    /// Like [`Selection::select`], with `extra` names already chosen by other options
    /// (`--folderrec`, `--subscribed`, `--subfolder1`): `Some` means such an option was given, so
    /// "every folder" no longer applies even when the list is empty. Names missing from `all` are
    /// dropped.
    pub fn select_with(&self, all: &[String], extra: Option<&[String]>) -> Vec<String> {
        let take_all = self.folders.is_empty() && self.include.is_empty() && extra.is_none();
        let extra = extra.unwrap_or_default();
        let mut chosen: Vec<String> = all
            .iter()
            .filter(|f| {
                take_all
                    || self.folders.contains(f)
                    || extra.contains(f)
                    || self.include.iter().any(|r| r.is_match(f))
            })
            .filter(|f| !self.exclude.iter().any(|r| r.is_match(f)))
            .cloned()
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }
}

/// `--folderrec`: the folder `name` and its descendants (`name<sep>…`) among `all`, in `all`'s
/// order. Empty when nothing matches.
pub fn folderrec(all: &[String], name: &str, sep: char) -> Vec<String> {
    all.iter()
        .filter(|f| {
            f.as_str() == name
                || f.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(sep))
        })
        .cloned()
        .collect()
}

/// `--subfolder1`: `folderrec(sub)` when `sub` exists on OLD, else `folderrec(prefix1 sub)` when
/// that exists, else `None` (imapsync then exits 21).
pub fn subfolder1_selection(all: &[String], sub: &str, side: &Side) -> Option<Vec<String>> {
    let with_prefix = format!("{}{sub}", side.prefix);
    [sub, with_prefix.as_str()]
        .into_iter()
        .find(|name| all.iter().any(|f| f == name))
        .map(|name| folderrec(all, name, side.sep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(list: &[&str]) -> Vec<Regex> {
        list.iter().map(|s| perl_regex(s).unwrap()).collect()
    }

    #[test]
    fn perl_regexes() {
        for (pattern, name, expected) in [
            ("(?i)spam", "INBOX.SPAM", true),
            ("(?i)spam", "Junk", false),
            ("spam", "INBOX.SPAM", false),
            ("^INBOX$", "INBOX", true),
            ("^INBOX$", "INBOX.Sent", false),
            ("Sent|Trash", "INBOX.Trash", true),
            ("Sent|Trash", "Drafts", false),
        ] {
            assert_eq!(
                perl_regex(pattern).unwrap().is_match(name),
                expected,
                "{pattern} {name}"
            );
        }
        assert!(perl_regex("(unclosed").is_err());
    }

    #[test]
    fn select() {
        let all: Vec<String> = ["Sent", "INBOX", "Trash", "Archive/2020", "Archive", "Junk"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (folders, include, exclude, expected) in [
            (
                vec![],
                vec![],
                vec![],
                vec!["Archive", "Archive/2020", "INBOX", "Junk", "Sent", "Trash"],
            ),
            (vec!["Sent", "Missing"], vec![], vec![], vec!["Sent"]),
            (
                vec!["Sent"],
                vec!["^Archive"],
                vec![],
                vec!["Archive", "Archive/2020", "Sent"],
            ),
            (vec![], vec!["^Archive"], vec!["2020"], vec!["Archive"]),
            (
                vec![],
                vec![],
                vec!["^(Junk|Trash)$"],
                vec!["Archive", "Archive/2020", "INBOX", "Sent"],
            ),
            (
                vec!["INBOX", "INBOX"],
                vec!["^INBOX$"],
                vec![],
                vec!["INBOX"],
            ),
            (vec!["Sent"], vec![], vec!["Sent"], vec![]),
        ] {
            let sel = Selection {
                folders: folders.iter().map(|s| s.to_string()).collect(),
                include: re(&include),
                exclude: re(&exclude),
            };
            assert_eq!(
                sel.select(&all),
                expected,
                "{folders:?} {include:?} {exclude:?}"
            );
        }
    }

    #[test]
    fn folderrecs() {
        let all: Vec<String> = [
            "INBOX",
            "test",
            "test/foo",
            "test/foo/bar",
            "testing",
            "INBOX.x",
            "INBOX.x.y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (name, sep, expected) in [
            ("test", '/', &["test", "test/foo", "test/foo/bar"][..]),
            ("test/foo", '/', &["test/foo", "test/foo/bar"][..]),
            ("INBOX", '.', &["INBOX", "INBOX.x", "INBOX.x.y"][..]),
            ("missing", '/', &[][..]),
        ] {
            assert_eq!(folderrec(&all, name, sep), expected, "{name}");
        }
        let slash = Side {
            sep: '/',
            prefix: String::new(),
        };
        let dot = Side {
            sep: '.',
            prefix: "INBOX.".to_string(),
        };
        for (sub, side, expected) in [
            (
                "test",
                &slash,
                Some(&["test", "test/foo", "test/foo/bar"][..]),
            ),
            ("x", &dot, Some(&["INBOX.x", "INBOX.x.y"][..])),
            ("nope", &dot, None),
            ("foo", &slash, None),
        ] {
            assert_eq!(
                subfolder1_selection(&all, sub, side),
                expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                "{sub}"
            );
        }
        let sel = Selection::default();
        let rec = folderrec(&all, "test", '/');
        assert_eq!(
            sel.select_with(&all, Some(&rec)),
            ["test", "test/foo", "test/foo/bar"]
        );
        assert!(sel.select_with(&all, Some(&[])).is_empty());
        assert_eq!(sel.select_with(&all, None).len(), all.len());
        let sel = Selection {
            folders: vec!["INBOX".into()],
            ..Default::default()
        };
        assert_eq!(
            sel.select_with(&all, Some(&["test/foo".to_string(), "gone".to_string()])),
            ["INBOX", "test/foo"]
        );
    }
}
