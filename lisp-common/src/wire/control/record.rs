//! EID records (RFC 9301 §5.4) and their locators, shared by Map-Reply, Map-Register,
//! Map-Notify(-Ack) and the Map-Reply record of a Map-Request.
//!
//! ```text
//! |                          Record TTL                           |
//! | Locator Count | EID mask-len  | ACT |A|      Reserved         |
//! | Rsvd  |  Map-Version Number   |       EID-Prefix-AFI          |
//! |                          EID-Prefix                           |
//! per locator:
//! |    Priority   |    Weight     |  M Priority   |   M Weight    |
//! |        Unused Flags     |L|p|R|           Loc-AFI             |
//! |                             Locator                           |
//! ```

use super::address::{Eid, emit_ip, ip_wire_len, parse_eid_or_skip, parse_ip_or_skip};
use super::{Error, Reader, Writer, count_u8};
use alloc::vec::Vec;
use core::net::IpAddr;

/// The ACT field of a record: what to do with packets for the EID-prefix (mostly meaningful in
/// negative records, i.e. with no locators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    #[default]
    NoAction,
    NativelyForward,
    SendMapRequest,
    /// Drop/No-Reason.
    Drop,
    DropPolicyDenied,
    DropAuthFailure,
    /// 6 or 7: unassigned; kept so that the message re-encodes to the same bytes.
    Unassigned(u8),
}

impl Action {
    pub fn from_bits(v: u8) -> Self {
        match v & 7 {
            0 => Action::NoAction,
            1 => Action::NativelyForward,
            2 => Action::SendMapRequest,
            3 => Action::Drop,
            4 => Action::DropPolicyDenied,
            5 => Action::DropAuthFailure,
            v => Action::Unassigned(v),
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Action::NoAction => 0,
            Action::NativelyForward => 1,
            Action::SendMapRequest => 2,
            Action::Drop => 3,
            Action::DropPolicyDenied => 4,
            Action::DropAuthFailure => 5,
            Action::Unassigned(v) => v & 7,
        }
    }

    /// Is this one of the drop actions?
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Action::Drop | Action::DropPolicyDenied | Action::DropAuthFailure
        )
    }
}

/// One locator (RLOC) of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Locator {
    /// Unicast priority: lower is preferred; 255 = do not use for unicast.
    pub priority: u8,
    pub weight: u8,
    pub m_priority: u8,
    pub m_weight: u8,
    /// L: the locator is local to the sender (a Map-Register / Map-Reply from the ETR itself).
    pub local: bool,
    /// p: the locator is the one an RLOC-probe reply was sent from.
    pub probed: bool,
    /// R: the locator is reachable.
    pub reachable: bool,
    pub address: IpAddr,
}

impl Locator {
    /// A reachable locator with the given unicast priority/weight (multicast 255/0).
    pub fn new(address: IpAddr, priority: u8, weight: u8) -> Self {
        Locator {
            priority,
            weight,
            m_priority: 255,
            m_weight: 0,
            local: false,
            probed: false,
            reachable: true,
            address,
        }
    }

    pub fn wire_len(&self) -> usize {
        6 + ip_wire_len(&self.address)
    }

    /// `None`: a locator in an LCAF (consumed), which we cannot encapsulate to.
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Option<Self>, Error> {
        let priority = r.u8()?;
        let weight = r.u8()?;
        let m_priority = r.u8()?;
        let m_weight = r.u8()?;
        let flags = r.u16()?;
        let Some(address) = parse_ip_or_skip(r)? else {
            return Ok(None);
        };
        Ok(Some(Locator {
            priority,
            weight,
            m_priority,
            m_weight,
            local: flags & 0x4 != 0,
            probed: flags & 0x2 != 0,
            reachable: flags & 0x1 != 0,
            address,
        }))
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.bytes(&[self.priority, self.weight, self.m_priority, self.m_weight])?;
        let flags = (u16::from(self.local) << 2)
            | (u16::from(self.probed) << 1)
            | u16::from(self.reachable);
        w.u16(flags)?;
        emit_ip(w, &self.address)
    }
}

/// An EID record: a mapping from an EID-prefix to a set of locators (none = negative record).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Record TTL in minutes (0 = remove now, 0xffffffff = forever).
    pub ttl: u32,
    pub action: Action,
    /// A: the record comes from an authoritative source (the ETR or a map-server for it).
    pub authoritative: bool,
    /// 12-bit map-version number (0 = none); larger values are an emit error.
    pub map_version: u16,
    pub eid: Eid,
    pub locators: Vec<Locator>,
}

impl Record {
    /// An authoritative record with no locators yet, action No-Action, map-version 0.
    pub fn new(eid: Eid, ttl: u32) -> Self {
        Record {
            ttl,
            action: Action::NoAction,
            authoritative: true,
            map_version: 0,
            eid,
            locators: Vec::new(),
        }
    }

    /// A negative record (no locators) with an action.
    pub fn negative(eid: Eid, ttl: u32, action: Action) -> Self {
        Record {
            ttl,
            action,
            authoritative: true,
            map_version: 0,
            eid,
            locators: Vec::new(),
        }
    }

    pub fn is_negative(&self) -> bool {
        self.locators.is_empty()
    }

    pub fn wire_len(&self) -> usize {
        10 + self.eid.address().wire_len()
            + self.locators.iter().map(Locator::wire_len).sum::<usize>()
    }

    /// `None`: the record was skipped (its EID in an LCAF we do not know, or every one of its
    /// locators in one), counted in `skipped`; its bytes are consumed either way.
    pub(crate) fn parse(r: &mut Reader<'_>, skipped: &mut Skipped) -> Result<Option<Self>, Error> {
        let ttl = r.u32()?;
        let loc_count = r.u8()?;
        let mask_len = r.u8()?;
        let act = r.u16()?;
        let version = r.u16()?;
        let eid = parse_eid_or_skip(r, mask_len)?;
        // Each locator takes at least 10 bytes: refuse an impossible count before allocating.
        if usize::from(loc_count) * 10 > r.remaining() {
            return Err(Error::Truncated);
        }
        let mut locators = Vec::with_capacity(usize::from(loc_count));
        let mut unusable = 0u16;
        for _ in 0..loc_count {
            match Locator::parse(r)? {
                Some(l) => locators.push(l),
                None => unusable += 1,
            }
        }
        // A record whose locators are all unusable must not turn into a negative record (which
        // would drop or natively forward the EID's traffic): it is skipped instead.
        let Some(eid) = eid.filter(|_| unusable == 0 || !locators.is_empty()) else {
            skipped.records = skipped.records.saturating_add(1);
            return Ok(None);
        };
        skipped.locators = skipped.locators.saturating_add(unusable);
        Ok(Some(Record {
            ttl,
            action: Action::from_bits((act >> 13) as u8),
            authoritative: act & 0x1000 != 0,
            map_version: version & 0x0fff,
            eid,
            locators,
        }))
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        if self.map_version > 0x0fff {
            return Err(Error::ValueTooLarge);
        }
        w.u32(self.ttl)?;
        w.u8(count_u8(self.locators.len())?)?;
        w.u8(self.eid.prefix.len())?;
        w.u16((u16::from(self.action.bits()) << 13) | (u16::from(self.authoritative) << 12))?;
        w.u16(self.map_version)?;
        self.eid.address().emit(w)?;
        for l in &self.locators {
            l.emit(w)?;
        }
        Ok(())
    }
}

/// What a parse left out of a message because it is encoded in an LCAF type we do not know
/// (RFC 8060 defines many: AFI list, ELP, geo-coordinates, source/dest...). Skipping such a
/// record or locator, instead of refusing the message, is what keeps a peer that adds one
/// exotic record from losing all of its others. Emitting ignores this (nothing to re-emit);
/// receivers count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Skipped {
    /// Records left out: EID-prefix in an unknown LCAF, or every locator in one.
    pub records: u16,
    /// Locators left out of records that were kept.
    pub locators: u16,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.locators == 0
    }
}

/// Parse `count` records, refusing counts the remaining bytes cannot hold (each record is at
/// least 16 bytes) before allocating. Records and locators in unknown LCAF types are left out
/// and counted in the returned [`Skipped`].
pub(crate) fn parse_records(
    r: &mut Reader<'_>,
    count: u8,
) -> Result<(Vec<Record>, Skipped), Error> {
    if usize::from(count) * 16 > r.remaining() {
        return Err(Error::Truncated);
    }
    let mut v = Vec::with_capacity(usize::from(count));
    let mut skipped = Skipped::default();
    for _ in 0..count {
        if let Some(rec) = Record::parse(r, &mut skipped)? {
            v.push(rec);
        }
    }
    Ok((v, skipped))
}

pub(crate) fn emit_records(w: &mut Writer<'_>, records: &[Record]) -> Result<(), Error> {
    records.iter().try_for_each(|rec| rec.emit(w))
}

#[cfg(test)]
mod tests {
    use super::super::{Eid, IpPrefix, MapReply};
    use super::*;
    use alloc::vec;
    use core::net::Ipv4Addr;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// A Map-Reply holding `records` already encoded, as a peer would send it.
    fn reply_with(records: &[&[u8]]) -> alloc::vec::Vec<u8> {
        let mut v = vec![0x20, 0, 0, records.len() as u8, 0, 0, 0, 0, 0, 0, 0, 7];
        for r in records {
            v.extend_from_slice(r);
        }
        v
    }

    /// TTL 1440, `locs` locators, mask 24, EID given as raw address bytes.
    fn record_head(locs: u8, mask: u8, eid: &[u8]) -> alloc::vec::Vec<u8> {
        let mut v = vec![0, 0, 0x05, 0xa0, locs, mask, 0x10, 0, 0, 0];
        v.extend_from_slice(eid);
        v
    }

    const EID_V4: [u8; 6] = [0, 1, 198, 51, 100, 0];
    /// An AFI-list LCAF (type 1) holding one IPv4 address.
    const LCAF_AFI_LIST: [u8; 14] = [0x40, 0x03, 0, 0, 1, 0, 0, 6, 0, 1, 198, 51, 100, 0];
    const LOC_V4: [u8; 12] = [1, 100, 255, 0, 0, 1, 0, 1, 192, 0, 2, 17];
    /// An ELP locator (LCAF type 10) with one hop; LCAF body: flags(2) + AFI(2) + IPv4(4).
    const LOC_ELP: [u8; 22] = [
        1, 100, 255, 0, 0, 1, 0x40, 0x03, 0, 0, 10, 0, 0, 8, 0, 0, 0, 1, 192, 0, 2, 9,
    ];

    fn elp_locator() -> alloc::vec::Vec<u8> {
        LOC_ELP.to_vec()
    }

    #[test]
    fn unknown_lcaf_records_and_locators_are_skipped_and_counted() {
        let good = [record_head(1, 24, &EID_V4), LOC_V4.to_vec()].concat();
        let odd_eid = [record_head(1, 24, &LCAF_AFI_LIST), LOC_V4.to_vec()].concat();
        let mixed = [record_head(2, 24, &EID_V4), elp_locator(), LOC_V4.to_vec()].concat();
        let only_elp = [record_head(1, 24, &EID_V4), elp_locator()].concat();
        let m = MapReply::parse(&reply_with(&[&odd_eid, &good, &mixed, &only_elp])).unwrap();
        let eid = Eid::new(None, IpPrefix::new(v4(198, 51, 100, 0), 24).unwrap());
        assert_eq!(m.records.len(), 2);
        assert!(m.records.iter().all(|r| r.eid == eid));
        // The kept locator of the mixed record, and no negative record from the ELP-only one.
        assert_eq!(m.records[1].locators.len(), 1);
        assert_eq!(m.records[1].locators[0].address, v4(192, 0, 2, 17));
        assert_eq!(
            m.skipped,
            Skipped {
                records: 2,
                locators: 1
            }
        );
        // An LCAF whose length runs past the message is still an error, not a skip.
        let mut cut = reply_with(&[&odd_eid]);
        cut.truncate(cut.len() - LOC_V4.len() - 1);
        assert!(MapReply::parse(&cut).is_err());
    }

    #[test]
    fn instance_id_lcaf_mask_length_is_sent_as_32_and_read_whatever_it_is() {
        let eid = Eid::new(Some(100), IpPrefix::new(v4(198, 51, 100, 0), 24).unwrap());
        let r = Record::new(eid, 1440);
        let mut buf = vec![0u8; r.wire_len()];
        r.emit(&mut Writer::new(&mut buf)).unwrap();
        // TTL(4) count mask act(2) version(2) | AFI 16387, rsvd, flags, type 2, mask-len 32.
        assert_eq!(&buf[10..16], &[0x40, 0x03, 0, 0, 2, 32]);
        for mask_len in [0u8, 24, 32] {
            buf[15] = mask_len;
            let p = Record::parse(&mut Reader::new(&buf), &mut Skipped::default()).unwrap();
            assert_eq!(p.unwrap().eid, eid);
        }
    }
}
