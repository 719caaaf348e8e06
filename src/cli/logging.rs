//! The long-running commands' logs (`proxy`, `sweep`): plain lines on stderr (colours only on a
//! terminal, so journald gets plain text), or JSON with `[log] json`; with `[log] json_file`,
//! JSON lines to that file as well. The filter is `[log] level` when set, else `RUST_LOG`, else
//! `warn`; a proxy reload puts a changed `[log] level` in force and opens the file again.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use super::setup::{EX_CONFIG, Exit, fail};
use crate::config;
use crate::lock::recover;
use crate::proxy::reload::LogControl;

/// The filter of a running subscriber and its JSON file, for reloads.
struct Control {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Option<Arc<LogFile>>,
}

impl LogControl for Control {
    fn apply(&self, log: &config::Log) -> Result<(), String> {
        let filter = filter(log).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())?;
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }
}

/// `[log] json_file`, appended to; replaced whole by [`LogFile::reopen`].
struct LogFile {
    path: PathBuf,
    /// Recovered when poisoned: a write of one event at most was cut short.
    file: Mutex<File>,
}

const LOG_FILE: &str = "the JSON log file";

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Mutex::new(crate::files::append(path)?),
        })
    }

    /// Opens the path again (after logrotate moved the file away).
    fn reopen(&self) -> Result<(), String> {
        let file = crate::files::append(&self.path)
            .map_err(|e| format!("log.json_file {}: {e}", self.path.display()))?;
        *recover(&self.file, LOG_FILE) = file;
        Ok(())
    }
}

/// One event's write to the [`LogFile`], under its lock.
struct LogFileWriter<'a>(MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The JSON layer's handle on the [`LogFile`] the reload control shares.
struct Shared(Arc<LogFile>);

impl<'a> MakeWriter<'a> for Shared {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(recover(&self.0.file, LOG_FILE))
    }
}

/// `[log] level`, else `RUST_LOG`, else `warn`.
fn filter(log: &config::Log) -> Result<EnvFilter, config::ValidationError> {
    Ok(match log.filter()? {
        Some(filter) => filter,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    })
}

/// The dispatcher a long-running command logs through, scoped to its future (the server passes
/// it on to every task), and the control a reload changes it with.
pub(super) fn dispatch(log: &config::Log) -> Result<(Dispatch, Arc<dyn LogControl>), Exit> {
    let (filter, handle) = reload::Layer::new(filter(log).map_err(|e| fail(EX_CONFIG, e))?);
    let file = match &log.json_file {
        Some(path) => Some(Arc::new(LogFile::open(path).map_err(|e| {
            fail(EX_CONFIG, format!("log.json_file {}: {e}", path.display()))
        })?)),
        None => None,
    };
    let to_file = file.as_ref().map(|file| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(Shared(Arc::clone(file)))
    });
    let output: Box<dyn Layer<_> + Send + Sync> = if log.json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(std::io::stderr),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(super::stderr_is_terminal())
                .with_writer(std::io::stderr),
        )
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(to_file);
    let control = Control {
        filter: handle,
        file,
    };
    Ok((Dispatch::new(subscriber), Arc::new(control)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_from_the_file_wins() {
        let log = config::Log {
            level: Some("info,imapferry=debug".into()),
            ..Default::default()
        };
        assert_eq!(filter(&log).unwrap().to_string(), "imapferry=debug,info");
        let bad = config::Log {
            level: Some("imapferry=loud".into()),
            ..Default::default()
        };
        assert!(filter(&bad).is_err());
    }

    /// Events reach the JSON file, and after logrotate moved it away and a reload, a new file.
    #[test]
    fn json_file_is_written_and_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.json");
        let log = config::Log {
            level: Some("info".into()),
            json_file: Some(path.clone()),
            ..Default::default()
        };
        let (dispatch, control) = dispatch(&log).unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(n = 1, "first"));
        let rotated = dir.path().join("imapferry.json.1");
        std::fs::rename(&path, &rotated).unwrap();
        control.apply(&log).unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(n = 2, "second"));
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&rotated).unwrap().trim()).unwrap();
        assert_eq!(line["fields"]["message"], "first");
        assert_eq!(line["level"], "INFO");
        let second = std::fs::read_to_string(&path).unwrap();
        assert!(
            second.contains("\"second\"") && !second.contains("first"),
            "{second}"
        );
    }
}
