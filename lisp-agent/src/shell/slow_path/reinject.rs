//! Reassembled LISP datagrams back through the XDP program, as if they had arrived whole.
//!
//! The kernel reassembles outer fragments for the slow path's UDP 4341 socket; decapsulating
//! there would need a second copy of everything the ETR does (instance check, the instance's
//! routing table, TTL, ECN, the absent-EID check, counters). Instead the datagram is rebuilt
//! as the unfragmented frame it was (Ethernet + outer IP + UDP + LISP) and run once through the
//! loaded `xdp_lisp` program with BPF_PROG_TEST_RUN in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+): a redirect leaves through the egress interface,
//! a pass enters the kernel's stack on the ingress interface, exactly as on the fast path. The
//! program only sees LISP data for a local RLOC here, which it always decapsulates or drops, so
//! nothing comes back to the socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use lisp_common::wire::LISP_DATA_PORT;

/// Largest frame a live-frames test run takes: a page minus XDP headroom and the shared info
/// (4096 − 256 − 320). Bigger datagrams take the userspace decapsulation.
pub const MAX_FRAME: usize = 3520;

/// What the socket learnt with the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The ITR that sent it (outer source address and port).
    pub from: SocketAddr,
    /// The local RLOC it was sent to.
    pub to: IpAddr,
    pub ttl: u8,
    pub tos: u8,
    /// The interface it arrived on.
    pub ifindex: u32,
}

/// One's-complement checksum of `b` (for the outer IPv4 header).
fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The frame `datagram` (UDP payload: LISP header + inner packet) arrived in, unfragmented:
/// addressed to `mac` (the ingress interface), outer header from `a`. `None` if the families
/// of the addresses differ or it would not fit an IP packet.
pub fn rebuild_frame(a: &Arrival, mac: [u8; 6], datagram: &[u8]) -> Option<Vec<u8>> {
    let udp_len = 8 + datagram.len();
    let mut f = Vec::with_capacity(14 + 40 + udp_len);
    f.extend_from_slice(&mac);
    // A locally administered source: the kernel ignores it, nothing answers to it.
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0]);
    match (a.from.ip(), a.to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let tot = u16::try_from(20 + udp_len).ok()?;
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[1] = a.tos;
            h[2..4].copy_from_slice(&tot.to_be_bytes());
            h[8] = a.ttl;
            h[9] = 17;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(udp_len).ok()?;
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let w0: u32 = (6 << 28) | (u32::from(a.tos) << 20);
            f.extend_from_slice(&w0.to_be_bytes());
            f.extend_from_slice(&plen.to_be_bytes());
            f.push(17);
            f.push(a.ttl);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    f.extend_from_slice(&a.from.port().to_be_bytes());
    f.extend_from_slice(&LISP_DATA_PORT.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // Zero UDP checksum: the ETR accepts it (RFC 6935/6936), and it was verified on arrival.
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(datagram);
    Some(f)
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN (the `test` member, Linux 5.18 layout).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 2;

/// Runs frames through the loaded XDP program in live mode.
pub struct Reinjector {
    prog: OwnedFd,
}

impl Reinjector {
    pub fn new(prog: OwnedFd) -> Reinjector {
        Reinjector { prog }
    }

    /// Runs `frame` once as if it had arrived on `ifindex`; the program's verdict.
    pub fn run(&self, ifindex: u32, frame: &[u8]) -> io::Result<u32> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ctx_size_in: size_of_val(&md) as u32,
            ctx_in: md.as_ptr() as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            ..TestRunAttr::default()
        };
        // SAFETY: bpf(2) with an attribute struct of the size passed; the buffers it points at
        // live until the call returns, and live mode writes nothing back but the attribute.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                size_of::<TestRunAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr.retval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_the_unfragmented_frame() {
        let a = Arrival {
            from: "192.0.2.10:4341".parse().unwrap(),
            to: "192.0.2.74".parse().unwrap(),
            ttl: 62,
            tos: 0x28,
            ifindex: 3,
        };
        let d = [0x80u8, 1, 2, 3, 0, 0, 0, 0, 0x45, 0];
        let f = rebuild_frame(&a, [2, 0, 0, 0, 2, 2], &d).unwrap();
        assert_eq!(&f[..6], &[2, 0, 0, 0, 2, 2]);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!(checksum(ip), 0, "valid outer header checksum");
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            20 + 8 + d.len()
        );
        assert_eq!((ip[1], ip[8], ip[9]), (0x28, 62, 17));
        assert_eq!(&ip[6..8], &[0, 0], "not a fragment");
        assert_eq!(&ip[12..16], &[192, 0, 2, 10]);
        assert_eq!(&ip[16..20], &[192, 0, 2, 74]);
        let udp = &f[34..42];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4341);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, 8 + d.len());
        assert_eq!(&f[42..], &d);

        let a6 = Arrival {
            from: "[2001:db8:ff:2::10]:50000".parse().unwrap(),
            to: "2001:db8:ff:1::10".parse().unwrap(),
            ..a
        };
        let f = rebuild_frame(&a6, [2; 6], &d).unwrap();
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip = &f[14..54];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(((ip[0] & 0xf) << 4) | (ip[1] >> 4), 0x28, "traffic class");
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, 8 + d.len());
        assert_eq!((ip[6], ip[7]), (17, 62));
        assert_eq!(u16::from_be_bytes([f[54], f[55]]), 50000);
        // Mixed families cannot be one packet.
        let mixed = Arrival {
            to: "192.0.2.74".parse().unwrap(),
            ..a6
        };
        assert_eq!(rebuild_frame(&mixed, [2; 6], &d), None);
    }
}
