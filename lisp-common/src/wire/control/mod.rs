//! LISP control messages (RFC 9301) with the instance-id LCAF (RFC 8060): parsed representations
//! and their encoding. Sans-IO: bytes in, typed values out, and back.
//!
//! # API at a glance
//! * [`Message`] — every control message; [`Message::parse`] dispatches on the type nibble,
//!   [`Message::emit`] / [`Message::to_vec`] / [`Message::buffer_len`] encode.
//! * [`MapRequest`] (type 1), [`MapReply`] (type 2), [`MapRegister`] (type 3),
//!   [`MapNotify`] (type 4, and type 5 Map-Notify-Ack: same layout), [`Ecm`] (type 8, with its
//!   inner IP/UDP header [`InnerIp`]).
//! * [`Record`] (EID record, also the negative kind with an [`Action`]) and its [`Locator`]s.
//! * [`Eid`] (optional instance-id + [`IpPrefix`]), [`Address`] (AFI 0 / IPv4 / IPv6, optionally
//!   wrapped in an instance-id LCAF), [`XtrId`] (xTR-ID + Site-ID trailer).
//! * [`auth`]: [`auth::sign`] / [`auth::verify`] of Map-Register / Map-Notify / Map-Notify-Ack
//!   bytes (HMAC-SHA-1-96 and HMAC-SHA-256-128), [`Auth`] is the authentication header.
//!
//! Every message type has `parse(&[u8]) -> Result<Self, Error>` (the whole buffer must be the
//! message: trailing bytes are an error, because they would be covered by an HMAC and would be
//! lost on re-emit), `buffer_len()`, `emit(&mut [u8]) -> Result<usize, Error>` and `to_vec()`.
//! Reserved bits are ignored on parse and sent as zero.
//!
//! Signing a Map-Register:
//! ```
//! # use lisp_common::wire::control::*;
//! # use core::net::{IpAddr, Ipv4Addr};
//! let eid = Eid::new(None, IpPrefix::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24).unwrap());
//! let reg = MapRegister {
//!     want_map_notify: true,
//!     nonce: 1,
//!     auth: Auth::zeroed(auth::Algorithm::HmacSha256),
//!     records: vec![Record::new(eid, 1440)],
//!     ..MapRegister::default()
//! };
//! let mut bytes = reg.to_vec().unwrap();
//! auth::sign(&mut bytes, b"secret").unwrap();
//! assert!(auth::verify(&bytes, b"secret").is_ok());
//! ```

use alloc::vec::Vec;
use core::fmt;

pub mod address;
pub mod auth;
pub mod ecm;
pub mod map_register;
pub mod map_reply;
pub mod map_request;
pub mod record;

pub use address::{Address, Eid, IpPrefix};
pub use auth::Auth;
pub use ecm::{Ecm, InnerIp};
pub use map_register::{MapNotify, MapRegister, XtrId};
pub use map_reply::MapReply;
pub use map_request::MapRequest;
pub use record::{Action, Locator, Record, Skipped};

/// Message type numbers (the high nibble of the first byte).
pub mod msg_type {
    pub const MAP_REQUEST: u8 = 1;
    pub const MAP_REPLY: u8 = 2;
    pub const MAP_REGISTER: u8 = 3;
    pub const MAP_NOTIFY: u8 = 4;
    pub const MAP_NOTIFY_ACK: u8 = 5;
    pub const ECM: u8 = 8;
}

/// What was wrong with a control message (on parse) or with a value to encode (on emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the message does.
    Truncated,
    /// Bytes left over after the message.
    TrailingBytes,
    /// Unknown or unsupported message type (or not the type the caller asked for).
    BadType(u8),
    /// Unknown or unexpected address family.
    BadAfi(u16),
    /// Unsupported LCAF type (only type 2, instance-id, is known) or an inconsistent LCAF length.
    BadLcaf(u8),
    /// A mask length longer than the address (or host bits set, for [`IpPrefix::new`]).
    BadPrefix,
    /// A count field does not fit (0 ITR-RLOCs, more than 255 records / locators, 32 ITR-RLOCs).
    RecordCount,
    /// A value does not fit its field (12-bit map-version, auth data longer than 65535 bytes...).
    ValueTooLarge,
    /// Authentication header inconsistent (unknown algorithm, length not matching it).
    BadAuth,
    /// The inner IP/UDP header of an ECM is malformed (version, length, protocol, fragment).
    BadInnerHeader,
    /// The inner IPv4 header checksum or the inner UDP checksum is wrong (or zero over IPv6).
    BadChecksum,
    /// An ECM inside an ECM (refused, to bound recursion).
    NestedEcm,
    /// The output buffer is smaller than [`Message::buffer_len`].
    BufferTooSmall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated message"),
            Error::TrailingBytes => write!(f, "trailing bytes after message"),
            Error::BadType(t) => write!(f, "unsupported message type {t}"),
            Error::BadAfi(a) => write!(f, "unsupported address family {a}"),
            Error::BadLcaf(t) => write!(f, "unsupported or malformed LCAF type {t}"),
            Error::BadPrefix => write!(f, "invalid prefix (mask length or host bits)"),
            Error::RecordCount => write!(f, "record/locator/ITR-RLOC count out of range"),
            Error::ValueTooLarge => write!(f, "value too large for its field"),
            Error::BadAuth => write!(f, "inconsistent authentication header"),
            Error::BadInnerHeader => write!(f, "malformed ECM inner IP/UDP header"),
            Error::BadChecksum => write!(f, "bad ECM inner checksum"),
            Error::NestedEcm => write!(f, "ECM inside ECM"),
            Error::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

impl core::error::Error for Error {}

/// A LISP control message of any supported type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    MapRequest(MapRequest),
    MapReply(MapReply),
    MapRegister(MapRegister),
    MapNotify(MapNotify),
    /// Type 5: the same layout as a Map-Notify.
    MapNotifyAck(MapNotify),
    Ecm(Ecm),
}

impl Message {
    /// The message type of a buffer (high nibble of byte 0), if there is a byte 0.
    pub fn peek_type(buf: &[u8]) -> Result<u8, Error> {
        buf.first().map(|b| b >> 4).ok_or(Error::Truncated)
    }

    /// Parse a whole UDP payload.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        match Self::peek_type(buf)? {
            msg_type::MAP_REQUEST => MapRequest::parse(buf).map(Message::MapRequest),
            msg_type::MAP_REPLY => MapReply::parse(buf).map(Message::MapReply),
            msg_type::MAP_REGISTER => MapRegister::parse(buf).map(Message::MapRegister),
            msg_type::MAP_NOTIFY => {
                MapNotify::parse_typed(buf, msg_type::MAP_NOTIFY).map(Message::MapNotify)
            }
            msg_type::MAP_NOTIFY_ACK => {
                MapNotify::parse_typed(buf, msg_type::MAP_NOTIFY_ACK).map(Message::MapNotifyAck)
            }
            msg_type::ECM => Ecm::parse(buf).map(Message::Ecm),
            t => Err(Error::BadType(t)),
        }
    }

    /// The type number this message is sent with.
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::MapRequest(_) => msg_type::MAP_REQUEST,
            Message::MapReply(_) => msg_type::MAP_REPLY,
            Message::MapRegister(_) => msg_type::MAP_REGISTER,
            Message::MapNotify(_) => msg_type::MAP_NOTIFY,
            Message::MapNotifyAck(_) => msg_type::MAP_NOTIFY_ACK,
            Message::Ecm(_) => msg_type::ECM,
        }
    }

    /// The nonce of the message (for an ECM, the nonce of the message inside).
    pub fn nonce(&self) -> u64 {
        match self {
            Message::MapRequest(m) => m.nonce,
            Message::MapReply(m) => m.nonce,
            Message::MapRegister(m) => m.nonce,
            Message::MapNotify(m) | Message::MapNotifyAck(m) => m.nonce,
            Message::Ecm(e) => e.message.nonce(),
        }
    }

    /// Forget what the parse left out ([`Skipped`]): the value re-encoding and parsing again
    /// gives back, for comparisons.
    pub fn clear_skipped(&mut self) {
        match self {
            Message::MapRequest(m) => m.skipped = Skipped::default(),
            Message::MapReply(m) => m.skipped = Skipped::default(),
            Message::MapRegister(m) => m.skipped = Skipped::default(),
            Message::MapNotify(m) | Message::MapNotifyAck(m) => m.skipped = Skipped::default(),
            Message::Ecm(e) => e.message.clear_skipped(),
        }
    }

    /// Bytes needed by [`Message::emit`].
    pub fn buffer_len(&self) -> usize {
        match self {
            Message::MapRequest(m) => m.buffer_len(),
            Message::MapReply(m) => m.buffer_len(),
            Message::MapRegister(m) => m.buffer_len(),
            Message::MapNotify(m) | Message::MapNotifyAck(m) => m.buffer_len(),
            Message::Ecm(e) => e.buffer_len(),
        }
    }

    /// Encode into `buf`; returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        match self {
            Message::MapRequest(m) => m.emit(buf),
            Message::MapReply(m) => m.emit(buf),
            Message::MapRegister(m) => m.emit(buf),
            Message::MapNotify(m) => m.emit_typed(buf, msg_type::MAP_NOTIFY),
            Message::MapNotifyAck(m) => m.emit_typed(buf, msg_type::MAP_NOTIFY_ACK),
            Message::Ecm(e) => e.emit(buf),
        }
    }

    /// Encode into a new vector. Errors only for values that do not fit their fields.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }
}

/// Bounds-checked big-endian reader: every short read is [`Error::Truncated`], never a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// Byte 0 of a message whose type nibble must be `want` (the flags are its low nibble).
    pub(crate) fn type_byte(&mut self, want: u8) -> Result<u8, Error> {
        let b0 = self.u8()?;
        if b0 >> 4 != want {
            return Err(Error::BadType(b0 >> 4));
        }
        Ok(b0)
    }
    /// The whole message must have been consumed.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::TrailingBytes)
        }
    }
}

/// Bounds-checked big-endian writer: a short buffer is [`Error::BufferTooSmall`].
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(b.len()).ok_or(Error::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    pub(crate) fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.bytes(&[v])
    }
    pub(crate) fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> Result<(), Error> {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        self.buf
    }
}

/// `bit` if `set`: builds the flag bytes of a header.
pub(crate) fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

/// A count encoded in one byte.
pub(crate) fn count_u8(n: usize) -> Result<u8, Error> {
    u8::try_from(n).map_err(|_| Error::RecordCount)
}

/// Helper for the types' `to_vec`: allocate `buffer_len` and emit.
pub(crate) fn emit_to_vec(
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<Vec<u8>, Error> {
    let mut v = alloc::vec![0u8; len];
    let n = emit(&mut v)?;
    v.truncate(n);
    Ok(v)
}
