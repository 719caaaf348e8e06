//! The transparent proxy started in-process for tests: its own runtime on a thread, listeners
//! bound to free loopback ports, stopped (and joined) when dropped. With an `[admin]` section the
//! admin endpoint is bound to a free port too (`admin_port`).

use std::path::Path;

use imapferry::proxy::server::{self, Listeners};

use super::server::ImapServer;

/// A proxy running in its own runtime; dropping it stops the proxy.
pub struct Proxy {
    pub port: u16,
    /// Implicit-TLS port (0 without one).
    pub tls_port: u16,
    /// Admin (`/metrics`, `/health`) port (0 without an `[admin]` section).
    pub admin_port: u16,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A plain listener in front of NEW at `new_port`, plus the `extra` config sections.
    pub fn start(new_port: u16, extra: &str) -> Proxy {
        let text =
            format!("[new]\naddress = \"127.0.0.1:{new_port}\"\nsecurity = \"none\"\n{extra}");
        Proxy::start_with(&text, false)
    }

    /// `text` without `[listen]` (both listeners bind 127.0.0.1:0 here).
    pub fn start_with(text: &str, imaps: bool) -> Proxy {
        let text = format!(
            "[listen]\nimap = \"127.0.0.1:0\"\n{}",
            with_test_features(text)
        );
        let config = imapferry::config::parse(&text, Path::new("test.toml")).unwrap();
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        };
        let plain = bind();
        let port = plain.local_addr().unwrap().port();
        let tls = imaps.then(bind);
        let tls_port = tls.as_ref().map_or(0, |l| l.local_addr().unwrap().port());
        let admin = config.admin.is_some().then(bind);
        let admin_port = admin.as_ref().map_or(0, |l| l.local_addr().unwrap().port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listeners = Listeners {
                    imap: Some(tokio::net::TcpListener::from_std(plain).unwrap()),
                    imaps: tls.map(|l| tokio::net::TcpListener::from_std(l).unwrap()),
                    admin: admin.map(|l| tokio::net::TcpListener::from_std(l).unwrap()),
                };
                server::serve(listeners, &config, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Proxy {
            port,
            tls_port,
            admin_port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Set in the environment, `IMAPFERRY_TEST_KEEP_CLIENT_CACHES=1` turns on
/// `[migration] keep_client_caches` in every migration proxy a test starts that does not choose
/// for itself: `.ci/run` runs the proxy's relay and real-client suites a second time with it (issue 15,
/// item 5).
fn with_test_features(text: &str) -> String {
    let on = std::env::var("IMAPFERRY_TEST_KEEP_CLIENT_CACHES").is_ok_and(|v| v == "1");
    if !on || !text.contains("[old]") || text.contains("keep_client_caches") {
        return text.to_string();
    }
    match text.split_once("[migration]\n") {
        Some((before, after)) => format!("{before}[migration]\nkeep_client_caches = true\n{after}"),
        None => format!("{text}\n[migration]\nkeep_client_caches = true\n"),
    }
}

/// `imapferry proxy` as a process of this test binary's crate (so it can be killed with SIGKILL), with a fixed state file.
pub struct ProxyProc {
    child: std::process::Child,
    pub port: u16,
    stderr: std::path::PathBuf,
}

impl ProxyProc {
    /// `config` without `[listen]`; the proxy listens on a free loopback port.
    /// `program` is the imapferry binary (`env!("CARGO_BIN_EXE_imapferry")` in tests).
    pub fn start(program: &std::path::Path, dir: &std::path::Path, config: &str) -> ProxyProc {
        let filter = std::env::var("PROXY_LOG").unwrap_or_else(|_| "info".into());
        ProxyProc::start_logging(program, dir, config, &filter)
    }

    /// [`ProxyProc::start`] with the log filter `filter` (`RUST_LOG` syntax).
    pub fn start_logging(
        program: &std::path::Path,
        dir: &std::path::Path,
        config: &str,
        filter: &str,
    ) -> ProxyProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.join("proxy.toml");
        std::fs::write(
            &path,
            format!(
                "[listen]\nimap = \"127.0.0.1:{port}\"\n{}",
                with_test_features(config)
            ),
        )
        .unwrap();
        let stderr = dir.join(format!("proxy-{port}.log"));
        let child = std::process::Command::new(program)
            .arg("proxy")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let p = ProxyProc {
            child,
            port,
            stderr,
        };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(15),
                "no proxy on {port}\n{}",
                p.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a machine that dies; returns once the process is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the proxy");
        self.child.wait().expect("reap the proxy");
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sections of a migration proxy between plain-text OLD and NEW on loopback, its state at
/// `state`, ending inside `[migration]` (more of its keys or further sections may follow).
pub fn migration_config(
    old: &impl ImapServer,
    new: &impl ImapServer,
    state: &Path,
    select_budget_ms: u64,
) -> String {
    format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [state]\npath = \"{}\"\n[migration]\nselect_budget_ms = {select_budget_ms}\n",
        new.port(),
        old.port(),
        state.display()
    )
}
