//! Which OLD folders a pass handles: imapsync's `--folder`, `--include` and `--exclude`.
//! Names are matched in their raw modified UTF-7 form, as imapsync does.

use regex::Regex;

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
        let take_all = self.folders.is_empty() && self.include.is_empty();
        let mut chosen: Vec<String> = all
            .iter()
            .filter(|f| {
                take_all || self.folders.contains(f) || self.include.iter().any(|r| r.is_match(f))
            })
            .filter(|f| !self.exclude.iter().any(|r| r.is_match(f)))
            .cloned()
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }
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
}
