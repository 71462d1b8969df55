//! Map-Reply (type 2, RFC 9301 §5.4).
//!
//! ```text
//! |Type=2 |P|E|S|          Reserved               | Record Count  |
//! |                         Nonce (64)                            |
//! |                         Records ...                           |
//! ```
//! A negative Map-Reply is one whose record has no locators; its [`Action`](super::Action) says
//! what to do with the traffic.

use super::record::{Record, Skipped, emit_records, parse_records};
use super::{Error, Reader, Writer, count_u8, emit_to_vec, flag, msg_type};
use alloc::vec::Vec;

/// A Map-Reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapReply {
    /// P: answer to an RLOC-probe.
    pub probe: bool,
    /// E: the ETR is echo-nonce capable.
    pub echo_nonce_capable: bool,
    /// S: LISP-SEC information follows (not supported: emitted only as the flag).
    pub security: bool,
    /// Nonce copied from the Map-Request.
    pub nonce: u64,
    pub records: Vec<Record>,
    /// Records / locators left out on parse (unknown LCAF types); ignored on emit.
    pub skipped: Skipped,
}

const P: u8 = 0x08;
const E: u8 = 0x04;
const S: u8 = 0x02;

impl MapReply {
    pub fn buffer_len(&self) -> usize {
        12 + self.records.iter().map(Record::wire_len).sum::<usize>()
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let b0 = r.type_byte(msg_type::MAP_REPLY)?;
        let _reserved = r.u16()?;
        let count = r.u8()?;
        let nonce = r.u64()?;
        let (records, skipped) = parse_records(&mut r, count)?;
        r.finish()?;
        Ok(MapReply {
            probe: b0 & P != 0,
            echo_nonce_capable: b0 & E != 0,
            security: b0 & S != 0,
            nonce,
            records,
            skipped,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        w.u8((msg_type::MAP_REPLY << 4)
            | flag(self.probe, P)
            | flag(self.echo_nonce_capable, E)
            | flag(self.security, S))?;
        w.u16(0)?;
        w.u8(count_u8(self.records.len())?)?;
        w.u64(self.nonce)?;
        emit_records(&mut w, &self.records)?;
        Ok(w.pos())
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }
}
