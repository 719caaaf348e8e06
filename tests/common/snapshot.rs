//! Layout-independent account snapshots and `assert_same_mail`, which compares two of them (e.g.
//! OLD before and NEW after a migration across layouts) and panics with a readable per-folder diff.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};

use super::dovecot::Layout;
use super::raw::RawImap;
use super::seed::imap_date;
use super::server::ImapServer;

/// One message, reduced to what a migration must preserve.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapMsg {
    /// SipHash of the exact bytes (same keys in every process, so snapshots compare).
    pub digest: u64,
    pub size: usize,
    /// Flags and keywords without `\Recent`.
    pub flags: BTreeSet<String>,
    /// INTERNALDATE as UTC seconds, so servers in different time zones compare equal.
    pub internaldate: i64,
    /// Raw Subject header (lossy, unfolded, shortened), for diagnostics only.
    pub subject: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Layout-independent path ("INBOX", "Projects/2024/Q1") -> sorted multiset of messages.
    /// `\Noselect`/`\NonExistent` entries are left out.
    pub folders: BTreeMap<String, Vec<SnapMsg>>,
    /// Subscribed folders, same normalisation (LSUB's `\Noselect` placeholders left out).
    pub subscribed: BTreeSet<String>,
}

impl Snapshot {
    /// Number of messages in `path` (0 if the folder does not exist).
    pub fn count(&self, path: &str) -> usize {
        self.folders.get(path).map_or(0, Vec::len)
    }

    /// Messages carrying `flag`, over all folders.
    pub fn with_flag(&self, flag: &str) -> usize {
        self.folders
            .values()
            .flatten()
            .filter(|m| m.flags.contains(flag))
            .count()
    }

    pub fn total(&self) -> usize {
        self.folders.values().map(Vec::len).sum()
    }
}

/// Snapshot of `user`'s account on a harness instance.
pub fn snapshot(d: &impl ImapServer, user: &str, pw: &str) -> Snapshot {
    snapshot_at(d.host(), d.port(), d.layout(), user, pw)
}

/// Snapshot through any endpoint (e.g. the proxy) that presents names in `layout`.
pub fn snapshot_at(host: &str, port: u16, layout: Layout, user: &str, pw: &str) -> Snapshot {
    let mut imap = RawImap::connect(host, port);
    imap.login(user, pw);
    let mut snap = Snapshot::default();
    for (attrs, _, name) in imap.list() {
        let unselectable = attrs.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        });
        if unselectable {
            continue;
        }
        let mut msgs: Vec<SnapMsg> = imap
            .uid_fetch_all(&name)
            .into_iter()
            .map(|m| SnapMsg {
                digest: digest(&m.body),
                size: m.body.len(),
                subject: subject(&m.body),
                flags: m.flags,
                internaldate: super::seed::parse_imap_date(&m.internaldate),
            })
            .collect();
        msgs.sort();
        snap.folders.insert(layout.normalize(&name), msgs);
    }
    // `\Noselect` in LSUB marks an unsubscribed parent of subscribed folders: Courier lists those
    // even for "*" (Dovecot only for "%"); they are not subscriptions.
    snap.subscribed = imap
        .lsub()
        .into_iter()
        .filter(|(attrs, _, _)| !attrs.iter().any(|a| a.eq_ignore_ascii_case("\\Noselect")))
        .map(|(_, _, name)| layout.normalize(&name))
        .collect();
    imap.logout();
    snap
}

/// Panics with a per-folder report unless both snapshots hold the same mail and subscriptions.
pub fn assert_same_mail(left: &Snapshot, right: &Snapshot) {
    let report = mail_diff(left, right);
    assert!(report.is_empty(), "mailboxes differ:\n{report}");
}

/// A per-folder report of where two snapshots differ in mail or subscriptions; empty if nowhere.
pub fn mail_diff(left: &Snapshot, right: &Snapshot) -> String {
    let mut report = String::new();
    let names: BTreeSet<&String> = left.folders.keys().chain(right.folders.keys()).collect();
    for name in names {
        match (left.folders.get(name), right.folders.get(name)) {
            (Some(_), None) => report.push_str(&format!("folder {name:?}: only in left\n")),
            (None, Some(_)) => report.push_str(&format!("folder {name:?}: only in right\n")),
            (Some(l), Some(r)) if l != r => report.push_str(&folder_diff(name, l, r)),
            _ => {}
        }
    }
    for (side, a, b) in [("left", left, right), ("right", right, left)] {
        let only: Vec<&String> = a.subscribed.difference(&b.subscribed).collect();
        if !only.is_empty() {
            report.push_str(&format!("subscribed only in {side}: {only:?}\n"));
        }
    }
    report
}

const MAX_LINES_PER_FOLDER: usize = 20;

fn folder_diff(name: &str, left: &[SnapMsg], right: &[SnapMsg]) -> String {
    let mut only_left = multiset_minus(left, right);
    let mut only_right = multiset_minus(right, left);
    let mut lines = Vec::new();
    // Same bytes on both sides but different flags or date.
    only_left.retain(|l| {
        let Some(pos) = only_right.iter().position(|r| r.digest == l.digest) else {
            return true;
        };
        let r = only_right.remove(pos);
        let mut what = Vec::new();
        if l.flags != r.flags {
            what.push(format!("flags left {:?} right {:?}", l.flags, r.flags));
        }
        if l.internaldate != r.internaldate {
            what.push(format!(
                "internaldate left {} right {}",
                imap_date(l.internaldate, 0),
                imap_date(r.internaldate, 0)
            ));
        }
        lines.push(format!("  differs: {}: {}", describe(l), what.join("; ")));
        false
    });
    lines.extend(
        only_left
            .iter()
            .map(|m| format!("  only in left:  {}", describe_full(m))),
    );
    lines.extend(
        only_right
            .iter()
            .map(|m| format!("  only in right: {}", describe_full(m))),
    );
    let hidden = lines.len().saturating_sub(MAX_LINES_PER_FOLDER);
    lines.truncate(MAX_LINES_PER_FOLDER);
    if hidden > 0 {
        lines.push(format!("  ... and {hidden} more"));
    }
    format!(
        "folder {name:?}: left {} messages, right {}\n{}\n",
        left.len(),
        right.len(),
        lines.join("\n")
    )
}

/// Elements of sorted `a` not matched one-for-one in sorted `b`.
fn multiset_minus(a: &[SnapMsg], b: &[SnapMsg]) -> Vec<SnapMsg> {
    let mut rest = b.to_vec();
    a.iter()
        .filter(|m| match rest.iter().position(|x| x == *m) {
            Some(pos) => {
                rest.remove(pos);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

fn describe(m: &SnapMsg) -> String {
    format!("{:?} ({} bytes)", m.subject, m.size)
}

fn describe_full(m: &SnapMsg) -> String {
    format!(
        "{} flags {:?} date {}",
        describe(m),
        m.flags,
        imap_date(m.internaldate, 0)
    )
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// The Subject header from the header section, unfolded and cut to 60 characters.
fn subject(body: &[u8]) -> String {
    let header_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len());
    let header = String::from_utf8_lossy(&body[..header_end])
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    let subject = header
        .lines()
        .find_map(|l| {
            l.get(..8)
                .filter(|p| p.eq_ignore_ascii_case("subject:"))
                .map(|_| l[8..].trim().to_string())
        })
        .unwrap_or_else(|| "(no subject)".into());
    subject.chars().take(60).collect()
}
