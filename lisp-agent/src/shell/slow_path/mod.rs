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
//!   kernel reassembles them and delivers the datagram to the same socket. The agent rebuilds
//!   the unfragmented frame and runs it once more through the XDP program (BPF_PROG_TEST_RUN,
//!   live frames; see [`reinject`]), which decapsulates it exactly as it does any packet:
//!   configured instances only, the instance's routing table, TTL, ECN, the absent-EID check,
//!   its counters.
//!
//! Only when that cannot be done (a datagram bigger than a live test run takes, ~3.5 KB, or
//! one that arrived on an interface without the ETR role) is it decapsulated here
//! ([`datagram`]) and sent on a raw socket (IP_HDRINCL), with the same TTL (min(inner, outer)
//! − 1, outer TTL/TOS from ancillary data) and ECN (RFC 6040) rules; that fallback delivers
//! into the main table only, and counts what it cannot deliver.

mod datagram;
mod reinject;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::perf::PerfEvent;
use aya::maps::{MapData, PerfEventArray};
use lisp_common::wire::LISP_DATA_PORT;
use log::{debug, info, warn};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use crate::config::TABLE_MAIN;
pub use datagram::{Incoming, OuterHeader, Outgoing, SlowPathError, decapsulate, encapsulate};
pub use reinject::{Arrival, Reinjector, rebuild_frame};

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
    /// Reassembled LISP datagrams run back through the XDP program (which then counts and
    /// decapsulates them like any other).
    pub decap_reinjected: AtomicU64,
    /// Reassembled LISP datagrams decapsulated and delivered here (main table).
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
    pub fn series(&self) -> [(&'static str, u64); 9] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("encap_sent", l(&self.encap_sent)),
            ("encap_failed", l(&self.encap_failed)),
            ("lost", l(&self.lost)),
            ("decap_reinjected", l(&self.decap_reinjected)),
            ("decap_delivered", l(&self.decap_delivered)),
            ("decap_unknown_instance", l(&self.decap_unknown_instance)),
            ("decap_malformed", l(&self.decap_malformed)),
            ("decap_dropped", l(&self.decap_dropped)),
            ("decap_failed", l(&self.decap_failed)),
        ]
    }
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
            setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
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
            setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
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
/// A datagram as received: its length, what the ancillary data said of the outer header, the
/// sender and the ingress interface.
struct Received {
    len: usize,
    outer: OuterHeader,
    from: Option<SocketAddr>,
    ifindex: Option<u32>,
}

fn socket_addr_of(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says sockaddr_in, which fits in sockaddr_storage.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read(ss as *const _ as *const _) };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read(ss as *const _ as *const _) };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn recv_with_outer(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    #[repr(C, align(8))]
    struct Cmsgs([u8; 256]);
    let mut cmsgs = Cmsgs([0; 256]);
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; it is filled with buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
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
    let mut ifindex = None;
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
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let i = (data as *const libc::in_pktinfo).read_unaligned();
                    ifindex = u32::try_from(i.ipi_ifindex).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let i = (data as *const libc::in6_pktinfo).read_unaligned();
                    ifindex = Some(i.ipi6_ifindex);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        outer,
        from: socket_addr_of(&name),
        ifindex,
    })
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

/// Runs a reassembled datagram through the XDP program if it arrived on an ETR interface and
/// fits a live test run; `false` if it must be decapsulated here instead.
fn reinjected(
    (prog, macs): &(Reinjector, HashMap<u32, [u8; 6]>),
    rx: &Received,
    local: IpAddr,
    datagram: &[u8],
) -> bool {
    let (Some(ifindex), Some(from)) = (rx.ifindex, rx.from) else {
        return false;
    };
    let Some(mac) = macs.get(&ifindex) else {
        return false;
    };
    let a = Arrival {
        from,
        to: local,
        // The kernel reports both; the defaults only matter if it did not.
        ttl: rx.outer.ttl.unwrap_or(64),
        tos: rx.outer.tos.unwrap_or(0),
        ifindex,
    };
    let Some(frame) = rebuild_frame(&a, *mac, datagram) else {
        return false;
    };
    if frame.len() > reinject::MAX_FRAME {
        return false;
    }
    match prog.run(ifindex, &frame) {
        Ok(_) => true,
        Err(e) => {
            debug!("slow path: reinjecting through XDP: {e}; decapsulating here");
            false
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
    ///
    /// `reinject`: the XDP program and the MACs of the ETR interfaces (ifindex → MAC). A
    /// reassembled datagram that arrived on one of them goes back through the program (see
    /// [`reinject`]), which decapsulates it like any other; others, and those too big for a
    /// live test run, are decapsulated here into the main table.
    pub fn spawn(
        self,
        mut perf: PerfEventArray<MapData>,
        tables: &[(u32, u32)],
        reinject: Option<(Reinjector, HashMap<u32, [u8; 6]>)>,
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

        // The fallback decapsulation delivers into the main table only (see the module doc).
        let mut deliverable = HashMap::new();
        for &(iid, table) in tables {
            if table == 0 || table == TABLE_MAIN {
                deliverable.insert(iid, table);
            } else {
                info!(
                    "slow path: reassembled LISP data of instance-id {iid} (table {table}) too big to go back through XDP (over {} bytes) cannot be delivered: counted and dropped",
                    reinject::MAX_FRAME
                );
            }
        }
        let deliverable = Arc::new(deliverable);
        let delivery = Arc::new(Delivery::open());
        let reinject = reinject.map(Arc::new);
        for sock in [self.v4, self.v6].into_iter().flatten() {
            let (tables, delivery, stats, reinject) = (
                deliverable.clone(),
                delivery.clone(),
                self.stats.clone(),
                reinject.clone(),
            );
            let local = sock.local_addr().context("slow-path socket address")?.ip();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let r = sock
                        .async_io(Interest::READABLE, || recv_with_outer(&sock, &mut buf))
                        .await;
                    let rx = match r {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP errors of earlier sends surface here: not fatal.
                            debug!("slow path: receive: {e}");
                            continue;
                        }
                    };
                    let (n, outer) = (rx.len, rx.outer);
                    if let Some(r) = &reinject
                        && reinjected(r, &rx, local, &buf[..n])
                    {
                        stats.decap_reinjected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
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
