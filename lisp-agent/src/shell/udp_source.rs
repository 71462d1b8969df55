//! Sending a control datagram from a chosen local address through the wildcard control socket.
//!
//! The control socket is bound to `[::]:4342` (or `0.0.0.0:4342`), so without help the kernel
//! picks the source address from the route to the peer: the egress interface's address. On a
//! router whose RLOCs sit on a loopback or dummy interface that is the wrong address — a
//! map-server would send its Map-Notify to (and register) the link address, and a Map-Reply
//! would come from an address the requester never asked. So each datagram that has a source in
//! mind carries it as ancillary data:
//!
//! - IPv6 destination: `IPV6_PKTINFO` (level `IPPROTO_IPV6`) with `ipi6_addr` = source;
//! - IPv4 destination (v4-mapped on the dual-stack socket, or plain on an IPv4 socket):
//!   `IP_PKTINFO` (level `IPPROTO_IP`) with `ipi_spec_dst` = source. Linux hands a v4-mapped
//!   send on an `AF_INET6` socket to the IPv4 path, which reads `IP_PKTINFO` there too (the
//!   loopback test below proves it on the running kernel).
//!
//! A source that is not a local address (a configuration error) makes the kernel refuse the
//! send; [`SourceSender`] then warns once per address and lets the kernel choose, so a bad
//! locator costs the right source address, not the message.

use std::collections::HashSet;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use log::{debug, warn};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Room for one `cmsghdr` + `in6_pktinfo` (the larger of the two payloads), aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
pub(crate) struct CmsgBuf([u8; 64]);

impl CmsgBuf {
    pub(crate) fn new() -> Self {
        CmsgBuf([0; 64])
    }

    /// For `recvmsg` (`shell::udp_dest`): the kernel writes received control messages here.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Writes the control message that makes the kernel send from `src`, for a datagram to `dst`
/// (as the socket sees it: v4-mapped on an IPv6 socket). Returns the length of ancillary data
/// to pass, or `None` if `src` and `dst` are not of the same family (then no source is set).
pub(crate) fn build_source_cmsg(buf: &mut CmsgBuf, src: IpAddr, dst: SocketAddr) -> Option<usize> {
    if src.is_ipv4() != dst.ip().to_canonical().is_ipv4() {
        buf.0.fill(0);
        return None;
    }
    Some(build_pktinfo_cmsg(buf, Some(src), dst, 0))
}

/// The pktinfo control message for a datagram to `dst` (in the socket's family): source `src`
/// (`None`, or of the other family: the kernel's choice) and outgoing interface `ifindex` (0:
/// the route's). The interface is what a multicast send needs (`shell::group`): carried per
/// datagram like the source, it changes no socket state between two sends.
pub(crate) fn build_pktinfo_cmsg(
    buf: &mut CmsgBuf,
    src: Option<IpAddr>,
    dst: SocketAddr,
    ifindex: u32,
) -> usize {
    buf.0.fill(0);
    if dst.ip().to_canonical().is_ipv4() {
        let s = match src {
            Some(IpAddr::V4(s)) => u32::from_ne_bytes(s.octets()),
            _ => 0,
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: ifindex as libc::c_int,
            ipi_spec_dst: libc::in_addr { s_addr: s },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        put(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, info)
    } else {
        let s = match src {
            Some(IpAddr::V6(s)) => s.octets(),
            _ => [0; 16],
        };
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr { s6_addr: s },
            ipi6_ifindex: ifindex,
        };
        put(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
    }
}

/// One control message of type `ty` at `level` carrying `data`, at the start of `buf`.
fn put<T: Copy>(buf: &mut CmsgBuf, level: libc::c_int, ty: libc::c_int, data: T) -> usize {
    // Both payloads are constants of a few bytes (checked by the unit tests): the casts and the
    // buffer size cannot fall short.
    let data_len = size_of::<T>() as libc::c_uint;
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe { (libc::CMSG_SPACE(data_len), libc::CMSG_LEN(data_len)) };
    debug_assert!(space as usize <= buf.0.len(), "CmsgBuf too small");
    let space = (space as usize).min(buf.0.len());
    // SAFETY: an all-zero msghdr is valid; it only describes `buf` to the CMSG_* macros.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `buf` is aligned for cmsghdr and holds CMSG_SPACE(size_of::<T>()) bytes, so the
    // header and the data written below are in bounds; CMSG_FIRSTHDR is non-null because
    // msg_controllen >= size_of::<cmsghdr>().
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), data);
    }
    space
}

/// `dst` as a C socket address of its own family, and its length.
fn sockaddr(dst: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match dst {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Sends `payload` to `dst` (in the socket's family) from local address `src` with one
/// `sendmsg`. Falls back to a plain send when `src` and `dst` differ in family.
pub async fn send_from(
    sock: &UdpSocket,
    payload: &[u8],
    dst: SocketAddr,
    src: IpAddr,
) -> io::Result<usize> {
    let mut cbuf = CmsgBuf::new();
    let Some(clen) = build_source_cmsg(&mut cbuf, src, dst) else {
        return sock.send_to(payload, dst).await;
    };
    send_with_cmsg(sock, payload, dst, &cbuf, clen).await
}

/// Sends `payload` to `dst` (in the socket's family) with the pktinfo of
/// [`build_pktinfo_cmsg`]: from `src` if given, out of `ifindex`.
pub async fn send_via(
    sock: &UdpSocket,
    payload: &[u8],
    dst: SocketAddr,
    src: Option<IpAddr>,
    ifindex: u32,
) -> io::Result<usize> {
    let mut cbuf = CmsgBuf::new();
    let clen = build_pktinfo_cmsg(&mut cbuf, src, dst, ifindex);
    send_with_cmsg(sock, payload, dst, &cbuf, clen).await
}

async fn send_with_cmsg(
    sock: &UdpSocket,
    payload: &[u8],
    dst: SocketAddr,
    cbuf: &CmsgBuf,
    clen: usize,
) -> io::Result<usize> {
    let (addr, alen) = sockaddr(dst);
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::WRITABLE, || {
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&raw const addr) as *mut libc::c_void;
        msg.msg_namelen = alen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_ptr() as *mut libc::c_void;
        msg.msg_controllen = clen as _;
        // SAFETY: `fd` is the tokio socket's, open for the duration; `msg` is fully initialised
        // and the kernel only reads through it.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
    .await
}

/// Errors with which the kernel refuses a source address that is not ours: EINVAL (IPv6
/// pktinfo, IPv4 route lookup), EADDRNOTAVAIL, ENETUNREACH (IPv4 route lookup with a
/// non-local source).
fn source_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EADDRNOTAVAIL | libc::ENETUNREACH)
    )
}

/// Sends with a source address when asked, remembering which source addresses the kernel
/// refused so that each is warned about once.
#[derive(Debug, Default)]
pub struct SourceSender {
    refused: HashSet<IpAddr>,
}

impl SourceSender {
    /// Sends `payload` to `dst` (already in the socket's family) from `src` if given; if the
    /// kernel refuses `src` but accepts the datagram without it, warns once for `src` and
    /// keeps sending without it.
    pub async fn send(
        &mut self,
        sock: &UdpSocket,
        payload: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
    ) -> io::Result<usize> {
        let Some(src) = src else {
            return sock.send_to(payload, dst).await;
        };
        if self.refused.contains(&src) {
            return sock.send_to(payload, dst).await;
        }
        match send_from(sock, payload, dst, src).await {
            Err(e) if source_refused(&e) => {
                let n = sock.send_to(payload, dst).await?;
                // The datagram went without a source: it was the source the kernel refused.
                warn!(
                    "control messages cannot be sent from {src} ({e}): is it a local address? \
                     Sending from the kernel's choice instead"
                );
                self.refused.insert(src);
                Ok(n)
            }
            r => {
                if let Err(e) = &r {
                    debug!("sending from {src} to {dst}: {e}");
                }
                r
            }
        }
    }

    /// Whether `src` was refused by the kernel (and is no longer tried).
    pub fn refused(&self, src: &IpAddr) -> bool {
        self.refused.contains(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Walks the control messages of `buf[..len]`: (level, type, data).
    fn parse(buf: &CmsgBuf, len: usize) -> Vec<(i32, i32, Vec<u8>)> {
        let mut out = Vec::new();
        // SAFETY: test-only walk over a buffer built by `put`; the CMSG_* macros bound it.
        unsafe {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_control = buf.0.as_ptr() as *mut libc::c_void;
            msg.msg_controllen = len as _;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let hdr = libc::CMSG_LEN(0) as usize;
                let n = (*c).cmsg_len as usize - hdr;
                let d = std::slice::from_raw_parts(libc::CMSG_DATA(c), n).to_vec();
                out.push(((*c).cmsg_level, (*c).cmsg_type, d));
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        out
    }

    #[test]
    fn ipv4_source_is_ip_pktinfo_spec_dst_also_for_v4_mapped_destinations() {
        let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        for dst in ["192.0.2.130:4342", "[::ffff:192.0.2.130]:4342"] {
            let mut b = CmsgBuf::new();
            let len = build_source_cmsg(&mut b, src, dst.parse().unwrap()).unwrap();
            // SAFETY: arithmetic.
            let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) };
            assert_eq!(len, space as usize);
            let c = parse(&b, len);
            assert_eq!(c.len(), 1, "{dst}");
            let (level, ty, d) = &c[0];
            assert_eq!((*level, *ty), (libc::IPPROTO_IP, libc::IP_PKTINFO));
            // struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            assert_eq!(d.len(), 12);
            assert_eq!(&d[0..4], &[0, 0, 0, 0], "no interface forced");
            assert_eq!(&d[4..8], &[192, 0, 2, 10], "spec_dst is the source");
            assert_eq!(&d[8..12], &[0, 0, 0, 0]);
        }
    }

    #[test]
    fn ipv6_source_is_ipv6_pktinfo() {
        let src: IpAddr = "2001:db8:ff:1::10".parse().unwrap();
        let mut b = CmsgBuf::new();
        let len =
            build_source_cmsg(&mut b, src, "[2001:db8:ff:c::130]:4342".parse().unwrap()).unwrap();
        let c = parse(&b, len);
        assert_eq!(c.len(), 1);
        let (level, ty, d) = &c[0];
        assert_eq!((*level, *ty), (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO));
        // struct in6_pktinfo { in6_addr addr; unsigned ifindex; }
        assert_eq!(d.len(), 20);
        let IpAddr::V6(s) = src else { unreachable!() };
        assert_eq!(&d[..16], &s.octets());
        assert_eq!(&d[16..], &[0, 0, 0, 0], "no interface forced");
    }

    #[test]
    fn mixed_families_set_no_source() {
        let mut b = CmsgBuf::new();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            build_source_cmsg(&mut b, v6, "[::ffff:192.0.2.2]:4342".parse().unwrap()),
            None
        );
        assert_eq!(
            build_source_cmsg(&mut b, v4, "[2001:db8::2]:4342".parse().unwrap()),
            None
        );
    }

    /// A receiver on 127.0.0.1 and the sender's view of what arrived.
    async fn receive_one(rx: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                .await
                .expect("datagram within 5 s")
                .unwrap();
        (buf[..n].to_vec(), from)
    }

    /// The whole of 127.0.0.0/8 is local on `lo`: a datagram to 127.0.0.1 sent "from"
    /// 127.0.0.2 through a dual-stack socket arrives from 127.0.0.2 only if the kernel honoured
    /// IP_PKTINFO on the AF_INET6 socket (by default it would be 127.0.0.1).
    #[tokio::test]
    async fn dual_stack_socket_sends_v4_mapped_from_the_asked_source() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let Ok(tx) = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await else {
            eprintln!("no IPv6 here: skipping the dual-stack part");
            return;
        };
        let SocketAddr::V4(to4) = to else {
            unreachable!()
        };
        let mapped = SocketAddr::new(IpAddr::V6(to4.ip().to_ipv6_mapped()), to.port());
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let mut s = SourceSender::default();
        s.send(&tx, b"one", mapped, Some(src)).await.unwrap();
        let (d, from) = receive_one(&rx).await;
        assert_eq!(d, b"one");
        assert_eq!(from.ip(), src, "source not honoured");
        assert_eq!(from.port(), tx.local_addr().unwrap().port());
        // And without a source the kernel's choice (127.0.0.1) is back: the test can fail.
        s.send(&tx, b"two", mapped, None).await.unwrap();
        let (_, from) = receive_one(&rx).await;
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn ipv4_socket_sends_from_the_asked_source() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let mut s = SourceSender::default();
        s.send(&tx, b"x", rx.local_addr().unwrap(), Some(src))
            .await
            .unwrap();
        assert_eq!(receive_one(&rx).await.1.ip(), src);
    }

    #[tokio::test]
    async fn ipv6_source_on_loopback() {
        let Ok(rx) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await else {
            eprintln!("no IPv6 loopback here: skipping");
            return;
        };
        let tx = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await.unwrap();
        let src = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let mut s = SourceSender::default();
        s.send(&tx, b"6", rx.local_addr().unwrap(), Some(src))
            .await
            .unwrap();
        assert_eq!(receive_one(&rx).await.1.ip(), src);
        assert!(!s.refused(&src));
    }

    /// A source that is not ours (192.0.2.99, documentation range, on no interface): the
    /// datagram still leaves, from the kernel's choice, and the address is remembered.
    #[tokio::test]
    async fn non_local_source_falls_back_to_the_kernels_choice() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        for tx in [
            UdpSocket::bind("0.0.0.0:0").await.ok(),
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await.ok(),
        ]
        .into_iter()
        .flatten()
        {
            let dst = if tx.local_addr().unwrap().is_ipv6() {
                let SocketAddr::V4(t4) = to else {
                    unreachable!()
                };
                SocketAddr::new(IpAddr::V6(t4.ip().to_ipv6_mapped()), to.port())
            } else {
                to
            };
            let bad = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
            let mut s = SourceSender::default();
            s.send(&tx, b"a", dst, Some(bad)).await.unwrap();
            assert_eq!(
                receive_one(&rx).await.1.ip(),
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            );
            assert!(s.refused(&bad), "refusal not remembered");
            s.send(&tx, b"b", dst, Some(bad)).await.unwrap();
            assert_eq!(receive_one(&rx).await.0, b"b");
        }
    }
}
