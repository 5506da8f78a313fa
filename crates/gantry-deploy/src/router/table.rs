//! The route table: which releases get requests, and which side a request goes to.
//!
//! Choosing the canary: `X-Gantry-Release: canary|stable` forces a side (for testers); a user
//! named in `allow` always gets the canary; any other user (named by a header or a cookie) is
//! hashed into one of 10,000 buckets and gets the canary when the bucket is below the share —
//! so a user stays on one side while the share holds, and only ever moves from stable to the
//! canary as it grows. Requests without a user split by share.

use crate::stats::Stats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shares are in basis points: 10_000 is everything.
pub const ALL: u32 = 10_000;

/// The header a tester sends to force a side.
pub const FORCE_HEADER: &str = "x-gantry-release";

/// One release the router can send requests to.
pub struct Backend {
    pub release: i64,
    pub addr: SocketAddr,
    /// `Host` for a request that came without one.
    pub(super) authority: String,
    /// Requests sent to it whose response has not ended yet.
    pub(super) inflight: AtomicUsize,
    pub stats: Stats,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend(release {} at {})", self.release, self.addr)
    }
}

impl Backend {
    pub fn new(release: i64, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            release,
            addr,
            authority: addr.to_string(),
            inflight: AtomicUsize::new(0),
            stats: Stats::default(),
        })
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
    pub fn requests(&self) -> u64 {
        self.stats.totals().0
    }
}

/// How users are told apart, and who always gets the canary.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Lowercase header name (`x-user`), or
    pub header: Option<String>,
    /// a cookie name.
    pub cookie: Option<String>,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CanaryRoute {
    pub backend: Arc<Backend>,
    /// Share of users, in basis points.
    pub share: u32,
    pub users: Users,
}

/// Where requests go. Built whole and swapped in one store.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub stable: Option<Arc<Backend>>,
    pub canary: Option<CanaryRoute>,
    /// Used when the chosen backend refuses the connection.
    pub fallback: Option<Arc<Backend>>,
}

/// Which side a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Canary,
}

/// A request's header fields, as the router reads them: the parsed head itself, no copy.
pub type Fields<'h, 'b> = &'h [httparse::Header<'b>];

/// The first value of the field `name` (any case), as text.
pub(super) fn field<'b>(fields: Fields<'_, 'b>, name: &str) -> Option<&'b str> {
    fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// FNV-1a: a stable hash, the same for a user on every gantry and every version.
fn user_bucket(user: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are poorly spread for short keys.
    ((h ^ (h >> 32)) % u64::from(ALL)) as u32
}

fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

impl RouteTable {
    /// Everything to `backend`, with `fallback` behind it.
    pub fn single(backend: Arc<Backend>, fallback: Option<Arc<Backend>>) -> Self {
        Self {
            stable: Some(backend),
            canary: None,
            fallback,
        }
    }

    /// The stable release (the live one).
    pub fn primary(&self) -> Option<&Arc<Backend>> {
        self.stable.as_ref()
    }

    /// The user a request names, if the canary tells users apart.
    fn user<'b>(users: &Users, fields: Fields<'_, 'b>) -> Option<&'b str> {
        if let Some(h) = &users.header {
            return field(fields, h).filter(|v| !v.is_empty());
        }
        let name = users.cookie.as_deref()?;
        fields
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .find_map(|c| cookie_value(c, name))
            .filter(|v| !v.is_empty())
    }

    /// The side for a request with `fields`, `n` counting requests (for those without a user).
    pub fn side(&self, fields: Fields<'_, '_>, n: u64) -> Side {
        let Some(canary) = &self.canary else {
            return Side::Stable;
        };
        if self.stable.is_none() {
            return Side::Canary;
        }
        match field(fields, FORCE_HEADER) {
            Some(v) if v.eq_ignore_ascii_case("canary") => return Side::Canary,
            Some(v) if v.eq_ignore_ascii_case("stable") => return Side::Stable,
            _ => {}
        }
        let bucket = match Self::user(&canary.users, fields) {
            Some(user) if canary.users.allow.iter().any(|a| a == user) => {
                return Side::Canary;
            }
            Some(user) => user_bucket(user),
            // A multiplicative scramble of the counter spreads the sides evenly without a lock.
            None => ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(ALL)) as u32,
        };
        if bucket < canary.share {
            Side::Canary
        } else {
            Side::Stable
        }
    }

    pub(super) fn choose(&self, fields: Fields<'_, '_>, n: u64) -> Option<&Arc<Backend>> {
        match self.side(fields, n) {
            Side::Canary => self.canary.as_ref().map(|c| &c.backend),
            Side::Stable => self.stable.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(share: u32, users: Users) -> RouteTable {
        RouteTable {
            stable: Some(Backend::new(1, "127.0.0.1:1".parse().unwrap())),
            canary: Some(CanaryRoute {
                backend: Backend::new(2, "127.0.0.1:2".parse().unwrap()),
                share,
                users,
            }),
            fallback: None,
        }
    }

    fn by_header() -> Users {
        Users {
            header: Some("x-user".into()),
            cookie: None,
            allow: vec!["alice".into()],
        }
    }

    fn fields<'a>(pairs: &[(&'static str, &'a str)]) -> Vec<httparse::Header<'a>> {
        pairs
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    fn user(name: &str) -> Vec<httparse::Header<'_>> {
        fields(&[("X-User", name)])
    }

    #[test]
    fn ten_percent_of_ten_thousand_distinct_users_get_the_canary_within_one_and_a_half_points() {
        let t = table(1_000, by_header());
        let canary = (0..10_000)
            .filter(|i| t.side(&user(&format!("user-{i}")), 0) == Side::Canary)
            .count();
        assert!((850..=1_150).contains(&canary), "{canary} of 10,000");
    }

    #[test]
    fn requests_without_a_user_split_by_share() {
        let t = table(1_000, Users::default());
        let canary = (0..100_000u64)
            .filter(|n| t.side(&[], *n) == Side::Canary)
            .count();
        assert!((9_500..=10_500).contains(&canary), "{canary}");
    }

    #[test]
    fn users_stick_to_their_side_and_only_move_to_the_canary_as_the_share_grows() {
        let users: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
        let mut on_canary = vec![false; users.len()];
        for share in [0, 100, 1_000, 2_500, 5_000, 10_000] {
            let t = table(share, by_header());
            for (i, u) in users.iter().enumerate() {
                let first = t.side(&user(u), 0);
                for n in 1..100 {
                    assert_eq!(t.side(&user(u), n), first, "{u} moved at share {share}");
                }
                let now = first == Side::Canary;
                assert!(now || !on_canary[i], "{u} went back to stable at {share}");
                on_canary[i] = now;
            }
        }
        assert!(
            on_canary.iter().all(|c| *c),
            "at 100% everyone is on the canary"
        );
    }

    #[test]
    fn named_users_and_the_forcing_header_pick_their_side() {
        let t = table(0, by_header());
        assert_eq!(t.side(&user("alice"), 0), Side::Canary);
        assert_eq!(t.side(&user("bob"), 0), Side::Stable);
        let forced = fields(&[("x-user", "bob"), ("X-Gantry-Release", "Canary")]);
        assert_eq!(t.side(&forced, 0), Side::Canary);
        let forced = fields(&[("x-user", "alice"), ("x-gantry-release", "stable")]);
        assert_eq!(t.side(&forced, 0), Side::Stable);
        // Without a canary everything is stable, forced or not.
        let plain = RouteTable::single(Backend::new(1, "127.0.0.1:1".parse().unwrap()), None);
        assert_eq!(
            plain.side(&fields(&[("x-gantry-release", "canary")]), 0),
            Side::Stable
        );
    }

    #[test]
    fn a_cookie_can_name_the_user() {
        let users = Users {
            header: None,
            cookie: Some("uid".into()),
            allow: vec!["carol".into()],
        };
        let t = table(0, users);
        let h = fields(&[("Cookie", "theme=dark; uid=carol")]);
        assert_eq!(t.side(&h, 0), Side::Canary);
        // Every Cookie field is looked at.
        let h = fields(&[("cookie", "theme=dark"), ("cookie", "uid=carol")]);
        assert_eq!(t.side(&h, 0), Side::Canary);
        assert_eq!(t.side(&fields(&[("cookie", "uid=dave")]), 0), Side::Stable);
    }
}
