//! The shipped example configuration and the README's minimal one must always load, so neither
//! can rot. Relative paths in them (certs/...) resolve from the crate root, where cargo runs tests.

use std::path::Path;

use imapferry::config::{self, ConfigError, OldAuth, Security};

/// Issue 4 item 1's minimal configuration, as the README shows it.
const README_MINIMAL: &str = r#"
[listen]
imap  = "127.0.0.1:1143"   # plain; offers STARTTLS when [tls] is set
imaps = "127.0.0.1:1993"   # implicit TLS; needs [tls]
[tls]
cert = "certs/localhost.pem"
key  = "certs/localhost-key.pem"
[new]
address  = "127.0.0.1:21143"
security = "none"           # none | starttls | tls
# ca = "path/to/ca.pem"     # verify NEW with this CA instead of the system roots
[state]
path = "imapferry.db"
[admin]
listen = "127.0.0.1:9143"   # /health, /metrics (Prometheus) and the JSON API
allow_without_token = true  # loopback only; elsewhere set token = "..."
"#;

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/imapferry.toml")
}

#[test]
fn shipped_example_loads() {
    let c = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen.imap, Some("127.0.0.1:1143".parse().unwrap()));
    assert_eq!(c.listen.imaps, Some("127.0.0.1:1993".parse().unwrap()));
    assert!(!c.listen.proxy_protocol);
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("certs/localhost.pem"));
    assert_eq!(c.new.address, "127.0.0.1:21143");
    assert_eq!(c.new.security, Security::None);
    assert!(c.new.verify);
    let old = c.old.as_ref().unwrap();
    assert_eq!(old.address, "127.0.0.1:11143");
    assert_eq!(old.auth, OldAuth::Same);
    assert_eq!(
        c.state.location().unwrap(),
        imapferry::store::Location::File("imapferry.db".into())
    );
    assert_eq!(
        c.admin.as_ref().unwrap().listen,
        "127.0.0.1:9143".parse().unwrap()
    );
    assert_eq!(c.mapping.exclude, ["(?i)spam"]);
    assert_eq!(c.mapping.regextrans2, ["s,\\[Gmail\\].,,"]);
    assert!(c.mapping.automap);
    assert_eq!(c.migration.select_budget_ms, 2000);
    assert_eq!(c.migration.max_delete_share, 0.10);
    assert_eq!(c.limits.max_line_length, 65536);
    assert_eq!(c.limits.idle_timeout_secs, 1860);
    assert!(!c.log.json);
}

/// The example states every default explicitly: its values must equal what an absent key gives.
#[test]
fn shipped_example_states_the_defaults() {
    let c = config::load(&example_path()).unwrap();
    let d = config::Limits::default();
    assert_eq!(c.limits.max_line_length, d.max_line_length);
    assert_eq!(
        c.limits.max_literal_before_login,
        d.max_literal_before_login
    );
    assert_eq!(c.limits.max_connections_per_ip, d.max_connections_per_ip);
    assert_eq!(c.limits.max_connections, d.max_connections);
    assert_eq!(c.limits.idle_timeout_secs, d.idle_timeout_secs);
    assert_eq!(c.limits.login_timeout_secs, d.login_timeout_secs);
    let m = config::Migration::default();
    assert_eq!(c.migration.select_budget_ms, m.select_budget_ms);
    assert_eq!(c.migration.max_delete_share, m.max_delete_share);
    assert_eq!(
        c.state.location().unwrap(),
        config::State::default().location().unwrap()
    );
    let admin = c.admin.as_ref().unwrap();
    assert!(admin.token.is_none() && admin.allow_without_token && admin.host.is_none());
    assert_eq!(admin.header_timeout_secs, 10);
    let sw = config::Sweep::default();
    assert_eq!(c.sweep.enabled, sw.enabled);
    assert_eq!(c.sweep.accounts_in_parallel, sw.accounts_in_parallel);
    assert_eq!(c.sweep.connections_per_host, sw.connections_per_host);
    assert_eq!(c.sweep.revisit_secs, sw.revisit_secs);
}

#[test]
fn readme_minimal_config_parses() {
    let c = config::parse(README_MINIMAL, Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.tls.is_some());
    assert_eq!(c.new.security, Security::None);
    assert!(c.old.is_none());
    assert_eq!(c.limits.login_timeout_secs, 60);
}

#[test]
fn a_typo_in_the_example_is_reported_with_file_line_and_key() {
    let text = std::fs::read_to_string(example_path())
        .unwrap()
        .replace("select_budget_ms", "select_budget");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, &text).unwrap();
    let err = config::load(&path).unwrap_err();
    let ConfigError::Parse { line, .. } = &err else {
        panic!("{err:?}");
    };
    let expected = text
        .lines()
        .position(|l| l.starts_with("select_budget "))
        .unwrap()
        + 1;
    assert_eq!(*line, expected);
    let msg = err.to_string();
    assert!(
        msg.contains("typo.toml") && msg.contains("select_budget"),
        "{msg}"
    );
}

/// The configuration the Debian package installs as /etc/imapferry/imapferry.toml parses with
/// no unknown key; only its placeholder certificate files are missing on a build machine.
#[test]
fn packaged_config_has_only_known_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/imapferry.toml");
    match config::load(&path) {
        Ok(_) => {}
        Err(ConfigError::Invalid { source, .. }) => {
            assert_eq!(source.key(), "tls", "{source}");
            assert!(
                source.to_string().contains("/etc/imapferry/tls/"),
                "{source}"
            );
        }
        Err(e) => panic!("{e}"),
    }
}
