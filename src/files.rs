//! Files and directories the program creates are private to its user: files 0600, directories
//! 0700, whatever the umask. They hold passwords (the batch failures file), who owns which
//! mailbox and what they did (the state database and its WAL), and logs.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the program creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the program creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents as 0700 (directories that exist are left as they are).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create a missing file as 0600 (an existing file keeps its mode).
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates or truncates `path` (0600), for writing.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Writes `bytes` to `path`, created or truncated, and made 0600 even if it existed: for files
/// that hold secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)
}

/// Opens `path` for appending, created 0600 if missing.
pub fn append(path: &Path) -> io::Result<File> {
    options().append(true).create(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        let f = dir.join("f");
        create(&f).unwrap();
        assert_eq!(mode(&f), FILE_MODE);
        let g = dir.join("g");
        append(&g).unwrap();
        assert_eq!(mode(&g), FILE_MODE);
        // A secret written over an existing world-readable file makes it private.
        let h = dir.join("h");
        std::fs::write(&h, "old").unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&h, b"new").unwrap();
        assert_eq!(mode(&h), FILE_MODE);
        assert_eq!(std::fs::read(&h).unwrap(), b"new");
    }
}
