//! Registrations per EID-prefix, kept per registrant (RFC 9301 merge semantics), and the
//! merged view answered for the prefix.
//!
//! Several ETRs of one site may register the same EID-prefix, each with its own locators (a
//! multihomed site). Each registrant — its xTR-ID when the Map-Register has the I bit, else its
//! source address — has its own entry and expiry; the prefix is answered with the union of
//! their locators. A refresh by one registrant changes nothing in the union, so neither the
//! answer nor the Map-Notifies flap; a withdrawal or expiry removes only that registrant's
//! locators.
//!
//! Mobility: a prefix is held by one *registering site* at a time — the configured site and,
//! when registrants send the xTR-ID trailer, its Site-ID (the xTRs of one site share it). A
//! registration from another registering site takes the prefix over: the previous registrants
//! are dropped (the newest site wins, e.g. a host /32 that moved) and the map-server notifies
//! their locators. Two xTRs of one site configured with different Site-IDs would take a shared
//! prefix from each other at every refresh: that is a misconfiguration.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use lisp_common::wire::control::{Record, XtrId};

use crate::core::time::Timestamp;

/// Who registered: the xTR-ID (I bit) or, without one, the source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistrantId {
    Xtr([u8; 16]),
    Etr(IpAddr),
}

impl fmt::Display for RegistrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrantId::Xtr(id) => {
                write!(f, "xtr-id ")?;
                id.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            RegistrantId::Etr(a) => write!(f, "etr {a}"),
        }
    }
}

/// One registrant's registration of a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registrant {
    pub id: RegistrantId,
    /// Where its last accepted Map-Register came from.
    pub etr: SocketAddr,
    pub xtr: Option<XtrId>,
    /// The record as registered (EID masked, locator L/p bits cleared).
    pub record: Record,
    pub proxy_reply: bool,
    pub registered_at: Timestamp,
    pub refreshed_at: Timestamp,
    pub expires: Timestamp,
}

/// A live EID-prefix: its registrants and the merged view answered for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Index into [`MapServerConfig::sites`](super::MapServerConfig::sites).
    pub site: usize,
    /// Site-ID (xTR-ID trailer) of the registering site; `None` while no registrant sent one.
    pub site_id: Option<u64>,
    /// The registrant heard from most recently: where a Map-Request is forwarded.
    pub etr: SocketAddr,
    pub xtr: Option<XtrId>,
    /// The union of the registrants' records: what Map-Replies, Map-Notifies and publications
    /// carry.
    pub record: Record,
    /// Some registrant asked the map-server to answer for it.
    pub proxy_reply: bool,
    pub registered_at: Timestamp,
    pub refreshed_at: Timestamp,
    /// The latest registrant expiry.
    pub expires: Timestamp,
    /// Sorted by id, so that the merged record does not depend on the order of refreshes.
    pub registrants: Vec<Registrant>,
}

impl Registration {
    /// An empty registration for `first`'s prefix; [`Registration::put`] fills it.
    pub fn new(site: usize, site_id: Option<u64>, first: &Registrant) -> Self {
        Registration {
            site,
            site_id,
            etr: first.etr,
            xtr: first.xtr,
            record: first.record.clone(),
            proxy_reply: first.proxy_reply,
            registered_at: first.registered_at,
            refreshed_at: first.refreshed_at,
            expires: first.expires,
            registrants: Vec::new(),
        }
    }

    pub fn registrant(&self, id: RegistrantId) -> Option<&Registrant> {
        self.registrants
            .binary_search_by(|r| r.id.cmp(&id))
            .ok()
            .map(|i| &self.registrants[i])
    }

    /// Insert or replace a registrant; returns the one replaced.
    pub fn put(&mut self, r: Registrant) -> Option<Registrant> {
        let old = match self.registrants.binary_search_by(|x| x.id.cmp(&r.id)) {
            Ok(i) => Some(std::mem::replace(&mut self.registrants[i], r)),
            Err(i) => {
                self.registrants.insert(i, r);
                None
            }
        };
        self.recompute();
        old
    }

    pub fn remove(&mut self, id: RegistrantId) -> Option<Registrant> {
        let i = self.registrants.binary_search_by(|x| x.id.cmp(&id)).ok()?;
        let r = self.registrants.remove(i);
        self.recompute();
        Some(r)
    }

    /// Every registrant at once (another registering site took the prefix).
    pub fn take_all(&mut self) -> Vec<Registrant> {
        std::mem::take(&mut self.registrants)
    }

    /// Rebuild the merged view from the registrants (no-op when there is none left).
    fn recompute(&mut self) {
        let Some(first) = self.registrants.first() else {
            return;
        };
        let mut rec = first.record.clone();
        rec.locators.clear();
        for r in &self.registrants {
            // The shortest TTL: no ITR caches a locator longer than its registrant allows.
            rec.ttl = rec.ttl.min(r.record.ttl);
            for l in &r.record.locators {
                // A locator listed by two registrants is kept once, as the first one says.
                if !rec.locators.iter().any(|x| x.address == l.address) {
                    rec.locators.push(*l);
                }
            }
        }
        self.record = rec;
        self.proxy_reply = self.registrants.iter().any(|r| r.proxy_reply);
        self.registered_at = self
            .registrants
            .iter()
            .map(|r| r.registered_at)
            .min()
            .unwrap_or(self.registered_at);
        self.expires = self
            .registrants
            .iter()
            .map(|r| r.expires)
            .max()
            .unwrap_or(self.expires);
        if let Some(last) = self.registrants.iter().max_by_key(|r| r.refreshed_at) {
            self.refreshed_at = last.refreshed_at;
            self.etr = last.etr;
            self.xtr = last.xtr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lisp_common::wire::control::{Eid, IpPrefix, Locator};

    fn reg(id: u8, rlocs: &[(u8, u8)], ttl: u32, at: u64) -> Registrant {
        let eid = Eid::new(
            None,
            IpPrefix::new("198.51.100.0".parse().unwrap(), 24).unwrap(),
        );
        let mut record = Record::new(eid, ttl);
        record.locators = rlocs
            .iter()
            .map(|&(a, prio)| Locator::new(IpAddr::from([192, 0, 2, a]), prio, 50))
            .collect();
        Registrant {
            id: RegistrantId::Etr(IpAddr::from([192, 0, 2, id])),
            etr: SocketAddr::new(IpAddr::from([192, 0, 2, id]), 4342),
            xtr: None,
            record,
            proxy_reply: id == 33,
            registered_at: Timestamp::from_secs(at),
            refreshed_at: Timestamp::from_secs(at),
            expires: Timestamp::from_secs(at + 180),
        }
    }

    #[test]
    fn union_is_independent_of_refresh_order_and_shrinks_per_registrant() {
        let a = reg(17, &[(17, 1), (50, 1)], 1440, 0);
        let b = reg(33, &[(33, 2), (50, 9)], 10, 5);
        let mut x = Registration::new(0, None, &a);
        x.put(a.clone());
        x.put(b.clone());
        let mut y = Registration::new(0, None, &b);
        y.put(b.clone());
        y.put(a.clone());
        assert_eq!(x.record, y.record);
        let addrs: Vec<u8> = x
            .record
            .locators
            .iter()
            .map(|l| match l.address {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect();
        assert_eq!(addrs, vec![17, 50, 33]);
        assert_eq!(x.record.locators[1].priority, 1);
        assert_eq!(x.record.ttl, 10);
        assert!(x.proxy_reply);
        assert_eq!(x.expires, Timestamp::from_secs(185));
        assert_eq!(x.etr, b.etr);
        // A refresh by `a` keeps the union; `b` leaving takes only its own locator away.
        let mut a2 = a.clone();
        a2.refreshed_at = Timestamp::from_secs(60);
        let before = x.record.clone();
        x.put(a2);
        assert_eq!(x.record, before);
        assert_eq!(x.etr, a.etr);
        x.remove(b.id);
        assert_eq!(x.record, a.record);
        assert!(!x.proxy_reply);
    }
}
