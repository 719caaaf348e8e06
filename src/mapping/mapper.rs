//! The whole OLD→NEW folder-name mapping of one run (imapsync `imap2_folder_name`, reference §4):
//! `--f1f2`, `--automap`, `--subfolder1`, prefix and separator translation, `--subfolder2`,
//! `--regextrans2` and the INBOX/Inbox fix, in that order. Pure: built from the two LIST replies.

use std::collections::{BTreeMap, HashMap};

use super::{PerlError, PerlSubst, Side, map_name, utf7_encode};

/// The mapping options of one run, as given on the command line (names in modified UTF-7).
#[derive(Debug, Clone)]
pub struct MapperOptions {
    /// `--f1f2 h1=h2`, split at the first `=`.
    pub f1f2: Vec<(String, String)>,
    /// `--automap`.
    pub automap: bool,
    /// `--subfolder1`.
    pub subfolder1: Option<String>,
    /// `--subfolder2` (sanitized here to `-_a-zA-Z0-9./` and space).
    pub subfolder2: Option<String>,
    /// `--regextrans2` values, raw, in command-line order.
    pub regextrans2: Vec<String>,
    /// `--fixInboxINBOX` (on by default).
    pub fix_inbox: bool,
}

impl Default for MapperOptions {
    fn default() -> Self {
        MapperOptions {
            f1f2: Vec::new(),
            automap: false,
            subfolder1: None,
            subfolder2: None,
            regextrans2: Vec::new(),
            fix_inbox: true,
        }
    }
}

/// The RFC 6154 special-use attributes automap knows, in the order they are checked.
const SPECIALS: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

/// Names guessed to have a special use when a folder has no attribute, in UTF-8 (encoded to
/// modified UTF-7 before use). Matched exactly, with or without the side's prefix.
const GUESSES: [(&str, &[&str]); 7] = [
    ("\\All", &["All", "All Messages", "Вся почта"]),
    ("\\Archive", &["Archive", "Archives", "Архив"]),
    (
        "\\Drafts",
        &["Drafts", "DRAFTS", "Szkice", "Wersje robocze", "Черновики"],
    ),
    ("\\Flagged", &["Flagged", "Starred", "Помеченные"]),
    (
        "\\Junk",
        &[
            "Junk",
            "junk",
            "Spam",
            "SPAM",
            "Potwierdzony spam",
            "Junk E-Mail",
            "Junk Email",
            "Спам",
            "Wiadomości-śmieci",
        ],
    ),
    (
        "\\Sent",
        &[
            "Sent",
            "Sent Messages",
            "Sent Items",
            "Gesendete Elemente",
            "Gesendete Objekte",
            "Éléments envoyés",
            "E\u{301}le\u{301}ments envoye\u{301}s",
            "Envoyé",
            "Objets envoyés",
            "Elementos enviados",
            "Posta inviata",
            "Elementy wysłane",
            "送信済み",
            "Отправленные",
        ],
    ),
    (
        "\\Trash",
        &[
            "Trash",
            "TRASH",
            "Kosz",
            "Deleted Items",
            "Deleted Messages",
            "Удаленные",
            "Корзина",
        ],
    ),
];

/// Maps OLD folder names to NEW folder names for one run.
#[derive(Debug, Clone)]
pub struct Mapper {
    from: Side,
    to: Side,
    f1f2: HashMap<String, String>,
    automap: BTreeMap<String, String>,
    subfolder1: Option<String>,
    /// The subfolder2 substitutions, then the user's.
    regexes: Vec<PerlSubst>,
    /// The INBOX case fix: a final name equal to `.0` becomes `.1`.
    inbox_fix: Option<(&'static str, &'static str)>,
}

impl Mapper {
    /// Builds the mapper: compiles `--regextrans2` (after expanding `$h1_prefix`, `$h1_sep`,
    /// `$h2_prefix`, `$h2_sep`, also in `${…}` form), prepends the three subfolder2 substitutions,
    /// computes the automap table from the LIST replies (name and attributes) and the INBOX fix.
    /// `--subfolder1` and `--subfolder2` turn automap off.
    pub fn new(
        opts: &MapperOptions,
        from: &Side,
        to: &Side,
        old_list: &[(String, Vec<String>)],
        new_list: &[(String, Vec<String>)],
    ) -> Result<Mapper, PerlError> {
        let subfolder2 = opts
            .subfolder2
            .as_deref()
            .map(sanitize_subfolder)
            .filter(|s| !s.is_empty());
        let subfolder1 = opts.subfolder1.clone().filter(|s| !s.is_empty());
        let mut regexes = match &subfolder2 {
            Some(sub) => subfolder2_substs(sub, to)?,
            None => Vec::new(),
        };
        for value in &opts.regextrans2 {
            regexes.push(PerlSubst::parse(&expand_vars(value, from, to))?);
        }
        let automap = if opts.automap && subfolder1.is_none() && subfolder2.is_none() {
            automap_table(from, to, old_list, new_list)
        } else {
            BTreeMap::new()
        };
        let inbox_fix = if opts.fix_inbox {
            let old_has = |n: &str| old_list.iter().any(|(f, _)| f == n);
            let new_has = |n: &str| new_list.iter().any(|(f, _)| f == n);
            if old_has("INBOX") && new_has("Inbox") && !new_has("INBOX") {
                Some(("INBOX", "Inbox"))
            } else if old_has("Inbox") && new_has("INBOX") && !new_has("Inbox") {
                Some(("Inbox", "INBOX"))
            } else {
                None
            }
        } else {
            None
        };
        Ok(Mapper {
            from: from.clone(),
            to: to.clone(),
            // Later `--f1f2` values for the same OLD name win, as with a Perl hash.
            f1f2: opts.f1f2.iter().cloned().collect(),
            automap,
            subfolder1,
            regexes,
            inbox_fix,
        })
    }

    /// The NEW name for an OLD name: `--f1f2` verbatim, else automap verbatim, else strip
    /// `subfolder1<sep1>`, translate prefix and separator (empty or prefix1 alone is INBOX), then
    /// apply the substitutions in order and the INBOX case fix last.
    pub fn map(&self, old_name: &str) -> String {
        if let Some(new) = self.f1f2.get(old_name) {
            return new.clone();
        }
        if let Some(new) = self.automap.get(old_name) {
            return new.clone();
        }
        let stripped = self.strip_subfolder1(old_name);
        let mut name = map_name(stripped, &self.from, &self.to);
        for subst in &self.regexes {
            name = subst.apply(&name);
        }
        match self.inbox_fix {
            Some((from, to)) if name == from => to.to_string(),
            _ => name,
        }
    }

    /// The automap table (OLD name → NEW name), for `--justautomap` and the log.
    pub fn automap(&self) -> &BTreeMap<String, String> {
        &self.automap
    }

    /// Removes `subfolder1<sep1>` (or `prefix1 subfolder1<sep1>`) from the front of `old`; the
    /// subfolder itself becomes empty, which the translation turns into INBOX.
    fn strip_subfolder1<'a>(&self, old: &'a str) -> &'a str {
        let Some(sub) = &self.subfolder1 else {
            return old;
        };
        let with_prefix = format!("{}{sub}", self.from.prefix);
        for stem in [sub.as_str(), with_prefix.as_str()] {
            if old == stem {
                return "";
            }
            if let Some(rest) = old
                .strip_prefix(stem)
                .and_then(|r| r.strip_prefix(self.from.sep))
            {
                return rest;
            }
        }
        old
    }
}

/// Keeps only the characters imapsync allows in `--subfolder2`: `-_a-zA-Z0-9./` and space.
fn sanitize_subfolder(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ' '))
        .collect()
}

/// The three subfolder2 substitutions, in the order they apply: `s,^P(.*),PSsep$1,`,
/// `s,^INBOX$,PSsepINBOX,` and `s,^(P){2},P,` with P = prefix2 (taken literally here).
fn subfolder2_substs(sub: &str, to: &Side) -> Result<Vec<PerlSubst>, PerlError> {
    let p = regex::escape(&to.prefix);
    let r = |s: &str| {
        s.chars().fold(String::new(), |mut out, c| {
            if matches!(c, '\\' | '$' | '@') {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    let (rp, rs, rsep) = (r(&to.prefix), r(sub), r(&to.sep.to_string()));
    let parts = [
        (format!("^{p}(.*)"), format!("{rp}{rs}{rsep}$1")),
        ("^INBOX$".to_string(), format!("{rp}{rs}{rsep}INBOX")),
        (format!("^({p}){{2}}"), rp.clone()),
    ];
    parts
        .iter()
        .map(|(pat, repl)| {
            let d = [',', '#', '!', '%', '~', ':', ';', '=', '|']
                .into_iter()
                .find(|d| !pat.contains(*d) && !repl.contains(*d))
                .unwrap_or(',');
            PerlSubst::parse(&format!("s{d}{pat}{d}{repl}{d}"))
        })
        .collect()
}

/// Expands `$h1_prefix`, `$h1_sep`, `$h2_prefix` and `$h2_sep` (also as `${name}`) in a
/// `--regextrans2` value, inserting the values as they are, as Perl interpolation would.
/// An escaped `\$` and longer identifiers (`$h2_prefixes`) are left alone.
fn expand_vars(value: &str, from: &Side, to: &Side) -> String {
    let vars = [
        ("h1_prefix", from.prefix.clone()),
        ("h1_sep", from.sep.to_string()),
        ("h2_prefix", to.prefix.clone()),
        ("h2_sep", to.sep.to_string()),
    ];
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    'outer: while let Some(pos) = rest.find(['\\', '$']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(escaped) = tail.strip_prefix('\\') {
            let n = escaped.chars().next().map_or(0, char::len_utf8);
            out.push_str(&tail[..1 + n]);
            rest = &tail[1 + n..];
            continue;
        }
        let after = &tail[1..];
        for (name, val) in &vars {
            let braced = format!("{{{name}}}");
            if let Some(r) = after.strip_prefix(braced.as_str()) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
            if let Some(r) = after.strip_prefix(name)
                && !r.starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The special use of each folder of one side: from its attributes, else guessed by name for the
/// specials no attribute gave (each special guessed for at most one folder, the first in byte order).
struct Specials {
    /// Folder → special, from LIST attributes (the first known attribute wins).
    real: BTreeMap<String, &'static str>,
    /// Folder → special, guessed.
    guessed: BTreeMap<String, &'static str>,
}

impl Specials {
    fn new(list: &[(String, Vec<String>)], side: &Side) -> Specials {
        let mut real = BTreeMap::new();
        for (name, attrs) in list {
            let special = attrs.iter().find_map(|a| {
                SPECIALS
                    .iter()
                    .find(|s| s.eq_ignore_ascii_case(a.trim()))
                    .copied()
            });
            if let Some(special) = special {
                real.entry(name.clone()).or_insert(special);
            }
        }
        let mut names: Vec<&String> = list
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !real.contains_key(*n))
            .collect();
        names.sort();
        let mut guessed: BTreeMap<String, &'static str> = BTreeMap::new();
        for name in names {
            let bare = name
                .strip_prefix(side.prefix.as_str())
                .filter(|_| !side.prefix.is_empty());
            let special = GUESSES.iter().find_map(|(special, guesses)| {
                guesses
                    .iter()
                    .map(|g| utf7_encode(g))
                    .any(|g| *name == g || bare == Some(g.as_str()))
                    .then_some(*special)
            });
            if let Some(special) = special
                && !guessed.values().any(|s| *s == special)
            {
                guessed.insert(name.clone(), special);
            }
        }
        Specials { real, guessed }
    }

    /// The folder holding `special`: by attribute (first in byte order), else by guess.
    fn folder_for(&self, special: &str) -> Option<&String> {
        fn find<'a>(m: &'a BTreeMap<String, &'static str>, special: &str) -> Option<&'a String> {
            m.iter().find(|(_, s)| **s == special).map(|(n, _)| n)
        }
        find(&self.real, special).or_else(|| find(&self.guessed, special))
    }
}

/// OLD name → NEW name for every OLD folder whose special use (real, else guessed) NEW has.
fn automap_table(
    from: &Side,
    to: &Side,
    old_list: &[(String, Vec<String>)],
    new_list: &[(String, Vec<String>)],
) -> BTreeMap<String, String> {
    let old = Specials::new(old_list, from);
    let new = Specials::new(new_list, to);
    old.real
        .iter()
        .chain(old.guessed.iter())
        .filter_map(|(name, special)| Some((name.clone(), new.folder_for(special)?.clone())))
        .collect()
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

    fn list(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        entries
            .iter()
            .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn plain(names: &[&str]) -> Vec<(String, Vec<String>)> {
        names.iter().map(|n| (n.to_string(), Vec::new())).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn translation_and_regextrans2() {
        let slash = side('/', "");
        let dot_inbox = side('.', "INBOX.");
        let dot = side('.', "");
        let old = plain(&["INBOX"]);
        let new = plain(&["INBOX"]);
        let gmail = strings(&[r"s,\[Gmail\].,,", "s,E-mails enviados,Sent,"]);
        for (case, opts, from, to, input, expected) in [
            (
                "gmail",
                MapperOptions {
                    regextrans2: gmail.clone(),
                    ..Default::default()
                },
                &slash,
                &slash,
                "[Gmail]/E-mails enviados",
                "Sent",
            ),
            (
                "gmail other",
                MapperOptions {
                    regextrans2: gmail.clone(),
                    ..Default::default()
                },
                &slash,
                &slash,
                "[Gmail]/Starred",
                "Starred",
            ),
            (
                "slash->dot",
                Default::default(),
                &slash,
                &dot_inbox,
                "a/b/c",
                "INBOX.a.b.c",
            ),
            (
                "slash->dot inbox",
                Default::default(),
                &slash,
                &dot_inbox,
                "INBOX",
                "INBOX",
            ),
            (
                "slash->dot plain",
                Default::default(),
                &slash,
                &dot,
                "a/b",
                "a.b",
            ),
            (
                "dot->slash",
                Default::default(),
                &dot_inbox,
                &slash,
                "INBOX.a.b",
                "a/b",
            ),
            (
                "dot->slash inbox",
                Default::default(),
                &dot_inbox,
                &slash,
                "INBOX",
                "INBOX",
            ),
            (
                "dot->slash bare prefix",
                Default::default(),
                &dot_inbox,
                &slash,
                "INBOX.",
                "INBOX",
            ),
            (
                "dot->slash no prefix",
                Default::default(),
                &dot,
                &slash,
                "x.y.z",
                "x/y/z",
            ),
            (
                "h2_prefix",
                MapperOptions {
                    regextrans2: strings(&[
                        "s,^${h2_prefix}Old$h2_sep,${h2_prefix}Archive$h2_sep,",
                    ]),
                    ..Default::default()
                },
                &slash,
                &dot_inbox,
                "Old/2020",
                "INBOX.Archive.2020",
            ),
            (
                "h1 vars",
                MapperOptions {
                    regextrans2: strings(&["s,^,[${h1_prefix}|${h1_sep}],"]),
                    ..Default::default()
                },
                &dot_inbox,
                &slash,
                "INBOX.x",
                "[INBOX.|.]x",
            ),
            (
                "regextrans2 in order",
                MapperOptions {
                    regextrans2: strings(&["s/a/b/", "s/b/c/", "tr/c/d/"]),
                    ..Default::default()
                },
                &slash,
                &slash,
                "a",
                "d",
            ),
            (
                "utf7 unchanged",
                Default::default(),
                &slash,
                &dot_inbox,
                "Entw&APw-rfe/&BB4EQgQ,BEAEMAQy-",
                "INBOX.Entw&APw-rfe.&BB4EQgQ,BEAEMAQy-",
            ),
            (
                "utf7 with regex",
                MapperOptions {
                    regextrans2: strings(&["s/^Archive/Old/"]),
                    ..Default::default()
                },
                &slash,
                &slash,
                "Archive/&ZeVnLIqe-",
                "Old/&ZeVnLIqe-",
            ),
        ] {
            let m = Mapper::new(&opts, from, to, &old, &new).unwrap();
            assert_eq!(m.map(input), expected, "{case}");
        }
    }

    #[test]
    fn subfolders() {
        let slash = side('/', "");
        let dot_inbox = side('.', "INBOX.");
        let sub = |s1: Option<&str>, s2: Option<&str>| MapperOptions {
            subfolder1: s1.map(str::to_string),
            subfolder2: s2.map(str::to_string),
            automap: true,
            ..Default::default()
        };
        let old = plain(&["INBOX", "Sent", "test", "test/foo", "test/foo/bar"]);
        let old_dot = plain(&["INBOX", "INBOX.test", "INBOX.test.foo"]);
        let new = plain(&["INBOX", "Sent"]);
        for (case, opts, from, to, old, input, expected) in [
            (
                "s2 inbox",
                sub(None, Some("otheraccountfolder")),
                &slash,
                &slash,
                &old,
                "INBOX",
                "otheraccountfolder/INBOX",
            ),
            (
                "s2 sent",
                sub(None, Some("otheraccountfolder")),
                &slash,
                &slash,
                &old,
                "Sent",
                "otheraccountfolder/Sent",
            ),
            (
                "s2 nested",
                sub(None, Some("other")),
                &slash,
                &slash,
                &old,
                "test/foo",
                "other/test/foo",
            ),
            (
                "s2 sanitized",
                sub(None, Some("o$t*h(er")),
                &slash,
                &slash,
                &old,
                "Sent",
                "other/Sent",
            ),
            (
                "s2 prefix inbox",
                sub(None, Some("other")),
                &slash,
                &dot_inbox,
                &old,
                "INBOX",
                "INBOX.other.INBOX",
            ),
            (
                "s2 prefix sent",
                sub(None, Some("other")),
                &slash,
                &dot_inbox,
                &old,
                "Sent",
                "INBOX.other.Sent",
            ),
            (
                "s2 prefix nested",
                sub(None, Some("other")),
                &slash,
                &dot_inbox,
                &old,
                "a/b",
                "INBOX.other.a.b",
            ),
            (
                "s1 s2 child",
                sub(Some("test"), Some("test2")),
                &slash,
                &slash,
                &old,
                "test/foo",
                "test2/foo",
            ),
            (
                "s1 s2 grandchild",
                sub(Some("test"), Some("test2")),
                &slash,
                &slash,
                &old,
                "test/foo/bar",
                "test2/foo/bar",
            ),
            (
                "s1 s2 itself",
                sub(Some("test"), Some("test2")),
                &slash,
                &slash,
                &old,
                "test",
                "test2/INBOX",
            ),
            (
                "s1 only child",
                sub(Some("test"), None),
                &slash,
                &dot_inbox,
                &old,
                "test/foo",
                "INBOX.foo",
            ),
            (
                "s1 only itself",
                sub(Some("test"), None),
                &slash,
                &dot_inbox,
                &old,
                "test",
                "INBOX",
            ),
            (
                "s1 not a prefix",
                sub(Some("test"), None),
                &slash,
                &slash,
                &old,
                "testing",
                "testing",
            ),
            (
                "s1 with prefix1",
                sub(Some("test"), None),
                &dot_inbox,
                &slash,
                &old_dot,
                "INBOX.test.foo",
                "foo",
            ),
            (
                "s1 with prefix1 itself",
                sub(Some("test"), None),
                &dot_inbox,
                &slash,
                &old_dot,
                "INBOX.test",
                "INBOX",
            ),
        ] {
            let m = Mapper::new(&opts, from, to, old, &new).unwrap();
            assert!(
                m.automap().is_empty(),
                "{case}: subfolders turn automap off"
            );
            assert_eq!(m.map(input), expected, "{case}");
        }
    }

    #[test]
    fn automap() {
        let slash = side('/', "");
        let dot_inbox = side('.', "INBOX.");
        let new_special = list(&[
            ("INBOX", &[]),
            ("Sent", &["\\HasNoChildren", "\\Sent"]),
            ("Trash", &["\\Trash"]),
            ("Papierkorb", &[]),
            ("Junk", &["\\junk"]),
        ]);
        let new_plain = plain(&[
            "INBOX",
            "INBOX.Sent Messages",
            "INBOX.Deleted Messages",
            "INBOX.Archive",
        ]);
        // OLD has one guessable folder per case (one folder per special is guessed).
        let old_with = |name: &str| {
            let mut old = list(&[("INBOX", &[]), ("Archiv", &["\\Archive"]), ("Other", &[])]);
            if !old.iter().any(|(n, _)| n == name) {
                old.push((name.to_string(), Vec::new()));
            }
            old
        };
        let on = MapperOptions {
            automap: true,
            regextrans2: strings(&["s/^/X/"]),
            ..Default::default()
        };
        for (case, opts, to, new, input, expected) in [
            (
                "sent items",
                &on,
                &slash,
                &new_special,
                "Sent Items",
                "Sent",
            ),
            (
                "gesendete",
                &on,
                &slash,
                &new_special,
                "Gesendete Elemente",
                "Sent",
            ),
            (
                "french utf7",
                &on,
                &slash,
                &new_special,
                "&AMk-l&AOk-ments envoy&AOk-s",
                "Sent",
            ),
            (
                "deleted items",
                &on,
                &slash,
                &new_special,
                "Deleted Items",
                "Trash",
            ),
            ("junk attr case", &on, &slash, &new_special, "Spam", "Junk"),
            (
                "no new special",
                &on,
                &slash,
                &new_special,
                "Archiv",
                "XArchiv",
            ),
            ("unmatched", &on, &slash, &new_special, "Other", "XOther"),
            (
                "guess new sent",
                &on,
                &dot_inbox,
                &new_plain,
                "Sent Items",
                "INBOX.Sent Messages",
            ),
            (
                "guess new trash",
                &on,
                &dot_inbox,
                &new_plain,
                "Deleted Items",
                "INBOX.Deleted Messages",
            ),
            (
                "real old to guessed new",
                &on,
                &dot_inbox,
                &new_plain,
                "Archiv",
                "INBOX.Archive",
            ),
            (
                "off",
                &MapperOptions {
                    regextrans2: strings(&["s/^/X/"]),
                    ..Default::default()
                },
                &slash,
                &new_special,
                "Sent Items",
                "XSent Items",
            ),
            (
                "f1f2 beats automap",
                &MapperOptions {
                    f1f2: vec![("Sent Items".into(), "Old Sent".into())],
                    ..on.clone()
                },
                &slash,
                &new_special,
                "Sent Items",
                "Old Sent",
            ),
            (
                "f1f2 beats regextrans2",
                &MapperOptions {
                    f1f2: vec![("Other".into(), "a/b".into())],
                    ..on.clone()
                },
                &dot_inbox,
                &new_plain,
                "Other",
                "a/b",
            ),
            (
                "last f1f2 wins",
                &MapperOptions {
                    f1f2: vec![("Other".into(), "A".into()), ("Other".into(), "B".into())],
                    ..on.clone()
                },
                &slash,
                &new_special,
                "Other",
                "B",
            ),
        ] {
            let m = Mapper::new(opts, &slash, to, &old_with(input), new).unwrap();
            assert_eq!(m.map(input), expected, "{case}");
        }
    }

    #[test]
    fn guessing_rules() {
        let slash = side('/', "");
        let dot_inbox = side('.', "INBOX.");
        // Only one folder per special is guessed; attributes beat guesses; prefix is optional.
        let s = Specials::new(
            &plain(&["Sent", "Sent Items", "INBOX.Trash", "Kosz"]),
            &dot_inbox,
        );
        assert_eq!(s.folder_for("\\Sent").map(String::as_str), Some("Sent"));
        assert_eq!(s.guessed.get("Sent Items"), None);
        assert_eq!(
            s.folder_for("\\Trash").map(String::as_str),
            Some("INBOX.Trash")
        );
        let s = Specials::new(&list(&[("Sent", &[]), ("Outbox", &["\\Sent"])]), &slash);
        assert_eq!(s.folder_for("\\Sent").map(String::as_str), Some("Outbox"));
        // An attributed old folder and a guessed one both map to NEW's \Sent.
        let new = list(&[("Sent", &["\\Sent"])]);
        let old = list(&[("Outbox", &["\\Sent"]), ("Sent Items", &[])]);
        let opts = MapperOptions {
            automap: true,
            ..Default::default()
        };
        let m = Mapper::new(&opts, &slash, &slash, &old, &new).unwrap();
        assert_eq!(m.map("Outbox"), "Sent");
        assert_eq!(m.map("Sent Items"), "Sent");
    }

    #[test]
    fn inbox_case() {
        let slash = side('/', "");
        let dot_inbox = side('.', "INBOX.");
        for (case, old, new, fix, input, expected) in [
            (
                "INBOX->Inbox",
                &["INBOX"][..],
                &["Inbox"][..],
                true,
                "INBOX",
                "Inbox",
            ),
            (
                "Inbox->INBOX",
                &["Inbox"][..],
                &["INBOX"][..],
                true,
                "Inbox",
                "INBOX",
            ),
            (
                "both on new",
                &["INBOX"][..],
                &["INBOX", "Inbox"][..],
                true,
                "INBOX",
                "INBOX",
            ),
            (
                "fix off",
                &["INBOX"][..],
                &["Inbox"][..],
                false,
                "INBOX",
                "INBOX",
            ),
            (
                "other names",
                &["INBOX", "Sent"][..],
                &["Inbox"][..],
                true,
                "Sent",
                "Sent",
            ),
            (
                "prefix INBOX",
                &["INBOX", "INBOX.INBOX"][..],
                &["Inbox"][..],
                true,
                "INBOX.INBOX",
                "Inbox",
            ),
        ] {
            let opts = MapperOptions {
                fix_inbox: fix,
                ..Default::default()
            };
            let m = Mapper::new(&opts, &dot_inbox, &slash, &plain(old), &plain(new)).unwrap();
            assert_eq!(m.map(input), expected, "{case}");
        }
        // The fix runs after the user's regexes.
        let opts = MapperOptions {
            regextrans2: strings(&["s/^Mail$/INBOX/"]),
            ..Default::default()
        };
        let m = Mapper::new(
            &opts,
            &slash,
            &slash,
            &plain(&["INBOX", "Mail"]),
            &plain(&["Inbox"]),
        )
        .unwrap();
        assert_eq!(m.map("Mail"), "Inbox");
    }

    #[test]
    fn bad_regex_and_vars() {
        let slash = side('/', "");
        let opts = MapperOptions {
            regextrans2: strings(&["s/(/x/"]),
            ..Default::default()
        };
        assert!(Mapper::new(&opts, &slash, &slash, &[], &[]).is_err());
        let dot = side('.', "INBOX.");
        for (input, expected) in [
            ("$h2_prefix", "INBOX."),
            ("${h2_prefix}x", "INBOX.x"),
            ("$h2_prefixes", "$h2_prefixes"),
            ("\\$h2_sep", "\\$h2_sep"),
            ("a$h2_sep$1", "a.$1"),
            ("$h1_sep${h1_prefix}", "/"),
        ] {
            assert_eq!(expand_vars(input, &slash, &dot), expected, "{input}");
        }
    }
}
