//! The journal of user writes (DESIGN.md §2, dual write): what NEW accepted, in NEW's folder
//! names and UIDs (UID sets as ranges), with the OLD names those folders had when it was
//! journaled, stored as JSON until the mirror has replayed it on OLD. Pure data and encoding.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::alone::Stamp;
use super::names::renamed;
use crate::imap::uidset::Ranges;
use crate::sync::flags::FlagSet;

/// One write NEW accepted. Folder names are NEW's raw (modified UTF-7) names, normalised as NEW
/// normalises them (INBOX upper case, no trailing separator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Write {
    /// STORE: `flags` were added, removed or (`replace`) set on these NEW UIDs (`None`: the
    /// command named sequence numbers or `*`, so every linked message of the folder is looked at).
    Flags {
        folder: String,
        #[serde(with = "optional_ranges")]
        uids: Option<Ranges>,
        flags: Vec<String>,
        replace: bool,
        /// `None` in entries of an earlier version (NEW's value is then read back).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op: Option<FlagOp>,
    },
    /// EXPUNGE, UID EXPUNGE or CLOSE: whatever vanished from the NEW folder goes on OLD too.
    /// `uids`: the messages NEW reported expunged to the session (its EXPUNGE or VANISHED
    /// responses since the last such entry), when it knew the UID of each; `None` for CLOSE,
    /// a session that did not know them, and entries of an earlier version (the mirror then
    /// compares the folder's links with NEW).
    Expunge {
        folder: String,
        #[serde(
            default,
            with = "optional_ranges",
            skip_serializing_if = "Option::is_none"
        )]
        uids: Option<Ranges>,
    },
    /// COPY or MOVE, with NEW's COPYUID as (source UID, destination UID) pairs.
    Copy {
        from: String,
        to: String,
        #[serde(with = "pairs")]
        uids: Vec<(u32, u32)>,
        moved: bool,
    },
    /// APPEND, with NEW's APPENDUID UIDs and UIDVALIDITY (`None` in entries of an earlier
    /// version).
    Append {
        folder: String,
        uids: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validity: Option<u32>,
    },
    Create {
        folder: String,
    },
    Delete {
        folder: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        folder: String,
        subscribed: bool,
    },
}

/// How a STORE changed the flags it named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagOp {
    /// `+FLAGS`: set.
    Add,
    /// `-FLAGS`: cleared.
    Remove,
    /// `FLAGS`: exactly these.
    Replace,
}

impl FlagOp {
    /// `flags` after this operation with `named`.
    pub fn apply(self, flags: &FlagSet, named: &FlagSet) -> FlagSet {
        match self {
            FlagOp::Add => flags.iter().chain(named.iter()).collect(),
            FlagOp::Remove => flags.iter().filter(|f| !named.contains(f)).collect(),
            FlagOp::Replace => named.clone(),
        }
    }
}

/// The kinds of entries that take messages or folders elsewhere (or copy messages): what
/// `follow`, `trace` and `folder_after` look at. Flag changes, appends and expunges move nothing.
pub(crate) const MOVING: [&str; 4] = ["copy", "move", "rename", "delete"];

impl Write {
    /// The journal's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::Flags { .. } => "flags",
            Write::Expunge { .. } => "expunge",
            Write::Copy { moved: false, .. } => "copy",
            Write::Copy { moved: true, .. } => "move",
            Write::Append { .. } => "append",
            Write::Create { .. } => "create",
            Write::Delete { .. } => "delete",
            Write::Rename { .. } => "rename",
            Write::Subscribe { .. } => "subscribe",
        }
    }

    /// The NEW folders the write names.
    pub fn folders(&self) -> Vec<&str> {
        match self {
            Write::Flags { folder, .. }
            | Write::Expunge { folder, .. }
            | Write::Append { folder, .. }
            | Write::Create { folder }
            | Write::Delete { folder }
            | Write::Subscribe { folder, .. } => vec![folder],
            Write::Copy { from, to, .. } | Write::Rename { from, to } => vec![from, to],
        }
    }
}

/// The NEW name of `folder` after the `later` writes (in journal order): RENAMEs move it (a
/// folder below a renamed one too); `None` once a DELETE removed it.
pub(crate) fn folder_after<'a>(
    later: impl IntoIterator<Item = &'a Write>,
    folder: &str,
    sep: char,
) -> Option<String> {
    let mut name = folder.to_string();
    for write in later {
        match write {
            Write::Rename { from, to } => {
                if let Some(moved) = renamed(&name, from, to, sep) {
                    name = moved;
                }
            }
            Write::Delete { folder } if *folder == name => return None,
            _ => {}
        }
    }
    Some(name)
}

/// Where each NEW message is: its folder and UID, `None` once its folder was deleted.
pub(crate) type Places = BTreeMap<u32, Option<(String, u32)>>;

/// Where NEW messages `uids` of `folder` are after the `later` writes (in journal order): a
/// MOVE takes a message to its destination under the UID NEW's COPYUID gave it, a RENAME takes
/// its folder along, a DELETE of its folder ends it (`None`). A message no later write moved is
/// where it was (or expunged since: only NEW can tell). The mirror reads NEW there, as NEW's
/// present already includes every later write.
pub(crate) fn follow<'a>(
    later: impl IntoIterator<Item = &'a Write>,
    folder: &str,
    uids: &[u32],
    sep: char,
) -> Places {
    trace(later, folder, uids, sep).0
}

/// [`follow`], and which of `uids` a later COPY (not a MOVE) takes from where they are then:
/// OLD must still have those when that COPY is mirrored, whatever NEW did to them since.
pub(crate) fn trace<'a>(
    later: impl IntoIterator<Item = &'a Write>,
    folder: &str,
    uids: &[u32],
    sep: char,
) -> (Places, BTreeSet<u32>) {
    let mut at: Places = uids
        .iter()
        .map(|&u| (u, Some((folder.to_string(), u))))
        .collect();
    let mut copied = BTreeSet::new();
    for write in later {
        match write {
            Write::Copy {
                from,
                to,
                uids: pairs,
                moved,
            } => {
                let dest: BTreeMap<u32, u32> = pairs.iter().copied().collect();
                for (uid, place) in &mut at {
                    let Some((f, u)) = place else { continue };
                    let Some(&d) = dest.get(u).filter(|_| f == from) else {
                        continue;
                    };
                    if *moved {
                        *f = to.clone();
                        *u = d;
                    } else {
                        copied.insert(*uid);
                    }
                }
            }
            Write::Rename { from, to } => {
                for (f, _) in at.values_mut().flatten() {
                    if let Some(moved) = renamed(f, from, to, sep) {
                        *f = moved;
                    }
                }
            }
            Write::Delete { folder } => {
                for place in at.values_mut() {
                    if place.as_ref().is_some_and(|(f, _)| f == folder) {
                        *place = None;
                    }
                }
            }
            _ => {}
        }
    }
    (at, copied)
}

/// A journaled write and the OLD names of the folders it names, as they were when it was
/// journaled: the mirror replays entries in order, so OLD's folders are named then as they were
/// when the user acted, whatever NEW's names became since. A folder without an OLD name is not
/// on OLD (nothing to mirror there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub write: Write,
    /// NEW name → OLD name. `None` in entries journaled before OLD names were recorded: those
    /// are resolved from the account's current names when mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<BTreeMap<String, String>>,
    /// A COPY or MOVE that was alone on NEW ([`alone`](super::alone)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alone: Option<Stamp>,
}

impl Entry {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn from_json(text: &str) -> Result<Entry, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// UID ranges as a set string (`"1:99998,100005"`); entries written before ranges hold a list.
mod optional_ranges {
    use super::*;

    pub fn serialize<S: Serializer>(r: &Option<Ranges>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_some(&r.to_string()),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Set(String),
        List(Vec<u32>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ranges>, D::Error> {
        Ok(match Option::<Form>::deserialize(d)? {
            None => None,
            Some(Form::List(uids)) => Some(Ranges::from_uids(uids)),
            Some(Form::Set(set)) if set.is_empty() => Some(Ranges::default()),
            Some(Form::Set(set)) => Some(
                Ranges::parse(&set, usize::MAX)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a UID set: {set}")))?,
            ),
        })
    }
}

/// COPYUID pairs as runs `[source, destination, length]` (a MOVE of a folder is a few runs);
/// entries written before runs hold the pairs.
mod pairs {
    use super::*;

    pub fn serialize<S: Serializer>(pairs: &[(u32, u32)], s: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<(u32, u32, u32)> = Vec::new();
        for &(src, dst) in pairs {
            match runs.last_mut() {
                Some((s0, d0, n))
                    if src.checked_sub(*s0) == Some(*n) && dst.checked_sub(*d0) == Some(*n) =>
                {
                    *n += 1
                }
                _ => runs.push((src, dst, 1)),
            }
        }
        runs.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Run(u32, u32, u32),
        Pair(u32, u32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, u32)>, D::Error> {
        let mut out = Vec::new();
        for item in Vec::<Item>::deserialize(d)? {
            match item {
                Item::Pair(s, t) => out.push((s, t)),
                Item::Run(s, t, n) => {
                    for i in 0..n {
                        out.push((
                            s.checked_add(i)
                                .ok_or_else(|| serde::de::Error::custom("UID overflow"))?,
                            t.checked_add(i)
                                .ok_or_else(|| serde::de::Error::custom("UID overflow"))?,
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(write: Write) -> Entry {
        Entry {
            write,
            old: Some(BTreeMap::from([("INBOX".into(), "INBOX".into())])),
            alone: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let writes = [
            Write::Flags {
                folder: "INBOX".into(),
                uids: Some(Ranges::from_uids([1, 2])),
                flags: vec!["\\Seen".into(), "$Work".into(), "a[b".into()],
                replace: false,
                op: Some(FlagOp::Add),
            },
            Write::Flags {
                folder: "INBOX".into(),
                uids: None,
                flags: vec![],
                replace: true,
                op: Some(FlagOp::Replace),
            },
            Write::Copy {
                from: "INBOX".into(),
                to: "Archive/2024".into(),
                uids: vec![(4, 10), (5, 11), (9, 20)],
                moved: true,
            },
            Write::Rename {
                from: "a".into(),
                to: "&AOk-t&AOk-".into(),
            },
        ];
        for w in writes {
            let e = entry(w);
            let json = e.to_json().unwrap();
            assert!(
                json.contains(&format!("\"kind\":\"{}\"", e.write.kind()))
                    || e.write.kind() == "move"
            );
            assert_eq!(Entry::from_json(&json).unwrap(), e);
        }
        assert!(Entry::from_json("{\"kind\":\"nonsense\"}").is_err());
    }

    #[test]
    fn large_sets_cost_bytes_not_megabytes() {
        let e = entry(Write::Flags {
            folder: "INBOX".into(),
            uids: Some(Ranges::parse("1:99998", 1).unwrap()),
            flags: vec!["\\Seen".into()],
            replace: false,
            op: Some(FlagOp::Add),
        });
        let json = e.to_json().unwrap();
        assert!(json.len() < 200, "{json}");
        let moved: Vec<(u32, u32)> = (1..=50_000).map(|u| (u, u + 1000)).collect();
        let e = entry(Write::Copy {
            from: "INBOX".into(),
            to: "Archive".into(),
            uids: moved.clone(),
            moved: true,
        });
        let json = e.to_json().unwrap();
        assert!(json.contains("\"uids\":[[1,1001,50000]]"), "{json}");
        assert!(
            matches!(Entry::from_json(&json).unwrap().write, Write::Copy { uids, .. } if uids == moved)
        );
    }

    fn mv(from: &str, to: &str, uids: &[(u32, u32)]) -> Write {
        Write::Copy {
            from: from.into(),
            to: to.into(),
            uids: uids.to_vec(),
            moved: true,
        }
    }

    fn rename(from: &str, to: &str) -> Write {
        Write::Rename {
            from: from.into(),
            to: to.into(),
        }
    }

    fn delete(folder: &str) -> Write {
        Write::Delete {
            folder: folder.into(),
        }
    }

    #[test]
    fn messages_are_followed_through_later_moves_renames_and_deletes() {
        let at = |f: &str, u: u32| Some((f.to_string(), u));
        let copy = Write::Copy {
            from: "A".into(),
            to: "C".into(),
            uids: vec![(1, 50)],
            moved: false,
        };
        let expunge = Write::Expunge {
            folder: "A".into(),
            uids: None,
        };
        for (later, want) in [
            (vec![], vec![at("A", 1), at("A", 2), at("A", 3)]),
            // A copy or an expunge moves nothing (an expunged message is simply not on NEW).
            (
                vec![copy, expunge],
                vec![at("A", 1), at("A", 2), at("A", 3)],
            ),
            (
                vec![mv("A", "B", &[(2, 7), (9, 8)])],
                vec![at("A", 1), at("B", 7), at("A", 3)],
            ),
            // Moved on, then its folder renamed; a move out of another folder is not ours.
            (
                vec![
                    mv("A", "B", &[(2, 7)]),
                    mv("X", "A", &[(1, 4)]),
                    mv("B", "C", &[(7, 1)]),
                    rename("C", "D"),
                ],
                vec![at("A", 1), at("D", 1), at("A", 3)],
            ),
            (
                vec![rename("A", "Z/A"), mv("Z/A", "B", &[(3, 9)])],
                vec![at("Z/A", 1), at("Z/A", 2), at("B", 9)],
            ),
            (
                vec![mv("A", "B", &[(1, 5)]), delete("A")],
                vec![at("B", 5), None, None],
            ),
        ] {
            let got: Vec<_> = follow(&later, "A", &[1, 2, 3], '/').into_values().collect();
            assert_eq!(got, want, "{later:?}");
        }
    }

    #[test]
    fn messages_a_later_copy_takes_are_named_where_the_copy_finds_them() {
        let copy = |from: &str, uids: &[(u32, u32)]| Write::Copy {
            from: from.into(),
            to: "C".into(),
            uids: uids.to_vec(),
            moved: false,
        };
        for (later, want) in [
            (vec![], vec![]),
            (vec![copy("A", &[(2, 50), (9, 51)])], vec![2]),
            // Another folder's UID 1 is not ours.
            (vec![copy("X", &[(1, 50)])], vec![]),
            // Found under its folder's new name, and after a move under its new UID.
            (vec![rename("A", "R"), copy("R", &[(3, 5)])], vec![3]),
            (vec![mv("A", "B", &[(1, 7)]), copy("B", &[(7, 2)])], vec![1]),
            // A copy out of A after the message left it names a UID A no longer holds.
            (vec![mv("A", "B", &[(1, 7)]), copy("A", &[(1, 2)])], vec![]),
        ] {
            let (_, copied) = trace(&later, "A", &[1, 2, 3], '/');
            assert_eq!(copied.into_iter().collect::<Vec<_>>(), want, "{later:?}");
        }
    }

    #[test]
    fn folders_are_followed_through_later_renames_and_deletes() {
        for (later, want) in [
            (vec![], Some("A/B")),
            (vec![rename("A", "Z")], Some("Z/B")),
            (vec![rename("AB", "Z")], Some("A/B")),
            (vec![rename("A/B", "C"), rename("C", "D")], Some("D")),
            (vec![rename("A/B", "C"), delete("C")], None),
            (
                vec![
                    delete("A/B"),
                    Write::Create {
                        folder: "A/B".into(),
                    },
                ],
                None,
            ),
        ] {
            assert_eq!(
                folder_after(&later, "A/B", '/').as_deref(),
                want,
                "{later:?}"
            );
        }
    }

    #[test]
    fn entries_journaled_by_earlier_versions_still_read() {
        let flags = r#"{"kind":"flags","folder":"INBOX","uids":[1,2,3,7],"flags":["\\Seen"],"replace":false}"#;
        let e = Entry::from_json(flags).unwrap();
        assert_eq!(e.old, None);
        assert!(matches!(e.write, Write::Flags { uids: Some(r), .. } if r.to_string() == "1:3,7"));
        let copy = r#"{"kind":"copy","from":"INBOX","to":"B","uids":[[4,10],[5,11]],"moved":true}"#;
        assert!(
            matches!(Entry::from_json(copy).unwrap().write, Write::Copy { uids, .. } if uids == [(4, 10), (5, 11)])
        );
    }
}
