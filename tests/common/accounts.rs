//! Many accounts at once, as the sweeper and the fleet see them: OLD and NEW with a master user
//! (`MASTER`), numbered users, a mixed seed, and a configuration that logs in as the master.

use std::path::{Path, PathBuf};

use super::dovecot::{Dovecot, DovecotOptions};
use super::raw::RawImap;
use super::seed::message;

/// The master login on both servers.
pub const MASTER: (&str, &str) = ("admin", "adminpw");

pub fn master_servers() -> (Dovecot, Dovecot) {
    let opts = || DovecotOptions {
        master: Some((MASTER.0.into(), MASTER.1.into())),
        ..Default::default()
    };
    (Dovecot::start_with(opts()), Dovecot::start_with(opts()))
}

pub fn users(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("u{i:02}"), format!("pw-{i}")))
        .collect()
}

/// Mixed sizes: 0, 1, 3, 8 or 20 messages in INBOX (up to ~20 KB each), every third account also
/// an `Archive` folder.
pub fn seed(old: &Dovecot, users: &[(String, String)]) {
    for (i, (user, pw)) in users.iter().enumerate() {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(user, pw);
        let n = [0, 1, 3, 8, 20][i % 5];
        for j in 0..n {
            let id = (i * 100 + j) as u64;
            c.append(
                "INBOX",
                &["\\Seen"],
                None,
                &message(id, 800 + (j * 2_900) % 20_000),
            );
        }
        if i % 3 == 0 {
            c.create("Archive");
            for j in 0..2 {
                c.append(
                    "Archive",
                    &["\\Flagged"],
                    None,
                    &message((i * 100 + 50 + j) as u64, 1_500),
                );
            }
        }
        c.logout();
    }
}

/// A configuration with master users on both sides (no user password needed), its state in
/// `dir/state.db`.
pub fn master_config(dir: &Path, old: &Dovecot, new: &Dovecot, sweep: &str) -> PathBuf {
    let state = format!("path = \"{}\"", dir.join("state.db").display());
    master_config_with_state(dir, old, new, &state, sweep)
}

/// [`master_config`] with `state` as the body of its `[state]` section.
pub fn master_config_with_state(
    dir: &Path,
    old: &Dovecot,
    new: &Dovecot,
    state: &str,
    sweep: &str,
) -> PathBuf {
    let secret = dir.join("master.secret");
    std::fs::write(&secret, format!("{}\n", MASTER.1)).unwrap();
    let text = format!(
        "[listen]\nimap = \"127.0.0.1:1\"\n\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"master\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n\
         [state]\n{state}\n[sweep]\n{sweep}\n",
        new.port(),
        MASTER.0,
        secret.display(),
        old.port(),
        MASTER.0,
        secret.display(),
    );
    let path = dir.join("imapferry.toml");
    std::fs::write(&path, text).unwrap();
    path
}
