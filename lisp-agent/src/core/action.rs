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

/// An EID prefix in an instance: the key of a map-cache entry and of rate limits. The
/// workspace's one prefix type, re-exported under the name the cores use.
pub use lisp_common::prefix::EidPrefix;

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
    /// Have the kernel resolve the neighbour `addr` on interface `ifindex` and keep it resolved
    /// (a managed neighbour entry): the data plane's next hop towards an RLOC.
    EnsureNeighbour { ifindex: u32, addr: IpAddr },
    /// Tell the data plane that `eid` is a known local dynamic EID on `ifindex` (and 802.1Q
    /// `vlan` on a trunk): it stops raising detection events for it and stamps its activity.
    AddLocalDynamicEid {
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
        vlan: Option<u16>,
    },
    /// Forget a local dynamic EID (moved away, or inactive): detection applies to it again.
    RemoveLocalDynamicEid { instance_id: u32, eid: IpAddr },
    /// A host route for `eid` in the instance's routing table via the SVI `ifindex`.
    AddHostRoute {
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
    },
    /// Remove the host route added by [`Action::AddHostRoute`].
    RemoveHostRoute {
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
    },
    /// Send `payload` as one UDP datagram 4342 -> 4342 to the multicast `group` out of
    /// interface `ifindex`, IP TTL / hop limit 1 (the site's map-notify-group). `from` as in
    /// [`Action::Send`].
    SendMulticast {
        group: IpAddr,
        ifindex: u32,
        from: Option<IpAddr>,
        payload: Vec<u8>,
    },
}

/// What made the data plane report a dynamic EID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetectionKind {
    /// An IP packet from the EID.
    Data,
    /// A gratuitous ARP (request or reply with sender = target) from the EID.
    GratuitousArp,
    /// A reverse ARP (what hypervisors send after a migration).
    Rarp,
    /// An IPv6 Neighbour Solicitation / Advertisement from the EID.
    NeighbourDiscovery,
}

impl DetectionKind {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionKind::Data => "data",
            DetectionKind::GratuitousArp => "gratuitous-arp",
            DetectionKind::Rarp => "rarp",
            DetectionKind::NeighbourDiscovery => "nd",
        }
    }
}

/// Something that happened, as the shell reports it to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A UDP datagram arrived on a control socket: `from` is the peer, `to` the local address
    /// it was sent to (the shell reads it with `IP_PKTINFO`/`IPV6_PKTINFO`; unspecified if
    /// unknown). Answers leave from `to`: the address the peer used.
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
    /// The deadline returned by `Node::poll_timeout()` (or a role's `next_deadline()`) has
    /// passed.
    Timer,
    /// The data plane's FIB lookup towards an RLOC found a route via `addr` on `ifindex` but no
    /// resolved neighbour (see `core::next_hop`).
    NextHopUnresolved { ifindex: u32, addr: IpAddr },
    /// The data plane saw a packet from `eid` (not a known local dynamic EID) inside the
    /// dynamic-EID prefixes of a mobility interface: `ifindex` is where XDP runs (the trunk's
    /// parent for a tagged frame, with its 802.1Q `vlan`), `mac` the frame's source.
    DynamicEidDetected {
        ifindex: u32,
        vlan: Option<u16>,
        instance_id: u32,
        eid: IpAddr,
        mac: [u8; 6],
        kind: DetectionKind,
    },
    /// Local dynamic EIDs the data plane saw traffic from since the previous report (the
    /// shell polls every second): `(instance-id, EID)`.
    DynamicEidActivity { seen: Vec<(u32, IpAddr)> },
    /// A control datagram that arrived for the multicast `group` (a map-notify-group) on
    /// interface `ifindex`.
    GroupDatagram {
        ifindex: u32,
        from: SocketAddr,
        group: IpAddr,
        bytes: Vec<u8>,
    },
}
