//! Encapsulated Control Message (type 8, RFC 9301 §5.8): a LISP header followed by an inner
//! IPv4/IPv6 header, a UDP header and a control message (normally a Map-Request sent to a
//! map-resolver, with the inner source = the EID that caused it and destination = the EID
//! wanted).
//!
//! ```text
//! |Type=8 |S|D|E|M|            Reserved                           |
//! |                       IPv4 or IPv6 Header                     |
//! |                         UDP Header                            |
//! |                      LISP Control Message                     |
//! ```
//! The inner IPv4 header checksum and the inner UDP checksum are computed on emit (the UDP one
//! is never zero) and checked on parse: a zero UDP checksum is accepted only over IPv4 (RFC 768
//! makes it optional there), so such a message re-encodes with the checksum filled in.

use super::{Error, Message, Reader, Writer, emit_to_vec, flag, msg_type};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// The inner IP header of an ECM. Lengths and checksums are derived, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InnerIp {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        tos: u8,
        ident: u16,
        dont_fragment: bool,
        ttl: u8,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        traffic_class: u8,
        flow_label: u32,
        hop_limit: u8,
    },
}

impl InnerIp {
    /// An inner header from `src` to `dst` with TTL 255 (and DF over IPv4), as OOR sends it;
    /// mixed address families are [`Error::BadInnerHeader`].
    pub fn new(src: IpAddr, dst: IpAddr) -> Result<Self, Error> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ok(InnerIp::V4 {
                src,
                dst,
                tos: 0,
                ident: 0,
                dont_fragment: true,
                ttl: 255,
            }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ok(InnerIp::V6 {
                src,
                dst,
                traffic_class: 0,
                flow_label: 0,
                hop_limit: 255,
            }),
            _ => Err(Error::BadInnerHeader),
        }
    }

    pub fn src(&self) -> IpAddr {
        match self {
            InnerIp::V4 { src, .. } => IpAddr::V4(*src),
            InnerIp::V6 { src, .. } => IpAddr::V6(*src),
        }
    }

    pub fn dst(&self) -> IpAddr {
        match self {
            InnerIp::V4 { dst, .. } => IpAddr::V4(*dst),
            InnerIp::V6 { dst, .. } => IpAddr::V6(*dst),
        }
    }

    pub fn header_len(&self) -> usize {
        match self {
            InnerIp::V4 { .. } => IPV4_HEADER_LEN,
            InnerIp::V6 { .. } => IPV6_HEADER_LEN,
        }
    }
}

/// An Encapsulated Control Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecm {
    /// S: LISP-SEC.
    pub security: bool,
    /// D: sent by a DDT node.
    pub ddt: bool,
    /// E: forwarded by a map-server to an ETR.
    pub to_etr: bool,
    /// M: sent to a map-server (e.g. an encapsulated Map-Register).
    pub to_ms: bool,
    pub ip: InnerIp,
    pub src_port: u16,
    pub dst_port: u16,
    /// The encapsulated message (never another ECM).
    pub message: Box<Message>,
}

const S: u8 = 0x08;
const D: u8 = 0x04;
const E: u8 = 0x02;
const M: u8 = 0x01;

/// Ones'-complement sum of 16-bit big-endian words (odd tail padded with zero).
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Internet checksum of an IPv4 header (checksum field included: 0 when the header is valid
/// and the field filled in).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    !fold(sum16(0, header))
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u32 {
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(sum16(0, &s.octets()), &d.octets()),
        (s, d) => {
            let to16 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            sum16(sum16(0, &to16(s)), &to16(d))
        }
    };
    // The 32-bit IPv6 length and the 16-bit IPv4 one give the same ones'-complement sum.
    let len = udp_len as u32;
    acc + (len >> 16) + (len & 0xffff) + u32::from(PROTO_UDP)
}

/// UDP checksum over the pseudo-header of `src`/`dst` and the UDP header + payload `udp`
/// (whose checksum field must be zero). Never returns 0: a computed 0 is sent as 0xffff.
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let c = !fold(sum16(pseudo_sum(src, dst, udp.len()), udp));
    if c == 0 { 0xffff } else { c }
}

/// Does the UDP datagram `udp` (checksum field filled in, non-zero) carry a valid checksum?
pub fn udp_checksum_ok(src: IpAddr, dst: IpAddr, udp: &[u8]) -> bool {
    fold(sum16(pseudo_sum(src, dst, udp.len()), udp)) == 0xffff
}

impl Ecm {
    /// An ECM from `src` to `dst` (inner addresses, see [`InnerIp::new`]), UDP 4342 -> 4342.
    pub fn new(src: IpAddr, dst: IpAddr, message: Message) -> Result<Self, Error> {
        Ok(Ecm {
            security: false,
            ddt: false,
            to_etr: false,
            to_ms: false,
            ip: InnerIp::new(src, dst)?,
            src_port: crate::wire::LISP_CONTROL_PORT,
            dst_port: crate::wire::LISP_CONTROL_PORT,
            message: Box::new(message),
        })
    }

    pub fn buffer_len(&self) -> usize {
        4 + self.ip.header_len() + UDP_HEADER_LEN + self.message.buffer_len()
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf);
        let b0 = r.type_byte(msg_type::ECM)?;
        let _reserved = r.bytes(3)?;
        let ip_start = r.pos();
        let version = *buf.get(ip_start).ok_or(Error::Truncated)? >> 4;
        let ip = match version {
            4 => {
                let h = r.bytes(IPV4_HEADER_LEN)?;
                if h[0] & 0x0f != 5 {
                    // Options in the inner header: no implementation sends them.
                    return Err(Error::BadInnerHeader);
                }
                let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                let frag = u16::from_be_bytes([h[6], h[7]]);
                if total != buf.len() - ip_start || frag & 0x3fff != 0 || h[9] != PROTO_UDP {
                    return Err(Error::BadInnerHeader);
                }
                if ipv4_header_checksum(h) != 0 {
                    return Err(Error::BadChecksum);
                }
                InnerIp::V4 {
                    src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
                    dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
                    tos: h[1],
                    ident: u16::from_be_bytes([h[4], h[5]]),
                    dont_fragment: frag & 0x4000 != 0,
                    ttl: h[8],
                }
            }
            6 => {
                let h = r.bytes(IPV6_HEADER_LEN)?;
                let word = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
                if payload != r.remaining() || h[6] != PROTO_UDP {
                    return Err(Error::BadInnerHeader);
                }
                let mut src = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                InnerIp::V6 {
                    src: Ipv6Addr::from(src),
                    dst: Ipv6Addr::from(dst),
                    traffic_class: (word >> 20) as u8,
                    flow_label: word & 0x000f_ffff,
                    hop_limit: h[7],
                }
            }
            _ => return Err(Error::BadInnerHeader),
        };
        let udp_start = r.pos();
        let src_port = r.u16()?;
        let dst_port = r.u16()?;
        let udp_len = usize::from(r.u16()?);
        let checksum = r.u16()?;
        if udp_len != buf.len() - udp_start {
            return Err(Error::BadInnerHeader);
        }
        let udp = &buf[udp_start..];
        match (checksum, &ip) {
            (0, InnerIp::V4 { .. }) => {}
            (0, InnerIp::V6 { .. }) => return Err(Error::BadChecksum),
            _ => {
                if !udp_checksum_ok(ip.src(), ip.dst(), udp) {
                    return Err(Error::BadChecksum);
                }
            }
        }
        let inner = &buf[r.pos()..];
        if Message::peek_type(inner)? == msg_type::ECM {
            return Err(Error::NestedEcm);
        }
        let message = Message::parse(inner)?;
        Ok(Ecm {
            security: b0 & S != 0,
            ddt: b0 & D != 0,
            to_etr: b0 & E != 0,
            to_ms: b0 & M != 0,
            ip,
            src_port,
            dst_port,
            message: Box::new(message),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if matches!(*self.message, Message::Ecm(_)) {
            return Err(Error::NestedEcm);
        }
        let total = self.buffer_len();
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let inner_len = self.message.buffer_len();
        let udp_len = UDP_HEADER_LEN + inner_len;
        let udp_len16 = u16::try_from(udp_len).map_err(|_| Error::ValueTooLarge)?;
        let mut w = Writer::new(buf);
        w.u8((msg_type::ECM << 4)
            | flag(self.security, S)
            | flag(self.ddt, D)
            | flag(self.to_etr, E)
            | flag(self.to_ms, M))?;
        w.bytes(&[0, 0, 0])?;
        let ip_start = w.pos();
        match self.ip {
            InnerIp::V4 {
                src,
                dst,
                tos,
                ident,
                dont_fragment,
                ttl,
            } => {
                let total16 =
                    u16::try_from(IPV4_HEADER_LEN + udp_len).map_err(|_| Error::ValueTooLarge)?;
                w.u8(0x45)?;
                w.u8(tos)?;
                w.u16(total16)?;
                w.u16(ident)?;
                w.u16(if dont_fragment { 0x4000 } else { 0 })?;
                w.u8(ttl)?;
                w.u8(PROTO_UDP)?;
                w.u16(0)?;
                w.bytes(&src.octets())?;
                w.bytes(&dst.octets())?;
            }
            InnerIp::V6 {
                src,
                dst,
                traffic_class,
                flow_label,
                hop_limit,
            } => {
                if flow_label > 0x000f_ffff {
                    return Err(Error::ValueTooLarge);
                }
                w.u32((6 << 28) | (u32::from(traffic_class) << 20) | flow_label)?;
                w.u16(udp_len16)?;
                w.u8(PROTO_UDP)?;
                w.u8(hop_limit)?;
                w.bytes(&src.octets())?;
                w.bytes(&dst.octets())?;
            }
        }
        let udp_start = w.pos();
        w.u16(self.src_port)?;
        w.u16(self.dst_port)?;
        w.u16(udp_len16)?;
        w.u16(0)?;
        let msg_start = w.pos();
        let n = self.message.emit(&mut w.buf_mut()[msg_start..])?;
        let end = msg_start + n;
        let out = w.buf_mut();
        if let InnerIp::V4 { .. } = self.ip {
            let c = ipv4_header_checksum(&out[ip_start..ip_start + IPV4_HEADER_LEN]);
            out[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
        }
        let c = udp_checksum(self.ip.src(), self.ip.dst(), &out[udp_start..end]);
        out[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
        Ok(end)
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        emit_to_vec(self.buffer_len(), |b| self.emit(b))
    }
}
