//! The login throttle: a login NEW refuses is answered after a delay that grows with the recent
//! failures of the same user (as NEW names the account) from the same client network (an IPv4
//! address or an IPv6 /64, see [`cidr::network_of`]). A user's successful login clears only that
//! user's count from that network, so an attacker's own account cannot reset the delay of
//! another user's guesses. The rules are pure functions; [`LoginThrottle`] holds the counts.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::cidr;
use crate::login::LoginFormat;

/// Delay before answering a refused login, per recent failure of the same (network, user).
pub const STEP: Duration = Duration::from_millis(500);
/// Longest delay before answering a refused login.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// A count starts again after this long without a failure.
pub const FORGET: Duration = Duration::from_secs(15 * 60);
/// Above this many (network, user) entries, those older than [`FORGET`] are pruned; if that is
/// not enough, the least recent half goes (the table never grows past about this size).
const PRUNE_AT: usize = 50_000;
/// Longest account name kept as a key (longer names are cut: they are NEW's problem, not a way
/// to grow the table).
const MAX_USER_KEY: usize = 256;

/// One (network, user)'s recent failures: how many, and when the last one was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last: Instant,
}

/// The count after one more failure at `now`, given the previous state (stale counts restart).
pub fn after_failure(previous: Option<Failures>, now: Instant) -> Failures {
    let count = match previous {
        Some(f) if now.saturating_duration_since(f.last) < FORGET => f.count.saturating_add(1),
        _ => 1,
    };
    Failures { count, last: now }
}

/// How long to wait before answering the `count`th recent failure.
pub fn delay(count: u32) -> Duration {
    STEP.saturating_mul(count).min(MAX_DELAY)
}

/// What the throttle decided about one refused login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Recent failures of this user from this network, this one included.
    pub failures: u32,
    pub delay: Duration,
}

/// The key of a client and a typed login: its network and the account name NEW uses.
type Key = (IpAddr, String);

/// Recent login failures per (client network, account name), shared by every session.
#[derive(Debug)]
pub struct LoginThrottle {
    format: LoginFormat,
    failures: DashMap<Key, Failures>,
}

impl LoginThrottle {
    /// `format`: how NEW turns a typed login into an account name (`[new] username_format`), so
    /// `Bob` and `bob` count as one user.
    pub fn new(format: LoginFormat) -> LoginThrottle {
        LoginThrottle {
            format,
            failures: DashMap::new(),
        }
    }

    fn key(&self, ip: IpAddr, user: &str) -> Key {
        let mut name = self.format.apply(user);
        if name.len() > MAX_USER_KEY {
            let mut cut = MAX_USER_KEY;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        (cidr::network_of(ip), name)
    }

    /// Records a login of `user` from `ip` that NEW refused; says how long to wait before
    /// answering it.
    pub fn failed(&self, ip: IpAddr, user: &str) -> Verdict {
        let now = Instant::now();
        if self.failures.len() > PRUNE_AT {
            self.prune(now);
        }
        let key = self.key(ip, user);
        let next = {
            let mut entry = self.failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            let previous = (entry.count > 0).then_some(*entry);
            *entry = after_failure(previous, now);
            entry.count
        };
        Verdict {
            failures: next,
            delay: delay(next),
        }
    }

    /// `user` logged in from `ip`: that user's failures from that network are forgotten (and
    /// nobody else's).
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        self.failures.remove(&self.key(ip, user));
    }

    /// Drops stale entries; when every entry is recent, the least recent half.
    fn prune(&self, now: Instant) {
        self.failures
            .retain(|_, f| now.saturating_duration_since(f.last) < FORGET);
        if self.failures.len() > PRUNE_AT {
            let mut times: Vec<Instant> = self.failures.iter().map(|e| e.last).collect();
            let mid = times.len() / 2;
            let (_, cutoff, _) = times.select_nth_unstable(mid);
            let cutoff = *cutoff;
            self.failures.retain(|_, f| f.last > cutoff);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_grow_and_restart_after_a_quiet_spell() {
        let t0 = Instant::now();
        let f = |count, last| Some(Failures { count, last });
        for (previous, now, count) in [
            (None, t0, 1),
            (f(1, t0), t0 + Duration::from_secs(1), 2),
            (f(7, t0), t0 + FORGET - Duration::from_secs(1), 8),
            (f(7, t0), t0 + FORGET, 1),
            (f(u32::MAX, t0), t0, u32::MAX),
        ] {
            assert_eq!(after_failure(previous, now).count, count, "{previous:?}");
        }
    }

    #[test]
    fn delays_grow_by_step_and_cap() {
        for (count, expected) in [
            (1, STEP),
            (2, STEP * 2),
            (10, MAX_DELAY),
            (11, MAX_DELAY),
            (u32::MAX, MAX_DELAY),
        ] {
            assert_eq!(delay(count), expected, "{count}");
        }
    }

    #[test]
    fn counts_are_per_network_and_user() {
        let t = LoginThrottle::new(LoginFormat::default());
        let a = ip("192.0.2.1");
        let failures = |ip, user| t.failed(ip, user).failures;
        assert_eq!(failures(a, "bob"), 1);
        assert_eq!(failures(a, "bob"), 2);
        // Another user from the same address has a count of their own.
        assert_eq!(failures(a, "carol"), 1);
        // The attacker's own account logging in does not reset bob's count.
        t.succeeded(a, "mallory");
        t.succeeded(a, "carol");
        assert_eq!(failures(a, "bob"), 3);
        assert_eq!(failures(a, "carol"), 1);
        // The account name as NEW sees it: Bob is bob.
        assert_eq!(failures(a, "BOB"), 4);
        // Another IPv4 address is another client.
        assert_eq!(failures(ip("192.0.2.2"), "bob"), 1);
        // bob's own success clears bob's count from that address only.
        t.succeeded(a, "Bob");
        assert_eq!(failures(a, "bob"), 1);
        assert_eq!(failures(ip("192.0.2.2"), "bob"), 2);
        // IPv6: one /64 is one client.
        assert_eq!(failures(ip("2001:db8:1:2::1"), "bob"), 1);
        assert_eq!(failures(ip("2001:db8:1:2::ffff:2"), "bob"), 2);
        assert_eq!(failures(ip("2001:db8:1:3::1"), "bob"), 1);
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::new(LoginFormat::default());
        let a = ip("192.0.2.1");
        for i in 0..(PRUNE_AT + 10) {
            t.failed(a, &format!("user{i}"));
        }
        assert!(t.len() <= PRUNE_AT / 2 + 11, "{}", t.len());
        // The most recent failures are kept.
        assert_eq!(t.failed(a, &format!("user{}", PRUNE_AT + 9)).failures, 2);
        let long = "x".repeat(10_000);
        t.failed(a, &long);
        assert_eq!(t.failed(a, &format!("{long}y")).failures, 2);
    }
}
