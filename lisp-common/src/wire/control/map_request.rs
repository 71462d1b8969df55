//! Map-Request (type 1, RFC 9301 §5.2), also used for SMRs, SMR-invoked requests and RLOC
//! probes.
//!
//! ```text
//! |Type=1 |A|M|P|S|p|s|R|I|  Rsvd   |L|D|   IRC   | Record Count  |
//! |                         Nonce (64)                            |
//! |         Source-EID-AFI        |   Source EID Address  ...     |
//! |         ITR-RLOC-AFI n        |    ITR-RLOC Address n  ...    |   (IRC + 1 times)
//! |N|  Reserved   | EID mask-len  |        EID-Prefix-AFI         |   (Record Count times)
//! |                       EID-Prefix  ...                         |
//! |                   Map-Reply Record  ...                       |   (if M)
//! |                   xTR-ID (128) + Site-ID (64)                 |   (if I, RFC 9437)
//! ```

use super::address::{Address, Eid, emit_ip, ip_wire_len, parse_eid_or_skip, parse_ip_or_skip};
use super::map_register::XtrId;
use super::record::{Record, Skipped};
use super::{Error, Reader, Writer, count_u8, emit_to_vec, flag, msg_type};
use alloc::vec::Vec;
use core::net::IpAddr;

/// A Map-Request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapRequest {
    /// A: the sender wants an authoritative reply.
    pub authoritative: bool,
    /// P: RLOC-probe (sent straight to an RLOC; the reply has P set too).
    pub probe: bool,
    /// S: Solicit-Map-Request.
    pub smr: bool,
    /// p: sent by a PITR.
    pub pitr: bool,
    /// s: SMR-invoked (sent through the mapping system in answer to an SMR).
    pub smr_invoked: bool,
    /// L: the request comes from an xTR local to the map-server's site (RFC 9301 `L` bit).
    pub local_xtr: bool,
    /// D: the map-server must not send a Map-Reply (RFC 9437: subscription only).
    pub dont_map_reply: bool,
    pub nonce: u64,
    /// The EID of the host that caused the request, or [`Address::NONE`] (AFI 0, e.g. probes).
    pub source_eid: Address,
    /// Where to send the Map-Reply: 1 to 32 addresses (encoded as IRC = count - 1).
    pub itr_rlocs: Vec<IpAddr>,
    /// The EID-prefixes asked for (usually one).
    pub eids: Vec<Eid>,
    /// N (RFC 9437 pubsub): notification requested, a bit of each EID record's reserved byte.
    /// Sent on every EID record (so lost when there is none); on receipt, true if any has it.
    pub notify_requested: bool,
    /// M bit: the sender's own mapping (for SMRs / probes), if any.
    pub map_reply: Option<Record>,
    /// I bit: xTR-ID + Site-ID trailer.
    pub xtr: Option<XtrId>,
    /// Left out on parse because encoded in an LCAF type we do not know: EID records
    /// (`records`) and ITR-RLOCs (`locators`; e.g. lispers.net's security-key LCAF). At least
    /// one plain ITR-RLOC must remain. Ignored on emit.
    pub skipped: Skipped,
}

const A: u8 = 0x08;
const M: u8 = 0x04;
const P: u8 = 0x02;
const S: u8 = 0x01;
const LOW_P: u8 = 0x80;
const LOW_S: u8 = 0x40;
const I: u8 = 0x10;
/// Byte 2 (above the 5-bit IRC).
const L: u8 = 0x40;
const D: u8 = 0x20;
/// Reserved byte of an EID record.
const N: u8 = 0x80;

impl MapRequest {
    pub fn buffer_len(&self) -> usize {
        12 + self.source_eid.wire_len()
            + self.itr_rlocs.iter().map(ip_wire_len).sum::<usize>()
            + self
                .eids
                .iter()
                .map(|e| 2 + e.address().wire_len())
                .sum::<usize>()
            + self.map_reply.as_ref().map_or(0, Record::wire_len)
            + self.xtr.map_or(0, |_| XtrId::LEN)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let b0 = r.type_byte(msg_type::MAP_REQUEST)?;
        let b1 = r.u8()?;
        let b2 = r.u8()?;
        let record_count = r.u8()?;
        let nonce = r.u64()?;
        let source_eid = Address::parse(&mut r)?;
        let itr_count = usize::from(b2 & 0x1f) + 1;
        let mut itr_rlocs = Vec::with_capacity(itr_count);
        let mut skipped = Skipped::default();
        for _ in 0..itr_count {
            match parse_ip_or_skip(&mut r)? {
                Some(a) => itr_rlocs.push(a),
                None => skipped.locators += 1,
            }
        }
        if itr_rlocs.is_empty() {
            // Nowhere we could send a Map-Reply to.
            return Err(Error::RecordCount);
        }
        // Each EID record is at least 4 + 4 bytes.
        if usize::from(record_count) * 8 > r.remaining() {
            return Err(Error::Truncated);
        }
        let mut eids = Vec::with_capacity(usize::from(record_count));
        let mut notify_requested = false;
        for _ in 0..record_count {
            let n = r.u8()? & N != 0;
            let mask_len = r.u8()?;
            match parse_eid_or_skip(&mut r, mask_len)? {
                Some(e) => {
                    eids.push(e);
                    notify_requested |= n;
                }
                // A subscription to what we cannot read is no subscription.
                None => skipped.records += 1,
            }
        }
        let map_reply = if b0 & M != 0 {
            // The piggybacked mapping is only a hint (RFC 9301 §5.3): one we cannot read is
            // left out rather than refusing the request.
            Record::parse(&mut r, &mut Default::default())?
        } else {
            None
        };
        let xtr = XtrId::parse_if(&mut r, b1 & I != 0)?;
        r.finish()?;
        Ok(MapRequest {
            authoritative: b0 & A != 0,
            probe: b0 & P != 0,
            smr: b0 & S != 0,
            pitr: b1 & LOW_P != 0,
            smr_invoked: b1 & LOW_S != 0,
            local_xtr: b2 & L != 0,
            dont_map_reply: b2 & D != 0,
            nonce,
            source_eid,
            itr_rlocs,
            eids,
            notify_requested,
            map_reply,
            xtr,
            skipped,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.itr_rlocs.is_empty() || self.itr_rlocs.len() > 32 {
            return Err(Error::RecordCount);
        }
        let mut w = Writer::new(buf);
        w.u8((msg_type::MAP_REQUEST << 4)
            | flag(self.authoritative, A)
            | flag(self.map_reply.is_some(), M)
            | flag(self.probe, P)
            | flag(self.smr, S))?;
        w.u8(flag(self.pitr, LOW_P) | flag(self.smr_invoked, LOW_S) | flag(self.xtr.is_some(), I))?;
        w.u8(flag(self.local_xtr, L)
            | flag(self.dont_map_reply, D)
            | (self.itr_rlocs.len() - 1) as u8)?;
        w.u8(count_u8(self.eids.len())?)?;
        w.u64(self.nonce)?;
        self.source_eid.emit(&mut w)?;
        for ip in &self.itr_rlocs {
            emit_ip(&mut w, ip)?;
        }
        for eid in &self.eids {
            w.u8(flag(self.notify_requested, N))?;
            w.u8(eid.prefix.len())?;
            eid.address().emit(&mut w)?;
        }
        if let Some(rec) = &self.map_reply {
            rec.emit(&mut w)?;
        }
        XtrId::emit_opt(&mut w, &self.xtr)?;
        Ok(w.pos())
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A Map-Request for one EID in a geo-coordinates LCAF (type 5), N bit set, one ITR-RLOC.
    fn request_for_unknown_lcaf() -> alloc::vec::Vec<u8> {
        let mut v = vec![0x10, 0, 0, 1];
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&[0, 1, 192, 0, 2, 17]);
        v.extend_from_slice(&[0x80, 32, 0x40, 0x03, 0, 0, 5, 0, 0, 4, 1, 2, 3, 4]);
        v
    }

    #[test]
    fn an_unknown_lcaf_eid_record_is_skipped_and_its_n_bit_with_it() {
        let m = MapRequest::parse(&request_for_unknown_lcaf()).unwrap();
        assert!(m.eids.is_empty());
        assert_eq!(m.skipped.records, 1);
        // Re-encoding has no record to carry N on: it must not be claimed (found by fuzzing).
        assert!(!m.notify_requested);
        let mut again = MapRequest::parse(&m.to_vec().unwrap()).unwrap();
        again.skipped = m.skipped;
        assert_eq!(again, m);
    }
}
