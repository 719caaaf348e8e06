//! Adoption: OLD messages whose copy is already on NEW without a link (copied by another tool such as
//! imapsync, or by a pass killed before it recorded its links) are matched by identity key and
//! linked instead of copied. Exact duplicates pair up one to one, in UID order.

use std::collections::HashMap;

use crate::imap::{Client, ImapError};
use crate::store::Link;

use super::flags::FlagSet;
use super::identity::{IdentityOptions, content_key, identity_key, match_by_key};

/// The key a message is recognised by: imapsync's identity key when it has identifying header
/// lines, otherwise a digest of its whole header and size (so messages without Message-Id and
/// Received are still recognised as our own copies).
pub(crate) fn message_key(header: &[u8], size: u32, opts: &IdentityOptions) -> String {
    identity_key(header, size, opts).unwrap_or_else(|| content_key(header, size))
}

/// The header block of a raw message, blank line included (what `BODY[HEADER]` returns).
pub(crate) fn header_of(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i + 4],
        None => message,
    }
}

/// Keys and flags of the given UIDs of the selected mailbox. With `added_header` (OLD under
/// `--addheader`), a message without identifying lines is keyed by the `Message-Id: <UID@imapsync>`
/// its copy received, so the copy is recognised.
pub(crate) async fn keys(
    client: &mut Client,
    uids: &[u32],
    opts: &IdentityOptions,
    added_header: bool,
) -> Result<Vec<(u32, String, FlagSet)>, ImapError> {
    let mut out = Vec::with_capacity(uids.len());
    client
        .uid_fetch(uids, "UID RFC822.SIZE FLAGS BODY.PEEK[HEADER]", "", |f| {
            if let (Some(uid), Some(header)) = (f.uid, f.header) {
                let header = header.to_vec().unwrap_or_default();
                let size = f.size.unwrap_or(0);
                let key = match identity_key(&header, size, opts) {
                    Some(key) => key,
                    None if added_header => {
                        let synthetic = format!("Message-Id: <{uid}@imapsync>\r\n\r\n");
                        identity_key(synthetic.as_bytes(), size, opts).unwrap_or_default()
                    }
                    None => content_key(&header, size),
                };
                out.push((uid, key, FlagSet::from_iter(f.flags.unwrap_or_default())));
            }
        })
        .await?;
    out.sort_by_key(|(uid, ..)| *uid);
    Ok(out)
}

/// Links OLD messages (`old_uids`, in the selected OLD mailbox) to unlinked NEW messages
/// (`candidates`, in the selected NEW mailbox) with equal keys. Base flags are what each side has
/// now: nothing is changed on adoption, later changes follow the usual merge.
pub(crate) async fn adopt(
    old: &mut Client,
    new: &mut Client,
    old_uids: &[u32],
    candidates: &[u32],
    opts: &IdentityOptions,
    added_header: bool,
) -> Result<Vec<Link>, ImapError> {
    let (old_keys, new_keys) = tokio::try_join!(
        keys(old, old_uids, opts, added_header),
        keys(new, candidates, opts, false)
    )?;
    Ok(pair_up(&old_keys, &new_keys))
}

/// Pairs keyed messages of both sides into links.
pub(crate) fn pair_up(
    old_keys: &[(u32, String, FlagSet)],
    new_keys: &[(u32, String, FlagSet)],
) -> Vec<Link> {
    let old_by_uid: HashMap<u32, (&String, &FlagSet)> =
        old_keys.iter().map(|(u, k, f)| (*u, (k, f))).collect();
    let new_flags: HashMap<u32, &FlagSet> = new_keys.iter().map(|(u, _, f)| (*u, f)).collect();
    let o: Vec<(u32, String)> = old_keys.iter().map(|(u, k, _)| (*u, k.clone())).collect();
    let n: Vec<(u32, String)> = new_keys.iter().map(|(u, k, _)| (*u, k.clone())).collect();
    match_by_key(&o, &n)
        .into_iter()
        .map(|(old_uid, new_uid)| Link {
            old_uid,
            new_uid,
            old_flags: old_by_uid
                .get(&old_uid)
                .map(|(_, f)| f.to_canonical())
                .unwrap_or_default(),
            new_flags: new_flags
                .get(&new_uid)
                .map(|f| f.to_canonical())
                .unwrap_or_default(),
            ident: old_by_uid.get(&old_uid).map(|(k, _)| k.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_includes_the_blank_line() {
        assert_eq!(
            header_of(b"A: b\r\nC: d\r\n\r\nbody"),
            b"A: b\r\nC: d\r\n\r\n"
        );
        assert_eq!(header_of(b"A: b\r\n"), b"A: b\r\n");
    }

    #[test]
    fn keys_fall_back_to_the_whole_header() {
        let opts = IdentityOptions::default();
        let with_id = message_key(b"Message-Id: <a@b>\r\nSubject: x\r\n\r\n", 10, &opts);
        let same_id = message_key(b"Message-Id: <a@b>\r\nSubject: other\r\n\r\n", 99, &opts);
        assert_eq!(
            with_id, same_id,
            "imapsync's key ignores other headers and the size"
        );
        let no_id_a = message_key(b"Subject: x\r\n\r\n", 10, &opts);
        let no_id_b = message_key(b"Subject: y\r\n\r\n", 10, &opts);
        assert_ne!(
            no_id_a, no_id_b,
            "without identifying headers the whole header counts"
        );
    }

    #[test]
    fn duplicates_pair_one_to_one() {
        let f = FlagSet::parse("\\Seen");
        let old = vec![
            (1, "k".to_string(), f.clone()),
            (2, "k".to_string(), f.clone()),
            (3, "z".to_string(), f.clone()),
        ];
        let new = vec![(10, "k".to_string(), FlagSet::default())];
        let links = pair_up(&old, &new);
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].old_uid, links[0].new_uid), (1, 10));
        assert_eq!(links[0].old_flags, "\\Seen");
        assert_eq!(links[0].new_flags, "");
        assert_eq!(
            links[0].ident.as_deref(),
            Some("k"),
            "the key is kept with the link"
        );
    }
}
