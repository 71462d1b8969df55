//! Map-Register (type 3), Map-Notify (type 4) and Map-Notify-Ack (type 5), RFC 9301 §5.6-5.7.
//!
//! ```text
//! |Type=3 |P|S|I|R|      Reserved               |E|T|a|r|M| Record Count  |
//! |Type=4/5|I|R|          Reserved                         | Record Count  |
//! |                         Nonce (64)                            |
//! |    Key ID     | Algorithm ID  |  Authentication Data Length   |
//! |                     Authentication Data ...                   |
//! |                     Records ...                               |
//! |                     xTR-ID (128) + Site-ID (64)               |   (if I)
//! ```
//! The Register's `R` in byte 0 is the "built for an RTR" bit as Wireshark decodes it (NAT
//! traversal); RFC 9301's reserved `r` bit in byte 2 is ignored. The authentication field is
//! [`Auth`]; use [`auth::sign`](super::auth::sign) on the emitted bytes to fill it.

use super::auth::Auth;
use super::record::{Record, Skipped, emit_records, parse_records};
use super::{Error, Reader, Writer, count_u8, emit_to_vec, flag, msg_type};
use alloc::vec::Vec;

/// The xTR-ID (128 bits) and Site-ID (64 bits) trailer present when the I bit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct XtrId {
    pub xtr_id: [u8; 16],
    pub site_id: u64,
}

impl XtrId {
    pub const LEN: usize = 24;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(XtrId {
            xtr_id: r.array()?,
            site_id: r.u64()?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.bytes(&self.xtr_id)?;
        w.u64(self.site_id)
    }

    /// The trailer, if the message's I bit (`present`) says there is one.
    pub(crate) fn parse_if(r: &mut Reader<'_>, present: bool) -> Result<Option<Self>, Error> {
        present.then(|| XtrId::parse(r)).transpose()
    }

    pub(crate) fn emit_opt(w: &mut Writer<'_>, x: &Option<Self>) -> Result<(), Error> {
        x.as_ref().map_or(Ok(()), |x| x.emit(w))
    }
}

/// Map-Register and Map-Notify(-Ack) differ only in their first three bytes; from the record
/// count on (count, nonce, authentication, records, xTR-ID trailer if the I bit is set) they
/// are the same, and so is the code for that part.
struct SignedBody {
    nonce: u64,
    auth: Auth,
    records: Vec<Record>,
    skipped: Skipped,
    xtr: Option<XtrId>,
}

impl SignedBody {
    /// The whole message length: 3 bytes of header + count + nonce + the rest.
    fn message_len(auth: &Auth, records: &[Record], xtr: &Option<XtrId>) -> usize {
        12 + auth.wire_len()
            + records.iter().map(Record::wire_len).sum::<usize>()
            + xtr.map_or(0, |_| XtrId::LEN)
    }

    /// From the record count to the end of the message.
    fn parse(r: &mut Reader<'_>, has_xtr: bool) -> Result<Self, Error> {
        let count = r.u8()?;
        let nonce = r.u64()?;
        let auth = Auth::parse(r)?;
        let (records, skipped) = parse_records(r, count)?;
        let xtr = XtrId::parse_if(r, has_xtr)?;
        r.finish()?;
        Ok(SignedBody {
            nonce,
            auth,
            records,
            skipped,
            xtr,
        })
    }

    /// From the record count on; returns the message length.
    fn emit(
        w: &mut Writer<'_>,
        nonce: u64,
        auth: &Auth,
        records: &[Record],
        xtr: &Option<XtrId>,
    ) -> Result<usize, Error> {
        w.u8(count_u8(records.len())?)?;
        w.u64(nonce)?;
        auth.emit(w)?;
        emit_records(w, records)?;
        XtrId::emit_opt(w, xtr)?;
        Ok(w.pos())
    }
}

/// A Map-Register.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapRegister {
    /// P: the map-server answers Map-Requests for these EIDs itself (proxy Map-Reply).
    pub proxy_reply: bool,
    /// S: LISP-SEC capable.
    pub security: bool,
    /// R (byte 0): built for an RTR (NAT traversal).
    pub rtr: bool,
    /// E (byte 2, 0x10): EID-notify, RFC 9301 (sent by a first-hop router that discovered a
    /// dynamic EID). lispers.net sends this bit as its "map-register refresh".
    pub eid_notify: bool,
    /// T: the map-server uses the record TTL as the registration timeout.
    pub use_ttl: bool,
    /// a: merge-request.
    pub merge: bool,
    /// M: want-map-notify.
    pub want_map_notify: bool,
    pub nonce: u64,
    pub auth: Auth,
    pub records: Vec<Record>,
    /// I bit: xTR-ID + Site-ID trailer.
    pub xtr: Option<XtrId>,
    /// Records / locators left out on parse (unknown LCAF types); ignored on emit.
    pub skipped: Skipped,
}

const REG_P: u8 = 0x08;
const REG_S: u8 = 0x04;
const REG_I: u8 = 0x02;
const REG_R: u8 = 0x01;
const REG_E: u8 = 0x10;
const REG_T: u8 = 0x08;
const REG_A: u8 = 0x04;
const REG_M: u8 = 0x01;

impl MapRegister {
    pub fn buffer_len(&self) -> usize {
        SignedBody::message_len(&self.auth, &self.records, &self.xtr)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let b0 = r.type_byte(msg_type::MAP_REGISTER)?;
        let _b1 = r.u8()?;
        let b2 = r.u8()?;
        let SignedBody {
            nonce,
            auth,
            records,
            skipped,
            xtr,
        } = SignedBody::parse(&mut r, b0 & REG_I != 0)?;
        Ok(MapRegister {
            proxy_reply: b0 & REG_P != 0,
            security: b0 & REG_S != 0,
            rtr: b0 & REG_R != 0,
            eid_notify: b2 & REG_E != 0,
            use_ttl: b2 & REG_T != 0,
            merge: b2 & REG_A != 0,
            want_map_notify: b2 & REG_M != 0,
            nonce,
            auth,
            records,
            xtr,
            skipped,
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        w.u8((msg_type::MAP_REGISTER << 4)
            | flag(self.proxy_reply, REG_P)
            | flag(self.security, REG_S)
            | flag(self.xtr.is_some(), REG_I)
            | flag(self.rtr, REG_R))?;
        w.u8(0)?;
        w.u8(flag(self.eid_notify, REG_E)
            | flag(self.use_ttl, REG_T)
            | flag(self.merge, REG_A)
            | flag(self.want_map_notify, REG_M))?;
        SignedBody::emit(&mut w, self.nonce, &self.auth, &self.records, &self.xtr)
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }
}

/// A Map-Notify (type 4) or Map-Notify-Ack (type 5): the two share this layout; which one it is
/// is the [`Message`](super::Message) variant (or the `msg_type` given to
/// [`MapNotify::parse_typed`] / [`MapNotify::emit_typed`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapNotify {
    /// R: sent to/by an RTR (NAT traversal).
    pub rtr: bool,
    /// Nonce copied from the Map-Register (or chosen by the map-server when unsolicited).
    pub nonce: u64,
    pub auth: Auth,
    pub records: Vec<Record>,
    /// I bit: xTR-ID + Site-ID trailer.
    pub xtr: Option<XtrId>,
    /// The 18 bits between R and Record Count, which RFC 9301 reserves. Some senders fill them
    /// (tcpdump's captures copy the Map-Register's M bit: value 1); they are kept so that a
    /// received message re-encodes to the same bytes. Send 0. Values above 0x3ffff are an
    /// emit error.
    pub reserved: u32,
    /// Records / locators left out on parse (unknown LCAF types); ignored on emit.
    pub skipped: Skipped,
}

const NOT_I: u8 = 0x08;
const NOT_R: u8 = 0x04;

impl MapNotify {
    pub fn buffer_len(&self) -> usize {
        SignedBody::message_len(&self.auth, &self.records, &self.xtr)
    }

    /// Parse a Map-Notify (type 4).
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        Self::parse_typed(buf, msg_type::MAP_NOTIFY)
    }

    /// Parse a Map-Notify-Ack (type 5).
    pub fn parse_ack(buf: &[u8]) -> Result<Self, Error> {
        Self::parse_typed(buf, msg_type::MAP_NOTIFY_ACK)
    }

    /// Parse type 4 or 5 (`want`); another type is [`Error::BadType`].
    pub fn parse_typed(buf: &[u8], want: u8) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let b0 = r.type_byte(want)?;
        if !(want == msg_type::MAP_NOTIFY || want == msg_type::MAP_NOTIFY_ACK) {
            return Err(Error::BadType(b0 >> 4));
        }
        let mid = r.u16()?;
        let SignedBody {
            nonce,
            auth,
            records,
            skipped,
            xtr,
        } = SignedBody::parse(&mut r, b0 & NOT_I != 0)?;
        let reserved = (u32::from(b0 & 0x03) << 16) | u32::from(mid);
        Ok(MapNotify {
            rtr: b0 & NOT_R != 0,
            nonce,
            auth,
            records,
            xtr,
            reserved,
            skipped,
        })
    }

    /// Encode as a Map-Notify (type 4).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.emit_typed(buf, msg_type::MAP_NOTIFY)
    }

    /// Encode as type 4 (Map-Notify) or 5 (Map-Notify-Ack).
    pub fn emit_typed(&self, buf: &mut [u8], ty: u8) -> Result<usize, Error> {
        if ty != msg_type::MAP_NOTIFY && ty != msg_type::MAP_NOTIFY_ACK {
            return Err(Error::BadType(ty));
        }
        if self.reserved > 0x3ffff {
            return Err(Error::ValueTooLarge);
        }
        let mut w = Writer::new(buf);
        w.u8((ty << 4)
            | flag(self.xtr.is_some(), NOT_I)
            | flag(self.rtr, NOT_R)
            | (self.reserved >> 16) as u8)?;
        w.u16(self.reserved as u16)?;
        SignedBody::emit(&mut w, self.nonce, &self.auth, &self.records, &self.xtr)
    }

    /// Encode as a Map-Notify (type 4) into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }

    /// Encode as a Map-Notify-Ack (type 5) into a new vector.
    pub fn to_vec_ack(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| {
            self.emit_typed(b, msg_type::MAP_NOTIFY_ACK)
        })
    }
}
