//! Passwords as a type that never prints: `Debug` and `Display` show `MASKED` (imapsync's word),
//! so a password cannot reach a log line, a trace or a panic message by accident. A secret is
//! bytes: a password typed in Latin-1 (or any 8-bit charset) reaches the servers byte for byte.

use std::fmt;

/// A password or other credential. Put it on the wire with [`Secret::expose_bytes`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_bytes())
    }

    /// A secret that need not be UTF-8 (a password as a client or a file gave it).
    pub fn from_bytes(value: impl Into<Vec<u8>>) -> Self {
        Secret(value.into())
    }

    /// The exact bytes. Call sites are the few places that put a password on the wire.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The clear text of a secret that is text (a token from the configuration or an HTTP
    /// header). A secret that is not UTF-8 exposes as the empty string, which matches nothing:
    /// passwords go to servers through [`Secret::expose_bytes`].
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_prints_the_password() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "MASKED MASKED Some(MASKED)"
        );
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.expose_bytes(), b"hunter2");
    }

    #[test]
    fn eight_bit_passwords_keep_their_bytes() {
        let latin1 = Secret::from_bytes(b"caf\xe9".to_vec());
        assert_eq!(latin1.expose_bytes(), b"caf\xe9");
        assert_eq!(format!("{latin1:?}"), "MASKED");
        assert_eq!(latin1.expose(), "");
        assert_ne!(latin1, Secret::new("caf\u{e9}"));
    }
}
