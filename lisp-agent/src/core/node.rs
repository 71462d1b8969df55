//! The whole node as one deterministic state machine: the xTR and, where configured, the
//! map-server (later mobility and HSRP sit beside them here).
//!
//! Shape (quinn-proto's): [`Node::new`] from the core's own [`NodeConfig`], then
//! [`Node::handle`]`(now, event) -> actions` for every input — datagrams, data-plane misses and
//! next-hop events, timers — and [`Node::poll_timeout`] for when to call it with
//! [`Event::Timer`] next. The shell only turns the world into [`Event`]s and carries out the
//! [`Action`]s; every decision below is made here, testable under the simulation harness
//! (`core::sim`) with a virtual clock:
//!
//! * **Which role gets a datagram.** Map-Register and Map-Notify-Ack go to the map-server. An
//!   ECM goes to the map-server too, unless its Map-Request asks for one of the local ETR's own
//!   EIDs: then the local ETR answers it (it is authoritative for them), whether or not it has
//!   registered yet. A Map-Request with the N bit (RFC 9437 subscription) stays with
//!   the map-server, which holds subscriptions. Everything else is the xTR's.
//! * **Datagrams to ourselves stay inside.** A `Send` to one of our own addresses on the control
//!   port (the map-server forwarding an ECM to the ETR that registered from this node, the xTR
//!   registering with or asking the local map-server) is handed to the addressed role directly,
//!   as if received, instead of being looped through the kernel. The number of such hand-overs
//!   per input event is bounded ([`MAX_LOCAL_HOPS`]), so no message can bounce forever between
//!   roles. Our addresses are the configured locators plus each local address a datagram
//!   arrived on (bounded, [`MAX_LOCAL_ADDRS`]).
//! * **Replies leave from the address the peer used.** The shell reports the real local
//!   destination of each datagram (`Event::Datagram::to`, from `IP_PKTINFO`); the roles answer
//!   from it (`Action::Send::from`).
//! * **Next hops** ([`super::next_hop`]): whether to ask the kernel to resolve a next hop the
//!   data plane found unresolved.
//! * **Notifications** ([`Node::poll_notification`]): state changes an operator wants to hear
//!   of (registered with a map-server, registration expired), found here once, so that the
//!   shell only logs them.
//!
//! ## What we took from holo
//! holo's protocol crates (holo-vrrp, holo-ospf) keep `packet` (wire formats), `events` (one
//! handler per input), `southbound` (rx/tx towards the kernel and the other daemons) and
//! `northbound` (configuration, state, notifications) apart, and their conformance tests
//! (`tests/conformance/<case>/01-input-protocol.jsonl` against `01-output-protocol.jsonl`,
//! `01-output-ibus.jsonl`, ...) replay recorded input events on an instance brought to a known
//! state and compare every output channel. Here: *packet* is lisp-common's `wire`; *events* is
//! [`Event`] and this module's dispatch; *southbound* are the [`Action`]s that touch the kernel
//! (map-cache entries, neighbours) beside the protocol output (`Action::Send`); *northbound*
//! are the read-only accessors below (metrics, logs, tests). The replay is `core::sim::replay`:
//! recorded input events against the exact ordered list of actions of each step. Left out: the
//! JSON files (our inputs are wire bytes built with the codec, and the core has no serde), the
//! per-channel split of the expected output (one ordered list is stricter), and holo's
//! task-and-channel runtime (one synchronous `handle` per event keeps the core free of any).

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use lisp_common::wire::control::{Ecm, Message, msg_type};

use super::action::{Action, CONTROL_PORT, Event};
use super::map_server::MapServer;
use super::map_server::config::MapServerConfig;
use super::mobility::{Mobility, MobilityConfig, MobilityNotification};
use super::next_hop::NextHops;
use super::time::{Timestamp, earliest};
use super::xtr::{RegistrationState, Xtr, XtrConfig, from_wire_eid};

/// Everything the node needs, in the core's own types (lowered from the YAML by
/// `crate::config::lower`, or built directly by tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub xtr: XtrConfig,
    /// `None`: this node is not a map-server / map-resolver.
    pub map_server: Option<MapServerConfig>,
    /// Dynamic-EID maps and mobility interfaces (empty: no mobility).
    pub mobility: MobilityConfig,
}

/// Hand-overs between our own roles per input event. A Map-Request relayed by the map-server to
/// the local ETR, answered to a local ITR, takes 2; anything beyond 8 is a loop.
pub const MAX_LOCAL_HOPS: usize = 8;

/// Local addresses learnt from received datagrams (beyond the configured locators). A host has
/// a handful; the bound only keeps a misbehaving shell from growing the set.
pub const MAX_LOCAL_ADDRS: usize = 64;

/// What the node itself counted (the roles count their own messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// ECMs for our own EIDs handed to the local ETR instead of the map-server.
    pub ecm_to_local_etr: u64,
    /// Datagrams to one of our own addresses delivered inside the node.
    pub delivered_locally: u64,
    /// Local deliveries dropped because an input event exceeded [`MAX_LOCAL_HOPS`].
    pub local_loop_dropped: u64,
}

impl NodeCounters {
    /// Name and value of every counter, for metrics.
    pub fn iter(&self) -> [(&'static str, u64); 3] {
        [
            ("ecm_to_local_etr", self.ecm_to_local_etr),
            ("delivered_locally", self.delivered_locally),
            ("local_loop_dropped", self.local_loop_dropped),
        ]
    }
}

/// A state change worth telling an operator (holo's northbound notifications); the shell logs
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A valid Map-Notify from this map-server: our mappings are registered there.
    Registered { map_server: IpAddr },
    /// No valid Map-Notify from this map-server for three register intervals.
    RegistrationExpired {
        map_server: IpAddr,
        /// Map-Registers sent since the last valid Map-Notify.
        unanswered: usize,
    },
    /// Dynamic EIDs detected, learnt, moved away, expired (`core::mobility`).
    Mobility(MobilityNotification),
}

/// Which role a datagram is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Xtr,
    MapServer,
}

/// The node: the xTR, the optional map-server, and the decisions between them.
pub struct Node {
    xtr: Xtr,
    map_server: Option<MapServer>,
    mobility: Mobility,
    next_hops: NextHops,
    /// Local addresses seen as the destination of received datagrams.
    learnt_addrs: BTreeSet<IpAddr>,
    counters: NodeCounters,
    /// Registration state per map-server as last notified.
    registration_seen: Vec<RegistrationState>,
    notifications: VecDeque<Notification>,
}

impl Node {
    pub fn new(cfg: NodeConfig, now: Timestamp) -> Self {
        let mut xtr = Xtr::new(cfg.xtr, now);
        // The maps' own map-servers join the xTR's registration engine.
        let mobility = Mobility::new(cfg.mobility, &mut xtr, now);
        Node {
            xtr,
            mobility,
            map_server: cfg.map_server.map(MapServer::new),
            next_hops: NextHops::default(),
            learnt_addrs: BTreeSet::new(),
            counters: NodeCounters::default(),
            registration_seen: Vec::new(),
            notifications: VecDeque::new(),
        }
    }

    /// One input event; the actions to carry out, in order.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<Action> {
        if let Event::Datagram { to, .. } = &event {
            self.learn_local(to.ip());
        }
        let mut out = Vec::new();
        let mut queue = VecDeque::from([event]);
        let mut hops = 0;
        while let Some(ev) = queue.pop_front() {
            for a in self.dispatch(now, ev) {
                match a {
                    Action::Send { from, to, payload } if self.is_local_control(&to) => {
                        if hops == MAX_LOCAL_HOPS {
                            self.counters.local_loop_dropped += 1;
                            continue;
                        }
                        hops += 1;
                        self.counters.delivered_locally += 1;
                        // The source the sender meant, else our locator of the family: what the
                        // kernel would have put there.
                        let src = from
                            .filter(|f| f.is_ipv4() == to.is_ipv4())
                            .or_else(|| self.xtr.local_locator_like(&to.ip()))
                            .unwrap_or(to.ip());
                        queue.push_back(Event::Datagram {
                            from: SocketAddr::new(src, CONTROL_PORT),
                            to,
                            bytes: payload,
                        });
                    }
                    a => out.push(a),
                }
            }
        }
        self.note_registration_changes(now);
        out
    }

    /// The next notification, oldest first (call after [`Node::handle`] until `None`).
    pub fn poll_notification(&mut self) -> Option<Notification> {
        self.notifications.pop_front().or_else(|| {
            self.mobility
                .poll_notification()
                .map(Notification::Mobility)
        })
    }

    fn note_registration_changes(&mut self, now: Timestamp) {
        let st = self.xtr.registrations(now);
        if self.registration_seen.len() != st.len() {
            self.registration_seen = vec![RegistrationState::Registering; st.len()];
        }
        for (seen, s) in self.registration_seen.iter_mut().zip(&st) {
            if *seen == s.state {
                continue;
            }
            *seen = s.state;
            // Bounded by the number of map-servers per change; the shell drains after every
            // event.
            match s.state {
                RegistrationState::Registered => {
                    self.notifications.push_back(Notification::Registered {
                        map_server: s.map_server,
                    })
                }
                RegistrationState::Expired => {
                    self.notifications
                        .push_back(Notification::RegistrationExpired {
                            map_server: s.map_server,
                            unanswered: s.unanswered,
                        })
                }
                RegistrationState::Registering => {}
            }
        }
    }

    /// When [`Event::Timer`] is due next; `None` if nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        earliest(
            earliest(
                self.xtr.next_deadline(),
                self.map_server.as_ref().and_then(MapServer::next_deadline),
            ),
            self.mobility.next_deadline(),
        )
    }

    /// One event to the role it is for, without the local-delivery loop.
    fn dispatch(&mut self, now: Timestamp, ev: Event) -> Vec<Action> {
        match ev {
            Event::Datagram { from, to, bytes } => match self.role_of(&bytes) {
                Role::MapServer => match self.map_server.as_mut() {
                    Some(ms) => ms.handle_datagram(from, to, &bytes, now),
                    None => self.xtr.handle_datagram(now, from, to, &bytes),
                },
                Role::Xtr => {
                    let mut a = self.xtr.handle_datagram(now, from, to, &bytes);
                    // A map-server telling us one of our dynamic hosts registered elsewhere.
                    if Message::peek_type(&bytes) == Ok(msg_type::MAP_NOTIFY) {
                        a.extend(self.mobility.on_map_server_notify(
                            now,
                            &mut self.xtr,
                            from,
                            &bytes,
                        ));
                    }
                    a
                }
            },
            Event::Timer => {
                let mut a = self.xtr.handle_timer(now);
                if let Some(ms) = self.map_server.as_mut() {
                    a.extend(ms.on_timer(now));
                }
                a.extend(self.mobility.on_timer(now, &mut self.xtr));
                a
            }
            Event::DynamicEidDetected {
                ifindex,
                vlan,
                instance_id,
                eid,
                mac,
                kind,
            } => self.mobility.on_detected(
                now,
                &mut self.xtr,
                ifindex,
                vlan,
                instance_id,
                eid,
                mac,
                kind,
            ),
            Event::DynamicEidActivity { seen } => {
                self.mobility.on_activity(now, &seen);
                Vec::new()
            }
            Event::GroupDatagram {
                ifindex,
                from,
                group,
                bytes,
            } => self
                .mobility
                .on_group(now, &mut self.xtr, ifindex, from, group, &bytes),
            Event::NextHopUnresolved { ifindex, addr } => {
                self.next_hops.unresolved(now, ifindex, addr)
            }
            // Misses and whatever the xTR's own events are (SMR triggers, ...).
            other => self.xtr.handle_event(now, other),
        }
    }

    fn role_of(&mut self, bytes: &[u8]) -> Role {
        if self.map_server.is_none() {
            return Role::Xtr;
        }
        if Message::peek_type(bytes) == Ok(msg_type::ECM) && self.is_for_local_etr(bytes) {
            self.counters.ecm_to_local_etr += 1;
            return Role::Xtr;
        }
        // Map-Register, Map-Notify-Ack, ECM.
        if MapServer::wants(bytes) {
            Role::MapServer
        } else {
            Role::Xtr
        }
    }

    /// An ECM whose Map-Request asks (without subscribing) for an EID of our own
    /// database-mappings. Unparseable ECMs go to the map-server, which counts them.
    fn is_for_local_etr(&self, bytes: &[u8]) -> bool {
        // A map-server without EIDs of its own pays nothing for the check.
        if self.xtr.config().database_mappings.is_empty() && self.xtr.dynamic_count() == 0 {
            return false;
        }
        let Ok(ecm) = Ecm::parse(bytes) else {
            return false;
        };
        let Message::MapRequest(req) = &*ecm.message else {
            return false;
        };
        if req.notify_requested {
            return false;
        }
        let Some(want) = req.eids.first().map(from_wire_eid) else {
            return false;
        };
        if self
            .xtr
            .is_dynamic(&super::action::EidPrefix::host(want.instance_id, want.addr))
        {
            return true;
        }
        self.xtr
            .config()
            .database_mappings
            .iter()
            .any(|m| m.eid.covers(&want))
    }

    fn is_local_control(&self, to: &SocketAddr) -> bool {
        to.port() == CONTROL_PORT && self.is_local(to.ip())
    }

    /// Is `ip` one of this node's addresses?
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.xtr.config().locators.contains(&ip) || self.learnt_addrs.contains(&ip)
    }

    fn learn_local(&mut self, ip: IpAddr) {
        if ip.is_unspecified() || ip.is_multicast() || self.is_local(ip) {
            return;
        }
        if self.learnt_addrs.len() < MAX_LOCAL_ADDRS {
            self.learnt_addrs.insert(ip);
        }
    }

    // ---- northbound: read-only state for metrics, logs and tests ---------------------------

    pub fn xtr(&self) -> &Xtr {
        &self.xtr
    }

    pub fn map_server(&self) -> Option<&MapServer> {
        self.map_server.as_ref()
    }

    /// The mobility role (`show dynamic-eid`, metrics).
    pub fn mobility(&self) -> &Mobility {
        &self.mobility
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    pub fn next_hops(&self) -> &NextHops {
        &self.next_hops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sim::build::{ip, map_server, xtr};
    use crate::core::xtr::Reject;

    const KEY: &[u8] = b"k";

    fn xtr_only() -> Node {
        Node::new(
            NodeConfig {
                xtr: xtr("192.0.2.11", &["198.51.100.0/24"], &["192.0.2.1"], KEY),
                map_server: None,
                ..NodeConfig::default()
            },
            Timestamp::ZERO,
        )
    }

    #[test]
    fn next_hop_events_are_decided_by_the_node() {
        let mut n = xtr_only();
        let ev = Event::NextHopUnresolved {
            ifindex: 2,
            addr: ip("192.0.2.254"),
        };
        assert_eq!(
            n.handle(Timestamp::ZERO, ev.clone()),
            vec![Action::EnsureNeighbour {
                ifindex: 2,
                addr: ip("192.0.2.254")
            }]
        );
        assert!(n.handle(Timestamp::from_secs(1), ev).is_empty());
        assert_eq!(n.next_hops().counters().rate_limited, 1);
    }

    #[test]
    fn without_a_map_server_every_datagram_is_the_xtrs() {
        let mut n = xtr_only();
        let from: SocketAddr = "192.0.2.99:4342".parse().unwrap();
        let to: SocketAddr = "192.0.2.11:4342".parse().unwrap();
        // A Map-Register (type 3) to an xTR: refused by the xTR as an unexpected type.
        let mut reg = vec![0u8; 28];
        reg[0] = 0x30;
        let out = n.handle(
            Timestamp::ZERO,
            Event::Datagram {
                from,
                to,
                bytes: reg,
            },
        );
        assert!(out.is_empty());
        assert!(
            n.xtr().counters().rejected(Reject::UnexpectedType)
                + n.xtr().counters().rejected(Reject::Malformed)
                == 1
        );
        assert_eq!(n.counters(), &NodeCounters::default());
    }

    #[test]
    fn learnt_local_addresses_are_bounded_and_exclude_wildcards() {
        let mut n = Node::new(
            NodeConfig::map_server(map_server(KEY, &["198.51.100.0/22"])),
            Timestamp::ZERO,
        );
        let from: SocketAddr = "192.0.2.99:4342".parse().unwrap();
        for i in 0..(MAX_LOCAL_ADDRS as u32 + 10) {
            let to = SocketAddr::new(IpAddr::V4((0xc633_6400 + i).into()), CONTROL_PORT);
            n.handle(
                Timestamp::ZERO,
                Event::Datagram {
                    from,
                    to,
                    bytes: vec![0x00],
                },
            );
        }
        assert_eq!(n.learnt_addrs.len(), MAX_LOCAL_ADDRS);
        n.handle(
            Timestamp::ZERO,
            Event::Datagram {
                from,
                to: "0.0.0.0:4342".parse().unwrap(),
                bytes: vec![0x00],
            },
        );
        assert!(!n.is_local(ip("0.0.0.0")));
    }

    #[test]
    fn timer_runs_the_xtr_and_poll_timeout_moves_on() {
        let mut n = Node::new(
            NodeConfig {
                xtr: xtr("192.0.2.11", &["198.51.100.0/24"], &["192.0.2.1"], KEY),
                map_server: Some(map_server(KEY, &["198.51.100.0/22"])),
                ..NodeConfig::default()
            },
            Timestamp::ZERO,
        );
        // The xTR's first Map-Register is due at once.
        assert_eq!(n.poll_timeout(), Some(Timestamp::ZERO));
        let out = n.handle(Timestamp::ZERO, Event::Timer);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(n.poll_timeout() > Some(Timestamp::ZERO));
    }
}
