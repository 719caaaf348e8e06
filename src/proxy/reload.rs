//! Reloading a running proxy (SIGHUP, the admin API's `POST /reload`, `imapferry proxy --reload`):
//! the configuration file is read and validated again; [`restart_needed`] names every change only
//! a restart can apply, and one of them refuses the whole reload. Otherwise the certificates,
//! `[limits]`, `[log] level`, `[sweep]` settings and the accounts file take effect for new
//! connections (live pickup and the engine's idle connections: for open sessions too); open
//! sessions keep the other settings they started with. A failure changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::session::Settings;
use crate::config::{self, Config, ConfigError};
use crate::lock::{self, Swap};
use crate::migrate::Migrator;
use crate::sweep::Control;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the proxy runs without a configuration file to read again")]
    NoFile,
    #[error("{0}; the running configuration is unchanged")]
    Config(Box<ConfigError>),
    #[error(
        "{} cannot change without a restart; nothing was reloaded, the running configuration is \
         unchanged", .0.join(", ")
    )]
    NeedsRestart(Vec<&'static str>),
    #[error("{0}; the running configuration is unchanged")]
    Apply(String),
    #[error(transparent)]
    Poisoned(#[from] lock::Poisoned),
}

/// What a reload changed: the reloadable sections whose values differ (the certificate and
/// accounts files are read again in any case).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    pub changed: Vec<&'static str>,
}

/// The logs of the running process (the CLI owns the subscriber).
pub trait LogControl: Send + Sync {
    /// Puts `log`'s level in force (`None`: `RUST_LOG` or `warn`, as at the start) and opens
    /// `json_file` again.
    fn apply(&self, log: &config::Log) -> Result<(), String>;
}

/// The keys and sections whose change needs a restart, in file order: the listeners and the
/// admin endpoint are bound, the state store is open, the upstream servers, mapping and
/// migration options are part of every account's state, JSON logs choose the subscriber, and
/// the sweeper is started (or not) once.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 10] = [
        ("listen", old.listen == new.listen),
        ("new", old.new == new.new),
        ("old", old.old == new.old),
        ("state", old.state == new.state),
        ("admin", old.admin == new.admin),
        ("mapping", old.mapping == new.mapping),
        (
            "migration",
            old.migration.same_but_reloadable(&new.migration),
        ),
        ("log.json", old.log.json == new.log.json),
        ("log.json_file", old.log.json_file == new.log.json_file),
        ("sweep.enabled", old.sweep.enabled == new.sweep.enabled),
    ];
    checks
        .into_iter()
        .filter_map(|(key, same)| (!same).then_some(key))
        .collect()
}

/// The reloadable sections whose values differ.
pub fn reloadable_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (m, n) = (&old.migration, &new.migration);
    let checks: [(&'static str, bool); 10] = [
        ("tls", old.tls == new.tls),
        ("migration.live_pickup", m.live_pickup == n.live_pickup),
        (
            "migration.live_pickup_for",
            m.live_pickup_for == n.live_pickup_for,
        ),
        (
            "migration.live_pickup_secs",
            m.live_pickup_secs == n.live_pickup_secs,
        ),
        (
            "migration.live_pickup_max_secs",
            m.live_pickup_max_secs == n.live_pickup_max_secs,
        ),
        (
            "migration.idle_connections_secs",
            m.idle_connections_secs == n.idle_connections_secs,
        ),
        (
            "migration.mirror_paused",
            m.mirror_paused == n.mirror_paused,
        ),
        ("limits", old.limits == new.limits),
        ("log.level", old.log.level == new.log.level),
        ("sweep", old.sweep == new.sweep),
    ];
    checks
        .into_iter()
        .filter_map(|(key, same)| (!same).then_some(key))
        .collect()
}

/// Everything a reload replaces, and the configuration in force.
pub struct Reloader {
    file: Option<PathBuf>,
    /// The configuration in force; also serialises reloads (held only while no await runs).
    running: Mutex<Config>,
    settings: Arc<Swap<Settings>>,
    migrator: Option<Arc<Migrator>>,
    sweep: Option<Arc<Control>>,
    log: Option<Arc<dyn LogControl>>,
}

const RUNNING: &str = "the running configuration";

impl Reloader {
    /// `file`: where the configuration is read again (`None`: reloads are refused).
    pub(crate) fn new(
        file: Option<PathBuf>,
        running: Config,
        settings: Arc<Swap<Settings>>,
        sweep: Option<Arc<Control>>,
        log: Option<Arc<dyn LogControl>>,
    ) -> Reloader {
        let migrator = settings.get().migrator.clone();
        Reloader {
            file,
            running: Mutex::new(running),
            settings,
            migrator,
            sweep,
            log,
        }
    }

    /// Reads the file again and applies it (blocking: it reads files). Logs the outcome.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(r) if r.changed.is_empty() => {
                info!("reloaded: certificates and accounts file read again, settings unchanged");
            }
            Ok(r) => info!(
                "reloaded: certificates and accounts file read again; changed: {}",
                r.changed.join(", ")
            ),
            Err(e) => warn!("reload refused: {e}"),
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let file = self.file.as_deref().ok_or(ReloadError::NoFile)?;
        let new = config::load(file).map_err(|e| ReloadError::Config(Box::new(e)))?;
        let mut running = lock::lock(&self.running, RUNNING)?;
        let restart = restart_needed(&running, &new);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        // Everything that can fail is built first; then nothing fails but the log filter, whose
        // level the validation already parsed.
        let settings = super::server::reloaded_settings(&self.settings.get(), &new)
            .map_err(|e| ReloadError::Apply(e.to_string()))?;
        if let Some(m) = &self.migrator {
            m.reload(&new)
                .map_err(|e| ReloadError::Apply(e.to_string()))?;
        }
        self.settings.set(Arc::new(settings));
        if let Some(sweep) = &self.sweep {
            sweep.set_settings(new.sweep.clone());
        }
        if let Some(log) = &self.log
            && let Err(e) = log.apply(&new.log)
        {
            warn!("reload: log.level not applied: {e}");
        }
        let changed = reloadable_changes(&running, &new);
        *running = new;
        Ok(Reloaded { changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "[listen]\nimap = \"127.0.0.1:1143\"\n[new]\naddress = \"127.0.0.1:2\"\n\
                        security = \"none\"\n";

    fn parse(text: &str) -> Config {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    /// Which edit needs a restart, and which is reloaded (issue 16, item 1).
    #[test]
    fn what_needs_a_restart() {
        // (text appended to or replacing the base, restart keys, reloadable keys)
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("", &[], &[]),
            ("[limits]\nmax_connections = 7\n", &[], &["limits"]),
            ("[log]\nlevel = \"info\"\n", &[], &["log.level"]),
            ("[log]\njson = true\n", &["log.json"], &[]),
            ("[log]\njson_file = \"x.json\"\n", &["log.json_file"], &[]),
            ("[sweep]\nwindow = \"22:00-06:00\"\n", &[], &["sweep"]),
            ("[sweep]\nenabled = true\n", &["sweep.enabled"], &["sweep"]),
            ("[state]\npath = \"other.db\"\n", &["state"], &[]),
            ("[migration]\nselect_budget_ms = 1\n", &["migration"], &[]),
            (
                "[migration]\nlive_pickup_secs = 0\n",
                &[],
                &["migration.live_pickup_secs"],
            ),
            (
                "[migration]\nlive_pickup_secs = 60\nmirror_attempts = 2\n",
                &["migration"],
                &["migration.live_pickup_secs"],
            ),
            (
                "[migration]\nlive_pickup = \"poll\"\nlive_pickup_max_secs = 90\n\
                 idle_connections_secs = 5\n[migration.live_pickup_for]\nann = \"off\"\n",
                &[],
                &[
                    "migration.live_pickup",
                    "migration.live_pickup_for",
                    "migration.live_pickup_max_secs",
                    "migration.idle_connections_secs",
                ],
            ),
            (
                "[migration]\nmirror_paused = true\n",
                &[],
                &["migration.mirror_paused"],
            ),
            ("[mapping]\nautomap = true\n", &["mapping"], &[]),
            (
                "[admin]\nlisten = \"127.0.0.1:9\"\nallow_without_token = true\n",
                &["admin"],
                &[],
            ),
            (
                "[old]\naddress = \"127.0.0.1:3\"\nsecurity = \"none\"\n",
                &["old"],
                &[],
            ),
        ];
        let base = parse(BASE);
        for (extra, restart, reloadable) in cases {
            let new = parse(&format!("{BASE}{extra}"));
            assert_eq!(restart_needed(&base, &new), *restart, "{extra}");
            assert_eq!(reloadable_changes(&base, &new), *reloadable, "{extra}");
        }
        // Edits of the base's own keys.
        let edits: &[(&str, &str, &[&str])] = &[
            ("127.0.0.1:1143", "127.0.0.1:1144", &["listen"]),
            ("127.0.0.1:2", "127.0.0.1:4", &["new"]),
            ("imap = ", "imaps = ", &["listen"]),
        ];
        for (from, to, restart) in edits {
            let mut text = BASE.replace(from, to);
            if to.starts_with("imaps") {
                let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");
                text += &format!(
                    "[tls]\ncert = \"{certs}/localhost.pem\"\nkey = \"{certs}/localhost-key.pem\"\n"
                );
            }
            let new = parse(&text);
            assert_eq!(restart_needed(&base, &new), *restart, "{to}");
        }
    }
}
