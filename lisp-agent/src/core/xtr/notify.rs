//! Map-Notify records the map-server sends on its own (RFC 9301 §5.7 unsolicited Map-Notify,
//! e.g. after an EID moved; RFC 9437 publications to a subscriber): once the message has
//! verified with that map-server's key, its records are the mapping system's current word, so
//! they update the map-cache exactly as an answer would — installed or replaced with their
//! locators, removed when withdrawn (TTL 0 or no locators) — and end any resolution they
//! answer. This is how a subscribed ITR learns a changed RLOC set without sending traffic.
//!
//! Records that are not map-cache material are skipped, each counted: one of our own
//! database-mappings (our registration echoed), a static prefix, a /0. A record of ours with
//! only our own locators (an EID that came back to us) removes an entry learnt while it was
//! away instead of installing one to ourselves.

use lisp_common::wire::control::MapNotify;

use super::resolve::CacheChange;
use super::{Reject, Xtr, covers, from_wire_eid};
use crate::core::action::Action;
use crate::core::time::Timestamp;

impl Xtr {
    /// Applies the records of an authenticated unsolicited Map-Notify. False if the message is
    /// not for us (another xTR's xTR-ID): then nothing is applied, and it is not acknowledged.
    pub(super) fn apply_notify_records(
        &mut self,
        now: Timestamp,
        n: &MapNotify,
        out: &mut Vec<Action>,
    ) -> bool {
        if let (Some(theirs), Some(ours)) = (n.xtr, self.cfg.xtr_id)
            && theirs.xtr_id != ours.xtr_id
        {
            self.counters.reject(Reject::NotifyOtherXtr);
            return false;
        }
        for rec in &n.records {
            let eid = from_wire_eid(&rec.eid);
            if self.cfg.database_mappings.iter().any(|m| m.eid == eid) {
                self.counters.reject(Reject::NotifyOwnRecord);
                continue;
            }
            let eid = match self.cache_prefix_for(eid, &eid) {
                Ok(e) => e,
                Err(why) => {
                    self.counters.reject(why);
                    continue;
                }
            };
            let ours = !rec.locators.is_empty()
                && rec
                    .locators
                    .iter()
                    .all(|l| self.cfg.locators.contains(&l.address));
            let data = if rec.locators.is_empty() || ours {
                None
            } else {
                self.cache_data_of(rec)
            };
            match self.cache_apply(now, eid, rec.ttl, data, out) {
                Ok(CacheChange::Installed) => self.counters.notify_cache_updated += 1,
                Ok(CacheChange::Removed) => self.counters.notify_cache_removed += 1,
                Ok(CacheChange::Unchanged) => {}
                Err(Reject::ReplyStatic) => {
                    self.counters.reject(Reject::NotifyStatic);
                    continue;
                }
                Err(why) => {
                    self.counters.reject(why);
                    continue;
                }
            }
            // The mapping system has spoken for `eid`: resolutions inside it are answered.
            let answered: Vec<_> = self
                .pending
                .keys()
                .filter(|p| covers(&eid, p))
                .copied()
                .collect();
            for p in answered {
                self.remove_pending(&p);
            }
        }
        true
    }
}
