//! Server certificates issued by the development CA (`certs/ca.pem`) for tests, with the
//! `openssl` CLI, into a test's temporary directory: any DNS names, each call a new key, so two
//! certificates for the same names still differ.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::dovecot::certs_dir;

/// A certificate chain file and its key file.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The DER of the certificate (what a TLS peer presents).
    pub fn der(&self) -> Vec<u8> {
        let certs = imapferry::tls::read_certs(&self.cert).expect("read issued cert");
        certs[0].as_ref().to_vec()
    }
}

/// Issues `STEM.pem` / `STEM-key.pem` in `dir` for `names` (DNS names; `127.0.0.1` becomes an
/// IP SAN), signed by the development CA, valid a day.
pub fn issue(dir: &Path, stem: &str, names: &[&str]) -> Issued {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    let csr = dir.join(format!("{stem}.csr"));
    let ext = dir.join(format!("{stem}.ext"));
    let sans: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect();
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,\
             keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        ),
    )
    .expect("write ext");
    run(Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj",
        ])
        .arg(format!("/CN={}", names[0]))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ca = certs_dir();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-sha256", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca.join("ca.pem"))
        .arg("-CAkey")
        .arg(ca.join("ca-key.pem"))
        .arg("-CAcreateserial")
        .arg("-CAserial")
        .arg(dir.join("ca.srl"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    Issued { cert, key }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .expect("run openssl (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
