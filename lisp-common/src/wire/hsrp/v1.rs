//! HSRP version 1 (RFC 2281 §5.1): 20-byte hello / coup / resign, and Cisco's 16-byte
//! advertisement (op code 3).
//!
//! ```text
//!  0        8        16       24       32
//! | version| op code|  state |hellotime|
//! |holdtime|priority|  group |reserved |
//! |        authentication data (8)     |
//! |                                    |
//! |        virtual IP address          |
//! ```
//! Times are in seconds. Bytes after the 20 (Cisco appends TLVs in some releases) are ignored.

use core::net::Ipv4Addr;

use super::{Error, OpCode, State};

/// Length of a v1 hello / coup / resign.
pub const HEADER_LEN: usize = 20;
/// Length of a v1 advertisement.
pub const ADVERTISE_LEN: usize = 16;
/// Op code of the v1 advertisement (not an election message).
pub const OP_ADVERTISE: u8 = 3;

mod field {
    pub const VERSION: usize = 0;
    pub const OP_CODE: usize = 1;
    pub const STATE: usize = 2;
    pub const HELLOTIME: usize = 3;
    pub const HOLDTIME: usize = 4;
    pub const PRIORITY: usize = 5;
    pub const GROUP: usize = 6;
    pub const RESERVED: usize = 7;
    pub const AUTH: core::ops::Range<usize> = 8..16;
    pub const VIP: core::ops::Range<usize> = 16..20;
}

/// A read/write view of a v1 hello / coup / resign at the start of `buffer`.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking the length (accessors may then panic on short buffers).
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and check that the 20 bytes are there.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[field::VERSION]
    }
    pub fn op_code(&self) -> u8 {
        self.b()[field::OP_CODE]
    }
    pub fn state(&self) -> u8 {
        self.b()[field::STATE]
    }
    /// Seconds.
    pub fn hellotime(&self) -> u8 {
        self.b()[field::HELLOTIME]
    }
    /// Seconds.
    pub fn holdtime(&self) -> u8 {
        self.b()[field::HOLDTIME]
    }
    pub fn priority(&self) -> u8 {
        self.b()[field::PRIORITY]
    }
    pub fn group(&self) -> u8 {
        self.b()[field::GROUP]
    }
    pub fn reserved(&self) -> u8 {
        self.b()[field::RESERVED]
    }
    pub fn auth_data(&self) -> [u8; 8] {
        let mut a = [0; 8];
        a.copy_from_slice(&self.b()[field::AUTH]);
        a
    }
    pub fn virtual_ip(&self) -> Ipv4Addr {
        let b = &self.b()[field::VIP];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_version(&mut self, v: u8) {
        self.bm()[field::VERSION] = v;
    }
    pub fn set_op_code(&mut self, v: u8) {
        self.bm()[field::OP_CODE] = v;
    }
    pub fn set_state(&mut self, v: u8) {
        self.bm()[field::STATE] = v;
    }
    pub fn set_hellotime(&mut self, v: u8) {
        self.bm()[field::HELLOTIME] = v;
    }
    pub fn set_holdtime(&mut self, v: u8) {
        self.bm()[field::HOLDTIME] = v;
    }
    pub fn set_priority(&mut self, v: u8) {
        self.bm()[field::PRIORITY] = v;
    }
    pub fn set_group(&mut self, v: u8) {
        self.bm()[field::GROUP] = v;
    }
    pub fn set_reserved(&mut self, v: u8) {
        self.bm()[field::RESERVED] = v;
    }
    pub fn set_auth_data(&mut self, a: [u8; 8]) {
        self.bm()[field::AUTH].copy_from_slice(&a);
    }
    pub fn set_virtual_ip(&mut self, a: Ipv4Addr) {
        self.bm()[field::VIP].copy_from_slice(&a.octets());
    }
}

/// The meaning of a v1 hello / coup / resign. The reserved octet is not kept: RFC 2281 says
/// send 0, ignore on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub op: OpCode,
    pub state: State,
    /// Seconds.
    pub hellotime: u8,
    /// Seconds.
    pub holdtime: u8,
    pub priority: u8,
    pub group: u8,
    /// Clear-text password, zero padded ([`super::DEFAULT_AUTH`] when none is configured).
    pub auth: [u8; 8],
    /// 0.0.0.0 when the sender does not know it (it may be learned from the active router).
    pub vip: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Error> {
        p.check_len()?;
        if p.version() != 0 {
            return Err(Error::BadVersion(p.version()));
        }
        Ok(Repr {
            op: OpCode::from_code(p.op_code()).ok_or(Error::BadOpCode(p.op_code()))?,
            state: State::from_v1_code(p.state()).ok_or(Error::BadState(p.state()))?,
            hellotime: p.hellotime(),
            holdtime: p.holdtime(),
            priority: p.priority(),
            group: p.group(),
            auth: p.auth_data(),
            vip: p.virtual_ip(),
        })
    }

    /// Always [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the 20 bytes at the start of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), Error> {
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::BufferTooSmall);
        }
        p.set_version(0);
        p.set_op_code(self.op.code());
        p.set_state(self.state.v1_code());
        p.set_hellotime(self.hellotime);
        p.set_holdtime(self.holdtime);
        p.set_priority(self.priority);
        p.set_group(self.group);
        p.set_reserved(0);
        p.set_auth_data(self.auth);
        p.set_virtual_ip(self.vip);
        Ok(())
    }
}

/// Cisco's v1 advertisement (op code 3): one interface-state TLV (type, length 14, state
/// 1 dormant / 2 passive / 3 active, active and passive group counts). It takes no part in the
/// election (RFC 2281 does not define it); parsed so that a receiver can tell it from garbage.
/// Every field is kept so that it re-emits byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Advertise {
    pub tlv_type: u16,
    pub state: u8,
    pub reserved1: u8,
    pub active_groups: u16,
    pub passive_groups: u16,
    pub reserved2: u32,
}

impl Advertise {
    /// Parse a whole advertisement (version 0, op code 3, TLV of length 14).
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        let b = b.get(..ADVERTISE_LEN).ok_or(Error::Truncated)?;
        if b[0] != 0 {
            return Err(Error::BadVersion(b[0]));
        }
        if b[1] != OP_ADVERTISE {
            return Err(Error::BadOpCode(b[1]));
        }
        let be16 = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let len = be16(4);
        if usize::from(len) != ADVERTISE_LEN - 2 {
            return Err(Error::BadLength {
                tlv: b[3],
                len: len.min(255) as u8,
            });
        }
        Ok(Advertise {
            tlv_type: be16(2),
            state: b[6],
            reserved1: b[7],
            active_groups: be16(8),
            passive_groups: be16(10),
            reserved2: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Always [`ADVERTISE_LEN`].
    pub const fn buffer_len(&self) -> usize {
        ADVERTISE_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let b = buf.get_mut(..ADVERTISE_LEN).ok_or(Error::BufferTooSmall)?;
        b[0] = 0;
        b[1] = OP_ADVERTISE;
        b[2..4].copy_from_slice(&self.tlv_type.to_be_bytes());
        b[4..6].copy_from_slice(&((ADVERTISE_LEN - 2) as u16).to_be_bytes());
        b[6] = self.state;
        b[7] = self.reserved1;
        b[8..10].copy_from_slice(&self.active_groups.to_be_bytes());
        b[10..12].copy_from_slice(&self.passive_groups.to_be_bytes());
        b[12..16].copy_from_slice(&self.reserved2.to_be_bytes());
        Ok(ADVERTISE_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hsrp::DEFAULT_AUTH;

    #[test]
    fn layout() {
        let r = Repr {
            op: OpCode::Coup,
            state: State::Speak,
            hellotime: 3,
            holdtime: 10,
            priority: 200,
            group: 7,
            auth: DEFAULT_AUTH,
            vip: Ipv4Addr::new(192, 0, 2, 1),
        };
        let mut b = [0xaa; 20];
        r.emit(&mut Packet::new_unchecked(&mut b[..])).unwrap();
        assert_eq!(
            b,
            [
                0, 1, 4, 3, 10, 200, 7, 0, b'c', b'i', b's', b'c', b'o', 0, 0, 0, 192, 0, 2, 1
            ]
        );
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        b[0] = 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::BadVersion(1))
        );
        b[0] = 0;
        b[2] = 3;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::BadState(3))
        );
        b[2] = 4;
        b[1] = 9;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::BadOpCode(9))
        );
        let mut short = [0u8; 19];
        assert_eq!(
            r.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn advertise_length_checked() {
        let mut b = [0, 3, 0, 1, 0, 14, 2, 0, 0, 0, 0, 1, 0x6f, 0, 0, 0];
        let a = Advertise::parse(&b).unwrap();
        assert_eq!((a.tlv_type, a.state, a.passive_groups), (1, 2, 1));
        b[5] = 15;
        assert_eq!(
            Advertise::parse(&b),
            Err(Error::BadLength { tlv: 1, len: 15 })
        );
    }
}
