//! Resolution (RFC 9301 §6.1, §5.3): a map-cache miss becomes an ECM Map-Request to a
//! map-resolver; the Map-Reply with a matching nonce becomes a map-cache entry that expires with
//! its TTL.
//!
//! Rate limits: at most one Map-Request per second per EID-prefix (the retransmit timer is the
//! only sender while a request is outstanding); after 10 unanswered Map-Requests the prefix is
//! held down for 30 s, during which misses are ignored. Each retransmission goes to the next
//! map-resolver, and the resolver that last answered is the first one tried for new requests,
//! so that a dead resolver costs one second once, not on every miss.
//!
//! Static map-cache entries (config `map-cache`) sit beside the learnt ones and take part in the
//! longest-prefix match like the data plane's, but resolution never touches them: a Map-Reply
//! record with exactly a static prefix is not installed (installing it would overwrite the
//! static entry in the data plane, and its expiry would then delete it), and an SMR for an EID
//! whose best match is static re-resolves nothing, since the operator's entry is the mapping
//! and stays until the config changes. A less or more specific learnt prefix is fine: the
//! longest match decides, as in the data plane.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lisp_common::maps::MAX_RLOCS;
use lisp_common::wire::control::{
    Action as WireAction, Address, Ecm, IpPrefix, MapReply, MapRequest, Message, Record,
};

use super::{Reject, Xtr, covers, from_wire_eid, to_wire_eid, wire_iid};
use crate::core::action::{Action, CONTROL_PORT, EidPrefix, MapCacheData};
use crate::core::map_cache::{Locator, Negative, PRIORITY_UNUSABLE};
use crate::core::time::Timestamp;

/// One Map-Request per second per EID-prefix.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Map-Requests sent for one EID before giving up.
pub const MAX_REQUESTS: u32 = 10;
/// Wait after giving up before a miss may start a new resolution.
pub const HOLD_DOWN: Duration = Duration::from_secs(30);
/// Minimum time between two SMR-invoked Map-Requests for one EID-prefix.
pub const SMR_INVOKED_INTERVAL: Duration = Duration::from_secs(3);

/// A resolution in progress (or held down).
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// Source EID of the packet that caused it (inner source of the ECM).
    src: IpAddr,
    /// Nonces of the Map-Requests sent for it (any may be answered).
    nonces: Vec<u64>,
    sent: u32,
    resolver: usize,
    smr_invoked: bool,
    /// The deadline in `pending_timers`: the next retransmission, or the end of the hold-down.
    deadline: Timestamp,
    hold_down: bool,
}

/// A map-cache entry learnt from a Map-Reply.
#[derive(Clone, Debug)]
pub(super) struct CacheEntry {
    pub(super) data: MapCacheData,
    pub(super) expires: Timestamp,
}

/// The entry the data plane would use for an address.
pub(super) struct Match<'a> {
    pub(super) eid: EidPrefix,
    pub(super) data: &'a MapCacheData,
    pub(super) is_static: bool,
}

/// A learnt map-cache entry as [`super::Xtr::cached`] lists it.
#[derive(Clone, Copy, Debug)]
pub struct CachedMapping<'a> {
    pub data: &'a MapCacheData,
    pub expires: Timestamp,
}

impl Xtr {
    /// The data plane saw a packet from `src` to `dst` with no map-cache entry.
    pub fn handle_miss(
        &mut self,
        now: Timestamp,
        instance_id: u32,
        src: IpAddr,
        dst: IpAddr,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if src.is_ipv4() != dst.is_ipv4() {
            self.counters.reject(Reject::MissBadAddress);
            return out;
        }
        if !self.cfg.eid_space.is_empty()
            && !self
                .cfg
                .eid_space
                .iter()
                .any(|p| EidPrefix::new(instance_id, p.addr, p.len).contains(instance_id, dst))
        {
            self.counters.reject(Reject::MissOutsideEidSpace);
            return out;
        }
        if let Some(m) = self.best_match(instance_id, dst) {
            // A send-map-request negative entry asks for exactly this; any other entry means the
            // data plane has not seen our install yet.
            if *m.data != MapCacheData::Negative(Negative::SendMapRequest) {
                self.counters.reject(Reject::MissCached);
                return out;
            }
        }
        let host = EidPrefix::host(instance_id, dst);
        if let Some(p) = self.pending.get(&host) {
            self.counters.reject(if p.hold_down {
                Reject::MissHoldDown
            } else {
                Reject::MissPending
            });
            return out;
        }
        if self.cfg.map_resolvers.is_empty() {
            self.counters.reject(Reject::MissNoResolver);
            return out;
        }
        self.counters.miss_resolving += 1;
        self.start_request(now, host, src, false, &mut out);
        out
    }

    /// Starts a resolution of `eid` (sends the first Map-Request).
    pub(super) fn start_request(
        &mut self,
        now: Timestamp,
        eid: EidPrefix,
        src: IpAddr,
        smr_invoked: bool,
        out: &mut Vec<Action>,
    ) {
        if self.cfg.map_resolvers.is_empty() {
            self.counters.reject(Reject::MissNoResolver);
            return;
        }
        if let Some(old) = self.pending.remove(&eid) {
            self.drop_pending_state(&eid, &old);
        }
        let p = Pending {
            src,
            nonces: Vec::new(),
            sent: 0,
            resolver: self.resolver_cursor % self.cfg.map_resolvers.len(),
            smr_invoked,
            deadline: now,
            hold_down: false,
        };
        self.pending.insert(eid, p);
        self.send_request(now, eid, out);
    }

    fn drop_pending_state(&mut self, eid: &EidPrefix, p: &Pending) {
        self.pending_timers.remove(&(p.deadline, *eid));
        for n in &p.nonces {
            self.request_nonces.remove(n);
        }
    }

    /// Sends (or re-sends) the Map-Request of a pending resolution and schedules the next step.
    fn send_request(&mut self, now: Timestamp, eid: EidPrefix, out: &mut Vec<Action>) {
        let nonce = self.nonces.next_nonce();
        let resolvers = self.cfg.map_resolvers.len();
        let itr_rlocs = self.cfg.locators.clone();
        let Some(p) = self.pending.get_mut(&eid) else {
            return;
        };
        let resolver_idx = p.resolver % resolvers.max(1);
        let resolver = self.cfg.map_resolvers[resolver_idx];
        let payload = build_ecm_request(nonce, &eid, p.src, itr_rlocs, p.smr_invoked);
        self.pending_timers.remove(&(p.deadline, eid));
        p.nonces.push(nonce);
        p.sent += 1;
        let retry = p.sent > 1;
        let smr = p.smr_invoked;
        p.deadline = now + REQUEST_INTERVAL;
        self.pending_timers.insert((p.deadline, eid));
        self.request_nonces.insert(nonce, eid);
        let Some(payload) = payload else {
            self.counters.reject(Reject::MissBadAddress);
            return;
        };
        self.counters.sent_map_request += 1;
        if retry {
            self.counters.sent_map_request_retry += 1;
        }
        if smr {
            self.counters.sent_smr_invoked += 1;
        }
        out.push(Action::Send {
            from: self.local_locator_like(&resolver),
            to: SocketAddr::new(resolver, CONTROL_PORT),
            payload,
        });
    }

    pub(super) fn resolve_due(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        while let Some(&(t, eid)) = self.pending_timers.first() {
            if t > now {
                break;
            }
            self.pending_timers.pop_first();
            let Some(p) = self.pending.get_mut(&eid) else {
                continue;
            };
            if p.hold_down {
                // Hold-down over: the next miss starts afresh.
                let p = self.pending.remove(&eid);
                if let Some(p) = p {
                    self.drop_pending_state(&eid, &p);
                }
                continue;
            }
            if p.sent >= MAX_REQUESTS {
                p.hold_down = true;
                p.deadline = now + HOLD_DOWN;
                self.pending_timers.insert((p.deadline, eid));
                self.counters.resolve_gave_up += 1;
                continue;
            }
            // Unanswered: try the next map-resolver, and make it the first choice from now on.
            let n = self.cfg.map_resolvers.len().max(1);
            p.resolver = (p.resolver + 1) % n;
            self.resolver_cursor = p.resolver;
            self.send_request(now, eid, out);
        }
    }

    pub(super) fn on_map_reply(&mut self, now: Timestamp, r: &MapReply, out: &mut Vec<Action>) {
        let Some(&asked) = self.request_nonces.get(&r.nonce) else {
            self.counters.reject(Reject::ReplyUnsolicited);
            return;
        };
        // The record must be about what we asked: the prefix covering the EID (the usual case)
        // or, for an SMR-invoked request about a prefix, one inside it.
        let Some(rec) = r.records.iter().find(|rec| {
            let e = from_wire_eid(&rec.eid);
            covers(&e, &asked) || covers(&asked, &e)
        }) else {
            self.counters.reject(Reject::ReplyEidMismatch);
            return;
        };
        let Some(data) = self.cache_data_of(rec) else {
            self.counters.reject(Reject::ReplyBadRecord);
            return;
        };
        self.counters.rx_map_reply += 1;
        let Some(p) = self.pending.remove(&asked) else {
            return;
        };
        self.drop_pending_state(&asked, &p);
        // Answered by this resolver: start there next time.
        self.resolver_cursor = p.resolver;
        let eid = from_wire_eid(&rec.eid);
        if self.statics.contains_key(&eid) {
            // Neither install (it would replace the static entry) nor remove (TTL 0).
            self.counters.reject(Reject::ReplyStatic);
            return;
        }
        if rec.ttl == 0 {
            // TTL 0: remove now and do not cache.
            if self.cache_remove(&eid) {
                out.push(Action::RemoveMapCache { eid });
            }
            return;
        }
        let ttl = Duration::from_secs(u64::from(rec.ttl) * 60);
        self.cache_insert(eid, data.clone(), now + ttl);
        self.counters.map_cache_installed += 1;
        out.push(Action::InstallMapCache { eid, data, ttl });
    }

    /// A Map-Reply record as map-cache data. Locators we cannot use (unreachable, or of a family
    /// we have no RLOC for) are kept but with priority 255, so the locator set stays as sent.
    fn cache_data_of(&self, rec: &Record) -> Option<MapCacheData> {
        if rec.locators.is_empty() {
            let n = match rec.action {
                // RFC 9301 §5.4: No-Action on a negative record means no encapsulation.
                WireAction::NoAction | WireAction::NativelyForward => Negative::NativelyForward,
                WireAction::SendMapRequest => Negative::SendMapRequest,
                _ => Negative::Drop,
            };
            return Some(MapCacheData::Negative(n));
        }
        let mut locs: Vec<Locator> = rec
            .locators
            .iter()
            .map(|l| {
                let usable = l.reachable && self.local_locator_like(&l.address).is_some();
                Locator {
                    addr: l.address,
                    priority: if usable {
                        l.priority
                    } else {
                        PRIORITY_UNUSABLE
                    },
                    weight: l.weight,
                }
            })
            .collect();
        if locs.len() > MAX_RLOCS {
            // The data plane holds 8: keep the best ones.
            locs.sort_by_key(|l| l.priority);
            locs.truncate(MAX_RLOCS);
        }
        Some(MapCacheData::Positive(locs))
    }

    fn cache_insert(&mut self, eid: EidPrefix, data: MapCacheData, expires: Timestamp) {
        if let Some(old) = self.cache.insert(eid, CacheEntry { data, expires }) {
            self.cache_timers.remove(&(old.expires, eid));
        } else {
            self.cache_lengths.add(eid.addr.is_ipv4(), eid.len);
        }
        self.cache_timers.insert((expires, eid));
    }

    fn cache_remove(&mut self, eid: &EidPrefix) -> bool {
        let Some(old) = self.cache.remove(eid) else {
            return false;
        };
        self.cache_timers.remove(&(old.expires, *eid));
        self.cache_lengths.remove(eid.addr.is_ipv4(), eid.len);
        true
    }

    /// Longest-prefix match in the learnt map-cache.
    pub(super) fn cache_lookup(
        &self,
        instance_id: u32,
        addr: IpAddr,
    ) -> Option<(EidPrefix, &CacheEntry)> {
        let v4 = addr.is_ipv4();
        for len in self.cache_lengths.descending(v4, 128) {
            // Lengths are counted per family, so `len` always fits `addr`.
            let Ok(net) = IpPrefix::new_masked(addr, len) else {
                continue;
            };
            let key = EidPrefix::new(instance_id, net.addr(), len);
            if let Some(e) = self.cache.get(&key) {
                return Some((key, e));
            }
        }
        None
    }

    /// Longest-prefix match over the static and the learnt entries together, as the data plane
    /// sees them. A learnt prefix never equals a static one (`on_map_reply` refuses it).
    pub(super) fn best_match(&self, instance_id: u32, addr: IpAddr) -> Option<Match<'_>> {
        let learnt = self.cache_lookup(instance_id, addr).map(|(eid, e)| Match {
            eid,
            data: &e.data,
            is_static: false,
        });
        let fixed = self
            .statics
            .iter()
            .filter(|(p, _)| p.contains(instance_id, addr))
            .max_by_key(|(p, _)| p.len)
            .map(|(p, data)| Match {
                eid: *p,
                data,
                is_static: true,
            });
        match (learnt, fixed) {
            (Some(l), Some(f)) if l.eid.len > f.eid.len => Some(l),
            (l, f) => f.or(l),
        }
    }

    pub(super) fn expire_due(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        while let Some(&(t, eid)) = self.cache_timers.first() {
            if t > now {
                break;
            }
            self.cache_remove(&eid);
            self.counters.map_cache_expired += 1;
            out.push(Action::RemoveMapCache { eid });
        }
    }

    /// An SMR for `eid` arrived: re-resolve the cached prefix covering it through the mapping
    /// system, at most once per 3 s per prefix. Nothing to do when a static entry is the best
    /// match (see the module comment).
    pub(super) fn on_smr(&mut self, now: Timestamp, eid: EidPrefix, out: &mut Vec<Action>) {
        let Some(m) = self.best_match(eid.instance_id, eid.addr) else {
            self.counters.reject(Reject::SmrNotCached);
            return;
        };
        if m.is_static {
            self.counters.reject(Reject::SmrStatic);
            return;
        }
        let cached = m.eid;
        if let Some(&t) = self.smr_invoked_last.get(&cached)
            && now - t < SMR_INVOKED_INTERVAL
        {
            self.counters.reject(Reject::SmrRateLimited);
            return;
        }
        self.smr_invoked_last.insert(cached, now);
        let src = self.own_eid_like(cached.instance_id, &cached.addr);
        self.start_request(now, cached, src, true, out);
    }

    /// An address of ours in the family of `a` to put as the source EID of requests we make on
    /// our own account (SMR-invoked): a database-mapping EID, else a locator, else unspecified.
    pub(super) fn own_eid_like(&self, instance_id: u32, a: &IpAddr) -> IpAddr {
        self.cfg
            .database_mappings
            .iter()
            .map(|m| &m.eid)
            .find(|e| e.instance_id == instance_id && e.addr.is_ipv4() == a.is_ipv4())
            .map(|e| e.addr)
            .or_else(|| self.local_locator_like(a))
            .unwrap_or(if a.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            })
    }
}

/// An ECM around a Map-Request for `eid`: inner source = the EID that caused it, inner
/// destination = the EID wanted, UDP 4342 → 4342 with its checksum (the codec computes it).
fn build_ecm_request(
    nonce: u64,
    eid: &EidPrefix,
    src: IpAddr,
    itr_rlocs: Vec<IpAddr>,
    smr_invoked: bool,
) -> Option<Vec<u8>> {
    let req = MapRequest {
        smr_invoked,
        nonce,
        source_eid: Address {
            instance_id: wire_iid(eid.instance_id),
            ip: Some(src),
        },
        itr_rlocs,
        eids: vec![to_wire_eid(eid)?],
        ..MapRequest::default()
    };
    let ecm = Ecm::new(src, eid.addr, Message::MapRequest(req)).ok()?;
    Message::Ecm(ecm).to_vec().ok()
}
