//! Multi-node scenarios on the harness, and one recorded-events replay (holo style).

use std::net::SocketAddr;
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Algorithm, Auth};
use lisp_common::wire::control::{
    Action as RecordAction, Address, Ecm, Eid, Locator as WireLocator, MapNotify, MapRegister,
    MapReply, MapRequest, Message, Record, msg_type,
};

use super::build::{eid, ip, map_server, xtr};
use super::*;
use crate::core::map_cache::{Locator, Negative};
use crate::core::node::{NodeConfig, Notification};
use crate::core::xtr::RegistrationState;

const KEY: &[u8] = b"site-secret";
const MS1: &str = "192.0.2.1";
const MS2: &str = "192.0.2.2";
const A: &str = "192.0.2.11";
const B: &str = "192.0.2.12";
const C: &str = "192.0.2.13";
const SITES: &[&str] = &["198.51.100.0/22"];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn positive(rloc: &str) -> MapCacheData {
    MapCacheData::Positive(vec![Locator {
        addr: ip(rloc),
        priority: 1,
        weight: 100,
    }])
}

/// The node that is map-server and xTR at once (locator MS1, EIDs 198.51.100.0/24), also
/// reached at the `extra` addresses.
fn combined_node(sim: &mut Sim, extra: &[&str]) -> NodeId {
    sim.add_node(
        "ms+xtr",
        NodeConfig {
            xtr: xtr(MS1, &["198.51.100.0/24"], &[MS1], KEY),
            map_server: Some(map_server(KEY, SITES)),
            ..NodeConfig::default()
        },
        extra,
    )
}

/// A plain remote xTR (locator B, EIDs 198.51.101.0/24) registering with `map_server_addr`.
fn remote_xtr(sim: &mut Sim, map_server_addr: &str) -> NodeId {
    sim.add_node(
        "b",
        NodeConfig::xtr(xtr(B, &["198.51.101.0/24"], &[map_server_addr], KEY)),
        &[],
    )
}

fn msg_types(sent: &[Sent]) -> Vec<(NodeId, u8, SocketAddr)> {
    sent.iter()
        .map(|s| (s.from_node, s.payload[0] >> 4, s.to))
        .collect()
}

fn sa(ip: &str) -> SocketAddr {
    SocketAddr::new(super::build::ip(ip), CONTROL_PORT)
}

/// One map-server, xTRs A (198.51.100.0/24) and B (198.51.101.0/24) registered with it.
fn two_sites() -> (Sim, NodeId, NodeId, NodeId) {
    let mut sim = Sim::new(1);
    let ms = sim.add_node("ms", NodeConfig::map_server(map_server(KEY, SITES)), &[MS1]);
    let a = sim.add_node(
        "a",
        NodeConfig::xtr(xtr(A, &["198.51.100.0/24"], &[MS1], KEY)),
        &[],
    );
    let b = remote_xtr(&mut sim, MS1);
    (sim, ms, a, b)
}

#[test]
fn registration_with_map_notify_and_periodic_refresh() {
    let (mut sim, ms, a, b) = two_sites();
    assert!(sim.run_until_quiet(secs(1)));
    for x in [a, b] {
        let r = sim.node(x).xtr().registrations(sim.now());
        assert_eq!(r[0].state, RegistrationState::Registered, "{}", sim.name(x));
    }
    // One Map-Register each, one Map-Notify each: no retransmission, nothing else.
    let mut seen = msg_types(sim.trace());
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (ms, msg_type::MAP_NOTIFY, sa(A)),
            (ms, msg_type::MAP_NOTIFY, sa(B)),
            (a, msg_type::MAP_REGISTER, sa(MS1)),
            (b, msg_type::MAP_REGISTER, sa(MS1)),
        ]
    );
    // Refreshed every 60 s: at 0, 60 and 120 s.
    sim.run_until(Timestamp::from_secs(150));
    let registers = |sim: &Sim, x| {
        sim.messages_from(x)
            .iter()
            .filter(|(_, m)| matches!(m, Message::MapRegister(_)))
            .count()
    };
    assert_eq!(registers(&sim, a), 3);
    assert_eq!(registers(&sim, b), 3);
    assert_eq!(
        sim.node(a).xtr().registrations(sim.now())[0].state,
        RegistrationState::Registered
    );
    // Notified once, when the first Map-Notify arrived (Map-Register 1 ms out, Map-Notify back).
    assert_eq!(
        sim.notifications(a),
        [(
            Timestamp::from_millis(2),
            Notification::Registered {
                map_server: ip(MS1)
            }
        )]
    );
}

#[test]
fn first_packet_is_resolved_through_the_map_server_by_the_remote_etr() {
    let (mut sim, ms, a, b) = two_sites();
    sim.run_until_quiet(secs(1));
    let before = sim.trace().len();
    sim.miss(a, 0, "198.51.100.7", "198.51.101.9");
    assert!(sim.run_until_quiet(secs(1)));
    // ECM to the map-resolver, forwarded to B, B's authoritative Map-Reply to A.
    assert_eq!(
        msg_types(&sim.trace()[before..]),
        vec![
            (a, msg_type::ECM, sa(MS1)),
            (ms, msg_type::ECM, sa(B)),
            (b, msg_type::MAP_REPLY, sa(A)),
        ]
    );
    assert_eq!(
        sim.lookup(a, 0, "198.51.101.9"),
        Some((&eid("198.51.101.0/24"), &positive(B)))
    );
    assert_eq!(sim.map_cache(a).len(), 1);
    assert!(sim.map_cache(b).is_empty());
}

#[test]
fn data_packets_miss_then_reach_the_etr_that_holds_the_eid() {
    let (mut sim, _ms, a, b) = two_sites();
    sim.run_until_quiet(secs(1));
    assert_eq!(
        sim.send_data(a, 0, "198.51.100.7", "198.51.101.9"),
        DataOutcome::Miss
    );
    // A second packet while resolving: another miss event, no second Map-Request (1/s).
    assert_eq!(
        sim.send_data(a, 0, "198.51.100.7", "198.51.101.9"),
        DataOutcome::Miss
    );
    sim.run_until_quiet(secs(1));
    let ecms = sim
        .messages_from(a)
        .iter()
        .filter(|(_, m)| matches!(m, Message::Ecm(_)))
        .count();
    assert_eq!(ecms, 1);
    assert_eq!(
        sim.send_data(a, 0, "198.51.100.7", "198.51.101.9"),
        DataOutcome::Encapsulated {
            rloc: ip(B),
            etr: Some(b),
            owned: true
        }
    );
    // A stale entry towards B for an EID B does not hold: the case for an SMR.
    sim.install(a, eid("198.51.102.0/24"), positive(B));
    assert_eq!(
        sim.send_data(a, 0, "198.51.100.7", "198.51.102.1"),
        DataOutcome::Encapsulated {
            rloc: ip(B),
            etr: Some(b),
            owned: false
        }
    );
    sim.install(
        a,
        eid("198.51.103.0/24"),
        MapCacheData::Negative(Negative::Drop),
    );
    assert_eq!(
        sim.send_data(a, 0, "198.51.100.7", "198.51.103.1"),
        DataOutcome::Negative(Negative::Drop)
    );
}

#[test]
fn map_server_restart_is_recovered_by_the_next_refresh() {
    let (mut sim, ms, a, _b) = two_sites();
    sim.run_until_quiet(secs(1));
    sim.run_until(Timestamp::from_secs(10));
    sim.restart(ms);
    // Registrations are gone: B's EID is answered negatively (configured, not registered).
    sim.miss(a, 0, "198.51.100.7", "198.51.101.9");
    sim.run_until_quiet(secs(1));
    let (p, data) = sim.lookup(a, 0, "198.51.101.9").expect("negative entry");
    assert_eq!(
        (*p, data),
        (
            eid("198.51.101.9/32"),
            &MapCacheData::Negative(Negative::NativelyForward)
        )
    );
    // The periodic Map-Registers at 60 s restore the registrations; once the 1-minute negative
    // entry is gone, the next packet learns B's mapping.
    sim.run_until(Timestamp::from_secs(75));
    assert!(sim.lookup(a, 0, "198.51.101.9").is_none(), "negative TTL");
    sim.miss(a, 0, "198.51.100.7", "198.51.101.9");
    sim.run_until_quiet(secs(1));
    assert_eq!(
        sim.lookup(a, 0, "198.51.101.9"),
        Some((&eid("198.51.101.0/24"), &positive(B)))
    );
}

/// The map-servers ms1 (MS1) and ms2 (MS2), both serving SITES with KEY.
fn two_map_servers(sim: &mut Sim) -> (NodeId, NodeId) {
    let ms1 = sim.add_node(
        "ms1",
        NodeConfig::map_server(map_server(KEY, SITES)),
        &[MS1],
    );
    let ms2 = sim.add_node(
        "ms2",
        NodeConfig::map_server(map_server(KEY, SITES)),
        &[MS2],
    );
    (ms1, ms2)
}

#[test]
fn one_of_two_map_servers_lost() {
    let mut sim = Sim::new(2);
    let (ms1, _ms2) = two_map_servers(&mut sim);
    let a = sim.add_node(
        "a",
        NodeConfig::xtr(xtr(A, &["198.51.100.0/24"], &[MS1, MS2], KEY)),
        &[],
    );
    let _b = sim.add_node(
        "b",
        NodeConfig::xtr(xtr(B, &["198.51.101.0/24"], &[MS1, MS2], KEY)),
        &[],
    );
    sim.run_until_quiet(secs(1));
    sim.set_down(ms1, true);
    let t0 = sim.now();
    sim.miss(a, 0, "198.51.100.7", "198.51.101.9");
    // The first Map-Request goes to ms1 and is lost; the retransmission 1 s later goes to ms2.
    sim.run_until(t0 + Duration::from_millis(999));
    assert!(sim.lookup(a, 0, "198.51.101.9").is_none());
    sim.run_until(t0 + Duration::from_millis(1003));
    assert_eq!(
        sim.lookup(a, 0, "198.51.101.9"),
        Some((&eid("198.51.101.0/24"), &positive(B)))
    );
    // Registration with ms1 shows expired after three intervals without a Map-Notify, ms2 stays.
    sim.run_until(Timestamp::from_secs(200));
    let r = sim.node(a).xtr().registrations(sim.now());
    assert_eq!(r[0].state, RegistrationState::Expired);
    assert_eq!(r[1].state, RegistrationState::Registered);
    // ms1's last Map-Notify came at 2 ms; the expiry (more than three 60 s intervals without
    // one) is noticed at the first event after 180.002 s: the Map-Register retransmission to
    // ms1 at 183 s (sends at 60, 61, 63, 67, 75, 91, 123, 183 s: backoff doubling, capped at
    // the interval). ms2's Map-Notify at 180.002 s is exactly at the limit, not past it.
    let expired: Vec<_> = sim
        .notifications(a)
        .iter()
        .filter(|(_, n)| matches!(n, Notification::RegistrationExpired { .. }))
        .collect();
    assert_eq!(expired.len(), 1, "{:?}", sim.notifications(a));
    let (at, Notification::RegistrationExpired { map_server, .. }) = expired[0] else {
        unreachable!()
    };
    assert_eq!(*map_server, ip(MS1));
    assert_eq!(*at, Timestamp::from_secs(183));
}

/// §2 item 5: one node is map-server *and* xTR (its locator is the map-server address); a
/// remote xTR resolves the node's EIDs, and the node resolves the remote's, through itself.
#[test]
fn map_server_and_xtr_in_one_node_resolve_their_own_and_remote_eids() {
    let mut sim = Sim::new(3);
    let x = combined_node(&mut sim, &[]);
    let b = remote_xtr(&mut sim, MS1);
    assert!(sim.run_until_quiet(secs(1)));
    // The node registered with itself without a datagram through the network.
    assert_eq!(
        sim.node(x).xtr().registrations(sim.now())[0].state,
        RegistrationState::Registered
    );
    // Remote ITR → the node's own EID: answered by the node's ETR, from the address asked.
    sim.miss(b, 0, "198.51.101.9", "198.51.100.7");
    assert!(sim.run_until_quiet(secs(1)), "a loop between the roles");
    assert_eq!(
        sim.lookup(b, 0, "198.51.100.7"),
        Some((&eid("198.51.100.0/24"), &positive(MS1)))
    );
    // The node's ITR → the remote EID: its ECM goes to its own map-resolver inside the node,
    // which forwards it to B.
    sim.miss(x, 0, "198.51.100.7", "198.51.101.9");
    assert!(sim.run_until_quiet(secs(1)));
    assert_eq!(
        sim.lookup(x, 0, "198.51.101.9"),
        Some((&eid("198.51.101.0/24"), &positive(B)))
    );
    // Nothing the node sent was addressed to itself.
    let to_self: Vec<_> = sim
        .trace()
        .iter()
        .filter(|s| s.from_node == x && sim.node(x).is_local(s.to.ip()))
        .collect();
    assert!(to_self.is_empty(), "{to_self:?}");
    assert!(sim.node(x).counters().delivered_locally >= 2);
    assert_eq!(sim.node(x).counters().ecm_to_local_etr, 1);
    assert_eq!(sim.node(x).counters().local_loop_dropped, 0);
}

/// The node's map-server is also reached at a second address: ETRs registering there get their
/// Map-Notify from that address (and accept it), not from the node's locator.
#[test]
fn answers_leave_from_the_address_the_peer_used() {
    let mut sim = Sim::new(4);
    let x = combined_node(&mut sim, &["192.0.2.100"]);
    let b = remote_xtr(&mut sim, "192.0.2.100");
    sim.run_until_quiet(secs(1));
    assert_eq!(
        sim.node(b).xtr().registrations(sim.now())[0].state,
        RegistrationState::Registered
    );
    let notify = sim
        .trace()
        .iter()
        .find(|s| s.from_node == x && s.to == sa(B))
        .expect("Map-Notify to B");
    assert_eq!(notify.from, sa("192.0.2.100"));
}

#[test]
fn three_xtrs_two_map_servers_and_a_group_in_a_few_lines() {
    let mut sim = Sim::new(5);
    let (_ms1, _ms2) = two_map_servers(&mut sim);
    let xtrs: Vec<NodeId> = [A, B, C]
        .iter()
        .map(|r| {
            sim.add_node(
                r,
                NodeConfig::xtr(xtr(r, &["198.51.100.0/24"], &[MS1, MS2], KEY)),
                &[],
            )
        })
        .collect();
    for &x in &xtrs {
        sim.join("239.1.1.1", x);
    }
    sim.set_link(
        xtrs[0],
        xtrs[2],
        Link {
            delay: Duration::from_millis(20),
            loss: 0.0,
        },
    );
    sim.run_until_quiet(secs(1));
    for &x in &xtrs {
        let r = sim.node(x).xtr().registrations(sim.now());
        assert!(r.iter().all(|r| r.state == RegistrationState::Registered));
    }
    // A group datagram reaches the other two members, each over its own link.
    sim.send_as(xtrs[0], None, "239.1.1.1:4342", b"hello".to_vec());
    let sent = sim.trace().last().unwrap().clone();
    assert_eq!(sent.delivered_to, vec![xtrs[1], xtrs[2]]);
    sim.run_for(Duration::from_millis(19));
    let arrived = |sim: &Sim, x| {
        sim.node(x)
            .xtr()
            .counters()
            .rejected(crate::core::xtr::Reject::Malformed)
    };
    assert_eq!((arrived(&sim, xtrs[1]), arrived(&sim, xtrs[2])), (1, 0));
    sim.run_for(Duration::from_millis(1));
    assert_eq!(arrived(&sim, xtrs[2]), 1);
}

#[test]
fn loss_is_deterministic_and_exact_for_a_seed() {
    let run = |seed| {
        let (mut sim, ms, a, _b) = two_sites();
        sim.rng = NonceSource::new(seed);
        sim.set_link(
            ms,
            a,
            Link {
                delay: Duration::from_millis(5),
                loss: 0.5,
            },
        );
        sim.run_until(Timestamp::from_secs(600));
        sim.trace()
            .iter()
            .filter(|s| s.from_node == a)
            .map(|s| !s.delivered_to.is_empty())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
    let lost = run(9).iter().filter(|d| !**d).count();
    assert!(lost > 0 && lost < run(9).len());
}

// ------------------------------------------------------------------ recorded-events replay

/// A recorded exchange replayed against a map-server node: each input event and exactly the
/// actions it must produce (holo's conformance-test style). The inputs are wire bytes as a peer
/// sends them; the expected outputs are built independently with the codec.
#[test]
fn replay_registration_resolution_and_expiry() {
    const ETR: &str = "192.0.2.12";
    let etr = SocketAddr::new(ip(ETR), 4342);
    let ms = SocketAddr::new(ip(MS1), 4342);
    let itr = SocketAddr::new(ip("192.0.2.11"), 4342);
    let prefix: Eid = Eid::new(None, "198.51.101.0/24".parse().unwrap());

    let mut record = Record::new(prefix, 1440);
    let mut loc = WireLocator::new(ip(ETR), 1, 100);
    loc.local = true;
    record.locators = vec![loc];
    let register = MapRegister {
        nonce: 0x1000,
        want_map_notify: true,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![record.clone()],
        ..MapRegister::default()
    };
    let mut register_bytes = register.to_vec().unwrap();
    auth::sign(&mut register_bytes, KEY).unwrap();
    // The same Map-Register with one bit of its MAC flipped.
    let mut forged = register_bytes.clone();
    forged[20] ^= 1;

    // The Map-Notify: same nonce, the stored record (L bit cleared), signed with the site key.
    let mut stored = record.clone();
    stored.locators[0].local = false;
    let notify = MapNotify {
        nonce: 0x1000,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![stored],
        ..MapNotify::default()
    };
    let mut notify_bytes = notify.to_vec().unwrap();
    auth::sign(&mut notify_bytes, KEY).unwrap();

    let request = |nonce| {
        Ecm::new(
            ip("198.51.100.7"),
            ip("198.51.101.9"),
            Message::MapRequest(MapRequest {
                nonce,
                source_eid: Address::ip(ip("198.51.100.7")),
                itr_rlocs: vec![itr.ip()],
                eids: vec![Eid::new(None, "198.51.101.9/32".parse().unwrap())],
                ..MapRequest::default()
            }),
        )
        .unwrap()
        .to_vec()
        .unwrap()
    };
    let negative = MapReply {
        nonce: 0x2002,
        records: vec![Record::negative(
            Eid::new(None, "198.51.101.9/32".parse().unwrap()),
            1,
            RecordAction::NativelyForward,
        )],
        ..MapReply::default()
    }
    .to_vec()
    .unwrap();

    let datagram = |from, bytes: &Vec<u8>| Event::Datagram {
        from,
        to: ms,
        bytes: bytes.clone(),
    };
    let send = |to, payload: &Vec<u8>| Action::Send {
        from: Some(ms.ip()),
        to,
        payload: payload.clone(),
    };
    let step = |t, input, output| ReplayStep {
        at: Timestamp::from_secs(t),
        input,
        output,
    };
    let steps = [
        step(
            0,
            datagram(etr, &register_bytes),
            vec![send(etr, &notify_bytes)],
        ),
        // A forged Map-Register (bad MAC): nothing.
        step(1, datagram(etr, &forged), vec![]),
        // Registered without proxy-reply: the ECM is forwarded byte for byte to the ETR.
        step(
            2,
            datagram(itr, &request(0x2001)),
            vec![send(etr, &request(0x2001))],
        ),
        step(100, Event::Timer, vec![]),
        // 180 s after the Map-Register the registration is gone: a negative reply, 1 minute.
        step(181, Event::Timer, vec![]),
        step(
            182,
            datagram(itr, &request(0x2002)),
            vec![send(itr, &negative)],
        ),
    ];
    let mut node = Node::new(
        NodeConfig::map_server(map_server(KEY, SITES)),
        Timestamp::ZERO,
    );
    replay(&mut node, &steps);
}

/// A registration whose ETR is this node itself (a spoofed source, with the site key) for a
/// prefix the node's ETR does not own: the map-server keeps forwarding the ECM to itself. The
/// hand-overs are bounded: the loop ends, counted, and nothing leaves the node.
#[test]
fn a_registration_pointing_at_ourselves_cannot_loop() {
    let mut sim = Sim::new(6);
    let x = combined_node(&mut sim, &[]);
    let b = remote_xtr(&mut sim, MS1);
    sim.run_until_quiet(secs(1));
    let mut rec = Record::new(Eid::new(None, "198.51.102.0/24".parse().unwrap()), 1440);
    rec.locators = vec![WireLocator::new(ip(MS1), 1, 100)];
    let reg = MapRegister {
        nonce: 1,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![rec],
        ..MapRegister::default()
    };
    let mut bytes = reg.to_vec().unwrap();
    auth::sign(&mut bytes, KEY).unwrap();
    sim.inject(
        x,
        Event::Datagram {
            from: sa(MS1),
            to: sa(MS1),
            bytes,
        },
    );
    let before = sim.trace().len();
    sim.miss(b, 0, "198.51.101.9", "198.51.102.7");
    assert!(sim.run_until_quiet(secs(1)));
    assert_eq!(
        sim.node(x).counters().local_loop_dropped,
        1,
        "{:?}",
        sim.node(x).counters()
    );
    // Only B's ECM crossed the network.
    assert_eq!(
        msg_types(&sim.trace()[before..]),
        vec![(b, msg_type::ECM, sa(MS1))]
    );
}
