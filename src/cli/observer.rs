//! Prints the engine's events as imapsync's lines while a pass runs (called from several tasks):
//! folder headers, one line per copied message (to the log only when a progress bar shows them on
//! a terminal), errors as they happen. It also stops the pass when `--errorsmax` is reached.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Notify;

use super::log::Output;
use super::report::{self, CopyLine, jux};
use crate::sync::{Event, Observer};

#[derive(Default)]
struct Progress {
    folders_total: usize,
    folders_started: BTreeSet<String>,
    copied: u64,
    bytes: u64,
    errors: Vec<String>,
}

pub struct Printer {
    out: Arc<Output>,
    started: Instant,
    /// Errors this pass may count before it is stopped.
    errors_allowed: u64,
    /// Recovered when poisoned ([`crate::lock::recover`]): counters and lists changed one
    /// event at a time, and an event not counted (an error) would make a failed pass look clean.
    progress: Mutex<Progress>,
    max_reached: Notify,
    stopped: AtomicBool,
    bar: Option<ProgressBar>,
}

impl Printer {
    /// `interactive`: show a progress bar on stderr instead of printing per-message lines.
    pub fn new(out: Arc<Output>, errors_allowed: u64, interactive: bool) -> Printer {
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            out.set_bar(Some(bar.clone()));
            bar
        });
        Printer {
            out,
            started: Instant::now(),
            errors_allowed: errors_allowed.max(1),
            progress: Mutex::new(Progress::default()),
            max_reached: Notify::new(),
            stopped: AtomicBool::new(false),
            bar,
        }
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        crate::lock::recover(&self.progress, "the pass's progress")
    }

    /// Completes once `--errorsmax` errors were counted.
    pub async fn max_reached(&self) {
        self.max_reached.notified().await;
    }

    /// The errors reported so far (in order).
    pub fn errors(&self) -> Vec<String> {
        self.progress().errors.clone()
    }

    /// Removes the progress bar, if any.
    pub fn finish(&self) {
        if self.bar.is_some() {
            self.out.set_bar(None);
        }
    }

    fn folder_start(&self, p: &mut Progress, old: &str, new: &str, suffix: &str) {
        if !p.folders_started.insert(old.to_string()) {
            return;
        }
        let counter = format!(
            "{}/{}",
            p.folders_started.len(),
            p.folders_total.max(p.folders_started.len())
        );
        self.out.line(&format!(
            "Folder {counter:>7} {:<35} -> {:<35}{suffix}",
            jux(old),
            jux(new)
        ));
    }

    fn copied(
        &self,
        p: &mut Progress,
        old_folder: &str,
        old_uid: u32,
        size: u64,
        new_folder: &str,
        new_uid: Option<u32>,
    ) {
        p.copied += 1;
        p.bytes += size;
        let line = report::copy_line(&CopyLine {
            old_folder,
            old_uid,
            size,
            new_folder,
            new_uid,
            copied: p.copied,
            bytes: p.bytes,
            elapsed_secs: self.started.elapsed().as_secs_f64(),
        });
        match &self.bar {
            Some(bar) => {
                self.out.log_only(&line);
                bar.set_message(format!(
                    "{} messages copied, {} ({new_folder})",
                    p.copied,
                    report::bytes_bin(p.bytes as f64)
                ));
            }
            None => self.out.line(&line),
        }
    }

    fn error(&self, p: &mut Progress, text: String) {
        self.out.line(text.trim_end());
        p.errors.push(text);
        if p.errors.len() as u64 >= self.errors_allowed
            && !self.stopped.swap(true, Ordering::SeqCst)
        {
            self.max_reached.notify_one();
        }
    }
}

impl Observer for Printer {
    fn event(&self, event: Event) {
        let mut p = self.progress();
        match event {
            Event::Plan { folders } => {
                p.folders_total = folders.len();
                self.out.line(&format!(
                    "++++ Looping on each one of {} folders to sync",
                    folders.len()
                ));
            }
            Event::FolderStart { old, new, .. } => self.folder_start(&mut p, &old, &new, ""),
            Event::FolderUnchanged { old, new } => {
                self.folder_start(&mut p, &old, &new, " unchanged since the last pass")
            }
            Event::FolderCreated { new } => self
                .out
                .line(&format!("Creating folder {} on host2", jux(&new))),
            Event::Subscribed { new } => self
                .out
                .line(&format!("Host2: Subscribing to folder {new}")),
            Event::Copied {
                old_folder,
                old_uid,
                size,
                new_folder,
                new_uid,
            } => self.copied(&mut p, &old_folder, old_uid, size, &new_folder, new_uid),
            Event::Adopted { new_folder, count } => self.out.line(&format!(
                "Host2: folder {}: {count} messages already there, linked instead of copied",
                jux(&new_folder)
            )),
            Event::FlagsUpdated { new_folder, count } => self.out.line(&format!(
                "Host2: folder {}: flags merged on {count} messages",
                jux(&new_folder)
            )),
            Event::Expunged { new_folder, count } => self.out.line(&format!(
                "Host2: folder {}: {count} messages deleted because they are gone from host1",
                jux(&new_folder)
            )),
            Event::Tombstoned { new_folder, count } => self.out.line(&format!(
                "Host2: folder {}: {count} messages deleted on host2 will not be copied again",
                jux(&new_folder)
            )),
            Event::FolderDone { .. } => {}
            Event::Warning(text) => self.out.line(text.trim_end()),
            Event::Error(text) => self.error(&mut p, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        let out = Arc::new(Output::with_log_file(&path).unwrap());
        let printer = Printer::new(out, 2, false);
        printer.event(Event::Plan {
            folders: vec![
                ("INBOX".into(), "INBOX".into()),
                ("Sent".into(), "Sent".into()),
            ],
        });
        printer.event(Event::FolderStart {
            old: "INBOX".into(),
            new: "INBOX".into(),
            messages: 1,
        });
        printer.event(Event::Copied {
            old_folder: "INBOX".into(),
            old_uid: 3,
            size: 10,
            new_folder: "INBOX".into(),
            new_uid: Some(1),
        });
        printer.event(Event::Error("could not append x".into()));
        assert!(!printer.stopped.load(Ordering::SeqCst));
        printer.event(Event::Error("could not append y".into()));
        assert!(printer.stopped.load(Ordering::SeqCst));
        assert_eq!(printer.errors().len(), 2);
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.contains("++++ Looping on each one of 2 folders to sync"));
        assert!(log.contains("Folder     1/2 [INBOX]"));
        assert!(log.contains("msg INBOX/3 {10}"));
        assert!(log.contains("copied to INBOX/1 "));
        assert!(log.contains("could not append y\n"));
    }

    #[test]
    fn with_a_progress_bar_message_lines_go_to_the_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        let out = Arc::new(Output::with_log_file(&path).unwrap());
        let printer = Printer::new(out.clone(), 5, true);
        assert!(out.bar().is_some());
        printer.event(Event::Copied {
            old_folder: "Sent".into(),
            old_uid: 9,
            size: 100,
            new_folder: "Sent".into(),
            new_uid: None,
        });
        let bar = printer.bar.clone().unwrap();
        assert_eq!(bar.message(), "1 messages copied, 0.098 KiB (Sent)");
        printer.finish();
        assert!(out.bar().is_none());
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(
            log.contains("msg Sent/9 {100}             copied to Sent/NA "),
            "{log}"
        );
    }
}
