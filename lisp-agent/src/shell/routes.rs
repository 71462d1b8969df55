//! Host routes of local dynamic EIDs, through rtnetlink.
//!
//! When the core detects a dynamic EID on a mobility interface it asks for a host route (/32 or
//! /128) towards the SVI, so that traffic the ETR decapsulates for the EID (and the router's own
//! traffic) reaches it even when the EID is outside the SVI's subnets (across-subnet mode). The
//! route lives in the instance's table (`instance-tables`, else main), scope link, out of the
//! SVI, with a route protocol number of our own ([`ROUTE_PROTOCOL`]): that is how the agent
//! finds its own routes again (`ip route show table all proto 246`) and removes the leftovers of
//! a run that crashed, at start, and all of them at stop — without touching any route it did not
//! make.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, anyhow};
use futures_util::TryStreamExt as _;
use log::{info, warn};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::sync::{mpsc, oneshot};

/// The route protocol (`rtm_protocol`) of every route the agent adds. Unassigned in
/// iproute2's `rt_protos` and by the routing daemons we know of (FRR, BIRD, keepalived use
/// 11..=18, 42, 186..=196).
pub const ROUTE_PROTOCOL: u8 = 246;

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

/// The kernel's errno for "no such route" on delete (`ESRCH`), and "no such entry" (`ENOENT`).
fn is_absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(-m.raw_code(), libc::ESRCH | libc::ENOENT))
}

/// Adds and removes our host routes. One rtnetlink connection, driven by a task of its own.
pub struct HostRoutes {
    handle: Handle,
    /// instance-id → routing table; instances not listed use [`TABLE_MAIN`].
    tables: HashMap<u32, u32>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for HostRoutes {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl HostRoutes {
    /// Opens the rtnetlink connection (in the caller's network namespace). Needs a tokio
    /// runtime.
    pub fn new(tables: impl IntoIterator<Item = (u32, u32)>) -> anyhow::Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket for host routes")?;
        Ok(HostRoutes {
            handle,
            tables: tables.into_iter().collect(),
            connection: tokio::spawn(conn),
        })
    }

    /// The routing table of `instance_id`.
    pub fn table_of(&self, instance_id: u32) -> u32 {
        self.tables.get(&instance_id).copied().unwrap_or(TABLE_MAIN)
    }

    fn message(&self, instance_id: u32, eid: IpAddr, ifindex: u32) -> anyhow::Result<RouteMessage> {
        let len = if eid.is_ipv4() { 32 } else { 128 };
        Ok(RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(eid, len)
            .map_err(|e| anyhow!("{e}"))?
            .output_interface(ifindex)
            .table_id(self.table_of(instance_id))
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .scope(RouteScope::Link)
            .build())
    }

    /// Adds (or replaces: a route of the same destination in that table, from an earlier
    /// detection or another interface) the host route of `eid` via `ifindex`.
    pub async fn add(&self, instance_id: u32, eid: IpAddr, ifindex: u32) -> anyhow::Result<()> {
        let msg = self.message(instance_id, eid, ifindex)?;
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding host route {eid} dev ifindex {ifindex} table {}",
                    self.table_of(instance_id)
                )
            })
    }

    /// Removes the host route of `eid` via `ifindex`; `Ok(false)` if there was none (already
    /// removed, or the interface went away and the kernel flushed it).
    pub async fn remove(
        &self,
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
    ) -> anyhow::Result<bool> {
        let msg = self.message(instance_id, eid, ifindex)?;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "removing host route {eid} dev ifindex {ifindex} table {}",
                    self.table_of(instance_id)
                )
            }),
        }
    }

    /// Every route of ours in any table, both families.
    pub async fn ours(&self) -> anyhow::Result<Vec<RouteMessage>> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            // Without strict checking the kernel dumps every table whatever the header says;
            // the filter on our protocol is ours to apply.
            let mut dump = self.handle.route().get(q).execute();
            while let Some(r) = dump
                .try_next()
                .await
                .context("listing routes through rtnetlink")?
            {
                if u8::from(r.header.protocol) == ROUTE_PROTOCOL {
                    found.push(r);
                }
            }
        }
        Ok(found)
    }

    /// Removes every route of ours (leftovers of a crashed run at start; all of them at stop).
    /// Returns how many were removed.
    pub async fn remove_all_ours(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for r in self.ours().await? {
            let what = describe(&r);
            match self.handle.route().del(r).execute().await {
                Ok(()) => n += 1,
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("removing route {what}")),
            }
        }
        Ok(n)
    }
}

/// A host-route change the control loop asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteOp {
    Add {
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
    },
    Remove {
        instance_id: u32,
        eid: IpAddr,
        ifindex: u32,
    },
}

/// What the route worker did (the `host_route_*` events of `lisp_mobility_shell_total`).
#[derive(Debug, Default)]
pub struct RouteCounters {
    pub added: AtomicU64,
    pub removed: AtomicU64,
    /// Refused by the kernel, or not queued (queue full, worker stopped).
    pub failed: AtomicU64,
}

/// How many route changes may wait for the kernel. The core bounds the dynamic EIDs; a full
/// queue (the kernel stuck) costs routes, counted, not memory.
pub const ROUTE_QUEUE: usize = 65_536;

enum Job {
    Op(RouteOp),
    /// Everything queued before it is done.
    Barrier(oneshot::Sender<()>),
}

/// Carries out host-route changes off the control loop, in the order asked: a netlink round
/// trip per route (tens of µs, more on a loaded host) must not sit between a detection and its
/// Map-Register, which the core emits right after the route.
#[derive(Clone)]
pub struct RouteWorker {
    tx: mpsc::Sender<Job>,
    pub counters: Arc<RouteCounters>,
}

impl RouteWorker {
    /// Starts the worker on `routes`; it ends when every [`RouteWorker`] handle is dropped.
    pub fn spawn(routes: Arc<HostRoutes>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(ROUTE_QUEUE);
        let counters = Arc::new(RouteCounters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Op(op) => carry_out(&routes, &c, op).await,
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (RouteWorker { tx, counters }, task)
    }

    /// Queues `op`; counted as failed if it cannot be queued.
    pub fn submit(&self, op: RouteOp) {
        if let Err(e) = self.tx.try_send(Job::Op(op)) {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            warn!("host route change {op:?} not queued: {e}");
        }
    }

    /// Waits until everything queued so far is done.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Barrier(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn carry_out(routes: &HostRoutes, c: &RouteCounters, op: RouteOp) {
    let name = |i: u32| crate::dataplane::ifname_of(i).unwrap_or_else(|| format!("ifindex {i}"));
    match op {
        RouteOp::Add {
            instance_id,
            eid,
            ifindex,
        } => match routes.add(instance_id, eid, ifindex).await {
            Ok(()) => {
                c.added.fetch_add(1, Ordering::Relaxed);
                info!("host route {eid} via {} added", name(ifindex));
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                warn!("host route {eid} via {}: {e:#}", name(ifindex));
            }
        },
        RouteOp::Remove {
            instance_id,
            eid,
            ifindex,
        } => match routes.remove(instance_id, eid, ifindex).await {
            Ok(was) => {
                c.removed.fetch_add(1, Ordering::Relaxed);
                info!(
                    "host route {eid} via {} removed{}",
                    name(ifindex),
                    if was { "" } else { " (was already gone)" }
                );
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                warn!("removing host route {eid} via {}: {e:#}", name(ifindex));
            }
        },
    }
}

/// A route for error messages: destination/len and table.
fn describe(r: &RouteMessage) -> String {
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(format!("{d:?}")),
        _ => None,
    });
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    format!(
        "{}/{} table {table}",
        dst.unwrap_or_else(|| "?".into()),
        r.header.destination_prefix_length
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(args: &str) -> String {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `body` (with svi0's ifindex) on a thread of its own in a private network namespace
    /// holding a veth pair `svi0`/`svi0p`, both up (this kernel has no dummy driver), inside a
    /// current-thread tokio runtime. Needs root.
    fn in_private_netns_with_svi<F, Fut>(body: F)
    where
        F: FnOnce(u32) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this (dedicated, short-lived) thread's namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "needs root"
            );
            ip("link add svi0 type veth peer name svi0p");
            ip("link set svi0p up");
            ip("link set svi0 up");
            let ifindex = crate::dataplane::ifindex_of("svi0").unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(body(ifindex));
        })
        .join()
        .unwrap();
    }

    /// Root: in a private network namespace (this thread only), host routes land in the
    /// instance's table with our protocol, scope link, via the interface; removal is exact;
    /// leftovers are found and removed, and a route of another protocol is left alone.
    #[test]
    fn host_routes_in_the_instance_table() {
        in_private_netns_with_svi(|ifindex| async move {
            {
                ip("addr add 198.51.100.1/25 dev svi0");
                ip("addr add 2001:db8:1::1/64 dev svi0 nodad");
                let routes = HostRoutes::new([(7, 100)]).unwrap();
                let v4: IpAddr = "198.51.100.200".parse().unwrap();
                let v6: IpAddr = "2001:db8:2::7".parse().unwrap();
                routes.add(0, v4, ifindex).await.unwrap();
                routes.add(7, v6, ifindex).await.unwrap();
                // Twice is a replace, not an error.
                routes.add(7, v6, ifindex).await.unwrap();

                let main = ip("-4 route show table main proto 246");
                assert_eq!(main.trim(), "198.51.100.200 dev svi0 scope link", "{main}");
                let t100 = ip("-6 route show table 100 proto 246");
                assert!(
                    t100.starts_with("2001:db8:2::7 dev svi0 metric 1024"),
                    "{t100}"
                );
                assert_eq!(ip("-6 route show table main proto 246").trim(), "");

                // A static route nobody asked us about survives the cleanup.
                ip("route add 203.0.113.0/24 dev svi0 proto static");
                assert_eq!(routes.ours().await.unwrap().len(), 2);

                assert!(routes.remove(0, v4, ifindex).await.unwrap());
                assert!(!routes.remove(0, v4, ifindex).await.unwrap(), "gone twice");
                assert_eq!(ip("-4 route show table all proto 246").trim(), "");

                routes.add(0, v4, ifindex).await.unwrap();
                assert_eq!(routes.remove_all_ours().await.unwrap(), 2);
                assert_eq!(ip("route show table all proto 246").trim(), "");
                assert_eq!(ip("-6 route show table all proto 246").trim(), "");
                assert!(ip("route show 203.0.113.0/24").contains("proto static"));

                // A missing interface is an error, not a silent success.
                assert!(routes.add(0, v4, 999_999).await.is_err());

                // Through the worker: in order (an add then its remove leaves nothing), and
                // counted.
                let (w, task) = RouteWorker::spawn(Arc::new(routes));
                let add = |eid| RouteOp::Add {
                    instance_id: 0,
                    eid,
                    ifindex,
                };
                w.submit(add(v4));
                w.submit(RouteOp::Remove {
                    instance_id: 0,
                    eid: v4,
                    ifindex,
                });
                w.submit(add(v6));
                w.submit(RouteOp::Add {
                    instance_id: 0,
                    eid: v6,
                    ifindex: 999_999,
                });
                w.flush().await;
                assert_eq!(ip("-4 route show table all proto 246").trim(), "");
                assert!(
                    ip("-6 route show table main proto 246").starts_with("2001:db8:2::7 dev svi0")
                );
                let c = &w.counters;
                assert_eq!(
                    (
                        c.added.load(Ordering::Relaxed),
                        c.removed.load(Ordering::Relaxed),
                        c.failed.load(Ordering::Relaxed)
                    ),
                    (2, 1, 1)
                );
                drop(w);
                task.await.unwrap();
            }
        });
    }

    /// A figure, not a check (`cargo test -p lisp-agent --lib shell::routes -- --ignored
    /// --nocapture`, root): what one host route costs through rtnetlink, the delay the route
    /// worker keeps off the control loop.
    #[test]
    #[ignore]
    fn route_add_cost() {
        in_private_netns_with_svi(|ifindex| async move {
            {
                let routes = HostRoutes::new([]).unwrap();
                const N: u32 = 10_000;
                let t = std::time::Instant::now();
                for i in 0..N {
                    // Documentation space: 2001:db8::<i>.
                    let eid = IpAddr::V6(std::net::Ipv6Addr::from(
                        0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | u128::from(i),
                    ));
                    routes.add(0, eid, ifindex).await.unwrap();
                }
                let add = t.elapsed();
                let t = std::time::Instant::now();
                let n = routes.remove_all_ours().await.unwrap();
                let clean = t.elapsed();
                println!(
                    "{N} host routes: add {:.1} µs each; cleanup of {n}: {:.1} ms",
                    add.as_secs_f64() * 1e6 / f64::from(N),
                    clean.as_secs_f64() * 1e3
                );
            }
        });
    }
}
