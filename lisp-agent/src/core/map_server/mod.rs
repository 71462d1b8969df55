//! The built-in Map-Server / Map-Resolver (RFC 9301 §8, RFC 9437 pubsub), sans-IO.
//!
//! Datagrams, timer ticks and the current time go in ([`MapServer::handle`]), [`Action`]s come
//! out; no sockets, no clock, no randomness of its own (unsolicited nonces come from a seed in
//! the config), so every behaviour is testable under a simulated clock.
//!
//! # Map-Server
//! * **Map-Register**: every record must lie in one configured site (exactly a site prefix, or
//!   inside one that accepts more-specifics); the HMAC is verified in constant time with that
//!   site's key and algorithm; the nonce must pass the replay check ([`NonceCheck`]). Any failure
//!   drops the whole message, counts the reason and changes nothing.
//! * Accepted records are stored (locator `L`/`p` bits cleared: they describe the sender, not
//!   us) with an expiry of 180 s, or of the record TTL when the T bit is set. A record TTL of 0
//!   withdraws the registration. The P bit is kept per registration. Several ETRs registering
//!   the same prefix: the last one wins (merge semantics, the `a` bit, are not implemented).
//! * **M bit** → Map-Notify with the same nonce and the stored records, signed with the site key
//!   and the same algorithm / data length as the Map-Register, sent to the Map-Register's source
//!   address *and port* (OOR answers an ephemeral source port there, capture 12).
//! * **RLOC change**: when a registration's locator set changes, each previous locator that is
//!   no longer in it gets an unsolicited Map-Notify (random nonce, new record) at port 4342,
//!   retransmitted after 1 s, 2 s, 4 s... until a Map-Notify-Ack with that nonce verifies with
//!   the site key, or [`MapServerConfig::notify_max_sends`] sends.
//!
//! # Map-Resolver
//! An ECM-wrapped Map-Request for EID `e` (its first EID record; others are ignored):
//! * `e` inside a live registration (longest match) with P → Map-Reply from us (A=0, the stored
//!   record) to the ITR-RLOC of the family the ECM came from, at the inner UDP source port;
//! * registered without P → the ECM forwarded byte for byte to the registering ETR's address,
//!   port 4342 (as OOR does, capture 04);
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
pub mod sites;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
use sites::{Key, SiteTable};

/// TTL (minutes) of a negative Map-Reply for an EID of a configured site that is not registered.
pub const NEGATIVE_TTL_UNREGISTERED: u32 = 1;
/// TTL (minutes) of a negative Map-Reply for an EID outside every site.
pub const NEGATIVE_TTL_NON_LISP: u32 = 15;

/// A live registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Index into [`MapServerConfig::sites`].
    pub site: usize,
    /// Where the last accepted Map-Register came from.
    pub etr: SocketAddr,
    pub xtr: Option<XtrId>,
    /// The record as registered, EID in its wire form, locator L/p bits cleared.
    pub record: Record,
    pub proxy_reply: bool,
    pub registered_at: Timestamp,
    pub refreshed_at: Timestamp,
    pub expires: Timestamp,
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

/// Replay state is per site and per xTR-ID, or per ETR address without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ReplayKey {
    Xtr(usize, [u8; 16]),
    Etr(usize, IpAddr),
}

#[derive(Clone, Debug)]
enum ReplayState {
    Last(u64),
    Recent(VecDeque<u64>),
}

/// One record of an accepted Map-Register, decided before anything is changed.
enum Change {
    /// TTL 0: remove the registration; the record is echoed in the Map-Notify.
    Withdraw(Key, Record),
    Upsert(Key, Record, Duration),
}

/// The Map-Server / Map-Resolver state machine.
pub struct MapServer {
    cfg: MapServerConfig,
    sites: SiteTable,
    regs: HashMap<Key, Registration>,
    reg_lengths: LengthSet,
    expiries: BTreeSet<(Timestamp, Key)>,
    replay: HashMap<ReplayKey, ReplayState>,
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
            reg_lengths: LengthSet::default(),
            expiries: BTreeSet::new(),
            replay: HashMap::new(),
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
        while let Some(&(t, key)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(reg) = self.regs.remove(&key) {
                self.reg_lengths.remove(key.is_ipv4(), key.prefix.len());
                self.counters.registrations_expired += 1;
                let gone = withdrawn_record(&reg.record);
                self.notify_subscribers(&key, &gone, now, &mut out);
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
        let reg = MapRegister::parse(bytes).map_err(|_| Reject::Malformed)?;
        if reg.records.is_empty() {
            return Err(Reject::NoRecords);
        }
        let mut site = None;
        for rec in &reg.records {
            let k = Key::from(&rec.eid);
            let m = self.sites.longest_covering(&k).ok_or(Reject::UnknownEid)?;
            if m.prefix != k && !m.accept_more_specifics {
                return Err(Reject::MoreSpecificRefused);
            }
            match site {
                None => site = Some(m.site),
                Some(s) if s != m.site => return Err(Reject::MixedSites),
                Some(_) => {}
            }
        }
        let site = site.ok_or(Reject::NoRecords)?;
        let sc = &self.cfg.sites[site];
        if reg.auth.algorithm() != Some(sc.algorithm) {
            return Err(Reject::WrongAlgorithm);
        }
        auth::verify(bytes, &sc.key).map_err(|_| Reject::AuthFailed)?;
        let rkey = match &reg.xtr {
            Some(x) => ReplayKey::Xtr(site, x.xtr_id),
            None => ReplayKey::Etr(site, from.ip()),
        };
        if !self.replay_ok(&rkey, reg.nonce) {
            return Err(Reject::ReplayedNonce);
        }
        let changes: Vec<Change> = reg
            .records
            .iter()
            .map(|rec| {
                let k = Key::from(&rec.eid);
                if rec.ttl == 0 {
                    return Change::Withdraw(k, rec.clone());
                }
                let mut stored = rec.clone();
                for l in &mut stored.locators {
                    l.local = false;
                    l.probed = false;
                }
                let lifetime = if reg.use_ttl {
                    Duration::from_secs(u64::from(rec.ttl) * 60)
                } else {
                    self.cfg.registration_lifetime
                };
                Change::Upsert(k, stored, lifetime)
            })
            .collect();
        let new_keys = changes
            .iter()
            .filter(|c| matches!(c, Change::Upsert(k, ..) if !self.regs.contains_key(k)))
            .count();
        if self.regs.len() + new_keys > self.cfg.max_registrations {
            return Err(Reject::TableFull);
        }

        // Accepted: from here on, state changes.
        self.replay_commit(rkey, reg.nonce);
        let mut notify_records = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Withdraw(k, record) => {
                    if let Some(old) = self.regs.remove(&k) {
                        self.expiries.remove(&(old.expires, k));
                        self.reg_lengths.remove(k.is_ipv4(), k.prefix.len());
                        self.counters.registrations_withdrawn += 1;
                        let gone = withdrawn_record(&old.record);
                        self.notify_subscribers(&k, &gone, now, out);
                    }
                    // The Map-Notify echoes what was registered, TTL 0 included.
                    notify_records.push(record);
                }
                Change::Upsert(k, record, lifetime) => {
                    notify_records.push(record.clone());
                    self.upsert(k, record, lifetime, site, from, local(to), &reg, now, out);
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

    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        k: Key,
        record: Record,
        lifetime: Duration,
        site: usize,
        from: SocketAddr,
        // Our address the Map-Register came to: the source of Map-Notifies it causes.
        local_addr: Option<IpAddr>,
        reg: &MapRegister,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let expires = now + lifetime;
        match self.regs.get_mut(&k) {
            Some(old) => {
                self.expiries.remove(&(old.expires, k));
                self.expiries.insert((expires, k));
                let changed = old.record.locators != record.locators;
                let gone: Vec<IpAddr> = old
                    .record
                    .locators
                    .iter()
                    .map(|l| l.address)
                    .filter(|a| !record.locators.iter().any(|n| n.address == *a))
                    .collect();
                let old_xtr = old.xtr;
                old.etr = from;
                old.xtr = reg.xtr;
                old.record = record.clone();
                old.proxy_reply = reg.proxy_reply;
                old.refreshed_at = now;
                old.expires = expires;
                if changed {
                    self.counters.registrations_changed += 1;
                    // Tell the previous locators that the mapping moved away from them.
                    for addr in dedup(gone) {
                        let nonce = self.fresh_nonce();
                        let notify = MapNotify {
                            rtr: false,
                            nonce,
                            auth: Auth::zeroed(self.cfg.sites[site].algorithm),
                            records: vec![record.clone()],
                            xtr: old_xtr,
                            ..MapNotify::default()
                        };
                        self.start_unsolicited(
                            local_addr,
                            SocketAddr::new(addr, CONTROL_PORT),
                            &notify,
                            site,
                            now,
                            out,
                        );
                    }
                    self.notify_subscribers(&k, &record, now, out);
                } else {
                    self.counters.registrations_refreshed += 1;
                }
            }
            None => {
                self.regs.insert(
                    k,
                    Registration {
                        site,
                        etr: from,
                        xtr: reg.xtr,
                        record: record.clone(),
                        proxy_reply: reg.proxy_reply,
                        registered_at: now,
                        refreshed_at: now,
                        expires,
                    },
                );
                self.reg_lengths.add(k.is_ipv4(), k.prefix.len());
                self.expiries.insert((expires, k));
                self.counters.registrations_created += 1;
                self.notify_subscribers(&k, &record, now, out);
            }
        }
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

fn dedup(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v.dedup();
    v
}
