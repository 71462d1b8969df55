//! HSRP (Cisco Hot Standby Router Protocol) on the wire: version 1 (RFC 2281, fixed 20-byte
//! messages) and version 2 (a sequence of TLVs, timers in milliseconds, 12-bit groups, IPv4 and
//! IPv6). no_std, no alloc: every representation is `Copy` and emits into a caller's buffer.
//!
//! * [`v1`]: the RFC 2281 hello / coup / resign ([`v1::Packet`] view, [`v1::Repr`]) and Cisco's
//!   v1 advertisement (op code 3, an interface-state TLV, [`v1::Advertise`]).
//! * [`v2`]: the group state TLV (type 1) with the text authentication TLV (type 3)
//!   ([`v2::Repr`]); other TLVs are skipped, an MD5 authentication TLV (type 4) is reported as
//!   [`v2::Auth::Md5`] so that a receiver can refuse it instead of taking it for "no
//!   authentication".
//! * [`Message::parse`] tells the versions apart by the first byte: 0 is the v1 version field; a
//!   v2 message starts with a TLV type (1..=4), never 0.
//!
//! Field layouts were checked against Wireshark's and tcpdump's decoders and the captures in
//! `testdata/captures` (tcpdump/HSRP_*.pcap, scapy/hsrpv*.pcap); `lisp-common/tests/hsrp_*.rs`.

pub mod v1;
pub mod v2;

use core::net::{Ipv4Addr, Ipv6Addr};

/// UDP port of HSRP v1 and of v2 over IPv4 (source and destination).
pub const PORT: u16 = 1985;
/// UDP port of HSRP v2 over IPv6.
pub const PORT_V6: u16 = 2029;
/// Destination of v1 messages: all routers on this subnet.
pub const V1_MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// Destination of v2 messages over IPv4.
pub const V2_MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 102);
/// Destination of v2 messages over IPv6.
pub const V2_MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x66);
/// RFC 2281 §5.1: the authentication data when none is configured ("cisco", zero padded).
pub const DEFAULT_AUTH: [u8; 8] = *b"cisco\0\0\0";
/// RFC 2281 §5.1 recommended hello time.
pub const DEFAULT_HELLO_MS: u32 = 3_000;
/// RFC 2281 §5.1 recommended hold time.
pub const DEFAULT_HOLD_MS: u32 = 10_000;
/// Cisco's default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// Highest v1 group (one octet).
pub const V1_MAX_GROUP: u16 = 255;
/// Highest v2 group (the virtual MAC has 12 bits for it).
pub const V2_MAX_GROUP: u16 = 4095;

/// Protocol version of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
}

/// What a hello-family message says (RFC 2281 §5.1 "Op Code").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// "I am here, in this state, with this priority."
    Hello,
    /// "I am taking over as the active router" (sent by a preempting router).
    Coup,
    /// "I am no longer the active router."
    Resign,
}

impl OpCode {
    pub const fn code(self) -> u8 {
        match self {
            OpCode::Hello => 0,
            OpCode::Coup => 1,
            OpCode::Resign => 2,
        }
    }

    pub const fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(OpCode::Hello),
            1 => Some(OpCode::Coup),
            2 => Some(OpCode::Resign),
            _ => None,
        }
    }
}

/// The state of a router in a group (RFC 2281 §5.1, §5.3). v1 and v2 number them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Initial,
    Learn,
    Listen,
    Speak,
    Standby,
    Active,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Initial,
        State::Learn,
        State::Listen,
        State::Speak,
        State::Standby,
        State::Active,
    ];

    /// v1 numbers states as bits: 0, 1, 2, 4, 8, 16.
    pub const fn v1_code(self) -> u8 {
        match self {
            State::Initial => 0,
            State::Learn => 1,
            State::Listen => 2,
            State::Speak => 4,
            State::Standby => 8,
            State::Active => 16,
        }
    }

    pub const fn from_v1_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(State::Initial),
            1 => Some(State::Learn),
            2 => Some(State::Listen),
            4 => Some(State::Speak),
            8 => Some(State::Standby),
            16 => Some(State::Active),
            _ => None,
        }
    }

    /// v2 numbers them 1..=6 (Wireshark's `hsrp2.state`: Init = 1 ... Active = 6).
    pub const fn v2_code(self) -> u8 {
        match self {
            State::Initial => 1,
            State::Learn => 2,
            State::Listen => 3,
            State::Speak => 4,
            State::Standby => 5,
            State::Active => 6,
        }
    }

    pub const fn from_v2_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(State::Initial),
            2 => Some(State::Learn),
            3 => Some(State::Listen),
            4 => Some(State::Speak),
            5 => Some(State::Standby),
            6 => Some(State::Active),
            _ => None,
        }
    }

    /// Lower-case name, as `show` and logs print it.
    pub const fn name(self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::Learn => "learn",
            State::Listen => "listen",
            State::Speak => "speak",
            State::Standby => "standby",
            State::Active => "active",
        }
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The well-known virtual MAC of a group, `None` if the group does not fit the version:
/// v1 `0000.0c07.acXX`, v2 over IPv4 `0000.0c9f.fXXX`, v2 over IPv6 `0005.73a0.0XXX`
/// (Cisco's IPv6 HSRP range; the IPv6 capture's active router sends from it).
pub const fn virtual_mac(version: Version, ipv6: bool, group: u16) -> Option<[u8; 6]> {
    match (version, ipv6) {
        (Version::V1, false) if group <= V1_MAX_GROUP => {
            Some([0x00, 0x00, 0x0c, 0x07, 0xac, group as u8])
        }
        (Version::V2, false) if group <= V2_MAX_GROUP => Some([
            0x00,
            0x00,
            0x0c,
            0x9f,
            0xf0 | (group >> 8) as u8,
            group as u8,
        ]),
        (Version::V2, true) if group <= V2_MAX_GROUP => {
            Some([0x00, 0x05, 0x73, 0xa0, (group >> 8) as u8, group as u8])
        }
        _ => None,
    }
}

/// What was wrong with an HSRP message (on parse) or a representation (on emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the fixed part, or a TLV runs past the end of the datagram.
    Truncated,
    /// v1 version field not 0, or a v2 group state TLV whose version is not 2.
    BadVersion(u8),
    /// Op code not hello / coup / resign (v1: nor advertise).
    BadOpCode(u8),
    /// A state number the version does not define.
    BadState(u8),
    /// A TLV whose length is not the fixed length of its type.
    BadLength { tlv: u8, len: u8 },
    /// v2 group above 4095 (the virtual MAC has 12 bits for it).
    BadGroup(u16),
    /// v2 group state TLV with an IP version other than 4 or 6.
    BadIpVersion(u8),
    /// A v2 message without a group state TLV (e.g. an interface-state advertisement only).
    NoGroupState,
    /// A v2 message with two TLVs of a type that may appear once (group state, authentication).
    DuplicateTlv(u8),
    /// Emit: a value does not fit its field (v2 group above 4095, zero-padded sizes).
    ValueTooLarge,
    /// Emit: the buffer is shorter than `buffer_len()`.
    BufferTooSmall,
    /// Emit: MD5 authentication is recognised on receive only.
    Unsupported,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated HSRP message"),
            Error::BadVersion(v) => write!(f, "unsupported HSRP version {v}"),
            Error::BadOpCode(c) => write!(f, "unknown HSRP op code {c}"),
            Error::BadState(s) => write!(f, "unknown HSRP state {s}"),
            Error::BadLength { tlv, len } => write!(f, "HSRP TLV {tlv} with bad length {len}"),
            Error::BadGroup(g) => write!(f, "HSRPv2 group {g} above 4095"),
            Error::BadIpVersion(v) => write!(f, "HSRP group state with IP version {v}"),
            Error::NoGroupState => write!(f, "HSRPv2 message without group state TLV"),
            Error::DuplicateTlv(t) => write!(f, "HSRPv2 message with two TLVs of type {t}"),
            Error::ValueTooLarge => write!(f, "value too large for its HSRP field"),
            Error::BufferTooSmall => write!(f, "buffer too small for the HSRP message"),
            Error::Unsupported => write!(f, "HSRP MD5 authentication cannot be emitted"),
        }
    }
}

impl core::error::Error for Error {}

/// Any HSRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// v1 hello, coup or resign.
    V1(v1::Repr),
    /// v1 op code 3 (interface state advertisement; carries no group election data).
    V1Advertise(v1::Advertise),
    /// v2 hello, coup or resign (group state TLV + optional authentication).
    V2(v2::Repr),
}

impl Message {
    /// Parse a UDP payload (port 1985 or 2029).
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        match b.first() {
            None => Err(Error::Truncated),
            Some(0) => {
                if b.get(1) == Some(&v1::OP_ADVERTISE) {
                    v1::Advertise::parse(b).map(Message::V1Advertise)
                } else {
                    v1::Repr::parse(&v1::Packet::new_checked(b)?).map(Message::V1)
                }
            }
            Some(_) => v2::Repr::parse(b).map(Message::V2),
        }
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Message::V1(r) => r.buffer_len(),
            Message::V1Advertise(a) => a.buffer_len(),
            Message::V2(r) => r.buffer_len(),
        }
    }

    /// Write into `buf`; returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        match self {
            Message::V1(r) => {
                let n = r.buffer_len();
                let b = buf.get_mut(..n).ok_or(Error::BufferTooSmall)?;
                r.emit(&mut v1::Packet::new_unchecked(b))?;
                Ok(n)
            }
            Message::V1Advertise(a) => a.emit(buf),
            Message::V2(r) => r.emit(buf),
        }
    }

    /// The protocol version, `None` for a v1 advertisement (not part of any group).
    pub fn version(&self) -> Option<Version> {
        match self {
            Message::V1(_) => Some(Version::V1),
            Message::V1Advertise(_) => None,
            Message::V2(_) => Some(Version::V2),
        }
    }

    /// The group a hello / coup / resign is for (to hand it to the right group's state machine).
    pub fn group(&self) -> Option<u16> {
        match self {
            Message::V1(r) => Some(u16::from(r.group)),
            Message::V1Advertise(_) => None,
            Message::V2(r) => Some(r.group_state.group),
        }
    }
}
