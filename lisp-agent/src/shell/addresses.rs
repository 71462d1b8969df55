//! The subnets of an interface, as the kernel holds them (its addresses with their prefix
//! lengths), through rtnetlink.
//!
//! The config names SVIs but not their subnets: those are whatever addresses the operator put
//! on them. The reference's rule that a dynamic-EID prefix be more specific than the subnet of
//! the interface it is applied to is therefore checked against the kernel at start
//! (`Config::check_interface_subnets`); the data plane's across-subnet rule needs the same list.

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use lisp_common::prefix::IpPrefix;
use rtnetlink::packet_route::address::AddressAttribute;

/// Every address on `ifindex` as `address/prefix-length` (host bits kept, as `ip addr` shows
/// them; `IpPrefix::network()` gives the subnet).
pub async fn subnets_of(ifindex: u32) -> anyhow::Result<Vec<IpPrefix>> {
    let (conn, handle, _) =
        rtnetlink::new_connection().context("opening an rtnetlink socket for addresses")?;
    let task = tokio::spawn(conn);
    let mut out = Vec::new();
    let mut dump = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    let r: anyhow::Result<()> =
        async {
            while let Some(m) = dump
                .try_next()
                .await
                .with_context(|| format!("listing the addresses of ifindex {ifindex}"))?
            {
                if m.header.index != ifindex {
                    continue;
                }
                // IPv4: IFA_LOCAL is ours (IFA_ADDRESS is the peer on point-to-point links).
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(a) = addr {
                    out.push(IpPrefix::new_unmasked(a, m.header.prefix_len).map_err(|e| {
                        anyhow::anyhow!("address {a}/{}: {e:?}", m.header.prefix_len)
                    })?);
                }
            }
            Ok(())
        }
        .await;
    task.abort();
    r.map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Root: in a private network namespace, the addresses of one interface (both families)
    /// and not those of another.
    #[test]
    fn addresses_of_one_interface() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this (dedicated, short-lived) thread's namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "needs root"
            );
            let ip = |args: &str| {
                let st = Command::new("ip")
                    .args(args.split_whitespace())
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args}");
            };
            ip("link add sva type veth peer name svb");
            ip("addr add 198.51.100.1/24 dev sva");
            ip("addr add 2001:db8:1::1/64 dev sva nodad");
            ip("addr add 203.0.113.1/24 dev svb");
            let a = crate::dataplane::ifindex_of("sva").unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut got: Vec<String> = rt
                .block_on(subnets_of(a))
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            got.sort();
            assert_eq!(got, ["198.51.100.1/24", "2001:db8:1::1/64"]);
        })
        .join()
        .unwrap();
    }
}
