//! A pass over an account whose folders did not change, and imapsync's folder-size table, against
//! recorded OLD and NEW dialogues: what each folder costs (issue 14, item 4), whatever the number
//! of messages.

use crate::imap::ConnectOptions;
use crate::imap::script::{Step, serve, step};
use crate::secret::Secret;
use crate::store::{MailboxState, MeasuredSizes, PairId, Phase, SqliteStore, Store};
use crate::sync::{AuthMech, Endpoint, Event, Observer, Options, Sizes, folder_sizes};

use super::{account_key, sync_account};

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

/// STATUS `f` answered with `s`.
fn status(f: &str, s: MailboxState) -> Step {
    step(
        &format!("STATUS \"{f}\""),
        &format!(
            "* STATUS {f} (MESSAGES {} UIDNEXT {} UIDVALIDITY {} HIGHESTMODSEQ {})\r\n$tag OK\r\n",
            s.messages, s.uidnext, s.uidvalidity, s.highestmodseq
        ),
    )
}

/// OLD and NEW playing their dialogues (each after the login and the tree, before LOGOUT), and a
/// state store that knows the account and its folder pairs.
struct Scene {
    old: Endpoint,
    new: Endpoint,
    served: [tokio::task::JoinHandle<Result<Vec<String>, String>>; 2],
    store: SqliteStore,
    pairs: Vec<PairId>,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn new(old_steps: Vec<Step>, new_steps: Vec<Step>) -> Scene {
        let around = |steps: Vec<Step>| {
            let mut all = tree();
            all.extend(steps);
            all.push(step("LOGOUT", "* BYE\r\n$tag OK\r\n"));
            all
        };
        let (old, old_task) = serve(CAPS, around(old_steps)).await;
        let (new, new_task) = serve(CAPS, around(new_steps)).await;
        let (old, new) = (endpoint(old), endpoint(new));
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        let account = store.account(&account_key(&old, &new)).await.unwrap();
        let mut pairs = Vec::new();
        for f in FOLDERS {
            pairs.push(store.folder_pair(account, f, f).await.unwrap().id);
        }
        Scene {
            old,
            new,
            served: [old_task, new_task],
            store,
            pairs,
            _dir: dir,
        }
    }

    /// The commands each side received; panics with them when `outcome` is an error.
    async fn heard<T, E: std::fmt::Display>(
        self,
        outcome: Result<T, E>,
    ) -> (T, Vec<String>, Vec<String>) {
        let [old, new] = self.served;
        let (old, new) = (old.await.unwrap(), new.await.unwrap());
        match outcome {
            Ok(t) => (t, old.unwrap(), new.unwrap()),
            Err(e) => panic!("{e}: OLD {old:?}, NEW {new:?}"),
        }
    }
}

/// The commands OLD and NEW receive in a pass over an account whose folders hold `messages`
/// each and are as the last pass left them.
async fn no_change_dialogue(messages: u32) -> (Vec<String>, Vec<String>) {
    let old_steps = FOLDERS
        .iter()
        .enumerate()
        .map(|(i, f)| status(f, recorded(i, messages, 0)))
        .collect();
    let scene = Scene::new(old_steps, Vec::new()).await;
    for (i, &pair) in scene.pairs.iter().enumerate() {
        scene
            .store
            .save_pair_state(
                pair,
                Some(recorded(i, messages, 0)),
                Some(recorded(i, messages, 1)),
                messages + 1,
                Phase::Synced,
            )
            .await
            .unwrap();
    }
    let report = sync_account(
        &scene.store,
        &scene.old,
        &scene.new,
        &Options::default(),
        &Quiet,
    )
    .await;
    let (report, old, new) = scene.heard(report).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.stats.folders_synced, FOLDERS.len() as u64);
    assert_eq!(report.stats.messages_transferred, 0);
    (old, new)
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

/// The size table of folders measured before costs one STATUS a folder and side; only the
/// folder where a message arrived since (OLD's INBOX: UIDNEXT moved) is measured again, and its
/// new measure is kept.
#[tokio::test]
async fn the_size_table_measures_again_only_what_changed() {
    let measured = |i: usize, side: u32| {
        let s = recorded(i, 2, side);
        MeasuredSizes {
            uidvalidity: s.uidvalidity,
            uidnext: s.uidnext,
            messages: s.messages,
            bytes: 1_000 * (i as u64 + 1),
            biggest: 600,
        }
    };
    let mut inbox_now = recorded(1, 2, 0);
    inbox_now.uidnext += 1;
    let old_steps = vec![
        status("Archive", recorded(0, 2, 0)),
        status("INBOX", inbox_now),
        status("Sent", recorded(2, 2, 0)),
        step(
            "EXAMINE \"INBOX\"",
            "* 2 EXISTS\r\n* OK [UIDVALIDITY 100] x\r\n* OK [UIDNEXT 4] x\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step(
            "UID FETCH 1:* (UID RFC822.SIZE)",
            "* 1 FETCH (UID 1 RFC822.SIZE 100)\r\n* 2 FETCH (UID 3 RFC822.SIZE 300)\r\n$tag OK\r\n",
        ),
    ];
    let new_steps = FOLDERS
        .iter()
        .enumerate()
        .map(|(i, f)| status(f, recorded(i, 2, 1)))
        .collect();
    let scene = Scene::new(old_steps, new_steps).await;
    for (i, &pair) in scene.pairs.iter().enumerate() {
        scene
            .store
            .save_measured_sizes(pair, Some(measured(i, 0)), Some(measured(i, 1)))
            .await
            .unwrap();
    }
    let table = folder_sizes(
        &scene.old,
        &scene.new,
        &Options::default(),
        Some(&scene.store),
    )
    .await;
    let inbox = scene.pairs[1];
    let kept = scene.store.measured_sizes(inbox).await.unwrap();
    let (table, _, _) = scene.heard(table).await;

    let got: Vec<(Option<Sizes>, Option<Sizes>)> = table.iter().map(|f| (f.old, f.new)).collect();
    let inbox_old = Sizes {
        messages: 2,
        bytes: 400,
        biggest: 300,
    };
    let want = vec![
        (Some(measured(0, 0).into()), Some(measured(0, 1).into())),
        (Some(inbox_old), Some(measured(1, 1).into())),
        (Some(measured(2, 0).into()), Some(measured(2, 1).into())),
    ];
    assert_eq!(got, want);
    assert_eq!(
        kept,
        (
            Some(MeasuredSizes {
                uidvalidity: 100,
                uidnext: 4,
                messages: 2,
                bytes: 400,
                biggest: 300,
            }),
            Some(measured(1, 1))
        )
    );
}
