//! A pass over an account whose folders did not change, against recorded OLD and NEW dialogues:
//! what each folder costs (issue 14, item 4), whatever the number of messages.

use crate::imap::ConnectOptions;
use crate::imap::script::{Step, serve, step};
use crate::secret::Secret;
use crate::store::{AccountKey, MailboxState, Phase, SqliteStore, Store};
use crate::sync::{AuthMech, Endpoint, Event, Observer, Options};

use super::sync_account;

const FOLDERS: [&str; 3] = ["Archive", "INBOX", "Sent"];
const CAPS: &str = "IMAP4rev1 LITERAL+ CONDSTORE UIDPLUS MOVE";

struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

fn endpoint(connect: ConnectOptions) -> Endpoint {
    Endpoint {
        connect,
        user: "alice".into(),
        password: Secret::new("pw"),
        authuser: None,
        auth: AuthMech::Login,
    }
}

/// The state a completed pass recorded for folder `i` of an account of `messages` per folder.
fn recorded(i: usize, messages: u32, side: u32) -> MailboxState {
    MailboxState {
        uidvalidity: 100 + side,
        uidnext: messages + 1,
        highestmodseq: 5000 + i as u64,
        messages,
    }
}

/// Login and the folder tree, as both sides answer it.
fn tree() -> Vec<Step> {
    let list: String = FOLDERS
        .iter()
        .map(|f| format!("* LIST () \"/\" {f}\r\n"))
        .collect();
    vec![
        step(
            "LOGIN",
            &format!("$tag OK [CAPABILITY {CAPS}] logged in\r\n"),
        ),
        step("LIST", &format!("{list}$tag OK\r\n")),
        step(
            "LSUB",
            &format!("{}$tag OK\r\n", list.replace("LIST", "LSUB")),
        ),
    ]
}

/// The commands OLD and NEW receive in a pass over an account whose folders hold `messages`
/// each and are as the last pass left them.
async fn no_change_dialogue(messages: u32) -> (Vec<String>, Vec<String>) {
    let mut old_steps = tree();
    for (i, f) in FOLDERS.iter().enumerate() {
        let s = recorded(i, messages, 0);
        old_steps.push(step(
            &format!("STATUS \"{f}\""),
            &format!(
                "* STATUS {f} (MESSAGES {} UIDNEXT {} UIDVALIDITY {} HIGHESTMODSEQ {})\r\n$tag OK\r\n",
                s.messages, s.uidnext, s.uidvalidity, s.highestmodseq
            ),
        ));
    }
    old_steps.push(step("LOGOUT", "* BYE\r\n$tag OK\r\n"));
    let mut new_steps = tree();
    new_steps.push(step("LOGOUT", "* BYE\r\n$tag OK\r\n"));
    let (old_opts, old_task) = serve(CAPS, old_steps).await;
    let (new_opts, new_task) = serve(CAPS, new_steps).await;
    let (old_ep, new_ep) = (endpoint(old_opts), endpoint(new_opts));

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let account = store
        .account(&AccountKey {
            old_host: old_ep.connect.host.clone(),
            old_user: "alice".into(),
            new_host: new_ep.connect.host.clone(),
            new_user: "alice".into(),
        })
        .await
        .unwrap();
    for (i, f) in FOLDERS.iter().enumerate() {
        let pair = store.folder_pair(account, f, f).await.unwrap();
        store
            .save_pair_state(
                pair.id,
                Some(recorded(i, messages, 0)),
                Some(recorded(i, messages, 1)),
                messages + 1,
                Phase::Synced,
            )
            .await
            .unwrap();
    }
    let report = sync_account(&store, &old_ep, &new_ep, &Options::default(), &Quiet).await;
    let (old_seen, new_seen) = (old_task.await.unwrap(), new_task.await.unwrap());
    let report = report.unwrap_or_else(|e| panic!("{e}: OLD {old_seen:?}, NEW {new_seen:?}"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.stats.folders_synced, FOLDERS.len() as u64);
    assert_eq!(report.stats.messages_transferred, 0);
    (old_seen.unwrap(), new_seen.unwrap())
}

/// A folder as the last pass left it costs one STATUS on OLD and nothing on NEW: no SELECT, no
/// SEARCH, no FETCH, and the same commands at 2,000 and at 10,000,000 messages a folder.
#[tokio::test]
async fn an_unchanged_folder_costs_one_status_whatever_its_size() {
    let (old_small, new_small) = no_change_dialogue(2_000).await;
    let (old_big, new_big) = no_change_dialogue(10_000_000).await;
    assert_eq!((&old_small, &new_small), (&old_big, &new_big));
    let per_folder: Vec<&String> = old_small[3..old_small.len() - 1].iter().collect();
    assert_eq!(per_folder.len(), FOLDERS.len(), "{old_small:#?}");
    assert!(
        per_folder
            .iter()
            .zip(FOLDERS)
            .all(|(c, f)| c.starts_with(&format!("STATUS \"{f}\""))),
        "{old_small:#?}"
    );
    assert_eq!(
        new_small.len(),
        4,
        "login, tree and logout only: {new_small:#?}"
    );
}
