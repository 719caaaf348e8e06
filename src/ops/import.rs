//! `imapferry accounts import`'s rules: the account a line of the import file stands for (an
//! imapsync loop-file line or a bare login), and what importing it does to the accounts already
//! known. Pure: the caller reads the file and writes the store.

use crate::config::OldAuth;
use crate::loopfile::{self, Line};
use crate::migrate::Credentials;
use crate::store::{AccountKey, AccountSummary};

/// The account key line `number` of an import file stands for, built exactly as the proxy builds
/// it at login (the NEW login normalised by `new.username_format`), so an imported account and a
/// later login are one account. `None` for blank lines and comments; `Err` says why a line is
/// refused.
pub(crate) fn import_key(
    line: &str,
    number: usize,
    creds: &Credentials,
    auth: OldAuth,
) -> Result<Option<AccountKey>, String> {
    let (old_default, _) = creds.hosts();
    if !line.contains(';') {
        let login = line.trim();
        if login.is_empty() || login.starts_with('#') {
            return Ok(None);
        }
        if auth == OldAuth::Accounts {
            return Err(format!(
                "line {number}: a bare login needs old.auth = \"master\" (or a loop-file line)"
            ));
        }
        let name = creds.name(login);
        return Ok(Some(creds.key(old_default, &name, &name)));
    }
    match loopfile::parse_line(number, line) {
        Line::Skip => Ok(None),
        Line::Malformed { number, reason } => Err(format!("line {number}: {reason}")),
        Line::Account(a) => {
            let name = creds.name(&a.user2);
            Ok(Some(match auth {
                // OLD's side is what the line says, exactly (OLD may tell case apart).
                OldAuth::Accounts => creds.key(&a.host1, &a.user1, &name),
                // The proxy reaches OLD at old.address as the account's name.
                OldAuth::Master | OldAuth::Same => creds.key(old_default, &name, &name),
            }))
        }
    }
}

/// What importing one key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportAction {
    /// The account is there with the same OLD side.
    Unchanged,
    /// The NEW login is known with another OLD user or host: account `id` takes the key's.
    UpdateOld { id: i64 },
    /// A new account, `pending`.
    Add,
}

/// An account is its NEW login (host and user): re-importing changes nothing already there, and
/// a changed OLD user or host for the same NEW login updates that account.
pub(crate) fn import_action(existing: &[AccountSummary], key: &AccountKey) -> ImportAction {
    let same_new = existing
        .iter()
        .find(|a| a.key.new_host == key.new_host && a.key.new_user == key.new_user);
    match same_new {
        Some(a) if a.key == *key => ImportAction::Unchanged,
        Some(a) => ImportAction::UpdateOld { id: a.id },
        None => ImportAction::Add,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ops::fixtures::{key, summary};

    /// Credentials of a configuration with OLD at old.example and NEW at new.example, NEW logins
    /// lower-cased (the default format).
    fn creds(auth: OldAuth, dir: &Path) -> Credentials {
        let extra = match auth {
            OldAuth::Same => String::new(),
            OldAuth::Master => {
                let pw = dir.join("master.pw");
                std::fs::write(&pw, "m").unwrap();
                format!(
                    "auth = \"master\"\nmaster_user = \"admin\"\nmaster_password_file = \"{}\"\n",
                    pw.display()
                )
            }
            OldAuth::Accounts => {
                let file = dir.join("accounts.txt");
                std::fs::write(&file, "").unwrap();
                format!("auth = \"accounts\"\naccounts = \"{}\"\n", file.display())
            }
        };
        let text = format!(
            "[listen]\nimap = \"127.0.0.1:1143\"\n[new]\naddress = \"new.example:143\"\n\
             security = \"none\"\n[old]\naddress = \"old.example:143\"\nsecurity = \"none\"\n{extra}"
        );
        let config = crate::config::parse(&text, Path::new("test.toml")).unwrap();
        Credentials::from_config(&config).unwrap().unwrap()
    }

    fn new_key(old_host: &str, old_user: &str, new_user: &str) -> AccountKey {
        AccountKey {
            old_host: old_host.into(),
            old_user: old_user.into(),
            new_host: "new.example".into(),
            new_user: new_user.into(),
        }
    }

    #[test]
    fn lines_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        let loop_line = "oldhost;Legacy.Joe;pw1;newhost;Joe@Example.org;pw2;";
        // (auth, line, expected key or error fragment)
        /// A key, none, or a fragment of the error.
        type Outcome = Result<Option<AccountKey>, &'static str>;
        let cases: [(OldAuth, &str, Outcome); 11] = [
            (OldAuth::Same, "", Ok(None)),
            (OldAuth::Same, "   ", Ok(None)),
            (OldAuth::Same, "# a comment", Ok(None)),
            (
                OldAuth::Same,
                "  Ann  ",
                Ok(Some(new_key("old.example", "ann", "ann"))),
            ),
            (
                OldAuth::Master,
                "Ann",
                Ok(Some(new_key("old.example", "ann", "ann"))),
            ),
            (OldAuth::Accounts, "ann", Err("a bare login needs")),
            // A loop-file line: with master/same the account's name on both sides...
            (
                OldAuth::Master,
                loop_line,
                Ok(Some(new_key(
                    "old.example",
                    "joe@example.org",
                    "joe@example.org",
                ))),
            ),
            (
                OldAuth::Same,
                loop_line,
                Ok(Some(new_key(
                    "old.example",
                    "joe@example.org",
                    "joe@example.org",
                ))),
            ),
            // ...with accounts, OLD's side exactly as the line says.
            (
                OldAuth::Accounts,
                loop_line,
                Ok(Some(new_key("oldhost", "Legacy.Joe", "joe@example.org"))),
            ),
            (OldAuth::Accounts, "# x;y;z", Ok(None)),
            (OldAuth::Accounts, "oldhost;user1", Err("line 7")),
        ];
        for (auth, line, expected) in cases {
            let got = import_key(line, 7, &creds(auth, dir.path()), auth);
            match (&got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(*got, expected, "{auth:?} {line:?}"),
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{auth:?} {line:?}: {e}"),
                _ => panic!("{auth:?} {line:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn import_actions() {
        let existing = [
            summary(1, "joe", "joe", "old"),
            summary(2, "ann", "ann", "old"),
        ];
        // (key, action)
        let cases = [
            (key("joe", "joe", "old"), ImportAction::Unchanged),
            (
                key("joe", "joseph", "old"),
                ImportAction::UpdateOld { id: 1 },
            ),
            (key("ann", "ann", "old2"), ImportAction::UpdateOld { id: 2 }),
            (key("bob", "bob", "old"), ImportAction::Add),
        ];
        for (k, action) in cases {
            assert_eq!(import_action(&existing, &k), action, "{k:?}");
        }
        let mut elsewhere = key("joe", "joe", "old");
        elsewhere.new_host = "other-new".into();
        assert_eq!(import_action(&existing, &elsewhere), ImportAction::Add);
    }
}
