//! `plan` over small folders: each row is what the pass read, what the store held, and the actions
//! expected. OLD's UIDVALIDITY is 1 and NEW's 2 unless a row changes them.

use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::store::NO_BASE;
use crate::sync::flags::Unstorable;

fn side(uidvalidity: u32, uids: impl IntoIterator<Item = u32>) -> SideScan {
    let uids: BTreeSet<u32> = uids.into_iter().collect();
    SideScan {
        state: MailboxState {
            uidvalidity,
            uidnext: uids.last().map_or(1, |u| u + 1),
            highestmodseq: 0,
            messages: uids.len() as u32,
        },
        uids,
        ..SideScan::default()
    }
}

/// A pass that read these UIDs, with no flag changes, NEW settled.
fn read(old: impl IntoIterator<Item = u32>, new: impl IntoIterator<Item = u32>) -> Scan {
    Scan {
        old: side(1, old),
        new: side(2, new),
        new_settled: true,
    }
}

/// `flags` as read (changed since the last pass), by UID.
fn changed(list: &[(u32, &str)]) -> HashMap<u32, FlagSet> {
    list.iter().map(|(u, f)| (*u, FlagSet::parse(f))).collect()
}

fn link(old_uid: u32, new_uid: u32, base: &str) -> Link {
    Link {
        old_uid,
        new_uid,
        old_flags: base.into(),
        new_flags: base.into(),
        ident: None,
    }
}

/// A pair the store knows (both UIDVALIDITYs as in [`read`]) with these links, flags `""`; the
/// adoption watermark is above the highest linked NEW UID.
fn known(links: &[(u32, u32)]) -> Stored {
    let state = |uidvalidity| MailboxState {
        uidvalidity,
        ..MailboxState::default()
    };
    Stored {
        old: Some(state(1)),
        new: Some(state(2)),
        adopt_from: links.iter().map(|(_, n)| n + 1).max().unwrap_or(1),
        links: links.iter().map(|(o, n)| link(*o, *n, "")).collect(),
        tombstones: BTreeSet::new(),
    }
}

/// A pair never synced.
fn fresh() -> Stored {
    Stored {
        adopt_from: 1,
        ..Stored::default()
    }
}

fn identity(n: u32) -> Vec<(u32, u32)> {
    (1..=n).map(|u| (u, u)).collect()
}

fn set(uids: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    uids.into_iter().collect()
}

fn options() -> PlanOptions {
    PlanOptions {
        max_delete_share: 0.10,
        rewrite: FlagRewrite::default(),
        host1_wins: false,
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn base(old_uid: u32, old_flags: &str, new_flags: &str) -> LinkFlags {
    LinkFlags {
        old_uid,
        old_flags: old_flags.into(),
        new_flags: new_flags.into(),
    }
}

struct Row {
    name: &'static str,
    scan: Scan,
    stored: Stored,
    options: PlanOptions,
    want: Plan,
}

fn row(name: &'static str, scan: Scan, stored: Stored, want: Plan) -> Row {
    Row {
        name,
        scan,
        stored,
        options: options(),
        want,
    }
}

fn folders() -> Vec<Row> {
    vec![
        row(
            "first pass: everything is copied, in ascending OLD UID",
            read([3, 1, 2], []),
            fresh(),
            Plan {
                copy: vec![1, 2, 3],
                adopt_from: 1,
                ..Plan::default()
            },
        ),
        row(
            "first pass over a NEW folder an earlier tool filled: all of NEW may be adopted",
            read(1..=3, [1, 2]),
            fresh(),
            Plan {
                copy: vec![1, 2, 3],
                adopt_candidates: vec![1, 2],
                adopt_from: 1,
                ..Plan::default()
            },
        ),
        row(
            "nothing changed: nothing to do",
            read(1..=3, 1..=3),
            known(&identity(3)),
            Plan {
                linked: set(1..=3),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "new mail on OLD: only it is copied",
            read(1..=5, 1..=3),
            known(&identity(3)),
            Plan {
                linked: set(1..=3),
                copy: vec![4, 5],
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "new mail on OLD and an unlinked message on NEW above the watermark: it may be its copy",
            read(1..=5, 1..=4),
            known(&identity(3)),
            Plan {
                linked: set(1..=3),
                copy: vec![4, 5],
                adopt_candidates: vec![4],
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "an unlinked NEW message below the watermark is the user's, never adopted",
            read(1..=4, [1, 2, 3, 7]),
            Stored {
                adopt_from: 8,
                ..known(&identity(3))
            },
            Plan {
                linked: set(1..=3),
                copy: vec![4],
                adopt_from: 8,
                ..Plan::default()
            },
        ),
        row(
            "NEW's copy vanished: tombstoned, not copied again",
            read(1..=3, [1, 3]),
            known(&identity(3)),
            Plan {
                tombstone: vec![2],
                linked: set([1, 3]),
                tombstoned: set([2]),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "NEW's copy vanished while the user's writes are not on OLD yet: left linked",
            Scan {
                new_settled: false,
                ..read(1..=3, [1, 3])
            },
            known(&identity(3)),
            Plan {
                held: vec![2],
                linked: set(1..=3),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "a NEW message no link claims while the user's writes are not on OLD: the \
             watermark the pass records stays below it (the mirror may put it on OLD and be \
             cut off before it links it)",
            Scan {
                new_settled: false,
                ..read(1..=3, 1..=5)
            },
            known(&identity(3)),
            Plan {
                linked: set(1..=3),
                adopt_from: 4,
                unlinked_new_from: Some(4),
                ..Plan::default()
            },
        ),
        row(
            "the same once the user's writes are on OLD: NEW-only mail, the watermark moves on",
            read(1..=3, 1..=5),
            known(&identity(3)),
            Plan {
                linked: set(1..=3),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "a stored tombstone keeps its message from being copied",
            read(1..=3, [1, 3]),
            Stored {
                tombstones: set([2]),
                ..known(&[(1, 1), (3, 3)])
            },
            Plan {
                linked: set([1, 3]),
                tombstoned: set([2]),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "expunged on OLD: NEW's copy goes too (1 of 20, within 10 %)",
            read((1..=20).filter(|u| *u != 5), 1..=20),
            known(&identity(20)),
            Plan {
                old_expunges: OldExpunges::Propagate(vec![(5, 5)]),
                linked: set((1..=20).filter(|u| *u != 5)),
                adopt_from: 21,
                ..Plan::default()
            },
        ),
        row(
            "at the bound (2 of 20, 10 %): propagated",
            read(3..=20, 1..=20),
            known(&identity(20)),
            Plan {
                old_expunges: OldExpunges::Propagate(vec![(1, 1), (2, 2)]),
                linked: set(3..=20),
                adopt_from: 21,
                ..Plan::default()
            },
        ),
        row(
            "just past the bound (2 of 19, 10.5 %): the folder stops",
            read(3..=19, 1..=19),
            known(&identity(19)),
            Plan {
                old_expunges: OldExpunges::Stop {
                    expunged: 2,
                    on_new: 19,
                },
                linked: set(3..=19),
                adopt_from: 20,
                ..Plan::default()
            },
        ),
        row(
            "expunged on OLD beyond the bound (4 of 19): the folder stops after the tombstones",
            read((4..=22).filter(|u| *u != 10), (1..=20).filter(|u| *u != 9)),
            known(&identity(20)),
            Plan {
                tombstone: vec![9],
                old_expunges: OldExpunges::Stop {
                    expunged: 4,
                    on_new: 19,
                },
                linked: set((4..=20).filter(|u| ![9, 10].contains(u))),
                tombstoned: set([9]),
                adopt_from: 21,
                ..Plan::default()
            },
        ),
        row(
            "gone from both sides: the link is forgotten; a tombstone gone from OLD too",
            read([1, 2], [1, 2]),
            Stored {
                tombstones: set([4]),
                ..known(&identity(3))
            },
            Plan {
                forget_links: vec![3],
                forget_tombstones: vec![4],
                linked: set([1, 2]),
                adopt_from: 4,
                ..Plan::default()
            },
        ),
        row(
            "OLD's UIDVALIDITY changed: links and tombstones forgotten, NEW re-identified by key",
            Scan {
                old: side(7, 1..=3),
                ..read([], 1..=3)
            },
            Stored {
                tombstones: set([3]),
                ..known(&identity(3))
            },
            Plan {
                reset: true,
                copy: vec![1, 2, 3],
                adopt_candidates: vec![1, 2, 3],
                adopt_from: 1,
                ..Plan::default()
            },
        ),
        row(
            "NEW's UIDVALIDITY changed: the same",
            Scan {
                new: side(8, [10, 11]),
                ..read(1..=2, [])
            },
            known(&identity(2)),
            Plan {
                reset: true,
                copy: vec![1, 2],
                adopt_candidates: vec![10, 11],
                adopt_from: 1,
                ..Plan::default()
            },
        ),
    ]
}

/// Flag merge rows: one linked message (1 ↔ 1) whose base is `base` on both sides.
fn flag_rows() -> Vec<Row> {
    let one = |base_flags: &str, old: &[(u32, &str)], new: &[(u32, &str)]| {
        let mut scan = read([1], [1]);
        scan.old.flags = changed(old);
        scan.new.flags = changed(new);
        let stored = Stored {
            links: vec![link(1, 1, base_flags)],
            ..known(&[(1, 1)])
        };
        (scan, stored)
    };
    let merged = |flags: FlagPlan| Plan {
        linked: set([1]),
        adopt_from: 2,
        flags,
        ..Plan::default()
    };
    let (a, b) = one("\\Seen", &[(1, "")], &[]);
    let old_unread = row(
        "OLD marked it unread: NEW follows",
        a,
        b,
        merged(FlagPlan {
            store_on_new: vec![(vec![1], vec![], strings(&["\\Seen"]))],
            targets: vec![(vec![1], vec![])],
            bases: vec![base(1, "", "")],
            dropped: vec![],
        }),
    );
    let (a, b) = one("", &[], &[(1, "\\Flagged")]);
    let new_flagged = row(
        "NEW flagged it: nothing to store, the base follows NEW",
        a,
        b,
        merged(FlagPlan {
            bases: vec![base(1, "", "\\Flagged")],
            ..FlagPlan::default()
        }),
    );
    let (a, b) = one("\\Seen", &[(1, "\\Seen \\Flagged")], &[(1, "")]);
    let both = row(
        "both changed: OLD's \\Flagged comes over, NEW's unread stays",
        a,
        b,
        merged(FlagPlan {
            store_on_new: vec![(vec![1], strings(&["\\Flagged"]), vec![])],
            targets: vec![(vec![1], strings(&["\\Flagged"]))],
            bases: vec![base(1, "\\Flagged \\Seen", "\\Flagged")],
            dropped: vec![],
        }),
    );
    let (a, b) = one("\\Seen", &[(1, "")], &[(1, "\\Seen \\Answered")]);
    let conflict = row(
        "both changed different flags: both changes kept",
        a,
        b,
        merged(FlagPlan {
            store_on_new: vec![(vec![1], vec![], strings(&["\\Seen"]))],
            targets: vec![(vec![1], strings(&["\\Answered"]))],
            bases: vec![base(1, "", "\\Answered")],
            dropped: vec![],
        }),
    );
    let (a, b) = one("\\Seen", &[(1, "\\Seen")], &[(1, "\\Seen")]);
    let same = row(
        "read again but unchanged: nothing",
        a,
        b,
        merged(FlagPlan::default()),
    );
    let (mut a, b) = one("", &[(1, "$Label")], &[]);
    a.new.permanent_flags = PermanentFlags::parse("(\\Seen \\Flagged)");
    let refused = row(
        "a keyword NEW cannot store is dropped, and OLD's base records it",
        a,
        b,
        merged(FlagPlan {
            bases: vec![base(1, "$Label", "")],
            dropped: vec![("$Label".into(), Unstorable::NotPermanent)],
            ..FlagPlan::default()
        }),
    );
    let (a, b) = one("\\Seen", &[], &[(1, "")]);
    let mut host1_wins = row(
        "--resyncflags: OLD's flags win over NEW's change",
        a,
        b,
        merged(FlagPlan {
            store_on_new: vec![(vec![1], strings(&["\\Seen"]), vec![])],
            targets: vec![(vec![1], strings(&["\\Seen"]))],
            bases: vec![base(1, "\\Seen", "\\Seen")],
            dropped: vec![],
        }),
    );
    host1_wins.options.host1_wins = true;
    let (a, b) = one("\\Seen", &[], &[(1, "")]);
    let new_wins = row(
        "without --resyncflags NEW's change stays",
        a,
        b,
        merged(FlagPlan {
            bases: vec![base(1, "\\Seen", "")],
            ..FlagPlan::default()
        }),
    );
    let (mut a, b) = one("", &[], &[]);
    a.old.flags = changed(&[(1, "\\Seen")]);
    a.old.uids.insert(2);
    let with_copy = row(
        "flags and new mail in one pass",
        a,
        b,
        Plan {
            copy: vec![2],
            ..merged(FlagPlan {
                store_on_new: vec![(vec![1], strings(&["\\Seen"]), vec![])],
                targets: vec![(vec![1], strings(&["\\Seen"]))],
                bases: vec![base(1, "\\Seen", "\\Seen")],
                dropped: vec![],
            })
        },
    );
    vec![
        old_unread,
        new_flagged,
        both,
        conflict,
        same,
        refused,
        host1_wins,
        new_wins,
        with_copy,
    ]
}

/// Links keeping no base (DESIGN.md §4a): both sides read with CHANGEDSINCE unless a row says
/// otherwise; `unchanged` is what the pass read of NEW for [`follow_old_reads`].
fn watermark_rows() -> Vec<Row> {
    let one = |old: &[(u32, &str)], new: &[(u32, &str)], unchanged: &[(u32, &str)]| {
        let mut scan = read([1], [1]);
        scan.old.flags = changed(old);
        scan.new.flags = changed(new);
        scan.new.unchanged = changed(unchanged);
        scan.old.changes_only = true;
        scan.new.changes_only = true;
        let stored = Stored {
            links: vec![link(1, 1, NO_BASE)],
            ..known(&[(1, 1)])
        };
        (scan, stored)
    };
    // The STORE that brings NEW's message 1 to `target`, as +FLAGS/-FLAGS and as FLAGS.
    let stores = |add: &[&str], remove: &[&str], target: &[&str]| Plan {
        linked: set([1]),
        adopt_from: 2,
        flags: FlagPlan {
            store_on_new: vec![(vec![1], strings(add), strings(remove))],
            targets: vec![(vec![1], strings(target))],
            ..FlagPlan::default()
        },
        ..Plan::default()
    };
    let unchanged = Plan {
        linked: set([1]),
        adopt_from: 2,
        ..Plan::default()
    };
    let (a, b) = one(&[(1, "\\Seen \\Flagged")], &[], &[(1, "\\Seen $K")]);
    let old_only = row(
        "OLD changed it: NEW follows OLD",
        a,
        b,
        stores(&["\\Flagged"], &["$K"], &["\\Flagged", "\\Seen"]),
    );
    let (a, b) = one(&[], &[(1, "")], &[]);
    let new_only = row("NEW changed it: nothing", a, b, unchanged.clone());
    let (a, b) = one(&[(1, "\\Flagged")], &[(1, "")], &[]);
    let both = row("both changed it: NEW wins", a, b, unchanged.clone());
    let (a, b) = one(&[(1, "\\Seen")], &[], &[(1, "\\Seen")]);
    let equal = row(
        "OLD changed it to NEW's flags: nothing",
        a,
        b,
        unchanged.clone(),
    );
    let (mut a, b) = one(&[(1, "\\Seen")], &[], &[(1, "")]);
    a.old.changes_only = false;
    let whole = row(
        "OLD read whole (its CONDSTORE gone): OLD wins where they differ",
        a,
        b,
        stores(&["\\Seen"], &[], &["\\Seen"]),
    );
    let (mut a, b) = one(&[(1, "\\Seen")], &[(1, "\\Flagged")], &[]);
    (a.old.changes_only, a.new.changes_only) = (false, false);
    let mut host1_wins = row(
        "--resyncflags (both read whole): OLD over NEW's change",
        a,
        b,
        stores(&["\\Seen"], &["\\Flagged"], &["\\Seen"]),
    );
    host1_wins.options.host1_wins = true;
    let (mut a, b) = one(&[(1, "$Label \\Seen")], &[], &[(1, "")]);
    a.new.permanent_flags = PermanentFlags::parse("(\\Seen \\Flagged)");
    let mut refused = row(
        "a keyword NEW cannot store is dropped",
        a,
        b,
        stores(&["\\Seen"], &[], &["\\Seen"]),
    );
    refused.want.flags.dropped = vec![("$Label".into(), Unstorable::NotPermanent)];
    let (mut a, b) = one(&[(1, "\\Seen \\Flagged")], &[], &[(1, "\\Seen $K")]);
    a.new_settled = false;
    let echo = row(
        "OLD changed it while the user's writes are not all on OLD: NEW waits, OLD's modseq too",
        a,
        b,
        Plan {
            old_flags_deferred: true,
            ..unchanged.clone()
        },
    );
    vec![
        old_only, new_only, both, equal, whole, host1_wins, refused, echo,
    ]
}

/// NEW's flags are read only for links keeping no base that follow OLD and that NEW's scan did
/// not return.
#[test]
fn follow_old_reads_only_what_the_merge_needs() {
    let mut scan = read(1..=5, 11..=14);
    (scan.old.changes_only, scan.new.changes_only) = (true, true);
    scan.old.flags = changed(&[(1, "\\Seen"), (2, "\\Seen"), (3, "\\Seen"), (5, "")]);
    scan.new.flags = changed(&[(12, "")]);
    let links = vec![
        link(1, 11, NO_BASE),  // follows OLD: read
        link(2, 12, NO_BASE),  // NEW changed it too
        link(3, 13, "\\Seen"), // keeps its base
        link(4, 14, NO_BASE),  // OLD did not change it
        link(5, 15, NO_BASE),  // gone from NEW
    ];
    assert_eq!(follow_old_reads(&scan, &links, false), vec![11]);
    scan.new.changes_only = false;
    assert_eq!(follow_old_reads(&scan, &links, true), vec![11]);
}

#[test]
fn plans() {
    for r in folders()
        .into_iter()
        .chain(flag_rows())
        .chain(watermark_rows())
    {
        let got = plan(&r.scan, &r.stored, &r.options);
        assert_eq!(got, r.want, "{}", r.name);
    }
}

#[test]
fn stores_on_new_are_grouped_by_change() {
    let mut scan = read(1..=4, 1..=4);
    scan.old.flags = changed(&[(1, "\\Seen"), (2, "\\Seen"), (3, "\\Flagged")]);
    let got = plan(&scan, &known(&identity(4)), &options());
    assert_eq!(
        got.flags.store_on_new,
        vec![
            (vec![3], strings(&["\\Flagged"]), vec![]),
            (vec![1, 2], strings(&["\\Seen"]), vec![]),
        ]
    );
    assert_eq!(got.flags.messages(), 3);
}

#[test]
fn a_pass_that_goes_on_accounts_for_every_old_message_once() {
    // The conservation law (ledger) starts here: linked, tombstoned or to copy.
    for r in folders()
        .into_iter()
        .chain(flag_rows())
        .chain(watermark_rows())
    {
        let p = plan(&r.scan, &r.stored, &r.options);
        if matches!(p.old_expunges, OldExpunges::Stop { .. }) {
            continue;
        }
        let copy: BTreeSet<u32> = p.copy.iter().copied().collect();
        let all: BTreeSet<u32> = p
            .linked
            .iter()
            .chain(&p.tombstoned)
            .chain(&copy)
            .copied()
            .collect();
        assert_eq!(all, r.scan.old.uids, "{}", r.name);
        assert!(copy.is_disjoint(&p.linked), "{}", r.name);
        assert!(copy.is_disjoint(&p.tombstoned), "{}", r.name);
    }
}
