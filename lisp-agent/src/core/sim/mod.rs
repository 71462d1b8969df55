//! A simulation harness for the core: several [`Node`]s with addresses, a virtual clock, links
//! with loss and delay (deterministic: one seeded generator), multicast groups, and each node's
//! data-plane map-cache as its actions left it. Shared by every multi-node core test.
//!
//! ```ignore
//! let mut sim = Sim::new(7);
//! let ms = sim.add_node("ms", NodeConfig::map_server(site(KEY, &["198.51.100.0/22"])), &["192.0.2.1"]);
//! let a = sim.add_node("a", NodeConfig::xtr(xtr("192.0.2.11", &["198.51.100.0/24"], &["192.0.2.1"], KEY)), &[]);
//! sim.run_for(Duration::from_secs(2));              // registers
//! sim.miss(a, 0, "198.51.100.1", "198.51.101.1");   // first packet
//! sim.run_until_quiet(Duration::from_secs(5));
//! ```
//!
//! * A node's addresses are its xTR locators plus any given to [`Sim::add_node`]; a datagram to
//!   an address nobody has is dropped and counted ([`Sim::unroutable`]).
//! * Every datagram crosses the link between sender and receiver: [`Link::default`] (1 ms, no
//!   loss) unless [`Sim::set_link`] said otherwise. Loss is drawn from the seeded generator, so
//!   a run is the same every time.
//! * A datagram to a multicast address reaches every member of the group ([`Sim::join`]) but
//!   the sender, each over its own link.
//! * [`Sim::set_down`] takes a node off the network (datagrams to and from it are lost, its
//!   timers do not run); [`Sim::restart`] replaces it by a fresh node (state lost).
//! * Everything sent is recorded in [`Sim::trace`] for assertions on messages.
//! * [`Sim::send_data`] puts a packet into an ITR's data plane: a miss event, or where the
//!   map-cache sends it (and whether that ETR holds the EID).
//! * [`replay`] runs a recorded list of input events against one node and compares the exact
//!   actions of every step.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::Message;

use super::action::{Action, CONTROL_PORT, EidPrefix, Event, MapCacheData};
use super::map_cache::{Negative, PRIORITY_UNUSABLE};
use super::map_server::config::MapServerConfig;
use super::node::{Node, NodeConfig, Notification};
use super::nonce::NonceSource;
use super::time::Timestamp;
use super::xtr::XtrConfig;

/// What the data plane of an ITR does with one packet ([`Sim::send_data`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// No usable entry (none, or a negative one with send-map-request): the ITR got a miss
    /// event, as the XDP program would raise it.
    Miss,
    /// A negative entry dropped or natively forwarded the packet.
    Negative(Negative),
    /// Encapsulated to `rloc`: `etr` is the node that has that address (`None`: nobody, the
    /// packet is lost) and `owned` whether that node's database-mappings cover the destination
    /// (`false`: the ETR no longer holds the EID — a stale mapping, the case for an SMR).
    Encapsulated {
        rloc: IpAddr,
        etr: Option<NodeId>,
        owned: bool,
    },
}

/// Index of a node in a [`Sim`].
pub type NodeId = usize;

/// Delay and loss of the path between two nodes (both directions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub delay: Duration,
    /// Probability in 0.0..=1.0 that a datagram is lost.
    pub loss: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(1),
            loss: 0.0,
        }
    }
}

/// One datagram as the harness saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub at: Timestamp,
    pub from_node: NodeId,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
    /// Delivered to these nodes (empty: lost or unroutable).
    pub delivered_to: Vec<NodeId>,
}

impl Sent {
    /// The payload decoded (`None` if it does not parse).
    pub fn message(&self) -> Option<Message> {
        Message::parse(&self.payload).ok()
    }
}

struct SimNode {
    name: String,
    cfg: NodeConfig,
    node: Node,
    addrs: Vec<IpAddr>,
    up: bool,
    /// The data plane's map-cache as `InstallMapCache` / `RemoveMapCache` left it.
    map_cache: BTreeMap<EidPrefix, MapCacheData>,
    /// `EnsureNeighbour` requests, in order.
    neighbours: Vec<(u32, IpAddr)>,
    /// Notifications, with the time they were polled.
    notifications: Vec<(Timestamp, Notification)>,
    /// The data plane's known local dynamic EIDs: (instance, EID) → (ifindex, VLAN).
    local_eids: BTreeMap<(u32, IpAddr), (u32, Option<u16>)>,
    /// Host routes: (instance, EID) → SVI ifindex.
    host_routes: BTreeMap<(u32, IpAddr), u32>,
}

/// A datagram on its way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Timestamp,
    seq: u64,
    to_node: NodeId,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
    /// Sent with `SendMulticast`: delivered as `Event::GroupDatagram` on this ifindex.
    group_ifindex: Option<u32>,
}

/// The simulated network and clock.
pub struct Sim {
    now: Timestamp,
    nodes: Vec<SimNode>,
    links: HashMap<(NodeId, NodeId), Link>,
    default_link: Link,
    groups: HashMap<IpAddr, BTreeSet<NodeId>>,
    in_flight: BTreeSet<InFlight>,
    seq: u64,
    rng: NonceSource,
    trace: Vec<Sent>,
    unroutable: u64,
}

/// Bound on the events one `run_*` call processes: a protocol loop shows up as a panic here
/// instead of a hung test.
const MAX_STEPS: usize = 1_000_000;

impl Sim {
    /// An empty network at time 0; `seed` drives loss.
    pub fn new(seed: u64) -> Self {
        Sim {
            now: Timestamp::ZERO,
            nodes: Vec::new(),
            links: HashMap::new(),
            default_link: Link::default(),
            groups: HashMap::new(),
            in_flight: BTreeSet::new(),
            seq: 0,
            rng: NonceSource::new(seed),
            trace: Vec::new(),
            unroutable: 0,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// A node started now, reachable at its xTR locators and at `extra` addresses (e.g. a
    /// map-server's own address).
    pub fn add_node(&mut self, name: &str, cfg: NodeConfig, extra: &[&str]) -> NodeId {
        let mut addrs = cfg.xtr.locators.clone();
        addrs.extend(extra.iter().map(|a| a.parse::<IpAddr>().expect("address")));
        self.nodes.push(SimNode {
            name: name.into(),
            node: Node::new(cfg.clone(), self.now),
            cfg,
            addrs,
            up: true,
            map_cache: BTreeMap::new(),
            neighbours: Vec::new(),
            notifications: Vec::new(),
            local_eids: BTreeMap::new(),
            host_routes: BTreeMap::new(),
        });
        self.nodes.len() - 1
    }

    /// `node` joins multicast `group`.
    pub fn join(&mut self, group: &str, node: NodeId) {
        let g: IpAddr = group.parse().expect("group address");
        assert!(g.is_multicast(), "{g} is not a multicast address");
        self.groups.entry(g).or_default().insert(node);
    }

    /// The link between `a` and `b` (both directions).
    pub fn set_link(&mut self, a: NodeId, b: NodeId, link: Link) {
        self.links.insert((a.min(b), a.max(b)), link);
    }

    /// The link of every pair without its own.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// Off (`down`) or back on the network. A node that comes back keeps its state (a
    /// partition); see [`Sim::restart`] for a reboot.
    pub fn set_down(&mut self, node: NodeId, down: bool) {
        self.nodes[node].up = !down;
    }

    /// The node reboots now with the same config: all protocol state and its map-cache lost.
    pub fn restart(&mut self, node: NodeId) {
        let n = &mut self.nodes[node];
        n.node = Node::new(n.cfg.clone(), self.now);
        n.map_cache.clear();
        n.local_eids.clear();
        n.host_routes.clear();
        n.up = true;
    }

    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[node].node
    }

    pub fn name(&self, node: NodeId) -> &str {
        &self.nodes[node].name
    }

    /// The data-plane map-cache of `node`.
    pub fn map_cache(&self, node: NodeId) -> &BTreeMap<EidPrefix, MapCacheData> {
        &self.nodes[node].map_cache
    }

    /// The entry of `node`'s map-cache that a packet to `dst` in `iid` would use (longest
    /// match), as the data plane looks it up.
    pub fn lookup(&self, node: NodeId, iid: u32, dst: &str) -> Option<(&EidPrefix, &MapCacheData)> {
        let dst: IpAddr = dst.parse().expect("address");
        self.nodes[node]
            .map_cache
            .iter()
            .filter(|(p, _)| p.contains(iid, dst))
            .max_by_key(|(p, _)| p.len)
    }

    /// What `node` notified so far, with when.
    pub fn notifications(&self, node: NodeId) -> &[(Timestamp, Notification)] {
        &self.nodes[node].notifications
    }

    /// The local dynamic EIDs `node`'s data plane knows: (instance, EID) → (ifindex, VLAN).
    pub fn local_eids(&self, node: NodeId) -> &BTreeMap<(u32, IpAddr), (u32, Option<u16>)> {
        &self.nodes[node].local_eids
    }

    /// `node`'s host routes: (instance, EID) → SVI ifindex.
    pub fn host_routes(&self, node: NodeId) -> &BTreeMap<(u32, IpAddr), u32> {
        &self.nodes[node].host_routes
    }

    pub fn neighbour_requests(&self, node: NodeId) -> &[(u32, IpAddr)] {
        &self.nodes[node].neighbours
    }

    /// Every datagram sent so far.
    pub fn trace(&self) -> &[Sent] {
        &self.trace
    }

    /// Datagrams sent by `node` so far whose payload parses, with their destination.
    pub fn messages_from(&self, node: NodeId) -> Vec<(SocketAddr, Message)> {
        self.trace
            .iter()
            .filter(|s| s.from_node == node)
            .filter_map(|s| Some((s.to, s.message()?)))
            .collect()
    }

    /// Datagrams sent to an address no node has.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// Hands `event` to `node` now and carries out what it asks.
    pub fn inject(&mut self, node: NodeId, event: Event) {
        if !self.nodes[node].up {
            return;
        }
        let n = &mut self.nodes[node];
        let actions = n.node.handle(self.now, event);
        while let Some(x) = n.node.poll_notification() {
            n.notifications.push((self.now, x));
        }
        self.carry_out(node, actions);
    }

    /// A packet `src` → `dst` in instance `iid` reaches `itr`'s data plane: looked up in its
    /// map-cache as the XDP program does (longest match), then a miss event, the negative
    /// action, or encapsulation to the best locator (lowest priority below 255; the first of
    /// equals — weights are not modelled). Data packets are not simulated further: the outcome
    /// says where it went, and a test reports what the ETR would (e.g. an absent EID).
    pub fn send_data(&mut self, itr: NodeId, iid: u32, src: &str, dst: &str) -> DataOutcome {
        let dst_ip: IpAddr = dst.parse().expect("address");
        let data = self.lookup(itr, iid, dst).map(|(_, d)| d.clone());
        match data {
            None | Some(MapCacheData::Negative(Negative::SendMapRequest)) => {
                self.miss(itr, iid, src, dst);
                DataOutcome::Miss
            }
            Some(MapCacheData::Negative(n)) => DataOutcome::Negative(n),
            Some(MapCacheData::Positive(locs)) => {
                let best = locs
                    .iter()
                    .filter(|l| l.priority != PRIORITY_UNUSABLE)
                    .min_by_key(|l| l.priority);
                let Some(best) = best else {
                    return DataOutcome::Negative(Negative::Drop);
                };
                let etr = self.nodes.iter().position(|n| n.addrs.contains(&best.addr));
                // A dynamic host is held where the data plane knows it as local; elsewhere the
                // covering database-mapping does not hold it.
                let dynamic = |e: usize| {
                    self.nodes[e]
                        .cfg
                        .mobility
                        .maps
                        .iter()
                        .flat_map(|m| &m.prefixes)
                        .any(|p| p.eid.contains(iid, dst_ip))
                };
                let owned = etr.is_some_and(|e| {
                    if dynamic(e) {
                        return self.nodes[e].local_eids.contains_key(&(iid, dst_ip));
                    }
                    self.nodes[e]
                        .cfg
                        .xtr
                        .database_mappings
                        .iter()
                        .any(|m| m.eid.contains(iid, dst_ip))
                });
                DataOutcome::Encapsulated {
                    rloc: best.addr,
                    etr,
                    owned,
                }
            }
        }
    }

    /// Writes an entry into `node`'s data-plane map-cache directly (a stale or static entry the
    /// node's core does not know of).
    pub fn install(&mut self, node: NodeId, eid: EidPrefix, data: MapCacheData) {
        self.nodes[node].map_cache.insert(eid, data);
    }

    /// `payload` leaves `node` for `to` as if the node had sent it (a peer's or an attacker's
    /// traffic, a replay of a recorded datagram).
    pub fn send_as(&mut self, node: NodeId, from: Option<&str>, to: &str, payload: Vec<u8>) {
        let from = from.map(|f| f.parse().expect("address"));
        self.send(node, from, to.parse().expect("socket address"), payload);
    }

    /// A data-plane miss at `node` for a packet `src` → `dst` in instance `iid`.
    pub fn miss(&mut self, node: NodeId, iid: u32, src: &str, dst: &str) {
        self.inject(
            node,
            Event::Miss {
                instance_id: iid,
                src: src.parse().expect("address"),
                dst: dst.parse().expect("address"),
            },
        );
    }

    /// Runs timers and deliveries in time order up to and including `until`; the clock ends
    /// at `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        for _ in 0..MAX_STEPS {
            match self.next_step() {
                Some((t, step)) if t <= until => {
                    self.now = self.now.max(t);
                    self.step(step);
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        panic!("simulation did not settle within {MAX_STEPS} steps (a loop?)");
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until no datagram is in flight and no timer is due (timers due meanwhile run
    /// too), at most `limit` of virtual time; returns whether it got quiet.
    pub fn run_until_quiet(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        for _ in 0..MAX_STEPS {
            let timer_due = self
                .next_step()
                .is_some_and(|(t, s)| matches!(s, Next::Timer(_)) && t <= self.now);
            if self.in_flight.is_empty() && !timer_due {
                return true;
            }
            match self.next_step() {
                Some((t, step)) if t <= end => {
                    self.now = self.now.max(t);
                    self.step(step);
                }
                _ => {
                    self.now = end;
                    return self.in_flight.is_empty();
                }
            }
        }
        panic!("simulation did not settle within {MAX_STEPS} steps (a loop?)");
    }

    fn next_step(&self) -> Option<(Timestamp, Next)> {
        let delivery = self.in_flight.first().map(|d| (d.at, Next::Deliver));
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up)
            .filter_map(|(i, n)| n.node.poll_timeout().map(|t| (t, Next::Timer(i))))
            .min();
        // Deliveries first at equal times: a reply that arrives when a retransmit is due wins,
        // as it would on a real host that reads its socket before its timer fires.
        match (delivery, timer) {
            (Some(d), Some(t)) => Some(if d.0 <= t.0 { d } else { t }),
            (d, t) => d.or(t),
        }
    }

    fn step(&mut self, step: Next) {
        match step {
            Next::Timer(i) => self.inject(i, Event::Timer),
            Next::Deliver => {
                let d = self.in_flight.pop_first().expect("a delivery");
                let ev = match d.group_ifindex {
                    Some(ifindex) => Event::GroupDatagram {
                        ifindex,
                        from: d.from,
                        group: d.to.ip(),
                        bytes: d.bytes,
                    },
                    None => Event::Datagram {
                        from: d.from,
                        to: d.to,
                        bytes: d.bytes,
                    },
                };
                self.inject(d.to_node, ev);
            }
        }
    }

    fn carry_out(&mut self, node: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { from, to, payload } => self.send(node, from, to, payload),
                Action::InstallMapCache { eid, data, .. } => {
                    self.nodes[node].map_cache.insert(eid, data);
                }
                Action::RemoveMapCache { eid } => {
                    self.nodes[node].map_cache.remove(&eid);
                }
                Action::EnsureNeighbour { ifindex, addr } => {
                    self.nodes[node].neighbours.push((ifindex, addr));
                }
                Action::AddLocalDynamicEid {
                    instance_id,
                    eid,
                    ifindex,
                    vlan,
                } => {
                    self.nodes[node]
                        .local_eids
                        .insert((instance_id, eid), (ifindex, vlan));
                }
                Action::RemoveLocalDynamicEid { instance_id, eid } => {
                    self.nodes[node].local_eids.remove(&(instance_id, eid));
                }
                Action::AddHostRoute {
                    instance_id,
                    eid,
                    ifindex,
                } => {
                    self.nodes[node]
                        .host_routes
                        .insert((instance_id, eid), ifindex);
                }
                Action::RemoveHostRoute {
                    instance_id,
                    eid,
                    ifindex,
                } => {
                    let routes = &mut self.nodes[node].host_routes;
                    if routes.get(&(instance_id, eid)) == Some(&ifindex) {
                        routes.remove(&(instance_id, eid));
                    }
                }
                Action::SendMulticast {
                    group,
                    ifindex: _,
                    from,
                    payload,
                } => self.send(node, from, SocketAddr::new(group, CONTROL_PORT), payload),
            }
        }
    }

    /// The source address the kernel would use: the asked one if the node has it, else the
    /// node's first address of the destination's family.
    fn source(&self, node: NodeId, from: Option<IpAddr>, to: &IpAddr) -> IpAddr {
        let addrs = &self.nodes[node].addrs;
        from.filter(|f| f.is_ipv4() == to.is_ipv4() && addrs.contains(f))
            .or_else(|| addrs.iter().copied().find(|a| a.is_ipv4() == to.is_ipv4()))
            .unwrap_or(*to)
    }

    fn send(&mut self, node: NodeId, from: Option<IpAddr>, to: SocketAddr, payload: Vec<u8>) {
        let src = SocketAddr::new(self.source(node, from, &to.ip()), CONTROL_PORT);
        let receivers: Vec<NodeId> = if to.ip().is_multicast() {
            self.groups
                .get(&to.ip())
                .map(|g| g.iter().copied().filter(|&n| n != node).collect())
                .unwrap_or_default()
        } else {
            self.nodes
                .iter()
                .position(|n| n.addrs.contains(&to.ip()))
                .into_iter()
                .collect()
        };
        if receivers.is_empty() {
            self.unroutable += 1;
        }
        let mut delivered_to = Vec::new();
        for r in receivers {
            let link = self
                .links
                .get(&(node.min(r), node.max(r)))
                .copied()
                .unwrap_or(self.default_link);
            if !self.nodes[node].up || !self.nodes[r].up || self.lost(link.loss) {
                continue;
            }
            delivered_to.push(r);
            self.seq += 1;
            // A group datagram arrives on the receiver's mobility interface of that group (the
            // first one: the sim has one segment per group); nodes without one get a plain
            // datagram, as a socket bound to the port would.
            let group_ifindex = to.ip().is_multicast().then(|| {
                let m = &self.nodes[r].cfg.mobility;
                m.interfaces
                    .iter()
                    .find(|i| m.maps[i.map].group == to.ip())
                    .map(|i| i.ifindex)
            });
            self.in_flight.insert(InFlight {
                at: self.now + link.delay,
                seq: self.seq,
                to_node: r,
                from: src,
                to,
                bytes: payload.clone(),
                group_ifindex: group_ifindex.flatten(),
            });
        }
        self.trace.push(Sent {
            at: self.now,
            from_node: node,
            from: src,
            to,
            payload,
            delivered_to,
        });
    }

    fn lost(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let r = (self.rng.next_nonce() >> 11) as f64 / (1u64 << 53) as f64;
        r < p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    Deliver,
    Timer(NodeId),
}

/// One step of a recorded-events replay: at `at`, `input` must produce exactly `output`.
#[derive(Clone, Debug)]
pub struct ReplayStep {
    pub at: Timestamp,
    pub input: Event,
    pub output: Vec<Action>,
}

/// Replays recorded input events against one node and checks each step's exact actions (the
/// conformance-test style of holo: input events in, protocol and southbound output compared
/// whole). Panics at the first step that differs, naming it.
pub fn replay(node: &mut Node, steps: &[ReplayStep]) {
    for (i, s) in steps.iter().enumerate() {
        let got = node.handle(s.at, s.input.clone());
        assert_eq!(
            got,
            s.output,
            "replay step {i} at {} ms: input {:?}",
            s.at.as_millis(),
            s.input
        );
    }
}

impl NodeConfig {
    /// A node that is only an xTR.
    pub fn xtr(xtr: XtrConfig) -> Self {
        NodeConfig {
            xtr,
            map_server: None,
            ..NodeConfig::default()
        }
    }

    /// A node that is only a map-server / map-resolver (its xTR has nothing configured).
    pub fn map_server(ms: MapServerConfig) -> Self {
        NodeConfig {
            xtr: XtrConfig::default(),
            map_server: Some(ms),
            ..NodeConfig::default()
        }
    }
}

/// Builders for the configs the scenarios use, so that a topology is a few lines.
pub mod build {
    use std::net::IpAddr;

    use lisp_common::wire::control::auth::Algorithm;
    use lisp_common::wire::control::{Eid, XtrId};

    use crate::core::action::EidPrefix;
    use crate::core::map_cache::Locator;
    use crate::core::map_server::config::{MapServerConfig, SiteConfig, SitePrefix};
    use crate::core::xtr::{DatabaseMapping, MapServerPeer, XtrConfig};

    pub fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// `a.b.c.d/len` in instance 0.
    pub fn eid(s: &str) -> EidPrefix {
        EidPrefix::from_ip_prefix(0, s.parse().expect("prefix"))
    }

    /// A map-server with one site "site" (key `key`, HMAC-SHA-256) owning `prefixes`, each
    /// accepting more-specifics.
    pub fn map_server(key: &[u8], prefixes: &[&str]) -> MapServerConfig {
        MapServerConfig {
            sites: vec![SiteConfig {
                name: "site".into(),
                key: key.to_vec(),
                algorithm: Algorithm::HmacSha256,
                prefixes: prefixes
                    .iter()
                    .map(|p| SitePrefix {
                        eid: Eid::new(None, p.parse().expect("prefix")),
                        accept_more_specifics: true,
                    })
                    .collect(),
            }],
            ..MapServerConfig::default()
        }
    }

    /// A per-xTR nonce seed. `.into()`: the seed type may widen (a 256-bit key) without touching
    /// the scenarios; until then it is the identity.
    #[allow(clippy::useless_conversion)]
    fn seed_of<T: From<u64>>(id: &[u8; 16]) -> T {
        u64::from_be_bytes(id[..8].try_into().expect("8 bytes")).into()
    }

    /// An xTR with locator `rloc` owning `eids`, registering with every map-server of
    /// `map_servers` (key `key`, no proxy-reply) and resolving through them in order. The
    /// xTR-ID is the locator, so that xTRs of one site tell apart.
    pub fn xtr(rloc: &str, eids: &[&str], map_servers: &[&str], key: &[u8]) -> XtrConfig {
        let rloc = ip(rloc);
        let mut id = [0u8; 16];
        match rloc {
            IpAddr::V4(a) => id[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => id = a.octets(),
        }
        XtrConfig {
            locators: vec![rloc],
            database_mappings: eids
                .iter()
                .map(|e| DatabaseMapping {
                    eid: eid(e),
                    locators: vec![Locator {
                        addr: rloc,
                        priority: 1,
                        weight: 100,
                    }],
                })
                .collect(),
            map_servers: map_servers
                .iter()
                .map(|m| MapServerPeer {
                    address: ip(m),
                    key: key.to_vec(),
                    algorithm: Algorithm::HmacSha256,
                    proxy_reply: false,
                })
                .collect(),
            map_resolvers: map_servers.iter().map(|m| ip(m)).collect(),
            xtr_id: Some(XtrId {
                xtr_id: id,
                site_id: 0,
            }),
            nonce_seed: seed_of(&id),
            ..XtrConfig::default()
        }
    }
}
