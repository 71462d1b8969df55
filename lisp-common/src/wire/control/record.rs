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

use super::address::{Eid, emit_ip, ip_wire_len, parse_eid, parse_ip};
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

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let priority = r.u8()?;
        let weight = r.u8()?;
        let m_priority = r.u8()?;
        let m_weight = r.u8()?;
        let flags = r.u16()?;
        let address = parse_ip(r)?;
        Ok(Locator {
            priority,
            weight,
            m_priority,
            m_weight,
            local: flags & 0x4 != 0,
            probed: flags & 0x2 != 0,
            reachable: flags & 0x1 != 0,
            address,
        })
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

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let ttl = r.u32()?;
        let loc_count = r.u8()?;
        let mask_len = r.u8()?;
        let act = r.u16()?;
        let version = r.u16()?;
        let eid = parse_eid(r, mask_len)?;
        // Each locator takes at least 10 bytes: refuse an impossible count before allocating.
        if usize::from(loc_count) * 10 > r.remaining() {
            return Err(Error::Truncated);
        }
        let mut locators = Vec::with_capacity(usize::from(loc_count));
        for _ in 0..loc_count {
            locators.push(Locator::parse(r)?);
        }
        Ok(Record {
            ttl,
            action: Action::from_bits((act >> 13) as u8),
            authoritative: act & 0x1000 != 0,
            map_version: version & 0x0fff,
            eid,
            locators,
        })
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

/// Parse `count` records, refusing counts the remaining bytes cannot hold (each record is at
/// least 16 bytes) before allocating.
pub(crate) fn parse_records(r: &mut Reader<'_>, count: u8) -> Result<Vec<Record>, Error> {
    if usize::from(count) * 16 > r.remaining() {
        return Err(Error::Truncated);
    }
    let mut v = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        v.push(Record::parse(r)?);
    }
    Ok(v)
}

pub(crate) fn emit_records(w: &mut Writer<'_>, records: &[Record]) -> Result<(), Error> {
    records.iter().try_for_each(|rec| rec.emit(w))
}
