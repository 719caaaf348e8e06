//! The proxy's certificate chosen by the name a client asks for (TLS SNI): `[[tls.names]]`
//! entries beside the default `[tls]` certificate. A name is exact (`imap.example.com`) or a
//! wildcard for one label (`*.example.com` covers `a.example.com`, not `example.com` nor
//! `a.b.example.com`); an exact name wins over a wildcard; no SNI or an unknown name gets the
//! default. [`check_name`] and [`Names::lookup`] are pure.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::TlsError;

/// Why a name of `[[tls.names]]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("an entry needs at least one name")]
    NoNames,
    #[error(
        "{0:?} is not a DNS name (letters, digits, '-' and dots; '*.' only as the first label)"
    )]
    Invalid(String),
    #[error("{0:?} is listed twice")]
    Duplicate(String),
}

/// Checks one name; returns it lowercased. A wildcard needs two labels after `*.` (no
/// `*.com`).
pub fn check_name(name: &str) -> Result<String, NameError> {
    let lower = name.to_ascii_lowercase();
    let invalid = || NameError::Invalid(name.to_string());
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if rest.len() > 253 || !labels.iter().all(label_ok) || (wildcard && labels.len() < 2) {
        return Err(invalid());
    }
    Ok(lower)
}

/// Names to values: exact names, and wildcards by the suffix after `*.`.
#[derive(Debug)]
pub struct Names<T> {
    exact: HashMap<String, T>,
    wildcard: HashMap<String, T>,
}

impl<T: Clone> Names<T> {
    /// Every entry's names checked ([`check_name`]), none listed twice.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a [String], T)>,
    ) -> Result<Names<T>, NameError> {
        let mut names = Names {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (list, value) in entries {
            if list.is_empty() {
                return Err(NameError::NoNames);
            }
            for name in list {
                let checked = check_name(name)?;
                let (map, key) = match checked.strip_prefix("*.") {
                    Some(suffix) => (&mut names.wildcard, suffix.to_string()),
                    None => (&mut names.exact, checked),
                };
                if map.insert(key, value.clone()).is_some() {
                    return Err(NameError::Duplicate(name.clone()));
                }
            }
        }
        Ok(names)
    }

    /// The value for the name a client sent (any case, a trailing dot ignored).
    pub fn lookup(&self, sni: &str) -> Option<&T> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(v) = self.exact.get(&sni) {
            return Some(v);
        }
        let (first, parent) = sni.split_once('.')?;
        (!first.is_empty()).then(|| self.wildcard.get(parent))?
    }
}

/// One `[[tls.names]]` entry: its names and PEM files.
pub struct Entry<'a> {
    pub names: &'a [String],
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Chooses the certificate by SNI; the default for no SNI or an unknown name.
#[derive(Debug)]
pub(super) struct Resolver {
    default: Arc<CertifiedKey>,
    names: Names<Arc<CertifiedKey>>,
}

impl Resolver {
    pub(super) fn new(
        default: Arc<CertifiedKey>,
        entries: &[Entry<'_>],
        load: impl Fn(&Path, &Path) -> Result<Arc<CertifiedKey>, TlsError>,
    ) -> Result<Resolver, TlsError> {
        let loaded = entries
            .iter()
            .map(|e| Ok((e.names, load(e.cert, e.key)?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(Resolver {
            default,
            names: Names::new(loaded)?,
        })
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|sni| self.names.lookup(sni));
        Some(Arc::clone(chosen.unwrap_or(&self.default)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_checked() {
        // (name, accepted as)
        let cases: &[(&str, Option<&str>)] = &[
            ("imap.example.com", Some("imap.example.com")),
            ("IMAP.Example.COM", Some("imap.example.com")),
            ("localhost", Some("localhost")),
            ("*.example.com", Some("*.example.com")),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
            ("*.com", None),
            ("*", None),
            ("a.*.example.com", None),
            ("*example.com", None),
            ("", None),
            ("a..b", None),
            ("-a.example", None),
            ("a-.example", None),
            ("a_b.example", None),
            ("a b.example", None),
            ("imap.example.com.", None),
            ("bücher.example", None),
        ];
        for (name, expected) in cases {
            assert_eq!(check_name(name).ok().as_deref(), *expected, "{name:?}");
        }
    }

    #[test]
    fn lookup_prefers_exact_then_one_label_wildcards() {
        let a = vec!["imap.example.com".to_string(), "*.customer.net".to_string()];
        let b = vec!["mail.customer.net".to_string(), "*.example.com".to_string()];
        let names = Names::new([(a.as_slice(), 'a'), (b.as_slice(), 'b')]).unwrap();
        // (SNI, chosen)
        let cases: &[(&str, Option<char>)] = &[
            ("imap.example.com", Some('a')),
            ("IMAP.EXAMPLE.COM", Some('a')),
            ("imap.example.com.", Some('a')),
            ("pop.example.com", Some('b')),
            ("example.com", None),
            ("a.b.example.com", None),
            ("mail.customer.net", Some('b')),
            ("x.customer.net", Some('a')),
            ("customer.net", None),
            (".customer.net", None),
            ("other.org", None),
            ("", None),
        ];
        for (sni, expected) in cases {
            assert_eq!(names.lookup(sni).copied(), *expected, "{sni:?}");
        }
    }

    #[test]
    fn entries_refused() {
        let empty: Vec<String> = Vec::new();
        assert_eq!(
            Names::new([(empty.as_slice(), 1)]).unwrap_err(),
            NameError::NoNames
        );
        let twice = vec!["a.example".to_string(), "A.example".to_string()];
        assert!(matches!(
            Names::new([(twice.as_slice(), 1)]).unwrap_err(),
            NameError::Duplicate(_)
        ));
        let one = vec!["*.example.org".to_string()];
        assert!(matches!(
            Names::new([(one.as_slice(), 1), (one.as_slice(), 2)]).unwrap_err(),
            NameError::Duplicate(_)
        ));
        let bad = vec!["*.org".to_string()];
        assert!(matches!(
            Names::new([(bad.as_slice(), 1)]).unwrap_err(),
            NameError::Invalid(_)
        ));
    }
}
