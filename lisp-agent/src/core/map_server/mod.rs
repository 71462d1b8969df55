//! The built-in Map-Server / Map-Resolver (RFC 9301 §8, RFC 9437 pubsub), sans-IO.
//!
//! Datagrams, timer ticks and the current time go in ([`MapServer::handle`]), [`Action`]s come
//! out; no sockets, no clock, no randomness of its own (unsolicited nonces come from a seed in
//! the config), so every behaviour is testable under a simulated clock.
//!
//! # Map-Server
//! * **Map-Register**: every record must lie in one configured site (exactly a site prefix, or
//!   inside one that accepts more-specifics; site prefixes carry an instance-id, 0 by default;
//!   a prefix shared by several sites, all accepting more-specifics, belongs to the site whose
//!   key verifies); the HMAC is verified in constant time with that site's key and algorithm;
//!   a Map-Register that would change state must be fresh ([`replay`]: refreshes are accepted
//!   whatever their nonce, so that random-nonce (OOR) and constant-nonce (lispers.net) peers
//!   stay registered).
//!   Any failure drops the whole message, counts the reason, logs it (at most a line a second
//!   per reason) and changes nothing. Records or locators in an LCAF type we do not know are
//!   left out (counted); host bits below a record's mask are cleared (counted, warned).
//! * Accepted records are stored per registrant ([`registry`]: xTR-ID, else source address) with
//!   an expiry of 180 s, or of the record TTL when the T bit is set (locator `L`/`p` bits
//!   cleared: they describe the sender, not us). Answers carry the union of the registrants'
//!   locators. A record TTL of 0 withdraws that registrant's registration only. A registration
//!   from another registering site (another configured site, or another Site-ID in the xTR-ID
//!   trailer) takes the prefix over. Each outcome is logged (created, changed, withdrawn,
//!   taken over, expired at info; refreshed at debug).
//! * **M bit** → Map-Notify with the same nonce and the merged records, signed with the site key
//!   and the same algorithm / data length as the Map-Register, sent to the Map-Register's source
//!   address *and port* (OOR answers an ephemeral source port there, capture 12).
//! * **RLOC change**: when a prefix's merged locator set loses a locator through a registration
//!   (a registrant changed its set, or another site took the prefix over), that locator gets
//!   an unsolicited Map-Notify (random nonce, new record) at port 4342, signed with the key of
//!   the site it registered in, retransmitted after 1 s, 2 s, 4 s... until a Map-Notify-Ack
//!   with that nonce verifies with that key, or [`MapServerConfig::notify_max_sends`] sends.
//!
//! # Map-Resolver
//! An ECM-wrapped Map-Request for EID `e` (its first EID record; others are ignored):
//! * `e` inside a live registration (longest match) with P → Map-Reply from us (A=0, the stored
//!   record) to the ITR-RLOC of the family the ECM came from, at the inner UDP source port;
//! * registered without P → the ECM forwarded byte for byte to a registering ETR's address
//!   (the registrant heard from last), port 4342 (as OOR does, capture 04);
//! * not registered but inside a site → negative Map-Reply, Natively-Forward, TTL 1 min, for `e`
//!   as asked when the site prefix accepts more-specifics, else for the site prefix (capture 11);
//! * inside no site → negative Map-Reply, Natively-Forward, TTL 15 min, for the largest prefix
//!   around `e` that overlaps no site (capture 08: 192.0.0.0/6).
//!
//! # PubSub (RFC 9437)
//! A Map-Request whose EID record has the N bit subscribes its sender (identified by its
//! xTR-ID, or else its ITR-RLOC) to that EID-prefix. Subscribers must belong to a site (their
//! source EID inside one): that site's key signs their Map-Notifies. When a registration that
//! covers or is covered by the subscribed prefix is created, changed, withdrawn or expires,
//! the subscriber gets a Map-Notify with the new record (an expired or withdrawn one is sent with
//! TTL 0 and no locators), nonce counting up from the Map-Request's, retransmitted until a
//! Map-Notify-Ack like the RLOC-change ones. The D bit suppresses the Map-Reply.
//!
//! Combined with the xTR in one process, `core::node::Node` decides which role a datagram is
//! for (ECMs for the local ETR's own EIDs go to the ETR) and hands an ECM this map-server
//! forwards to an ETR on our own address to the local ETR inside the node.

pub mod config;
pub mod counters;
pub mod registry;
pub mod replay;
pub mod sites;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::{
    Action as RecordAction, Auth, Ecm, Eid, IpPrefix, MapNotify, MapRegister, MapReply, MapRequest,
    Message, Record, XtrId, auth, msg_type,
};

use super::action::{Action, CONTROL_PORT, Event};
use super::nonce::NonceSource;
use super::time::{Timestamp, earliest};

use super::prefix_lengths::LengthSet;
pub use config::{
    MapServerConfig, MapServerConfigError, NO_REPEAT_WINDOW, NonceCheck, SiteConfig, SitePrefix,
};
pub use counters::{Counters, Reject};
pub use registry::{Registrant, RegistrantId, Registration};
use replay::PeerHistory;
use sites::{Key, SiteTable};

/// TTL (minutes) of a negative Map-Reply for an EID of a configured site that is not registered.
pub const NEGATIVE_TTL_UNREGISTERED: u32 = 1;
/// TTL (minutes) of a negative Map-Reply for an EID outside every site.
pub const NEGATIVE_TTL_NON_LISP: u32 = 15;

/// At most one log line per refusal reason in this time.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Does a registration from `site` / `site_id` take a prefix over from its current
/// registrants? Across configured sites, and across Site-IDs (xTR-ID trailer) when both sides
/// send one: the xTRs of one site share a Site-ID, so another one is another site (the host
/// moved). A registrant without the trailer joins whichever site holds the prefix.
fn takes_over(r: &Registration, site: usize, site_id: Option<u64>) -> bool {
    !r.registrants.is_empty()
        && (r.site != site || matches!((r.site_id, site_id), (Some(a), Some(b)) if a != b))
}

/// Who subscribed: RFC 9437 identifies a subscriber by its xTR-ID; without one, by ITR-RLOC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subscriber {
    Xtr([u8; 16]),
    Rloc(IpAddr),
}

#[derive(Clone, Debug)]
struct Subscription {
    site: usize,
    to: SocketAddr,
    /// Our address the subscribing Map-Request came to: the source of its Map-Notifies.
    local: Option<IpAddr>,
    xtr: Option<XtrId>,
    next_nonce: u64,
    expires: Timestamp,
}

/// An unsolicited Map-Notify waiting for its Map-Notify-Ack.
#[derive(Clone, Debug)]
struct Pending {
    to: SocketAddr,
    /// Source address of every (re)transmission, as for the first one.
    from: Option<IpAddr>,
    payload: Vec<u8>,
    site: usize,
    sends: u32,
    interval: Duration,
    next: Timestamp,
}

/// Replay state of the legacy nonce policies is per site and per registrant.
type ReplayKey = (usize, RegistrantId);

#[derive(Clone, Debug)]
enum ReplayState {
    Last(u64),
    Recent(VecDeque<u64>),
}

/// What one record of an accepted Map-Register does, decided before anything is changed.
enum Plan {
    /// TTL 0: remove this registrant's registration; the record is echoed in the Map-Notify.
    Withdraw(Key, Record),
    Upsert(Key, Record, Duration),
}

/// What a refused Map-Register was about, for its log line.
#[derive(Default)]
struct RegisterCtx {
    site: Option<usize>,
    registrant: Option<RegistrantId>,
    prefix: Option<Key>,
}

/// The merged state of a prefix before a change: to find out what the change did.
struct Before {
    /// The site holding it: its key signs what its previous registrants are told.
    site: usize,
    record: Option<Record>,
    /// Each previous registrant's xTR-ID and locators: who to tell that a locator left.
    owners: Vec<(Option<XtrId>, Vec<IpAddr>)>,
}

/// The Map-Server / Map-Resolver state machine.
pub struct MapServer {
    cfg: MapServerConfig,
    sites: SiteTable,
    regs: HashMap<Key, Registration>,
    /// Registrant entries over every prefix (what `max_registrations` bounds).
    reg_count: usize,
    reg_lengths: LengthSet,
    expiries: BTreeSet<(Timestamp, Key, RegistrantId)>,
    /// [`NonceCheck::FreshChanges`]: what each registrant sent (bounded by `max_registrants`).
    history: HashMap<ReplayKey, PeerHistory>,
    /// The legacy nonce-only policies.
    replay: HashMap<ReplayKey, ReplayState>,
    /// Rate limit of refusal log lines: last line per reason, lines suppressed since.
    log_budget: HashMap<Reject, (Timestamp, u64)>,
    subs: BTreeMap<Key, BTreeMap<Subscriber, Subscription>>,
    sub_count: usize,
    sub_expiries: BTreeSet<(Timestamp, Key, Subscriber)>,
    pending: HashMap<u64, Pending>,
    pending_due: BTreeSet<(Timestamp, u64)>,
    rng: NonceSource,
    counters: Counters,
}

impl MapServer {
    pub fn new(cfg: MapServerConfig) -> Self {
        let sites = SiteTable::new(&cfg.sites);
        let rng = NonceSource::new(cfg.nonce_seed);
        MapServer {
            cfg,
            sites,
            regs: HashMap::new(),
            reg_count: 0,
            reg_lengths: LengthSet::default(),
            expiries: BTreeSet::new(),
            history: HashMap::new(),
            replay: HashMap::new(),
            log_budget: HashMap::new(),
            subs: BTreeMap::new(),
            sub_count: 0,
            sub_expiries: BTreeSet::new(),
            pending: HashMap::new(),
            pending_due: BTreeSet::new(),
            rng,
            counters: Counters::default(),
        }
    }

    /// Message types the map-server takes (by the first byte of a UDP 4342 payload):
    /// Map-Register, Map-Notify-Ack and ECM.
    pub fn wants(bytes: &[u8]) -> bool {
        matches!(
            Message::peek_type(bytes),
            Ok(msg_type::MAP_REGISTER | msg_type::MAP_NOTIFY_ACK | msg_type::ECM)
        )
    }

    pub fn config(&self) -> &MapServerConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Every stored registration (live or expired but not yet collected by a timer event).
    pub fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.regs.values()
    }

    /// The registration of exactly this EID-prefix, if it is live at `now`.
    pub fn registration(&self, eid: &Eid, now: Timestamp) -> Option<&Registration> {
        self.regs.get(&Key::from(eid)).filter(|r| r.expires > now)
    }

    /// The live registration that is the longest match for `eid`.
    pub fn lookup(&self, eid: &Eid, now: Timestamp) -> Option<&Registration> {
        self.lookup_key(&Key::from(eid), now)
    }

    pub fn subscription_count(&self) -> usize {
        self.sub_count
    }

    /// Unsolicited Map-Notifies still waiting for their Map-Notify-Ack.
    pub fn pending_notifies(&self) -> usize {
        self.pending.len()
    }

    /// When [`Event::Timer`] must be delivered next (expiry, retransmission), if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let a = self.expiries.first().map(|e| e.0);
        let b = self.sub_expiries.first().map(|e| e.0);
        let c = self.pending_due.first().map(|e| e.0);
        earliest(earliest(a, b), c)
    }

    /// Feed one event; returns what to do, in order.
    pub fn handle(&mut self, event: &Event, now: Timestamp) -> Vec<Action> {
        match event {
            Event::Datagram { from, to, bytes } => self.handle_datagram(*from, *to, bytes, now),
            Event::Timer => self.on_timer(now),
            // Data-plane events are the xTR's and the node's.
            Event::Miss { .. }
            | Event::NextHopUnresolved { .. }
            | Event::DataForAbsentEid { .. }
            | Event::DynamicEidDetected { .. }
            | Event::DynamicEidActivity { .. }
            | Event::GroupDatagram { .. } => Vec::new(),
        }
    }

    /// A UDP datagram received on the control port from `from`, addressed to our `to`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Timestamp,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let result = match Message::peek_type(bytes) {
            Ok(msg_type::MAP_REGISTER) => {
                self.counters.rx_map_register += 1;
                self.on_register(from, to, bytes, now, &mut out)
            }
            Ok(msg_type::MAP_NOTIFY_ACK) => {
                self.counters.rx_map_notify_ack += 1;
                self.on_notify_ack(bytes)
            }
            Ok(msg_type::ECM) => {
                self.counters.rx_ecm_map_request += 1;
                self.on_ecm(from, to, bytes, now, &mut out)
            }
            Ok(_) => {
                self.counters.rx_other += 1;
                Err(Reject::UnexpectedType)
            }
            Err(_) => {
                self.counters.rx_other += 1;
                Err(Reject::Malformed)
            }
        };
        if let Err(why) = result {
            self.counters.reject(why);
            // Rejections are decided before any state change, so nothing may have been queued.
            debug_assert!(out.is_empty());
            out.clear();
        }
        out
    }

    /// Expire registrations and subscriptions, retransmit unacknowledged Map-Notifies.
    pub fn on_timer(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&(t, key, id)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            let before = self.before(&key);
            let Some(reg) = self.regs.get_mut(&key) else {
                continue;
            };
            let site = reg.site;
            if reg.remove(id).is_some() {
                self.reg_count -= 1;
                self.release(site, id);
                self.counters.registrations_expired += 1;
                log::info!(
                    "map-server: site {}: {id}: registration of {key} expired",
                    self.cfg.sites[site].name
                );
                // The registrant is presumably gone: its locators are not told, subscribers are.
                self.settle(&key, before, false, None, now, &mut out);
            }
        }
        while let Some(&(t, key, who)) = self.sub_expiries.first() {
            if t > now {
                break;
            }
            self.sub_expiries.pop_first();
            if let Some(m) = self.subs.get_mut(&key) {
                if m.remove(&who).is_some() {
                    self.sub_count -= 1;
                    self.counters.subscriptions_expired += 1;
                }
                if m.is_empty() {
                    self.subs.remove(&key);
                }
            }
        }
        while let Some(&(t, nonce)) = self.pending_due.first() {
            if t > now {
                break;
            }
            self.pending_due.pop_first();
            let Some(p) = self.pending.get_mut(&nonce) else {
                continue;
            };
            if p.sends >= self.cfg.notify_max_sends {
                self.pending.remove(&nonce);
                self.counters.notify_given_up += 1;
                continue;
            }
            p.sends += 1;
            p.interval = p.interval.saturating_mul(2);
            p.next = now + p.interval;
            out.push(Action::Send {
                from: p.from,
                to: p.to,
                payload: p.payload.clone(),
            });
            self.pending_due.insert((p.next, nonce));
            self.counters.tx_map_notify_retransmit += 1;
        }
        out
    }

    // ---- Map-Register --------------------------------------------------------------------

    fn on_register(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> Result<(), Reject> {
        let mut ctx = RegisterCtx::default();
        let r = self.register(from, to, bytes, now, out, &mut ctx);
        if let Err(why) = r {
            self.log_refusal(from, why, &ctx, now);
        }
        r
    }

    fn register(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Timestamp,
        out: &mut Vec<Action>,
        ctx: &mut RegisterCtx,
    ) -> Result<(), Reject> {
        let reg = MapRegister::parse(bytes).map_err(|_| Reject::Malformed)?;
        self.counters.records_skipped += u64::from(reg.skipped.records);
        self.counters.locators_skipped += u64::from(reg.skipped.locators);
        if reg.records.is_empty() {
            return Err(Reject::NoRecords);
        }
        // The sites every record may belong to (several only for a shared prefix).
        let mut candidates: Option<Vec<usize>> = None;
        for rec in &reg.records {
            let k = Key::from(&rec.eid);
            ctx.prefix = Some(k);
            let (p, owners) = self.sites.longest(&k).ok_or(Reject::UnknownEid)?;
            let here: Vec<usize> = owners
                .iter()
                .filter(|(_, ams)| p == k || *ams)
                .map(|(s, _)| *s)
                .collect();
            if here.is_empty() {
                return Err(Reject::MoreSpecificRefused);
            }
            let both: Vec<usize> = match candidates {
                None => here,
                Some(c) => c.into_iter().filter(|s| here.contains(s)).collect(),
            };
            if both.is_empty() {
                return Err(Reject::MixedSites);
            }
            ctx.site = both.first().copied();
            candidates = Some(both);
        }
        let candidates = candidates.ok_or(Reject::NoRecords)?;
        let id = match &reg.xtr {
            Some(x) => RegistrantId::Xtr(x.xtr_id),
            None => RegistrantId::Etr(from.ip()),
        };
        ctx.registrant = Some(id);
        // The site whose key the message verifies with (each check in constant time); only a
        // site configured for the message's algorithm is tried, which prevents a downgrade.
        let mut right_algorithm = false;
        let mut site = None;
        for s in candidates {
            let sc = &self.cfg.sites[s];
            if reg.auth.algorithm() != Some(sc.algorithm) {
                continue;
            }
            right_algorithm = true;
            if auth::verify(bytes, &sc.key).is_ok() {
                site = Some(s);
                break;
            }
        }
        if !right_algorithm {
            return Err(Reject::WrongAlgorithm);
        }
        let site = site.ok_or(Reject::AuthFailed)?;
        ctx.site = Some(site);

        // Authenticated: decide what each record would do, before changing anything.
        // Host bits below the mask are cleared (tcpdump's lisp_ipv6.pcap registers
        // 2001:db8:85a3::8a2e:370:7334/80): the prefix means its network, and a key with host
        // bits would never match a lookup. Counted and warned about once accepted.
        let masked: Vec<Eid> = reg
            .records
            .iter()
            .filter(|r| r.eid.prefix.has_host_bits())
            .map(|r| r.eid)
            .collect();
        let plans: Vec<Plan> = reg
            .records
            .iter()
            .map(|rec| {
                let mut stored = rec.clone();
                stored.eid.prefix = stored.eid.prefix.network();
                let k = Key::from(&stored.eid);
                if rec.ttl == 0 {
                    return Plan::Withdraw(k, stored);
                }
                for l in &mut stored.locators {
                    l.local = false;
                    l.probed = false;
                }
                let lifetime = if reg.use_ttl {
                    Duration::from_secs(u64::from(rec.ttl) * 60)
                } else {
                    self.cfg.registration_lifetime
                };
                Plan::Upsert(k, stored, lifetime)
            })
            .collect();
        let site_id = reg.xtr.map(|x| x.site_id);
        let changes = plans
            .iter()
            .any(|p| self.plan_changes(p, site, site_id, id, from, reg.proxy_reply, now));
        let contested = plans.iter().any(|p| {
            let k = match p {
                Plan::Withdraw(k, _) | Plan::Upsert(k, ..) => k,
            };
            self.regs.get(k).is_some_and(|r| r.expires > now)
        });
        let rkey = (site, id);
        let digest = replay::digest(&reg.auth.data);
        let mut forget = None;
        match self.cfg.nonce_check {
            NonceCheck::FreshChanges => match self.history.get(&rkey) {
                Some(h) if changes => {
                    h.check_change(reg.nonce, &digest, contested)
                        .map_err(|_| Reject::ReplayedNonce)?;
                }
                Some(_) => {}
                None if self.history.len() >= self.cfg.max_registrants => {
                    forget = Some(self.forgettable(now).ok_or(Reject::TableFull)?);
                }
                None => {}
            },
            NonceCheck::Increasing | NonceCheck::NoRepeat => {
                if !self.replay_ok(&rkey, reg.nonce) {
                    return Err(Reject::ReplayedNonce);
                }
            }
        }
        let new_entries = plans
            .iter()
            .filter(|p| {
                matches!(p, Plan::Upsert(k, ..)
                    if self.regs.get(k).and_then(|r| r.registrant(id)).is_none())
            })
            .count();
        if self.reg_count + new_entries > self.cfg.max_registrations {
            return Err(Reject::TableFull);
        }

        // Accepted: from here on, state changes.
        for e in masked {
            self.counters.records_host_bits_masked += 1;
            log::warn!(
                "map-server: site {}: {id}: host bits of {e} cleared",
                self.cfg.sites[site].name
            );
        }
        match self.cfg.nonce_check {
            NonceCheck::FreshChanges => {
                if let Some(k) = forget {
                    self.history.remove(&k);
                    self.counters.registrants_forgotten += 1;
                }
                self.history
                    .entry(rkey)
                    .or_default()
                    .commit(reg.nonce, digest, now);
            }
            NonceCheck::Increasing | NonceCheck::NoRepeat => self.replay_commit(rkey, reg.nonce),
        }
        let mut notify_records = Vec::with_capacity(plans.len());
        for plan in plans {
            match plan {
                Plan::Withdraw(k, record) => {
                    self.withdraw(k, id, site, now, out);
                    // The Map-Notify echoes what was registered, TTL 0 included.
                    notify_records.push(record);
                }
                Plan::Upsert(k, record, lifetime) => {
                    let entry = Registrant {
                        id,
                        etr: from,
                        xtr: reg.xtr,
                        record,
                        proxy_reply: reg.proxy_reply,
                        registered_at: now,
                        refreshed_at: now,
                        expires: now + lifetime,
                    };
                    self.upsert(k, entry, site, site_id, local(to), now, out);
                    // The Map-Notify carries the merged record: what the prefix now maps to.
                    if let Some(r) = self.regs.get(&k) {
                        notify_records.push(r.record.clone());
                    }
                }
            }
        }
        if reg.want_map_notify {
            let notify = MapNotify {
                rtr: false,
                nonce: reg.nonce,
                auth: Auth {
                    key_id: reg.auth.key_id,
                    algorithm_id: reg.auth.algorithm_id,
                    data: vec![0; reg.auth.data.len()],
                },
                records: notify_records,
                xtr: reg.xtr,
                ..MapNotify::default()
            };
            match self.sign_notify(&notify, site) {
                Some(payload) => {
                    out.push(Action::Send {
                        from: local(to),
                        to: from,
                        payload,
                    });
                    self.counters.tx_map_notify += 1;
                }
                None => self.counters.emit_failed += 1,
            }
        }
        Ok(())
    }

    /// Would `plan` by registrant `id`, sent from `from`, change state (anything beyond
    /// extending its expiry)? The source address counts as state: Map-Requests are forwarded
    /// there, so a captured refresh replayed from elsewhere must not pass as a refresh.
    #[allow(clippy::too_many_arguments)]
    fn plan_changes(
        &self,
        plan: &Plan,
        site: usize,
        site_id: Option<u64>,
        id: RegistrantId,
        from: SocketAddr,
        proxy: bool,
        now: Timestamp,
    ) -> bool {
        match plan {
            Plan::Withdraw(k, _) => self
                .regs
                .get(k)
                .and_then(|r| r.registrant(id))
                .is_some_and(|r| r.expires > now),
            Plan::Upsert(k, record, _) => {
                let Some(r) = self.regs.get(k) else {
                    return true;
                };
                if takes_over(r, site, site_id) {
                    return true;
                }
                !r.registrant(id).is_some_and(|x| {
                    x.expires > now
                        && x.record == *record
                        && x.proxy_reply == proxy
                        && x.etr == from
                })
            }
        }
    }

    /// Remove registrant `id`'s registration of `k`, if it has one.
    fn withdraw(
        &mut self,
        k: Key,
        id: RegistrantId,
        site: usize,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let before = self.before(&k);
        let Some(reg) = self.regs.get_mut(&k) else {
            return;
        };
        if reg.site != site {
            return;
        }
        let Some(old) = reg.remove(id) else {
            return;
        };
        self.expiries.remove(&(old.expires, k, id));
        self.reg_count -= 1;
        self.release(site, id);
        self.counters.registrations_withdrawn += 1;
        log::info!(
            "map-server: site {}: {id}: withdrew {k}",
            self.cfg.sites[site].name
        );
        // The registrant knows it withdrew: only subscribers are told.
        self.settle(&k, before, false, None, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        k: Key,
        entry: Registrant,
        site: usize,
        site_id: Option<u64>,
        // Our address the Map-Register came to: the source of Map-Notifies it causes.
        local_addr: Option<IpAddr>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let before = self.before(&k);
        let id = entry.id;
        let name = self.cfg.sites[site].name.clone();
        let reg = self
            .regs
            .entry(k)
            .or_insert_with(|| Registration::new(site, site_id, &entry));
        if takes_over(reg, site, site_id) {
            // Another registering site holds the prefix (the host moved): the newest wins.
            let from_site = reg.site;
            for old in reg.take_all() {
                self.expiries.remove(&(old.expires, k, old.id));
                self.reg_count -= 1;
                if let Some(h) = self.history.get_mut(&(from_site, old.id)) {
                    h.held = h.held.saturating_sub(1);
                }
                self.counters.registrations_displaced += 1;
                log::info!(
                    "map-server: site {name}: {id} took {k} over from {} of site {}",
                    old.id,
                    self.cfg.sites[from_site].name
                );
            }
            reg.site = site;
            reg.site_id = site_id;
        }
        if reg.site_id.is_none() {
            reg.site_id = site_id;
        }
        let expires = entry.expires;
        let locators = entry.record.locators.len();
        match reg.registrant(id).cloned() {
            Some(old) => {
                let refresh = old.record == entry.record
                    && old.proxy_reply == entry.proxy_reply
                    && old.etr == entry.etr;
                reg.put(Registrant {
                    registered_at: old.registered_at,
                    ..entry
                });
                self.expiries.remove(&(old.expires, k, id));
                if refresh {
                    self.counters.registrations_refreshed += 1;
                    log::debug!("map-server: site {name}: {id}: refreshed {k}");
                } else {
                    self.counters.registrations_changed += 1;
                    log::info!("map-server: site {name}: {id}: changed {k} ({locators} locators)");
                }
            }
            None => {
                reg.put(entry);
                self.reg_count += 1;
                if let Some(h) = self.history.get_mut(&(site, id)) {
                    h.held += 1;
                }
                self.counters.registrations_created += 1;
                log::info!("map-server: site {name}: {id}: registered {k} ({locators} locators)");
            }
        }
        self.expiries.insert((expires, k, id));
        self.settle(&k, before, true, local_addr, now, out);
    }

    /// Registrant `id` of `site` no longer holds one of its registrations.
    fn release(&mut self, site: usize, id: RegistrantId) {
        if let Some(h) = self.history.get_mut(&(site, id)) {
            h.held = h.held.saturating_sub(1);
        }
    }

    /// The registrant table is full: the longest-silent registrant that may be forgotten
    /// ([`PeerHistory::forgettable`]) to make room, if any. Linear, but only run when full.
    fn forgettable(&self, now: Timestamp) -> Option<ReplayKey> {
        self.history
            .iter()
            .filter(|(_, h)| h.forgettable(now))
            .min_by_key(|(_, h)| h.last_heard)
            .map(|(k, _)| *k)
    }

    /// The merged state of `k` before a change.
    fn before(&self, k: &Key) -> Before {
        match self.regs.get(k) {
            None => Before {
                site: 0,
                record: None,
                owners: Vec::new(),
            },
            Some(r) => Before {
                site: r.site,
                record: Some(r.record.clone()),
                owners: r
                    .registrants
                    .iter()
                    .map(|x| (x.xtr, x.record.locators.iter().map(|l| l.address).collect()))
                    .collect(),
            },
        }
    }

    /// After a change to `k`: drop the prefix if no registrant is left, tell the locators that
    /// left the merged record (when `tell_gone`: a registration moved them away) and the
    /// subscribers (when the locators changed).
    fn settle(
        &mut self,
        k: &Key,
        before: Before,
        tell_gone: bool,
        local_addr: Option<IpAddr>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let after = match self.regs.get(k) {
            Some(r) if r.registrants.is_empty() => {
                self.regs.remove(k);
                None
            }
            Some(r) => Some(r.record.clone()),
            None => None,
        };
        if before.record.is_none() && after.is_some() {
            self.reg_lengths.add(k.is_ipv4(), k.prefix.len());
        }
        if before.record.is_some() && after.is_none() {
            self.reg_lengths.remove(k.is_ipv4(), k.prefix.len());
        }
        match (&before.record, after) {
            (None, None) => {}
            (Some(old), None) => {
                let gone = withdrawn_record(old);
                self.notify_subscribers(k, &gone, now, out);
            }
            (old, Some(record)) => {
                if old.as_ref().is_some_and(|o| o.locators == record.locators) {
                    return;
                }
                if tell_gone {
                    let mut told = Vec::new();
                    for (xtr, addrs) in &before.owners {
                        for a in addrs {
                            if record.locators.iter().any(|n| n.address == *a) || told.contains(a) {
                                continue;
                            }
                            told.push(*a);
                            // Tell the previous locator that the mapping moved away from it,
                            // with the key of the site it registered in (the new holder may be
                            // another site, with another key).
                            let notify = MapNotify {
                                rtr: false,
                                nonce: self.fresh_nonce(),
                                auth: Auth::zeroed(self.cfg.sites[before.site].algorithm),
                                records: vec![record.clone()],
                                xtr: *xtr,
                                ..MapNotify::default()
                            };
                            self.start_unsolicited(
                                local_addr,
                                SocketAddr::new(*a, CONTROL_PORT),
                                &notify,
                                before.site,
                                now,
                                out,
                            );
                        }
                    }
                }
                self.notify_subscribers(k, &record, now, out);
            }
        }
    }

    /// One log line per refused Map-Register, at most one a second per reason (a stream of
    /// bad input must not flood the log); the next line says how many were left out.
    fn log_refusal(&mut self, from: SocketAddr, why: Reject, ctx: &RegisterCtx, now: Timestamp) {
        let (last, suppressed) = self.log_budget.entry(why).or_insert((Timestamp::ZERO, 0));
        if *last != Timestamp::ZERO && now.saturating_duration_since(*last) < LOG_INTERVAL {
            *suppressed += 1;
            return;
        }
        let mut line = format!("map-server: refused Map-Register from {from}");
        if let Some(s) = ctx.site {
            let _ = write!(line, ", site {}", self.cfg.sites[s].name);
        }
        if let Some(r) = ctx.registrant {
            let _ = write!(line, ", {r}");
        }
        if let Some(p) = ctx.prefix {
            let _ = write!(line, ", prefix {p}");
        }
        let _ = write!(line, ": {}", why.describe());
        if *suppressed > 0 {
            let _ = write!(line, " ({suppressed} more refused for this reason since)");
        }
        log::warn!("{line}");
        *last = now.max(Timestamp::from_millis(1));
        *suppressed = 0;
    }

    fn replay_ok(&self, key: &ReplayKey, nonce: u64) -> bool {
        match self.replay.get(key) {
            None => true,
            Some(ReplayState::Last(last)) => nonce > *last,
            Some(ReplayState::Recent(seen)) => !seen.contains(&nonce),
        }
    }

    fn replay_commit(&mut self, key: ReplayKey, nonce: u64) {
        match self.cfg.nonce_check {
            NonceCheck::Increasing => {
                self.replay.insert(key, ReplayState::Last(nonce));
            }
            NonceCheck::NoRepeat => {
                let e = self
                    .replay
                    .entry(key)
                    .or_insert_with(|| ReplayState::Recent(VecDeque::new()));
                if let ReplayState::Recent(seen) = e {
                    if seen.len() >= NO_REPEAT_WINDOW {
                        seen.pop_front();
                    }
                    seen.push_back(nonce);
                }
            }
            NonceCheck::FreshChanges => {}
        }
    }

    // ---- Map-Notify-Ack ------------------------------------------------------------------

    fn on_notify_ack(&mut self, bytes: &[u8]) -> Result<(), Reject> {
        let ack = MapNotify::parse_ack(bytes).map_err(|_| Reject::Malformed)?;
        let site = self
            .pending
            .get(&ack.nonce)
            .ok_or(Reject::UnsolicitedAck)?
            .site;
        let sc = &self.cfg.sites[site];
        if ack.auth.algorithm() != Some(sc.algorithm) {
            return Err(Reject::WrongAlgorithm);
        }
        auth::verify(bytes, &sc.key).map_err(|_| Reject::AuthFailed)?;
        if let Some(p) = self.pending.remove(&ack.nonce) {
            self.pending_due.remove(&(p.next, ack.nonce));
            self.counters.notify_acked += 1;
        }
        Ok(())
    }

    // ---- Map-Resolver --------------------------------------------------------------------

    fn on_ecm(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Timestamp,
        out: &mut Vec<Action>,
    ) -> Result<(), Reject> {
        let ecm = Ecm::parse(bytes).map_err(|_| Reject::Malformed)?;
        let Message::MapRequest(req) = &*ecm.message else {
            return Err(Reject::BadMapRequest);
        };
        self.counters.records_skipped += u64::from(req.skipped.records);
        self.counters.locators_skipped += u64::from(req.skipped.locators);
        let eid = *req.eids.first().ok_or(Reject::BadMapRequest)?;
        let k = Key::from(&eid);
        // The codec always yields at least one ITR-RLOC (IRC + 1).
        let itr = pick_itr(&req.itr_rlocs, from.ip()).ok_or(Reject::BadMapRequest)?;
        let port = if ecm.src_port == 0 {
            CONTROL_PORT
        } else {
            ecm.src_port
        };
        let reply_to = SocketAddr::new(itr, port);

        if req.notify_requested
            && let Err(why) = self.subscribe(req, k, itr, local(to), now)
        {
            // The subscription is refused, the request itself is still answered.
            self.counters.reject(why);
        }
        if req.dont_map_reply {
            self.counters.map_request_no_reply += 1;
            return Ok(());
        }

        let site = self.sites.longest_covering(&k);
        // A registration less specific than the site prefix that holds `k` belongs to another
        // site (e.g. a /24 around an unregistered /25 of someone else): not an answer for `k`.
        let registered = self
            .lookup_key(&k, now)
            .filter(|r| site.is_none_or(|m| m.prefix.prefix.len() <= r.record.eid.prefix.len()));
        if let Some(reg) = registered {
            if reg.proxy_reply {
                let mut record = reg.record.clone();
                // A map-server's answer on behalf of the ETR is not authoritative (capture 03).
                record.authoritative = false;
                let reply = MapReply {
                    nonce: req.nonce,
                    records: vec![record],
                    ..MapReply::default()
                };
                self.send_reply(reply, to, reply_to, out);
                self.counters.tx_map_reply_proxy += 1;
            } else {
                out.push(Action::Send {
                    from: local(to),
                    to: SocketAddr::new(reg.etr.ip(), CONTROL_PORT),
                    payload: bytes.to_vec(),
                });
                self.counters.tx_ecm_forwarded += 1;
            }
            return Ok(());
        }

        let with_iid = eid.instance_id.is_some();
        let record = if let Some(m) = site {
            let neg_eid = if m.accept_more_specifics {
                eid
            } else {
                m.prefix.to_eid(with_iid)
            };
            Record::negative(
                neg_eid,
                NEGATIVE_TTL_UNREGISTERED,
                RecordAction::NativelyForward,
            )
        } else if let Some(hole) = self.sites.non_lisp_hole(&k) {
            Record::negative(
                hole.to_eid(with_iid),
                NEGATIVE_TTL_NON_LISP,
                RecordAction::NativelyForward,
            )
        } else {
            // A request for a prefix that contains a site without being inside one (a /0, say):
            // not something an ITR asks; answer for what was asked, briefly.
            Record::negative(
                eid,
                NEGATIVE_TTL_UNREGISTERED,
                RecordAction::NativelyForward,
            )
        };
        let reply = MapReply {
            nonce: req.nonce,
            records: vec![record],
            ..MapReply::default()
        };
        self.send_reply(reply, to, reply_to, out);
        self.counters.tx_map_reply_negative += 1;
        Ok(())
    }

    fn send_reply(
        &mut self,
        reply: MapReply,
        to: SocketAddr,
        reply_to: SocketAddr,
        out: &mut Vec<Action>,
    ) {
        match reply.to_vec() {
            Ok(payload) => out.push(Action::Send {
                from: local(to),
                to: reply_to,
                payload,
            }),
            Err(_) => self.counters.emit_failed += 1,
        }
    }

    fn lookup_key(&self, k: &Key, now: Timestamp) -> Option<&Registration> {
        self.reg_lengths
            .descending(k.is_ipv4(), k.prefix.len())
            .filter_map(|len| self.regs.get(&k.truncate(len)))
            .find(|r| r.expires > now)
    }

    // ---- PubSub --------------------------------------------------------------------------

    fn subscribe(
        &mut self,
        req: &MapRequest,
        k: Key,
        itr: IpAddr,
        local: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<(), Reject> {
        let src = req
            .source_eid
            .ip
            .and_then(|ip| IpPrefix::new(ip, if ip.is_ipv4() { 32 } else { 128 }).ok())
            .map(|p| Key {
                iid: req.source_eid.instance_id.unwrap_or(0),
                prefix: p,
            });
        let site = src
            .and_then(|s| self.sites.longest_covering(&s))
            .ok_or(Reject::SubscriptionRefused)?
            .site;
        let who = match &req.xtr {
            Some(x) => Subscriber::Xtr(x.xtr_id),
            None => Subscriber::Rloc(itr),
        };
        let expires = now + self.cfg.subscription_lifetime;
        let entry = self.subs.entry(k).or_default();
        match entry.get_mut(&who) {
            Some(s) => {
                // Renewal: keep the nonce sequence, move the expiry.
                self.sub_expiries.remove(&(s.expires, k, who));
                s.expires = expires;
                s.to = SocketAddr::new(itr, CONTROL_PORT);
                s.local = local;
                s.site = site;
            }
            None => {
                if self.sub_count >= self.cfg.max_subscriptions {
                    if entry.is_empty() {
                        self.subs.remove(&k);
                    }
                    return Err(Reject::SubscriptionRefused);
                }
                entry.insert(
                    who,
                    Subscription {
                        site,
                        to: SocketAddr::new(itr, CONTROL_PORT),
                        local,
                        xtr: req.xtr,
                        next_nonce: req.nonce.wrapping_add(1),
                        expires,
                    },
                );
                self.sub_count += 1;
                self.counters.subscriptions_added += 1;
            }
        }
        self.sub_expiries.insert((expires, k, who));
        Ok(())
    }

    /// Map-Notify every subscriber whose prefix covers or is covered by `k`.
    fn notify_subscribers(
        &mut self,
        k: &Key,
        record: &Record,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        if self.subs.is_empty() {
            return;
        }
        let mut keys: Vec<Key> = (0..k.prefix.len())
            .map(|len| k.truncate(len))
            .filter(|c| self.subs.contains_key(c))
            .collect();
        let end = Key {
            iid: k.iid,
            prefix: IpPrefix::host(last_addr(&k.prefix)),
        };
        keys.extend(self.subs.range(*k..=end).map(|(s, _)| *s));
        let mut jobs = Vec::new();
        for sk in keys {
            if let Some(m) = self.subs.get_mut(&sk) {
                for s in m.values_mut() {
                    let nonce = s.next_nonce;
                    s.next_nonce = s.next_nonce.wrapping_add(1);
                    jobs.push((s.local, s.to, s.site, s.xtr, nonce));
                }
            }
        }
        for (from, to, site, xtr, nonce) in jobs {
            let notify = MapNotify {
                rtr: false,
                nonce,
                auth: Auth::zeroed(self.cfg.sites[site].algorithm),
                records: vec![record.clone()],
                xtr,
                ..MapNotify::default()
            };
            self.start_unsolicited(from, to, &notify, site, now, out);
        }
    }

    // ---- Unsolicited Map-Notify ----------------------------------------------------------

    fn start_unsolicited(
        &mut self,
        from: Option<IpAddr>,
        to: SocketAddr,
        notify: &MapNotify,
        site: usize,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let Some(payload) = self.sign_notify(notify, site) else {
            self.counters.emit_failed += 1;
            return;
        };
        out.push(Action::Send {
            from,
            to,
            payload: payload.clone(),
        });
        self.counters.tx_map_notify_unsolicited += 1;
        if let Some(old) = self.pending.remove(&notify.nonce) {
            self.pending_due.remove(&(old.next, notify.nonce));
        }
        if self.pending.len() >= self.cfg.max_pending_notifies {
            // Sent once, but not retransmitted: the table of retries is bounded.
            self.counters.notify_given_up += 1;
            return;
        }
        let next = now + self.cfg.notify_retransmit;
        self.pending.insert(
            notify.nonce,
            Pending {
                to,
                from,
                payload,
                site,
                sends: 1,
                interval: self.cfg.notify_retransmit,
                next,
            },
        );
        self.pending_due.insert((next, notify.nonce));
    }

    fn sign_notify(&self, notify: &MapNotify, site: usize) -> Option<Vec<u8>> {
        let mut v = notify.to_vec().ok()?;
        auth::sign(&mut v, &self.cfg.sites[site].key).ok()?;
        Some(v)
    }

    /// Unpredictable enough for nonces whose answers are authenticated anyway, and
    /// reproducible from the seed; never 0 nor a nonce still pending.
    fn fresh_nonce(&mut self) -> u64 {
        loop {
            let z = self.rng.next_nonce();
            if !self.pending.contains_key(&z) {
                return z;
            }
        }
    }
}

/// The record a subscriber gets when a mapping disappears: no locators, TTL 0 (remove now).
fn withdrawn_record(r: &Record) -> Record {
    Record::negative(r.eid, 0, RecordAction::NoAction)
}

/// Answer from the address the request came to, unless it is a wildcard.
fn local(to: SocketAddr) -> Option<IpAddr> {
    (!to.ip().is_unspecified()).then_some(to.ip())
}

/// The ITR-RLOC to answer: the first of the family the ECM arrived over (we can reach that one),
/// else the first (capture 09: IPv6 listed first, OOR answered the IPv4 one).
fn pick_itr(rlocs: &[IpAddr], came_from: IpAddr) -> Option<IpAddr> {
    rlocs
        .iter()
        .copied()
        .find(|a| sites::same_family(*a, came_from))
        .or_else(|| rlocs.first().copied())
}

fn last_addr(p: &IpPrefix) -> IpAddr {
    match p.addr() {
        IpAddr::V4(a) => {
            let host = if p.len() >= 32 {
                0
            } else {
                u32::MAX >> p.len()
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = if p.len() >= 128 {
                0
            } else {
                u128::MAX >> p.len()
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}
