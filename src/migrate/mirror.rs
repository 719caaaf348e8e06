//! Replays one journal entry on OLD through the links (DESIGN.md §2, dual write): flags and
//! expunges of linked messages, moves and copies (the links follow the messages), appends (linked
//! at once, so never copied back), and folder changes. Each holds the folder locks it touches.

use std::collections::{BTreeSet, HashMap};

use super::account::{Account, Conn};
use super::write::Write;
use crate::imap::{AppendMsg, Code, Fetch, Side};
use crate::store::{FolderPair, JournalEntry, Link, LinkFlags};
use crate::sync::SyncError;
use crate::sync::flags::{FlagSet, store_ops};

type Result<T> = std::result::Result<T, SyncError>;

/// Mirrors `entry` on OLD. Refusals by OLD come back as errors; the caller decides.
pub(crate) async fn apply(acct: &Account, conn: &mut Conn, entry: &JournalEntry) -> Result<()> {
    let write = Write::from_json(&entry.payload)
        .ok_or_else(|| SyncError::Options(format!("unreadable journal entry {}", entry.id)))?;
    match write {
        Write::Flags {
            folder,
            uids,
            flags,
            replace,
        } => {
            let f = acct.folder(&folder);
            let _owner = f.lock.lock().await;
            mirror_flags(acct, conn, &folder, uids, &flags, replace).await
        }
        Write::Expunge { folder } => {
            let f = acct.folder(&folder);
            let _owner = f.lock.lock().await;
            mirror_expunge(acct, conn, &folder).await
        }
        Write::Copy {
            from,
            to,
            uids,
            moved,
        } => {
            // Locks in name order, so two mirrors never wait on each other.
            let (a, b) = (acct.folder((&from).min(&to)), acct.folder((&from).max(&to)));
            let _first = a.lock.lock().await;
            let _second = if from == to {
                None
            } else {
                Some(b.lock.lock().await)
            };
            mirror_copy(acct, conn, &from, &to, &uids, moved).await
        }
        Write::Append { folder, uids } => {
            let f = acct.folder(&folder);
            let _owner = f.lock.lock().await;
            mirror_append(acct, conn, &folder, &uids).await
        }
        Write::Create { folder } => {
            let Some(old) = acct
                .old_name(&folder)
                .or_else(|| acct.reverse_name(&folder))
            else {
                return Ok(());
            };
            conn.old.create(&old).await?;
            acct.store.folder_pair(acct.id, &old, &folder).await?;
            acct.add_name(&folder, &old);
            Ok(())
        }
        Write::Delete { folder } => {
            let f = acct.folder(&folder);
            let _owner = f.lock.lock().await;
            let Some(pair) = stored_pair(acct, &folder).await? else {
                return Ok(()); // never on OLD
            };
            let deleted = conn.old.delete(&pair.old_name).await;
            acct.store.delete_pair(pair.id).await?;
            deleted.map_err(SyncError::from)
        }
        Write::Rename { from, to } => mirror_rename(acct, conn, &from, &to).await,
        Write::Subscribe { folder, subscribed } => {
            let Some(old) = acct
                .old_name(&folder)
                .or_else(|| acct.reverse_name(&folder))
            else {
                return Ok(());
            };
            if subscribed {
                conn.old.subscribe(&old).await?;
            } else {
                conn.old.unsubscribe(&old).await?;
            }
            Ok(())
        }
    }
}

/// The recorded pair whose NEW side is `new_name`.
async fn stored_pair(acct: &Account, new_name: &str) -> Result<Option<FolderPair>> {
    Ok(acct
        .store
        .folder_pairs(acct.id)
        .await?
        .into_iter()
        .find(|p| p.new_name == new_name))
}

/// The pair of a NEW folder: recorded, or created when OLD has the folder.
async fn pair(acct: &Account, new_name: &str) -> Result<Option<FolderPair>> {
    if let Some(p) = stored_pair(acct, new_name).await? {
        return Ok(Some(p));
    }
    match acct.old_name(new_name) {
        Some(old) => Ok(Some(acct.store.folder_pair(acct.id, &old, new_name).await?)),
        None => Ok(None),
    }
}

/// Flags of one side's messages, by UID.
async fn fetch_flags(
    client: &mut crate::imap::Client,
    folder: &str,
    readonly: bool,
    uids: &[u32],
) -> Result<HashMap<u32, FlagSet>> {
    client.select(folder, readonly).await?;
    let mut out = HashMap::new();
    client
        .uid_fetch(uids, "UID FLAGS", "", |f| {
            if let (Some(uid), Some(flags)) = (f.uid, f.flags) {
                out.insert(uid, FlagSet::from_iter(flags));
            }
        })
        .await?;
    Ok(out)
}

/// OLD takes NEW's value of every flag the user's STORE named (all of them for `FLAGS (...)`),
/// on the linked messages it touched; the links' base flags become what both sides now have.
async fn mirror_flags(
    acct: &Account,
    conn: &mut Conn,
    folder: &str,
    uids: Option<Vec<u32>>,
    named: &[String],
    replace: bool,
) -> Result<()> {
    let Some(pair) = pair(acct, folder).await? else {
        return Ok(());
    };
    let wanted: Option<BTreeSet<u32>> = uids.map(|u| u.into_iter().collect());
    let links: Vec<Link> = acct
        .store
        .links(pair.id)
        .await?
        .into_iter()
        .filter(|l| wanted.as_ref().is_none_or(|w| w.contains(&l.new_uid)))
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    let new_uids: Vec<u32> = links.iter().map(|l| l.new_uid).collect();
    let old_uids: Vec<u32> = links.iter().map(|l| l.old_uid).collect();
    let new_flags = fetch_flags(&mut conn.new, &pair.new_name, true, &new_uids).await?;
    let old_flags = fetch_flags(&mut conn.old, &pair.old_name, false, &old_uids).await?;
    let named = FlagSet::from_iter(named);
    let mut ops: HashMap<(Vec<String>, Vec<String>), Vec<u32>> = HashMap::new();
    let mut updates = Vec::new();
    for link in &links {
        let (Some(n), Some(o)) = (new_flags.get(&link.new_uid), old_flags.get(&link.old_uid))
        else {
            continue;
        };
        let touched = |f: &str| f != "\\Recent" && (replace || named.contains(f));
        let target = FlagSet::from_iter(
            o.iter()
                .filter(|f| !touched(f))
                .chain(n.iter().filter(|f| touched(f))),
        );
        let (add, remove) = store_ops(o, &target);
        if !add.is_empty() || !remove.is_empty() {
            ops.entry((add, remove)).or_default().push(link.old_uid);
        }
        updates.push(LinkFlags {
            old_uid: link.old_uid,
            old_flags: target.to_canonical(),
            new_flags: n.to_canonical(),
        });
    }
    for ((add, remove), uids) in ops {
        if !add.is_empty() {
            conn.old.uid_store(&uids, "+FLAGS.SILENT", &add).await?;
        }
        if !remove.is_empty() {
            conn.old.uid_store(&uids, "-FLAGS.SILENT", &remove).await?;
        }
    }
    acct.store.update_link_flags(pair.id, &updates).await?;
    Ok(())
}

/// Linked messages no longer on NEW are expunged on OLD, and their links dropped.
async fn mirror_expunge(acct: &Account, conn: &mut Conn, folder: &str) -> Result<()> {
    let Some(pair) = pair(acct, folder).await? else {
        return Ok(());
    };
    let links = acct.store.links(pair.id).await?;
    if links.is_empty() {
        return Ok(());
    }
    conn.new.select(&pair.new_name, true).await?;
    let present: BTreeSet<u32> = conn.new.uid_search("ALL").await?.into_iter().collect();
    let gone: Vec<u32> = links
        .iter()
        .filter(|l| !present.contains(&l.new_uid))
        .map(|l| l.old_uid)
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    conn.old.select(&pair.old_name, false).await?;
    conn.old.uid_expunge(&gone).await?;
    acct.store.remove_links(pair.id, &gone).await?;
    Ok(())
}

/// COPY/MOVE on OLD of the linked sources; the copies are linked to NEW's copies (COPYUID on
/// both sides), and a move drops the source links. Without COPYUID from OLD, the destination's
/// adoption watermark is lowered so the next pass links the copies by identity key.
async fn mirror_copy(
    acct: &Account,
    conn: &mut Conn,
    from: &str,
    to: &str,
    uids: &[(u32, u32)],
    moved: bool,
) -> Result<()> {
    let (Some(src), Some(dst)) = (pair(acct, from).await?, pair(acct, to).await?) else {
        return Ok(()); // one side is not on OLD: nothing to mirror there
    };
    let dest_of: HashMap<u32, u32> = uids.iter().copied().collect();
    let wanted: HashMap<u32, (Link, u32)> = acct
        .store
        .links(src.id)
        .await?
        .into_iter()
        .filter_map(|l| {
            let d = *dest_of.get(&l.new_uid)?;
            Some((l.old_uid, (l, d)))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut old_uids: Vec<u32> = wanted.keys().copied().collect();
    old_uids.sort_unstable();
    conn.old.select(&src.old_name, false).await?;
    let copied = if moved {
        conn.old.uid_move(&old_uids, &dst.old_name).await?
    } else {
        conn.old.uid_copy(&old_uids, &dst.old_name).await?
    };
    let links: Vec<Link> = copied
        .iter()
        .filter_map(|(old_src, old_dst)| {
            let (l, new_dst) = wanted.get(old_src)?;
            Some(Link {
                old_uid: *old_dst,
                new_uid: *new_dst,
                ..l.clone()
            })
        })
        .collect();
    acct.store.add_links(dst.id, &links).await?;
    if links.len() < wanted.len() {
        lower_adoption(acct, &dst, wanted.values().map(|(_, d)| *d).min()).await?;
    }
    if moved {
        acct.store.remove_links(src.id, &old_uids).await?;
    }
    Ok(())
}

/// NEW UIDs from `from` on may be unlinked copies: the next pass adopts them by identity key.
async fn lower_adoption(acct: &Account, pair: &FolderPair, from: Option<u32>) -> Result<()> {
    let Some(from) = from.filter(|f| *f < pair.adopt_from) else {
        return Ok(());
    };
    acct.store
        .save_pair_state(pair.id, pair.old, pair.new, from, pair.phase)
        .await?;
    Ok(())
}

/// Messages the client appended to NEW are appended to OLD (flags and INTERNALDATE kept,
/// bytes untouched) and linked.
async fn mirror_append(acct: &Account, conn: &mut Conn, folder: &str, uids: &[u32]) -> Result<()> {
    let Some(pair) = pair(acct, folder).await? else {
        return Ok(());
    };
    if uids.is_empty() {
        // NEW gave no APPENDUID: the next pass adopts or copies by identity key.
        return Ok(());
    }
    conn.new.select(&pair.new_name, true).await?;
    let mut fetched: Vec<Fetch> = Vec::new();
    conn.new
        .uid_fetch(uids, "UID FLAGS INTERNALDATE BODY.PEEK[]", "", |f| {
            fetched.push(f)
        })
        .await?;
    let mut links = Vec::new();
    let mut unlinked = None;
    for f in fetched {
        let (Some(new_uid), Some(body)) = (f.uid, f.body.as_ref()) else {
            continue;
        };
        let flags: Vec<String> = f
            .flags
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        let msg = AppendMsg {
            flags: &flags,
            internaldate: f.internaldate.as_deref(),
            body,
        };
        let tag = conn.old.send_append(&pair.old_name, &[msg]).await?;
        let done = conn.old.wait(&tag, |_| {}).await?.ok(Side::Old, "APPEND")?;
        let canonical = FlagSet::from_iter(&flags).to_canonical();
        match done.code {
            Some(Code::AppendUid { uids, .. }) if uids.len() == 1 => links.push(Link {
                old_uid: uids[0],
                new_uid,
                old_flags: canonical.clone(),
                new_flags: canonical,
                ident: None,
            }),
            _ => unlinked = unlinked.min(Some(new_uid)).or(Some(new_uid)),
        }
    }
    acct.store.add_links(pair.id, &links).await?;
    lower_adoption(acct, &pair, unlinked).await
}

/// RENAME on OLD of the folder's OLD name; the pairs below it follow on both sides.
async fn mirror_rename(acct: &Account, conn: &mut Conn, from: &str, to: &str) -> Result<()> {
    let Some(top) = stored_pair(acct, from).await? else {
        // Not recorded yet: OLD may still have it under the mapped name.
        return match acct.reverse_name(from) {
            Some(old_from) => {
                let Some(old_to) = acct.reverse_name(to) else {
                    return Ok(());
                };
                conn.old
                    .rename(&old_from, &old_to)
                    .await
                    .map_err(Into::into)
            }
            None => Ok(()),
        };
    };
    let Some(old_to) = acct.reverse_name(to) else {
        return Ok(());
    };
    if top.old_name.eq_ignore_ascii_case("INBOX") {
        return Err(SyncError::Options(
            "RENAME of INBOX is not mirrored to OLD".into(),
        ));
    }
    conn.old.rename(&top.old_name, &old_to).await?;
    let (old_sep, new_sep) = acct.separators().unwrap_or(('/', '/'));
    for p in acct.store.folder_pairs(acct.id).await? {
        let below = |name: &str, top: &str, sep: char| {
            name.strip_prefix(top)
                .filter(|rest| rest.is_empty() || rest.starts_with(sep))
                .map(str::to_string)
        };
        let (Some(old_rest), Some(new_rest)) = (
            below(&p.old_name, &top.old_name, old_sep),
            below(&p.new_name, from, new_sep),
        ) else {
            continue;
        };
        let (old_name, new_name) = (format!("{old_to}{old_rest}"), format!("{to}{new_rest}"));
        acct.store.rename_pair(p.id, &old_name, &new_name).await?;
        acct.add_name(&new_name, &old_name);
    }
    Ok(())
}
