//! Receiving a control datagram together with the local address it was sent to.
//!
//! The control socket is bound to the wildcard address, so `recv_from` says who sent a
//! datagram but not which of our addresses they sent it to. The core answers from that address
//! (a Map-Reply from the address the Map-Request reached, a Map-Notify from the map-server
//! address the ETR registered with, an RLOC-probe reply from the probed locator), so the shell
//! asks the kernel for it as ancillary data: `IP_PKTINFO` (`ipi_addr`, the header destination)
//! for IPv4 — also on the dual-stack `AF_INET6` socket, where Linux reports v4-mapped traffic
//! through the IPv4 option — and `IPV6_RECVPKTINFO` (`ipi6_addr`) for IPv6.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::udp_source::CmsgBuf;

fn set_int(fd: i32, level: libc::c_int, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks the kernel to report the destination address of every datagram received on `sock`.
pub fn enable_destination_info(sock: &UdpSocket) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
    if sock.local_addr()?.is_ipv6() {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
    }
    Ok(())
}

/// A C socket address as a Rust one (IPv4 or IPv6; anything else is `None`).
fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address and the receiving interface in the control messages of a received
/// datagram, if any.
fn destination_of(msg: &libc::msghdr) -> Option<(IpAddr, u32)> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG_* macros walk its control buffer within
    // msg_controllen and each data read is bounded by the cmsg's own length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data_len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if data_len >= size_of::<libc::in_pktinfo>() =>
                {
                    let info: libc::in_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some((
                        IpAddr::V4(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes())),
                        u32::try_from(info.ipi_ifindex).unwrap_or(0),
                    ));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if data_len >= size_of::<libc::in6_pktinfo>() =>
                {
                    let info: libc::in6_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some((
                        IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                        info.ipi6_ifindex,
                    ));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// One received datagram: its length, its sender, the local address it was sent to (for a
/// multicast datagram, the group) and the interface it arrived on (`None` for both if the
/// kernel did not say: [`enable_destination_info`] was not called).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
    pub ifindex: Option<u32>,
}

/// Receives one datagram: its length, its sender, and the local address it was sent to (`None`
/// if the kernel did not say: [`enable_destination_info`] was not called).
pub async fn recv_with_destination(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let r = recv_with_pktinfo(sock, buf).await?;
    Ok((r.len, r.from, r.to))
}

/// Receives one datagram with its destination address and receiving interface.
pub async fn recv_with_pktinfo(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::READABLE, || {
        let mut cbuf = CmsgBuf::new();
        // SAFETY: all-zero sockaddr_storage and msghdr are valid.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len() as _;
        // SAFETY: `fd` is the tokio socket's, open for the call; every buffer `msg` points to
        // lives until recvmsg returns and is as large as `msg` says.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from = from_sockaddr(&name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
        })?;
        let dst = destination_of(&msg);
        Ok(Received {
            len: n as usize,
            from,
            to: dst.map(|d| d.0),
            ifindex: dst.map(|d| d.1),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn recv(rx: &UdpSocket) -> (Vec<u8>, SocketAddr, Option<IpAddr>) {
        let mut buf = [0u8; 64];
        let (n, from, to) =
            tokio::time::timeout(Duration::from_secs(5), recv_with_destination(rx, &mut buf))
                .await
                .expect("datagram within 5 s")
                .unwrap();
        (buf[..n].to_vec(), from, to)
    }

    /// 127.0.0.0/8 is all local on `lo`: datagrams to 127.0.0.2 and 127.0.0.3 reach the same
    /// wildcard socket, and only the destination info tells them apart.
    #[tokio::test]
    async fn ipv4_destination_on_an_ipv4_socket() {
        let rx = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        enable_destination_info(&rx).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for d in ["127.0.0.2", "127.0.0.3"] {
            let dst: IpAddr = d.parse().unwrap();
            tx.send_to(d.as_bytes(), (dst, port)).await.unwrap();
            let (data, from, to) = recv(&rx).await;
            assert_eq!(data, d.as_bytes());
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(to, Some(dst));
        }
    }

    #[tokio::test]
    async fn both_families_on_a_dual_stack_socket() {
        let Ok(rx) = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await else {
            eprintln!("no IPv6 here: skipping");
            return;
        };
        enable_destination_info(&rx).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx4.send_to(b"4", ("127.0.0.5".parse::<IpAddr>().unwrap(), port))
            .await
            .unwrap();
        let (_, from, to) = recv(&rx).await;
        assert_eq!(from.ip().to_canonical(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            to.map(|a| a.to_canonical()),
            Some("127.0.0.5".parse().unwrap())
        );
        if let Ok(tx6) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await {
            tx6.send_to(b"6", (Ipv6Addr::LOCALHOST, port))
                .await
                .unwrap();
            let (_, _, to) = recv(&rx).await;
            assert_eq!(to, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
    }

    #[tokio::test]
    async fn without_the_option_the_destination_is_unknown() {
        let rx = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.send_to(b"x", ("127.0.0.1".parse::<IpAddr>().unwrap(), port))
            .await
            .unwrap();
        assert_eq!(recv(&rx).await.2, None);
    }
}
