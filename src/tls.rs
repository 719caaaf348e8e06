//! TLS configuration, with the ring provider only. Client configs verify the server's certificate by
//! default (Debian's CA bundle, or a CA file given by the user) and only skip it when asked to
//! explicitly. PEM files are read with `rustls-pki-types`' `PemObject` (rustls-pemfile is archived).
//! Client configs for outgoing connections are built once per process and trust settings. The
//! proxy's server config chooses its certificate by SNI ([`sni`]).

pub mod sni;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

/// Where Debian (and most Linux distributions) keep the system's trusted CAs.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM file {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The key does not fit the certificate, or cannot sign.
    #[error("{}: {message}", cert.display())]
    Key { cert: PathBuf, message: String },
    #[error("tls.names: {0}")]
    Names(#[from] sni::NameError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// A client configuration. `ca_file` replaces the system roots; `verify = false` accepts any
/// certificate (imapsync's default, offered here only as an explicit opt-out).
pub fn client_config(verify: bool, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        let bundle = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        for cert in read_certs(bundle)? {
            // A bundle may hold a certificate rustls cannot use; skipping it matches what OpenSSL does.
            let _ = roots.add(cert);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Client configurations built so far, per (verify, CA file).
type ClientConfigs = Vec<((bool, Option<PathBuf>), Arc<ClientConfig>)>;
static CLIENT_CONFIGS: Mutex<ClientConfigs> = Mutex::new(Vec::new());

/// The client configuration for (`verify`, `ca_file`), built at its first use and shared by
/// every later connection of the process: a CA bundle is read and parsed once, not at each
/// connection (a changed bundle is read at the next start). A failed build is not remembered.
pub fn shared_client_config(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let key = (verify, ca_file.map(Path::to_path_buf));
    // The list only ever gains complete entries: a panic elsewhere leaves it usable.
    let find = |configs: &ClientConfigs| {
        configs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| Arc::clone(c))
    };
    if let Some(config) = find(
        &CLIENT_CONFIGS
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    ) {
        return Ok(config);
    }
    // Built without the lock held (it reads a file); a concurrent first use may build it twice.
    let built = client_config(verify, ca_file)?;
    let mut configs = CLIENT_CONFIGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(config) = find(&configs) {
        return Ok(config);
    }
    configs.push((key, Arc::clone(&built)));
    Ok(built)
}

/// A server configuration from a certificate chain and a private key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_names(cert, key, &[])
}

/// A server configuration presenting the certificate of the `names` entry the client's SNI
/// matches, else the default `cert` and `key` (PEM files, all read now).
pub fn server_config_with_names(
    cert: &Path,
    key: &Path,
    names: &[sni::Entry<'_>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let load = |cert: &Path, key: &Path| certified_key(cert, key, &provider);
    let resolver = sni::Resolver::new(load(cert, key)?, names, load)?;
    let config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(Arc::new(config))
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key_der, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Key {
            cert: cert.to_owned(),
            message: e.to_string(),
        })
}

/// The explicit opt-out: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
