//! The ETR side (RFC 9301 §6.1.5, §6.3, §6.6): authoritative Map-Replies for our own EIDs,
//! RLOC-probe replies, and SMRs — received (re-resolve through the mapping system) and sent
//! (for mobility: tell an ITR its mapping of one of our EIDs is stale).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::{Address, MapReply, MapRequest, Message, Record};

use super::{Reject, Xtr, covers, from_wire_eid, to_wire_eid, wire_iid};
use crate::core::action::{Action, CONTROL_PORT, EidPrefix};
use crate::core::time::Timestamp;

/// At most one SMR per 3 s to one RLOC (RFC 9301 §6.6.2).
pub const SMR_SEND_INTERVAL: Duration = Duration::from_secs(3);

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
            // RFC 9301 §6.6.2: answer an SMR with an SMR-invoked Map-Request through the
            // mapping system, never directly to its sender.
            self.counters.rx_smr += 1;
            for e in &r.eids {
                self.on_smr(now, from_wire_eid(e), out);
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
            let mine: Vec<&super::DatabaseMapping> = match self.dynamic.get(&host) {
                Some(d) => vec![&d.mapping],
                None => self.cfg.database_mappings.iter().collect(),
            };
            for m in mine {
                if !covers(&m.eid, &want) {
                    continue;
                }
                // The p bit marks the locator the probe was addressed to.
                let probed = r.probe.then_some(to.ip());
                let Some(rec) = m.to_record(self.cfg.record_ttl_min, probed) else {
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

    /// Sends an SMR for our `eid` to the ITR at `to_rloc` (for mobility: that ITR's mapping is
    /// stale). At most one per 3 s per RLOC; suppressed ones are counted.
    pub fn send_smr(&mut self, now: Timestamp, eid: EidPrefix, to_rloc: IpAddr) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(&t) = self.smr_sent_last.get(&to_rloc)
            && now - t < SMR_SEND_INTERVAL
        {
            self.counters.reject(Reject::SmrSendRateLimited);
            return out;
        }
        let Some(weid) = to_wire_eid(&eid) else {
            return out;
        };
        let req = MapRequest {
            smr: true,
            nonce: self.nonces.next_nonce(),
            source_eid: Address {
                instance_id: wire_iid(eid.instance_id),
                ip: Some(eid.addr),
            },
            itr_rlocs: self.cfg.locators.clone(),
            eids: vec![weid],
            ..MapRequest::default()
        };
        let Ok(payload) = Message::MapRequest(req).to_vec() else {
            return out;
        };
        self.smr_sent_last.insert(to_rloc, now);
        self.counters.sent_smr += 1;
        out.push(Action::Send {
            from: self.local_locator_like(&to_rloc),
            to: SocketAddr::new(to_rloc, CONTROL_PORT),
            payload,
        });
        out
    }
}
