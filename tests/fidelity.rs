//! No message left behind (issue 10), against real Dovecot servers: every OLD message is copied
//! with its flags byte for byte, or the run names it; subscriptions travel even to folders that do
//! not exist; what NEW cannot store costs a flag with a warning, never the message.

mod common;

use std::collections::BTreeSet;

use common::cli::*;
use common::*;

const PW1: &str = "Old-Pw-k3Q9";
const PW2: &str = "New-Pw-v7T2";

/// LSUB of `user` on `d`, layout-independent.
fn subscribed(d: &Dovecot, user: &str, pw: &str) -> BTreeSet<String> {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(user, pw);
    let subs = imap
        .lsub()
        .into_iter()
        .map(|(_, _, name)| d.layout().normalize(&name))
        .collect();
    imap.logout();
    subs
}

/// OLD's subscriptions travel, including one to a `\Noselect` parent. One to a folder deleted
/// after it was subscribed is offered too; Dovecot (as NEW) refuses subscriptions to names that
/// do not exist (and, in a Maildir++ layout, to `\Noselect` parents), and the run then says so by
/// name instead of dropping it silently.
#[test]
fn subscriptions_travel_whether_or_not_the_folder_is_selectable() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user("ann", PW1);
    new.add_user("ann", PW2);
    let mut imap = RawImap::connect(old.host(), old.port());
    imap.login("ann", PW1);
    imap.create("Parent/Child");
    imap.create("Gone");
    for name in ["Parent", "Parent/Child", "Gone"] {
        imap.subscribe(name);
    }
    imap.exec("DELETE Gone");
    let noselect: Vec<String> = imap
        .list()
        .into_iter()
        .filter(|(attrs, _, _)| attrs.iter().any(|a| a.eq_ignore_ascii_case("\\Noselect")))
        .map(|(_, _, n)| n)
        .collect();
    assert_eq!(noselect, ["Parent"], "the harness's layout changed");
    assert!(subscribed(&old, "ann", PW1).contains("Gone"));
    imap.logout();

    let run = sync(&accounts(&old, "ann", PW1, &new, "ann", PW2));
    run.assert_code(0);
    let on_new = subscribed(&new, "ann", PW2);
    for name in ["Parent", "Parent/Child"] {
        assert!(
            on_new.contains(name),
            "{name} not subscribed on NEW: {on_new:?}\n{}",
            run.stdout
        );
    }
    assert!(!on_new.contains("Gone"));
    run.assert_says("Could not subscribe to [Gone] (host1 [Gone]):");
}
