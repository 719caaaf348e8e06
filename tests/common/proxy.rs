//! The transparent proxy started in-process for tests: its own runtime on a thread, listeners
//! bound to free loopback ports, stopped (and joined) when dropped. With an `[admin]` section the
//! admin endpoint is bound to a free port too (`admin_port`).

use std::path::Path;

use imapferry::proxy::server::{self, Listeners};

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
        let text = format!("[listen]\nimap = \"127.0.0.1:0\"\n{text}");
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
