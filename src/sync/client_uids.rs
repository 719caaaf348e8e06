//! The UID map a completed pass gives a folder whose mail clients keep their caches (the
//! proxy's `keep_client_caches`): built from the pair's links and both sides' recorded state,
//! stored once (in a fleet the first one stored wins) and never changed after.

use std::collections::HashSet;

use tracing::info;

use crate::imap::Client;
use crate::store::{FolderPair, Link, MailboxState, Store};
use crate::uidmap::{Shown, UidMap, runs_of};

use super::{Observer, SyncError};

/// How far above OLD's HIGHESTMODSEQ a folder's MODSEQ offset is set: OLD's later changes (the
/// mirror's own writes, users still on OLD) raise it only once they pass it, so the MODSEQ a
/// client stored through the proxy keeps its meaning meanwhile.
pub(crate) const MODSEQ_HEADROOM: u64 = 1 << 20;

/// What the pair's folder shows, decided after a pass recorded both sides' state `old` and
/// `new`: the stored decision if there is one, else the map [`build`] makes or NEW's numbers,
/// stored for good. Mail NEW got before the copy was complete (the MX moved first) is moved
/// above the copies first, within the folder ([`own_mail`]): no client has seen its NEW UIDs
/// (the folder is not shown before this), and above the copies it is new mail to a client
/// that cached OLD's.
pub(super) async fn decide(
    store: &dyn Store,
    conn: &mut Client,
    pair: &FolderPair,
    (old, mut new): (MailboxState, MailboxState),
) -> Result<Shown, SyncError> {
    if let Some(shown) = store.uid_map(pair.id).await? {
        return Ok(shown);
    }
    let links = store.links(pair.id).await?;
    let mut map = build(&links, old, new);
    // MOVE only: a COPY and an expunge cut apart by a crash would leave the mail twice. Not
    // while the user's writes are on their way to OLD: one may name a NEW UID this would change.
    if map.is_none() && new.uidnext > 1 && conn.has("MOVE") && quiet(store, pair).await? {
        conn.writable_now(&pair.new_name).await?;
        let below = conn
            .uid_search(&format!("UID 1:{}", new.uidnext - 1))
            .await?;
        if let Some(own) = own_mail(&below, &links, new.uidnext) {
            conn.uid_move(&own, &pair.new_name).await?;
            info!(
                folder = %pair.new_name,
                moved = own.len(),
                "NEW's own mail moved above OLD's copies"
            );
            new.messages = new.messages.saturating_sub(own.len() as u32);
            map = build(&links, old, new);
        }
    }
    let shown = map.map_or(Shown::New, Shown::Old);
    Ok(store.freeze_uid_map(pair.id, &shown).await?)
}

/// No write of the pair's account is in flight or waiting in the journal.
async fn quiet(store: &dyn Store, pair: &FolderPair) -> Result<bool, SyncError> {
    Ok(store.journal_pending_count(pair.account).await? == 0
        && store.writes_in_flight(pair.account).await?.is_empty())
}

/// NEW's messages below `uidnext` (`below`) that no link names, when the links below it are in
/// OLD's order: moved above the copies, they leave a folder that keeps client caches. `None`
/// when there are none, or the copies are out of order (nothing would make the map).
pub(crate) fn own_mail(below: &[u32], links: &[Link], uidnext: u32) -> Option<Vec<u32>> {
    let mut pairs: Vec<(u32, u32)> = links
        .iter()
        .filter(|l| l.new_uid < uidnext)
        .map(|l| (l.new_uid, l.old_uid))
        .collect();
    pairs.sort_unstable();
    runs_of(pairs.iter().copied()).ok()?;
    let linked: HashSet<u32> = pairs.iter().map(|p| p.0).collect();
    let own: Vec<u32> = below
        .iter()
        .copied()
        .filter(|u| *u < uidnext && !linked.contains(u))
        .collect();
    (!own.is_empty()).then_some(own)
}

/// OLD's HIGHESTMODSEQ went past the offset of the pair's map: the offset goes above it again
/// ([`MODSEQ_HEADROOM`]), in the store and for the observer. What clients are shown only grows,
/// and a client that synced from OLD meanwhile asks the proxy for every change (see
/// [`UidMap::new_modseq`]); one that synced through the proxy gets some changes again.
pub(super) async fn raise_offset(
    store: &dyn Store,
    pair: &FolderPair,
    old_modseq: u64,
    observer: &dyn Observer,
) -> Result<(), SyncError> {
    store
        .raise_modseq_offset(pair.id, old_modseq.saturating_add(MODSEQ_HEADROOM))
        .await?;
    if let Some(shown) = store.uid_map(pair.id).await? {
        observer.uid_map(&pair.new_name, shown);
    }
    Ok(())
}

/// The map of a folder whose NEW messages, as of the recorded state `new`, are all copies of
/// OLD's in OLD's order: each shown with its OLD UID, and NEW's later messages from OLD's
/// UIDNEXT on; UIDVALIDITY is OLD's, MODSEQ counts on [`MODSEQ_HEADROOM`] above OLD's. `None`
/// when NEW held other messages then, or copies out of OLD's order (adopted from an earlier
/// tool, say).
pub(crate) fn build(links: &[Link], old: MailboxState, new: MailboxState) -> Option<UidMap> {
    // Links to NEW UIDs at or above the recorded UIDNEXT are later arrivals (a move into the
    // folder): they are in the tail like any message NEW gets from now on.
    let mut pairs: Vec<(u32, u32)> = links
        .iter()
        .filter(|l| l.new_uid < new.uidnext)
        .map(|l| (l.new_uid, l.old_uid))
        .collect();
    if pairs.len() != new.messages as usize {
        return None;
    }
    pairs.sort_unstable();
    let runs = runs_of(pairs).ok()?;
    let (last_new, last_virt) = runs
        .last()
        .map_or((0, 0), |r| (r.new + (r.len - 1), r.virt + (r.len - 1)));
    let tail = (
        new.uidnext.max(last_new + 1),
        old.uidnext.max(last_virt + 1),
    );
    UidMap::new(
        old.uidvalidity,
        new.uidvalidity,
        old.highestmodseq.saturating_add(MODSEQ_HEADROOM),
        &runs,
        tail,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uidmap::Dir;

    fn link(new_uid: u32, old_uid: u32) -> Link {
        Link {
            old_uid,
            new_uid,
            old_flags: String::new(),
            new_flags: String::new(),
            ident: None,
        }
    }

    fn state(uidvalidity: u32, uidnext: u32, highestmodseq: u64, messages: u32) -> MailboxState {
        MailboxState {
            uidvalidity,
            uidnext,
            highestmodseq,
            messages,
        }
    }

    #[test]
    fn copies_in_olds_order_keep_olds_uids() {
        // OLD 3, 4, 9 were copied as NEW 1, 2, 3; OLD's UIDNEXT is 12, NEW's 4.
        let links = [link(2, 4), link(1, 3), link(3, 9)];
        let map = build(&links, state(700, 12, 55, 3), state(9, 4, 6, 3)).unwrap();
        assert_eq!(map.uidvalidity(), 700);
        assert_eq!(map.new_uidvalidity(), 9);
        assert_eq!(map.modseq_offset(), 55 + MODSEQ_HEADROOM);
        let shown: Vec<_> = (1..=5).map(|u| map.exact(Dir::ToVirtual, u)).collect();
        // NEW's next messages come after every OLD UID.
        assert_eq!(shown, [Some(3), Some(4), Some(9), Some(12), Some(13)]);
        // A move into the folder after the recorded state is in the tail.
        let moved = [link(1, 3), link(2, 4), link(3, 9), link(4, 2)];
        let again = build(&moved, state(700, 12, 55, 3), state(9, 4, 6, 3)).unwrap();
        assert_eq!(again, map);
    }

    #[test]
    fn a_folder_with_other_messages_or_out_of_order_copies_keeps_news_numbers() {
        // NEW 1 is a message OLD never had (delivered to NEW before the copy).
        let links = [link(2, 1), link(3, 2)];
        assert_eq!(build(&links, state(7, 3, 0, 2), state(9, 4, 0, 3)), None);
        // Copies out of OLD's order.
        let links = [link(1, 2), link(2, 1)];
        assert_eq!(build(&links, state(7, 3, 0, 2), state(9, 3, 0, 2)), None);
    }

    #[test]
    fn news_own_mail_is_moved_up_only_where_that_makes_a_map() {
        let links = [link(2, 1), link(4, 2)];
        for (below, uidnext, want) in [
            // NEW 1 and 3 are NEW's own, below the copies 2 and 4.
            (&[1, 2, 3, 4][..], 5, Some(vec![1, 3])),
            // Only copies.
            (&[2, 4], 5, None),
            // A message at or above UIDNEXT is a later arrival: in the tail already.
            (&[2, 4, 5], 5, None),
        ] {
            assert_eq!(own_mail(below, &links, uidnext), want, "{below:?}");
        }
        // Copies out of OLD's order make no map, whatever moves.
        let crossed = [link(1, 2), link(2, 1)];
        assert_eq!(own_mail(&[1, 2, 3], &crossed, 4), None);
        // Moved up, NEW's own mail is shown above OLD's UIDs.
        let map = build(&links, state(7, 3, 0, 2), state(9, 5, 0, 2)).unwrap();
        assert_eq!(map.exact(Dir::ToVirtual, 6), Some(4));
    }

    #[test]
    fn an_empty_folder_starts_at_olds_uidnext() {
        let map = build(&[], state(7, 40, 0, 0), state(9, 1, 0, 0)).unwrap();
        assert_eq!(map.exact(Dir::ToVirtual, 1), Some(40));
        assert_eq!(map.next_uid(1), 40);
    }
}
