//! `cargo xtask bench-mobility` (also part of `cargo xtask bench`): the VM-mobility figures of
//! issue 7, reported, not asserted, on the topology of tests/support/mobility.rs.
//!
//! Per case (across-subnet without and with pubsub, extended-subnet without), one move of the
//! VM from site A to site B while the remote host streams 10 000 datagrams/s to it and the VM
//! streams 1 000/s back (so its first packet at the new site follows the re-plug within 1 ms):
//! - first packet at the new site → its Map-Register on the wire: the VM's first frame on the
//!   LAN port facing xTR B, and xTR B's first Map-Register for the EID on the core (target 1 ms);
//! - → the remote ITR encapsulating to the new RLOC: its first data packet to xTR B for the VM
//!   on the core (target 20 ms without pubsub, 5 ms with);
//! - datagrams of the 10 kpps stream lost among those sent after the VM's first packet at the
//!   new site (target 0), from the stream's own sequence numbers;
//! - agent memory with 100k dynamic EIDs (target 64 MiB): xTR A's RSS before and after learning
//!   100k hosts from signed group Map-Notifies of its own site ([`memory`]).
//!
//! First, the pure core at scale (lisp-agent/benches/mobility.rs, the core's own bench: cost
//! per detection and move with 100k dynamic EIDs, and their memory).
//!
//! Capture timestamps are the kernel's receive times of the capturing namespaces, all on the one
//! machine clock. The agents are the debug build `cargo xtask` builds; the data path is XDP.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::check_interrupt;
use crate::support::lab;
use crate::support::mobility::{self as mob, Mode, Options, Site};
use crate::support::netns::{Topology, unique_prefix};
use crate::support::stream::Stream;

const STREAM_PPS: u32 = 10_000;
const VM_PPS: u32 = 1_000;

struct Row {
    case: String,
    register_ms: Option<f64>,
    convergence_ms: Option<f64>,
    smr_ms: Option<f64>,
    lost_after_first: Option<usize>,
    lost_in_move: usize,
    sent: u64,
}

pub fn run(agent: &Path, object: &[u8]) -> Result<()> {
    // The core's share at scale first (no namespaces): per detection / move, memory.
    println!("==> mobility core: cargo bench -p lisp-agent --bench mobility");
    let st = crate::cargo()
        .args(["bench", "-p", "lisp-agent", "--bench", "mobility"])
        .status()?;
    if !st.success() {
        println!("    the mobility core bench failed");
    }
    let mut rows = Vec::new();
    for (mode, pubsub) in [
        (Mode::AcrossSubnet, false),
        (Mode::AcrossSubnet, true),
        (Mode::ExtendedSubnet, false),
    ] {
        check_interrupt()?;
        let case = format!("{}{}", mode.name(), if pubsub { ", pubsub" } else { "" });
        println!("==> mobility bench: one move A -> B, {case}");
        match one_move(agent, object, mode, pubsub, &case) {
            Ok(r) => rows.push(r),
            Err(e) => println!("    {case}: failed: {e:#}"),
        }
    }
    check_interrupt()?;
    if let Err(e) = memory(agent, object) {
        println!("    memory figure failed: {e:#}");
    }
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!();
    println!(
        "VM mobility: one move, {STREAM_PPS} datagrams/s to the VM (targets: register <= 1 ms, \
         convergence <= 20 ms / <= 5 ms with pubsub, 0 lost after the first packet)"
    );
    println!(
        "| case | first packet -> Map-Register ms | -> SMR ms | -> remote ITR on new RLOC ms | \
         lost after first packet | lost in the move | sent |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            f(r.register_ms),
            f(r.smr_ms),
            f(r.convergence_ms),
            r.lost_after_first
                .map_or("-".to_string(), |v| v.to_string()),
            r.lost_in_move,
            r.sent
        );
    }
    Ok(())
}

fn one_move(agent: &Path, object: &[u8], mode: Mode, pubsub: bool, case: &str) -> Result<Row> {
    let prefix = unique_prefix("lispbm");
    let workdir = std::env::temp_dir().join(format!("lisp-{prefix}"));
    let mut t = Topology::new(&prefix, &workdir)?;
    let mut m = mob::build(
        &mut t,
        Options {
            mode,
            multihomed: false,
        },
    )?;
    let _pass = mob::attach_pass(&t, &m, object)?;
    let core_pcap = workdir.join("core.pcap");
    let lan_pcap = workdir.join("lanb-to-xb.pcap");
    let cap_core = lab::start_capture(&mut t, mob::CORE, "any", &core_pcap)?;
    let cap_lan = lab::start_capture(&mut t, mob::LAN_B, mob::XB, &lan_pcap)?;
    let o = mob::AgentOptions {
        register_interval_s: 30,
        pubsub,
        log_level: "info",
        ..Default::default()
    };
    let a = mob::start_agents(&mut t, &m, agent, &o)?;
    let xa = a.xtr(mob::XA);
    let seen = |t: &mut Topology, h: usize, from: usize, needles: &[&str]| {
        Topology::wait_for(Duration::from_secs(10), || {
            check_interrupt()?;
            let l = t.proc(h).log_text();
            Ok(l.get(from..)
                .unwrap_or("")
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n))))
        })
    };
    if !seen(&mut t, xa, 0, &["registered with map-server"])? {
        bail!("xTR A did not register:\n{}", t.proc(xa).log_text());
    }
    let epoch = Instant::now();
    let fwd = Stream::start(
        &t,
        (mob::RH, mob::RH_V4),
        (mob::VM, mob::VM_V4),
        41004,
        STREAM_PPS,
        epoch,
    )?;
    let rev = Stream::start(
        &t,
        (mob::VM, mob::VM_V4),
        (mob::RH, mob::RH_V4),
        42004,
        VM_PPS,
        epoch,
    )?;
    if !seen(&mut t, xa, 0, &["dynamic-eid", mob::VM_V4, "detected"])? {
        bail!("xTR A did not detect the VM:\n{}", t.proc(xa).log_text());
    }
    if !fwd.wait_received(u64::from(STREAM_PPS), Duration::from_secs(10)) {
        bail!("the stream does not reach the VM at home");
    }
    let from_ri = t.proc(a.ri).log_text().len();
    let since = mob::epoch_now();
    let unplug = fwd.now();
    m.move_vm(&t, Site::B)?;
    let plug = fwd.now();
    let repointed = seen(
        &mut t,
        a.ri,
        from_ri,
        &[&format!("]{}/32", mob::VM_V4), mob::RLOC_B],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let fr = fwd.stop()?;
    let rr = rev.stop()?;
    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap_core);
    t.stop(cap_lan);
    if !repointed {
        println!("    {case}: the remote ITR was not re-pointed within 10 s");
    }
    let first = rr.first_sent_after(plug).map(|(_, at)| at);
    let lost_after_first = first.map(|at| fr.lost_sent_after(at).len());
    let lost_in_move = fr
        .lost_sent_after(unplug.saturating_sub(Duration::from_millis(5)))
        .len();
    println!("    stream to the VM: {}", fr.summary());
    let tl = mob::move_timeline(
        &lan_pcap,
        &core_pcap,
        mob::VM_V4,
        mob::RLOC_B,
        mob::RLOC_A,
        since,
    )?;
    Ok(Row {
        case: case.to_string(),
        register_ms: tl.register_ms(),
        convergence_ms: tl.convergence_ms(),
        smr_ms: tl.smr_ms(),
        lost_after_first,
        lost_in_move,
        sent: fr.sent(),
    })
}

/// Dynamic EIDs of the memory figure, and records per group Map-Notify (fits 1400 bytes).
const MEMORY_EIDS: u32 = 100_000;
const RECORDS_PER_NOTIFY: u32 = 30;

/// The `i`-th host of the memory figure: 2001:db8:1::10:0 + i, inside the /96 dynamic prefix
/// the figure configures and clear of the lab's own addresses.
fn memory_eid(i: u32) -> std::net::IpAddr {
    let v = 0x0010_0000u32 + i;
    std::net::IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        1,
        0,
        0,
        0,
        (v >> 16) as u16,
        v as u16,
    ))
}

/// Group Map-Notifies announcing `n` hosts of site A (xTR A's own locators, signed with the
/// site's key, an xTR-ID of a second xTR of the site), as a multihomed peer would send them.
fn memory_notifies(n: u32) -> Result<Vec<Vec<u8>>> {
    use lisp_common::wire::control::auth::{self, Algorithm};
    use lisp_common::wire::control::map_register::{MapNotify, XtrId};
    use lisp_common::wire::control::record::{Locator, Record};
    use lisp_common::wire::control::{Auth, Eid, IpPrefix};
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let records = (i..n.min(i + RECORDS_PER_NOTIFY))
            .map(|j| {
                let mut r = Record::new(Eid::new(None, IpPrefix::host(memory_eid(j))), 3);
                r.locators.push(Locator {
                    priority: 1,
                    weight: 100,
                    m_priority: 255,
                    m_weight: 0,
                    local: false,
                    probed: false,
                    reachable: true,
                    address: mob::RLOC_A.parse().expect("RLOC"),
                });
                r
            })
            .collect::<Vec<_>>();
        i += records.len() as u32;
        let msg = MapNotify {
            nonce: u64::from(i),
            auth: Auth::zeroed(Algorithm::HmacSha256),
            records,
            xtr: Some(XtrId {
                xtr_id: [0x5a; 16],
                site_id: 0,
            }),
            ..Default::default()
        };
        let mut v = msg.to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        auth::sign(&mut v, mob::KEY_A.as_bytes()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        out.push(v);
    }
    Ok(out)
}

/// Agent memory with [`MEMORY_EIDS`] dynamic EIDs: xTR A learns them from its site's group
/// (the one path that creates that many in seconds: detections are rate-limited in the
/// kernel, by design). RSS before and after, from /proc.
pub fn memory(agent: &Path, object: &[u8]) -> Result<()> {
    println!(
        "==> mobility bench: agent memory with {MEMORY_EIDS} dynamic EIDs (learned from the site group)"
    );
    let prefix = unique_prefix("lispbmm");
    let workdir = std::env::temp_dir().join(format!("lisp-{prefix}"));
    let mut t = Topology::new(&prefix, &workdir)?;
    let m = mob::build(
        &mut t,
        Options {
            mode: Mode::AcrossSubnet,
            multihomed: false,
        },
    )?;
    mob::add_spoofer(&mut t, Site::A)?;
    let _pass = mob::attach_pass(&t, &m, object)?;
    let o = mob::AgentOptions {
        // One log line per learned EID would measure the logger.
        log_level: "warn",
        dyn_v6: "2001:db8:1::/96",
        ..Default::default()
    };
    lab::start_agent(
        &mut t,
        agent,
        mob::MS,
        "map-server",
        &mob::map_server_config(&o),
    )?;
    let xa = lab::start_agent(
        &mut t,
        agent,
        mob::XA,
        "xtr-xa",
        &mob::xtr_config(&m, mob::XA, &o),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = t.proc(xa).pid();
    let before = mob::rss_kib(pid)?;
    let notifies = memory_notifies(MEMORY_EIDS)?;
    let started = Instant::now();
    for (k, n) in notifies.iter().enumerate() {
        mob::send_group(&t, mob::SPOOF, mob::SPOOF_V4, mob::GROUP, 4342, n)?;
        // Paced below what the agent's receive buffer holds.
        if k % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
        check_interrupt()?;
    }
    let full = t.ns(mob::XA);
    let mut learned = 0;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(3) {
        let now = lab::metrics_text(&full)
            .ok()
            .and_then(|m| lab::series(&m, "lisp_dynamic_eids{origin=\"site\"}"))
            .unwrap_or(0);
        if now != learned {
            learned = now;
            last_change = Instant::now();
        }
        if learned >= u64::from(MEMORY_EIDS) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        check_interrupt()?;
    }
    let took = started.elapsed();
    let after = mob::rss_kib(pid)?;
    let text = lab::metrics_text(&full).unwrap_or_default();
    println!(
        "    {} group Map-Notifies sent; xTR A holds {learned} dynamic EIDs from the site after \
         {:.1} s; refused: {:?}",
        notifies.len(),
        took.as_secs_f64(),
        lab::nonzero_series(&text, "lisp_mobility_refused_total")
    );
    println!(
        "    agent RSS: {before} KiB before, {after} KiB after: +{} KiB ({:.0} bytes per EID; \
         target: whole agent <= 64 MiB)",
        after.saturating_sub(before),
        if learned > 0 {
            (after.saturating_sub(before) * 1024) as f64 / learned as f64
        } else {
            0.0
        }
    );
    Ok(())
}
