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
//! Bounded: at most `limits.max_pending` resolutions (live or held down) and
//! `limits.max_cache` learnt entries. A full pending table first drops a held-down resolution
//! (it only suppresses misses) and otherwise refuses the miss, never a live resolution, so a
//! scan of the EID space costs at most `max_pending` Map-Requests per second and a real
//! destination gets room at the latest when the scan's resolutions give up.
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
    Action as WireAction, Address, Ecm, IpPrefix, MapReply, MapRequest, Message, Record, XtrId,
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

/// What [`Xtr::cache_apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CacheChange {
    Installed,
    Removed,
    Unchanged,
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
        if self.start_request(now, host, src, false, &mut out) {
            self.counters.miss_resolving += 1;
        }
        out
    }

    /// Starts a resolution of `eid` (sends the first Map-Request). False, counted, if there is
    /// no map-resolver or no room in the pending table.
    pub(super) fn start_request(
        &mut self,
        now: Timestamp,
        eid: EidPrefix,
        src: IpAddr,
        smr_invoked: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.cfg.map_resolvers.is_empty() {
            self.counters.reject(Reject::MissNoResolver);
            return false;
        }
        if self.remove_pending(&eid).is_none()
            && self.pending.len() >= self.cfg.limits.max_pending
            && !self.evict_held_down()
        {
            self.counters.reject(Reject::PendingTableFull);
            return false;
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
        true
    }

    /// Removes a pending resolution with its timer and request nonces.
    pub(super) fn remove_pending(&mut self, eid: &EidPrefix) -> Option<Pending> {
        let p = self.pending.remove(eid)?;
        self.pending_timers.remove(&(p.deadline, *eid));
        for n in &p.nonces {
            self.request_nonces.remove(n);
        }
        if p.hold_down {
            self.held_down -= 1;
        }
        Some(p)
    }

    /// Makes room in a full pending table by dropping a held-down resolution: it only
    /// suppresses misses for a destination that did not answer, while a live one waits for an
    /// answer. Live resolutions are never dropped (their replies would be refused), so under a
    /// scan new misses are refused instead until resolutions give up. False if none is held
    /// down.
    fn evict_held_down(&mut self) -> bool {
        if self.held_down == 0 {
            return false;
        }
        // Hold-down deadlines lie 30 s out, retransmit deadlines 1 s: the latest deadlines are
        // held-down ones, so this finds one within a few steps.
        let victim = self
            .pending_timers
            .iter()
            .rev()
            .map(|(_, eid)| *eid)
            .find(|eid| self.pending.get(eid).is_some_and(|p| p.hold_down));
        let Some(eid) = victim else {
            return false;
        };
        self.remove_pending(&eid);
        self.counters.pending_evicted += 1;
        true
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
        let subscribe = self.cfg.subscribe.then_some(self.cfg.xtr_id);
        let payload = build_ecm_request(nonce, &eid, p.src, itr_rlocs, p.smr_invoked, subscribe);
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
                // Hold-down over: the next miss starts afresh (its timer is already popped).
                self.remove_pending(&eid);
                continue;
            }
            if p.sent >= MAX_REQUESTS {
                p.hold_down = true;
                self.held_down += 1;
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
        // The record must answer what we asked: a prefix that covers the EID asked for. Nothing
        // else in the reply is looked at, however well it is signed by the nonce: an ETR or a
        // map-server has no business telling us about other prefixes here.
        let Some(rec) = r
            .records
            .iter()
            .find(|rec| covers(&from_wire_eid(&rec.eid), &asked))
        else {
            self.counters.reject(Reject::ReplyEidMismatch);
            return;
        };
        let eid = match self.cache_prefix_for(from_wire_eid(&rec.eid), &asked) {
            Ok(eid) => eid,
            Err(why) => {
                self.counters.reject(why);
                return;
            }
        };
        let Some(data) = self.cache_data_of(rec) else {
            self.counters.reject(Reject::ReplyBadRecord);
            return;
        };
        self.counters.rx_map_reply += 1;
        let Some(p) = self.remove_pending(&asked) else {
            return;
        };
        // Answered by this resolver: start there next time.
        self.resolver_cursor = p.resolver;
        match self.cache_apply(now, eid, rec.ttl, Some(data), out) {
            Ok(CacheChange::Installed) => self.counters.map_cache_installed += 1,
            Ok(_) => {}
            Err(why) => self.counters.reject(why),
        }
    }

    /// The prefix under which a record answering `asked` is cached: the record's own, narrowed
    /// to the configured EID space around `asked` when it is broader (a mapping for a /8 holds
    /// for the /24 of EID space inside it, and caching the /8 would capture underlay traffic).
    /// A /0 that nothing narrows is refused: it would capture every destination.
    pub(super) fn cache_prefix_for(
        &self,
        record: EidPrefix,
        asked: &EidPrefix,
    ) -> Result<EidPrefix, Reject> {
        let space = self
            .cfg
            .eid_space
            .iter()
            .map(|p| EidPrefix::new(asked.instance_id, p.addr, p.len))
            .filter(|p| covers(p, asked))
            .max_by_key(|p| p.len);
        let eid = match space {
            Some(space) if space.len > record.len => space,
            _ => record,
        };
        if eid.len == 0 {
            return Err(Reject::ReplyTooBroad);
        }
        Ok(eid)
    }

    /// Puts a mapping into the learnt map-cache: `None` or a TTL of 0 removes it, anything else
    /// installs or replaces it. Static entries are never touched.
    pub(super) fn cache_apply(
        &mut self,
        now: Timestamp,
        eid: EidPrefix,
        ttl_min: u32,
        data: Option<MapCacheData>,
        out: &mut Vec<Action>,
    ) -> Result<CacheChange, Reject> {
        if self.statics.contains_key(&eid) {
            // Neither install (it would replace the static entry) nor remove.
            return Err(Reject::ReplyStatic);
        }
        let data = match data {
            Some(d) if ttl_min > 0 => d,
            _ => {
                if self.cache_remove(&eid) {
                    out.push(Action::RemoveMapCache { eid });
                    return Ok(CacheChange::Removed);
                }
                return Ok(CacheChange::Unchanged);
            }
        };
        let ttl = Duration::from_secs(u64::from(ttl_min) * 60);
        if !self.cache_insert(eid, data.clone(), now + ttl) {
            return Err(Reject::CacheFull);
        }
        out.push(Action::InstallMapCache { eid, data, ttl });
        Ok(CacheChange::Installed)
    }

    /// A Map-Reply record as map-cache data. Locators we cannot use (unreachable, or of a family
    /// we have no RLOC for) are kept but with priority 255, so the locator set stays as sent.
    pub(super) fn cache_data_of(&self, rec: &Record) -> Option<MapCacheData> {
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

    /// False (nothing changed) if `eid` is new and the cache is full.
    fn cache_insert(&mut self, eid: EidPrefix, data: MapCacheData, expires: Timestamp) -> bool {
        if !self.cache.contains_key(&eid) && self.cache.len() >= self.cfg.limits.max_cache {
            return false;
        }
        if let Some(old) = self.cache.insert(eid, CacheEntry { data, expires }) {
            self.cache_timers.remove(&(old.expires, eid));
        } else {
            self.cache_lengths.add(eid.addr.is_ipv4(), eid.len);
        }
        self.cache_timers.insert((expires, eid));
        true
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

    /// An SMR arrived saying that the mapping of `changed` (its Source-EID) is stale. If
    /// `changed` falls in a learnt map-cache entry, ask the mapping system for `changed` itself
    /// (not for the cached prefix): a host that moved out of a cached /24 is then learnt as the
    /// /32 the map-server now holds, while an unchanged prefix simply comes back as the /24. At
    /// most one SMR-invoked request per 3 s per cached prefix. `our_eid` is the SMR's record,
    /// the sender's view of our EID-prefix: the source EID of the request when it is ours (as
    /// OOR does). Nothing to do when a static entry is the best match (see the module comment).
    pub(super) fn on_smr(
        &mut self,
        now: Timestamp,
        instance_id: u32,
        changed: IpAddr,
        our_eid: Option<EidPrefix>,
        out: &mut Vec<Action>,
    ) {
        let Some(m) = self.best_match(instance_id, changed) else {
            self.counters.reject(Reject::SmrNotCached);
            return;
        };
        if m.is_static {
            self.counters.reject(Reject::SmrStatic);
            return;
        }
        let cached = m.eid;
        match super::rate_limit(
            &mut self.smr_invoked_last,
            cached,
            now,
            self.cfg.limits.max_rate_entries,
        ) {
            Ok(true) => {}
            Ok(false) => {
                self.counters.reject(Reject::SmrRateLimited);
                return;
            }
            Err(why) => {
                self.counters.reject(why);
                return;
            }
        }
        let src = our_eid
            .filter(|e| {
                e.addr.is_ipv4() == changed.is_ipv4()
                    && self.cfg.database_mappings.iter().any(|m| covers(&m.eid, e))
            })
            .map(|e| e.addr)
            .unwrap_or_else(|| self.own_eid_like(instance_id, &changed));
        self.start_request(now, EidPrefix::host(instance_id, changed), src, true, out);
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
    subscribe: Option<Option<XtrId>>,
) -> Option<Vec<u8>> {
    let req = MapRequest {
        smr_invoked,
        // RFC 9437: N on the EID record subscribes, the xTR-ID names the subscriber.
        notify_requested: subscribe.is_some(),
        xtr: subscribe.flatten(),
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
