//! VM mobility (the NX-OS model of `shared/notes/reference-design.md`): dynamic EIDs detected
//! by the data plane on mobility interfaces, registered, shared with the site over its
//! map-notify-group, and followed when they move.
//!
//! One table of dynamic EIDs, keyed by (instance-id, address), each with its origin:
//! * **local** — detected here (`Event::DynamicEidDetected`): the data plane knows it
//!   (`AddLocalDynamicEid`), a host route points at the SVI (`AddHostRoute`), the xTR registers
//!   its /32 or /128 with the map's locators (at once, then with every periodic round — the
//!   xTR's one registration engine, `xtr::dynamic`), and a Map-Notify tells the site's other
//!   xTRs on the map-notify-group of every interface of the map (`SendMulticast`, TTL 1).
//! * **site** — learnt from a group Map-Notify of another xTR of our site (its record's
//!   locators are this map's locators: a multihomed site). It is handled like a local one
//!   (entry, route, and registered too), but not announced again.
//! * **away** — was ours, now at another site: told by the map-server (a Map-Notify for our
//!   host with locators none of which are ours, across-subnet mode) or by the other site's
//!   group Map-Notify (extended-subnet mode: the group crosses the LAN extension). The entry and
//!   route are removed, the host is no longer registered (no TTL-0 deregistration: it would
//!   race the new site's registration, and a map-server that keeps one registration per
//!   prefix would withdraw the new site's; ours ends with the map-server's registration
//!   timeout or is superseded at once by the newer site), and an away map-cache entry
//!   (/32 or /128 → the new RLOCs) lets the data plane re-encapsulate traffic that still
//!   arrives; the ETR's SMRs to the senders are the xTR's (`Event::DataForAbsentEid`).
//!
//! Inactivity: the data plane reports the local EIDs it saw traffic from
//! (`Event::DynamicEidActivity`); an EID silent for the map's inactivity time is deregistered
//! and its entry and route removed. Away entries end with their record TTL.
//!
//! Bounded: the table holds at most [`MobilityConfig::max_eids`] entries (refusals counted);
//! every event does work proportional to its own size (one EID, one notify's records, one
//! activity report), timers at most [`EXPIRE_BATCH`] expiries per call. Moving back is the same
//! path: a detection of an away EID replaces the away entry.
//!
//! Group Map-Notify (our choice where the reference is silent): type 4, nonce from a counter,
//! one record (the host, the map's locators for its prefix, TTL = our record TTL), signed with
//! the map's first map-server key (its own, else the first global one), with our xTR-ID
//! trailer. Received ones must parse, carry an xTR-ID, verify with one of the keys of the map
//! (constant time), arrive on an interface of the map with its group, come from one of the
//! record's locators, and have a nonce above the last one accepted from that xTR-ID (our
//! nonces start from the shell's wall-clock register nonce base, so they grow across
//! restarts); else they are refused and counted. Records outside the map's prefixes
//! are refused one by one.

pub mod config;
pub mod counters;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Algorithm, Auth};
use lisp_common::wire::control::{Locator as WireLocator, MapNotify, Message, Record, XtrId};

pub use config::{
    DynamicEidMapConfig, DynamicPrefix, MobilityConfig, MobilityInterface, MobilityMode, Trunk,
};
pub use counters::{MobilityCounters, Refused};

use super::action::{Action, DetectionKind, EidPrefix, MapCacheData};
use super::map_cache::Locator;
use super::time::Timestamp;
use super::xtr::{Xtr, from_wire_eid, to_wire_eid};

/// Expiries handled per timer call; more wait for the next call (due at once).
pub const EXPIRE_BATCH: usize = 1024;
/// Records of one group Map-Notify looked at (ours carry one).
pub const MAX_GROUP_RECORDS: usize = 16;
/// Senders (xTR-IDs) whose last group nonce is remembered: the xTRs of the sites sharing a
/// group, only ever verified ones.
pub const MAX_GROUP_SENDERS: usize = 256;
/// Longest an away entry is kept, whatever the record TTL says.
pub const MAX_AWAY: Duration = Duration::from_secs(24 * 3600);

/// Where a dynamic EID is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Detected here.
    Local,
    /// Learnt from another xTR of our site.
    Site,
    /// Was ours, now at another site.
    Away,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Site => "site",
            Origin::Away => "away",
        }
    }
}

/// A state change an operator wants to hear of; the shell logs them (the contract's lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MobilityNotification {
    /// `dynamic-eid {eid} detected on {interface} ({map}, {kind})`
    Detected {
        eid: IpAddr,
        interface: String,
        map: String,
        kind: DetectionKind,
    },
    /// `dynamic-eid {eid} learned from site {from}`
    LearnedFromSite { eid: IpAddr, from: IpAddr },
    /// `dynamic-eid {eid} moved away to {rlocs}`
    MovedAway { eid: IpAddr, rlocs: Vec<IpAddr> },
    /// `dynamic-eid {eid} expired (inactive {secs}s), deregistered`
    Expired { eid: IpAddr, inactive_secs: u64 },
}

/// The log lines operators and the end-to-end tests read (the contract's wording).
impl std::fmt::Display for MobilityNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MobilityNotification::Detected {
                eid,
                interface,
                map,
                kind,
            } => write!(
                f,
                "dynamic-eid {eid} detected on {interface} ({map}, {})",
                kind.as_str()
            ),
            MobilityNotification::LearnedFromSite { eid, from } => {
                write!(f, "dynamic-eid {eid} learned from site {from}")
            }
            MobilityNotification::MovedAway { eid, rlocs } => {
                let r: Vec<String> = rlocs.iter().map(ToString::to_string).collect();
                write!(f, "dynamic-eid {eid} moved away to {}", r.join(","))
            }
            MobilityNotification::Expired { eid, inactive_secs } => write!(
                f,
                "dynamic-eid {eid} expired (inactive {inactive_secs}s), deregistered"
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    map: usize,
    origin: Origin,
    /// The mobility interface (local and site entries).
    iface: Option<usize>,
    since: Timestamp,
    last_seen: Timestamp,
    /// Away: the new site's locators, and when the entry ends.
    rlocs: Vec<Locator>,
    away_until: Timestamp,
    mac: Option<[u8; 6]>,
}

/// One dynamic EID as `show dynamic-eid` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicEidView<'a> {
    pub map: &'a str,
    pub instance_id: u32,
    pub eid: IpAddr,
    /// The SVI (local and site entries).
    pub interface: Option<&'a str>,
    pub since: Timestamp,
    pub last_seen: Timestamp,
    pub origin: Origin,
    /// Away: where it went.
    pub rlocs: &'a [Locator],
    pub mac: Option<[u8; 6]>,
}

/// The mobility role.
pub struct Mobility {
    cfg: MobilityConfig,
    /// Per map: the xTR registration-engine indices of its map-servers.
    peers: Vec<Arc<[usize]>>,
    /// Per map and prefix: the locators its hosts register with (shared with the xTR).
    locator_sets: Vec<Vec<Arc<[Locator]>>>,
    /// Per map: the key that signs our group notifies, and every key a received one may use.
    sign: Vec<Option<(Vec<u8>, Algorithm)>>,
    verify: Vec<Vec<Vec<u8>>>,
    locators: Vec<IpAddr>,
    xtr_id: Option<XtrId>,
    record_ttl_min: u32,
    eids: HashMap<(u32, IpAddr), Entry>,
    /// (due, key): inactivity checks and away ends; an entry refreshed since is re-queued when
    /// its check comes up (activity costs no queue work).
    due: BTreeSet<(Timestamp, u32, IpAddr)>,
    next_nonce: u64,
    /// Last group nonce accepted per sender xTR-ID (replay protection).
    group_last: HashMap<[u8; 16], u64>,
    counters: MobilityCounters,
    notifications: VecDeque<MobilityNotification>,
}

impl Mobility {
    /// The role for `cfg`; the maps' own map-servers join the xTR's registration engine.
    pub fn new(cfg: MobilityConfig, xtr: &mut Xtr, now: Timestamp) -> Self {
        let global = xtr.config().map_servers.clone();
        let mut peers = Vec::new();
        let mut sign = Vec::new();
        let mut verify = Vec::new();
        for m in &cfg.maps {
            let list = if m.map_servers.is_empty() {
                global.clone()
            } else {
                m.map_servers.clone()
            };
            sign.push(list.first().map(|p| (p.key.clone(), p.algorithm)));
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for p in &list {
                if !keys.contains(&p.key) {
                    keys.push(p.key.clone());
                }
            }
            verify.push(keys);
            peers.push(
                list.into_iter()
                    .map(|p| xtr.dynamic_map_server(p, now))
                    .collect(),
            );
        }
        let locator_sets = cfg
            .maps
            .iter()
            .map(|m| {
                m.prefixes
                    .iter()
                    .map(|p| Arc::from(p.locators.as_slice()))
                    .collect()
            })
            .collect();
        Mobility {
            locators: xtr.config().locators.clone(),
            xtr_id: xtr.config().xtr_id,
            record_ttl_min: xtr.config().record_ttl_min,
            cfg,
            peers,
            locator_sets,
            sign,
            verify,
            eids: HashMap::new(),
            due: BTreeSet::new(),
            // Grows with wall-clock time (the shell's register nonce base), so that receivers
            // can refuse anything not above the last nonce they took from us, across restarts.
            next_nonce: xtr.config().register_nonce_base.max(1),
            group_last: HashMap::new(),
            counters: MobilityCounters::default(),
            notifications: VecDeque::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.cfg.interfaces.is_empty()
    }

    // ---- events ----------------------------------------------------------------------------

    /// The data plane saw `eid` on a mobility interface.
    #[allow(clippy::too_many_arguments)]
    pub fn on_detected(
        &mut self,
        now: Timestamp,
        xtr: &mut Xtr,
        ifindex: u32,
        vlan: Option<u16>,
        instance_id: u32,
        eid: IpAddr,
        mac: [u8; 6],
        kind: DetectionKind,
    ) -> Vec<Action> {
        let Some(iface) = self.cfg.interface_of(ifindex, vlan) else {
            self.counters.refuse(Refused::UnknownInterface);
            return Vec::new();
        };
        let map = self.cfg.interfaces[iface].map;
        let m = &self.cfg.maps[map];
        if m.instance_id != instance_id || self.prefix_of(map, eid).is_none() {
            self.counters.refuse(Refused::OutsidePrefix);
            return Vec::new();
        }
        let key = (instance_id, eid);
        let svi = self.cfg.interfaces[iface].ifindex;
        let mut out = Vec::new();
        let full = self.eids.len() >= self.cfg.max_eids;
        match self.eids.get_mut(&key) {
            Some(e) if e.origin == Origin::Local && e.iface == Some(iface) => {
                // The data plane forgot it (or raced our AddLocalDynamicEid): tell it again.
                e.last_seen = now;
                e.mac = Some(mac);
                self.counters.redetected += 1;
                out.push(Action::AddLocalDynamicEid {
                    instance_id,
                    eid,
                    ifindex,
                    vlan,
                });
                return out;
            }
            Some(e) => {
                // Known, but not local on this interface: take it over.
                let old = e.clone();
                self.leave(&key, &old, &mut out);
            }
            None if full => {
                self.counters.refuse(Refused::TableFull);
                return out;
            }
            None => {}
        }
        out.push(Action::AddLocalDynamicEid {
            instance_id,
            eid,
            ifindex,
            vlan,
        });
        out.push(Action::AddHostRoute {
            instance_id,
            eid,
            ifindex: svi,
        });
        out.extend(self.register(xtr, map, key));
        out.extend(self.announce(map, key));
        self.insert(
            now,
            key,
            Entry {
                map,
                origin: Origin::Local,
                iface: Some(iface),
                since: now,
                last_seen: now,
                rlocs: Vec::new(),
                away_until: Timestamp::NEVER,
                mac: Some(mac),
            },
        );
        self.counters.detected += 1;
        self.notifications
            .push_back(MobilityNotification::Detected {
                eid,
                interface: self.cfg.interfaces[iface].name.clone(),
                map: self.cfg.maps[map].name.clone(),
                kind,
            });
        out
    }

    /// Local (and site) EIDs the data plane saw traffic from.
    pub fn on_activity(&mut self, now: Timestamp, seen: &[(u32, IpAddr)]) {
        for key in seen {
            match self.eids.get_mut(key) {
                Some(e) if e.origin != Origin::Away => e.last_seen = now,
                _ => self.counters.activity_unknown += 1,
            }
        }
    }

    /// A datagram for a map-notify-group.
    pub fn on_group(
        &mut self,
        now: Timestamp,
        xtr: &mut Xtr,
        ifindex: u32,
        from: SocketAddr,
        group: IpAddr,
        bytes: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(iface) = self
            .cfg
            .interfaces
            .iter()
            .position(|i| i.ifindex == ifindex && self.cfg.maps[i.map].group == group)
        else {
            self.counters.refuse(Refused::OutsideSite);
            return out;
        };
        let map = self.cfg.interfaces[iface].map;
        let n = match Message::parse(bytes) {
            Ok(Message::MapNotify(n)) if n.xtr.is_some() => n,
            _ => {
                self.counters.refuse(Refused::Malformed);
                return out;
            }
        };
        if self.locators.contains(&from.ip()) {
            self.counters.group_notify_own += 1;
            return out;
        }
        if !self.verify[map]
            .iter()
            .any(|k| auth::verify(bytes, k).is_ok())
        {
            self.counters.refuse(Refused::Unauthenticated);
            return out;
        }
        if !n
            .records
            .iter()
            .all(|r| r.locators.iter().any(|l| l.address == from.ip()))
        {
            self.counters.refuse(Refused::OutsideSite);
            return out;
        }
        // Authenticated, but possibly recorded earlier and sent again (it would move a host
        // back to where it was): the nonce must grow per sender.
        let sender = n.xtr.map(|x| x.xtr_id).unwrap_or_default();
        match self.group_last.get(&sender) {
            Some(&last) if n.nonce <= last => {
                self.counters.refuse(Refused::Replayed);
                return out;
            }
            None if self.group_last.len() >= MAX_GROUP_SENDERS => {
                // Forget the sender we heard the lowest nonce from (the longest silent).
                if let Some(k) = self.group_last.iter().min_by_key(|e| *e.1).map(|e| *e.0) {
                    self.group_last.remove(&k);
                }
            }
            _ => {}
        }
        self.group_last.insert(sender, n.nonce);
        self.counters.group_notify_received += 1;
        for r in n.records.iter().take(MAX_GROUP_RECORDS) {
            let eid = from_wire_eid(&r.eid);
            let iid = self.cfg.maps[map].instance_id;
            let host = eid.len == EidPrefix::host(0, eid.addr).len;
            let Some(p) = (host && eid.instance_id == iid)
                .then(|| self.prefix_of(map, eid.addr))
                .flatten()
            else {
                self.counters.refuse(Refused::OutsidePrefix);
                continue;
            };
            let key = (iid, eid.addr);
            let rlocs = wire_locators(&r.locators);
            if self.is_our_site(map, p, &rlocs) {
                self.learn_from_site(now, xtr, map, iface, key, from.ip(), &mut out);
            } else {
                self.moved_to(now, xtr, key, rlocs, r.ttl, &mut out);
            }
        }
        out
    }

    /// A Map-Notify the xTR received from a map-server (`from`): a record for one of our local
    /// or site hosts whose locators are none of ours means the host registered elsewhere.
    pub fn on_map_server_notify(
        &mut self,
        now: Timestamp,
        xtr: &mut Xtr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.eids.is_empty() {
            return out;
        }
        let Ok(Message::MapNotify(n)) = Message::parse(bytes) else {
            return out;
        };
        let mut verified: Option<bool> = None;
        for r in &n.records {
            let eid = from_wire_eid(&r.eid);
            let key = (eid.instance_id, eid.addr);
            if eid.len != EidPrefix::host(0, eid.addr).len {
                continue;
            }
            let Some(e) = self.eids.get(&key) else {
                continue;
            };
            if e.origin == Origin::Away {
                continue;
            }
            let map = e.map;
            let rlocs = wire_locators(&r.locators);
            let Some(p) = self.prefix_of(map, eid.addr) else {
                continue;
            };
            if rlocs.is_empty() || self.is_our_site(map, p, &rlocs) {
                continue;
            }
            // Only a map-server of this map may move our host (and the xTR already checked
            // nothing: a notify for another registration round reaches us too).
            let ok = *verified.get_or_insert_with(|| {
                self.peers[map].iter().any(|&i| {
                    xtr.config().map_servers.get(i).is_some_and(|p| {
                        p.address == from.ip() && auth::verify(bytes, &p.key).is_ok()
                    })
                })
            });
            if !ok {
                return out;
            }
            self.moved_to(now, xtr, key, rlocs, r.ttl, &mut out);
        }
        out
    }

    /// Inactivity checks and away ends that are due.
    pub fn on_timer(&mut self, now: Timestamp, xtr: &mut Xtr) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..EXPIRE_BATCH {
            let Some(&(t, iid, addr)) = self.due.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.due.pop_first();
            let key = (iid, addr);
            let Some(e) = self.eids.get(&key) else {
                continue;
            };
            let d = self.deadline(e);
            if d > now {
                self.due.insert((d, iid, addr));
                continue;
            }
            let e = self.eids.remove(&key).expect("present");
            match e.origin {
                Origin::Away => {
                    self.counters.away_expired += 1;
                    out.push(Action::RemoveMapCache {
                        eid: EidPrefix::host(iid, addr),
                    });
                }
                Origin::Local | Origin::Site => {
                    self.remove_local(&key, &e, &mut out);
                    out.extend(xtr.deregister_dynamic(&EidPrefix::host(iid, addr)));
                    self.counters.expired += 1;
                    self.notifications.push_back(MobilityNotification::Expired {
                        eid: addr,
                        inactive_secs: (now - e.last_seen).as_secs(),
                    });
                }
            }
        }
        out
    }

    /// When [`Mobility::on_timer`] has work next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.due.first().map(|d| d.0)
    }

    // ---- northbound ------------------------------------------------------------------------

    pub fn counters(&self) -> &MobilityCounters {
        &self.counters
    }

    pub fn config(&self) -> &MobilityConfig {
        &self.cfg
    }

    /// The next notification, oldest first.
    pub fn poll_notification(&mut self) -> Option<MobilityNotification> {
        self.notifications.pop_front()
    }

    /// Every dynamic EID (unordered).
    pub fn dynamic_eids(&self) -> impl Iterator<Item = DynamicEidView<'_>> {
        self.eids.iter().map(|(&(iid, eid), e)| DynamicEidView {
            map: &self.cfg.maps[e.map].name,
            instance_id: iid,
            eid,
            interface: e.iface.map(|i| self.cfg.interfaces[i].name.as_str()),
            since: e.since,
            last_seen: e.last_seen,
            origin: e.origin,
            rlocs: &e.rlocs,
            mac: e.mac,
        })
    }

    /// One dynamic EID.
    pub fn dynamic_eid(&self, instance_id: u32, eid: IpAddr) -> Option<DynamicEidView<'_>> {
        self.dynamic_eids()
            .find(|v| v.instance_id == instance_id && v.eid == eid)
    }

    /// `lisp_dynamic_eids{origin}`: local, site, away.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        let mut c = [0usize; 3];
        for e in self.eids.values() {
            c[e.origin as usize] += 1;
        }
        [("local", c[0]), ("site", c[1]), ("away", c[2])]
    }

    /// Size of the bounded tables (entries, queued checks).
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.eids.len(), self.due.len())
    }

    // ---- internals -------------------------------------------------------------------------

    /// The map's prefix holding `addr`.
    fn prefix_of(&self, map: usize, addr: IpAddr) -> Option<usize> {
        let iid = self.cfg.maps[map].instance_id;
        self.cfg.maps[map]
            .prefixes
            .iter()
            .position(|p| p.eid.contains(iid, addr))
    }

    /// Is a record with `rlocs` from our site: does it name one of this map's locators?
    fn is_our_site(&self, map: usize, prefix: usize, rlocs: &[Locator]) -> bool {
        let ours = &self.cfg.maps[map].prefixes[prefix].locators;
        rlocs.iter().any(|r| ours.iter().any(|o| o.addr == r.addr))
    }

    fn deadline(&self, e: &Entry) -> Timestamp {
        match e.origin {
            Origin::Away => e.away_until,
            _ => e.last_seen.saturating_add(self.cfg.maps[e.map].inactivity),
        }
    }

    fn insert(&mut self, _now: Timestamp, key: (u32, IpAddr), e: Entry) {
        let d = self.deadline(&e);
        self.due.insert((d, key.0, key.1));
        // Whatever was queued for an older state of this key stays queued and is re-checked
        // against the entry when it comes up; the queue holds at most a few per key, and
        // `compact` keeps it bounded for flapping hosts.
        self.eids.insert(key, e);
        self.compact();
    }

    /// Keeps the check queue within twice the table (flapping hosts queue a check per move).
    fn compact(&mut self) {
        if self.due.len() <= 2 * self.eids.len() + EXPIRE_BATCH {
            return;
        }
        self.due = self
            .eids
            .iter()
            .map(|(k, e)| (self.deadline(e), k.0, k.1))
            .collect();
    }

    /// Registers `key` with the map's locators for its prefix, at its map-servers.
    fn register(&mut self, xtr: &mut Xtr, map: usize, key: (u32, IpAddr)) -> Vec<Action> {
        let Some(p) = self.prefix_of(map, key.1) else {
            return Vec::new();
        };
        xtr.register_dynamic(
            EidPrefix::host(key.0, key.1),
            self.locator_sets[map][p].clone(),
            self.peers[map].clone(),
        )
    }

    /// The group Map-Notify for `key` on every interface of `map`.
    fn announce(&mut self, map: usize, key: (u32, IpAddr)) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(p) = self.prefix_of(map, key.1) else {
            return out;
        };
        let Some((sign_key, alg)) = self.sign[map].clone() else {
            return out;
        };
        let Some(eid) = to_wire_eid(&EidPrefix::host(key.0, key.1)) else {
            return out;
        };
        let mut rec = Record::new(eid, self.record_ttl_min);
        rec.locators = self.cfg.maps[map].prefixes[p]
            .locators
            .iter()
            .map(|l| {
                let mut w = WireLocator::new(l.addr, l.priority, l.weight);
                w.local = true;
                w
            })
            .collect();
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1).max(1);
        let msg = Message::MapNotify(MapNotify {
            nonce,
            auth: Auth::zeroed(alg),
            records: vec![rec],
            xtr: self.xtr_id,
            ..MapNotify::default()
        });
        let Ok(payload) = auth::emit_signed(&msg, &sign_key) else {
            return out;
        };
        let group = self.cfg.maps[map].group;
        let from = self
            .locators
            .iter()
            .copied()
            .find(|l| l.is_ipv4() == group.is_ipv4());
        let mut done: Vec<u32> = Vec::new();
        for i in self.cfg.interfaces.iter().filter(|i| i.map == map) {
            if done.contains(&i.ifindex) {
                continue;
            }
            done.push(i.ifindex);
            self.counters.group_notify_sent += 1;
            out.push(Action::SendMulticast {
                group,
                ifindex: i.ifindex,
                from,
                payload: payload.clone(),
            });
        }
        out
    }

    /// Another xTR of our site announced `key`.
    #[allow(clippy::too_many_arguments)]
    fn learn_from_site(
        &mut self,
        now: Timestamp,
        xtr: &mut Xtr,
        map: usize,
        iface: usize,
        key: (u32, IpAddr),
        from: IpAddr,
        out: &mut Vec<Action>,
    ) {
        let full = self.eids.len() >= self.cfg.max_eids;
        match self.eids.get_mut(&key) {
            // Already ours (detected here too, or learnt before): it is alive.
            Some(e) if e.origin != Origin::Away => {
                e.last_seen = now;
                return;
            }
            Some(e) => {
                let old = e.clone();
                self.leave(&key, &old, out);
            }
            None if full => {
                self.counters.refuse(Refused::TableFull);
                return;
            }
            None => {}
        }
        let i = &self.cfg.interfaces[iface];
        let (ifindex, vlan) = match &i.trunk {
            Some(t) => (t.parent_ifindex, Some(t.vlan_id)),
            None => (i.ifindex, None),
        };
        out.push(Action::AddLocalDynamicEid {
            instance_id: key.0,
            eid: key.1,
            ifindex,
            vlan,
        });
        out.push(Action::AddHostRoute {
            instance_id: key.0,
            eid: key.1,
            ifindex: i.ifindex,
        });
        out.extend(self.register(xtr, map, key));
        self.insert(
            now,
            key,
            Entry {
                map,
                origin: Origin::Site,
                iface: Some(iface),
                since: now,
                last_seen: now,
                rlocs: Vec::new(),
                away_until: Timestamp::NEVER,
                mac: None,
            },
        );
        self.counters.learned_from_site += 1;
        self.notifications
            .push_back(MobilityNotification::LearnedFromSite { eid: key.1, from });
    }

    /// `key` is now at the site of `rlocs`: a local or site host moves away, an away entry
    /// follows it; anything else is not ours to track.
    fn moved_to(
        &mut self,
        now: Timestamp,
        xtr: &mut Xtr,
        key: (u32, IpAddr),
        rlocs: Vec<Locator>,
        ttl_min: u32,
        out: &mut Vec<Action>,
    ) {
        let Some(e) = self.eids.get(&key).cloned() else {
            return;
        };
        if rlocs.is_empty() {
            return;
        }
        let ttl = Duration::from_secs(u64::from(ttl_min) * 60).min(MAX_AWAY);
        let host = EidPrefix::host(key.0, key.1);
        if e.origin == Origin::Away && e.rlocs == rlocs {
            return;
        }
        if e.origin != Origin::Away {
            self.remove_local(&key, &e, out);
            xtr.forget_dynamic(&host);
            self.counters.moved_away += 1;
            self.notifications
                .push_back(MobilityNotification::MovedAway {
                    eid: key.1,
                    rlocs: rlocs.iter().map(|l| l.addr).collect(),
                });
        }
        out.push(Action::InstallMapCache {
            eid: host,
            data: MapCacheData::Positive(rlocs.clone()),
            ttl,
        });
        self.insert(
            now,
            key,
            Entry {
                map: e.map,
                origin: Origin::Away,
                iface: None,
                since: if e.origin == Origin::Away {
                    e.since
                } else {
                    now
                },
                last_seen: e.last_seen,
                rlocs,
                away_until: now + ttl,
                mac: e.mac,
            },
        );
    }

    /// Undo what an entry put into the data plane and the kernel before it changes state.
    fn leave(&mut self, key: &(u32, IpAddr), e: &Entry, out: &mut Vec<Action>) {
        match e.origin {
            Origin::Away => out.push(Action::RemoveMapCache {
                eid: EidPrefix::host(key.0, key.1),
            }),
            Origin::Local | Origin::Site => {
                if let Some(i) = e.iface {
                    out.push(Action::RemoveHostRoute {
                        instance_id: key.0,
                        eid: key.1,
                        ifindex: self.cfg.interfaces[i].ifindex,
                    });
                }
            }
        }
    }

    /// The entry and route of a local or site EID go.
    fn remove_local(&mut self, key: &(u32, IpAddr), e: &Entry, out: &mut Vec<Action>) {
        out.push(Action::RemoveLocalDynamicEid {
            instance_id: key.0,
            eid: key.1,
        });
        self.leave(key, e, out);
    }
}

fn wire_locators(l: &[WireLocator]) -> Vec<Locator> {
    l.iter()
        .map(|w| Locator {
            addr: w.address,
            priority: w.priority,
            weight: w.weight,
        })
        .collect()
}
