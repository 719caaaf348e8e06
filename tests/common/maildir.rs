//! A local Maildir as real clients (mbsync, OfflineIMAP) leave it: its message files, and a
//! message's bytes compared without what the client adds or changes.

use std::path::{Path, PathBuf};

/// Body without a possible `X-TUID:` header line (mbsync's), with CRLF normalised to LF (the
/// clients store Maildir messages with LF line ends).
pub fn normalize(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("X-TUID: "))
        .collect();
    lines.concat().into_bytes()
}

/// Message files (cur/ and new/) of one Maildir folder, sorted.
pub fn maildir_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(folder.join(sub)) {
            for e in rd {
                files.push(e.unwrap().path());
            }
        }
    }
    files.sort();
    files
}
