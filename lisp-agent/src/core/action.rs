//! What the sans-IO core asks the shell to do ([`Action`]) and what the shell tells the core
//! ([`Event`]).
//!
//! Both are plain data so that a test can run the core without sockets or maps and assert on the
//! exact list of actions. The xTR (`core::xtr`) and the map-server (`core::map_server`) both speak
//! these types; the shell (`shell::control`) carries each action out in order.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::map_cache::{Locator, Negative};

/// UDP port of LISP control messages (RFC 9301 §5), under the name the cores use.
pub use lisp_common::wire::LISP_CONTROL_PORT as CONTROL_PORT;

/// An EID prefix in an instance: the key of a map-cache entry and of rate limits.
///
/// Kept independent of the wire codec's types so that this contract stays stable while the codec
/// evolves; `core::xtr` converts. Host bits below `len` are expected to be zero (the constructors
/// of the codec and of `map_cache::eid_key` both mask them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EidPrefix {
    /// 24-bit LISP instance-id; 0 is the default instance.
    pub instance_id: u32,
    pub addr: IpAddr,
    pub len: u8,
}

impl EidPrefix {
    pub const fn new(instance_id: u32, addr: IpAddr, len: u8) -> Self {
        EidPrefix {
            instance_id,
            addr,
            len,
        }
    }

    /// A host prefix (/32 or /128).
    pub fn host(instance_id: u32, addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        EidPrefix {
            instance_id,
            addr,
            len,
        }
    }

    /// Whether `addr` in `instance_id` falls inside this prefix.
    pub fn contains(&self, instance_id: u32, addr: IpAddr) -> bool {
        if instance_id != self.instance_id {
            return false;
        }
        match (self.addr, addr) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                prefix_match(&p.octets(), &a.octets(), u32::from(self.len))
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                prefix_match(&p.octets(), &a.octets(), u32::from(self.len))
            }
            _ => false,
        }
    }
}

fn prefix_match(p: &[u8], a: &[u8], len: u32) -> bool {
    let len = len.min((p.len() * 8) as u32);
    let full = (len / 8) as usize;
    if p[..full] != a[..full] {
        return false;
    }
    let rem = len % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    p[full] & mask == a[full] & mask
}

impl std::fmt::Display for EidPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]{}/{}", self.instance_id, self.addr, self.len)
    }
}

/// The content of a map-cache entry to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapCacheData {
    /// Encapsulate to these locators (priority/weight as received).
    Positive(Vec<Locator>),
    /// A negative entry with its action.
    Negative(Negative),
}

/// Something the shell must do. Carried out in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one UDP datagram from the control socket (source port 4342).
    ///
    /// `from` is the local source address the core means: our locator of `to`'s family for
    /// every message whose source the peer acts on (Map-Register, Map-Notify-Ack, ECM
    /// Map-Request, SMR), the address the request came to for answers (Map-Reply, Map-Notify,
    /// forwarded ECM). The shell sends from it (`IP_PKTINFO`/`IPV6_PKTINFO`), so the message
    /// leaves from the RLOC even when the route's egress interface has another address (RLOCs
    /// on a loopback or dummy interface). `None`, or a `from` of the other family than `to`,
    /// leaves the choice to the kernel (the route to `to`); a `from` the kernel refuses (not a
    /// local address) is warned about once and then also left to the kernel.
    Send {
        from: Option<IpAddr>,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    /// Program (or replace) a data-plane map-cache entry. `ttl` is informational for the data
    /// plane: expiry is driven by the core, which emits [`Action::RemoveMapCache`] when it ends.
    InstallMapCache {
        eid: EidPrefix,
        data: MapCacheData,
        ttl: Duration,
    },
    /// Delete a data-plane map-cache entry (TTL expired, or a TTL 0 reply).
    RemoveMapCache { eid: EidPrefix },
}

/// Something that happened, as the shell reports it to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A UDP datagram arrived on a control socket: `from` is the peer, `to` our local address
    /// (needed to answer RLOC-probes from the probed locator).
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The data plane found no map-cache entry (or a send-map-request negative one) for `dst`,
    /// seen in a packet from `src`.
    Miss {
        instance_id: u32,
        src: IpAddr,
        dst: IpAddr,
    },
    /// The ETR received LISP data from the ITR at `itr_rloc` (outer source) for `dst_eid`, an
    /// EID it no longer holds (e.g. a host that moved away), sent by `src_eid`. The xTR answers
    /// with an SMR to `itr_rloc` (RFC 9301 §6.1), rate-limited per RLOC, so that the ITR
    /// re-resolves `dst_eid` through the mapping system.
    DataForAbsentEid {
        instance_id: u32,
        itr_rloc: IpAddr,
        src_eid: IpAddr,
        dst_eid: IpAddr,
    },
    /// The deadline returned by `next_deadline()` has passed.
    Timer,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn prefix_contains() {
        let p = EidPrefix::new(7, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 23);
        assert!(p.contains(7, IpAddr::V4(Ipv4Addr::new(198, 51, 101, 9))));
        assert!(!p.contains(7, IpAddr::V4(Ipv4Addr::new(198, 51, 102, 9))));
        assert!(!p.contains(8, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9))));
        assert!(!p.contains(7, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let h = EidPrefix::host(0, IpAddr::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(h.len, 128);
        assert!(h.contains(0, IpAddr::V6("2001:db8::1".parse().unwrap())));
        assert!(!h.contains(0, IpAddr::V6("2001:db8::2".parse().unwrap())));
        let all = EidPrefix::new(0, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        assert!(all.contains(0, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))));
    }
}
