//! Client caches kept across the cutover (issue 15), end to end with real Dovecot servers as OLD
//! and NEW: with `[migration] keep_client_caches`, a folder copied from OLD shows OLD's
//! UIDVALIDITY and OLD's UIDs through the proxy, new messages get UIDs above OLD's, the numbers
//! survive a restart of the proxy, and writes by those numbers reach the right messages.

mod common;

use std::path::Path;

use common::{Dovecot, Layout, Proxy, RawImap, raw::Msg};

const USER: &str = "carol";
const PW: &str = "carolpw";

/// The proxy in front of `new`, migrating from `old`, state in `state`, with these
/// `[migration]` settings.
fn proxy_with(old: &Dovecot, new: &Dovecot, state: &Path, migration: &str) -> Proxy {
    Proxy::start(
        new.port(),
        &format!(
            "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [state]\npath = \"{}\"\n[migration]\n{migration}\n",
            old.port(),
            state.display()
        ),
    )
}

fn proxy(old: &Dovecot, new: &Dovecot, state: &Path, keep: bool) -> Proxy {
    let migration = format!("select_budget_ms = 5000\nkeep_client_caches = {keep}");
    proxy_with(old, new, state, &migration)
}

/// OLD's INBOX: six messages, the third expunged (UIDs 1, 2, 4, 5, 6; UIDNEXT 7).
fn seed_old(old: &Dovecot) -> (u32, Vec<Msg>) {
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    for i in 1..=6 {
        c.append("INBOX", &[], None, &common::message(i, 500));
    }
    c.select("INBOX");
    c.uid_expunge("INBOX", 3);
    let uidvalidity = uidvalidity(&mut c, "INBOX");
    let msgs = c.uid_fetch_all("INBOX");
    c.logout();
    (uidvalidity, msgs)
}

fn uidvalidity(c: &mut RawImap, mailbox: &str) -> u32 {
    let (lines, status) = c.raw(&format!("STATUS {mailbox} (UIDVALIDITY)"));
    assert!(status.contains("OK"), "{status}");
    let line = lines.iter().find(|l| l.contains("UIDVALIDITY")).unwrap();
    number_after(line, "UIDVALIDITY")
}

fn number_after(text: &str, word: &str) -> u32 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word} in {text}"))
        + word.len();
    text[at..]
        .trim_start_matches([' ', '('])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `(uid, body)` of each message, as a client sees them through `port`.
fn seen(port: u16) -> (u32, Vec<(u32, Vec<u8>)>, RawImap) {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(USER, PW);
    let (lines, status) = c.raw("SELECT INBOX");
    assert!(status.contains("OK"), "{status}");
    let line = lines.iter().find(|l| l.contains("[UIDVALIDITY")).unwrap();
    let uidvalidity = number_after(line, "UIDVALIDITY");
    let msgs = c.uid_fetch("1:*");
    (
        uidvalidity,
        msgs.into_iter().map(|m| (m.uid, m.body)).collect(),
        c,
    )
}

fn servers() -> (Dovecot, Dovecot) {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    // NEW's INBOX exists (a login creates it) with a UIDVALIDITY of its own.
    RawImap::connect(new.host(), new.port()).login(USER, PW);
    new.set_uidvalidity(USER, "INBOX", 4242);
    (old, new)
}

#[test]
fn a_migrated_folder_shows_olds_uidvalidity_and_uids() {
    let (old, new) = servers();
    let (old_validity, old_msgs) = seed_old(&old);
    let old_view: Vec<(u32, Vec<u8>)> = old_msgs.iter().map(|m| (m.uid, m.body.clone())).collect();
    assert_eq!(
        old_view.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 4, 5, 6]
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");

    let p = proxy(&old, &new, &state, true);
    let (validity, view, mut c) = seen(p.port);
    assert_eq!(validity, old_validity, "OLD's UIDVALIDITY");
    assert_eq!(view, old_view, "OLD's UIDs, each on its own message");
    // NEW's own numbers differ: the proxy translated them.
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    let new_msgs = direct.uid_fetch_all("INBOX");
    assert_eq!(
        new_msgs.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(uidvalidity(&mut direct, "INBOX"), 4242);

    // A message appended through the proxy is shown above every OLD UID.
    let (lines, status) = c.raw("APPEND INBOX (\\Seen) {5}\r\nHi!\r\n");
    let _ = lines;
    assert!(status.contains("OK"), "{status}");
    let appended = number_after(&status, &format!("APPENDUID {old_validity}"));
    assert!(appended >= 7, "fresh UID {appended} above OLD's UIDNEXT 7");
    // A write by a virtual UID reaches that message on NEW.
    // curl names a message by its UID: OLD's.
    let url = format!("imap://127.0.0.1:{}/INBOX;UID=5", p.port);
    let out = std::process::Command::new("curl")
        .args(["-s", "--user", &format!("{USER}:{PW}"), &url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {out:?}");
    assert_eq!(out.stdout, old_view[3].1, "OLD UID 5 is the fourth message");
    c.exec("UID STORE 4 +FLAGS (\\Flagged)");
    let flagged: Vec<Vec<u8>> = direct
        .uid_fetch_all("INBOX")
        .into_iter()
        .filter(|m| m.flags.contains("\\Flagged"))
        .map(|m| m.body)
        .collect();
    assert_eq!(
        flagged,
        [old_view[2].1.clone()],
        "UID 4 is OLD's fourth message"
    );
    let (lines, _) = c.raw("STATUS INBOX (UIDNEXT UIDVALIDITY)");
    let line = lines.iter().find(|l| l.contains("STATUS")).unwrap();
    assert_eq!(number_after(line, "UIDVALIDITY"), old_validity);
    assert_eq!(number_after(line, "UIDNEXT"), appended + 1);
    c.logout();
    drop(p);

    // After a restart the numbers are the same.
    let p = proxy(&old, &new, &state, true);
    let (validity, again, c) = seen(p.port);
    c.logout();
    assert_eq!(validity, old_validity);
    assert_eq!(&again[..5], &old_view[..]);
    assert_eq!(again[5].0, appended);
    drop(p);

    // A retired account's clients keep seeing the same numbers, OLD untouched.
    common::state::retire_all(&state);
    let p = proxy(&old, &new, &state, true);
    let (validity, retired, mut c) = seen(p.port);
    assert_eq!(validity, old_validity);
    assert_eq!(retired, again);
    c.exec("UID STORE 5 +FLAGS (\\Answered)");
    let answered: Vec<Vec<u8>> = direct
        .uid_fetch_all("INBOX")
        .into_iter()
        .filter(|m| m.flags.contains("\\Answered"))
        .map(|m| m.body)
        .collect();
    assert_eq!(
        answered,
        [old_view[3].1.clone()],
        "UID 5 is OLD's fifth message"
    );
    c.logout();
    drop(p);

    // Without the feature the client sees NEW's numbers (its cache would be dropped).
    let p = proxy(&old, &new, &state, false);
    let (validity, plain, c) = seen(p.port);
    c.logout();
    assert_ne!(validity, old_validity);
    assert_eq!(
        plain.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn a_folder_is_not_shown_before_its_numbers_are_decided() {
    let (old, new) = servers();
    let (old_validity, _) = seed_old(&old);
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    c.create("Later");
    c.append("Later", &[], None, &common::message(40, 300));
    let later_validity = uidvalidity(&mut c, "Later");
    c.logout();
    let dir = tempfile::tempdir().unwrap();
    let p = proxy_with(
        &old,
        &new,
        &dir.path().join("state.db"),
        "select_budget_ms = 500\nkeep_client_caches = true\nkeep_client_caches_wait_secs = 1",
    );
    let (validity, _, mut c) = seen(p.port);
    assert_eq!(validity, old_validity);

    // OLD stops answering before `Later` is copied: the client is told to come back.
    old.freeze(true);
    let started = std::time::Instant::now();
    let (_, status) = c.raw("SELECT Later");
    assert!(status.contains("NO [UNAVAILABLE]"), "{status}");
    let (_, status) = c.raw("STATUS Later (UIDNEXT UIDVALIDITY)");
    assert!(status.contains("NO [UNAVAILABLE]"), "{status}");
    // Nor can mail be moved there: its UIDs in `Later` would have no number to show.
    let (_, status) = c.raw("SELECT INBOX");
    assert!(status.contains("OK"), "{status}");
    let (_, status) = c.raw("UID MOVE 1 Later");
    assert!(status.contains("NO [UNAVAILABLE]"), "{status}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    assert_eq!(direct.uid_fetch_all("INBOX").len(), 5, "nothing moved");

    // Once OLD answers, the folder is shown with OLD's numbers.
    old.freeze(false);
    let (lines, status) = c.raw("SELECT Later");
    assert!(status.contains("OK"), "{status}");
    let line = lines.iter().find(|l| l.contains("[UIDVALIDITY")).unwrap();
    assert_eq!(number_after(line, "UIDVALIDITY"), later_validity);
    // And the move goes through, its COPYUID in `Later`'s numbers: above OLD's one message.
    c.select("INBOX");
    let (_, status) = c.raw("UID MOVE 1 Later");
    assert!(status.contains("OK"), "{status}");
    let (lines, _) = c.raw("SELECT Later");
    let uids: Vec<u32> = c.uid_fetch("1:*").iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2], "{lines:?}");
    c.logout();
    direct.logout();
}

/// `(uid, body)` of each message of `folder` through `c`, and the UIDVALIDITY its SELECT shows.
fn folder_seen(c: &mut RawImap, folder: &str) -> (u32, Vec<(u32, Vec<u8>)>) {
    let (lines, status) = c.raw(&format!("SELECT {folder}"));
    assert!(status.contains("OK"), "{status}");
    let line = lines.iter().find(|l| l.contains("[UIDVALIDITY")).unwrap();
    let msgs = c.uid_fetch("1:*");
    (
        number_after(line, "UIDVALIDITY"),
        msgs.into_iter().map(|m| (m.uid, m.body)).collect(),
    )
}

#[test]
fn mail_new_got_before_the_copy_is_shown_above_olds_and_out_of_order_copies_show_news_numbers() {
    let (old, new) = servers();
    let (old_validity, _) = seed_old(&old);
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    for folder in ["Mixed", "Crossed"] {
        c.create(folder);
        c.append(folder, &[], None, &common::message(50, 300));
        c.append(folder, &[], None, &common::message(51, 300));
    }
    let mixed_validity = uidvalidity(&mut c, "Mixed");
    assert_ne!(mixed_validity, 5252);
    c.logout();
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    // Mail delivered to NEW's folder before the proxy copied OLD's (the MX moved first).
    direct.create("Mixed");
    direct.append("Mixed", &["\\Flagged"], None, &common::message(60, 300));
    new.set_uidvalidity(USER, "Mixed", 5252);
    // Copies of OLD's messages already on NEW, in the other order (an earlier tool's).
    direct.create("Crossed");
    direct.append("Crossed", &[], None, &common::message(51, 300));
    direct.append("Crossed", &[], None, &common::message(50, 300));
    new.set_uidvalidity(USER, "Crossed", 5151);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let p = proxy(&old, &new, &state, true);
    let (validity, _, mut c) = seen(p.port);
    assert_eq!(validity, old_validity);

    // OLD's numbers, NEW's own message above them (new mail to a client that cached OLD's).
    let (validity, mixed) = folder_seen(&mut c, "Mixed");
    assert_eq!(validity, mixed_validity);
    assert_eq!(
        mixed.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "OLD's 1 and 2, then NEW's own from OLD's UIDNEXT 3"
    );
    assert_eq!(mixed[2].1, common::message(60, 300));
    let flagged = direct
        .uid_fetch_all("Mixed")
        .into_iter()
        .filter(|m| m.flags.contains("\\Flagged"))
        .count();
    assert_eq!(flagged, 1, "moved with its flags");

    // Out of order: NEW's numbers, for good.
    let (validity, crossed) = folder_seen(&mut c, "Crossed");
    assert_eq!(validity, 5151);
    assert_eq!(crossed.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2]);
    c.logout();
    direct.logout();
    drop(p);

    let shown: Vec<(String, Option<bool>)> = common::state::folder_summaries(&state)
        .into_iter()
        .map(|f| (f.pair.new_name, f.keeps_client_caches))
        .collect();
    assert!(shown.contains(&("Mixed".into(), Some(true))), "{shown:?}");
    assert!(
        shown.contains(&("Crossed".into(), Some(false))),
        "{shown:?}"
    );
}

/// HIGHESTMODSEQ of `mailbox` as a SELECT through `c` shows it.
fn highestmodseq(c: &mut RawImap, mailbox: &str) -> u64 {
    let (lines, status) = c.raw(&format!("SELECT {mailbox} (CONDSTORE)"));
    assert!(status.contains("OK"), "{status}");
    let line = lines.iter().find(|l| l.contains("[HIGHESTMODSEQ")).unwrap();
    u64::from(number_after(line, "HIGHESTMODSEQ"))
}

#[test]
fn modseqs_shown_stay_above_every_modseq_old_gave_out() {
    let (old, new) = servers();
    seed_old(&old);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let p = proxy(&old, &new, &state, true);
    let (_, _, mut c) = seen(p.port);
    // Decided above OLD's HIGHESTMODSEQ, with room for OLD's later changes.
    let mut o = RawImap::connect(old.host(), old.port());
    o.login(USER, PW);
    let old_modseq = |o: &mut RawImap| {
        let (lines, _) = o.raw("STATUS INBOX (HIGHESTMODSEQ)");
        u64::from(number_after(
            lines.iter().find(|l| l.contains("STATUS")).unwrap(),
            "HIGHESTMODSEQ",
        ))
    };
    assert!(highestmodseq(&mut c, "INBOX") > old_modseq(&mut o) + (1 << 20));
    c.logout();
    drop(p);

    // An offset OLD has run past (as after a million changes there).
    let db = rusqlite::Connection::open(&state).unwrap();
    assert_eq!(
        db.execute("UPDATE uid_maps SET modseq_offset = 1", [])
            .unwrap(),
        1
    );
    drop(db);
    let p = proxy(&old, &new, &state, true);
    let (_, _, mut c) = seen(p.port);
    // A device still on OLD changes flags there.
    o.select("INBOX");
    for _ in 0..20 {
        o.exec("UID STORE 1 +FLAGS (x)");
        o.exec("UID STORE 1 -FLAGS (x)");
    }
    let old_now = old_modseq(&mut o);
    o.logout();

    // Once the proxy has looked at OLD again (the login's pass does), what it shows is above
    // what OLD gave out, so a client that synced from OLD meanwhile asks for every change, not
    // for NEW's after a number that means nothing there (with the offset left at 1, NEW's
    // HIGHESTMODSEQ + 1 is shown: below OLD's).
    let t = std::time::Instant::now();
    loop {
        let shown = highestmodseq(&mut c, "INBOX");
        if shown > old_now {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "shown {shown}, OLD {old_now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    c.logout();
}
