//! The mobility core at scale: `cargo bench -p lisp-agent --bench mobility` (also run by
//! `cargo xtask bench-mobility`). Figures, not a test.
//!
//! A node built from the YAML a site xTR runs (one dynamic-EID map, a /96 IPv6 dynamic prefix,
//! its mobility interface resolved to ifindex 3) is fed `MOB_BENCH_EIDS` (default 100 000)
//! detections, one `Event::DynamicEidDetected` each, all at one instant, then one activity
//! report naming them all. A counting allocator reports the heap the node holds before and
//! after (the core's share of the agent's memory; the XDP maps live in the kernel), and the
//! wall time gives detections per second including the actions they return (routes, entries,
//! Map-Registers, group notifies), which are dropped unread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lisp_agent::config::Config;
use lisp_agent::config::lower::{Seeds, node_config};
use lisp_agent::core::action::{DetectionKind, Event};
use lisp_agent::core::node::Node;
use lisp_agent::core::time::Timestamp;

/// Bytes currently allocated through the global allocator.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout, caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SVI_IFINDEX: u32 = 3;

const YAML: &str = r#"
locators: { ipv4: 192.0.2.2 }
register-interval: 60s
map-servers:
  - { address: 192.0.2.66, key: dc-a-secret, key-algorithm: hmac-sha-256 }
map-resolvers: [192.0.2.66]
database-mappings:
  - eid-prefix: "2001:db8:1::/64"
    locators: [ { address: 192.0.2.2, priority: 1, weight: 100 } ]
dynamic-eid-maps:
  - name: Roamer-1
    database-mappings:
      - eid-prefix: "2001:db8:1::/96"
        locators: [ { address: 192.0.2.2, priority: 1, weight: 100 } ]
    map-notify-group: 239.1.1.254
    inactivity-timeout: 180s
interfaces:
  - { name: vlan10, role: eid, mobility: Roamer-1, extended-subnet-mode: true }
  - { name: rloc0, role: rloc }
"#;

/// Host `i` of the /96: 2001:db8:1::10:0 + i.
fn eid(i: u32) -> IpAddr {
    let v = 0x0010_0000u32 + i;
    IpAddr::V6(Ipv6Addr::new(
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

fn main() {
    let n: u32 = std::env::var("MOB_BENCH_EIDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cfg = Config::from_yaml_str(YAML).expect("bench config");
    let mut nc = node_config(
        &cfg,
        Seeds {
            nonce_seed: 1,
            register_nonce_base: 1,
        },
    )
    .expect("lowering");
    nc.mobility
        .resolve_ifindexes(|name| (name == "vlan10").then_some(SVI_IFINDEX))
        .expect("ifindex");
    let t0 = Timestamp::from_secs(1_000);
    let base = LIVE.load(Ordering::Relaxed);
    let mut node = Node::new(nc, t0);
    let empty = LIVE.load(Ordering::Relaxed);

    let started = Instant::now();
    let mut actions = 0usize;
    for i in 0..n {
        let a = node.handle(
            t0,
            Event::DynamicEidDetected {
                ifindex: SVI_IFINDEX,
                vlan: None,
                instance_id: 0,
                eid: eid(i),
                mac: [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                kind: DetectionKind::Data,
            },
        );
        actions += a.len();
        black_box(a);
    }
    let took = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed);
    // One activity report for all of them (what the shell sends every second).
    let seen: Vec<(u32, IpAddr)> = (0..n).map(|i| (0, eid(i))).collect();
    let started_act = Instant::now();
    let a = node.handle(
        Timestamp::from_secs(1_001),
        Event::DynamicEidActivity { seen },
    );
    let took_act = started_act.elapsed();
    black_box(a);
    let after_act = LIVE.load(Ordering::Relaxed);

    println!("mobility core, {n} dynamic EIDs detected on one interface at one instant:");
    // Signed: building the node may free some of what the lowered config held.
    let d = |a: usize, b: usize| a as f64 - b as f64;
    println!(
        "  node heap: {:.1} KiB empty, {:.1} MiB with the EIDs ({:.0} bytes per EID), {:.1} MiB after an activity report",
        d(empty, base) / 1024.0,
        d(held, base) / (1024.0 * 1024.0),
        d(held, empty) / f64::from(n.max(1)),
        d(after_act, base) / (1024.0 * 1024.0)
    );
    println!(
        "  {:.0} detections/s ({:.2} us each, {actions} actions returned); activity report of all: {:.1} ms",
        f64::from(n) / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / f64::from(n.max(1)),
        took_act.as_secs_f64() * 1e3
    );
    drop(node);
}
