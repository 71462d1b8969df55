//! Keeping the next hops towards RLOCs resolved, through rtnetlink.
//!
//! The XDP program redirects encapsulated packets itself, so the kernel never transmits to the
//! next hop and would never resolve (or keep resolving) its link-layer address. When the
//! program's FIB lookup finds a route but no usable neighbour it raises an event; the agent then
//! creates a *managed* neighbour entry (`NTF_EXT_MANAGED`, Linux 5.16+): the kernel resolves it
//! now, keeps it reachable and never garbage-collects it — the mechanism the kernel offers for
//! exactly this XDP/offload case.

use std::io;
use std::net::IpAddr;

const NDA_DST: u16 = 1;
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;
const NUD_NONE: u16 = 0x00;

/// An RTM_NEWNEIGH request (create or replace) for a managed entry of `addr` on `ifindex`.
pub fn managed_neighbour_request(ifindex: u32, addr: IpAddr, seq: u32) -> Vec<u8> {
    let (family, addr_bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let mut msg = Vec::with_capacity(64);
    // nlmsghdr: length patched below.
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWNEIGH.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // ndmsg: family, 3 pad bytes, ifindex, state, flags, type.
    msg.push(family);
    msg.extend_from_slice(&[0; 3]);
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&NUD_NONE.to_ne_bytes());
    msg.push(0);
    msg.push(0);
    push_attr(&mut msg, NDA_DST, &addr_bytes);
    push_attr(&mut msg, NDA_FLAGS_EXT, &NTF_EXT_MANAGED.to_ne_bytes());
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(payload);
    while !msg.len().is_multiple_of(4) {
        msg.push(0);
    }
}

/// Asks the kernel (of the agent's network namespace) to resolve `addr` on `ifindex` and keep it
/// resolved. Blocking but short: one request and its acknowledgement.
pub fn ensure_managed(ifindex: u32, addr: IpAddr) -> io::Result<()> {
    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = request(fd, &managed_neighbour_request(ifindex, addr, 1));
        libc::close(fd);
        result
    }
}

unsafe fn request(fd: i32, msg: &[u8]) -> io::Result<()> {
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    let sent = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_ack(&buf[..n as usize])
}

/// Reads the NLMSG_ERROR acknowledgement: error 0 is success.
fn parse_ack(buf: &[u8]) -> io::Result<()> {
    if buf.len() < 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink reply type {kind}"),
        ));
    }
    let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if errno == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_what_rtnetlink_expects() {
        let m = managed_neighbour_request(7, "192.0.2.1".parse().unwrap(), 9);
        // nlmsghdr 16 + ndmsg 12 + NDA_DST (4+4) + NDA_FLAGS_EXT (4+4)
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()),
            m.len() as u32
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_NEWNEIGH);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(&m[28..30], &8u16.to_ne_bytes());
        assert_eq!(&m[30..32], &NDA_DST.to_ne_bytes());
        assert_eq!(&m[32..36], &[192, 0, 2, 1]);
        assert_eq!(&m[38..40], &NDA_FLAGS_EXT.to_ne_bytes());
        assert_eq!(&m[40..44], &NTF_EXT_MANAGED.to_ne_bytes());

        let m6 = managed_neighbour_request(1, "2001:db8::1".parse().unwrap(), 1);
        assert_eq!(m6.len(), 16 + 12 + 20 + 8);
        assert_eq!(m6[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn ack_errors_are_reported() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(parse_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        assert_eq!(
            parse_ack(&ack).unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        assert!(parse_ack(&ack[..10]).is_err());
    }

    /// Root: in a private network namespace (this thread only), a managed entry for a peer on a
    /// veth is created and resolved by the kernel without any traffic of ours.
    #[test]
    fn kernel_resolves_a_managed_entry() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this (dedicated, short-lived) thread's namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "needs root"
            );
            let ip = |args: &str| {
                let st = std::process::Command::new("ip")
                    .args(args.split_whitespace())
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args}");
            };
            // The peer lives in a namespace of its own (a sleeping child process's): the kernel
            // ignores ARP replies whose sender address is one of its own.
            struct Peer(std::process::Child);
            impl Drop for Peer {
                // Also on a failed assertion: the peer process is ours, ended by its handle.
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let peer = Peer(
                std::process::Command::new("unshare")
                    .args(["-n", "sleep", "30"])
                    .spawn()
                    .unwrap(),
            );
            let pid = peer.0.id().to_string();
            std::thread::sleep(std::time::Duration::from_millis(100));
            ip("link add nba type veth peer name nbb");
            ip(&format!("link set nbb netns {pid}"));
            ip("addr add 192.0.2.1/24 dev nba");
            ip("link set nba up");
            let in_peer = |args: &str| {
                let st = std::process::Command::new("nsenter")
                    .args(["-t", &pid, "-n", "ip"])
                    .args(args.split_whitespace())
                    .status()
                    .unwrap();
                assert!(st.success(), "peer: ip {args}");
            };
            in_peer("addr add 192.0.2.2/24 dev nbb");
            in_peer("link set nbb up");
            let name = std::ffi::CString::new("nba").unwrap();
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0);
            ensure_managed(ifindex, "192.0.2.2".parse().unwrap()).unwrap();
            let mut shown = String::new();
            for _ in 0..50 {
                let out = std::process::Command::new("ip")
                    .args(["neigh", "show", "192.0.2.2", "dev", "nba"])
                    .output()
                    .unwrap();
                shown = String::from_utf8_lossy(&out.stdout).into_owned();
                if shown.contains("lladdr") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(peer);
            assert!(shown.contains("lladdr"), "not resolved: {shown:?}");
            // A missing device is an error, not a silent success.
            assert!(ensure_managed(999_999, "192.0.2.2".parse().unwrap()).is_err());
        })
        .join()
        .unwrap();
    }
}
