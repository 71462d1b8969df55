//! EID-prefix keys and the table of configured site prefixes: which site owns an EID, and the
//! largest prefix around an EID that belongs to no site (for negative Map-Replies).

use std::collections::HashMap;
use std::net::IpAddr;

use lisp_common::wire::control::{Eid, IpPrefix};

use super::config::SiteConfig;
use crate::core::prefix_lengths::LengthSet;

/// A normalized EID-prefix: the instance-id LCAF is optional on the wire, and "no LCAF" is
/// instance 0, so both spellings of the default instance meet in one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub iid: u32,
    pub prefix: IpPrefix,
}

/// Host bits below the mask are cleared: a prefix as received may carry them.
impl From<&Eid> for Key {
    fn from(e: &Eid) -> Self {
        Key {
            iid: e.instance_id.unwrap_or(0),
            prefix: e.prefix.network(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]{}", self.iid, self.prefix)
    }
}

impl Key {
    /// The prefix of length `len` (≤ this one's) that contains this one.
    pub fn truncate(&self, len: u8) -> Key {
        let len = len.min(self.prefix.len());
        Key {
            iid: self.iid,
            // Cannot fail: `len` fits the family.
            prefix: IpPrefix::new_masked(self.prefix.addr(), len).unwrap_or(self.prefix),
        }
    }

    pub fn covers(&self, other: &Key) -> bool {
        self.iid == other.iid && self.prefix.covers(&other.prefix)
    }

    /// Same instance and one of the two contains the other.
    pub fn overlaps(&self, other: &Key) -> bool {
        self.covers(other) || other.covers(self)
    }

    pub fn is_ipv4(&self) -> bool {
        self.prefix.is_ipv4()
    }

    /// A /32 or /128: a host (what moves).
    pub fn is_host(&self) -> bool {
        self.prefix.len() == self.prefix.max_len()
    }

    /// As an [`Eid`] carrying an instance-id LCAF only when `with_iid` (or the instance is not 0).
    pub fn to_eid(self, with_iid: bool) -> Eid {
        let iid = (with_iid || self.iid != 0).then_some(self.iid);
        Eid::new(iid, self.prefix)
    }
}

/// Where a configured site prefix sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteMatch {
    pub site: usize,
    pub prefix: Key,
    pub accept_more_specifics: bool,
}

/// The configured site prefixes, indexed for longest-prefix match. A prefix is normally one
/// site's; a prefix that accepts more-specifics may be shared by several sites (a dynamic-EID
/// prefix that hosts move across, each site with its own key): which one a Map-Register is for
/// is then decided by the key it verifies with.
#[derive(Clone, Debug, Default)]
pub struct SiteTable {
    /// Sites owning each prefix, in configuration order, with their accept-more-specifics.
    by_prefix: HashMap<Key, Vec<(usize, bool)>>,
    lengths: LengthSet,
}

impl SiteTable {
    pub fn new(sites: &[SiteConfig]) -> Self {
        let mut t = SiteTable::default();
        for (i, s) in sites.iter().enumerate() {
            for p in &s.prefixes {
                let k = Key::from(&p.eid);
                let owners = t.by_prefix.entry(k).or_default();
                if owners.is_empty() {
                    t.lengths.add(k.is_ipv4(), k.prefix.len());
                }
                if !owners.iter().any(|(s, _)| *s == i) {
                    owners.push((i, p.accept_more_specifics));
                }
            }
        }
        t
    }

    /// The most specific site prefix containing `k` (or equal to it); for a shared prefix, the
    /// first site that configured it.
    pub fn longest_covering(&self, k: &Key) -> Option<SiteMatch> {
        let (p, owners) = self.longest(k)?;
        owners.first().map(|&(site, ams)| SiteMatch {
            site,
            prefix: p,
            accept_more_specifics: ams,
        })
    }

    /// The most specific site prefix containing `k`, with every site that owns it.
    pub fn longest(&self, k: &Key) -> Option<(Key, &[(usize, bool)])> {
        self.lengths
            .descending(k.is_ipv4(), k.prefix.len())
            .find_map(|len| {
                let p = k.truncate(len);
                self.by_prefix.get(&p).map(|o| (p, o.as_slice()))
            })
    }

    /// The largest prefix containing `k` that overlaps no site prefix, or `None` if `k` itself
    /// overlaps one. This is the EID-prefix of a negative Map-Reply for a non-LISP destination
    /// (RFC 9301 §8.1; OOR answers 192.0.0.0/6 for 192.0.2.1 next to 198.51.100.0/24 and
    /// 203.0.113.0/24, capture 08). Linear in the number of site prefixes per length: only asked
    /// for EIDs outside every site.
    pub fn non_lisp_hole(&self, k: &Key) -> Option<Key> {
        (0..=k.prefix.len())
            .map(|len| k.truncate(len))
            .find(|cand| !self.by_prefix.keys().any(|p| p.overlaps(cand)))
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// Does `addr` belong to the family of `like`?
pub fn same_family(addr: IpAddr, like: IpAddr) -> bool {
    addr.is_ipv4() == like.is_ipv4()
}
