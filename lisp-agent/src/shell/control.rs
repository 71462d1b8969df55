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
//!
//! Mobility (issue 7): the same socket joins each dynamic-EID map's map-notify-group on the
//! map's mobility interfaces ([`super::group`]); a datagram whose destination is a group
//! becomes [`Event::GroupDatagram`] with the interface it arrived on. `SendMulticast` leaves
//! from it too (TTL 1, out of the asked interface). Host routes go through
//! [`super::routes::HostRoutes`]; the data plane's activity stamps are polled every second
//! into [`Event::DynamicEidActivity`]; the local API's questions ([`super::api`]) are answered
//! between two events from the node's state.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::api::{self, ApiCall};
use super::group;
use super::routes::{RouteCounters, RouteOp, RouteWorker};
use super::udp_dest::{Received, enable_destination_info, recv_with_pktinfo};
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
    /// Host routes of dynamic EIDs, carried out by their own task (`None`: rtnetlink
    /// unavailable; route actions are then logged and counted as failed).
    pub routes: Option<RouteWorker>,
    /// Questions from the local API (`None`: no API socket).
    pub api: Option<mpsc::Receiver<ApiCall>>,
}

/// How often the data plane's activity stamps of local dynamic EIDs are read.
const ACTIVITY_POLL: Duration = Duration::from_secs(1);

/// What the shell itself did for mobility (the `lisp_mobility_shell_total` series): the
/// kernel's side of the core's actions, which the core cannot count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MobilityShellCounters {
    pub group_datagrams_received: u64,
    pub group_datagrams_sent: u64,
    pub group_send_failed: u64,
    pub group_joins_failed: u64,
    /// Route actions with no route worker to carry them out.
    pub host_route_unavailable: u64,
    pub local_eids_written: u64,
    pub local_eids_not_written: u64,
    pub activity_reports: u64,
    pub api_requests: u64,
}

impl MobilityShellCounters {
    fn iter(&self) -> [(&'static str, u64); 9] {
        [
            ("group_datagram_received", self.group_datagrams_received),
            ("group_datagram_sent", self.group_datagrams_sent),
            ("group_send_failed", self.group_send_failed),
            ("group_join_failed", self.group_joins_failed),
            ("host_route_unavailable", self.host_route_unavailable),
            ("local_eid_written", self.local_eids_written),
            ("local_eid_not_written", self.local_eids_not_written),
            ("activity_report", self.activity_reports),
            ("api_request", self.api_requests),
        ]
    }
}

/// Waits for the next API question; never resolves without an API (a closed channel turns
/// the API off, so that the loop does not spin on it).
async fn next_call(api: &mut Option<mpsc::Receiver<ApiCall>>) -> ApiCall {
    if let Some(rx) = api {
        if let Some(c) = rx.recv().await {
            return c;
        }
        *api = None;
    }
    std::future::pending().await
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
    let mut node = lower::node_config(
        &ctx.config,
        Seeds {
            nonce_seed: NonceSeed(xtr_key),
            map_server_nonce_seed: NonceSeed(ms_key),
            register_nonce_base: nonce_base,
        },
    )
    .context("map-server configuration")?;
    // The core matches detection events by ifindex; the config knows names.
    node.mobility
        .resolve_ifindexes(crate::dataplane::ifindex_of)
        .context("mobility interfaces")?;
    let mut node = Node::new(node, clock.now());
    let sock = bind_control_socket(CONTROL_PORT).await?;
    enable_destination_info(&sock)
        .context("asking for the destination address of control datagrams")?;
    let local = sock.local_addr()?;
    let sock_is_v6 = local.is_ipv6();
    let mut mob = MobilityShellCounters::default();
    join_groups(&sock, &ctx.config, &mut mob)?;
    let mobility = !ctx.config.dynamic_eid_maps.is_empty();
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
        *m = render_metrics(&node, last_render)
            + &render_shell_mobility(&mob, ctx.routes.as_ref().map(|w| &*w.counters));
    }
    let mut metrics_dirty = false;
    // Activity stamps are read off the control loop: a walk of the whole local-EID table
    // (two syscalls per entry) would stall the protocol with many EIDs.
    let (activity_tx, mut activity) = mpsc::channel::<Vec<(u32, IpAddr)>>(2);
    let _activity_task =
        mobility.then(|| spawn_activity_poller(ctx.map_cache.clone(), activity_tx));
    let mut api_calls = ctx.api.take();
    loop {
        // A pending metrics refresh also wakes the loop, so the text never lags by more than
        // METRICS_REFRESH after the last event.
        let deadline = earliest(
            node.poll_timeout(),
            metrics_dirty.then(|| last_render + METRICS_REFRESH),
        );
        let sleep_until = clock.instant(deadline.unwrap_or(Timestamp::from_secs(86_400 * 365)));
        let event = tokio::select! {
            r = recv_with_pktinfo(&sock, &mut buf) => match r {
                Ok(r) => {
                    let ev = datagram_event(r, local.port(), &buf[..r.len]);
                    if let Event::GroupDatagram { ifindex, from, group, bytes } = &ev {
                        mob.group_datagrams_received += 1;
                        debug!(
                            "group datagram from {from} to {group} on {} ({} bytes)",
                            ifname(*ifindex),
                            bytes.len()
                        );
                    }
                    Some(ev)
                }
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
            Some(seen) = activity.recv(), if mobility => {
                mob.activity_reports += 1;
                Some(Event::DynamicEidActivity { seen })
            }
            call = next_call(&mut api_calls) => {
                mob.api_requests += 1;
                let _ = call.reply.send(api::answer(&node, clock.now(), &call.request));
                None
            }
        };
        if let Some(ev) = event {
            let mut out = Effects {
                sock: &sock,
                sock_is_v6,
                sender: &mut sender,
                writer: &ctx.map_cache,
                routes: ctx.routes.as_ref(),
                counters: &mut mob,
            };
            for a in node.handle(clock.now(), ev) {
                carry_out(&mut out, a).await;
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
            let mut text = render_metrics(&node, now);
            text.push_str(&render_shell_mobility(
                &mob,
                ctx.routes.as_ref().map(|w| &*w.counters),
            ));
            if let Ok(mut m) = ctx.stats.control_metrics.lock() {
                *m = text;
            }
        }
    }
    Ok(())
}

/// A received datagram as the core sees it: IPv4 peers and our IPv4 address unmapped; an
/// unknown destination (the kernel always reports one once asked) as the unspecified address,
/// from which the core does not answer. A datagram to a multicast group (the map-notify-group)
/// is a [`Event::GroupDatagram`] with the interface it came in on.
fn datagram_event(r: Received, port: u16, bytes: &[u8]) -> Event {
    let from = canonical(r.from);
    if let Some(to) = r.to.filter(|t| group::is_group(*t)) {
        return Event::GroupDatagram {
            ifindex: r.ifindex.unwrap_or(0),
            from,
            group: to.to_canonical(),
            bytes: bytes.to_vec(),
        };
    }
    let to_ip =
        r.to.map(|a| a.to_canonical())
            .unwrap_or_else(|| group::unspecified_like(from.ip()));
    Event::Datagram {
        from,
        to: SocketAddr::new(to_ip, port),
        bytes: bytes.to_vec(),
    }
}

/// Joins every map-notify-group the config asks for and sets the socket's multicast sending
/// options. A membership that fails (an interface without IPv6, a group of the family the
/// socket lacks) is warned about and counted: the map's unicast registration still works.
fn join_groups(
    sock: &UdpSocket,
    cfg: &Config,
    counters: &mut MobilityShellCounters,
) -> anyhow::Result<()> {
    let (memberships, missing) = group::memberships(cfg, crate::dataplane::ifindex_of);
    if memberships.is_empty() && missing.is_empty() {
        return Ok(());
    }
    group::configure_sending(sock).context("multicast options of the control socket")?;
    for name in missing {
        counters.group_joins_failed += 1;
        warn!("mobility interface {name} does not exist: its map-notify-group is not joined");
    }
    for m in memberships {
        match group::join(sock, m.group, m.ifindex) {
            Ok(()) => info!(
                "map-notify-group {} of dynamic-eid map {} joined on {}",
                m.group, m.map, m.interface
            ),
            Err(e) => {
                counters.group_joins_failed += 1;
                warn!(
                    "joining map-notify-group {} of dynamic-eid map {} on {}: {e}",
                    m.group, m.map, m.interface
                );
            }
        }
    }
    Ok(())
}

/// Every [`ACTIVITY_POLL`], the local dynamic EIDs the data plane saw traffic from since the
/// previous poll, sent to the control loop when there are any. The stamps are refreshed at
/// most once a second per EID, so each poll looks back one second before the previous one.
fn spawn_activity_poller(
    writer: Arc<Mutex<MapCacheWriter>>,
    tx: mpsc::Sender<Vec<(u32, IpAddr)>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACTIVITY_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = crate::dataplane::monotonic_coarse_ns();
        loop {
            tick.tick().await;
            let since = last.saturating_sub(1_000_000_000);
            let w = writer.clone();
            let r = tokio::task::spawn_blocking(move || {
                let now = crate::dataplane::monotonic_coarse_ns();
                let seen = w
                    .lock()
                    .map_err(|_| anyhow::anyhow!("map-cache writer poisoned"))?
                    .dynamic_eid_activity(since)?;
                anyhow::Ok((now, seen))
            })
            .await;
            match r {
                Ok(Ok((now, seen))) => {
                    last = now;
                    if !seen.is_empty() && tx.send(seen).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => warn!("reading dynamic-EID activity: {e:#}"),
                Err(e) => warn!("dynamic-EID activity poll: {e}"),
            }
        }
    })
}

/// Writes (`Some(ifindex, vlan)`) or removes (`None`) a known local dynamic EID in the data
/// plane; `Ok(false)` for a removal of one it did not hold.
fn write_local_dynamic_eid(
    writer: &Arc<Mutex<MapCacheWriter>>,
    instance_id: u32,
    eid: IpAddr,
    at: Option<(u32, Option<u16>)>,
) -> anyhow::Result<bool> {
    let mut w = writer
        .lock()
        .map_err(|_| anyhow::anyhow!("map-cache writer poisoned"))?;
    match at {
        Some((ifindex, vlan)) => w
            .add_local_dynamic_eid(instance_id, eid, ifindex, vlan)
            .map(|()| true),
        None => w.remove_local_dynamic_eid(instance_id, eid),
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
    s.push_str(&render_mobility(&mobility_series(node)));
    s
}

/// The `lisp_mobility_total` events of the mobility contract, always rendered (0 until they
/// happen) so that a scrape tells "nothing happened" from "not exported".
pub const MOBILITY_EVENTS: [&str; 7] = [
    "detected",
    "learned_from_site",
    "moved_away",
    "expired",
    "group_notify_sent",
    "group_notify_received",
    "smr_sent",
];

/// The numbers behind the core's mobility series: cheap to read every half second whatever
/// the number of dynamic EIDs (counts, not rows).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MobilitySeries {
    pub events: Vec<(&'static str, u64)>,
    pub refusals: Vec<(&'static str, u64)>,
    /// Dynamic EIDs by origin (`local`, `site`, `away`).
    pub by_origin: Vec<(&'static str, u64)>,
}

/// The node's mobility counters and counts. `smr_sent` is the xTR's count of SMRs sent: the
/// ones an away EID's traffic triggers, and those of a database-mapping change.
fn mobility_series(node: &Node) -> MobilitySeries {
    let m = node.mobility();
    let mut events = m.counters().events().to_vec();
    events.push(("smr_sent", node.xtr().counters().sent_smr));
    MobilitySeries {
        events,
        refusals: m.counters().refusals().to_vec(),
        by_origin: m.counts().iter().map(|&(o, n)| (o, n as u64)).collect(),
    }
}

/// The core's mobility series: events, refusals by reason, and dynamic EIDs by origin.
pub fn render_mobility(m: &MobilitySeries) -> String {
    let mut s = String::new();
    s.push_str("# HELP lisp_mobility_total VM-mobility events of the node.\n");
    s.push_str("# TYPE lisp_mobility_total counter\n");
    let mut events: Vec<(&str, u64)> = MOBILITY_EVENTS.iter().map(|e| (*e, 0)).collect();
    for (name, v) in &m.events {
        match events.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = *v,
            None => events.push((name, *v)),
        }
    }
    for (name, v) in events {
        let _ = writeln!(s, "lisp_mobility_total{{event=\"{name}\"}} {v}");
    }
    s.push_str("# HELP lisp_mobility_refused_total Mobility inputs refused, by reason.\n");
    s.push_str("# TYPE lisp_mobility_refused_total counter\n");
    for (reason, v) in &m.refusals {
        let _ = writeln!(s, "lisp_mobility_refused_total{{reason=\"{reason}\"}} {v}");
    }
    s.push_str("# HELP lisp_dynamic_eids Dynamic EIDs the node knows, by origin.\n");
    s.push_str("# TYPE lisp_dynamic_eids gauge\n");
    for o in api::Origin::ALL {
        let n = m
            .by_origin
            .iter()
            .find(|(name, _)| *name == o.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(s, "lisp_dynamic_eids{{origin=\"{}\"}} {n}", o.as_str());
    }
    s
}

/// The shell's own mobility series (what the kernel did with the core's requests).
pub fn render_shell_mobility(c: &MobilityShellCounters, routes: Option<&RouteCounters>) -> String {
    let mut s = String::new();
    s.push_str(
        "# HELP lisp_mobility_shell_total Mobility work of the shell (group sockets, host routes, data-plane entries, API).\n",
    );
    s.push_str("# TYPE lisp_mobility_shell_total counter\n");
    let load = |f: fn(&RouteCounters) -> &std::sync::atomic::AtomicU64| {
        routes.map_or(0, |r| f(r).load(Ordering::Relaxed))
    };
    let route_series = [
        ("host_route_added", load(|r| &r.added)),
        ("host_route_removed", load(|r| &r.removed)),
        ("host_route_failed", load(|r| &r.failed)),
    ];
    for (name, v) in c.iter().into_iter().chain(route_series) {
        let _ = writeln!(s, "lisp_mobility_shell_total{{event=\"{name}\"}} {v}");
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

/// What carrying out actions needs, borrowed from the control loop.
struct Effects<'a> {
    sock: &'a UdpSocket,
    sock_is_v6: bool,
    sender: &'a mut SourceSender,
    writer: &'a Arc<Mutex<MapCacheWriter>>,
    routes: Option<&'a RouteWorker>,
    counters: &'a mut MobilityShellCounters,
}

async fn carry_out(fx: &mut Effects<'_>, a: Action) {
    let (sock, sock_is_v6, writer) = (fx.sock, fx.sock_is_v6, fx.writer);
    match a {
        Action::Send { from, to, payload } => {
            if !sock_is_v6 && to.is_ipv6() {
                debug!("no IPv6 control socket: not sending to {to}");
                return;
            }
            let r = fx
                .sender
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
        Action::AddHostRoute {
            instance_id,
            eid,
            ifindex,
        } => route(
            fx,
            RouteOp::Add {
                instance_id,
                eid,
                ifindex,
            },
        ),
        Action::RemoveHostRoute {
            instance_id,
            eid,
            ifindex,
        } => route(
            fx,
            RouteOp::Remove {
                instance_id,
                eid,
                ifindex,
            },
        ),
        Action::AddLocalDynamicEid {
            instance_id,
            eid,
            ifindex,
            vlan,
        } => local_eid(fx, instance_id, eid, Some((ifindex, vlan))),
        Action::RemoveLocalDynamicEid { instance_id, eid } => local_eid(fx, instance_id, eid, None),
        Action::SendMulticast {
            group: g,
            ifindex,
            from,
            payload,
        } => match group::send(sock, sock_is_v6, &payload, g, CONTROL_PORT, ifindex, from).await {
            Ok(_) => fx.counters.group_datagrams_sent += 1,
            Err(e) => {
                fx.counters.group_send_failed += 1;
                warn!(
                    "sending {} bytes to map-notify-group {g} on {}: {e}",
                    payload.len(),
                    ifname(ifindex)
                );
            }
        },
    }
}

/// Hands a route change to the route worker (it logs and counts the kernel's answer).
fn route(fx: &mut Effects<'_>, op: RouteOp) {
    match fx.routes {
        Some(w) => w.submit(op),
        None => {
            fx.counters.host_route_unavailable += 1;
            warn!("host route change {op:?}: no rtnetlink connection");
        }
    }
}

fn local_eid(fx: &mut Effects<'_>, instance_id: u32, eid: IpAddr, at: Option<(u32, Option<u16>)>) {
    match write_local_dynamic_eid(fx.writer, instance_id, eid, at) {
        Ok(true) => fx.counters.local_eids_written += 1,
        Ok(false) => {
            fx.counters.local_eids_not_written += 1;
            debug!(
                "local dynamic EID {eid} (iid {instance_id}): the data plane has no table for it"
            );
        }
        Err(e) => {
            fx.counters.local_eids_not_written += 1;
            warn!("local dynamic EID {eid} (iid {instance_id}): {e:#}");
        }
    }
}

/// An interface for log lines: its name, else its index.
fn ifname(ifindex: u32) -> String {
    crate::dataplane::ifname_of(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
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
    fn group_datagrams_are_told_apart_by_their_destination() {
        let from: SocketAddr = "[::ffff:198.51.100.2]:4342".parse().unwrap();
        let r = |to: &str, ifindex| Received {
            len: 3,
            from,
            to: Some(to.parse().unwrap()),
            ifindex: Some(ifindex),
        };
        assert_eq!(
            datagram_event(r("::ffff:239.1.1.254", 7), 4342, b"abc"),
            Event::GroupDatagram {
                ifindex: 7,
                from: "198.51.100.2:4342".parse().unwrap(),
                group: "239.1.1.254".parse().unwrap(),
                bytes: b"abc".to_vec(),
            }
        );
        assert!(matches!(
            datagram_event(r("ff15::db8:1", 3), 4342, b"abc"),
            Event::GroupDatagram { ifindex: 3, .. }
        ));
        assert_eq!(
            datagram_event(r("::ffff:192.0.2.17", 7), 4342, b"abc"),
            Event::Datagram {
                from: "198.51.100.2:4342".parse().unwrap(),
                to: "192.0.2.17:4342".parse().unwrap(),
                bytes: b"abc".to_vec(),
            }
        );
        let unknown = Received {
            to: None,
            ifindex: None,
            ..r("::1", 0)
        };
        assert!(matches!(
            datagram_event(unknown, 4342, b""),
            Event::Datagram { to, .. } if to.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        ));
    }

    #[test]
    fn mobility_series_follow_the_contract_names() {
        let view = MobilitySeries {
            events: vec![("detected", 3), ("smr_sent", 2)],
            refusals: vec![("unauthenticated", 1)],
            by_origin: vec![("local", 1)],
        };
        let t = render_mobility(&view);
        for e in MOBILITY_EVENTS {
            assert!(
                t.contains(&format!("lisp_mobility_total{{event=\"{e}\"}} ")),
                "{e}: {t}"
            );
        }
        assert!(
            t.contains("lisp_mobility_total{event=\"detected\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_mobility_total{event=\"smr_sent\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("lisp_mobility_total{event=\"expired\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("lisp_mobility_refused_total{reason=\"unauthenticated\"} 1\n"));
        assert!(t.contains("lisp_dynamic_eids{origin=\"local\"} 1\n"));
        assert!(t.contains("lisp_dynamic_eids{origin=\"away\"} 0\n"));
        let c = MobilityShellCounters {
            group_datagrams_received: 4,
            ..MobilityShellCounters::default()
        };
        let r = RouteCounters::default();
        r.failed.store(1, Ordering::Relaxed);
        let t = render_shell_mobility(&c, Some(&r));
        assert!(t.contains("lisp_mobility_shell_total{event=\"group_datagram_received\"} 4\n"));
        assert!(t.contains("lisp_mobility_shell_total{event=\"host_route_failed\"} 1\n"));
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
