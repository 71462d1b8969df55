//! Next hops towards RLOCs that the data plane found unresolved: whether to ask the kernel for a
//! managed neighbour entry ([`Action::EnsureNeighbour`]).
//!
//! The XDP program redirects encapsulated packets itself, so the kernel never resolves their
//! next hop on its own; the program raises an event (rate-limited per next hop in the kernel)
//! and the shell creates a managed neighbour (`NTF_EXT_MANAGED`) that the kernel then keeps
//! resolved. Decided here: which requests are sensible (a unicast next hop on a real
//! interface), and at most one request per next hop per [`RETRY_INTERVAL`] — once created, the
//! entry stays, so a repeat only matters when creating it failed (an old kernel, an interface
//! going away), and then one warning per interval is enough. The table is bounded
//! ([`MAX_TRACKED`]): old entries are forgotten first, and beyond the bound requests are refused
//! and counted rather than the table growing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::action::Action;
use super::time::Timestamp;

/// At most one neighbour request per next hop this often.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// Next hops remembered for the rate limit.
pub const MAX_TRACKED: usize = 4096;

/// What happened to next-hop events (exported as metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextHopCounters {
    /// Managed-neighbour requests asked of the shell.
    pub requested: u64,
    /// Events within [`RETRY_INTERVAL`] of the last request for the same next hop.
    pub rate_limited: u64,
    /// Events naming no usable next hop (ifindex 0, unspecified, multicast, loopback address).
    pub invalid: u64,
    /// Events refused because [`MAX_TRACKED`] next hops were requested within the interval.
    pub table_full: u64,
}

impl NextHopCounters {
    pub fn iter(&self) -> [(&'static str, u64); 4] {
        [
            ("requested", self.requested),
            ("rate_limited", self.rate_limited),
            ("invalid", self.invalid),
            ("table_full", self.table_full),
        ]
    }
}

/// Last request time per (egress ifindex, next-hop address).
#[derive(Debug, Default)]
pub struct NextHops {
    last: HashMap<(u32, IpAddr), Timestamp>,
    counters: NextHopCounters,
}

impl NextHops {
    /// The data plane found no resolved neighbour for `addr` on `ifindex`.
    pub fn unresolved(&mut self, now: Timestamp, ifindex: u32, addr: IpAddr) -> Vec<Action> {
        if ifindex == 0 || addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            self.counters.invalid += 1;
            return Vec::new();
        }
        let key = (ifindex, addr);
        if let Some(t) = self.last.get(&key)
            && now.saturating_duration_since(*t) < RETRY_INTERVAL
        {
            self.counters.rate_limited += 1;
            return Vec::new();
        }
        if !self.last.contains_key(&key) && self.last.len() >= MAX_TRACKED {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < RETRY_INTERVAL);
            if self.last.len() >= MAX_TRACKED {
                self.counters.table_full += 1;
                return Vec::new();
            }
        }
        self.last.insert(key, now);
        self.counters.requested += 1;
        vec![Action::EnsureNeighbour { ifindex, addr }]
    }

    pub fn counters(&self) -> &NextHopCounters {
        &self.counters
    }

    /// Next hops currently remembered.
    pub fn tracked(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_request_per_next_hop_per_interval() {
        let mut n = NextHops::default();
        let gw = ip("192.0.2.254");
        let t0 = Timestamp::from_secs(1);
        assert_eq!(
            n.unresolved(t0, 3, gw),
            vec![Action::EnsureNeighbour {
                ifindex: 3,
                addr: gw
            }]
        );
        // The kernel raises the event again every second until the entry exists.
        for s in 1..30 {
            assert!(n.unresolved(t0 + Duration::from_secs(s), 3, gw).is_empty());
        }
        // Another interface is another next hop.
        assert_eq!(n.unresolved(t0, 4, gw).len(), 1);
        assert_eq!(n.unresolved(t0 + RETRY_INTERVAL, 3, gw).len(), 1);
        assert_eq!(n.counters().requested, 3);
        assert_eq!(n.counters().rate_limited, 29);
    }

    #[test]
    fn nonsense_next_hops_are_refused_and_counted() {
        let mut n = NextHops::default();
        let t = Timestamp::ZERO;
        assert!(n.unresolved(t, 0, ip("192.0.2.254")).is_empty());
        assert!(n.unresolved(t, 3, ip("0.0.0.0")).is_empty());
        assert!(n.unresolved(t, 3, ip("239.1.1.1")).is_empty());
        assert!(n.unresolved(t, 3, ip("::1")).is_empty());
        assert_eq!(n.counters().invalid, 4);
        assert_eq!(n.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_old_next_hops_first() {
        let mut n = NextHops::default();
        let t0 = Timestamp::ZERO;
        let addr =
            |i: usize| IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128));
        for i in 0..MAX_TRACKED {
            assert_eq!(n.unresolved(t0, 3, addr(i)).len(), 1);
        }
        assert!(n.unresolved(t0, 3, addr(MAX_TRACKED)).is_empty());
        assert_eq!(n.counters().table_full, 1);
        assert_eq!(n.tracked(), MAX_TRACKED);
        // Once the old requests are past the interval they make room.
        assert_eq!(
            n.unresolved(t0 + RETRY_INTERVAL, 3, addr(MAX_TRACKED))
                .len(),
            1
        );
        assert_eq!(n.tracked(), 1);
    }
}
