//! An account's folder names: which OLD folder each NEW folder is, the OLD name of a folder the
//! user creates through the proxy, names as NEW spells them, and how names follow a RENAME (one
//! rule for this map and for the stored folder pairs). Pure.

use std::collections::BTreeMap;
use std::time::Instant;

use super::journal::Write;
use crate::mapping::{self, Side};

/// NEW → OLD names of one account's folders, and each side's namespace once OLD's tree is mapped.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub prepared: bool,
    /// When OLD's tree was last mapped (a later login or sweep maps it again after a while).
    pub mapped_at: Option<Instant>,
    new_to_old: BTreeMap<String, String>,
    /// (OLD, NEW) namespaces.
    sides: Option<(Side, Side)>,
}

impl Names {
    /// OLD's tree as just mapped: `pairs` of (OLD, NEW) names.
    pub fn set_tree(&mut self, pairs: Vec<(String, String)>, old: Side, new: Side, at: Instant) {
        self.prepared = true;
        self.mapped_at = Some(at);
        self.new_to_old = pairs.into_iter().map(|(o, n)| (n, o)).collect();
        self.sides = Some((old, new));
    }

    /// Until OLD's tree is mapped (OLD unreachable since the proxy started), the folder pairs
    /// the store remembers name the folders, so writes journaled meanwhile carry their OLD
    /// names instead of none (which would mean "not on OLD": nothing to mirror).
    pub fn remember(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        if self.prepared {
            return;
        }
        for (old, new) in pairs {
            self.new_to_old.entry(new).or_insert(old);
        }
    }

    pub fn old_of(&self, new: &str) -> Option<&str> {
        self.new_to_old.get(new).map(String::as_str)
    }

    /// Every mapped (NEW, OLD) pair.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.new_to_old
            .iter()
            .map(|(n, o)| (n.as_str(), o.as_str()))
    }

    /// NEW's hierarchy separator, once known.
    pub fn new_sep(&self) -> Option<char> {
        self.sides.as_ref().map(|(_, new)| new.sep)
    }

    pub fn old_sep(&self) -> Option<char> {
        self.sides.as_ref().map(|(old, _)| old.sep)
    }

    /// The OLD name for a folder created on NEW: NEW's prefix and separator swapped for OLD's.
    pub fn reverse(&self, new: &str) -> Option<String> {
        let (old_side, new_side) = self.sides.as_ref()?;
        Some(mapping::map_name(new, new_side, old_side))
    }

    pub fn insert(&mut self, new: &str, old: &str) {
        self.new_to_old.insert(new.to_string(), old.to_string());
    }

    /// NEW's tree changes as `write` says; returns the OLD names the folders it names had
    /// before (a folder without one is not on OLD). A folder the user creates gets its OLD
    /// name now, so writes journaled before the mirror creates it on OLD find it.
    pub fn journal(&mut self, write: &Write) -> BTreeMap<String, String> {
        let mut old = BTreeMap::new();
        let mut note = |names: &Names, new: &str| {
            if let Some(o) = names.old_of(new) {
                old.insert(new.to_string(), o.to_string());
            }
        };
        match write {
            Write::Create { folder } => {
                if self.old_of(folder).is_none()
                    && let Some(o) = self.reverse(folder)
                {
                    self.insert(folder, &o);
                }
                note(self, folder);
            }
            Write::Delete { folder } => {
                note(self, folder);
                self.new_to_old.remove(folder);
            }
            Write::Rename { from, to } => {
                note(self, from);
                let old_to = old.contains_key(from).then(|| self.reverse(to)).flatten();
                if let Some(o) = &old_to {
                    old.insert(to.clone(), o.clone());
                }
                let on_old = old.get(from).cloned().zip(old_to);
                self.rename(from, to, on_old);
            }
            other => {
                for f in other.folders() {
                    note(self, f);
                }
            }
        }
        old
    }

    /// `from` and the folders below it now live under `to` on NEW; with `on_old` (OLD's
    /// `from` and `to`), their OLD names follow as the mirror's RENAME will move them, so writes
    /// journaled after this one name OLD's folders as they will be when they are replayed.
    pub fn rename(&mut self, from: &str, to: &str, on_old: Option<(String, String)>) {
        let (new_sep, old_sep) = (self.new_sep().unwrap_or('/'), self.old_sep().unwrap_or('/'));
        let moved: Vec<(String, String)> = self
            .new_to_old
            .keys()
            .filter_map(|n| Some((n.clone(), renamed(n, from, to, new_sep)?)))
            .collect();
        for (before, after) in moved {
            if let Some(mut o) = self.new_to_old.remove(&before) {
                if let Some((old_from, old_to)) = &on_old
                    && let Some(r) = renamed(&o, old_from, old_to, old_sep)
                {
                    o = r;
                }
                self.new_to_old.insert(after, o);
            }
        }
    }
}

/// `name` after `top` was renamed to `to`: `top` itself, or a folder below it (`sep` apart);
/// `None` for any other name.
pub(crate) fn renamed(name: &str, top: &str, to: &str, sep: char) -> Option<String> {
    let rest = name.strip_prefix(top)?;
    (rest.is_empty() || rest.starts_with(sep)).then(|| format!("{to}{rest}"))
}

/// A folder name as a client sent it, spelled as NEW knows it: `INBOX` in upper case (also as
/// the first level of a hierarchy), without a trailing hierarchy separator (`CREATE "foo/"`
/// creates `foo`).
pub fn normalise(name: &str, sep: Option<char>) -> String {
    let mut name = name;
    if let Some(sep) = sep {
        while name.len() > 1 && name.ends_with(sep) {
            name = &name[..name.len() - sep.len_utf8()];
        }
    }
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    match (sep, name.get(..5), name.get(5..)) {
        (Some(sep), Some(inbox), Some(rest))
            if inbox.eq_ignore_ascii_case("INBOX") && rest.starts_with(sep) =>
        {
            format!("INBOX{rest}")
        }
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        n.set_tree(
            vec![
                ("INBOX".into(), "INBOX".into()),
                ("INBOX.Work".into(), "Work".into()),
                ("INBOX.Work.Q1".into(), "Work/Q1".into()),
                ("INBOX.Workshop".into(), "Workshop".into()),
            ],
            Side {
                sep: '.',
                prefix: "INBOX.".into(),
            },
            Side {
                sep: '/',
                prefix: String::new(),
            },
            Instant::now(),
        );
        n
    }

    #[test]
    fn names_as_new_spells_them() {
        for (name, sep, expected) in [
            ("inbox", Some('/'), "INBOX"),
            ("Inbox/", Some('/'), "INBOX"),
            ("foo/", Some('/'), "foo"),
            ("foo//", Some('/'), "foo"),
            ("a/b/", Some('/'), "a/b"),
            ("inbox/Sub", Some('/'), "INBOX/Sub"),
            ("inbox.Sub.", Some('.'), "INBOX.Sub"),
            ("inboxes", Some('/'), "inboxes"),
            ("/", Some('/'), "/"),
            ("foo/", None, "foo/"),
            ("&AOQ-/", Some('/'), "&AOQ-"),
        ] {
            assert_eq!(normalise(name, sep), expected, "{name:?}");
        }
    }

    #[test]
    fn remembered_pairs_name_folders_until_the_tree_is_mapped() {
        let mut n = Names::default();
        n.remember([("INBOX.Work".to_string(), "Work".to_string())]);
        let old = n.journal(&Write::Expunge {
            folder: "Work".into(),
            uids: None,
        });
        assert_eq!(old.get("Work").map(String::as_str), Some("INBOX.Work"));
        // Once mapped, OLD's tree is the truth and the store's memory is not consulted.
        let mut n = names();
        n.remember([("INBOX.Stale".to_string(), "Stale".to_string())]);
        assert_eq!(n.old_of("Stale"), None);
    }

    #[test]
    fn one_rename_rule() {
        for (name, expected) in [
            ("Work", Some("Job")),
            ("Work/Q1", Some("Job/Q1")),
            ("Workshop", None),
            ("Other", None),
        ] {
            assert_eq!(
                renamed(name, "Work", "Job", '/').as_deref(),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn journaled_writes_carry_the_old_names_of_their_time() {
        let mut n = names();
        // CREATE: named on OLD at once; DELETE of a folder never opened still knows its OLD name.
        let old = n.journal(&Write::Create {
            folder: "Fresh".into(),
        });
        assert_eq!(old.get("Fresh").map(String::as_str), Some("INBOX.Fresh"));
        let old = n.journal(&Write::Delete {
            folder: "Workshop".into(),
        });
        assert_eq!(
            old.get("Workshop").map(String::as_str),
            Some("INBOX.Workshop")
        );
        assert_eq!(n.old_of("Workshop"), None);
        // APPEND then RENAME: the APPEND names the OLD folder as it was; the RENAME moves the
        // subtree on both sides.
        let old = n.journal(&Write::Append {
            folder: "Work".into(),
            uids: vec![7],
            validity: None,
        });
        assert_eq!(old.get("Work").map(String::as_str), Some("INBOX.Work"));
        let old = n.journal(&Write::Rename {
            from: "Work".into(),
            to: "Job".into(),
        });
        assert_eq!(old.get("Work").map(String::as_str), Some("INBOX.Work"));
        assert_eq!(old.get("Job").map(String::as_str), Some("INBOX.Job"));
        // Later writes name OLD's folders as the RENAME's replay leaves them.
        assert_eq!(n.old_of("Job"), Some("INBOX.Job"));
        assert_eq!(n.old_of("Job/Q1"), Some("INBOX.Job.Q1"));
        assert_eq!(n.old_of("Work"), None);
        let old = n.journal(&Write::Subscribe {
            folder: "Job".into(),
            subscribed: true,
        });
        assert_eq!(old.get("Job").map(String::as_str), Some("INBOX.Job"));
        // A folder that is not on OLD has no OLD name, and renaming it invents none.
        let old = n.journal(&Write::Rename {
            from: "Elsewhere".into(),
            to: "Else".into(),
        });
        assert!(old.is_empty());
    }
}
