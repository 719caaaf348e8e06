//! The live demo behind `scripts/demo.sh`: two private Dovecot servers on loopback (OLD with a
//! Courier-like `INBOX.` namespace and sample mail, NEW with `/` separators, empty), an
//! imapsync-style `imapferry sync` command line, a second pass that copies nothing, and a check
//! that NEW now holds the same mail as OLD. Then the migration proxy starts in front of both for a
//! second, untouched account (`bob`), a scripted client opens INBOX through it (backfilled from
//! OLD on the spot), and the demo tells you how to point a mail client at it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Dovecot, Layout, RawImap, SeedSpec, certs_dir, seed_account, snapshot};

const PW: &str = "demo-password";

fn imapferry() -> PathBuf {
    // examples live in target/<profile>/examples/; the binary is one level up.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("imapferry"))
        .expect("target dir")
}

fn run_sync(old: &Dovecot, new: &Dovecot, logdir: &std::path::Path) -> i32 {
    let args = [
        "sync",
        "--host1",
        old.host(),
        "--port1",
        &old.port().to_string(),
        "--user1",
        "alice",
        "--password1",
        PW,
        "--host2",
        new.host(),
        "--port2",
        &new.port().to_string(),
        "--user2",
        "alice",
        "--password2",
        PW,
        "--logdir",
        logdir.to_str().unwrap_or("LOG_imapsync"),
    ]
    .map(str::to_string);
    println!("$ imapferry {}", args.join(" ").replace(PW, "MASKED"));
    let status = Command::new(imapferry())
        .args(&args)
        .status()
        .expect("run imapferry");
    status.code().unwrap_or(-1)
}

fn main() {
    println!(
        "Starting OLD (separator '.', prefix 'INBOX.') and NEW (separator '/') Dovecot servers on loopback..."
    );
    let old = Dovecot::start(Layout::DotInbox);
    let new = Dovecot::start(Layout::Slash);
    new.add_user("alice", PW);
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::default());
    println!(
        "OLD 127.0.0.1:{} has {} messages ({} bytes) in {} folders; NEW 127.0.0.1:{} is empty.\n",
        old.port(),
        seeded.messages,
        seeded.bytes,
        seeded.counts.len(),
        new.port()
    );
    let logdir = tempfile::tempdir().expect("tempdir");

    println!("== First pass: copies everything ==");
    let code = run_sync(&old, &new, logdir.path());
    println!("exit code {code}\n");
    println!("== Second pass: nothing to do ==");
    let code2 = run_sync(&old, &new, logdir.path());
    println!("exit code {code2}\n");

    let (o, n) = (snapshot(&old, "alice", PW), snapshot(&new, "alice", PW));
    let same = o.folders == n.folders && o.subscribed == n.subscribed;
    println!(
        "OLD: {} messages, NEW: {} messages, same bytes, flags and dates in every folder: {}",
        o.total(),
        n.total(),
        if same { "yes" } else { "NO" }
    );
    println!(
        "Logs were written to {} (removed at exit).",
        logdir.path().display()
    );
    if !same || code != 0 || code2 != 0 {
        std::process::exit(1);
    }
    proxy_demo(&old, &new);
}

/// The migration proxy in front of NEW, migrating bob's untouched account from OLD.
fn proxy_demo(old: &Dovecot, new: &Dovecot) {
    new.add_user("bob", PW);
    let seeded = seed_account(old, "bob", PW, &SeedSpec::small());
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    };
    let (imap, imaps) = (free(), free());
    let certs = certs_dir();
    let config = format!(
        "[listen]\nimap = \"127.0.0.1:{imap}\"\nimaps = \"127.0.0.1:{imaps}\"\nplaintext_login = true\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [state]\npath = \"{}\"\n",
        certs.join("localhost.pem").display(),
        certs.join("localhost-key.pem").display(),
        new.port(),
        old.port(),
        dir.path().join("imapferry.db").display()
    );
    let path = dir.path().join("imapferry.toml");
    std::fs::write(&path, &config).expect("write config");
    println!(
        "\n== The migration proxy ==\n$ imapferry proxy --config {}",
        path.display()
    );
    let mut proxy = Command::new(imapferry())
        .args(["proxy", "--config"])
        .arg(&path)
        .spawn()
        .expect("start the proxy");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", imap)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = proxy.kill();
            eprintln!("the proxy did not start");
            std::process::exit(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut c = RawImap::connect("127.0.0.1", imap);
    c.login("bob", PW);
    let exists = c.select("INBOX");
    c.logout();
    println!(
        "bob's account (OLD: {} messages, NEW: empty) opened through the proxy: INBOX shows {exists} \
         messages, backfilled from OLD on first access.",
        seeded.messages
    );
    println!(
        "\nPoint a mail client at the proxy:\n  server 127.0.0.1, IMAP port {imap} (STARTTLS) or IMAPS \
         port {imaps}\n  user bob, password {PW}\n  the certificate is issued by the demo CA {}\n\
         Every change you make is applied on NEW and mirrored to OLD.",
        certs.join("ca.pem").display()
    );
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        println!("\nPress Enter to stop the proxy and both servers.");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
}
