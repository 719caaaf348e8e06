//! Verification of a migrated account (`imapferry verify`): OLD's folder tree is mapped as a pass
//! maps it, and each folder pair is read on both sides (EXAMINE, never a write) and compared by
//! count, size, identity key (the adoption key, duplicates counted) and flags. [`compare`] is the
//! pure comparison; [`verify_account`] does the reading.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::imap::{Client, ImapError, Side};

use super::adopt::message_key;
use super::flags::FlagSet;
use super::identity::IdentityOptions;
use super::{Endpoint, Options, SyncError, account};

/// One message as `verify` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgInfo {
    pub uid: u32,
    /// The identity key (imapsync's header key; a header digest for messages without one).
    pub key: String,
    /// RFC822.SIZE.
    pub size: u64,
    /// Flags, `\Recent` left out.
    pub flags: FlagSet,
}

/// A message present on both sides whose flags differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlagDifference {
    pub old_uid: u32,
    pub new_uid: u32,
    pub old_flags: String,
    pub new_flags: String,
}

/// How one folder pair compares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FolderDiff {
    pub messages_old: u64,
    pub messages_new: u64,
    pub bytes_old: u64,
    pub bytes_new: u64,
    /// OLD UIDs without a copy on NEW (ascending).
    pub missing: Vec<u32>,
    /// NEW UIDs without an original on OLD (ascending).
    pub extra: Vec<u32>,
    /// Messages on both sides with different flags (by OLD UID).
    pub flags: Vec<FlagDifference>,
}

impl FolderDiff {
    /// Same messages (by key, duplicates counted), same flags, same total size.
    pub fn is_equal(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.flags.is_empty()
            && self.messages_old == self.messages_new
            && self.bytes_old == self.bytes_new
    }
}

/// Compares the messages of an OLD folder with those of its NEW folder. Messages are matched by
/// key as a multiset: k copies on OLD and m on NEW match min(k, m) times, the rest are missing
/// (on NEW) or extra (on NEW). Among copies of one key, pairs with equal flags are matched first,
/// so only real flag differences are reported whatever the UID order.
pub fn compare(old: &[MsgInfo], new: &[MsgInfo]) -> FolderDiff {
    let mut diff = FolderDiff {
        messages_old: old.len() as u64,
        messages_new: new.len() as u64,
        bytes_old: old.iter().map(|m| m.size).sum(),
        bytes_new: new.iter().map(|m| m.size).sum(),
        ..FolderDiff::default()
    };
    fn by_uid(msgs: &[MsgInfo]) -> Vec<&MsgInfo> {
        let mut v: Vec<&MsgInfo> = msgs.iter().collect();
        v.sort_by_key(|m| m.uid);
        v
    }
    // Per key, the NEW messages in UID order.
    let mut new_by_key: BTreeMap<&str, Vec<&MsgInfo>> = BTreeMap::new();
    for m in by_uid(new) {
        new_by_key.entry(&m.key).or_default().push(m);
    }
    let mut old_by_key: BTreeMap<&str, Vec<&MsgInfo>> = BTreeMap::new();
    for m in by_uid(old) {
        old_by_key.entry(&m.key).or_default().push(m);
    }
    for (key, olds) in &old_by_key {
        let news = new_by_key.remove(key).unwrap_or_default();
        // First pass: pair equal flags (UID order within each flag set).
        let mut free: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, n) in news.iter().enumerate() {
            free.entry(n.flags.to_canonical()).or_default().push_back(i);
        }
        let mut new_used = vec![false; news.len()];
        let mut unpaired_old = Vec::new();
        for o in olds {
            match free
                .get_mut(&o.flags.to_canonical())
                .and_then(VecDeque::pop_front)
            {
                Some(i) => new_used[i] = true,
                None => unpaired_old.push(*o),
            }
        }
        // Second pass: the rest pair up in UID order with differing flags; leftovers are missing
        // or extra.
        let mut rest_new = news
            .iter()
            .zip(&new_used)
            .filter(|(_, used)| !**used)
            .map(|(n, _)| *n);
        for o in unpaired_old {
            match rest_new.next() {
                Some(n) => diff.flags.push(FlagDifference {
                    old_uid: o.uid,
                    new_uid: n.uid,
                    old_flags: o.flags.to_canonical(),
                    new_flags: n.flags.to_canonical(),
                }),
                None => diff.missing.push(o.uid),
            }
        }
        diff.extra.extend(rest_new.map(|n| n.uid));
    }
    for news in new_by_key.into_values() {
        diff.extra.extend(news.iter().map(|n| n.uid));
    }
    diff.missing.sort_unstable();
    diff.extra.sort_unstable();
    diff.flags.sort_by_key(|f| f.old_uid);
    diff
}

/// The outcome of one folder pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FolderOutcome {
    /// Both folders were read.
    Compared(FolderDiff),
    /// The NEW folder does not exist; `old` is what OLD holds.
    NewMissing { old: FolderDiff },
    /// A folder could not be read (the server's answer).
    Unreadable(String),
}

/// One folder pair of a verified account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderVerdict {
    pub old_name: String,
    pub new_name: String,
    pub outcome: FolderOutcome,
}

impl FolderVerdict {
    pub fn is_equal(&self) -> bool {
        matches!(&self.outcome, FolderOutcome::Compared(d) if d.is_equal())
    }
}

/// Reads every message of `mailbox` read-only: UID, size, flags and identity key (the header
/// fetch and key of adoption). `Ok(None)`: the server refused EXAMINE (no such folder).
async fn read_folder(
    client: &mut Client,
    mailbox: &str,
    opts: &IdentityOptions,
) -> Result<Option<Vec<MsgInfo>>, ImapError> {
    let info = match client.select_with(mailbox, true, false).await {
        Ok(info) => info,
        Err(ImapError::Refused { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Grown as answers arrive: EXISTS is the server's word, never a size to allocate.
    let mut out: Vec<MsgInfo> = Vec::new();
    if info.exists > 0 {
        let tag = client
            .send_uid_fetch("1:*", "UID RFC822.SIZE FLAGS BODY.PEEK[HEADER]", "")
            .await?;
        client
            .wait_fetch(&tag, |f| {
                if let (Some(uid), Some(header)) = (f.uid, f.header) {
                    let header = header.to_vec().unwrap_or_default();
                    let size = f.size.unwrap_or(0);
                    out.push(MsgInfo {
                        uid,
                        key: message_key(&header, size, opts),
                        size: u64::from(size),
                        flags: FlagSet::from_iter(f.flags.unwrap_or_default()),
                    });
                }
            })
            .await?;
    }
    // A server may send unsolicited FETCH responses too: one entry per UID.
    out.sort_by_key(|m| m.uid);
    out.dedup_by_key(|m| m.uid);
    Ok(Some(out))
}

/// What an unreadable folder says, per side.
fn unreadable(side: Side, name: &str, e: &ImapError) -> String {
    let side = match side {
        Side::Old => "OLD",
        Side::New => "NEW",
    };
    format!("{side} folder {name}: {e}")
}

/// Logs in to OLD and NEW, maps OLD's folders as a pass with `opts` would (creating nothing) and
/// compares each folder pair, reading both sides with EXAMINE. Login, connection and mapping
/// failures end the verification with an error; a folder that cannot be read is a verdict.
pub async fn verify_account(
    old_ep: &Endpoint,
    new_ep: &Endpoint,
    opts: &Options,
) -> Result<Vec<FolderVerdict>, SyncError> {
    let (old, new) = tokio::join!(
        account::login(old_ep, Side::Old),
        account::login(new_ep, Side::New)
    );
    let (mut old, mut new) = (old?, new?);
    let pairs = account::mapped_pairs(&mut old, &mut new, opts).await?;
    let mut verdicts = Vec::with_capacity(pairs.len());
    for (old_name, new_name, new_exists) in pairs {
        let ident = &opts.identity;
        let (old_msgs, new_msgs) = if new_exists {
            tokio::join!(
                read_folder(&mut old, &old_name, ident),
                read_folder(&mut new, &new_name, ident)
            )
        } else {
            (read_folder(&mut old, &old_name, ident).await, Ok(None))
        };
        let outcome = match (old_msgs, new_msgs) {
            (Err(e), _) if e.is_fatal() => return Err(e.into()),
            (_, Err(e)) if e.is_fatal() => return Err(e.into()),
            (Err(e), _) => FolderOutcome::Unreadable(unreadable(Side::Old, &old_name, &e)),
            (_, Err(e)) => FolderOutcome::Unreadable(unreadable(Side::New, &new_name, &e)),
            (Ok(None), _) => FolderOutcome::Unreadable(format!(
                "OLD folder {old_name} cannot be examined (listed, but refused)"
            )),
            (Ok(Some(o)), Ok(None)) => FolderOutcome::NewMissing {
                old: compare(&o, &[]),
            },
            (Ok(Some(o)), Ok(Some(n))) => FolderOutcome::Compared(compare(&o, &n)),
        };
        verdicts.push(FolderVerdict {
            old_name,
            new_name,
            outcome,
        });
    }
    old.logout().await;
    new.logout().await;
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::script::{serve, step};

    /// A server that claims four billion messages and sends two: memory follows what arrives.
    #[tokio::test]
    async fn a_huge_exists_count_allocates_nothing() {
        let (opts, server) = serve(
            "IMAP4rev1",
            vec![
                step(
                    "EXAMINE \"INBOX\"",
                    "* 4294967295 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\n$tag OK [READ-ONLY] done\r\n",
                ),
                step(
                    "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
                    "* 1 FETCH (UID 7 RFC822.SIZE 3 FLAGS () BODY[HEADER] {2}\r\nA\n)\r\n\
                     * 2 FETCH (UID 9 RFC822.SIZE 3 FLAGS (\\Seen) BODY[HEADER] {2}\r\nB\n)\r\n\
                     $tag OK done\r\n",
                ),
            ],
        )
        .await;
        let mut client = Client::connect(&opts, Side::Old).await.unwrap();
        let msgs = read_folder(&mut client, "INBOX", &IdentityOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), [7, 9]);
        assert!(msgs.capacity() < 1024, "{}", msgs.capacity());
        server.await.unwrap().unwrap();
    }

    fn msg(uid: u32, key: &str, size: u64, flags: &str) -> MsgInfo {
        MsgInfo {
            uid,
            key: key.into(),
            size,
            flags: FlagSet::parse(flags),
        }
    }

    fn fd(old_uid: u32, new_uid: u32, old_flags: &str, new_flags: &str) -> FlagDifference {
        FlagDifference {
            old_uid,
            new_uid,
            old_flags: old_flags.into(),
            new_flags: new_flags.into(),
        }
    }

    struct Case {
        name: &'static str,
        old: Vec<MsgInfo>,
        new: Vec<MsgInfo>,
        missing: Vec<u32>,
        extra: Vec<u32>,
        flags: Vec<FlagDifference>,
        equal: bool,
    }

    #[test]
    fn comparison_table() {
        let cases = vec![
            Case {
                name: "both empty",
                old: vec![],
                new: vec![],
                missing: vec![],
                extra: vec![],
                flags: vec![],
                equal: true,
            },
            Case {
                name: "identical, different UIDs and order",
                old: vec![msg(1, "a", 10, "\\Seen"), msg(2, "b", 20, "")],
                new: vec![msg(8, "b", 20, ""), msg(7, "a", 10, "\\Seen")],
                missing: vec![],
                extra: vec![],
                flags: vec![],
                equal: true,
            },
            Case {
                name: "\\Recent and the case of system flags do not count",
                old: vec![msg(1, "a", 10, "\\Seen \\Recent")],
                new: vec![msg(1, "a", 10, "\\SEEN")],
                missing: vec![],
                extra: vec![],
                flags: vec![],
                equal: true,
            },
            Case {
                name: "one missing on NEW",
                old: vec![msg(1, "a", 10, ""), msg(2, "b", 20, "")],
                new: vec![msg(1, "a", 10, "")],
                missing: vec![2],
                extra: vec![],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "one extra on NEW",
                old: vec![msg(1, "a", 10, "")],
                new: vec![msg(1, "a", 10, ""), msg(2, "z", 5, "")],
                missing: vec![],
                extra: vec![2],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "a flag differs",
                old: vec![msg(1, "a", 10, "\\Seen"), msg(2, "b", 20, "")],
                new: vec![msg(5, "a", 10, "\\Seen \\Flagged"), msg(6, "b", 20, "")],
                missing: vec![],
                extra: vec![],
                flags: vec![fd(1, 5, "\\Seen", "\\Flagged \\Seen")],
                equal: false,
            },
            Case {
                name: "keywords count",
                old: vec![msg(1, "a", 10, "$Label1")],
                new: vec![msg(1, "a", 10, "")],
                missing: vec![],
                extra: vec![],
                flags: vec![fd(1, 1, "$Label1", "")],
                equal: false,
            },
            Case {
                name: "duplicates are counted: two on OLD, one on NEW",
                old: vec![msg(1, "d", 10, ""), msg(2, "d", 10, "")],
                new: vec![msg(3, "d", 10, "")],
                missing: vec![2],
                extra: vec![],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "duplicates are counted: one on OLD, three on NEW",
                old: vec![msg(1, "d", 10, "")],
                new: vec![
                    msg(3, "d", 10, ""),
                    msg(4, "d", 10, ""),
                    msg(5, "d", 10, ""),
                ],
                missing: vec![],
                extra: vec![4, 5],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "duplicates pair by equal flags first, whatever the UID order",
                old: vec![msg(1, "d", 10, "\\Seen"), msg(2, "d", 10, "")],
                new: vec![msg(3, "d", 10, ""), msg(4, "d", 10, "\\Seen")],
                missing: vec![],
                extra: vec![],
                flags: vec![],
                equal: true,
            },
            Case {
                name: "duplicates with one flag difference and one missing",
                old: vec![
                    msg(1, "d", 10, "\\Seen"),
                    msg(2, "d", 10, "\\Answered"),
                    msg(3, "d", 10, ""),
                ],
                new: vec![msg(7, "d", 10, ""), msg(8, "d", 10, "\\Flagged")],
                missing: vec![2],
                extra: vec![],
                flags: vec![fd(1, 8, "\\Seen", "\\Flagged")],
                equal: false,
            },
            Case {
                name: "everything missing (NEW folder empty)",
                old: vec![msg(1, "a", 10, ""), msg(2, "a", 10, ""), msg(3, "b", 1, "")],
                new: vec![],
                missing: vec![1, 2, 3],
                extra: vec![],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "same keys, other sizes: bytes differ",
                old: vec![msg(1, "a", 10, "")],
                new: vec![msg(1, "a", 12, "")],
                missing: vec![],
                extra: vec![],
                flags: vec![],
                equal: false,
            },
            Case {
                name: "a key moved: one missing and one extra, counts equal",
                old: vec![msg(1, "a", 10, ""), msg(2, "b", 10, "")],
                new: vec![msg(1, "a", 10, ""), msg(2, "c", 10, "")],
                missing: vec![2],
                extra: vec![2],
                flags: vec![],
                equal: false,
            },
        ];
        for c in cases {
            let d = compare(&c.old, &c.new);
            assert_eq!(d.missing, c.missing, "{}: missing", c.name);
            assert_eq!(d.extra, c.extra, "{}: extra", c.name);
            assert_eq!(d.flags, c.flags, "{}: flags", c.name);
            assert_eq!(d.is_equal(), c.equal, "{}: equal", c.name);
            assert_eq!(d.messages_old, c.old.len() as u64, "{}", c.name);
            assert_eq!(d.messages_new, c.new.len() as u64, "{}", c.name);
            assert_eq!(
                d.bytes_old,
                c.old.iter().map(|m| m.size).sum::<u64>(),
                "{}",
                c.name
            );
            // missing + matched = OLD, extra + matched = NEW.
            let matched_old = d.messages_old - d.missing.len() as u64;
            let matched_new = d.messages_new - d.extra.len() as u64;
            assert_eq!(matched_old, matched_new, "{}: matched", c.name);
        }
    }

    #[test]
    fn keys_are_the_adoption_keys() {
        let opts = IdentityOptions::default();
        // imapsync's key ignores headers other than Message-Id and Received (and the size).
        let a = message_key(b"Message-Id: <x@y>\r\nSubject: one\r\n\r\n", 10, &opts);
        let b = message_key(b"Message-ID: <x@y>\r\nSubject: two\r\n\r\n", 99, &opts);
        assert_eq!(a, b);
    }
}
