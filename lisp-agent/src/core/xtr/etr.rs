//! The ETR side (RFC 9301 §5.4, §6.1, §7.1): authoritative Map-Replies for our own EIDs,
//! RLOC-probe replies, and SMRs — received (re-resolve the changed EID through the mapping
//! system) and sent (data arrived for an EID we no longer hold: tell that ITR its mapping is
//! stale).

use std::net::{IpAddr, SocketAddr};

use lisp_common::wire::control::{Address, MapReply, MapRequest, Message, Record};

use super::{Reject, Xtr, covers, from_wire_eid, rate_limit, to_wire_eid, wire_iid};
use crate::core::action::{Action, CONTROL_PORT, EidPrefix, MapCacheData};
use crate::core::time::Timestamp;

impl Xtr {
    /// A Map-Request, direct or taken out of an ECM. `reply_port` is the UDP port the requester
    /// sent from (the ECM's inner source port when forwarded); `to` is our address it reached.
    pub(super) fn on_map_request(
        &mut self,
        now: Timestamp,
        reply_port: u16,
        to: SocketAddr,
        r: &MapRequest,
        out: &mut Vec<Action>,
    ) {
        if r.smr {
            // RFC 9301 §6.1: answer an SMR with an SMR-invoked Map-Request through the mapping
            // system, never directly to its sender. The Source-EID names the EID whose mapping
            // changed, the record is our prefix as the sender caches it (RFC 9301, OOR: capture
            // 13). An SMR without a Source-EID (older senders) names the changed EIDs in its
            // records instead.
            self.counters.rx_smr += 1;
            let record = r.eids.first().map(from_wire_eid);
            match r.source_eid.ip {
                Some(changed) => {
                    let iid = r.source_eid.instance_id.unwrap_or(0);
                    self.on_smr(now, iid, changed, record, out);
                }
                None => {
                    for e in r.eids.iter().map(from_wire_eid) {
                        self.on_smr(now, e.instance_id, e.addr, None, out);
                    }
                }
            }
            return;
        }
        // Our records for the EIDs asked for.
        let mut records: Vec<Record> = Vec::new();
        for e in &r.eids {
            let want = from_wire_eid(e);
            // A dynamic host is answered with its own /32 or /128, not the prefix around it (a
            // request for a host address: one lookup, whatever the number of hosts).
            let host = EidPrefix::host(want.instance_id, want.addr);
            if let Some(rec) = self.dynamic_record(&host, r.probe.then_some(to.ip())) {
                if !records.iter().any(|x| x.eid == rec.eid) {
                    records.push(rec);
                }
                continue;
            }
            for m in &self.cfg.database_mappings {
                if !covers(&m.eid, &want) {
                    continue;
                }
                // The p bit marks the locator the probe was addressed to.
                let probed = r.probe.then_some(to.ip());
                let Some(rec) = m.to_record(&self.cfg.locators, self.cfg.record_ttl_min, probed)
                else {
                    continue;
                };
                if records.iter().any(|x| x.eid == rec.eid) {
                    continue;
                }
                records.push(rec);
            }
        }
        if records.is_empty() {
            self.counters.reject(Reject::RequestNotOurs);
            return;
        }
        // Reply to an ITR-RLOC we can reach, preferring the family it reached us on.
        let target = r
            .itr_rlocs
            .iter()
            .find(|a| a.is_ipv4() == to.ip().is_ipv4())
            .or_else(|| {
                r.itr_rlocs
                    .iter()
                    .find(|a| self.local_locator_like(a).is_some())
            })
            .copied();
        let Some(target) = target else {
            self.counters.reject(Reject::RequestNoItrRloc);
            return;
        };
        let reply = MapReply {
            probe: r.probe,
            nonce: r.nonce,
            records,
            ..MapReply::default()
        };
        let Ok(payload) = Message::MapReply(reply).to_vec() else {
            self.counters.reject(Reject::Malformed);
            return;
        };
        if r.probe {
            self.counters.rx_probe += 1;
            self.counters.sent_probe_reply += 1;
        } else {
            self.counters.rx_map_request += 1;
            self.counters.sent_map_reply += 1;
        }
        // A probe reply leaves from the probed locator so the prober sees that path work.
        let from = if target.is_ipv4() == to.ip().is_ipv4() && !to.ip().is_unspecified() {
            Some(to.ip())
        } else {
            self.local_locator_like(&target)
        };
        let port = if reply_port == 0 {
            CONTROL_PORT
        } else {
            reply_port
        };
        out.push(Action::Send {
            from,
            to: SocketAddr::new(target, port),
            payload,
        });
    }

    /// The data plane saw LISP data from the ITR at `itr_rloc` for `dst_eid`, which we no longer
    /// hold: tell that ITR with an SMR that its mapping of `dst_eid` is stale. The record is
    /// the prefix we cache for the sender's EID `src_eid` (our view of the ITR's site, as OOR
    /// sends it), or `src_eid` itself when we cache none.
    pub fn handle_data_for_absent_eid(
        &mut self,
        now: Timestamp,
        instance_id: u32,
        itr_rloc: IpAddr,
        src_eid: IpAddr,
        dst_eid: IpAddr,
    ) -> Vec<Action> {
        self.counters.rx_data_for_absent_eid += 1;
        let mut out = Vec::new();
        if src_eid.is_ipv4() != dst_eid.is_ipv4() || self.local_locator_like(&itr_rloc).is_none() {
            self.counters.reject(Reject::AbsentEidBadAddress);
            return out;
        }
        let record = self
            .best_match(instance_id, src_eid)
            .map(|m| m.eid)
            .unwrap_or_else(|| EidPrefix::host(instance_id, src_eid));
        self.smr_to(now, instance_id, dst_eid, record, itr_rloc, &mut out);
        out
    }

    /// Sends an SMR about our `eid` to the ITR at `to_rloc` (its mapping of `eid` is stale).
    /// The record is the cached prefix that `to_rloc` is a locator of, if any (the ITR's site),
    /// else `eid` itself. At most one per 3 s per RLOC; suppressed ones are counted.
    pub fn send_smr(&mut self, now: Timestamp, eid: EidPrefix, to_rloc: IpAddr) -> Vec<Action> {
        let mut out = Vec::new();
        let record = self
            .cache
            .iter()
            .find(|(p, e)| {
                p.instance_id == eid.instance_id
                    && p.addr.is_ipv4() == eid.addr.is_ipv4()
                    && matches!(&e.data, MapCacheData::Positive(l) if l.iter().any(|l| l.addr == to_rloc))
            })
            .map(|(p, _)| *p)
            .unwrap_or(eid);
        self.smr_to(now, eid.instance_id, eid.addr, record, to_rloc, &mut out);
        out
    }

    /// An SMR (RFC 9301 §6.1, the shape of OOR's, capture 13): sent straight to the ITR's RLOC,
    /// Source-EID = the EID that changed (a plain address), ITR-RLOCs = ours, one record = the
    /// receiver's prefix as we know it, a fresh random nonce.
    fn smr_to(
        &mut self,
        now: Timestamp,
        instance_id: u32,
        changed: IpAddr,
        record: EidPrefix,
        to_rloc: IpAddr,
        out: &mut Vec<Action>,
    ) {
        match rate_limit(
            &mut self.smr_sent_last,
            to_rloc,
            now,
            self.cfg.limits.max_rate_entries,
        ) {
            Ok(true) => {}
            Ok(false) => {
                self.counters.reject(Reject::SmrSendRateLimited);
                return;
            }
            Err(why) => {
                self.counters.reject(why);
                return;
            }
        }
        let Some(weid) = to_wire_eid(&record) else {
            return;
        };
        let req = MapRequest {
            smr: true,
            nonce: self.nonces.next_nonce(),
            source_eid: Address {
                instance_id: wire_iid(instance_id),
                ip: Some(changed),
            },
            itr_rlocs: self.cfg.locators.clone(),
            eids: vec![weid],
            ..MapRequest::default()
        };
        let Ok(payload) = Message::MapRequest(req).to_vec() else {
            return;
        };
        self.counters.sent_smr += 1;
        out.push(Action::Send {
            from: self.local_locator_like(&to_rloc),
            to: SocketAddr::new(to_rloc, CONTROL_PORT),
            payload,
        });
    }
}
