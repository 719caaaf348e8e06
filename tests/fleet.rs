//! A fleet of `imapferry proxy` processes on one PostgreSQL (issue 13): a folder's backfill, an
//! account's journal drain and an account's sweep are each done by one process at a time, and a
//! process that dies (SIGKILL) leaves its work to the others once its lease expires.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::accounts::{master_config_with_state, master_servers, seed, users};
use common::cli::{accounts, run_at, strings};
use common::{
    Dovecot, Layout, Postgres, ProxyProc, RawImap, Snapshot, assert_same_mail, snapshot, wait_until,
};

const USER: &str = "alice";
const PW: &str = "alicepw";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_imapferry"))
}

/// OLD and NEW (Dovecot, `/` layout) with `USER` on both, and the fleet's PostgreSQL.
fn servers() -> (Dovecot, Dovecot, Postgres) {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    (old, new, Postgres::start())
}

/// A proxy configuration (without `[listen]`) whose state is the fleet's database.
fn fleet_config(old: &Dovecot, new: &Dovecot, pg: &Postgres, select_budget_ms: u64) -> String {
    format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [state]\nurl = \"{}\"\npassword_file = \"{}\"\n\
         [migration]\nselect_budget_ms = {select_budget_ms}\n",
        new.port(),
        old.port(),
        pg.url(),
        pg.password_file().display()
    )
}

/// A proxy of the fleet, in its own directory.
fn start_proxy(dir: &Path, config: &str) -> ProxyProc {
    std::fs::create_dir_all(dir).unwrap();
    ProxyProc::start(bin(), dir, config)
}

/// `n` read messages straight into OLD's Maildir folder `folder` (created over IMAP first), so
/// that big folders are seeded in a moment.
fn seed_folder(old: &Dovecot, folder: &str, n: u64, size: usize) {
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    if folder != "INBOX" {
        c.create(folder);
    }
    c.logout_and_wait();
    let maildir = old.dir().join("home").join(USER).join("Maildir");
    let cur: PathBuf = if folder == "INBOX" {
        maildir.join("cur")
    } else {
        maildir.join(folder).join("cur")
    };
    std::fs::create_dir_all(&cur).unwrap();
    for i in 0..n {
        let id = i + 1 + folder.len() as u64 * 100_000;
        std::fs::write(
            cur.join(format!("{id}.seed.fleet:2,S")),
            common::message(id, size),
        )
        .unwrap();
    }
    old.chown_for_dovecot(&maildir);
}

/// Distinct messages (by their bytes) in `folder`.
fn distinct(snap: &Snapshot, folder: &str) -> usize {
    let msgs = snap
        .folders
        .get(folder)
        .map(Vec::as_slice)
        .unwrap_or_default();
    msgs.iter().map(|m| m.digest).collect::<BTreeSet<_>>().len()
}

/// What the proxies' logs say they copied in backfills (`copied=N` of "backfilled" lines).
fn copied_in(logs: &[String]) -> u64 {
    logs.iter()
        .flat_map(|log| log.lines())
        .filter(|l| l.contains("backfilled"))
        .filter_map(|l| {
            let rest = &l[l.find("copied=")? + "copied=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn two_sessions_on_two_proxies_fill_a_folder_once() {
    let (old, new, pg) = servers();
    seed_folder(&old, "Archive", 400, 1_500);
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(&old, &new, &pg, 60_000);
    let proxies = [
        start_proxy(&dir.path().join("a"), &config),
        start_proxy(&dir.path().join("b"), &config),
    ];

    // Both sessions log in, then SELECT the unmigrated folder at the same moment.
    let barrier = Arc::new(Barrier::new(2));
    let sessions: Vec<_> = proxies
        .iter()
        .map(|p| {
            let (port, barrier) = (p.port, Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut c = RawImap::connect("127.0.0.1", port);
                c.login(USER, PW);
                barrier.wait();
                let exists = c.select("Archive");
                c.logout();
                exists
            })
        })
        .collect();
    for s in sessions {
        assert_eq!(s.join().unwrap(), 400, "a session saw a partial folder");
    }

    let on_new = snapshot(&new, USER, PW);
    assert_eq!(on_new.count("Archive"), 400);
    assert_eq!(distinct(&on_new, "Archive"), 400, "duplicates on NEW");
    // One of them copied the folder; the other's pass found it done.
    let logs: Vec<String> = proxies.iter().map(ProxyProc::log).collect();
    assert_eq!(copied_in(&logs), 400, "{logs:#?}");
}

#[test]
fn a_proxy_killed_mid_backfill_leaves_the_folder_to_the_other() {
    let (old, new, pg) = servers();
    const TOTAL: usize = 3_000;
    seed_folder(&old, "Archive", TOTAL as u64, 4_000);
    let dir = tempfile::tempdir().unwrap();
    // A answers its SELECT at once and goes on filling the folder in the background.
    let mut a = start_proxy(&dir.path().join("a"), &fleet_config(&old, &new, &pg, 50));
    let b = start_proxy(
        &dir.path().join("b"),
        &fleet_config(&old, &new, &pg, 60_000),
    );

    let mut on_a = RawImap::connect("127.0.0.1", a.port);
    on_a.login(USER, PW);
    on_a.select("Archive");
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    let mut copied = 0;
    wait_until("A's backfill to start", Duration::from_secs(60), || {
        copied = direct.status("Archive").0 as usize;
        copied >= 100
    });
    a.kill();
    assert!(copied < TOTAL, "A finished before it was killed ({copied})");

    // B waits for A's lease to expire, then completes the folder.
    let mut on_b = RawImap::connect("127.0.0.1", b.port);
    on_b.login(USER, PW);
    assert_eq!(on_b.select("Archive") as usize, TOTAL, "{}", b.log());
    let on_new = snapshot(&new, USER, PW);
    assert_eq!(on_new.count("Archive"), TOTAL);
    assert_eq!(distinct(&on_new, "Archive"), TOTAL, "duplicates on NEW");
}

#[test]
fn writes_on_two_proxies_reach_old_through_one_drainer() {
    let (old, new, pg) = servers();
    seed_folder(&old, "INBOX", 24, 2_000);
    seed_folder(&old, "Trash", 2, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(&old, &new, &pg, 60_000);
    let a = start_proxy(&dir.path().join("a"), &config);
    let b = start_proxy(&dir.path().join("b"), &config);
    let mut on_a = RawImap::connect("127.0.0.1", a.port);
    let mut on_b = RawImap::connect("127.0.0.1", b.port);
    on_a.login(USER, PW);
    on_b.login(USER, PW);
    assert_eq!(on_a.select("INBOX"), 24);
    assert_eq!(on_b.select("INBOX"), 24);
    let uids: Vec<u32> = on_a.uid_fetch_all("INBOX").iter().map(|m| m.uid).collect();
    assert_eq!(uids.len(), 24);

    // Interleaved: moves and an expunge on A, flags and an APPEND on B.
    for (i, uid) in uids.iter().enumerate() {
        match i % 4 {
            0 => {
                on_a.exec(&format!("UID MOVE {uid} Trash"));
            }
            1 => on_b.uid_store("INBOX", *uid, "+FLAGS", &["\\Flagged"]),
            2 => on_a.uid_store("INBOX", *uid, "-FLAGS", &["\\Seen"]),
            _ if i == 3 => on_a.uid_expunge("INBOX", *uid),
            _ => on_b.uid_store("INBOX", *uid, "+FLAGS", &["$Label1"]),
        }
    }
    on_b.append(
        "INBOX",
        &["\\Answered"],
        None,
        &common::message(900_001, 3_000),
    );
    on_a.logout();
    on_b.logout();

    // Every entry, whichever proxy journaled it, mirrored by one drainer.
    wait_until("the journal to drain", Duration::from_secs(90), || {
        pg.psql("SELECT COUNT(*) FROM journal WHERE done <> 1") == "0"
    });
    let on_new = snapshot(&new, USER, PW);
    assert_eq!(on_new.count("Trash"), 2 + 6);
    assert_eq!(on_new.count("INBOX"), 24 - 6 - 1 + 1);
    assert_same_mail(&snapshot(&old, USER, PW), &on_new);
    let journaled = pg.psql("SELECT COUNT(*) FROM journal");
    assert!(
        journaled.parse::<u32>().unwrap() >= 24,
        "{journaled} entries"
    );
}

#[test]
fn three_sweepers_sweep_each_account_once() {
    let (old, new) = master_servers();
    let users = users(50);
    old.add_users(&users);
    new.add_users(&users);
    seed(&old, &users);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let state = format!(
        "url = \"{}\"\npassword_file = \"{}\"",
        pg.url(),
        pg.password_file().display()
    );
    let conf = master_config_with_state(dir.path(), &old, &new, &state, "accounts_in_parallel = 4");
    let logins = dir.path().join("logins.txt");
    let list: String = users.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(&logins, list).unwrap();
    let imapferry = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = imapferry(&["accounts", "import", logins.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // Three nodes sweep at once, each until nothing is left for it.
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            let conf = conf.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new(bin())
                    .args(["sweep", "--once", "--config"])
                    .env("RUST_LOG", "info")
                    .arg(&conf)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
            })
        })
        .collect();
    let (summaries, logs): (Vec<String>, Vec<String>) =
        nodes.into_iter().map(|n| n.join().unwrap()).unzip();
    // "swept N accounts: M messages, …" from each node.
    let swept = |what: &str| -> u64 {
        summaries
            .iter()
            .map(|s| {
                let line = s.lines().find(|l| l.starts_with("swept ")).unwrap_or("");
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| w.starts_with(what)).unwrap();
                words[at - 1].parse::<u64>().unwrap()
            })
            .sum()
    };
    assert_eq!(
        swept("accounts"),
        50,
        "{summaries:#?}\n{}",
        logs.join("\n-----\n")
    );
    let seeded: usize = users
        .iter()
        .map(|(u, p)| snapshot(&old, u, p).total())
        .sum();
    assert_eq!(swept("messages") as usize, seeded, "{summaries:#?}");

    let out = imapferry(&["verify", "--all"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("50 equal"),
        "{out:?}"
    );
}

#[test]
fn sync_and_the_operator_commands_take_a_postgresql_state() {
    let (old, new, pg) = servers();
    seed_folder(&old, "INBOX", 6, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let password = [("IMAPFERRY_STATE_PASSWORD", common::postgres::PASSWORD)];
    let mut args = accounts(&old, USER, PW, &new, USER, PW);
    args.extend(strings(&["--state", &pg.url()]));
    let sync = || {
        let mut all = strings(&["sync"]);
        all.extend(args.iter().cloned());
        run_at(bin(), dir.path(), &all, &password)
    };
    let first = sync();
    first.assert_code(0);
    first.assert_says("Messages transferred                    : 6");
    // The second run finds the links in the database: nothing copied again.
    let again = sync();
    again.assert_code(0);
    again.assert_says("Messages transferred                    : 0");
    assert_eq!(snapshot(&new, USER, PW).count("INBOX"), 6);

    // status, verify and retire read the same state with `--state` in place of the file's.
    let conf = dir.path().join("imapferry.toml");
    std::fs::write(
        &conf,
        format!(
            "[listen]\nimap = \"127.0.0.1:1\"\n[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n[state]\npath = \"unused.db\"\n",
            new.port(),
            old.port()
        ),
    )
    .unwrap();
    let operator = |command: &[&str]| {
        let mut all = strings(command);
        all.extend(strings(&[
            "--config",
            conf.to_str().unwrap(),
            "--state",
            &pg.url(),
        ]));
        run_at(bin(), dir.path(), &all, &password)
    };
    let status = operator(&["status"]);
    status.assert_code(0);
    assert!(status.stdout.contains(USER), "{}", status.all());
    operator(&["retire", USER]).assert_code(0);
    let status = operator(&["status"]);
    assert!(status.stdout.contains("retired"), "{}", status.all());
    operator(&["verify", "--all"]).assert_code(0);
    assert!(!dir.path().join("unused.db").exists());

    // A password in the URL is refused before anything could log it.
    let with_password = pg.url().replace(
        "imapferry@",
        &format!("imapferry:{}@", common::postgres::PASSWORD),
    );
    let refused = run_at(
        bin(),
        dir.path(),
        &[
            strings(&["sync"]),
            accounts(&old, USER, PW, &new, USER, PW),
            strings(&["--state", &with_password]),
        ]
        .concat(),
        &[],
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("holds a password"),
        "{}",
        refused.all()
    );
    assert!(!refused.all().contains(common::postgres::PASSWORD));
    let refused = operator(&["status", "--state", &with_password]);
    assert_ne!(refused.code, 0);
    assert!(
        !refused.all().contains(common::postgres::PASSWORD),
        "{}",
        refused.all()
    );
}

#[test]
fn a_live_proxys_write_mark_is_not_taken_for_a_dead_ones() {
    let (old, new, pg) = servers();
    seed_folder(&old, "INBOX", 5, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(&old, &new, &pg, 30_000);
    let mut a = start_proxy(&dir.path().join("a"), &config);
    let b = start_proxy(&dir.path().join("b"), &config);
    let mut on_a = RawImap::connect("127.0.0.1", a.port);
    on_a.login(USER, PW);
    assert_eq!(on_a.select("INBOX"), 5);
    let uids: Vec<u32> = on_a.uid_fetch_all("INBOX").iter().map(|m| m.uid).collect();

    // A's mark stays a few seconds after its write; B's login meanwhile sees a live proxy's mark.
    on_a.uid_store("INBOX", uids[0], "+FLAGS", &["\\Flagged"]);
    assert_eq!(pg.psql("SELECT COUNT(*) FROM write_marks"), "1");
    let mut on_b = RawImap::connect("127.0.0.1", b.port);
    on_b.login(USER, PW);
    assert_eq!(on_b.select("INBOX"), 5);
    on_b.logout();
    let stopped = "stopped with writes in flight";
    assert!(!b.log().contains(stopped), "{}", b.log());

    // A dies with a write's mark set: once its process lease has expired, B's next login finds
    // the mark and reconciles (here OLD already had the write: the reconcile changes nothing).
    on_a.uid_store("INBOX", uids[1], "+FLAGS", &["\\Answered"]);
    a.kill();
    wait_until(
        "A's process lease to expire",
        Duration::from_secs(60),
        || {
            pg.psql(
                "SELECT COUNT(*) FROM leases WHERE name LIKE 'process:%' \
             AND expires < CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
            ) == "1"
        },
    );
    assert_eq!(pg.psql("SELECT COUNT(*) FROM write_marks"), "1");
    let mut on_b = RawImap::connect("127.0.0.1", b.port);
    on_b.login(USER, PW);
    wait_until(
        "B to reconcile and clear the mark",
        Duration::from_secs(60),
        || pg.psql("SELECT COUNT(*) FROM write_marks") == "0",
    );
    assert!(b.log().contains(stopped), "{}", b.log());
    on_b.logout();
    wait_until("the journal to drain", Duration::from_secs(60), || {
        pg.psql("SELECT COUNT(*) FROM journal WHERE done <> 1") == "0"
    });
    assert_same_mail(&snapshot(&old, USER, PW), &snapshot(&new, USER, PW));
}

/// A message gone from NEW while another live proxy holds the account's write mark (its MOVE or
/// EXPUNGE may not be journaled yet) is not taken by this proxy's passes for the user's deletion:
/// it stays linked until that write is known, and is not tombstoned on a guess (a tombstone would
/// drop the link the other proxy's journal entry needs to move OLD's copy).
#[test]
fn a_message_gone_under_another_proxys_write_mark_is_not_tombstoned() {
    let (old, new, pg) = servers();
    seed_folder(&old, "INBOX", 5, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(&old, &new, &pg, 30_000);
    let a = start_proxy(&dir.path().join("a"), &config);
    let mut on_a = RawImap::connect("127.0.0.1", a.port);
    on_a.login(USER, PW);
    assert_eq!(on_a.select("INBOX"), 5);
    let uids: Vec<u32> = on_a.uid_fetch_all("INBOX").iter().map(|m| m.uid).collect();

    // Another proxy, alive, sends a user's MOVE to NEW: its mark is set, NEW's copy is gone from
    // INBOX, the journal entry is not committed yet.
    pg.psql(
        "INSERT INTO leases (name, holder, expires) VALUES ('process:other', 'other', 9000000000000); \
         INSERT INTO write_marks (account_id, holder, since) SELECT id, 'other', 0 FROM accounts",
    );
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    direct.uid_expunge("INBOX", uids[0]);

    // Mail arrives on OLD: A's live pickup passes INBOX.
    let mut o = RawImap::connect(old.host(), old.port());
    o.login(USER, PW);
    o.append("INBOX", &[], None, &common::message(700_001, 1_000));
    wait_until("the new mail on NEW", Duration::from_secs(60), || {
        direct.select("INBOX") == 5
    });
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM tombstones"),
        "0",
        "{}",
        a.log()
    );
    on_a.logout();
}

/// `UIDVALIDITY` and `(uid, body)` of each message of `folder`, as a client sees them through
/// `port`.
fn seen_through(port: u16, folder: &str) -> (u32, Vec<(u32, Vec<u8>)>) {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(USER, PW);
    let (lines, status) = c.raw(&format!("SELECT {folder}"));
    assert!(status.contains("OK"), "SELECT {folder}: {status}");
    let line = lines.iter().find(|l| l.contains("[UIDVALIDITY ")).unwrap();
    let validity = line["* OK [UIDVALIDITY ".len()..]
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let msgs = c.uid_fetch("1:*");
    c.logout();
    (
        validity,
        msgs.into_iter().map(|m| (m.uid, m.body)).collect(),
    )
}

#[test]
fn every_proxy_of_the_fleet_shows_the_same_uids_after_a_rename() {
    let (old, new, pg) = servers();
    // OLD's Archive: UIDs 1, 2, 4, 5, 6 (3 expunged), UIDVALIDITY 777.
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    c.create("Archive");
    for i in 1..=6 {
        c.append("Archive", &[], None, &common::message(i, 400));
    }
    c.select("Archive");
    c.uid_expunge("Archive", 3);
    c.logout_and_wait();
    old.set_uidvalidity(USER, "Archive", 777);
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    let on_old: Vec<(u32, Vec<u8>)> = c
        .uid_fetch_all("Archive")
        .into_iter()
        .map(|m| (m.uid, m.body))
        .collect();
    c.logout();
    assert_eq!(
        on_old.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 4, 5, 6]
    );

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}keep_client_caches = true\n",
        fleet_config(&old, &new, &pg, 20_000)
    );
    let a = start_proxy(&dir.path().join("a"), &config);
    let b = start_proxy(&dir.path().join("b"), &config);

    // Proxy A copies the folder and shows OLD's numbers.
    assert_eq!(seen_through(a.port, "Archive"), (777, on_old.clone()));
    // A message appended through A gets a fresh UID above OLD's.
    let mut c = RawImap::connect("127.0.0.1", a.port);
    c.login(USER, PW);
    let (_, status) = c.raw("APPEND Archive {5}\r\nHi!\r\n");
    assert!(status.contains("[APPENDUID 777 "), "{status}");
    c.logout();
    let (_, after_append) = seen_through(a.port, "Archive");
    let fresh = after_append[5].0;
    assert!(fresh > 6, "fresh UID {fresh}");

    // Proxy B, which never copied anything, shows the same numbers from the shared store.
    assert_eq!(seen_through(b.port, "Archive"), (777, after_append.clone()));

    // Renamed through B, the folder keeps its numbers on both proxies; a write by OLD's UID
    // through A reaches that message on NEW.
    let mut c = RawImap::connect("127.0.0.1", b.port);
    c.login(USER, PW);
    // OLD stops answering first: the rename waits in the journal, and the store still names
    // the folder by its old name. A knows of the rename from the journal alone.
    old.freeze(true);
    c.exec("RENAME Archive Kept");
    c.logout();
    assert_eq!(seen_through(a.port, "Kept"), (777, after_append.clone()));
    old.freeze(false);
    wait_until("the rename to reach OLD", Duration::from_secs(30), || {
        snapshot(&old, USER, PW).folders.contains_key("Kept")
    });
    assert_eq!(seen_through(a.port, "Kept"), (777, after_append.clone()));
    assert_eq!(seen_through(b.port, "Kept"), (777, after_append.clone()));
    let mut c = RawImap::connect("127.0.0.1", a.port);
    c.login(USER, PW);
    c.select("Kept");
    c.exec("UID STORE 5 +FLAGS (\\Flagged)");
    c.logout();
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(USER, PW);
    let flagged: Vec<Vec<u8>> = direct
        .uid_fetch_all("Kept")
        .into_iter()
        .filter(|m| m.flags.contains("\\Flagged"))
        .map(|m| m.body)
        .collect();
    direct.logout();
    assert_eq!(
        flagged,
        [on_old[3].1.clone()],
        "OLD's UID 5 is its fourth message"
    );
}
