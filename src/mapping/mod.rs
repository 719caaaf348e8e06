//! Folder-name translation between OLD and NEW: modified UTF-7, hierarchy separators, namespace
//! prefixes, the INBOX special case, and folder selection. Pure functions with table tests, no I/O.
//! Names stay in modified UTF-7 throughout, as in imapsync (reference §4).

mod mapper;
mod perl;
mod select;
mod utf7;

pub use mapper::{Mapper, MapperOptions};
pub use perl::{PerlError, PerlSubst};
pub use select::{Selection, folderrec, perl_regex, subfolder1_selection};
pub use utf7::{utf7_decode, utf7_encode};

/// One server's personal namespace: hierarchy separator and prefix (e.g. `.` and `INBOX.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub sep: char,
    pub prefix: String,
}

/// Guesses the separator from folder names when there is no NAMESPACE: the most frequent of `/`,
/// `.` and `\` over all names, `/` when none occurs. Ties go to `/`, then `.` (imapsync leaves
/// them to Perl's hash order).
pub fn guess_sep(names: &[&str]) -> char {
    let count = |sep: char| names.iter().map(|n| n.matches(sep).count()).sum::<usize>();
    let mut best = ('/', count('/'));
    for sep in ['.', '\\'] {
        let n = count(sep);
        if n > best.1 {
            best = (sep, n);
        }
    }
    best.0
}

/// Guesses the prefix when there is no NAMESPACE: `INBOX<sep>` if every folder other than INBOX
/// starts with it (and there is at least one), else empty.
pub fn guess_prefix(names: &[&str], sep: char) -> String {
    let prefix = format!("INBOX{sep}");
    let mut others = names
        .iter()
        .filter(|n| !n.eq_ignore_ascii_case("INBOX"))
        .peekable();
    if others.peek().is_some() && others.all(|n| n.starts_with(&prefix)) {
        prefix
    } else {
        String::new()
    }
}

/// Maps an OLD name to its NEW name (imapsync `imap2_folder_name` steps 4-5, before any
/// regextrans2): an empty name or the bare prefix is INBOX; the OLD prefix is removed; separators
/// are swapped, so a literal NEW separator inside an OLD name becomes the OLD separator;
/// with OLD `/` and NEW not `/`, any `/` left becomes `_` (fixslash2); the NEW prefix is added
/// unless the name is INBOX in any case (so `<prefix1>INBOX` maps to INBOX).
pub fn map_name(old: &str, from: &Side, to: &Side) -> String {
    let name = if old.is_empty() || old == from.prefix {
        "INBOX"
    } else {
        old
    };
    let name = name.strip_prefix(from.prefix.as_str()).unwrap_or(name);
    let (sep1, sep2) = (from.sep, to.sep);
    let fixslash = sep1 == '/' && sep2 != '/';
    let name: String = name
        .chars()
        .map(|c| match c {
            c if c == sep2 => sep1,
            c if c == sep1 => sep2,
            c => c,
        })
        .map(|c| if fixslash && c == '/' { '_' } else { c })
        .collect();
    if name.eq_ignore_ascii_case("INBOX") {
        name
    } else {
        format!("{}{name}", to.prefix)
    }
}

/// imapsync's fixInboxINBOX: a mapped `INBOX` becomes `Inbox` when NEW has `Inbox` and no `INBOX`,
/// and the reverse. Any other name is returned unchanged. `new_names` is NEW's folder list.
pub fn fix_inbox_case<S: AsRef<str>>(name: &str, new_names: &[S]) -> String {
    let has = |n: &str| new_names.iter().any(|f| f.as_ref() == n);
    let other = match name {
        "INBOX" => "Inbox",
        "Inbox" => "INBOX",
        _ => return name.to_string(),
    };
    if !has(name) && has(other) {
        other
    } else {
        name
    }
    .to_string()
}

/// The name as a `/`-separated path without the namespace prefix, for display and tests
/// (a literal `/` inside a name is not escaped).
pub fn logical_path(name: &str, side: &Side) -> String {
    name.strip_prefix(side.prefix.as_str())
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name)
        .replace(side.sep, "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(sep: char, prefix: &str) -> Side {
        Side {
            sep,
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn guesses() {
        for (names, sep, prefix) in [
            (&["INBOX", "INBOX.Sent", "INBOX.a.b"][..], '.', "INBOX."),
            (&["INBOX", "Sent", "a/b", "a/b/c"][..], '/', ""),
            (&["INBOX", "INBOX/Sent", "INBOX/Trash"][..], '/', "INBOX/"),
            (&["INBOX", "INBOX.Sent", "Trash"][..], '.', ""),
            (&["INBOX"][..], '/', ""),
            (&[][..], '/', ""),
            (&["a\\b", "c\\d", "e.f"][..], '\\', ""),
            (&["a.b", "c/d"][..], '/', ""),
        ] {
            assert_eq!(guess_sep(names), sep, "{names:?}");
            assert_eq!(guess_prefix(names, sep), prefix, "{names:?}");
        }
    }

    #[test]
    fn map_names() {
        let dot_inbox = side('.', "INBOX.");
        let dot = side('.', "");
        let slash = side('/', "");
        let slash_inbox = side('/', "INBOX/");
        for (old, from, to, expected) in [
            // `/` → `.` with NEW prefix
            ("INBOX", &slash, &dot_inbox, "INBOX"),
            ("inbox", &slash, &dot_inbox, "inbox"),
            ("Sent", &slash, &dot_inbox, "INBOX.Sent"),
            ("a/b/c", &slash, &dot_inbox, "INBOX.a.b.c"),
            ("spam.spam", &slash, &dot, "spam_spam"), // fixslash2 (imapsync test)
            ("a/b.c", &slash, &dot_inbox, "INBOX.a.b_c"),
            ("INBOX/sub", &slash, &dot_inbox, "INBOX.INBOX.sub"),
            // `.` with prefix → `/`
            ("INBOX", &dot_inbox, &slash, "INBOX"),
            ("INBOX.", &dot_inbox, &slash, "INBOX"),
            ("", &dot_inbox, &slash, "INBOX"),
            ("INBOX.INBOX", &dot_inbox, &slash, "INBOX"),
            ("INBOX.Sent", &dot_inbox, &slash, "Sent"),
            ("INBOX.a.b.c", &dot_inbox, &slash, "a/b/c"),
            ("INBOX.a/b.c", &dot_inbox, &slash, "a.b/c"), // literal `/` becomes `.`
            ("INBOX.a.b", &dot_inbox, &slash_inbox, "INBOX/a/b"),
            // same separator, prefix on one side, both sides or none
            ("INBOX.a.b", &dot_inbox, &dot, "a.b"),
            ("a.b", &dot, &dot_inbox, "INBOX.a.b"),
            ("INBOX.a.b", &dot_inbox, &dot_inbox, "INBOX.a.b"),
            ("a/b", &slash, &slash, "a/b"),
            ("Trash", &dot, &dot, "Trash"),
            ("INBOX/a", &slash_inbox, &slash, "a"),
            // modified UTF-7 names are mapped in encoded form
            (
                "Entw&APw-rfe/2024",
                &slash,
                &dot_inbox,
                "INBOX.Entw&APw-rfe.2024",
            ),
            (
                "INBOX.&BB4EQgQ,BEAEMAQy-.x",
                &dot_inbox,
                &slash,
                "&BB4EQgQ,BEAEMAQy-/x",
            ),
            ("&ZeVnLIqe-", &dot, &slash_inbox, "INBOX/&ZeVnLIqe-"),
        ] {
            assert_eq!(
                map_name(old, from, to),
                expected,
                "{old} {from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn inbox_case() {
        for (name, new_names, expected) in [
            ("INBOX", &["Inbox", "Sent"][..], "Inbox"),
            ("Inbox", &["INBOX", "Sent"][..], "INBOX"),
            ("INBOX", &["INBOX", "Inbox"][..], "INBOX"),
            ("INBOX", &["Sent"][..], "INBOX"),
            ("inbox", &["INBOX"][..], "inbox"),
            ("Sent", &["Inbox"][..], "Sent"),
        ] {
            assert_eq!(
                fix_inbox_case(name, new_names),
                expected,
                "{name} {new_names:?}"
            );
        }
    }

    #[test]
    fn logical_paths() {
        for (name, s, expected) in [
            ("INBOX.a.b", side('.', "INBOX."), "a/b"),
            ("INBOX", side('.', "INBOX."), "INBOX"),
            ("a/b", side('/', ""), "a/b"),
            ("INBOX/Sent", side('/', "INBOX/"), "Sent"),
            ("Entw&APw-rfe.x", side('.', ""), "Entw&APw-rfe/x"),
        ] {
            assert_eq!(logical_path(name, &s), expected, "{name}");
        }
    }
}
