//! The control-plane shell: runs one [`Node`] (the xTR, and the map-server when
//! `map-server.enabled`). UDP port 4342, timers and data-plane events in, as [`Event`]s; the
//! node's [`Action`]s out (datagrams sent, XDP map-cache entries written or removed, managed
//! neighbours created). Which role a datagram is for, where an answer comes from, and whether a
//! next hop is worth a neighbour request are the node's decisions, not this module's.
//!
//! One socket serves both families: `[::]:4342` dual-stack (IPv4 peers appear as v4-mapped
//! addresses and are turned back into IPv4 before the core sees them); if IPv6 is disabled,
//! `0.0.0.0:4342`. Each datagram is received with the local address it was sent to
//! ([`super::udp_dest`]: `IP_PKTINFO` / `IPV6_RECVPKTINFO`), which the core answers from.
//! `Action::Send::from` is carried out with `IP_PKTINFO`/`IPV6_PKTINFO`
//! ([`super::udp_source`]): on a router whose RLOCs live on a loopback or dummy interface, the
//! kernel's own choice (the egress interface's address) would be the wrong source. A `from`
//! that is not local is warned about once and then left to the kernel.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::udp_dest::{enable_destination_info, recv_with_destination};
use super::udp_source::SourceSender;
use super::{DataplaneEvent, Stats};
use crate::config::Config;
use crate::config::lower::{self, Seeds};
use crate::core::action::{Action, CONTROL_PORT, Event, MapCacheData};
use crate::core::map_cache::{negative_entry, positive_entry};
use crate::core::node::{Node, Notification};
use crate::core::nonce::NonceSeed;
use crate::core::time::{Timestamp, earliest};
use crate::core::xtr::RegistrationState;
use crate::dataplane::MapCacheWriter;

/// What the control plane gets from the shell.
pub struct ControlContext {
    pub config: Arc<Config>,
    /// Misses from the XDP program (already rate-limited per destination by the kernel).
    pub events: mpsc::Receiver<DataplaneEvent>,
    /// Writes the XDP map-cache. A std mutex: each write is one short syscall.
    pub map_cache: Arc<Mutex<MapCacheWriter>>,
    pub stats: Arc<Stats>,
}

/// Largest control datagram we read (a jumbo frame; anything longer is truncated and then
/// refused by the codec).
const MAX_DATAGRAM: usize = 9216;

/// Binds the control socket: dual-stack `[::]:port`, else IPv4 only.
pub async fn bind_control_socket(port: u16) -> anyhow::Result<UdpSocket> {
    match UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await {
        Ok(s) => Ok(s),
        Err(e6) => UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .await
            .with_context(|| format!("binding UDP port {port} (IPv6 said: {e6})")),
    }
}

/// v4-mapped IPv6 → IPv4, so that the cores compare addresses as configured.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The address to send to through `sock`: v4-mapped when the socket is IPv6.
fn for_socket(sock_is_v6: bool, to: SocketAddr) -> SocketAddr {
    match (sock_is_v6, to.ip()) {
        (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port()),
        _ => to,
    }
}

/// Milliseconds since an origin fixed at start: the cores' clock.
struct Clock(tokio::time::Instant);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
    fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        self.0 + Duration::from_millis(t.as_millis())
    }
}

/// Runs until the event channel closes (the agent is stopping).
pub async fn run(mut ctx: ControlContext) -> anyhow::Result<()> {
    let clock = Clock(tokio::time::Instant::now());
    // Entropy and wall-clock time enter the core only as these values. The nonce generators'
    // keys come from the OS: whoever knows them predicts every nonce.
    let mut xtr_key = [0u8; 32];
    let mut ms_key = [0u8; 32];
    getrandom::fill(&mut xtr_key)
        .and_then(|()| getrandom::fill(&mut ms_key))
        .map_err(|e| anyhow::anyhow!("reading OS entropy for nonces: {e}"))?;
    let nonce_base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 1))
        .unwrap_or(1);
    let node = lower::node_config(
        &ctx.config,
        Seeds {
            nonce_seed: NonceSeed(xtr_key),
            map_server_nonce_seed: NonceSeed(ms_key),
            register_nonce_base: nonce_base,
        },
    )
    .context("map-server configuration")?;
    let mut node = node;
    // The core matches detections by ifindex; the config knows names only.
    node.mobility
        .resolve_ifindexes(crate::dataplane::ifindex_of)
        .context("mobility interfaces")?;
    let mut node = Node::new(node, clock.now());
    let sock = bind_control_socket(CONTROL_PORT).await?;
    enable_destination_info(&sock)
        .context("asking for the destination address of control datagrams")?;
    let local = sock.local_addr()?;
    let sock_is_v6 = local.is_ipv6();
    info!(
        "control plane on UDP {local}: {} map-server(s), {} map-resolver(s){}",
        node.xtr().config().map_servers.len(),
        node.xtr().config().map_resolvers.len(),
        if node.map_server().is_some() {
            ", map-server role enabled"
        } else {
            ""
        }
    );

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sender = SourceSender::default();
    // Rendered once at start, so that the endpoint never serves an empty control section.
    let mut last_render = clock.now();
    if let Ok(mut m) = ctx.stats.control_metrics.lock() {
        *m = render_metrics(&node, last_render);
    }
    let mut metrics_dirty = false;
    loop {
        // A pending metrics refresh also wakes the loop, so the text never lags by more than
        // METRICS_REFRESH after the last event.
        let deadline = earliest(
            node.poll_timeout(),
            metrics_dirty.then(|| last_render + METRICS_REFRESH),
        );
        let sleep_until = clock.instant(deadline.unwrap_or(Timestamp::from_secs(86_400 * 365)));
        let event = tokio::select! {
            r = recv_with_destination(&sock, &mut buf) => match r {
                Ok((n, from, to)) => Some(datagram_event(from, to, local.port(), &buf[..n])),
                Err(e) => {
                    // ICMP errors of earlier sends surface here (ECONNREFUSED): not fatal.
                    debug!("control socket: {e}");
                    None
                }
            },
            ev = ctx.events.recv() => match ev {
                Some(ev) => {
                    ctx.stats.events_handled.fetch_add(1, Ordering::Relaxed);
                    dataplane_event(ev)
                }
                None => break,
            },
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => Some(Event::Timer),
        };
        if let Some(ev) = event {
            for a in node.handle(clock.now(), ev) {
                carry_out(&sock, sock_is_v6, &mut sender, &ctx.map_cache, a).await;
            }
        }
        log_notifications(&mut node);
        // Metrics text at most twice a second: rendering on every miss would cost more than
        // the miss.
        metrics_dirty = true;
        let now = clock.now();
        if now - last_render >= METRICS_REFRESH {
            last_render = now;
            metrics_dirty = false;
            let text = render_metrics(&node, now);
            if let Ok(mut m) = ctx.stats.control_metrics.lock() {
                *m = text;
            }
        }
    }
    Ok(())
}

/// A received datagram as the core sees it: IPv4 peers and our IPv4 address unmapped; an
/// unknown destination (the kernel always reports one once asked) as the unspecified address,
/// from which the core does not answer.
fn datagram_event(from: SocketAddr, to: Option<IpAddr>, port: u16, bytes: &[u8]) -> Event {
    let from = canonical(from);
    let to_ip = to.map(|a| a.to_canonical()).unwrap_or(if from.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    Event::Datagram {
        from,
        to: SocketAddr::new(to_ip, port),
        bytes: bytes.to_vec(),
    }
}

fn dataplane_event(ev: DataplaneEvent) -> Option<Event> {
    Some(match ev {
        DataplaneEvent::Miss(m) => Event::Miss {
            instance_id: m.instance_id,
            src: m.src,
            dst: m.dst,
        },
        DataplaneEvent::NextHopUnresolved { ifindex, addr } => {
            Event::NextHopUnresolved { ifindex, addr }
        }
        // The xTR answers with a rate-limited SMR to the ITR (core::xtr::etr).
        DataplaneEvent::DataForAbsentEid(a) => {
            debug!("{a}");
            Event::DataForAbsentEid {
                instance_id: a.instance_id,
                itr_rloc: a.itr_rloc,
                src_eid: a.src_eid,
                dst_eid: a.dst_eid,
            }
        }
        DataplaneEvent::DynamicEidDetected(d) => Event::DynamicEidDetected {
            ifindex: d.ifindex,
            vlan: d.vlan,
            instance_id: d.instance_id,
            eid: d.eid,
            mac: d.mac,
            kind: d.kind,
        },
    })
}

/// How often the control-plane metrics text is rebuilt (at most).
const METRICS_REFRESH: Duration = Duration::from_millis(500);

/// The control plane's Prometheus series: xTR messages and rejections, registration state per
/// map-server, learnt map-cache size, the map-server's counters when that role runs, and the
/// node's own (local deliveries, next-hop requests).
pub fn render_metrics(node: &Node, now: Timestamp) -> String {
    let mut s = String::new();
    let xtr = node.xtr();
    let ms = node.map_server();
    let c = xtr.counters();
    s.push_str("# HELP lisp_xtr_total xTR control-plane messages and events.\n");
    s.push_str("# TYPE lisp_xtr_total counter\n");
    for (name, v) in c.messages() {
        let _ = writeln!(s, "lisp_xtr_total{{event=\"{name}\"}} {v}");
    }
    s.push_str("# HELP lisp_xtr_rejected_total Control inputs the xTR dropped, by reason.\n");
    s.push_str("# TYPE lisp_xtr_rejected_total counter\n");
    for (r, v) in c.rejects() {
        let _ = writeln!(s, "lisp_xtr_rejected_total{{reason=\"{}\"}} {v}", r.name());
    }
    s.push_str(
        "# HELP lisp_xtr_registered 1 if the map-server answered a Map-Register recently.\n",
    );
    s.push_str("# TYPE lisp_xtr_registered gauge\n");
    for r in xtr.registrations(now) {
        let up = u8::from(r.state == RegistrationState::Registered);
        let _ = writeln!(
            s,
            "lisp_xtr_registered{{map_server=\"{}\"}} {up}",
            r.map_server
        );
    }
    s.push_str("# HELP lisp_xtr_map_cache_entries Map-cache entries learnt from Map-Replies.\n");
    s.push_str("# TYPE lisp_xtr_map_cache_entries gauge\n");
    let _ = writeln!(s, "lisp_xtr_map_cache_entries {}", xtr.cached().count());
    s.push_str("# HELP lisp_xtr_table_entries Entries of the xTR's bounded tables.\n");
    s.push_str("# TYPE lisp_xtr_table_entries gauge\n");
    for (name, n) in xtr.table_sizes().named() {
        let _ = writeln!(s, "lisp_xtr_table_entries{{table=\"{name}\"}} {n}");
    }
    if let Some(m) = ms {
        s.push_str("# HELP lisp_map_server_total Map-server messages and events.\n");
        s.push_str("# TYPE lisp_map_server_total counter\n");
        for (name, v) in m.counters().iter() {
            let _ = writeln!(s, "lisp_map_server_total{{event=\"{name}\"}} {v}");
        }
    }
    s.push_str("# HELP lisp_node_total Decisions of the node between its roles.\n");
    s.push_str("# TYPE lisp_node_total counter\n");
    for (name, v) in node.counters().iter() {
        let _ = writeln!(s, "lisp_node_total{{event=\"{name}\"}} {v}");
    }
    s.push_str("# HELP lisp_next_hop_total Data-plane next hops found unresolved, by outcome.\n");
    s.push_str("# TYPE lisp_next_hop_total counter\n");
    for (name, v) in node.next_hops().counters().iter() {
        let _ = writeln!(s, "lisp_next_hop_total{{outcome=\"{name}\"}} {v}");
    }
    s
}

/// The node's notifications as log lines (operators and the e2e tests read them).
fn log_notifications(node: &mut Node) {
    while let Some(n) = node.poll_notification() {
        match n {
            Notification::Registered { map_server } => {
                info!("registered with map-server {map_server}")
            }
            Notification::RegistrationExpired {
                map_server,
                unanswered,
            } => warn!(
                "registration with map-server {map_server} expired ({unanswered} Map-Registers unanswered)"
            ),
            // The contract's wording (`core::mobility::MobilityNotification`'s Display).
            Notification::Mobility(m) => info!("{m}"),
        }
    }
}

async fn carry_out(
    sock: &UdpSocket,
    sock_is_v6: bool,
    sender: &mut SourceSender,
    writer: &Arc<Mutex<MapCacheWriter>>,
    a: Action,
) {
    match a {
        Action::Send { from, to, payload } => {
            if !sock_is_v6 && to.is_ipv6() {
                debug!("no IPv6 control socket: not sending to {to}");
                return;
            }
            let r = sender
                .send(sock, &payload, for_socket(sock_is_v6, to), from)
                .await;
            if let Err(e) = r {
                debug!("sending {} bytes to {to}: {e}", payload.len());
            }
        }
        Action::InstallMapCache { eid, data, ttl } => {
            let entry = match &data {
                MapCacheData::Positive(l) => positive_entry(l, eid.instance_id),
                MapCacheData::Negative(n) => Ok(negative_entry(*n)),
            };
            let r = entry.map_err(anyhow::Error::from).and_then(|e| {
                writer
                    .lock()
                    .map_err(|_| anyhow::anyhow!("map-cache writer poisoned"))?
                    .insert(eid.instance_id, eid.addr, eid.len, &e)
            });
            match r {
                Ok(()) => info!("map-cache {eid}: {data:?} for {}s", ttl.as_secs()),
                Err(e) => warn!("map-cache {eid}: {e:#}"),
            }
        }
        Action::RemoveMapCache { eid } => {
            let r = writer
                .lock()
                .map_err(|_| anyhow::anyhow!("map-cache writer poisoned"))
                .and_then(|mut w| w.remove(eid.instance_id, eid.addr, eid.len));
            match r {
                Ok(_) => info!("map-cache {eid}: removed"),
                Err(e) => warn!("map-cache {eid}: {e:#}"),
            }
        }
        Action::EnsureNeighbour { ifindex, addr } => {
            // One short netlink exchange; off the async threads all the same.
            let r = tokio::task::spawn_blocking(move || {
                super::neighbour::ensure_managed(ifindex, addr)
            })
            .await;
            match r {
                Ok(Ok(())) => info!(
                    "next hop {addr} (ifindex {ifindex}) unresolved: managed neighbour entry created"
                ),
                Ok(Err(e)) => warn!(
                    "next hop {addr} (ifindex {ifindex}) unresolved, and the neighbour entry could not be created: {e}"
                ),
                Err(e) => warn!("neighbour request for {addr}: {e}"),
            }
        }
        // Mobility actions (issue 7): carried out by the mobility shell once it lands.
        a @ (Action::AddLocalDynamicEid { .. }
        | Action::RemoveLocalDynamicEid { .. }
        | Action::AddHostRoute { .. }
        | Action::RemoveHostRoute { .. }
        | Action::SendMulticast { .. }) => debug!("not carried out yet: {a:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node::NodeConfig;
    use crate::core::xtr::{MapServerPeer, XtrConfig};
    use lisp_common::wire::control::auth::Algorithm;

    #[test]
    fn metrics_show_registration_state_and_counters() {
        let cfg = XtrConfig {
            locators: vec!["192.0.2.17".parse().unwrap()],
            map_servers: vec![MapServerPeer {
                address: "192.0.2.1".parse().unwrap(),
                key: b"k".to_vec(),
                algorithm: Algorithm::HmacSha256,
                proxy_reply: false,
            }],
            map_resolvers: vec!["192.0.2.1".parse().unwrap()],
            ..XtrConfig::default()
        };
        let mut n = Node::new(
            NodeConfig {
                xtr: cfg,
                map_server: None,
                ..NodeConfig::default()
            },
            Timestamp::ZERO,
        );
        n.handle(Timestamp::ZERO, Event::Timer);
        n.handle(
            Timestamp::ZERO,
            Event::Miss {
                instance_id: 0,
                src: "198.51.100.1".parse().unwrap(),
                dst: "203.0.113.1".parse().unwrap(),
            },
        );
        let from: SocketAddr = "192.0.2.1:4342".parse().unwrap();
        n.handle(
            Timestamp::ZERO,
            Event::Datagram {
                from,
                to: from,
                bytes: b"junk".to_vec(),
            },
        );
        n.handle(
            Timestamp::ZERO,
            Event::NextHopUnresolved {
                ifindex: 0,
                addr: from.ip(),
            },
        );
        let t = render_metrics(&n, Timestamp::ZERO);
        assert!(
            t.contains("lisp_xtr_total{event=\"sent_map_register\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_xtr_rejected_total{reason=\"malformed\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_xtr_registered{map_server=\"192.0.2.1\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("lisp_xtr_map_cache_entries 0\n"));
        assert!(
            t.contains("lisp_xtr_table_entries{table=\"pending\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_xtr_table_entries{table=\"cache\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_node_total{event=\"delivered_locally\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_next_hop_total{outcome=\"invalid\"} 1\n"),
            "{t}"
        );
        assert!(!t.contains("lisp_map_server_total"));
    }

    #[test]
    fn data_for_an_absent_eid_reaches_the_core_with_its_fields() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = super::super::events::AbsentEid {
            instance_id: 7,
            itr_rloc: ip("192.0.2.17"),
            src_eid: ip("198.51.100.10"),
            dst_eid: ip("203.0.113.7"),
            ifindex: 3,
        };
        assert_eq!(
            dataplane_event(DataplaneEvent::DataForAbsentEid(a)),
            Some(Event::DataForAbsentEid {
                instance_id: 7,
                itr_rloc: ip("192.0.2.17"),
                src_eid: ip("198.51.100.10"),
                dst_eid: ip("203.0.113.7"),
            })
        );
    }

    #[test]
    fn v4_peers_are_mapped_on_a_dual_stack_socket() {
        let v4: SocketAddr = "192.0.2.1:4342".parse().unwrap();
        let mapped = for_socket(true, v4);
        assert_eq!(mapped.to_string(), "[::ffff:192.0.2.1]:4342");
        assert_eq!(canonical(mapped), v4);
        assert_eq!(for_socket(false, v4), v4);
    }
}
