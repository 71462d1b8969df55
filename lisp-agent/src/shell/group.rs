//! The map-notify-group on the control socket: joining it on the mobility interfaces, sending
//! to it, and telling group datagrams apart from unicast ones.
//!
//! The routers of one site tell each other about dynamic EIDs with Map-Notifies to the
//! dynamic-EID map's multicast group, UDP 4342 → 4342, IP TTL (hop limit) 1 so that they never
//! leave the site's LAN. The agent does this on its one control socket (`[::]:4342`) rather than
//! a second socket bound to the same port: two sockets on one port need `SO_REUSEADDR` on both,
//! and then the kernel, not the agent, picks which of them a unicast datagram goes to. The
//! control socket joins each group on each mobility interface (`IP_ADD_MEMBERSHIP` with the
//! ifindex, `IPV6_JOIN_GROUP`), and the pktinfo it already receives says which datagrams came
//! to a group (the header destination is multicast) and on which interface.
//!
//! Sending: hop limit 1 and no loopback are socket options, set once (`IP_MULTICAST_TTL`,
//! `IP_MULTICAST_LOOP`, and their IPv6 twins): they only apply to multicast, so the unicast
//! control traffic is unchanged. The interface and the source (the locator) go with each
//! datagram as pktinfo ([`super::udp_source::send_via`]), which for a multicast destination is
//! what `IP_MULTICAST_IF` would set, without socket state shared between two sends.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

use crate::config::Config;

fn setsockopt<T>(fd: i32, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live `T` and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Multicast sends of `sock` leave with TTL / hop limit 1 and are not looped back to us.
pub fn configure_sending(sock: &UdpSocket) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    let zero: libc::c_int = 0;
    // IPv4 options also apply to the v4-mapped traffic of a dual-stack socket.
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &one)?;
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &zero)?;
    if sock.local_addr()?.is_ipv6() {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &one)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &zero)?;
    }
    Ok(())
}

/// Joins `group` on interface `ifindex`. An IPv6 group needs the dual-stack socket.
pub fn join(sock: &UdpSocket, group: IpAddr, ifindex: u32) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    match group {
        IpAddr::V4(g) => {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(g.octets()),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as libc::c_int,
            };
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
        }
        IpAddr::V6(g) => {
            if !sock.local_addr()?.is_ipv6() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "IPv6 group on an IPv4-only control socket",
                ));
            }
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: g.octets(),
                },
                ipv6mr_interface: ifindex,
            };
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
        }
    }
}

/// Sends `payload` to `group`:4342 out of `ifindex`, from `from` if given. `sock_is_v6`: the
/// control socket is dual-stack (an IPv4 group is then addressed v4-mapped).
pub async fn send(
    sock: &UdpSocket,
    sock_is_v6: bool,
    payload: &[u8],
    group: IpAddr,
    port: u16,
    ifindex: u32,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    let dst = match (sock_is_v6, group) {
        (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port),
        (false, IpAddr::V6(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IPv6 group on an IPv4-only control socket",
            ));
        }
        _ => SocketAddr::new(group, port),
    };
    super::udp_source::send_via(sock, payload, dst, from, ifindex).await
}

/// Whether a datagram sent to `to` (the header destination, as pktinfo reports it; v4-mapped
/// or not) came to a multicast group.
pub fn is_group(to: IpAddr) -> bool {
    to.to_canonical().is_multicast()
}

/// One membership the agent holds: a map's group on one of the map's mobility interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub map: String,
    pub group: IpAddr,
    pub interface: String,
    pub ifindex: u32,
}

/// The memberships `cfg` asks for: each dynamic-EID map's map-notify-group on each interface
/// with `mobility: <map>` (the SVI: where the site's routers meet). Interfaces that do not
/// exist are returned in the second list (the agent refuses to start on those anyway, when the
/// data plane attaches).
pub fn memberships(
    cfg: &Config,
    ifindex_of: impl Fn(&str) -> Option<u32>,
) -> (Vec<Membership>, Vec<String>) {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for i in &cfg.interfaces {
        let Some(map) = &i.mobility else { continue };
        let Some(d) = cfg.dynamic_eid_maps.iter().find(|d| &d.name == map) else {
            continue;
        };
        let Some(group) = d.map_notify_group else {
            continue;
        };
        match ifindex_of(&i.name) {
            Some(ifindex) => {
                let m = Membership {
                    map: map.clone(),
                    group,
                    interface: i.name.clone(),
                    ifindex,
                };
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            None => missing.push(i.name.clone()),
        }
    }
    (out, missing)
}

/// The unspecified address of `group`'s family (an unknown destination).
pub fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::udp_dest::{enable_destination_info, recv_with_pktinfo};
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn memberships_follow_the_mobility_interfaces() {
        let y = r#"
locators: { ipv4: 192.0.2.17 }
database-mappings:
  - { eid-prefix: 198.51.100.0/24, locators: [{ address: 192.0.2.17, priority: 1, weight: 100 }] }
map-servers: [{ address: 192.0.2.1, key: k }]
dynamic-eid-maps:
  - name: roam
    database-mappings: [{ eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 100 }] }]
    map-notify-group: 239.1.1.254
interfaces:
  - { name: vlan10, role: eid, mobility: roam }
  - { name: vlan11, role: eid, mobility: roam }
  - { name: vlan12, role: eid }
  - { name: gone, role: eid, mobility: roam }
  - { name: eth0, role: rloc }
"#;
        let cfg: Config = Config::from_yaml_str(y).unwrap();
        let (m, missing) = memberships(&cfg, |n| match n {
            "vlan10" => Some(10),
            "vlan11" => Some(11),
            "vlan12" => Some(12),
            "eth0" => Some(2),
            _ => None,
        });
        let g: IpAddr = "239.1.1.254".parse().unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.map.as_str(), m.group, m.interface.as_str(), m.ifindex))
                .collect::<Vec<_>>(),
            vec![("roam", g, "vlan10", 10), ("roam", g, "vlan11", 11)]
        );
        assert_eq!(missing, vec!["gone".to_string()]);
        assert!(is_group(g));
        assert!(is_group("::ffff:239.1.1.254".parse().unwrap()));
        assert!(is_group("ff15::db8".parse().unwrap()));
        assert!(!is_group("192.0.2.1".parse().unwrap()));
    }

    fn run(cmd: &[&str]) {
        let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ip(args: &str) {
        let mut v = vec!["ip"];
        v.extend(args.split_whitespace());
        run(&v);
    }

    /// A process whose network namespace is the peer's; killed (by its handle) on drop, also
    /// on a failed assertion.
    struct Peer(std::process::Child);
    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Runs `f` on a thread that entered the peer's network namespace: sockets made there stay
    /// in it after the thread ends.
    fn in_peer<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
            // SAFETY: setns on this dedicated thread with a namespace fd it owns.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }

    /// A UDP socket on the wildcard address of `v6`'s family and `port`, shareable with the
    /// peer's other listeners (`SO_REUSEADDR`, IPv6 only), receiving only the groups it joined
    /// itself (`IP_MULTICAST_ALL` off: by default Linux hands a wildcard socket every group any
    /// socket joined).
    fn shared_socket(v6: bool, port: u16) -> std::net::UdpSocket {
        use std::os::fd::FromRawFd as _;
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: a new socket, owned by the UdpSocket made from it below.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a valid, owned socket descriptor.
        let s = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one).unwrap();
        if v6 {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &one).unwrap();
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_ALL, &zero).unwrap();
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: port.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                sin6_scope_id: 0,
            };
            // SAFETY: bind with a live sockaddr_in6 and its size.
            let r = unsafe {
                libc::bind(
                    fd,
                    (&raw const sin6).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
        } else {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, &zero).unwrap();
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            // SAFETY: bind with a live sockaddr_in and its size.
            let r = unsafe {
                libc::bind(
                    fd,
                    (&raw const sin).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
        }
        s
    }

    /// A peer socket on `port` joined to `group` on `ifname`, reporting the TTL / hop limit of
    /// what it receives.
    fn peer_socket(group: IpAddr, ifname: &str, port: u16) -> std::net::UdpSocket {
        let ifindex = crate::dataplane::ifindex_of(ifname).unwrap();
        let one: libc::c_int = 1;
        let s = shared_socket(group.is_ipv6(), port);
        let fd = s.as_raw_fd();
        // Only what arrives on `ifname`: IPv6 delivers a group's datagrams to every socket
        // joined to it, on whatever interface.
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: setsockopt with a live NUL-terminated name and its length.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.as_bytes_with_nul().len() as u32,
            )
        };
        assert_eq!(r, 0, "SO_BINDTODEVICE: {}", io::Error::last_os_error());
        match group {
            IpAddr::V4(g) => {
                // By ifindex (std's join takes an interface address).
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(g.octets()),
                    },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: ifindex as i32,
                };
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq).unwrap();
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, &one).unwrap();
            }
            IpAddr::V6(g) => {
                s.join_multicast_v6(&g, ifindex).unwrap();
                setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &one).unwrap();
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Receives one datagram on a blocking peer socket: payload, sender, TTL / hop limit.
    fn recv_ttl(s: &std::net::UdpSocket) -> (Vec<u8>, IpAddr, Option<i32>) {
        let mut buf = [0u8; 256];
        #[repr(C, align(8))]
        struct C([u8; 128]);
        let mut cbuf = C([0; 128]);
        // SAFETY: all-zero sockaddr_storage and msghdr are valid; every pointer set below
        // outlives the call, and the CMSG walk is bounded by msg_controllen.
        unsafe {
            let mut name: libc::sockaddr_storage = std::mem::zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&raw mut name).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = cbuf.0.len() as _;
            let n = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
            assert!(n >= 0, "peer receive: {}", io::Error::last_os_error());
            let mut ttl = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if matches!(
                    ((*c).cmsg_level, (*c).cmsg_type),
                    (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
                ) {
                    ttl = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            let from = match libc::c_int::from(name.ss_family) {
                libc::AF_INET => {
                    let sin = &*(&raw const name).cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                _ => {
                    let sin6 = &*(&raw const name).cast::<libc::sockaddr_in6>();
                    IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
            };
            (buf[..n as usize].to_vec(), from, ttl)
        }
    }

    /// Root: the agent's side in a private namespace (this thread), a peer namespace behind
    /// two links — `svi0`, a bridge (the SVI) with a veth port, and `plain0`, a bare veth. The
    /// dual-stack control socket joins an IPv4 and an IPv6 group on both. What the peer sends
    /// to a group out of either link arrives with that link's ifindex and the group as
    /// destination; what we send leaves out of the asked link, from the asked source, with
    /// TTL / hop limit 1, and does not come back to us (loop off).
    #[test]
    fn group_datagrams_carry_their_interface_and_leave_with_ttl_1() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this (dedicated, short-lived) thread's namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "needs root"
            );
            let peer = Peer(
                Command::new("unshare")
                    .args(["-n", "sleep", "60"])
                    .spawn()
                    .unwrap(),
            );
            let pid = peer.0.id();
            std::thread::sleep(Duration::from_millis(100));
            let p = pid.to_string();
            let peer_ip = |args: &str| {
                let mut v = vec!["nsenter", "-t", &p, "-n", "ip"];
                v.extend(args.split_whitespace());
                run(&v);
            };
            ip("link add svi0 type bridge");
            ip("link add gport type veth peer name gpa");
            ip("link set gport master svi0");
            ip("link add plain0 type veth peer name gpb");
            ip(&format!("link set gpa netns {pid}"));
            ip(&format!("link set gpb netns {pid}"));
            ip("addr add 198.51.100.1/24 dev svi0");
            ip("addr add 2001:db8:10::1/64 dev svi0 nodad");
            ip("addr add 203.0.113.1/24 dev plain0");
            ip("addr add 2001:db8:20::1/64 dev plain0 nodad");
            for l in ["svi0", "gport", "plain0"] {
                ip(&format!("link set {l} up"));
            }
            // The bridge forwards multicast without an IGMP/MLD querier.
            run(&[
                "ip",
                "link",
                "set",
                "svi0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            peer_ip("addr add 198.51.100.2/24 dev gpa");
            peer_ip("addr add 2001:db8:10::2/64 dev gpa nodad");
            peer_ip("addr add 203.0.113.2/24 dev gpb");
            peer_ip("addr add 2001:db8:20::2/64 dev gpb nodad");
            peer_ip("link set gpa up");
            peer_ip("link set gpb up");
            // Link-local addresses (the MLD reports' source) without waiting for DAD.
            std::thread::sleep(Duration::from_millis(300));

            let g4: IpAddr = "239.1.1.254".parse().unwrap();
            let g6: IpAddr = "ff15::db8:1".parse().unwrap();
            let svi = crate::dataplane::ifindex_of("svi0").unwrap();
            let plain = crate::dataplane::ifindex_of("plain0").unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let sock = crate::shell::control::bind_control_socket(0).await.unwrap();
                let port = sock.local_addr().unwrap().port();
                assert!(sock.local_addr().unwrap().is_ipv6(), "dual-stack socket");
                enable_destination_info(&sock).unwrap();
                configure_sending(&sock).unwrap();
                for g in [g4, g6] {
                    join(&sock, g, svi).unwrap();
                    join(&sock, g, plain).unwrap();
                }
                // The peer listens on both of its links.
                let listeners = in_peer(pid, move || {
                    [
                        (peer_socket(g4, "gpa", port), peer_socket(g6, "gpa", port)),
                        (peer_socket(g4, "gpb", port), peer_socket(g6, "gpb", port)),
                    ]
                });
                // Let the joins' IGMP/MLD reports settle (nothing depends on them without a
                // snooping bridge; this only keeps the peer's first receive unhurried).
                tokio::time::sleep(Duration::from_millis(100)).await;

                // Ours: out of the asked link, from the asked source, TTL 1.
                let cases = [
                    (g4, svi, "198.51.100.1", 0usize, false),
                    (g6, svi, "2001:db8:10::1", 0, true),
                    (g4, plain, "203.0.113.1", 1, false),
                    (g6, plain, "2001:db8:20::1", 1, true),
                ];
                for (g, ifindex, from, link, v6) in cases {
                    let from: IpAddr = from.parse().unwrap();
                    let payload = format!("ours {g} {ifindex}");
                    send(
                        &sock,
                        true,
                        payload.as_bytes(),
                        g,
                        port,
                        ifindex,
                        Some(from),
                    )
                    .await
                    .unwrap();
                    let l = &listeners[link];
                    let rx = if v6 { &l.1 } else { &l.0 };
                    let (got, src, ttl) = recv_ttl(rx);
                    assert_eq!(
                        (String::from_utf8(got).unwrap(), src, ttl),
                        (payload, from, Some(1)),
                        "sent to {g} via ifindex {ifindex}"
                    );
                }

                // Theirs: arrives for the group, with the link it came in on. Our own sends
                // above were not looped back: the first datagram we read is the peer's.
                let sends = [
                    (g4, "gpa", svi),
                    (g6, "gpa", svi),
                    (g4, "gpb", plain),
                    (g6, "gpb", plain),
                ];
                for (g, link, expect_ifindex) in sends {
                    in_peer(pid, move || {
                        let oif = crate::dataplane::ifindex_of(link).unwrap();
                        let s = match g {
                            IpAddr::V4(_) => {
                                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                                let mreq = libc::ip_mreqn {
                                    imr_multiaddr: libc::in_addr { s_addr: 0 },
                                    imr_address: libc::in_addr { s_addr: 0 },
                                    imr_ifindex: oif as i32,
                                };
                                setsockopt(
                                    s.as_raw_fd(),
                                    libc::IPPROTO_IP,
                                    libc::IP_MULTICAST_IF,
                                    &mreq,
                                )
                                .unwrap();
                                s
                            }
                            IpAddr::V6(_) => {
                                let s = std::net::UdpSocket::bind("[::]:0").unwrap();
                                setsockopt(
                                    s.as_raw_fd(),
                                    libc::IPPROTO_IPV6,
                                    libc::IPV6_MULTICAST_IF,
                                    &oif,
                                )
                                .unwrap();
                                s
                            }
                        };
                        s.send_to(format!("theirs {g} {link}").as_bytes(), (g, port))
                            .unwrap();
                    });
                    let mut buf = [0u8; 256];
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        recv_with_pktinfo(&sock, &mut buf),
                    )
                    .await
                    .expect("group datagram within 5 s")
                    .unwrap();
                    assert_eq!(
                        std::str::from_utf8(&buf[..r.len]).unwrap(),
                        format!("theirs {g} {link}")
                    );
                    assert_eq!(r.to.map(|a| a.to_canonical()), Some(g));
                    assert_eq!(r.ifindex, Some(expect_ifindex), "{g} via {link}");
                    assert!(is_group(r.to.unwrap()));
                }
            });
            drop(peer);
        })
        .join()
        .unwrap();
    }
}
