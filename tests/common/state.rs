//! Reading a stopped (or idle) proxy's SQLite state file from a test.

use std::path::Path;

use imapferry::store::{AccountSummary, FolderSummary, SqliteStore, Store};

/// Every account's summary in the state file at `state`.
pub fn account_summaries(state: &Path) -> Vec<AccountSummary> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open_existing(state).await.unwrap();
        let summaries = store.account_summaries().await.unwrap();
        store.close().await;
        summaries
    })
}

/// Retires every account of the state file at `state` (forced, as `imapferry retire --force`).
#[allow(dead_code)]
pub fn retire_all(state: &Path) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open_existing(state).await.unwrap();
        for account in store.account_summaries().await.unwrap() {
            assert!(store.retire(account.id, Some("test")).await.unwrap());
        }
        store.close().await;
    })
}

/// The folders of the state file's only account.
#[allow(dead_code)]
pub fn folder_summaries(state: &Path) -> Vec<FolderSummary> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open_existing(state).await.unwrap();
        let accounts = store.account_summaries().await.unwrap();
        assert_eq!(accounts.len(), 1);
        let folders = store.folder_summaries(accounts[0].id).await.unwrap();
        store.close().await;
        folders
    })
}
