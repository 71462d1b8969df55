//! The LISP datagrams of the slow path, without I/O: what the ITR sends for a slow-path sample
//! (record + frame from the XDP program), and what the ETR makes of a reassembled datagram
//! (instance check, TTL and ECN as on the fast path).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lisp_common::maps::{AF_IPV4, AF_IPV6, SlowPathRecord};
use lisp_common::wire::LISP_DATA_PORT;
use lisp_common::wire::data::{HEADER_LEN, flags as lisp_flags};

/// Why a slow-path sample or a reassembled datagram was not handled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlowPathError {
    #[error("slow-path sample of {0} bytes, shorter than its record")]
    ShortSample(usize),
    #[error("slow-path record says {said} frame bytes, sample has {has}")]
    FrameLength { said: usize, has: usize },
    #[error("RLOC of unknown family {0}")]
    Family(u8),
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    #[error("truncated or inconsistent IP header")]
    BadIp,
    #[error("LISP datagram of {0} bytes is too short")]
    ShortLisp(usize),
    #[error("LISP header with both N and V bits")]
    BadFlags,
    #[error("instance-id {0} is not decapsulated here")]
    UnknownInstance(u32),
    #[error("TTL / hop limit would expire")]
    TtlExpired,
    #[error("outer header CE over a Not-ECT inner packet (RFC 6040 §4.2)")]
    EcnDrop,
}

/// What the kernel told about the outer header of a reassembled datagram (ancillary data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OuterHeader {
    pub ttl: Option<u8>,
    pub tos: Option<u8>,
}

/// Sets TTL / hop limit and ECN of the IP packet `p` (IPv4 header checksum recomputed).
fn set_ttl_ecn(p: &mut [u8], v6: bool, ttl: u8, ecn: u8) {
    if v6 {
        p[7] = ttl;
        p[1] = (p[1] & !0x30) | (ecn << 4);
    } else {
        p[8] = ttl;
        p[1] = (p[1] & !3) | ecn;
        let ihl = usize::from(p[0] & 0xf) * 4;
        p[10] = 0;
        p[11] = 0;
        let mut s: u32 = p[..ihl]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        p[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    }
}

/// What the ITR's slow path sends: the datagram (LISP header + inner packet) and where to.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub ttl: u8,
    pub tos: u8,
    pub datagram: Vec<u8>,
}

/// Total length and header length of the IP packet at the start of `p`, checked.
fn ip_lengths(p: &[u8]) -> Result<(usize, bool), SlowPathError> {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            if p.len() < 20 {
                return Err(SlowPathError::BadIp);
            }
            let ihl = usize::from(p[0] & 0xf) * 4;
            let tot = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ihl < 20 || tot < ihl || tot > p.len() {
                return Err(SlowPathError::BadIp);
            }
            Ok((tot, false))
        }
        Some(6) => {
            if p.len() < 40 {
                return Err(SlowPathError::BadIp);
            }
            let tot = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if tot > p.len() {
                return Err(SlowPathError::BadIp);
            }
            Ok((tot, true))
        }
        _ => Err(SlowPathError::NotIp),
    }
}

/// Decrements the TTL / hop limit of the IP packet `p` (IPv4 header checksum updated,
/// RFC 1624), as the router it is.
fn decrement_ttl(p: &mut [u8], v6: bool) {
    if v6 {
        p[7] = p[7].saturating_sub(1);
    } else {
        let old = u16::from_be_bytes([p[8], p[9]]);
        p[8] = p[8].saturating_sub(1);
        let new = u16::from_be_bytes([p[8], p[9]]);
        let csum = u16::from_be_bytes([p[10], p[11]]);
        let mut s = u32::from(!csum) + u32::from(!old) + u32::from(new);
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        p[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    }
}

/// Builds the datagram for one slow-path sample (record + frame).
pub fn encapsulate(sample: &[u8]) -> Result<Outgoing, SlowPathError> {
    let n = size_of::<SlowPathRecord>();
    if sample.len() < n {
        return Err(SlowPathError::ShortSample(sample.len()));
    }
    // Field by field at their offsets (layout checked by lisp-common's test), never a cast.
    let mut rloc = [0u8; 16];
    rloc.copy_from_slice(&sample[0..16]);
    let (family, ttl, tos) = (sample[16], sample[17], sample[18]);
    let frame_len = u32::from_ne_bytes(sample[20..24].try_into().expect("4 bytes")) as usize;
    let lisp: [u8; HEADER_LEN] = sample[24..32].try_into().expect("8 bytes");
    let frame = &sample[n..];
    if frame.len() < frame_len || frame_len < 14 {
        return Err(SlowPathError::FrameLength {
            said: frame_len,
            has: frame.len(),
        });
    }
    let ip = &frame[14..frame_len];
    let (tot, v6) = ip_lengths(ip)?;
    let to = match family {
        AF_IPV4 => IpAddr::V4(Ipv4Addr::new(rloc[0], rloc[1], rloc[2], rloc[3])),
        AF_IPV6 => IpAddr::V6(Ipv6Addr::from(rloc)),
        f => return Err(SlowPathError::Family(f)),
    };
    let mut datagram = Vec::with_capacity(HEADER_LEN + tot);
    datagram.extend_from_slice(&lisp);
    datagram.extend_from_slice(&ip[..tot]);
    decrement_ttl(&mut datagram[HEADER_LEN..], v6);
    Ok(Outgoing {
        to: SocketAddr::new(to, LISP_DATA_PORT),
        ttl,
        tos,
        datagram,
    })
}

/// A reassembled LISP datagram, decapsulated: the inner packet (TTL decremented) and where it
/// is to be routed.
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming {
    pub instance_id: u32,
    /// Kernel table of the instance (0 = main through the rules).
    pub table: u32,
    pub dst: IpAddr,
    pub packet: Vec<u8>,
}

/// Decapsulates `datagram` (UDP payload: LISP header + inner packet) if its instance is one of
/// `tables` (instance-id → kernel table, as in IID_TABLES).
pub fn decapsulate(
    datagram: &[u8],
    outer: OuterHeader,
    tables: &HashMap<u32, u32>,
) -> Result<Incoming, SlowPathError> {
    if datagram.len() < HEADER_LEN + 20 {
        return Err(SlowPathError::ShortLisp(datagram.len()));
    }
    let f = datagram[0];
    if f & lisp_flags::N != 0 && f & lisp_flags::V != 0 {
        return Err(SlowPathError::BadFlags);
    }
    let iid = if f & lisp_flags::I != 0 {
        u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]])
    } else {
        0
    };
    let table = *tables
        .get(&iid)
        .ok_or(SlowPathError::UnknownInstance(iid))?;
    let inner = &datagram[HEADER_LEN..];
    let (tot, v6) = ip_lengths(inner)?;
    let mut packet = inner[..tot].to_vec();
    let dst = if v6 {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&packet[24..40]).expect("16"),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            packet[16], packet[17], packet[18], packet[19],
        ))
    };
    // TTL: min(inner, outer), RFC 9300 §5.3, then one hop for this router.
    let (inner_ttl, inner_tc) = if v6 {
        (packet[7], ((packet[0] & 0xf) << 4) | (packet[1] >> 4))
    } else {
        (packet[8], packet[1])
    };
    let ttl = outer.ttl.map_or(inner_ttl, |o| o.min(inner_ttl));
    if ttl <= 1 {
        return Err(SlowPathError::TtlExpired);
    }
    // ECN decapsulation, RFC 6040 §4.2 (as the fast path does).
    let i_ecn = inner_tc & 3;
    let o_ecn = outer.tos.map_or(i_ecn, |t| t & 3);
    if i_ecn == 0 && o_ecn == 3 {
        return Err(SlowPathError::EcnDrop);
    }
    let ecn = if i_ecn == 0 {
        0
    } else if o_ecn == 3 || (o_ecn == 1 && i_ecn == 2) {
        o_ecn
    } else {
        i_ecn
    };
    set_ttl_ecn(&mut packet, v6, ttl - 1, ecn);
    Ok(Incoming {
        instance_id: iid,
        table,
        dst,
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TABLE_MAIN;

    fn ipv4_packet(ttl: u8, df: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        if df {
            p[6] = 0x40;
        }
        p[8] = ttl;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 51, 100, 10]);
        p[16..20].copy_from_slice(&[203, 0, 113, 10]);
        let c = csum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn csum(b: &[u8]) -> u16 {
        let mut s: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn sample(rec: &SlowPathRecord, frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&rec.rloc);
        v.extend_from_slice(&[rec.rloc_family, rec.ttl, rec.tos, 0]);
        v.extend_from_slice(&rec.frame_len.to_ne_bytes());
        v.extend_from_slice(&rec.lisp_header);
        assert_eq!(v.len(), size_of::<SlowPathRecord>());
        v.extend_from_slice(frame);
        v.extend_from_slice(&[0xee; 4]); // perf alignment padding
        v
    }

    #[test]
    fn encapsulates_a_sample_with_the_header_the_program_chose() {
        let ip = ipv4_packet(64, false, 1500);
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        let mut rloc = [0u8; 16];
        rloc[..4].copy_from_slice(&[192, 0, 2, 74]);
        let rec = SlowPathRecord {
            rloc,
            rloc_family: AF_IPV4,
            ttl: 63,
            tos: 0x28,
            frame_len: frame.len() as u32,
            lisp_header: [0x88, 0xab, 0xcd, 0xef, 0, 0, 7, 0],
            ..Default::default()
        };
        let o = encapsulate(&sample(&rec, &frame)).unwrap();
        assert_eq!(o.to, "192.0.2.74:4341".parse().unwrap());
        assert_eq!((o.ttl, o.tos), (63, 0x28));
        assert_eq!(&o.datagram[..8], &rec.lisp_header);
        let inner = &o.datagram[8..];
        assert_eq!(inner.len(), 1500);
        assert_eq!(inner[8], 63, "inner TTL decremented");
        assert_eq!(csum(&inner[..20]), 0, "inner checksum still valid");
        assert_eq!(&inner[12..], &ip[12..]);

        // Truncated, inconsistent or foreign samples are refused, never half-sent.
        let s = sample(&rec, &frame);
        assert_eq!(encapsulate(&s[..10]), Err(SlowPathError::ShortSample(10)));
        let mut bad = rec;
        bad.frame_len += 10;
        assert!(matches!(
            encapsulate(&sample(&bad, &frame)),
            Err(SlowPathError::FrameLength { .. })
        ));
        let mut bad = rec;
        bad.rloc_family = 9;
        assert_eq!(
            encapsulate(&sample(&bad, &frame)),
            Err(SlowPathError::Family(9))
        );
        let mut f2 = frame.clone();
        f2[14 + 2] = 0xff; // total length beyond the frame
        assert_eq!(encapsulate(&sample(&rec, &f2)), Err(SlowPathError::BadIp));
    }

    #[test]
    fn decapsulation_takes_the_smaller_ttl_and_combines_ecn() {
        let tables: HashMap<u32, u32> = [(0, 0)].into_iter().collect();
        let dgram = |ttl: u8, ecn: u8| {
            let mut p = ipv4_packet(ttl, true, 100);
            p[1] = ecn;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = csum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let mut d = vec![0u8; 8];
            d.extend_from_slice(&p);
            d
        };
        let outer = |ttl: u8, tos: u8| OuterHeader {
            ttl: Some(ttl),
            tos: Some(tos),
        };
        // min(inner 30, outer 10) − 1; ECT(0) inside, CE outside → CE (RFC 6040 §4.2).
        let inc = decapsulate(&dgram(30, 2), outer(10, 3), &tables).unwrap();
        assert_eq!((inc.packet[8], inc.packet[1] & 3), (9, 3));
        assert_eq!(csum(&inc.packet[..20]), 0, "checksum redone");
        // Outer TTL larger: the inner one counts; ECT(1) outside over ECT(0) inside → ECT(1).
        let inc = decapsulate(&dgram(30, 2), outer(64, 1), &tables).unwrap();
        assert_eq!((inc.packet[8], inc.packet[1] & 3), (29, 1));
        // Expiring, and CE over Not-ECT: dropped.
        assert_eq!(
            decapsulate(&dgram(30, 0), outer(1, 0), &tables),
            Err(SlowPathError::TtlExpired)
        );
        assert_eq!(
            decapsulate(&dgram(30, 0), outer(64, 3), &tables),
            Err(SlowPathError::EcnDrop)
        );
    }

    #[test]
    fn decapsulates_only_configured_instances() {
        let tables: HashMap<u32, u32> = [(0, 0), (7, TABLE_MAIN)].into_iter().collect();
        let inner = ipv4_packet(30, false, 1400);
        let mut d = vec![0x80, 1, 2, 3, 0, 0, 0, 0];
        d.extend_from_slice(&inner);
        let none = OuterHeader::default();
        let inc = decapsulate(&d, none, &tables).unwrap();
        assert_eq!((inc.instance_id, inc.table), (0, 0));
        assert_eq!(inc.dst, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(inc.packet[8], 29);
        assert_eq!(csum(&inc.packet[..20]), 0);
        assert_eq!(&inc.packet[12..], &inner[12..]);
        d[0] = 0x88;
        d[4..8].copy_from_slice(&(7u32 << 8).to_be_bytes());
        assert_eq!(decapsulate(&d, none, &tables).unwrap().instance_id, 7);
        d[4..8].copy_from_slice(&(9u32 << 8).to_be_bytes());
        assert_eq!(
            decapsulate(&d, none, &tables),
            Err(SlowPathError::UnknownInstance(9))
        );
        d[0] = 0x90; // N and V
        assert_eq!(decapsulate(&d, none, &tables), Err(SlowPathError::BadFlags));
        assert_eq!(
            decapsulate(&d[..20], none, &tables),
            Err(SlowPathError::ShortLisp(20))
        );
        let none = OuterHeader::default();
        let mut d = vec![0, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&[0x55; 40]);
        assert_eq!(decapsulate(&d, none, &tables), Err(SlowPathError::NotIp));
    }
}
