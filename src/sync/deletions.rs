//! Deletions the user asked for, imapsync's way: `--delete1` (OLD messages once their copy is on
//! NEW), `--delete2` (NEW messages without an OLD counterpart), `--delete2duplicates` and
//! `--delete2folders`. Every one honours `--dry`. Deletions propagated from OLD on their own
//! (DESIGN.md §1.6) are not here: they are part of every pass and bounded (see `folder`).

use std::collections::BTreeSet;

use crate::imap::{Client, ImapError, Side};
use crate::store::{FolderPair, Store};

use super::adopt::keys;
use super::{Event, FolderDeletion, Options, SyncError, Tally};

/// `--delete1`: these OLD messages (their copy is on NEW, or the user deleted it there) become
/// tombstones first, so no later pass copies them again or mistakes their expunge for one to
/// mirror; then they are marked `\Deleted` on OLD and, with `--expunge1`, expunged.
pub(crate) async fn delete_on_old(
    store: &dyn Store,
    old: &mut Client,
    pair: &FolderPair,
    uids: &[u32],
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    if uids.is_empty() {
        return Ok(());
    }
    tally.stats(|s| s.messages_deleted_on_old += uids.len() as u64);
    if opts.dry {
        tally.warn(format!(
            "Host1 folder {}: would delete {} messages (--delete1) (not really since --dry mode)",
            pair.old_name,
            uids.len()
        ));
        return Ok(());
    }
    store.tombstone(pair.id, uids).await?;
    if opts.expunge1 {
        old.uid_expunge(uids).await?;
    } else {
        old.uid_store(uids, "+FLAGS.SILENT", &["\\Deleted".to_string()])
            .await?;
    }
    Ok(())
}

/// `--delete2` / `--delete2duplicates` on the selected NEW mailbox: expunges `uids` and turns the
/// links that pointed at them into tombstones.
pub(crate) async fn delete_on_new(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
    uids: &[u32],
    why: &str,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    if uids.is_empty() {
        return Ok(());
    }
    tally.stats(|s| s.messages_deleted_on_new += uids.len() as u64);
    if opts.dry {
        tally.warn(format!(
            "Host2 folder {}: would delete {} messages ({why}) (not really since --dry mode)",
            pair.new_name,
            uids.len()
        ));
        return Ok(());
    }
    let doomed: BTreeSet<u32> = uids.iter().copied().collect();
    let linked: Vec<u32> = store
        .links(pair.id)
        .await?
        .into_iter()
        .filter(|l| doomed.contains(&l.new_uid))
        .map(|l| l.old_uid)
        .collect();
    store.tombstone(pair.id, &linked).await?;
    new.uid_expunge(uids).await?;
    tally.event(Event::Expunged {
        new_folder: pair.new_name.clone(),
        count: uids.len(),
    });
    Ok(())
}

/// The NEW messages of the selected mailbox whose identity key repeats: all but the lowest UID
/// of each key (imapsync keeps the first).
pub(crate) async fn duplicates(
    new: &mut Client,
    uids: &[u32],
    opts: &Options,
) -> Result<Vec<u32>, ImapError> {
    let mut seen = std::collections::HashSet::new();
    let mut extra = Vec::new();
    for (uid, key, _) in keys(new, uids, &opts.identity, false).await? {
        if !seen.insert(key) {
            extra.push(uid);
        }
    }
    Ok(extra)
}

/// OLD UIDs among `candidates` whose identity key already occurs at a lower UID of the folder
/// (`--nosyncduplicates`: imapsync copies only the first of each key).
pub(crate) async fn old_duplicates(
    old: &mut Client,
    all: &[u32],
    candidates: &BTreeSet<u32>,
    opts: &Options,
) -> Result<BTreeSet<u32>, ImapError> {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for (uid, key, _) in keys(old, all, &opts.identity, opts.add_header).await? {
        if !seen.insert(key) && candidates.contains(&uid) {
            dups.insert(uid);
        }
    }
    Ok(dups)
}

/// The NEW folders `--delete2folders` removes: selectable, not INBOX, neither an OLD name nor the
/// NEW name any OLD folder maps to, and allowed by `--delete2foldersonly`/`--delete2foldersbutnot`;
/// in reverse order so children go before their parents.
pub(crate) fn folders_to_delete(
    new_folders: &BTreeSet<String>,
    old_names: &BTreeSet<String>,
    targets: &BTreeSet<String>,
    rule: &FolderDeletion,
) -> Vec<String> {
    let mut out: Vec<String> = new_folders
        .iter()
        .filter(|f| {
            !f.eq_ignore_ascii_case("INBOX") && !old_names.contains(*f) && !targets.contains(*f)
        })
        .filter(|f| rule.only.as_ref().is_none_or(|r| r.is_match(f)))
        .filter(|f| rule.but_not.as_ref().is_none_or(|r| !r.is_match(f)))
        .cloned()
        .collect();
    out.reverse();
    out
}

/// `--delete2folders`: UNSUBSCRIBE and DELETE each folder on NEW.
pub(crate) async fn delete_folders(
    new: &mut Client,
    folders: &[String],
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(), ImapError> {
    for folder in folders {
        if opts.dry {
            tally.warn(format!(
                "Deleting folder [{folder}] on host2 (not really since --dry mode)"
            ));
            tally.stats(|s| s.folders_deleted_on_new += 1);
            continue;
        }
        let _ = new.unsubscribe(folder).await;
        match new.delete(folder).await {
            Ok(()) => tally.stats(|s| s.folders_deleted_on_new += 1),
            Err(e @ ImapError::Refused { .. }) => tally.error(format!(
                "Could not delete folder [{folder}] on {}: {e}",
                Side::New
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_without_counterpart_are_deleted_children_first() {
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let new = set(&["INBOX", "Sent", "Old", "Old/Child", "Keep", "Junk"]);
        let old_names = set(&["INBOX", "Sent"]);
        let targets = set(&["INBOX", "Sent", "Keep"]);
        let all = FolderDeletion::default();
        assert_eq!(
            folders_to_delete(&new, &old_names, &targets, &all),
            vec!["Old/Child", "Old", "Junk"]
        );
        let only = FolderDeletion {
            only: Some(regex::Regex::new("^Old").unwrap()),
            but_not: None,
        };
        assert_eq!(
            folders_to_delete(&new, &old_names, &targets, &only),
            vec!["Old/Child", "Old"]
        );
        let but_not = FolderDeletion {
            only: None,
            but_not: Some(regex::Regex::new("Child").unwrap()),
        };
        assert_eq!(
            folders_to_delete(&new, &old_names, &targets, &but_not),
            vec!["Old", "Junk"]
        );
    }
}
