//! HSRP version 2: a datagram is a sequence of TLVs (type u8, length u8 = length of the value).
//!
//! * type 1, group state, 40 bytes:
//!   ```text
//!   | version (2) | op code | state | IP version (4/6) | group (u16)          |
//!   | identifier: the sender's interface MAC (6)                             |
//!   | priority (u32) | hello time ms (u32) | hold time ms (u32)              |
//!   | virtual IP (16: an IPv4 address is followed by 12 zero bytes)          |
//!   ```
//! * type 3, text authentication, 8 bytes (zero-padded password, "cisco" by default);
//! * type 4, MD5 authentication: recognised, not verified ([`Auth::Md5`]);
//! * any other type (2 = interface state, ...) is skipped.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Error, OpCode, State, V2_MAX_GROUP};

pub const TLV_GROUP_STATE: u8 = 1;
pub const TLV_INTERFACE_STATE: u8 = 2;
pub const TLV_TEXT_AUTH: u8 = 3;
pub const TLV_MD5_AUTH: u8 = 4;
/// Length of the group state TLV's value.
pub const GROUP_STATE_LEN: usize = 40;
/// Length of the text authentication TLV's value.
pub const TEXT_AUTH_LEN: usize = 8;
/// The version field inside the group state TLV.
pub const VERSION: u8 = 2;

/// The TLVs of a v2 datagram, in order; a TLV running past the end is [`Error::Truncated`].
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Tlvs<'a> {
    pub const fn new(b: &'a [u8]) -> Self {
        Tlvs { rest: b }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    /// (type, value)
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = match self.rest {
            [ty, len, tail @ ..] if tail.len() >= usize::from(*len) => {
                let (value, rest) = tail.split_at(usize::from(*len));
                self.rest = rest;
                Ok((*ty, value))
            }
            _ => {
                self.rest = &[];
                Err(Error::Truncated)
            }
        };
        Some(item)
    }
}

/// A read/write view of a group state TLV's 40-byte value.
#[derive(Debug, Clone)]
pub struct GroupStateTlv<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GroupStateTlv<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        GroupStateTlv { buffer }
    }

    /// Wrap a value that must be exactly [`GROUP_STATE_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let len = buffer.as_ref().len();
        if len != GROUP_STATE_LEN {
            return Err(Error::BadLength {
                tlv: TLV_GROUP_STATE,
                len: len.min(255) as u8,
            });
        }
        Ok(GroupStateTlv { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn be32(&self, o: usize) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    pub fn version(&self) -> u8 {
        self.b()[0]
    }
    pub fn op_code(&self) -> u8 {
        self.b()[1]
    }
    pub fn state(&self) -> u8 {
        self.b()[2]
    }
    pub fn ip_version(&self) -> u8 {
        self.b()[3]
    }
    pub fn group(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    pub fn identifier(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[6..12]);
        m
    }
    pub fn priority(&self) -> u32 {
        self.be32(12)
    }
    pub fn hellotime_ms(&self) -> u32 {
        self.be32(16)
    }
    pub fn holdtime_ms(&self) -> u32 {
        self.be32(20)
    }
    /// The 16-byte virtual IP field.
    pub fn virtual_ip_field(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.b()[24..40]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GroupStateTlv<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_version(&mut self, v: u8) {
        self.bm()[0] = v;
    }
    pub fn set_op_code(&mut self, v: u8) {
        self.bm()[1] = v;
    }
    pub fn set_state(&mut self, v: u8) {
        self.bm()[2] = v;
    }
    pub fn set_ip_version(&mut self, v: u8) {
        self.bm()[3] = v;
    }
    pub fn set_group(&mut self, v: u16) {
        self.bm()[4..6].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_identifier(&mut self, m: [u8; 6]) {
        self.bm()[6..12].copy_from_slice(&m);
    }
    pub fn set_priority(&mut self, v: u32) {
        self.bm()[12..16].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_hellotime_ms(&mut self, v: u32) {
        self.bm()[16..20].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_holdtime_ms(&mut self, v: u32) {
        self.bm()[20..24].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_virtual_ip_field(&mut self, a: [u8; 16]) {
        self.bm()[24..40].copy_from_slice(&a);
    }
}

/// The meaning of a group state TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupState {
    pub op: OpCode,
    pub state: State,
    /// 0..=4095.
    pub group: u16,
    /// The sender's interface MAC.
    pub identifier: [u8; 6],
    /// On the wire 32 bits; Cisco uses 0..=255.
    pub priority: u32,
    pub hellotime_ms: u32,
    pub holdtime_ms: u32,
    /// Its family is the TLV's IP version; the unspecified address when the sender does not
    /// know the virtual IP.
    pub vip: IpAddr,
}

impl GroupState {
    pub fn parse<T: AsRef<[u8]>>(t: &GroupStateTlv<T>) -> Result<Self, Error> {
        if t.version() != VERSION {
            return Err(Error::BadVersion(t.version()));
        }
        if t.group() > V2_MAX_GROUP {
            return Err(Error::BadGroup(t.group()));
        }
        let field = t.virtual_ip_field();
        let vip = match t.ip_version() {
            // Receivers are liberal about the padding after an IPv4 address: it carries nothing.
            4 => IpAddr::V4(Ipv4Addr::new(field[0], field[1], field[2], field[3])),
            6 => IpAddr::V6(Ipv6Addr::from(field)),
            v => return Err(Error::BadIpVersion(v)),
        };
        Ok(GroupState {
            op: OpCode::from_code(t.op_code()).ok_or(Error::BadOpCode(t.op_code()))?,
            state: State::from_v2_code(t.state()).ok_or(Error::BadState(t.state()))?,
            group: t.group(),
            identifier: t.identifier(),
            priority: t.priority(),
            hellotime_ms: t.hellotime_ms(),
            holdtime_ms: t.holdtime_ms(),
            vip,
        })
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        t: &mut GroupStateTlv<T>,
    ) -> Result<(), Error> {
        if self.group > V2_MAX_GROUP {
            return Err(Error::ValueTooLarge);
        }
        if t.buffer.as_ref().len() < GROUP_STATE_LEN {
            return Err(Error::BufferTooSmall);
        }
        let (ipv, field) = match self.vip {
            IpAddr::V4(a) => {
                let mut f = [0; 16];
                f[..4].copy_from_slice(&a.octets());
                (4, f)
            }
            IpAddr::V6(a) => (6, a.octets()),
        };
        t.set_version(VERSION);
        t.set_op_code(self.op.code());
        t.set_state(self.state.v2_code());
        t.set_ip_version(ipv);
        t.set_group(self.group);
        t.set_identifier(self.identifier);
        t.set_priority(self.priority);
        t.set_hellotime_ms(self.hellotime_ms);
        t.set_holdtime_ms(self.holdtime_ms);
        t.set_virtual_ip_field(field);
        Ok(())
    }
}

/// The authentication a v2 message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    /// No authentication TLV.
    None,
    /// Text authentication TLV: zero-padded clear-text password.
    Text([u8; 8]),
    /// An MD5 authentication TLV (not verified here: a receiver configured with text
    /// authentication refuses it).
    Md5,
}

/// The meaning of a v2 hello / coup / resign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub group_state: GroupState,
    pub auth: Auth,
}

impl Repr {
    /// Parse a whole v2 datagram: exactly one group state TLV, at most one authentication TLV,
    /// other TLVs skipped.
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        let mut group_state = None;
        let mut auth = Auth::None;
        for tlv in Tlvs::new(b) {
            let (ty, value) = tlv?;
            match ty {
                TLV_GROUP_STATE => {
                    if group_state.is_some() {
                        return Err(Error::DuplicateTlv(ty));
                    }
                    group_state = Some(GroupState::parse(&GroupStateTlv::new_checked(value)?)?);
                }
                TLV_TEXT_AUTH | TLV_MD5_AUTH => {
                    if auth != Auth::None {
                        return Err(Error::DuplicateTlv(ty));
                    }
                    auth = if ty == TLV_MD5_AUTH {
                        Auth::Md5
                    } else {
                        let a: [u8; TEXT_AUTH_LEN] =
                            value.try_into().map_err(|_| Error::BadLength {
                                tlv: ty,
                                len: value.len() as u8,
                            })?;
                        Auth::Text(a)
                    };
                }
                _ => {}
            }
        }
        Ok(Repr {
            group_state: group_state.ok_or(Error::NoGroupState)?,
            auth,
        })
    }

    pub const fn buffer_len(&self) -> usize {
        2 + GROUP_STATE_LEN
            + match self.auth {
                Auth::Text(_) => 2 + TEXT_AUTH_LEN,
                _ => 0,
            }
    }

    /// Group state TLV, then the text authentication TLV (the order Cisco and the captures use).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.auth == Auth::Md5 {
            return Err(Error::Unsupported);
        }
        let n = self.buffer_len();
        let b = buf.get_mut(..n).ok_or(Error::BufferTooSmall)?;
        b[0] = TLV_GROUP_STATE;
        b[1] = GROUP_STATE_LEN as u8;
        self.group_state.emit(&mut GroupStateTlv::new_unchecked(
            &mut b[2..2 + GROUP_STATE_LEN],
        ))?;
        if let Auth::Text(a) = self.auth {
            let o = 2 + GROUP_STATE_LEN;
            b[o] = TLV_TEXT_AUTH;
            b[o + 1] = TEXT_AUTH_LEN as u8;
            b[o + 2..o + 2 + TEXT_AUTH_LEN].copy_from_slice(&a);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hsrp::DEFAULT_AUTH;

    fn hello() -> Repr {
        Repr {
            group_state: GroupState {
                op: OpCode::Hello,
                state: State::Standby,
                group: 4095,
                identifier: [2, 0, 0, 0, 0, 9],
                priority: 90,
                hellotime_ms: 250,
                holdtime_ms: 750,
                vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            },
            auth: Auth::Text(DEFAULT_AUTH),
        }
    }

    #[test]
    fn skips_unknown_tlvs_and_refuses_duplicates() {
        let mut b = [0u8; 64];
        let n = hello().emit(&mut b).unwrap();
        assert_eq!(n, 52);
        // An interface-state TLV in front and an unknown one behind are skipped.
        let mut v = [0u8; 80];
        v[..4].copy_from_slice(&[TLV_INTERFACE_STATE, 2, 0xab, 0xcd]);
        v[4..4 + n].copy_from_slice(&b[..n]);
        v[4 + n..4 + n + 3].copy_from_slice(&[99, 1, 0]);
        assert_eq!(Repr::parse(&v[..4 + n + 3]), Ok(hello()));
        // Two group states, two authentications.
        let mut d = [0u8; 104];
        d[..n].copy_from_slice(&b[..n]);
        d[n..2 * n].copy_from_slice(&b[..n]);
        assert_eq!(Repr::parse(&d), Err(Error::DuplicateTlv(TLV_GROUP_STATE)));
        d[n..n + 10].copy_from_slice(&b[42..52]);
        assert_eq!(
            Repr::parse(&d[..n + 10]),
            Err(Error::DuplicateTlv(TLV_TEXT_AUTH))
        );
        // Only an interface-state TLV.
        assert_eq!(Repr::parse(&v[..4]), Err(Error::NoGroupState));
    }

    #[test]
    fn refuses_bad_fields() {
        let mut b = [0u8; 52];
        hello().emit(&mut b).unwrap();
        let bad = |i: usize, v: u8| {
            let mut c = b;
            c[i] = v;
            Repr::parse(&c)
        };
        assert_eq!(bad(2, 3), Err(Error::BadVersion(3)));
        assert_eq!(bad(3, 7), Err(Error::BadOpCode(7)));
        assert_eq!(bad(4, 0), Err(Error::BadState(0)));
        assert_eq!(bad(5, 5), Err(Error::BadIpVersion(5)));
        assert_eq!(bad(6, 0x10), Err(Error::BadGroup(0x10ff)));
        assert_eq!(
            bad(43, 7),
            Err(Error::BadLength {
                tlv: TLV_TEXT_AUTH,
                len: 7
            })
        );
        // A group state TLV of another length.
        assert!(matches!(
            bad(1, 39),
            Err(Error::BadLength {
                tlv: TLV_GROUP_STATE,
                len: 39
            })
        ));
        let mut too_big = hello();
        too_big.group_state.group = 4096;
        assert_eq!(too_big.emit(&mut [0; 64]), Err(Error::ValueTooLarge));
        let mut md5 = hello();
        md5.auth = Auth::Md5;
        assert_eq!(md5.emit(&mut [0; 64]), Err(Error::Unsupported));
        assert_eq!(hello().emit(&mut [0; 51]), Err(Error::BufferTooSmall));
    }
}
