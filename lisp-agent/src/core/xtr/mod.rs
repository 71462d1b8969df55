//! The xTR control plane as a deterministic state machine (RFC 9301): registration of the
//! database-mappings, resolution of map-cache misses, the ETR's answers to Map-Requests and
//! RLOC-probes, and SMR handling.
//!
//! Sans-IO: every entry point takes `now` and returns [`Action`]s; nothing here reads a clock,
//! opens a socket or draws entropy (the nonce generator is seeded by the caller). Bad input is
//! dropped and counted in [`Counters`] without touching any state.
//!
//! * `register`: Map-Register to every map-server, retransmitted with backoff until a valid
//!   Map-Notify, refreshed every `register_interval`.
//! * `resolve`: misses → ECM Map-Requests to a map-resolver → map-cache entries with TTL.
//! * `etr`: authoritative Map-Replies, RLOC-probe replies, SMRs received and sent.

pub mod counters;
mod etr;
mod register;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::Algorithm;
use lisp_common::wire::control::{Eid, IpPrefix, Locator as WireLocator, Message, Record, XtrId};

use super::action::{Action, EidPrefix, Event, MapCacheData};
use super::map_cache::Locator;
use super::nonce::NonceSource;
use super::prefix_lengths::LengthSet;
use super::time::{Timestamp, earliest};
pub use counters::{Counters, Reject};
pub use register::{RegistrationState, RegistrationStatus};
pub use resolve::CachedMapping;

/// RFC 9301 §8.2: Map-Registers are sent every 60 s.
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(60);
/// RFC 9301 §5.4 / common default: record TTL of our mappings, in minutes (one day).
pub const DEFAULT_RECORD_TTL_MIN: u32 = 1440;

/// A map-server this xTR registers with.
#[derive(Clone, PartialEq, Eq)]
pub struct MapServerPeer {
    pub address: IpAddr,
    pub key: Vec<u8>,
    pub algorithm: Algorithm,
    /// P bit: ask the map-server to answer Map-Requests for our EIDs itself.
    pub proxy_reply: bool,
}

// Keys never appear in logs.
impl std::fmt::Debug for MapServerPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapServerPeer")
            .field("address", &self.address)
            .field("key", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("proxy_reply", &self.proxy_reply)
            .finish()
    }
}

/// One of our EID-prefixes with the locators it is reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseMapping {
    pub eid: EidPrefix,
    pub locators: Vec<Locator>,
}

/// A static map-cache entry of the config (`map-cache`). The shell writes it into the data
/// plane at start; the xTR only needs to know it so that dynamic resolution leaves it alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticMapping {
    pub eid: EidPrefix,
    pub data: MapCacheData,
}

impl DatabaseMapping {
    /// Our mapping as a wire record (authoritative, every locator ours: L bit), as registered
    /// and as answered. `probed` is the locator an RLOC-probe was addressed to (p bit).
    /// `None` if the prefix cannot be encoded.
    pub(crate) fn to_record(&self, ttl_min: u32, probed: Option<IpAddr>) -> Option<Record> {
        let mut rec = Record::new(to_wire_eid(&self.eid)?, ttl_min);
        rec.locators = self
            .locators
            .iter()
            .map(|l| {
                let mut w = WireLocator::new(l.addr, l.priority, l.weight);
                w.local = true;
                w.probed = probed == Some(l.addr);
                w
            })
            .collect();
        Some(rec)
    }
}

/// Everything the xTR needs, independent of the YAML shape (tests build it directly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XtrConfig {
    /// Our own RLOCs: the ITR-RLOCs of our Map-Requests, the families we can encapsulate to.
    pub locators: Vec<IpAddr>,
    pub database_mappings: Vec<DatabaseMapping>,
    pub map_servers: Vec<MapServerPeer>,
    pub map_resolvers: Vec<IpAddr>,
    /// Remote EID space, matched in the instance of each miss (their `instance_id` is not
    /// used); an empty list accepts every miss (the data plane already filters).
    pub eid_space: Vec<EidPrefix>,
    /// Static map-cache entries: never replaced by a Map-Reply, never expired (see `resolve`).
    pub static_map_cache: Vec<StaticMapping>,
    pub register_interval: Duration,
    /// TTL (minutes) of the records we register and answer with.
    pub record_ttl_min: u32,
    /// xTR-ID/Site-ID sent in Map-Registers (I bit); `None` sends no trailer.
    pub xtr_id: Option<XtrId>,
    /// Seed of the Map-Request nonce generator.
    pub nonce_seed: u64,
    /// First Map-Register nonce; later ones count up from it. Map-servers drop a Map-Register
    /// whose nonce is not above the last one they accepted from this xTR, so across restarts
    /// the shell passes something that grows with wall-clock time.
    pub register_nonce_base: u64,
}

impl Default for XtrConfig {
    fn default() -> Self {
        XtrConfig {
            locators: Vec::new(),
            database_mappings: Vec::new(),
            map_servers: Vec::new(),
            map_resolvers: Vec::new(),
            eid_space: Vec::new(),
            static_map_cache: Vec::new(),
            register_interval: DEFAULT_REGISTER_INTERVAL,
            record_ttl_min: DEFAULT_RECORD_TTL_MIN,
            xtr_id: None,
            nonce_seed: 0,
            register_nonce_base: 1,
        }
    }
}

/// Instance-id as carried on the wire: the LCAF only outside the default instance, which is how
/// peers (and Wireshark) expect an instance-0 EID.
pub(crate) fn wire_iid(iid: u32) -> Option<u32> {
    (iid != 0).then_some(iid)
}

pub(crate) fn to_wire_eid(e: &EidPrefix) -> Option<Eid> {
    IpPrefix::new_masked(e.addr, e.len)
        .ok()
        .map(|p| Eid::new(wire_iid(e.instance_id), p))
}

pub(crate) fn from_wire_eid(e: &Eid) -> EidPrefix {
    let p = e.prefix.network();
    EidPrefix::new(e.instance_id.unwrap_or(0), p.addr(), p.len())
}

/// Does `outer` cover `inner` (same instance, not longer, same bits)?
pub(crate) fn covers(outer: &EidPrefix, inner: &EidPrefix) -> bool {
    inner.len >= outer.len && outer.contains(inner.instance_id, inner.addr)
}

/// The xTR control-plane state machine.
#[derive(Debug)]
pub struct Xtr {
    cfg: XtrConfig,
    counters: Counters,
    nonces: NonceSource,
    next_register_nonce: u64,
    registrations: Vec<register::Registration>,
    resolver_cursor: usize,
    pending: HashMap<EidPrefix, resolve::Pending>,
    pending_timers: BTreeSet<(Timestamp, EidPrefix)>,
    request_nonces: HashMap<u64, EidPrefix>,
    cache: BTreeMap<EidPrefix, resolve::CacheEntry>,
    /// `cfg.static_map_cache` by prefix; kept apart from `cache` so that nothing that expires
    /// or replaces dynamic entries can reach them.
    statics: BTreeMap<EidPrefix, MapCacheData>,
    cache_timers: BTreeSet<(Timestamp, EidPrefix)>,
    /// Prefix lengths in `cache`: lookups try only those.
    cache_lengths: LengthSet,
    smr_invoked_last: HashMap<EidPrefix, Timestamp>,
    smr_sent_last: HashMap<IpAddr, Timestamp>,
    last_prune: Timestamp,
}

impl Xtr {
    /// A new xTR; the first Map-Registers are due at `now`.
    pub fn new(cfg: XtrConfig, now: Timestamp) -> Self {
        let registrations = cfg
            .map_servers
            .iter()
            .map(|_| register::Registration::new(now))
            .collect();
        let statics = cfg
            .static_map_cache
            .iter()
            .map(|m| (m.eid, m.data.clone()))
            .collect();
        Xtr {
            nonces: NonceSource::new(cfg.nonce_seed),
            next_register_nonce: cfg.register_nonce_base.max(1),
            cfg,
            counters: Counters::default(),
            registrations,
            resolver_cursor: 0,
            pending: HashMap::new(),
            pending_timers: BTreeSet::new(),
            request_nonces: HashMap::new(),
            cache: BTreeMap::new(),
            statics,
            cache_timers: BTreeSet::new(),
            cache_lengths: LengthSet::default(),
            smr_invoked_last: HashMap::new(),
            smr_sent_last: HashMap::new(),
            last_prune: now,
        }
    }

    pub fn config(&self) -> &XtrConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// One event of any kind.
    pub fn handle_event(&mut self, now: Timestamp, ev: Event) -> Vec<Action> {
        match ev {
            Event::Datagram { from, to, bytes } => self.handle_datagram(now, from, to, &bytes),
            Event::Miss {
                instance_id,
                src,
                dst,
            } => self.handle_miss(now, instance_id, src, dst),
            Event::Timer => self.handle_timer(now),
            // The node's, not the xTR's (`core::next_hop`, `core::mobility`).
            Event::NextHopUnresolved { .. }
            | Event::DynamicEidDetected { .. }
            | Event::DynamicEidActivity { .. }
            | Event::GroupDatagram { .. } => Vec::new(),
        }
    }

    /// A control datagram received from `from` on our local address `to`.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.counters.reject(Reject::Malformed);
                return out;
            }
        };
        self.counters.count_skipped(&msg);
        match msg {
            Message::MapNotify(n) => self.on_map_notify(now, from, bytes, &n, &mut out),
            Message::MapReply(r) => self.on_map_reply(now, &r, &mut out),
            Message::MapRequest(r) => self.on_map_request(now, from.port(), to, &r, &mut out),
            Message::Ecm(e) => match *e.message {
                // Forwarded by a map-server (or sent to us as a map-resolver by mistake: as an
                // ETR we answer for our own EIDs either way).
                Message::MapRequest(ref r) => self.on_map_request(now, e.src_port, to, r, &mut out),
                _ => self.counters.reject(Reject::UnexpectedEcm),
            },
            Message::MapRegister(_) | Message::MapNotifyAck(_) => {
                self.counters.reject(Reject::UnexpectedType)
            }
        }
        out
    }

    /// Timers due at or before `now`: registrations, Map-Request retransmits, TTL expiry.
    pub fn handle_timer(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        self.register_due(now, &mut out);
        self.resolve_due(now, &mut out);
        self.expire_due(now, &mut out);
        self.prune_rate_limits(now);
        out
    }

    /// When [`Xtr::handle_timer`] next has work; `None` if nothing is scheduled.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let mut d = self.registrations.iter().map(|r| r.next_send).min();
        d = earliest(d, self.pending_timers.first().map(|(t, _)| *t));
        d = earliest(d, self.cache_timers.first().map(|(t, _)| *t));
        d
    }

    /// The rate-limit tables only matter for 3 s; drop old entries now and then so that they
    /// stay as small as the recent traffic.
    fn prune_rate_limits(&mut self, now: Timestamp) {
        const KEEP: Duration = Duration::from_secs(3);
        if now - self.last_prune < Duration::from_secs(10) {
            return;
        }
        self.last_prune = now;
        self.smr_invoked_last.retain(|_, t| now - *t < KEEP);
        self.smr_sent_last.retain(|_, t| now - *t < KEEP);
    }

    /// Our locator of the same family as `a`, if any.
    pub(crate) fn local_locator_like(&self, a: &IpAddr) -> Option<IpAddr> {
        self.cfg
            .locators
            .iter()
            .copied()
            .find(|l| l.is_ipv4() == a.is_ipv4())
    }

    /// The map-cache learnt from Map-Replies (for metrics and tests).
    pub fn cached(&self) -> impl Iterator<Item = (&EidPrefix, CachedMapping<'_>)> {
        self.cache.iter().map(|(k, v)| {
            (
                k,
                CachedMapping {
                    data: &v.data,
                    expires: v.expires,
                },
            )
        })
    }

    /// The static map-cache entries of the config.
    pub fn static_entries(&self) -> impl Iterator<Item = (&EidPrefix, &MapCacheData)> {
        self.statics.iter()
    }

    /// Is a resolution for `eid` in progress (or in hold-down)?
    pub fn is_pending(&self, eid: &EidPrefix) -> bool {
        self.pending.contains_key(eid)
    }
}
