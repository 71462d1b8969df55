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
//! * `notify`: records of unsolicited Map-Notifies and RFC 9437 publications → map-cache.

pub mod counters;
mod dynamic;
mod etr;
mod notify;
mod register;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::Algorithm;
use lisp_common::wire::control::{Eid, IpPrefix, Locator as WireLocator, Message, Record, XtrId};

use super::action::{Action, EidPrefix, Event, MapCacheData};
use super::map_cache::Locator;
use super::nonce::{NonceSeed, NonceSource};
use super::prefix_lengths::LengthSet;
use super::time::{Timestamp, earliest};
pub use counters::{Counters, Reject};
pub use dynamic::MAX_REGISTER_LEN;
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
    /// Our mapping as a wire record (authoritative), as registered and as answered. `ours` are
    /// this router's own locators: only they get the L bit (a multihomed site's mapping also
    /// lists the other xTRs' RLOCs). `probed` is the locator an RLOC-probe was addressed to (p
    /// bit). `None` if the prefix cannot be encoded.
    pub(crate) fn to_record(
        &self,
        ours: &[IpAddr],
        ttl_min: u32,
        probed: Option<IpAddr>,
    ) -> Option<Record> {
        record_of(&self.eid, &self.locators, ours, ttl_min, probed)
    }
}

/// One of our mappings as a wire record (see [`DatabaseMapping::to_record`]).
pub(crate) fn record_of(
    eid: &EidPrefix,
    locators: &[Locator],
    ours: &[IpAddr],
    ttl_min: u32,
    probed: Option<IpAddr>,
) -> Option<Record> {
    let mut rec = Record::new(to_wire_eid(eid)?, ttl_min);
    rec.locators = locators
        .iter()
        .map(|l| {
            let mut w = WireLocator::new(l.addr, l.priority, l.weight);
            w.local = ours.contains(&l.addr);
            w.probed = probed == Some(l.addr);
            w
        })
        .collect();
    Some(rec)
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
    /// Key of the nonce generator (Map-Request and SMR nonces): 32 random bytes from the shell.
    pub nonce_seed: NonceSeed,
    /// First Map-Register nonce; later ones count up from it. Map-servers drop a Map-Register
    /// whose nonce is not above the last one they accepted from this xTR, so across restarts
    /// the shell passes something that grows with wall-clock time.
    pub register_nonce_base: u64,
    /// RFC 9437 pubsub: Map-Requests to the map-resolvers set the N bit and carry our xTR-ID,
    /// so the map-server publishes later changes of the mapping (Map-Notify) without traffic.
    pub subscribe: bool,
    pub limits: XtrLimits,
}

/// Bounds on the tables that remote parties (a scan of the EID space, a flood of SMRs or of
/// data for absent EIDs) can grow. Beyond them new entries are refused and counted, so memory
/// stays flat whatever arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XtrLimits {
    /// Resolutions in progress or held down; each holds at most [`resolve::MAX_REQUESTS`]
    /// request nonces.
    pub max_pending: usize,
    /// Learnt map-cache entries (Map-Replies and Map-Notifies).
    pub max_cache: usize,
    /// Entries of each SMR rate-limit table (SMRs sent per RLOC, SMR-invoked requests per
    /// prefix).
    pub max_rate_entries: usize,
}

impl Default for XtrLimits {
    fn default() -> Self {
        XtrLimits {
            // ~4k Map-Requests per second at most while a scan lasts: what a map-resolver takes.
            max_pending: 4096,
            // Above the data plane's prefix table (64k), well below its host table (1M).
            max_cache: 100_000,
            max_rate_entries: 4096,
        }
    }
}

/// How full each bounded table is (metrics, and tests asserting that memory stays flat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    pub pending: usize,
    pub pending_timers: usize,
    pub request_nonces: usize,
    pub cache: usize,
    pub cache_timers: usize,
    pub smr_invoked_last: usize,
    pub smr_sent_last: usize,
}

impl TableSizes {
    /// Every table with a stable snake_case name (a metrics label).
    pub fn named(&self) -> [(&'static str, usize); 7] {
        [
            ("pending", self.pending),
            ("pending_timers", self.pending_timers),
            ("request_nonces", self.request_nonces),
            ("cache", self.cache),
            ("cache_timers", self.cache_timers),
            ("smr_invoked_last", self.smr_invoked_last),
            ("smr_sent_last", self.smr_sent_last),
        ]
    }
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
            nonce_seed: NonceSeed::default(),
            register_nonce_base: 1,
            subscribe: false,
            limits: XtrLimits::default(),
        }
    }
}

/// Both SMR rate limits (lisp-facts, OOR): at most one SMR per 3 s to one RLOC, one
/// SMR-invoked Map-Request per 3 s per cached EID-prefix.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Records `key` as sent at `now` in a rate-limit table bounded to `max` entries: `Ok(true)` if
/// the limit lets it through, `Ok(false)` if it came within [`RATE_WINDOW`] of the last one, and
/// `Err` if the table is full of entries younger than the window (then nothing is recorded).
fn rate_limit<K: std::hash::Hash + Eq + Copy>(
    table: &mut HashMap<K, Timestamp>,
    key: K,
    now: Timestamp,
    max: usize,
) -> Result<bool, Reject> {
    if let Some(&t) = table.get(&key)
        && now - t < RATE_WINDOW
    {
        return Ok(false);
    }
    if !table.contains_key(&key) && table.len() >= max {
        // Full: drop what no longer limits anything before refusing.
        table.retain(|_, t| now - *t < RATE_WINDOW);
        if table.len() >= max {
            return Err(Reject::RateTableFull);
        }
    }
    table.insert(key, now);
    Ok(true)
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
    /// How many of `pending` are held down (the ones a full table may drop).
    held_down: usize,
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
    /// (map-server, nonce) of the last unsolicited Map-Notifies applied, oldest first.
    notify_seen: VecDeque<(IpAddr, u64)>,
    last_prune: Timestamp,
    /// Hosts of the mobility role, registered beside the database-mappings (`dynamic`).
    dynamic: dynamic::DynamicTable,
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
            held_down: 0,
            pending_timers: BTreeSet::new(),
            request_nonces: HashMap::new(),
            cache: BTreeMap::new(),
            statics,
            cache_timers: BTreeSet::new(),
            cache_lengths: LengthSet::default(),
            smr_invoked_last: HashMap::new(),
            smr_sent_last: HashMap::new(),
            notify_seen: VecDeque::with_capacity(register::NOTIFY_SEEN),
            last_prune: now,
            dynamic: dynamic::DynamicTable::new(),
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
            Event::DataForAbsentEid {
                instance_id,
                itr_rloc,
                src_eid,
                dst_eid,
            } => self.handle_data_for_absent_eid(now, instance_id, itr_rloc, src_eid, dst_eid),
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
        if now - self.last_prune < Duration::from_secs(10) {
            return;
        }
        self.last_prune = now;
        self.smr_invoked_last.retain(|_, t| now - *t < RATE_WINDOW);
        self.smr_sent_last.retain(|_, t| now - *t < RATE_WINDOW);
    }

    /// Sizes of the bounded tables.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            pending: self.pending.len(),
            pending_timers: self.pending_timers.len(),
            request_nonces: self.request_nonces.len(),
            cache: self.cache.len(),
            cache_timers: self.cache_timers.len(),
            smr_invoked_last: self.smr_invoked_last.len(),
            smr_sent_last: self.smr_sent_last.len(),
        }
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
