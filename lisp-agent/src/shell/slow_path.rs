//! The slow path of the data plane, both directions, for what XDP cannot do (RFC 9300 §7.1):
//!
//! - **ITR, fragmentation.** A packet to encapsulate that is too big for the path and must not
//!   be answered with ICMP (IPv4 without DF, an ICMP error, a path MTU below 1280 for IPv6) or
//!   that found no headroom arrives here from the SLOW_PATH perf array: the record (RLOC, LISP
//!   header, outer TTL/TOS) and the frame as it arrived. It leaves as a UDP datagram (LISP
//!   header + inner packet) from the local RLOC's port 4341 to the RLOC's port 4341, on a socket
//!   with path-MTU discovery off, so the kernel fragments the outer packet instead of refusing
//!   it. The UDP checksum is the kernel's (non-zero; an ETR accepts both).
//! - **ETR, reassembly.** XDP passes outer fragments of LISP data to the kernel untouched; the
//!   kernel reassembles them and delivers the datagram to the same socket. It is decapsulated
//!   here, only for the configured instance-ids, and the inner packet is sent on a raw socket
//!   (IP_HDRINCL) routed by the kernel.
//!
//! As on the fast path, the inner TTL becomes min(inner, outer) − 1 (RFC 9300 §5.3; the outer
//! TTL and TOS of the reassembled datagram come with it as ancillary data) and ECN is combined
//! per RFC 6040 §4.2. A limit, on purpose: inner packets of an instance with its own table
//! (other than main) are refused and counted (delivering into another table needs a VRF
//! binding this agent does not set up).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::perf::PerfEvent;
use aya::maps::{MapData, PerfEventArray};
use lisp_common::maps::{AF_IPV4, AF_IPV6, SlowPathRecord};
use lisp_common::wire::LISP_DATA_PORT;
use lisp_common::wire::data::{HEADER_LEN, flags as lisp_flags};
use log::{debug, info, warn};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use crate::config::TABLE_MAIN;

/// Counters of the slow path (exported as `lisp_slow_path_packets_total{outcome=...}`).
#[derive(Debug, Default)]
pub struct SlowPathStats {
    /// Encapsulated and handed to the kernel (which fragments the outer packet).
    pub encap_sent: AtomicU64,
    /// Could not be encapsulated: bad record or frame, no socket of the RLOC's family, send
    /// error.
    pub encap_failed: AtomicU64,
    /// Perf samples lost (buffer full).
    pub lost: AtomicU64,
    /// Reassembled LISP datagrams decapsulated and delivered.
    pub decap_delivered: AtomicU64,
    /// Refused: instance-id not configured (or with a table this path cannot deliver into).
    pub decap_unknown_instance: AtomicU64,
    /// Refused: malformed LISP header or inner packet.
    pub decap_malformed: AtomicU64,
    /// Dropped: TTL would expire, or CE outside over a Not-ECT inner packet (RFC 6040).
    pub decap_dropped: AtomicU64,
    /// The raw socket refused the inner packet.
    pub decap_failed: AtomicU64,
}

impl SlowPathStats {
    /// `(outcome, value)` for the metrics.
    pub fn series(&self) -> [(&'static str, u64); 8] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("encap_sent", l(&self.encap_sent)),
            ("encap_failed", l(&self.encap_failed)),
            ("lost", l(&self.lost)),
            ("decap_delivered", l(&self.decap_delivered)),
            ("decap_unknown_instance", l(&self.decap_unknown_instance)),
            ("decap_malformed", l(&self.decap_malformed)),
            ("decap_dropped", l(&self.decap_dropped)),
            ("decap_failed", l(&self.decap_failed)),
        ]
    }
}

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

// ------------------------------------------------------------------------------------ sockets

fn setsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size on a valid fd.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The UDP 4341 socket of one local RLOC: path-MTU discovery off (the kernel fragments what is
/// bigger than the path instead of refusing it), IP_FREEBIND so that it binds even while the
/// address is not (yet) configured.
fn data_socket(rloc: IpAddr) -> io::Result<UdpSocket> {
    let domain = if rloc.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match rloc {
        IpAddr::V4(_) => {
            setsockopt_int(
                &fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DONT,
            )?;
            setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
            setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
            setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
        }
        IpAddr::V6(_) => {
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
            setsockopt_int(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DONT,
            )?;
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)?;
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
        }
    }
    let (sa, len) = sockaddr_of(SocketAddr::new(rloc, LISP_DATA_PORT));
    // SAFETY: valid fd and a sockaddr of the given length.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// Receives one datagram with the TTL and TOS of its (outer) IP header, which the socket asks
/// for with IP_RECVTTL/IP_RECVTOS (IPV6_RECVHOPLIMIT/IPV6_RECVTCLASS).
fn recv_with_outer(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, OuterHeader)> {
    #[repr(C, align(8))]
    struct Cmsgs([u8; 128]);
    let mut cmsgs = Cmsgs([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; it is filled with buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsgs.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsgs.0.len();
    // SAFETY: valid fd and msghdr.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut outer = OuterHeader::default();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; each payload is read unaligned with its documented size.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let int = || (data as *const libc::c_int).read_unaligned();
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_TTL) => outer.ttl = u8::try_from(int()).ok(),
                // IP_TOS arrives as one byte.
                (libc::IPPROTO_IP, libc::IP_TOS) => outer.tos = Some(*data),
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => outer.ttl = u8::try_from(int()).ok(),
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => outer.tos = u8::try_from(int()).ok(),
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, outer))
}

/// Sets the outer TTL / hop limit and TOS / traffic class of the next sends on `sock`.
fn set_ttl_tos(sock: &UdpSocket, v6: bool, ttl: u8, tos: u8) -> io::Result<()> {
    let (ttl, tos) = (libc::c_int::from(ttl), libc::c_int::from(tos));
    if v6 {
        setsockopt_int(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl)?;
        setsockopt_int(sock, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, tos)
    } else {
        setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_TTL, ttl)?;
        setsockopt_int(sock, libc::IPPROTO_IP, libc::IP_TOS, tos)
    }
}

/// Raw IP sockets (header included) that deliver decapsulated packets, one per family.
struct Delivery {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
}

fn raw_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2). IPPROTO_RAW implies IP_HDRINCL (IPv4) / IPV6_HDRINCL (IPv6).
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Delivery {
    fn open() -> Delivery {
        let open = |d, what| match raw_socket(d) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("slow path: no raw {what} socket for decapsulated packets: {e}");
                None
            }
        };
        Delivery {
            v4: open(libc::AF_INET, "IPv4"),
            v6: open(libc::AF_INET6, "IPv6"),
        }
    }

    /// Sends the inner packet; the kernel routes it by its destination (blocking raw send: a
    /// raw socket does not wait for anything but buffer space).
    fn send(&self, inc: &Incoming) -> io::Result<()> {
        let (fd, addr): (_, SocketAddr) = match inc.dst {
            IpAddr::V4(_) => (&self.v4, SocketAddr::new(inc.dst, 0)),
            IpAddr::V6(_) => (&self.v6, SocketAddr::new(inc.dst, 0)),
        };
        let fd = fd
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no raw socket"))?;
        let (sa, len) = sockaddr_of(addr);
        // SAFETY: valid fd, buffer and sockaddr of the given length.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                inc.packet.as_ptr().cast(),
                inc.packet.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn sockaddr_of(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero sockaddr_storage is valid; the family-specific views below fit in it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// The per-family sockets of the slow path.
pub struct SlowPath {
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    stats: Arc<SlowPathStats>,
}

impl SlowPath {
    /// Binds UDP 4341 on each local RLOC. A socket that cannot be bound is logged and left out:
    /// the fast path does not need it, and its packets are then counted as failed.
    pub fn open(
        rloc4: Option<Ipv4Addr>,
        rloc6: Option<Ipv6Addr>,
        stats: Arc<SlowPathStats>,
    ) -> SlowPath {
        let open = |a: IpAddr| match data_socket(a) {
            Ok(s) => {
                info!(
                    "slow path: UDP {} bound (fragmentation and reassembly of LISP data)",
                    SocketAddr::new(a, LISP_DATA_PORT)
                );
                Some(Arc::new(s))
            }
            Err(e) => {
                warn!(
                    "slow path: cannot bind UDP {}: {e}; too-big packets without DF and outer fragments of this family are lost",
                    SocketAddr::new(a, LISP_DATA_PORT)
                );
                None
            }
        };
        SlowPath {
            v4: rloc4.and_then(|a| open(a.into())),
            v6: rloc6.and_then(|a| open(a.into())),
            stats,
        }
    }

    /// Spawns the readers of the slow-path perf array (one task per CPU) feeding one sender
    /// (so that per-packet TTL/TOS settings on a socket never interleave), and the receivers
    /// of reassembled datagrams (one per socket). `tables`: the instances to decapsulate
    /// (instance-id → kernel table, as in IID_TABLES).
    pub fn spawn(
        self,
        mut perf: PerfEventArray<MapData>,
        tables: &[(u32, u32)],
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        use anyhow::Context as _;
        let mut tasks = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Outgoing>(1024);
        let cpus =
            aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?;
        for cpu in cpus {
            // 64 pages (256 KiB) per CPU: a few dozen full-size frames between two reads.
            let buf = perf
                .open(cpu, Some(64))
                .with_context(|| format!("opening the slow-path buffer of CPU {cpu}"))?;
            // SAFETY: the buffer owns its perf fd until it (moved into the AsyncFd) is dropped.
            let mut fd = unsafe { AsyncFd::register_with_interest(buf, Interest::READABLE) }
                .map_err(|e| {
                    anyhow::anyhow!("registering the slow-path buffer of CPU {cpu}: {e}")
                })?;
            let (tx, stats) = (tx.clone(), self.stats.clone());
            tasks.push(tokio::spawn(async move {
                let mut scratch = Vec::new();
                loop {
                    let mut guard = match fd.readable_mut().await {
                        Ok(g) => g,
                        Err(e) => {
                            warn!("slow-path buffer of CPU {cpu}: {e}");
                            return;
                        }
                    };
                    guard.get_inner_mut().for_each(|ev| match ev {
                        PerfEvent::Sample { head, tail } => {
                            scratch.clear();
                            scratch.extend_from_slice(head);
                            scratch.extend_from_slice(tail);
                            match encapsulate(&scratch) {
                                // Never waits: a lagging sender costs packets, counted.
                                Ok(o) => {
                                    if tx.try_send(o).is_err() {
                                        stats.encap_failed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(e) => {
                                    stats.encap_failed.fetch_add(1, Ordering::Relaxed);
                                    debug!("slow path: sample not encapsulated: {e}");
                                }
                            }
                        }
                        PerfEvent::Lost { count } => {
                            stats.lost.fetch_add(count, Ordering::Relaxed);
                        }
                    });
                    guard.clear_ready();
                }
            }));
        }
        drop(tx);
        {
            let (v4, v6, stats) = (self.v4.clone(), self.v6.clone(), self.stats.clone());
            tasks.push(tokio::spawn(async move {
                let mut last: [Option<(u8, u8)>; 2] = [None, None];
                while let Some(o) = rx.recv().await {
                    let is_v6 = o.to.is_ipv6();
                    let Some(sock) = (if is_v6 { &v6 } else { &v4 }) else {
                        stats.encap_failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let slot = &mut last[usize::from(is_v6)];
                    if *slot != Some((o.ttl, o.tos)) {
                        match set_ttl_tos(sock, is_v6, o.ttl, o.tos) {
                            Ok(()) => *slot = Some((o.ttl, o.tos)),
                            Err(e) => debug!("slow path: setting TTL/TOS: {e}"),
                        }
                    }
                    match sock.send_to(&o.datagram, o.to).await {
                        Ok(_) => {
                            stats.encap_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.encap_failed.fetch_add(1, Ordering::Relaxed);
                            debug!("slow path: sending to {}: {e}", o.to);
                        }
                    }
                }
            }));
        }

        // Delivery into the main table only (see the module doc).
        let mut deliverable = HashMap::new();
        for &(iid, table) in tables {
            if table == 0 || table == TABLE_MAIN {
                deliverable.insert(iid, table);
            } else {
                warn!(
                    "slow path: reassembled LISP data of instance-id {iid} (table {table}) cannot be delivered (main table only); it is counted and dropped"
                );
            }
        }
        let deliverable = Arc::new(deliverable);
        let delivery = Arc::new(Delivery::open());
        for sock in [self.v4, self.v6].into_iter().flatten() {
            let (tables, delivery, stats) =
                (deliverable.clone(), delivery.clone(), self.stats.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let r = sock
                        .async_io(Interest::READABLE, || recv_with_outer(&sock, &mut buf))
                        .await;
                    let (n, outer) = match r {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP errors of earlier sends surface here: not fatal.
                            debug!("slow path: receive: {e}");
                            continue;
                        }
                    };
                    match decapsulate(&buf[..n], outer, &tables) {
                        Ok(inc) => match delivery.send(&inc) {
                            Ok(()) => {
                                stats.decap_delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                stats.decap_failed.fetch_add(1, Ordering::Relaxed);
                                debug!("slow path: delivering to {}: {e}", inc.dst);
                            }
                        },
                        Err(SlowPathError::UnknownInstance(i)) => {
                            stats.decap_unknown_instance.fetch_add(1, Ordering::Relaxed);
                            debug!("slow path: LISP data of instance-id {i} refused");
                        }
                        Err(e @ (SlowPathError::TtlExpired | SlowPathError::EcnDrop)) => {
                            stats.decap_dropped.fetch_add(1, Ordering::Relaxed);
                            debug!("slow path: decapsulated packet dropped: {e}");
                        }
                        Err(e) => {
                            stats.decap_malformed.fetch_add(1, Ordering::Relaxed);
                            debug!("slow path: LISP datagram refused: {e}");
                        }
                    }
                }
            }));
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
