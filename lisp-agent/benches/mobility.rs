//! What the mobility core costs: `Node::handle` for a detection (entry, route, the immediate
//! Map-Register and the group Map-Notify, both signed) with 100k dynamic EIDs known, the
//! periodic registration round of all of them (batched Map-Registers), a move away told by a
//! group Map-Notify, and the resident memory the 100k entries add (from /proc/self/statm).
//! Figures, not a test: `cargo bench -p lisp-agent --bench mobility`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lisp_agent::core::action::{Action, DetectionKind, EidPrefix, Event};
use lisp_agent::core::map_cache::Locator;
use lisp_agent::core::mobility::{
    DynamicEidMapConfig, DynamicPrefix, MobilityConfig, MobilityInterface, MobilityMode,
};
use lisp_agent::core::node::{Node, NodeConfig};
use lisp_agent::core::time::Timestamp;
use lisp_agent::core::xtr::{MapServerPeer, XtrConfig};
use lisp_common::wire::control::auth::{self, Algorithm, Auth};
use lisp_common::wire::control::{
    Eid, IpPrefix, Locator as WireLocator, MapNotify, Message, Record, XtrId,
};

const N: u32 = 100_000;
const KEY: &[u8] = b"bench-key";
const BASE: u32 = 0x0a00_0000; // 10.0.0.0/8: room for 100k hosts

fn host(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(BASE + i))
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn node() -> Node {
    let me: IpAddr = "192.0.2.11".parse().unwrap();
    let xtr = XtrConfig {
        locators: vec![me],
        map_servers: vec![MapServerPeer {
            address: "192.0.2.1".parse().unwrap(),
            key: KEY.to_vec(),
            algorithm: Algorithm::HmacSha256,
            proxy_reply: true,
        }],
        xtr_id: Some(XtrId {
            xtr_id: [1; 16],
            site_id: 1,
        }),
        ..XtrConfig::default()
    };
    let mobility = MobilityConfig {
        maps: vec![DynamicEidMapConfig {
            name: "Roamer-1".into(),
            instance_id: 0,
            prefixes: vec![DynamicPrefix {
                eid: EidPrefix::from_ip_prefix(0, "10.0.0.0/8".parse().unwrap()),
                locators: vec![Locator {
                    addr: me,
                    priority: 1,
                    weight: 100,
                }],
            }],
            group: "239.1.1.1".parse().unwrap(),
            map_servers: Vec::new(),
            inactivity: Duration::from_secs(3600),
        }],
        interfaces: vec![MobilityInterface {
            name: "vlan10".into(),
            map: 0,
            mode: MobilityMode::ExtendedSubnet,
            trunk: None,
            ifindex: 10,
        }],
        ..MobilityConfig::default()
    };
    Node::new(
        NodeConfig {
            xtr,
            mobility,
            ..NodeConfig::default()
        },
        Timestamp::ZERO,
    )
}

fn detected(i: u32) -> Event {
    Event::DynamicEidDetected {
        ifindex: 10,
        vlan: None,
        instance_id: 0,
        eid: host(i),
        mac: [2, 0, 0, 0, 0, 1],
        kind: DetectionKind::Data,
    }
}

fn group_notify(i: u32) -> Vec<u8> {
    let mut rec = Record::new(Eid::new(None, IpPrefix::host(host(i))), 1440);
    rec.locators = vec![WireLocator::new("192.0.2.21".parse().unwrap(), 1, 100)];
    let n = MapNotify {
        nonce: u64::from(i) + 1,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![rec],
        xtr: Some(XtrId {
            xtr_id: [2; 16],
            site_id: 2,
        }),
        ..MapNotify::default()
    };
    auth::emit_signed(&Message::MapNotify(n), KEY).unwrap()
}

fn main() {
    let before = rss_kib();
    let mut n = node();
    n.handle(Timestamp::ZERO, Event::Timer);
    let now = Timestamp::from_secs(1);
    let t = Instant::now();
    let mut regs = 0usize;
    for i in 0..N {
        let out = n.handle(now, detected(i));
        regs += out
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        black_box(out);
        // The shell drains notifications after every event (log lines).
        while let Some(x) = n.poll_notification() {
            black_box(x);
        }
    }
    let per = t.elapsed() / N;
    let after = rss_kib();
    println!(
        "detection -> actions (Map-Register + group Map-Notify) with up to {N} EIDs: {per:?} per detection, {regs} Map-Registers"
    );
    println!(
        "resident memory: {} KiB before, {} KiB after {N} dynamic EIDs (+{} KiB)",
        before,
        after,
        after.saturating_sub(before)
    );

    let t = Instant::now();
    let out = n.handle(Timestamp::from_secs(61), Event::Timer);
    let sends: Vec<usize> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .collect();
    println!(
        "periodic round of {N} hosts: {:?}, {} Map-Registers, largest {} bytes",
        t.elapsed(),
        sends.len(),
        sends.iter().max().unwrap_or(&0)
    );

    let notifies: Vec<Vec<u8>> = (0..N).map(group_notify).collect();
    let from = SocketAddr::new("192.0.2.21".parse().unwrap(), 4342);
    let t = Instant::now();
    for b in notifies {
        black_box(n.handle(
            Timestamp::from_secs(62),
            Event::GroupDatagram {
                ifindex: 10,
                from,
                group: "239.1.1.1".parse().unwrap(),
                bytes: b,
            },
        ));
    }
    println!(
        "group Map-Notify -> move away: {:?} per notify; {:?}",
        t.elapsed() / N,
        n.mobility().counts()
    );
}
