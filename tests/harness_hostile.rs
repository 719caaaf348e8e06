//! The hostile corpus (tests/common/hostile.rs) on a real Dovecot in both main layouts: OLD holds
//! every folder, keyword, planted flag, date, big message and subscription its summary promises,
//! and the raw client and `snapshot` read it all back.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::hostile::*;
use common::raw::atom_text;
use common::seed::parse_imap_date;
use common::*;

const USER: &str = "mallory";
const PW: &str = "mallorypw";

fn seed_and_check(layout: Layout) {
    let started = Instant::now();
    let d = Dovecot::start(layout);
    let sum = seed_hostile(&d, USER, PW);
    eprintln!("{layout:?}: seeded in {:?}", started.elapsed());
    eprintln!("{layout:?}: {sum:#?}");
    let snap = snapshot(&d, USER, PW);

    let counts: Vec<(&String, usize)> = snap.folders.iter().map(|(k, v)| (k, v.len())).collect();
    let expected: Vec<(&String, usize)> = sum.counts.iter().map(|(k, v)| (k, *v)).collect();
    assert_eq!(counts, expected, "folders and message counts");
    assert_eq!(snap.total(), sum.messages);
    for path in ["Hostile/Case", "Hostile/case", "Twin", "twin", DEEP] {
        assert!(sum.counts[path] > 0, "{path} missing");
    }
    assert_eq!(sum.counts["Hostile/case"], 2);
    for name in mutf7_names() {
        assert!(sum.counts[&name] == 1, "{name} missing");
    }
    // LAYOUT=fs lists the parents of DEEP (and of the nested mUTF-7 name) as \Noselect; Maildir++
    // does not list them at all.
    let mut parents: BTreeSet<String> = (1..8).map(|n| DEEP[..2 * n - 1].to_string()).collect();
    parents.insert(mutf7("Übersicht"));
    match layout {
        Layout::DotInbox => assert!(sum.noselect.is_empty(), "{:?}", sum.noselect),
        _ => assert_eq!(sum.noselect, parents),
    }

    assert_eq!(snap.subscribed, sum.subscribed, "LSUB");
    let ghosts: BTreeSet<String> = GHOSTS.map(String::from).into();
    assert_eq!(sum.ghost_subscriptions, ghosts);

    // Keywords, byte for byte.
    let hostile = &snap.folders["Hostile"];
    let flags: BTreeSet<&String> = hostile.iter().flat_map(|m| &m.flags).collect();
    let mut promised: Vec<String> = KEYWORDS.map(String::from).into();
    promised.extend(atom_char_keywords());
    for keyword in &promised {
        assert!(sum.keywords.contains(keyword), "{keyword} not seeded");
    }
    for keyword in &sum.keywords {
        assert!(flags.contains(keyword), "{keyword} not in FETCH FLAGS");
    }
    let used: BTreeSet<char> = sum.keywords.iter().flat_map(|k| k.chars()).collect();
    for c in (0x21u8..=0x7e)
        .map(char::from)
        .filter(|c| !"(){ %*\"\\]".contains(*c))
    {
        assert!(used.contains(&c), "ATOM-CHAR {c:?} unused");
    }
    let most = hostile.iter().map(|m| m.flags.len()).max().unwrap();
    assert_eq!(sum.hundred_keywords_refused, None, "Dovecot 2.3 takes 100");
    assert_eq!(most, 100);

    // Planted flags, as OLD reports them.
    for (subject, want) in &sum.planted {
        let m = hostile.iter().find(|m| &m.subject == subject).unwrap();
        assert_eq!(&m.flags, want, "{subject}");
    }
    for flag in BOGUS_FLAGS {
        assert!(flags.contains(&flag.to_string()), "{flag} not visible");
    }
    assert!(flags.contains(&atom_text(LATIN1_KEYWORD)) && flags.contains(&"café".to_string()));
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(USER, PW);
    imap.examine(&d.mailbox_name("Hostile"));
    let raw: Vec<u8> = imap.exec("UID FETCH 1:* FLAGS").concat();
    for needle in [
        &b" \xe9t\xe9 caf\xc3\xa9)"[..],
        b"\\Indexed",
        b" a[b",
        b" ~tilde",
    ] {
        assert!(
            raw.windows(needle.len()).any(|w| w == needle),
            "{:?} not served raw",
            String::from_utf8_lossy(needle)
        );
    }

    // The big message, whole.
    let big = &snap.folders["Hostile/Big"];
    assert_eq!(big.len(), 1);
    assert!(sum.big_size >= BIG_SIZE && big[0].size == sum.big_size);
    imap.examine(&d.mailbox_name("Hostile/Big"));
    let size = imap.exec("FETCH 1 RFC822.SIZE").concat();
    let size = String::from_utf8_lossy(&size);
    assert!(
        size.contains(&format!("RFC822.SIZE {}", sum.big_size)),
        "{size}"
    );

    // Dates: the snapshot sees what the summary says OLD holds (Dovecot 2.3.19's substitutions).
    let dates = &snap.folders["Hostile/Dates"];
    for (subject, (_, held)) in &sum.dates {
        let m = dates.iter().find(|m| &m.subject == subject).unwrap();
        assert_eq!(m.internaldate, parse_imap_date(held), "{subject}");
    }
    // Dovecot 2.3.19: pre-1970 dates come back wrapped to 32 bits unsigned (-1 was clamped to
    // i32::MIN first), dates from 2038-01-19 03:14:07 on are replaced by the APPEND time.
    let held = |s: &str| sum.dates[s].1.as_str();
    assert_eq!(held("Date 1960"), "06-Feb-2096 18:28:16 +0000");
    assert_eq!(
        held("Date one second before the epoch"),
        "19-Jan-2038 03:14:08 +0000"
    );
    assert_eq!(held("Date the epoch"), "01-Jan-1970 00:00:00 +0000");
    let appended = parse_imap_date(held("Date 2040"));
    assert!(appended.abs_diff(parse_imap_date(held("Date last 32-bit second"))) < 60);

    // Dovecot stores LF line ends: bare LFs come back as CRLF, CR CR LF as CR LF, and a lone CR
    // at the very end is lost.
    let rewritten: BTreeSet<String> = [BARE_LF, BARE_CR, MIXED_ENDS].map(String::from).into();
    assert_eq!(sum.served_differently, rewritten);
    let bytes = &snap.folders["Hostile/Bytes"];
    assert!(bytes.windows(2).any(|w| w[0] == w[1]), "exact duplicate");
    let size_of = |subject: &str| bytes.iter().find(|m| m.subject == subject).unwrap().size;
    assert!(size_of("200 KB header block") > HEADER_BLOCK);
    assert!(size_of("100 nested multiparts") > MIME_DEPTH * 60);
    imap.examine(&d.mailbox_name("Hostile/Bytes"));
    let search = |imap: &mut RawImap, criteria: &str| {
        let untagged = imap.exec(&format!("UID SEARCH {criteria}"));
        String::from_utf8_lossy(&untagged.concat())
            .split_whitespace()
            .count()
            - 2
    };
    assert_eq!(
        search(&mut imap, "HEADER Message-Id <shared-id@hostile.example>"),
        2
    );
    assert_eq!(
        search(&mut imap, "NOT HEADER Message-Id \"\""),
        1,
        "one without Message-Id"
    );
    imap.logout();

    let took = started.elapsed();
    eprintln!("{layout:?}: seeded and checked in {took:?}");
    assert!(took < Duration::from_secs(40), "too slow: {took:?}");
}

#[test]
fn hostile_corpus_slash() {
    seed_and_check(Layout::Slash);
}

#[test]
fn hostile_corpus_dot_inbox() {
    seed_and_check(Layout::DotInbox);
}
