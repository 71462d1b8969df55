//! A tiny pcap / pcapng reader for the test captures: frames → (addresses, UDP ports, payload).
//! Only what the captures use: Ethernet (optionally 802.1Q), Linux cooked v1/v2 and raw IP link
//! types; IPv4 (no fragments) and IPv6 (UDP directly after the fixed header).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Where the test captures live: `testdata/captures` of this workspace (copied into the
/// repository from the project's shared captures, see its README for where each came from), or
/// `LISP_CAPTURES_DIR`. Resolved from this crate's manifest, so that any clone finds them.
/// Panics with what to do if absent: a test that silently skipped its captures would prove
/// nothing.
pub fn captures_dir() -> PathBuf {
    let dir = std::env::var_os("LISP_CAPTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures"));
    assert!(
        dir.join("README.md").is_file(),
        "test captures not found at {}: they belong to the repository (testdata/captures); \
         restore them or set LISP_CAPTURES_DIR",
        dir.display()
    );
    dir
}

#[derive(Debug, Clone)]
pub struct Udp {
    /// 1-based frame number, as tshark numbers frames.
    pub frame: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize, be: bool) -> u32 {
    let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// (link type, frame bytes) of every packet in a pcap or pcapng file.
pub fn read_frames(path: &Path) -> Vec<(u32, Vec<u8>)> {
    let d = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let magic = u32_at(&d, 0, false);
    let mut out = Vec::new();
    if magic == 0x0a0d_0d0a {
        // pcapng: blocks of (type, total length, body, total length).
        let be = u32_at(&d, 8, false) != 0x1a2b_3c4d;
        let mut links = Vec::new();
        let mut o = 0;
        while o + 12 <= d.len() {
            let ty = u32_at(&d, o, be);
            let len = u32_at(&d, o + 4, be) as usize;
            assert!(
                len >= 12 && o + len <= d.len(),
                "bad pcapng block in {}",
                path.display()
            );
            let body = &d[o + 8..o + len - 4];
            match ty {
                1 => links.push(if be {
                    u16::from_be_bytes([body[0], body[1]])
                } else {
                    u16le(body, 0)
                } as u32),
                6 => {
                    let iface = u32_at(body, 0, be) as usize;
                    let cap = u32_at(body, 12, be) as usize;
                    out.push((links[iface], body[20..20 + cap].to_vec()));
                }
                3 => {
                    let orig = u32_at(body, 0, be) as usize;
                    let cap = orig.min(body.len() - 4);
                    out.push((links[0], body[4..4 + cap].to_vec()));
                }
                _ => {}
            }
            o += len;
        }
    } else {
        let be = match magic {
            0xa1b2_c3d4 | 0xa1b2_3c4d => false,
            0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
            m => panic!("{}: not a pcap file (magic {m:#x})", path.display()),
        };
        let link = u32_at(&d, 20, be);
        let mut o = 24;
        while o + 16 <= d.len() {
            let cap = u32_at(&d, o + 8, be) as usize;
            out.push((link, d[o + 16..o + 16 + cap].to_vec()));
            o += 16 + cap;
        }
    }
    out
}

/// The IP packet inside a frame of the given link type.
fn ip_of(link: u32, f: &[u8]) -> Option<&[u8]> {
    let (ethertype, start) = match link {
        1 => {
            let mut et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
            let mut start = 14;
            if et == 0x8100 {
                et = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
                start = 18;
            }
            (et, start)
        }
        113 => (u16::from_be_bytes([*f.get(14)?, *f.get(15)?]), 16),
        276 => (u16::from_be_bytes([*f.first()?, *f.get(1)?]), 20),
        101 | 228 | 229 => return Some(f),
        _ => return None,
    };
    match ethertype {
        0x0800 | 0x86dd => f.get(start..),
        _ => None,
    }
}

/// Decode an IP packet carrying UDP into its parts (None for anything else).
pub fn udp_of_ip(frame: usize, ip: &[u8]) -> Option<Udp> {
    let (src, dst, udp) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if *ip.get(9)? != 17 || frag & 0x3fff != 0 {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ip.get(ihl..total.min(ip.len()))?,
            )
        }
        6 => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                ip.get(40..(40 + plen).min(ip.len()))?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..ulen.min(udp.len()))?.to_vec();
    Some(Udp {
        frame,
        src,
        dst,
        sport,
        dport,
        payload,
    })
}

/// Every UDP datagram of a capture file.
pub fn udp_datagrams(path: &Path) -> Vec<Udp> {
    read_frames(path)
        .iter()
        .enumerate()
        .filter_map(|(i, (link, f))| udp_of_ip(i + 1, ip_of(*link, f)?))
        .collect()
}

/// UDP datagrams of a file under the captures directory with a LISP port (4341 data / 4342
/// control) as source or destination.
pub fn lisp_datagrams(rel: &str, port: u16) -> Vec<Udp> {
    udp_datagrams(&captures_dir().join(rel))
        .into_iter()
        .filter(|u| u.dport == port || u.sport == port)
        .collect()
}

/// The UDP payload of frame `frame` (tshark's numbering, from 1) of `rel` under the captures
/// directory; panics naming the file if that frame holds no UDP datagram.
pub fn udp_payload(rel: &str, frame: usize) -> Vec<u8> {
    let path = captures_dir().join(rel);
    udp_datagrams(&path)
        .into_iter()
        .find(|u| u.frame == frame)
        .unwrap_or_else(|| panic!("no UDP datagram in frame {frame} of {}", path.display()))
        .payload
}
