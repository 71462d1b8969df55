//! Dynamic mappings (VM mobility, `core::mobility`): host EIDs (/32, /128) registered beside the
//! configured database-mappings by the same registration engine (`register`).
//!
//! The mobility role decides which hosts are ours; the xTR registers them. A new host is
//! registered at once (one Map-Register per map-server with just its record, so detection →
//! Map-Register on the wire is one `handle` call) and then with every periodic round, where all
//! records of a map-server are batched into Map-Registers of at most [`MAX_REGISTER_LEN`]
//! bytes. A host that leaves is deregistered (record TTL 0) and dropped from the rounds. The
//! ETR answers Map-Requests for dynamic hosts with their /32 or /128.
//!
//! A dynamic-EID map may name map-servers of its own: they join the engine's list as
//! *dynamic-only* peers (they get the hosts of that map, not the database-mappings).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use lisp_common::wire::control::auth::{self, Auth};
use lisp_common::wire::control::{MapRegister, Message, Record};

use super::{MapServerPeer, Xtr, record_of, register};
use crate::core::action::{Action, CONTROL_PORT, EidPrefix};
use crate::core::map_cache::Locator;
use crate::core::time::Timestamp;

/// Largest Map-Register we send: fits a 1500-byte MTU with the IPv6 and UDP headers and room
/// for tunnels on the way.
pub const MAX_REGISTER_LEN: usize = 1400;

/// A host registered for the mobility role. Locators and map-servers are those of its map,
/// shared by all its hosts (100k hosts must not hold 100k copies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DynamicMapping {
    pub(super) locators: Arc<[Locator]>,
    /// Indices into the engine's map-servers this host registers with.
    pub(super) peers: Arc<[usize]>,
}

pub(super) type DynamicTable = BTreeMap<EidPrefix, DynamicMapping>;

impl Xtr {
    /// The index of the map-server `peer` in the registration engine, adding it as a
    /// dynamic-only peer (first registration one interval from `now`, and only if it has hosts
    /// by then) if it is not configured already.
    pub fn dynamic_map_server(&mut self, peer: MapServerPeer, now: Timestamp) -> usize {
        if let Some(i) = self
            .cfg
            .map_servers
            .iter()
            .position(|m| m.address == peer.address)
        {
            return i;
        }
        self.cfg.map_servers.push(peer);
        let mut r = register::Registration::new(now + self.cfg.register_interval);
        r.statics = false;
        self.registrations.push(r);
        self.cfg.map_servers.len() - 1
    }

    /// Registers the host `eid` with `locators` at the map-servers `peers` (indices from
    /// [`Xtr::dynamic_map_server`], or of the configured ones), at once and then periodically.
    /// Registering a host again replaces its locators and peers.
    pub fn register_dynamic(
        &mut self,
        eid: EidPrefix,
        locators: Arc<[Locator]>,
        peers: Arc<[usize]>,
    ) -> Vec<Action> {
        let m = DynamicMapping { locators, peers };
        let mut out = Vec::new();
        self.send_dynamic(&eid, &m, self.cfg.record_ttl_min, &mut out);
        self.dynamic.insert(eid, m);
        out
    }

    /// Deregisters the host `eid` (a Map-Register with record TTL 0 to its map-servers) and
    /// stops registering it. Nothing if it is not registered.
    pub fn deregister_dynamic(&mut self, eid: &EidPrefix) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(m) = self.dynamic.remove(eid) {
            self.send_dynamic(eid, &m, 0, &mut out);
        }
        out
    }

    /// Stops registering the host `eid` without a TTL-0 Map-Register (it registered elsewhere:
    /// see `core::mobility`).
    pub fn forget_dynamic(&mut self, eid: &EidPrefix) {
        self.dynamic.remove(eid);
    }

    /// The record of the dynamic host `eid` (the ETR's answer), if registered.
    pub(super) fn dynamic_record(
        &self,
        eid: &EidPrefix,
        probed: Option<std::net::IpAddr>,
    ) -> Option<Record> {
        let d = self.dynamic.get(eid)?;
        record_of(
            eid,
            &d.locators,
            &self.cfg.locators,
            self.cfg.record_ttl_min,
            probed,
        )
    }

    /// Is `eid` a registered dynamic host?
    pub fn is_dynamic(&self, eid: &EidPrefix) -> bool {
        self.dynamic.contains_key(eid)
    }

    /// Number of registered dynamic hosts.
    pub fn dynamic_count(&self) -> usize {
        self.dynamic.len()
    }

    /// One Map-Register per map-server of `m` with just its record (TTL `ttl_min`). Its nonce
    /// joins the outstanding ones of that map-server, so the Map-Notify answering it counts as
    /// an answer of the round; the round's schedule is not changed.
    fn send_dynamic(
        &mut self,
        eid: &EidPrefix,
        m: &DynamicMapping,
        ttl_min: u32,
        out: &mut Vec<Action>,
    ) {
        let Some(rec) = record_of(eid, &m.locators, &self.cfg.locators, ttl_min, None) else {
            return;
        };
        for &i in m.peers.iter() {
            if i >= self.registrations.len() {
                continue;
            }
            let nonce = self.take_register_nonce();
            let Some(payload) = self.sign_register(i, nonce, vec![rec.clone()]) else {
                continue;
            };
            self.registrations[i].note_sent(nonce, 1);
            self.counters.sent_map_register += 1;
            let ms = self.cfg.map_servers[i].address;
            out.push(Action::Send {
                from: self.local_locator_like(&ms),
                to: SocketAddr::new(ms, CONTROL_PORT),
                payload,
            });
        }
    }

    /// The next Map-Register nonce (strictly increasing, never 0).
    pub(super) fn take_register_nonce(&mut self) -> u64 {
        let nonce = self.next_register_nonce;
        self.next_register_nonce = self.next_register_nonce.wrapping_add(1).max(1);
        nonce
    }

    /// A signed Map-Register of `records` for map-server `ms`.
    pub(super) fn sign_register(
        &self,
        ms: usize,
        nonce: u64,
        records: Vec<Record>,
    ) -> Option<Vec<u8>> {
        let peer = &self.cfg.map_servers[ms];
        let reg = MapRegister {
            proxy_reply: peer.proxy_reply,
            want_map_notify: true,
            nonce,
            auth: Auth::zeroed(peer.algorithm),
            records,
            xtr: self.cfg.xtr_id,
            ..MapRegister::default()
        };
        auth::emit_signed(&Message::MapRegister(reg), &peer.key).ok()
    }

    /// Every record map-server `ms` gets in a periodic round, split into Map-Registers of at
    /// most [`MAX_REGISTER_LEN`] bytes (a record that alone is larger goes alone). Empty for a
    /// dynamic-only map-server without hosts.
    pub(super) fn register_batches(&self, ms: usize) -> Vec<Vec<Record>> {
        let ttl = self.cfg.record_ttl_min;
        let statics = self.registrations[ms].statics;
        let mut records: Vec<Record> = Vec::new();
        if statics {
            records.extend(
                self.cfg
                    .database_mappings
                    .iter()
                    .filter_map(|m| m.to_record(&self.cfg.locators, ttl, None)),
            );
        }
        records.extend(
            self.dynamic
                .iter()
                .filter(|(_, d)| d.peers.contains(&ms))
                .filter_map(|(e, d)| record_of(e, &d.locators, &self.cfg.locators, ttl, None)),
        );
        if records.is_empty() {
            // The configured map-servers keep their (empty) registration: it is what they
            // always got; a dynamic-only one has nothing to hear about.
            return if statics {
                vec![Vec::new()]
            } else {
                Vec::new()
            };
        }
        let peer = &self.cfg.map_servers[ms];
        let empty = MapRegister {
            auth: Auth::zeroed(peer.algorithm),
            xtr: self.cfg.xtr_id,
            ..MapRegister::default()
        };
        let base = Message::MapRegister(empty).buffer_len();
        let mut batches = vec![Vec::new()];
        let mut len = base;
        for r in records {
            let l = r.wire_len();
            let cur = batches.last_mut().expect("one batch");
            if !cur.is_empty() && len + l > MAX_REGISTER_LEN {
                batches.push(Vec::new());
                len = base;
            }
            len += l;
            batches.last_mut().expect("one batch").push(r);
        }
        batches
    }
}
