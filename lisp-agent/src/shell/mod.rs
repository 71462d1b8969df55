//! The I/O shell: tokio tasks around the data plane. Loads and attaches XDP, forwards eBPF log
//! lines, reads events, serves metrics, hands events to the control plane, and detaches on
//! SIGINT/SIGTERM.
//!
//! The control plane plugs in at [`control::run`]: it receives a [`ControlContext`] (the
//! config, the event channel, the map-cache writer) and runs until the agent stops.

pub mod addresses;
pub mod api;
pub mod control;
pub mod events;
pub mod group;
pub mod metrics;
pub mod neighbour;
pub mod routes;
pub mod slow_path;
pub mod udp_dest;
pub mod udp_source;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use log::{info, warn};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::dataplane::{self, Dataplane, MapCacheWriter};
pub use control::ControlContext;
pub use events::{DataplaneEvent, Miss, MissKind};

/// Counters of the shell itself (exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub events_received: AtomicU64,
    pub events_lost: AtomicU64,
    pub events_dropped: AtomicU64,
    pub events_malformed: AtomicU64,
    pub events_handled: AtomicU64,
    /// Packets through the slow path (fragmentation, reassembly).
    pub slow_path: Arc<slow_path::SlowPathStats>,
    /// Prometheus text of the control plane (xTR and map-server counters, registration
    /// state), rendered by `control::run` and appended as is by `metrics::render`.
    pub control_metrics: Mutex<String>,
}

/// Depth of the event channel to the control plane. The kernel rate-limits events per
/// destination, so this only fills when the control plane is stuck; then events are dropped
/// and counted rather than blocking the perf readers.
const EVENT_QUEUE: usize = 4096;

/// The reference's rule against the kernel: each mobility interface's dynamic-EID prefixes are
/// more specific than the subnets on it (`Config::check_interface_subnets`).
async fn check_mobility_subnets(cfg: &Config) -> anyhow::Result<()> {
    for i in cfg.interfaces.iter().filter(|i| i.mobility.is_some()) {
        let ifindex = dataplane::ifindex_of(&i.name)
            .with_context(|| format!("mobility interface {} does not exist", i.name))?;
        let subnets = addresses::subnets_of(ifindex).await?;
        cfg.check_interface_subnets(&i.name, &subnets)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("the subnets on {}", i.name))?;
    }
    Ok(())
}

/// What the slow path needs to run reassembled datagrams back through the XDP program: the
/// program and the MAC of each ETR interface. `None` (the slow path then decapsulates itself,
/// main table only) if the program cannot be had.
fn slow_path_reinjection(
    dp: &Dataplane,
    plan: &dataplane::Plan,
) -> Option<(
    slow_path::Reinjector,
    std::collections::HashMap<u32, [u8; 6]>,
)> {
    let fd = match dp.program_fd() {
        Ok(fd) => fd,
        Err(e) => {
            warn!("slow path: XDP program not available for reinjection: {e:#}");
            return None;
        }
    };
    let mut macs = std::collections::HashMap::new();
    for i in &plan.interfaces {
        if i.value.flags & lisp_common::maps::iface_flags::ETR == 0 {
            continue;
        }
        match dataplane::mac_of(&i.name) {
            Ok(m) => {
                macs.insert(i.ifindex, m);
            }
            Err(e) => warn!("slow path: no MAC address for {}: {e}", i.name),
        }
    }
    Some((slow_path::Reinjector::new(fd), macs))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let plan = dataplane::plan::plan(&cfg, dataplane::ifindex_of)?;
    check_mobility_subnets(&cfg).await?;
    let mut dp = Dataplane::load(&plan)?;

    // Log lines first, so that the program's own messages from the first packets are kept.
    if let Some(logger) = dp.take_logger() {
        // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged until
        // the logger (moved into the AsyncFd) is dropped.
        let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the eBPF log buffer: {e}"))?;
        tokio::spawn(async move {
            loop {
                match fd.readable_mut().await {
                    Ok(mut g) => {
                        g.get_inner_mut().flush();
                        g.clear_ready();
                    }
                    Err(e) => {
                        warn!("eBPF log reader stopped: {e}");
                        return;
                    }
                }
            }
        });
    }

    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let events = dp.take_events()?;
    let _readers = events::spawn_readers(events, stats.clone(), tx)?;
    // What XDP cannot do: encapsulate packets that need fragmenting, decapsulate reassembled
    // outer fragments.
    let _slow_path = if cfg.itr || cfg.etr {
        slow_path::SlowPath::open(
            cfg.locators.ipv4,
            cfg.locators.ipv6,
            stats.slow_path.clone(),
        )
        // An ITR-only router decapsulates nothing, on this path either.
        .spawn(
            dp.take_slow_path()?,
            if cfg.etr { &plan.iid_tables[..] } else { &[] },
            slow_path_reinjection(&dp, &plan),
        )?
    } else {
        Vec::new()
    };

    let counters = dp.take_counters().map(|c| Arc::new(Mutex::new(c)));
    let writer: Arc<Mutex<MapCacheWriter>> = Arc::new(Mutex::new(
        dp.take_map_cache_writer()
            .context("map-cache writer already taken")?,
    ));

    // Signal handlers before attaching: a SIGTERM during startup still detaches cleanly.
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    dp.attach_all(&plan)?;

    let _metrics = match cfg.metrics_listen {
        Some(addr) => Some(metrics::spawn(addr, counters.clone(), stats.clone()).await?),
        None => None,
    };

    // Host routes of dynamic EIDs: ours from a run that did not stop cleanly go first.
    let routes = match routes::HostRoutes::new(
        cfg.instance_tables
            .iter()
            .map(|t| (t.instance_id, t.table.0)),
    ) {
        Ok(r) => {
            match r.remove_all_ours().await {
                Ok(0) => {}
                Ok(n) => info!("removed {n} host route(s) left over by an earlier run"),
                Err(e) => warn!("removing leftover host routes: {e:#}"),
            }
            Some(Arc::new(r))
        }
        Err(e) => {
            warn!("{e:#}: dynamic EIDs get no host routes");
            None
        }
    };

    let (route_worker, route_task) = match &routes {
        Some(r) => {
            let (w, t) = routes::RouteWorker::spawn(r.clone());
            (Some(w), Some(t))
        }
        None => (None, None),
    };

    // The local API: without it the agent still routes, so a socket it cannot have is a
    // warning (another agent on this host holds the default path), not a failed start.
    let (api_tx, api_rx) = mpsc::channel(16);
    let api_path = cfg
        .api_socket
        .clone()
        .unwrap_or_else(|| api::DEFAULT_SOCKET.into());
    let api_server = match api::spawn(&api_path, api_tx) {
        Ok(s) => {
            info!("local API on {}", s.path().display());
            Some(s)
        }
        Err(e) => {
            warn!("no local API: {e:#}");
            None
        }
    };

    let control = tokio::spawn(control::run(ControlContext {
        config: cfg.clone(),
        events: rx,
        map_cache: writer,
        stats: stats.clone(),
        routes: route_worker.clone(),
        api: api_server.is_some().then_some(api_rx),
    }));

    info!("lisp-agent running on {}", dp.attached().join(", "));
    let outcome = tokio::select! {
        _ = sigterm.recv() => Ok("SIGTERM"),
        _ = sigint.recv() => Ok("SIGINT"),
        r = control => match r {
            Ok(Ok(())) => Ok("control plane finished"),
            Ok(Err(e)) => Err(e.context("control plane failed")),
            Err(e) => Err(anyhow::anyhow!("control plane task failed: {e}")),
        },
    };
    if let Ok(why) = outcome {
        info!("{why}: detaching and exiting");
    }
    dp.detach_all();
    drop(api_server);
    // Also when the control plane failed: the host routes are ours to take away.
    // Changes still queued first; then the worker stops, so that nothing the still-running
    // control task asks for lands after the cleanup (same netlink connection: the kernel sees
    // the worker's last request before the cleanup's dump).
    if let Some(w) = route_worker {
        w.flush().await;
    }
    if let Some(t) = route_task {
        t.abort();
    }
    if let Some(r) = routes {
        match r.remove_all_ours().await {
            Ok(0) => {}
            Ok(n) => info!("removed {n} host route(s)"),
            Err(e) => warn!("removing host routes at stop: {e:#}"),
        }
    }
    outcome.map(|_| ())
}
