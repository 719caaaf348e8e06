//! imapsync's folder-size table: each selected folder's message count, total and biggest size on
//! both sides. A side's measure is kept in the store and reused while a STATUS shows the folder
//! with the same UIDVALIDITY, UIDNEXT and message count, so an unchanged folder costs one STATUS
//! instead of a FETCH of every message's size.

use std::collections::HashMap;

use crate::imap::{Client, ImapError, MailboxStatus, Side};
use crate::store::{MeasuredSizes, PairId, Store};

use super::account::{account_key, login, map_tree};
use super::{Endpoint, Options, SyncError};

/// Sizes of one selected folder on each side (`None`: the folder does not exist there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderSize {
    pub old_name: String,
    pub new_name: String,
    pub old: Option<Sizes>,
    pub new: Option<Sizes>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub messages: u64,
    pub bytes: u64,
    pub biggest: u64,
}

impl From<MeasuredSizes> for Sizes {
    fn from(m: MeasuredSizes) -> Sizes {
        Sizes {
            messages: m.messages.into(),
            bytes: m.bytes,
            biggest: m.biggest,
        }
    }
}

/// Whether a measure still describes the folder STATUS reports as `now`: messages never change,
/// and in the same UIDVALIDITY none was added (UIDNEXT) or expunged (the count) since.
fn still_true(measured: &MeasuredSizes, now: &MailboxStatus) -> bool {
    now.uidnext > 0
        && (measured.uidvalidity, measured.uidnext, measured.messages)
            == (now.uidvalidity, now.uidnext, now.messages)
}

/// A folder pair the store knows, with its last measures.
struct Known {
    pair: PairId,
    old: Option<MeasuredSizes>,
    new: Option<MeasuredSizes>,
}

/// Message count, total and biggest size of the selected folders on each side. Read-only:
/// STATUS for folders measured before (with `store`), EXAMINE and `FETCH 1:* (RFC822.SIZE)` for
/// the others; their new measures are stored for the folder pairs the store has.
pub async fn folder_sizes(
    old_ep: &Endpoint,
    new_ep: &Endpoint,
    opts: &Options,
    store: Option<&dyn Store>,
) -> Result<Vec<FolderSize>, SyncError> {
    let (old, new) = tokio::join!(login(old_ep, Side::Old), login(new_ep, Side::New));
    let (mut old, mut new) = (old?, new?);
    let tree = map_tree(&mut old, &mut new, opts).await?;
    let mut known: HashMap<&str, Known> = HashMap::new();
    if let Some(store) = store
        && let Some(account) = store.find_account(&account_key(old_ep, new_ep)).await?
    {
        for pair in store.folder_pairs(account).await? {
            let Some((old_name, _)) = tree
                .pairs
                .iter()
                .find(|(o, n)| *o == pair.old_name && *n == pair.new_name)
            else {
                continue;
            };
            let (o, n) = store.measured_sizes(pair.id).await?;
            known.insert(
                old_name,
                Known {
                    pair: pair.id,
                    old: o,
                    new: n,
                },
            );
        }
    }
    let old_now = statuses(
        &mut old,
        tree.pairs
            .iter()
            .filter_map(|(o, _)| known.get(o.as_str()).and_then(|k| k.old).map(|_| o.clone())),
    )
    .await?;
    let new_now = statuses(
        &mut new,
        tree.pairs
            .iter()
            .filter_map(|(o, n)| known.get(o.as_str()).and_then(|k| k.new).map(|_| n.clone())),
    )
    .await?;

    let mut out = Vec::new();
    for (old_name, new_name) in &tree.pairs {
        let stored = known.get(old_name.as_str());
        let (old_sizes, old_measure) = side(
            &mut old,
            old_name,
            stored.and_then(|k| k.old),
            old_now.get(old_name),
        )
        .await?;
        let (new_sizes, new_measure) = if tree.new_existing.contains(new_name) {
            side(
                &mut new,
                new_name,
                stored.and_then(|k| k.new),
                new_now.get(new_name),
            )
            .await?
        } else {
            (None, None)
        };
        if let (Some(store), Some(k)) = (store, stored)
            && (old_measure, new_measure) != (k.old, k.new)
        {
            store
                .save_measured_sizes(k.pair, old_measure, new_measure)
                .await?;
        }
        out.push(FolderSize {
            old_name: old_name.clone(),
            new_name: new_name.clone(),
            old: old_sizes,
            new: new_sizes,
        });
    }
    old.logout().await;
    new.logout().await;
    Ok(out)
}

/// STATUS of `names`, pipelined; a folder STATUS refuses is left out (it is measured instead).
async fn statuses(
    client: &mut Client,
    names: impl Iterator<Item = String>,
) -> Result<HashMap<String, MailboxStatus>, ImapError> {
    let names: Vec<String> = names.collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let answers = client.status_many(&names).await?;
    Ok(names
        .into_iter()
        .zip(answers)
        .filter_map(|(name, status)| Some((name, status.ok()?)))
        .collect())
}

/// One side of one folder: the stored measure while STATUS says it still holds, else a new one.
/// Returns the sizes and the measure to keep.
async fn side(
    client: &mut Client,
    name: &str,
    stored: Option<MeasuredSizes>,
    now: Option<&MailboxStatus>,
) -> Result<(Option<Sizes>, Option<MeasuredSizes>), ImapError> {
    if let (Some(m), Some(now)) = (stored, now)
        && still_true(&m, now)
    {
        return Ok((Some(m.into()), Some(m)));
    }
    measure(client, name).await
}

/// EXAMINE and every message's size. The measure is kept only when the FETCH saw exactly the
/// messages EXAMINE announced (none arrived or went in between).
async fn measure(
    client: &mut Client,
    name: &str,
) -> Result<(Option<Sizes>, Option<MeasuredSizes>), ImapError> {
    let info = match client.select(name, true).await {
        Ok(info) => info,
        Err(ImapError::Refused { .. }) => return Ok((None, None)),
        Err(e) => return Err(e),
    };
    let mut s = Sizes::default();
    if info.exists > 0 {
        let mut seen = HashMap::new();
        let tag = client.send_uid_fetch("1:*", "UID RFC822.SIZE", "").await?;
        client
            .wait_fetch(&tag, |f| {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    seen.insert(uid, size);
                }
            })
            .await?;
        for size in seen.into_values() {
            s.messages += 1;
            s.bytes += size as u64;
            s.biggest = s.biggest.max(size as u64);
        }
    }
    let kept =
        (info.uidnext > 0 && s.messages == u64::from(info.exists)).then_some(MeasuredSizes {
            uidvalidity: info.uidvalidity,
            uidnext: info.uidnext,
            messages: info.exists,
            bytes: s.bytes,
            biggest: s.biggest,
        });
    Ok((Some(s), kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measure_holds_while_no_message_came_or_went() {
        let m = MeasuredSizes {
            uidvalidity: 7,
            uidnext: 101,
            messages: 90,
            bytes: 5_000,
            biggest: 900,
        };
        let now = |uidvalidity, uidnext, messages| MailboxStatus {
            uidvalidity,
            uidnext,
            messages,
            highestmodseq: 0,
        };
        let rows = [
            (
                now(7, 101, 90),
                true,
                "unchanged (flags may have changed: sizes did not)",
            ),
            (now(7, 102, 91), false, "a message added"),
            (
                now(7, 102, 90),
                false,
                "one added, one expunged: same count, UIDNEXT moved",
            ),
            (now(7, 101, 89), false, "a message expunged"),
            (now(8, 101, 90), false, "a new UIDVALIDITY: another mailbox"),
            (now(7, 0, 90), false, "a server without UIDNEXT"),
        ];
        for (status, holds, case) in rows {
            assert_eq!(still_true(&m, &status), holds, "{case}");
        }
    }
}
