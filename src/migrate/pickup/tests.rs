//! Live pickup's pure parts: the adaptive schedule (also driven in paused time), what counts as a
//! change, and which mode an account gets.

use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn schedule_doubles_while_nothing_changes_and_restarts_after_a_change() {
    // (changes seen by successive polls, the waits that follow them)
    let table: &[(&[bool], &[u64])] = &[
        (&[], &[]),
        (
            &[false, false, false, false, false, false, false],
            &[4, 8, 16, 32, 60, 60, 60],
        ),
        (&[true, true], &[2, 2]),
        (&[false, false, true, false], &[4, 8, 2, 4]),
        (&[false; 6], &[4, 8, 16, 32, 60, 60]),
    ];
    for (changes, waits) in table {
        let mut sched = Schedule::new(s(2), s(60));
        assert_eq!(
            sched.wait(),
            s(2),
            "the first poll comes after the first wait"
        );
        let got: Vec<u64> = changes.iter().map(|c| sched.after(*c).as_secs()).collect();
        assert_eq!(&got, waits, "{changes:?}");
    }
    // The old fixed interval: first = max.
    let mut fixed = Schedule::new(s(2), s(2));
    assert!((0..5).all(|_| fixed.after(false) == s(2)));
    // A reload's new bounds hold the current wait inside them.
    let mut sched = Schedule::new(s(2), s(60));
    for _ in 0..5 {
        sched.after(false);
    }
    sched.bound(s(1), s(10));
    assert_eq!(sched.wait(), s(10));
    assert_eq!(sched.after(true), s(1));
    sched.bound(s(5), s(10));
    assert_eq!(sched.wait(), s(5));
}

/// The poll loop's timing in paused time: polls at 2, 6, 14, 30, 62, 122 s while nothing
/// changes, 2 s after the change seen at 122 s, and a wake-up or a stop ends a wait at once.
#[tokio::test(start_paused = true)]
async fn polls_follow_the_schedule_in_paused_time() {
    let wake = Notify::new();
    let (stop_tx, mut stop) = watch::channel(false);
    let start = Instant::now();
    let mut sched = Schedule::new(s(2), s(60));
    let mut due = start + sched.wait();
    let changes = [false, false, false, false, false, true, false, false];
    let mut at = Vec::new();
    for change in changes {
        assert_eq!(until(due, &wake, &mut stop).await, Woken::Due);
        at.push(start.elapsed().as_secs());
        due = Instant::now() + sched.after(change);
    }
    assert_eq!(at, [2, 6, 14, 30, 62, 122, 124, 128]);

    let before = Instant::now();
    wake.notify_one();
    assert_eq!(until(before + s(60), &wake, &mut stop).await, Woken::Wake);
    assert_eq!(Instant::now(), before, "a wake-up does not wait");
    stop_tx.send(true).unwrap();
    assert_eq!(until(before + s(60), &wake, &mut stop).await, Woken::Stop);
    assert_eq!(Instant::now(), before);
}

#[test]
fn what_counts_as_a_change_on_old() {
    let st = |uidnext, messages, highestmodseq| MailboxState {
        uidvalidity: 7,
        uidnext,
        highestmodseq,
        messages,
    };
    let table = [
        (st(5, 4, 0), st(5, 4, 0), false),
        (st(5, 4, 0), st(6, 5, 0), true),  // new mail
        (st(5, 4, 0), st(5, 3, 0), true),  // a deletion
        (st(5, 4, 9), st(5, 4, 10), true), // flags changed (CONDSTORE)
        (st(5, 4, 9), st(5, 4, 0), false), // EXAMINE without CONDSTORE says nothing of flags
        (st(5, 4, 0), st(5, 4, 10), false),
    ];
    for (before, now, want) in table {
        assert_eq!(changed(&before, &now), want, "{before:?} -> {now:?}");
    }
    let mut other_validity = st(5, 4, 0);
    other_validity.uidvalidity = 8;
    assert!(changed(&st(5, 4, 0), &other_validity));

    for (u, want) in [
        (Untagged::Exists(3), true),
        (Untagged::Expunge(1), true),
        (Untagged::Recent(1), false),
        (Untagged::Other("VANISHED (EARLIER) 3:4".into()), true),
        (Untagged::Other("VANISH".into()), false),
        (
            Untagged::Status {
                status: crate::imap::Status::Ok,
                code: None,
                text: "Still here".into(),
            },
            false,
        ),
    ] {
        assert_eq!(is_change(&u), want, "{u:?}");
    }
}

#[test]
fn mode_per_account_and_for_all() {
    let mut m = config::Migration {
        live_pickup: LivePickup::Poll,
        ..config::Migration::default()
    };
    m.live_pickup_for
        .insert("Ann@Example.org".into(), LivePickup::Off);
    m.live_pickup_for.insert("bob".into(), LivePickup::Idle);
    let policy = Policy::new(&m, |n| n.to_lowercase());
    for (account, want) in [
        ("ann@example.org", LivePickup::Off),
        ("bob", LivePickup::Idle),
        ("cy", LivePickup::Poll),
    ] {
        assert_eq!(policy.mode_of(account), want, "{account}");
    }
    assert_eq!((policy.first, policy.max), (s(2), s(60)));
    // `live_pickup_secs = 0` turns it off for everyone, as it always did.
    m.live_pickup_secs = 0;
    let off = Policy::new(&m, |n| n.to_lowercase());
    assert!(
        ["ann@example.org", "bob", "cy"]
            .iter()
            .all(|a| off.mode_of(a) == LivePickup::Off)
    );
}
