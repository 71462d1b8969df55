//! Every kind of control message the map-server and the xTR core emit, checked by an independent
//! decoder: a small in-memory LISP world (a map-server/resolver and three xTRs, no sockets, no
//! namespaces) exchanges real messages, each one is written to a pcap with Ethernet/IP/UDP built
//! here, and `tshark -r` must decode all of them with no malformed packet and no expert
//! warning, with the fields we expect. Map-Notify-Ack (type 5) is not written: tshark does not
//! know it (it is checked to exist, and parsed by our codec, instead).
//!
//! Needs `tshark` (scripts/install-deps.sh); `LISP_SKIP_TSHARK=1` skips when it is missing.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

#[path = "../lisp-common/tests/support/tshark.rs"]
mod tshark_support;

use lisp_agent::core::action::{Action, EidPrefix, Event};
use lisp_agent::core::map_cache::Locator as DbLocator;
use lisp_agent::core::map_server::{MapServer, MapServerConfig, SiteConfig, SitePrefix};
use lisp_agent::core::time::Timestamp;
use lisp_agent::core::xtr::{DatabaseMapping, MapServerPeer, Xtr, XtrConfig};
use lisp_common::wire::control::auth::Algorithm;
use lisp_common::wire::control::ecm::udp_checksum;
use lisp_common::wire::control::{
    Address, Ecm, Eid, IpPrefix, MapRequest, Message, XtrId, msg_type,
};
use tshark_support::{TempFile, ipv4_checksum, pcap, tshark, tshark_available};

const MS: &str = "192.0.2.1";
const XTR1: &str = "192.0.2.17";
const XTR2: &str = "192.0.2.33";
const XTR2_V6: &str = "2001:db8:ff:12::1";
const XTR3: &str = "192.0.2.18";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pfx(s: &str) -> EidPrefix {
    let (a, l) = s.split_once('/').unwrap();
    EidPrefix::new(0, ip(a), l.parse().unwrap())
}

fn eid(s: &str) -> Eid {
    let p = pfx(s);
    Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap())
}

fn ms_config() -> MapServerConfig {
    let site = |name: &str, key: &str, algorithm, prefixes: &[&str]| SiteConfig {
        name: name.into(),
        key: key.as_bytes().to_vec(),
        algorithm,
        prefixes: prefixes
            .iter()
            .map(|p| SitePrefix {
                eid: eid(p),
                accept_more_specifics: true,
            })
            .collect(),
    };
    MapServerConfig {
        sites: vec![
            // Both algorithms, so that tshark sees 32-byte and 20-byte authentication data.
            site(
                "site1",
                "site1-secret",
                Algorithm::HmacSha256,
                &["198.51.100.0/24", "2001:db8:1::/48"],
            ),
            site(
                "site2",
                "site2-secret",
                Algorithm::HmacSha1,
                &["203.0.113.0/24", "2001:db8:2::/48"],
            ),
        ],
        ..MapServerConfig::default()
    }
}

fn xtr_config(
    rlocs: &[&str],
    eids: &[&str],
    key: &str,
    algorithm: Algorithm,
    proxy_reply: bool,
    xtr_id: Option<XtrId>,
) -> XtrConfig {
    let locators: Vec<IpAddr> = rlocs.iter().map(|a| ip(a)).collect();
    XtrConfig {
        locators: locators.clone(),
        database_mappings: eids
            .iter()
            .map(|e| DatabaseMapping {
                eid: pfx(e),
                locators: locators
                    .iter()
                    .map(|a| DbLocator {
                        addr: *a,
                        priority: 1,
                        weight: 100,
                    })
                    .collect(),
            })
            .collect(),
        map_servers: vec![MapServerPeer {
            address: ip(MS),
            key: key.as_bytes().to_vec(),
            algorithm,
            proxy_reply,
        }],
        map_resolvers: vec![ip(MS)],
        xtr_id,
        nonce_seed: (locators.len() as u64 * 7919 + 1).into(),
        ..XtrConfig::default()
    }
}

enum Node {
    Ms(Box<MapServer>),
    Xtr(Box<Xtr>),
}

/// One datagram on the wire.
#[derive(Clone, Debug)]
struct Datagram {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

struct World {
    nodes: Vec<(Vec<IpAddr>, Node)>,
    now: Timestamp,
    queue: VecDeque<Datagram>,
    wire: Vec<Datagram>,
}

impl World {
    fn node_of(&self, a: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|(addrs, _)| addrs.contains(&a))
    }

    /// Actions of node `i` become datagrams (source: the pinned address, else the node's
    /// first address of the destination's family, port 4342).
    fn emit(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send { from, to, payload } = a {
                let addrs = &self.nodes[i].0;
                let src = from.unwrap_or_else(|| {
                    *addrs
                        .iter()
                        .find(|x| x.is_ipv4() == to.is_ipv4())
                        .unwrap_or(&addrs[0])
                });
                self.queue.push_back(Datagram {
                    src: SocketAddr::new(src, 4342),
                    dst: to,
                    payload,
                });
            }
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some(d) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1000, "message loop");
            self.wire.push(d.clone());
            let Some(i) = self.node_of(d.dst.ip()) else {
                continue;
            };
            let now = self.now;
            let acts = match &mut self.nodes[i].1 {
                Node::Ms(ms) => ms.handle_datagram(d.src, d.dst, &d.payload, now),
                Node::Xtr(x) => x.handle_datagram(now, d.src, d.dst, &d.payload),
            };
            self.emit(i, acts);
        }
    }

    fn event(&mut self, i: usize, ev: Event) {
        let now = self.now;
        let acts = match &mut self.nodes[i].1 {
            Node::Ms(ms) => ms.handle(&ev, now),
            Node::Xtr(x) => x.handle_event(now, ev),
        };
        self.emit(i, acts);
        self.run();
    }

    fn xtr(&mut self, i: usize) -> &mut Xtr {
        match &mut self.nodes[i].1 {
            Node::Xtr(x) => x,
            Node::Ms(_) => panic!("node {i} is the map-server"),
        }
    }
}

/// An ECM Map-Request with the RFC 9437 N and I bits (subscription), built by hand: the codec
/// does not model N; the UDP checksum is recomputed after setting it.
fn subscribe_request(nonce: u64) -> Vec<u8> {
    let req = MapRequest {
        nonce,
        source_eid: Address::ip(ip("203.0.113.10")),
        itr_rlocs: vec![ip(XTR2)],
        eids: vec![eid("198.51.100.10/32")],
        xtr: Some(XtrId {
            xtr_id: [0x22; 16],
            site_id: 2,
        }),
        ..MapRequest::default()
    };
    let src = ip("203.0.113.10");
    let dst = ip("198.51.100.10");
    let mut v = Ecm::new(src, dst, Message::MapRequest(req.clone()))
        .unwrap()
        .to_vec()
        .unwrap();
    let udp = 4 + 20;
    let rec = udp + 8 + 12 + req.source_eid.wire_len() + Address::ip(ip(XTR2)).wire_len();
    v[rec] |= 0x80;
    v[udp + 6..udp + 8].fill(0);
    let c = udp_checksum(src, dst, &v[udp..]);
    v[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    v
}

// ---- pcap ------------------------------------------------------------------------------

/// Ethernet + IPv4/IPv6 + UDP (with a real checksum) around a payload.
fn frame(d: &Datagram) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + d.payload.len());
    udp.extend(d.src.port().to_be_bytes());
    udp.extend(d.dst.port().to_be_bytes());
    udp.extend(((8 + d.payload.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(&d.payload);
    let c = udp_checksum(d.src.ip(), d.dst.ip(), &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (d.src.ip(), d.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            f.extend([0x08, 0x00]);
            let mut h = vec![0x45, 0];
            h.extend(((20 + udp.len()) as u16).to_be_bytes());
            h.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
            h.extend(s.octets());
            h.extend(t.octets());
            let c = ipv4_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(h);
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            f.extend([0x86, 0xdd]);
            f.extend([0x60, 0, 0, 0]);
            f.extend((udp.len() as u16).to_be_bytes());
            f.extend([17, 64]);
            f.extend(s.octets());
            f.extend(t.octets());
        }
        _ => panic!("mixed families in {d:?}"),
    }
    f.extend(udp);
    f
}

fn msg_kind(payload: &[u8]) -> String {
    match Message::parse(payload).expect("every emitted message parses") {
        Message::MapRequest(r) if r.smr => "Map-Request SMR".into(),
        Message::MapRequest(r) if r.probe => "Map-Request RLOC-probe".into(),
        Message::MapRequest(_) => "Map-Request".into(),
        Message::MapReply(r) if r.probe => "Map-Reply RLOC-probe".into(),
        Message::MapReply(r) if r.records.iter().any(|x| x.locators.is_empty()) => {
            "Map-Reply negative".into()
        }
        Message::MapReply(_) => "Map-Reply".into(),
        Message::MapRegister(r) if r.xtr.is_some() => "Map-Register xTR-ID".into(),
        Message::MapRegister(_) => "Map-Register".into(),
        Message::MapNotify(n) if n.xtr.is_some() => "Map-Notify xTR-ID".into(),
        Message::MapNotify(_) => "Map-Notify".into(),
        Message::MapNotifyAck(_) => "Map-Notify-Ack".into(),
        Message::Ecm(e) => match *e.message {
            Message::MapRequest(r) if r.smr_invoked => "ECM Map-Request SMR-invoked".into(),
            _ => "ECM Map-Request".into(),
        },
    }
}

#[test]
fn tshark_decodes_every_message_we_send() {
    if !tshark_available() {
        return;
    }

    let t0 = Timestamp::from_secs(1000);
    let xtr_id1 = XtrId {
        xtr_id: [0x11; 16],
        site_id: 1,
    };
    let mut w = World {
        nodes: vec![
            (
                vec![ip(MS)],
                Node::Ms(Box::new(MapServer::new(ms_config()))),
            ),
            (
                vec![ip(XTR1)],
                Node::Xtr(Box::new(Xtr::new(
                    xtr_config(
                        &[XTR1],
                        &["198.51.100.0/24"],
                        "site1-secret",
                        Algorithm::HmacSha256,
                        false,
                        Some(xtr_id1),
                    ),
                    t0,
                ))),
            ),
            (
                vec![ip(XTR2), ip(XTR2_V6)],
                Node::Xtr(Box::new(Xtr::new(
                    xtr_config(
                        &[XTR2, XTR2_V6],
                        &["203.0.113.0/24", "2001:db8:2::/48"],
                        "site2-secret",
                        Algorithm::HmacSha1,
                        true,
                        None,
                    ),
                    t0,
                ))),
            ),
        ],
        now: t0,
        queue: VecDeque::new(),
        wire: Vec::new(),
    };

    // Registration (Map-Register with and without xTR-ID, Map-Notify SHA-256 and SHA-1).
    w.event(1, Event::Timer);
    w.event(2, Event::Timer);
    // Resolution: proxy reply (site 2 set P), forward + ETR reply (site 1 did not), negative
    // replies for a non-LISP destination and for a configured but unregistered EID.
    let miss = |src: &str, dst: &str| Event::Miss {
        instance_id: 0,
        src: ip(src),
        dst: ip(dst),
    };
    w.event(1, miss("198.51.100.10", "203.0.113.10"));
    w.event(2, miss("203.0.113.10", "198.51.100.10"));
    w.event(1, miss("198.51.100.10", "192.0.2.200"));
    w.event(2, miss("2001:db8:2::10", "2001:db8:1::10"));
    // RLOC-probe to xTR 1 and its probe reply.
    let probe = MapRequest {
        probe: true,
        nonce: 0x5eed,
        source_eid: Address::NONE,
        itr_rlocs: vec![ip(XTR2)],
        eids: vec![eid("198.51.100.0/24")],
        ..MapRequest::default()
    };
    w.queue.push_back(Datagram {
        src: SocketAddr::new(ip(XTR2), 4342),
        dst: SocketAddr::new(ip(XTR1), 4342),
        payload: Message::MapRequest(probe).to_vec().unwrap(),
    });
    w.run();
    // SMR from xTR 1 to xTR 2, which re-resolves through the mapping system (SMR-invoked ECM).
    w.now = t0 + std::time::Duration::from_secs(5);
    let now = w.now;
    let acts = w.xtr(1).send_smr(now, pfx("198.51.100.0/24"), ip(XTR2));
    w.emit(1, acts);
    w.run();
    // A pubsub subscription from xTR 2, then the EID moves behind xTR 3: unsolicited Map-Notify
    // to the old RLOC and to the subscriber (with its xTR-ID), and their Map-Notify-Acks.
    w.queue.push_back(Datagram {
        src: SocketAddr::new(ip(XTR2), 4342),
        dst: SocketAddr::new(ip(MS), 4342),
        payload: subscribe_request(0x5000),
    });
    w.run();
    w.now = t0 + std::time::Duration::from_secs(10);
    let now = w.now;
    w.nodes.push((
        vec![ip(XTR3)],
        Node::Xtr(Box::new(Xtr::new(
            xtr_config(
                &[XTR3],
                &["198.51.100.0/24"],
                "site1-secret",
                Algorithm::HmacSha256,
                false,
                // Another Site-ID: another site, which takes the prefix over (with the same
                // Site-ID it would be a second ETR of site 1, merged with xTR 1).
                Some(XtrId {
                    xtr_id: [0x33; 16],
                    site_id: 3,
                }),
            ),
            now,
        ))),
    ));
    w.event(3, Event::Timer);
    // One retransmission of an unsolicited Map-Notify that was not acknowledged in time.
    w.now = now + std::time::Duration::from_secs(1);
    let acts = match &mut w.nodes[0].1 {
        Node::Ms(ms) => ms.on_timer(w.now),
        Node::Xtr(_) => unreachable!(),
    };
    w.emit(0, acts);
    w.run();

    // What went over the wire.
    let kinds: Vec<String> = w.wire.iter().map(|d| msg_kind(&d.payload)).collect();
    for k in [
        "Map-Register xTR-ID",
        "Map-Register",
        "Map-Notify",
        "Map-Notify xTR-ID",
        "ECM Map-Request",
        "ECM Map-Request SMR-invoked",
        "Map-Reply",
        "Map-Reply negative",
        "Map-Request RLOC-probe",
        "Map-Reply RLOC-probe",
        "Map-Request SMR",
        "Map-Notify-Ack",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    let ms_counters = match &w.nodes[0].1 {
        Node::Ms(ms) => ms.counters().clone(),
        Node::Xtr(_) => unreachable!(),
    };
    assert!(ms_counters.tx_map_reply_proxy > 0, "{ms_counters:?}");
    assert!(ms_counters.tx_ecm_forwarded > 0, "{ms_counters:?}");
    assert!(ms_counters.tx_map_reply_negative >= 2, "{ms_counters:?}");
    assert!(
        ms_counters.tx_map_notify_unsolicited >= 2,
        "{ms_counters:?}"
    );
    assert!(ms_counters.subscriptions_added == 1, "{ms_counters:?}");
    assert_eq!(ms_counters.rejected_total(), 0, "{ms_counters:?}");

    // Type 5 stays out of the pcap (tshark does not know it).
    let shown: Vec<&Datagram> = w
        .wire
        .iter()
        .filter(|d| Message::peek_type(&d.payload) != Ok(msg_type::MAP_NOTIFY_ACK))
        .collect();
    let frames: Vec<Vec<u8>> = shown.iter().map(|d| frame(d)).collect();
    let file = TempFile(
        std::env::temp_dir().join(format!("lisp-tshark-control-{}.pcap", std::process::id())),
    );
    std::fs::write(&file.0, pcap(&frames)).unwrap();

    // No malformed packet, no expert info of any severity.
    let bad = tshark(&file.0, &["-Y", "_ws.malformed || _ws.expert"]);
    assert!(bad.trim().is_empty(), "tshark complains:\n{bad}");
    // Every frame is LISP control, of the type and with the nonce we sent.
    let fields = tshark(
        &file.0,
        &[
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "frame.number",
            "-e",
            "lisp.type",
            "-e",
            "lisp.nonce",
            "-e",
            "lisp.records",
            "-e",
            "lisp.mapping.ttl",
            "-e",
            "lisp.mapping.loccnt",
            "-e",
            "lisp.xtrid",
        ],
    );
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), shown.len(), "{fields}");
    for (row, d) in rows.iter().zip(&shown) {
        let msg = Message::parse(&d.payload).unwrap();
        let types: Vec<u8> = row[1].split(',').map(|t| t.parse().unwrap()).collect();
        // An ECM shows as type 8 and then the inner Map-Request's type 1.
        assert_eq!(types[0], msg.msg_type(), "frame {row:?}");
        if let Message::Ecm(_) = msg {
            assert_eq!(types[1], msg_type::MAP_REQUEST, "frame {row:?}");
        }
        let nonce = row[2].split(',').next().unwrap();
        assert_eq!(
            u64::from_str_radix(nonce.trim_start_matches("0x"), 16).unwrap(),
            msg.nonce(),
            "frame {row:?}"
        );
        // Records, TTLs and locator counts as we encoded them.
        let records = match &msg {
            Message::MapReply(r) => Some(&r.records),
            Message::MapRegister(r) => Some(&r.records),
            Message::MapNotify(n) => Some(&n.records),
            _ => None,
        };
        if let Some(recs) = records {
            assert_eq!(
                row[3].split(',').next().unwrap(),
                recs.len().to_string(),
                "{row:?}"
            );
            let ttls: Vec<String> = recs.iter().map(|r| r.ttl.to_string()).collect();
            assert_eq!(row[4], ttls.join(","), "frame {row:?}");
            let locs: Vec<String> = recs.iter().map(|r| r.locators.len().to_string()).collect();
            assert_eq!(row[5], locs.join(","), "frame {row:?}");
        }
        let xtr = match &msg {
            Message::MapRegister(r) => r.xtr,
            Message::MapNotify(n) => n.xtr,
            _ => None,
        };
        assert_eq!(!row[6].is_empty(), xtr.is_some(), "frame {row:?}");
    }
    // The negative replies carry the prefixes the map-server chose.
    let neg = tshark(
        &file.0,
        &[
            "-Y",
            "lisp.type == 2 && lisp.mapping.loccnt == 0",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "lisp.mapping.eid.ipv4",
            "-e",
            "lisp.mapping.eid.ipv6",
            "-e",
            "lisp.mapping.eid.masklen",
            "-e",
            "lisp.mapping.ttl",
            "-e",
            "lisp.mapping.act",
        ],
    );
    assert!(neg.lines().any(|l| l == "192.0.0.0||6|15|1"), "{neg}");
    assert!(neg.lines().any(|l| l == "|2001:db8:1::10|128|1|1"), "{neg}");
    // Keep an eye on what was covered.
    let mut kinds_shown: Vec<String> = shown.iter().map(|d| msg_kind(&d.payload)).collect();
    kinds_shown.sort();
    kinds_shown.dedup();
    eprintln!("tshark decoded {} frames: {kinds_shown:?}", shown.len());
}
