//! Addresses in control messages: AFI 0 (no address), AFI 1 (IPv4), AFI 2 (IPv6), and the
//! instance-id LCAF (AFI 16387, type 2, RFC 8060 §4.1) wrapping one of those.
//!
//! * [`IpPrefix`]: the workspace's prefix type ([`crate::prefix`]). Parsing keeps host bits
//!   ([`IpPrefix::new_unmasked`]) because peers do send them (tcpdump's `lisp_ipv6.pcap`
//!   registers `2001:db8:85a3::8a2e:370:7334/80`) and re-encoding must give the same bytes:
//!   **key tables by [`IpPrefix::network`]**, not by the prefix as received.
//! * [`Eid`]: an EID-prefix as carried in records: optional instance-id + prefix.
//! * [`Address`]: an address without a mask (Map-Request source EID): optional instance-id +
//!   optional IP (AFI 0 = none).

use super::{Error, Reader, Writer};
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::prefix::BadPrefix;
pub use crate::prefix::IpPrefix;

impl From<BadPrefix> for Error {
    fn from(_: BadPrefix) -> Self {
        Error::BadPrefix
    }
}

/// AFI 0: no address.
pub const AFI_NONE: u16 = 0;
/// AFI 1: IPv4.
pub const AFI_IPV4: u16 = 1;
/// AFI 2: IPv6.
pub const AFI_IPV6: u16 = 2;
/// AFI of the LISP Canonical Address Format (RFC 8060).
pub const AFI_LCAF: u16 = 16387;
/// LCAF type 2: instance-id.
pub const LCAF_TYPE_INSTANCE_ID: u8 = 2;
/// The IID mask-length we send in an instance-id LCAF.
pub const IID_MASK_LEN: u8 = 32;

/// An address as parsed, or the type of an LCAF we cannot use (already consumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    Known(Address),
    UnknownLcaf(u8),
}

/// An EID-prefix as carried in EID records: an optional instance-id (encoded as the
/// instance-id LCAF) and an IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid {
    pub instance_id: Option<u32>,
    pub prefix: IpPrefix,
}

impl Eid {
    pub fn new(instance_id: Option<u32>, prefix: IpPrefix) -> Self {
        Eid {
            instance_id,
            prefix,
        }
    }

    /// The address part as an [`Address`] (what goes on the wire after the mask length).
    pub fn address(&self) -> Address {
        Address {
            instance_id: self.instance_id,
            ip: Some(self.prefix.addr()),
        }
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instance_id {
            Some(iid) => write!(f, "[{iid}]{}", self.prefix),
            None => write!(f, "{}", self.prefix),
        }
    }
}

/// An address without a mask: AFI 0 (`ip: None`), IPv4 or IPv6, optionally inside an
/// instance-id LCAF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address {
    pub instance_id: Option<u32>,
    pub ip: Option<IpAddr>,
}

impl Address {
    /// AFI 0.
    pub const NONE: Address = Address {
        instance_id: None,
        ip: None,
    };

    pub fn ip(ip: IpAddr) -> Self {
        Address {
            instance_id: None,
            ip: Some(ip),
        }
    }

    /// Encoded length in bytes (AFI included).
    pub fn wire_len(&self) -> usize {
        let plain = 2 + match self.ip {
            None => 0,
            Some(IpAddr::V4(_)) => 4,
            Some(IpAddr::V6(_)) => 16,
        };
        match self.instance_id {
            // AFI + rsvd1 + flags + type + IID mask-len + length + IID
            Some(_) => 2 + 1 + 1 + 1 + 1 + 2 + 4 + plain,
            None => plain,
        }
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        match Self::parse_any(r)? {
            Parsed::Known(a) => Ok(a),
            Parsed::UnknownLcaf(t) => Err(Error::BadLcaf(t)),
        }
    }

    /// Like [`Address::parse`], but an LCAF of a type we do not know (or an instance-id LCAF
    /// wrapping another LCAF, e.g. source/dest) is consumed whole, by its length field, and
    /// reported as [`Parsed::UnknownLcaf`] so that the caller can skip the record or locator
    /// that holds it instead of refusing the whole message.
    pub(crate) fn parse_any(r: &mut Reader<'_>) -> Result<Parsed, Error> {
        let afi = r.u16()?;
        if afi != AFI_LCAF {
            return Ok(Parsed::Known(Address {
                instance_id: None,
                ip: parse_plain(afi, r)?,
            }));
        }
        let _rsvd1 = r.u8()?;
        let _flags = r.u8()?;
        let lcaf_type = r.u8()?;
        // The IID mask-length only matters for IID ranges, which LISP xTRs do not send: any
        // value is accepted (32 from most peers, 0 from our older versions) and ignored.
        let _iid_mask_len = r.u8()?;
        let length = usize::from(r.u16()?);
        let body = r.bytes(length)?;
        if lcaf_type != LCAF_TYPE_INSTANCE_ID {
            return Ok(Parsed::UnknownLcaf(lcaf_type));
        }
        let mut inner = Reader::new(body);
        let iid = inner.u32().map_err(|_| Error::BadLcaf(lcaf_type))?;
        let inner_afi = inner.u16().map_err(|_| Error::BadLcaf(lcaf_type))?;
        if inner_afi == AFI_LCAF {
            // An instance-id around another LCAF (source/dest, say): not something we act on,
            // but its extent is known, so the holder can be skipped. Nesting is not followed,
            // which bounds the work.
            let t = inner.bytes(3).map(|b| b[2]).unwrap_or(0);
            return Ok(Parsed::UnknownLcaf(t));
        }
        let ip = parse_plain(inner_afi, &mut inner).map_err(|e| match e {
            Error::Truncated => Error::BadLcaf(lcaf_type),
            e => e,
        })?;
        if inner.remaining() != 0 {
            return Err(Error::BadLcaf(lcaf_type));
        }
        Ok(Parsed::Known(Address {
            instance_id: Some(iid),
            ip,
        }))
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        if let Some(iid) = self.instance_id {
            w.u16(AFI_LCAF)?;
            w.u8(0)?;
            w.u8(0)?;
            w.u8(LCAF_TYPE_INSTANCE_ID)?;
            // IID mask-length: 32, the whole instance-id is significant (RFC 8060 §4.1 uses the
            // field for ranges of instance-ids). Independent implementations send 32
            // (OpenDaylight's LISP mapping service and pylisp by default); 0 could read as
            // "any instance".
            w.u8(IID_MASK_LEN)?;
            let plain = Address {
                instance_id: None,
                ip: self.ip,
            };
            // Length counts the bytes after the length field: IID + inner AFI + address.
            w.u16((4 + plain.wire_len()) as u16)?;
            w.u32(iid)?;
            plain.emit(w)
        } else {
            match self.ip {
                None => w.u16(AFI_NONE),
                Some(IpAddr::V4(a)) => {
                    w.u16(AFI_IPV4)?;
                    w.bytes(&a.octets())
                }
                Some(IpAddr::V6(a)) => {
                    w.u16(AFI_IPV6)?;
                    w.bytes(&a.octets())
                }
            }
        }
    }
}

fn parse_plain(afi: u16, r: &mut Reader<'_>) -> Result<Option<IpAddr>, Error> {
    match afi {
        AFI_NONE => Ok(None),
        AFI_IPV4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))),
        AFI_IPV6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))),
        other => Err(Error::BadAfi(other)),
    }
}

/// A locator address: a plain IP, or `None` for an LCAF (any type: we only encapsulate to plain
/// addresses) that was consumed by its length so that the locator can be skipped.
pub(crate) fn parse_ip_or_skip(r: &mut Reader<'_>) -> Result<Option<IpAddr>, Error> {
    match Address::parse_any(r)? {
        Parsed::Known(Address {
            instance_id: None,
            ip: Some(ip),
        }) => Ok(Some(ip)),
        Parsed::Known(Address {
            instance_id: None,
            ip: None,
        }) => Err(Error::BadAfi(AFI_NONE)),
        Parsed::Known(_) | Parsed::UnknownLcaf(_) => Ok(None),
    }
}

pub(crate) fn ip_wire_len(ip: &IpAddr) -> usize {
    Address::ip(*ip).wire_len()
}

pub(crate) fn emit_ip(w: &mut Writer<'_>, ip: &IpAddr) -> Result<(), Error> {
    Address::ip(*ip).emit(w)
}

/// An EID-prefix after its mask length (the address must carry an IP), or `None` for an EID
/// in an LCAF we do not know (consumed whole, so that its holder can be skipped).
pub(crate) fn parse_eid_or_skip(r: &mut Reader<'_>, mask_len: u8) -> Result<Option<Eid>, Error> {
    let a = match Address::parse_any(r)? {
        Parsed::Known(a) => a,
        Parsed::UnknownLcaf(_) => return Ok(None),
    };
    let ip = a.ip.ok_or(Error::BadAfi(AFI_NONE))?;
    Ok(Some(Eid {
        instance_id: a.instance_id,
        prefix: IpPrefix::new_unmasked(ip, mask_len)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn iid_lcaf_round_trip_and_layout() {
        let a = Address {
            instance_id: Some(0x00ab_cdef),
            ip: Some(v4(198, 51, 100, 1)),
        };
        let mut buf = vec![0u8; a.wire_len()];
        a.emit(&mut Writer::new(&mut buf)).unwrap();
        assert_eq!(
            buf,
            [
                0x40, 0x03, 0, 0, 2, 32, 0, 10, 0x00, 0xab, 0xcd, 0xef, 0, 1, 198, 51, 100, 1
            ]
        );
        assert_eq!(Address::parse(&mut Reader::new(&buf)).unwrap(), a);
        for cut in 0..buf.len() {
            assert!(Address::parse(&mut Reader::new(&buf[..cut])).is_err());
        }
        // Wrong LCAF length and unknown LCAF type are typed errors.
        let mut bad = buf.clone();
        bad[7] = 11;
        assert!(Address::parse(&mut Reader::new(&bad)).is_err());
        let mut bad = buf.clone();
        bad[4] = 5;
        assert_eq!(
            Address::parse(&mut Reader::new(&bad)),
            Err(Error::BadLcaf(5))
        );
        assert_eq!(
            Address::parse(&mut Reader::new(&[0, 7, 1, 2])),
            Err(Error::BadAfi(7))
        );
    }
}
