//! What the node's demultiplexing costs on top of the map-server: ECM Map-Requests fed to
//! `Node::handle` (map-server + xTR with database-mappings, so every ECM is checked against
//! them) and to `MapServer::handle_datagram` directly, on one core, wall time divided by the
//! count. Figures, not a test: `cargo bench -p lisp-agent --bench node`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use lisp_agent::core::action::{EidPrefix, Event};
use lisp_agent::core::map_cache::Locator;
use lisp_agent::core::map_server::{MapServer, MapServerConfig, SiteConfig, SitePrefix};
use lisp_agent::core::node::{Node, NodeConfig};
use lisp_agent::core::time::Timestamp;
use lisp_agent::core::xtr::{DatabaseMapping, XtrConfig};
use lisp_common::wire::control::auth::{self, Algorithm};
use lisp_common::wire::control::{
    Address, Auth, Ecm, Eid, IpPrefix, Locator as WireLocator, MapRegister, MapRequest, Message,
    Record,
};

const SITES: usize = 1000;
/// Database-mappings of the node's own xTR: each ECM is checked against all of them.
const OWN: usize = 16;
const KEY: &[u8] = b"bench-key";

fn site(s: usize) -> IpPrefix {
    IpPrefix::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, s as u16, 0, 0, 0, 0, 0)),
        48,
    )
    .unwrap()
}

fn host(s: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, s as u16, 0, 0, 0, 0, 1))
}

fn etr(s: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 1, s as u16)),
        4342,
    )
}

fn main() {
    let ms_addr: SocketAddr = "[2001:db8:ff::1]:4342".parse().unwrap();
    let cfg = MapServerConfig {
        sites: (0..SITES)
            .map(|s| SiteConfig {
                name: format!("s{s}"),
                key: KEY.to_vec(),
                algorithm: Algorithm::HmacSha256,
                prefixes: vec![SitePrefix {
                    eid: Eid::new(None, site(s)),
                    accept_more_specifics: false,
                }],
            })
            .collect(),
        ..MapServerConfig::default()
    };
    // The node's own EIDs: sites 60000.. (not asked for), so every ECM goes to the map-server
    // after the check.
    let xtr = XtrConfig {
        locators: vec![ms_addr.ip()],
        database_mappings: (0..OWN)
            .map(|i| DatabaseMapping {
                eid: EidPrefix::from_ip_prefix(0, site(60000 + i)),
                locators: vec![Locator {
                    addr: ms_addr.ip(),
                    priority: 1,
                    weight: 100,
                }],
            })
            .collect(),
        ..XtrConfig::default()
    };
    let registers: Vec<(SocketAddr, Vec<u8>)> = (0..SITES)
        .map(|s| {
            let mut rec = Record::new(Eid::new(None, site(s)), 1440);
            rec.locators.push(WireLocator::new(etr(s).ip(), 1, 100));
            let m = MapRegister {
                nonce: 1,
                auth: Auth::zeroed(Algorithm::HmacSha256),
                records: vec![rec],
                ..MapRegister::default()
            };
            let mut v = m.to_vec().unwrap();
            auth::sign(&mut v, KEY).unwrap();
            (etr(s), v)
        })
        .collect();
    let n = 100_000;
    let reqs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let s = i % SITES;
            let req = MapRequest {
                nonce: i as u64,
                source_eid: Address::ip(host((s + 1) % SITES)),
                itr_rlocs: vec![etr((s + 1) % SITES).ip()],
                eids: vec![Eid::new(None, IpPrefix::host(host(s)))],
                ..MapRequest::default()
            };
            Ecm::new(host((s + 1) % SITES), host(s), Message::MapRequest(req))
                .unwrap()
                .to_vec()
                .unwrap()
        })
        .collect();

    let mut ms = MapServer::new(cfg.clone());
    let mut node = Node::new(
        NodeConfig {
            xtr,
            map_server: Some(cfg),
            ..NodeConfig::default()
        },
        Timestamp::ZERO,
    );
    for (from, r) in &registers {
        ms.handle_datagram(*from, ms_addr, r, Timestamp::ZERO);
        node.handle(
            Timestamp::ZERO,
            Event::Datagram {
                from: *from,
                to: ms_addr,
                bytes: r.clone(),
            },
        );
    }
    let t = Timestamp::from_secs(1);
    let from = etr(1);
    let t0 = Instant::now();
    let mut out = 0;
    for q in &reqs {
        out += black_box(ms.handle_datagram(from, ms_addr, q, t)).len();
    }
    let direct = t0.elapsed().as_secs_f64();
    assert_eq!(out, n);
    let t0 = Instant::now();
    let mut out = 0;
    for q in &reqs {
        let ev = Event::Datagram {
            from,
            to: ms_addr,
            bytes: q.clone(),
        };
        out += black_box(node.handle(t, ev)).len();
    }
    let via_node = t0.elapsed().as_secs_f64();
    assert_eq!(out, n);
    println!(
        "ECM Map-Requests forwarded, {SITES} sites, node with {OWN} own database-mappings:\n  \
         MapServer::handle_datagram {:.2} µs each ({:.0}/s)\n  Node::handle               \
         {:.2} µs each ({:.0}/s)",
        direct * 1e6 / n as f64,
        n as f64 / direct,
        via_node * 1e6 / n as f64,
        n as f64 / via_node,
    );
}
