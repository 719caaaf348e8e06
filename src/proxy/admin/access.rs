//! Who may use the admin endpoint, decided from what a request shows (pure, no I/O): the `Host`
//! names this endpoint (no DNS rebinding), the bearer token matches, a browser's `Origin` is the
//! endpoint itself, and a POST carries [`POST_HEADER`], which no web page can add cross-site
//! without a CORS preflight (never granted). `/health` is exempt (see `server`).

use std::net::{IpAddr, SocketAddr};

use crate::config;
use crate::secret::Secret;

/// The header every POST must carry (any value; `X-Imapferry-Admin: 1` is the documented one).
pub(crate) const POST_HEADER: &str = "x-imapferry-admin";

/// The rules of one `[admin]` section.
#[derive(Debug, Clone)]
pub(super) struct Access {
    /// `None` only with `allow_without_token` on loopback (configuration validation).
    token: Option<Secret>,
    /// `[admin] host`: `name` (any port) or `name:port`.
    host: Option<String>,
}

/// What a request shows that the rules look at (no `Debug`: it holds the presented token).
#[derive(Clone, Copy, Default)]
pub(super) struct Presented<'a> {
    pub is_post: bool,
    /// The authority of an absolute-form target, else the one `Host` header (`None` when
    /// missing or repeated).
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// [`POST_HEADER`] is present.
    pub post_header: bool,
}

/// Why a request is refused; each has its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 421: the `Host` names something else (or is missing).
    WrongHost,
    /// 401: no token, or another one.
    Unauthorized,
    /// 403: an `Origin` other than this endpoint.
    CrossOrigin,
    /// 403: a POST without [`POST_HEADER`].
    NoPostHeader,
}

impl Refusal {
    pub(super) fn status(self) -> u16 {
        match self {
            Refusal::WrongHost => 421,
            Refusal::Unauthorized => 401,
            Refusal::CrossOrigin | Refusal::NoPostHeader => 403,
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Refusal::WrongHost => {
                "the Host header must name this endpoint: its address, localhost on loopback, \
                 or [admin] host"
            }
            Refusal::Unauthorized => "unauthorized: send Authorization: Bearer TOKEN",
            Refusal::CrossOrigin => "cross-origin requests are refused",
            Refusal::NoPostHeader => "POST requests need the header X-Imapferry-Admin: 1",
        }
    }
}

impl Access {
    pub(super) fn new(config: &config::Admin) -> Access {
        Access {
            token: config.token.clone(),
            host: config.host.clone(),
        }
    }

    /// Checks, in order, Host, token, Origin and the POST header; `local` is the address the
    /// connection arrived on.
    pub(super) fn check(&self, request: &Presented<'_>, local: SocketAddr) -> Result<(), Refusal> {
        let host = request.host.ok_or(Refusal::WrongHost)?;
        if !host_allowed(host, local, self.host.as_deref()) {
            return Err(Refusal::WrongHost);
        }
        if let Some(token) = &self.token {
            let presented = request.authorization.and_then(bearer).unwrap_or("");
            if !same_secret(presented, token.expose()) {
                return Err(Refusal::Unauthorized);
            }
        }
        if let Some(origin) = request.origin
            && !same_origin(origin, host)
        {
            return Err(Refusal::CrossOrigin);
        }
        if request.is_post && !request.post_header {
            return Err(Refusal::NoPostHeader);
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// `name[:port]` or `[v6][:port]` split; `None` when the port is not a number.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']')?;
            match after {
                "" => (name, None),
                _ => (name, Some(after.strip_prefix(':')?)),
            }
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    (!name.is_empty()).then_some((name, port))
}

/// The `Host` names this endpoint: the address the connection arrived on (an IP literal, which
/// no rebound DNS name produces), `localhost` on loopback, or `[admin] host`. A port, when
/// given, must be the endpoint's (or `[admin] host`'s, when that names one).
fn host_allowed(host: &str, local: SocketAddr, configured: Option<&str>) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    let local_ip = local.ip().to_canonical();
    let local_port = port.is_none_or(|p| p == local.port());
    let is_local_ip = name
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical() == local_ip);
    let is_localhost = name.eq_ignore_ascii_case("localhost") && local_ip.is_loopback();
    if (is_local_ip || is_localhost) && local_port {
        return true;
    }
    let Some((want_name, want_port)) = configured.and_then(split_host) else {
        return false;
    };
    name.eq_ignore_ascii_case(want_name)
        && match want_port {
            Some(want) => port == Some(want),
            None => true,
        }
}

/// A browser's `Origin` names the same authority as the request's `Host` (`http` or `https`).
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let v4: SocketAddr = "127.0.0.1:9143".parse().unwrap();
        let v6: SocketAddr = "[::1]:9143".parse().unwrap();
        let lan: SocketAddr = "10.1.2.3:9143".parse().unwrap();
        // (Host, local address, [admin] host, allowed)
        let cases = [
            ("127.0.0.1:9143", v4, None, true),
            ("127.0.0.1", v4, None, true),
            ("localhost:9143", v4, None, true),
            ("LocalHost", v4, None, true),
            ("127.0.0.1:9144", v4, None, false),
            ("localhost:80", v4, None, false),
            ("evil.example:9143", v4, None, false),
            ("127.0.0.2:9143", v4, None, false),
            ("", v4, None, false),
            ("127.0.0.1:x", v4, None, false),
            ("[::1]:9143", v6, None, true),
            ("[::1]", v6, None, true),
            ("localhost:9143", v6, None, true),
            ("[::1:9143", v6, None, false),
            ("127.0.0.1:9143", v6, None, false),
            // A wildcard listener: the address the connection arrived on.
            ("10.1.2.3:9143", lan, None, true),
            ("localhost:9143", lan, None, false),
            ("admin.example:9143", lan, None, false),
            ("admin.example:9143", lan, Some("admin.example"), true),
            ("ADMIN.example", lan, Some("admin.example"), true),
            ("admin.example:443", lan, Some("admin.example:443"), true),
            ("admin.example:9143", lan, Some("admin.example:443"), false),
            ("admin.example", lan, Some("admin.example:443"), false),
            ("admin.example.evil:9143", lan, Some("admin.example"), false),
        ];
        for (host, local, configured, allowed) in cases {
            assert_eq!(
                host_allowed(host, local, configured),
                allowed,
                "{host} at {local} with {configured:?}"
            );
        }
    }

    #[test]
    fn bearer_tokens_and_origins() {
        // (Authorization, token)
        let cases = [
            ("Bearer t0k", Some("t0k")),
            ("bearer  t0k ", Some("t0k")),
            ("Basic t0k", None),
            ("Bearer", None),
            ("t0k", None),
        ];
        for (value, token) in cases {
            assert_eq!(bearer(value), token, "{value}");
        }
        assert!(same_secret("abc", "abc"));
        assert!(same_secret("", ""));
        for (a, b) in [("abc", "abd"), ("abc", "ab"), ("ab", "abc"), ("", "a")] {
            assert!(!same_secret(a, b), "{a} {b}");
        }
        // (Origin, Host, same)
        let cases = [
            ("http://127.0.0.1:9143", "127.0.0.1:9143", true),
            ("https://Admin.example", "admin.example", true),
            ("http://evil.example", "127.0.0.1:9143", false),
            ("null", "127.0.0.1:9143", false),
            ("file://", "127.0.0.1:9143", false),
            ("http://127.0.0.1:9143/x", "127.0.0.1:9143", false),
        ];
        for (origin, host, same) in cases {
            assert_eq!(same_origin(origin, host), same, "{origin} {host}");
        }
    }

    #[test]
    fn the_rules_in_order() {
        let local: SocketAddr = "127.0.0.1:9143".parse().unwrap();
        let locked = Access {
            token: Some(Secret::new("t0k")),
            host: None,
        };
        let open = Access {
            token: None,
            host: None,
        };
        let get = Presented {
            host: Some("127.0.0.1:9143"),
            authorization: Some("Bearer t0k"),
            ..Presented::default()
        };
        let post = Presented {
            is_post: true,
            post_header: true,
            ..get
        };
        // (rules, request, outcome)
        let cases = [
            (&locked, get, Ok(())),
            (&locked, post, Ok(())),
            (
                &open,
                Presented {
                    authorization: None,
                    ..post
                },
                Ok(()),
            ),
            (
                &locked,
                Presented { host: None, ..get },
                Err(Refusal::WrongHost),
            ),
            (
                &locked,
                Presented {
                    host: Some("evil.example:9143"),
                    authorization: None,
                    ..get
                },
                Err(Refusal::WrongHost),
            ),
            (
                &locked,
                Presented {
                    authorization: None,
                    ..get
                },
                Err(Refusal::Unauthorized),
            ),
            (
                &locked,
                Presented {
                    authorization: Some("Bearer t0"),
                    ..post
                },
                Err(Refusal::Unauthorized),
            ),
            (
                &locked,
                Presented {
                    authorization: None,
                    post_header: false,
                    ..post
                },
                Err(Refusal::Unauthorized),
            ),
            (
                &locked,
                Presented {
                    post_header: false,
                    ..post
                },
                Err(Refusal::NoPostHeader),
            ),
            (
                &open,
                Presented {
                    post_header: false,
                    ..post
                },
                Err(Refusal::NoPostHeader),
            ),
            (
                &open,
                Presented {
                    origin: Some("http://evil.example"),
                    ..post
                },
                Err(Refusal::CrossOrigin),
            ),
            (
                &open,
                Presented {
                    origin: Some("http://127.0.0.1:9143"),
                    ..post
                },
                Ok(()),
            ),
            (
                &open,
                Presented {
                    origin: Some("null"),
                    ..get
                },
                Err(Refusal::CrossOrigin),
            ),
        ];
        for (i, (access, request, outcome)) in cases.into_iter().enumerate() {
            assert_eq!(access.check(&request, local), outcome, "case {i}");
        }
        assert_eq!(Refusal::WrongHost.status(), 421);
        assert_eq!(Refusal::NoPostHeader.status(), 403);
    }
}
