//! The mobility role under the simulation harness: several nodes, a virtual clock, the
//! map-notify-groups as multicast groups of the harness.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Algorithm, Auth};
use lisp_common::wire::control::{
    Eid, Locator as WireLocator, MapNotify, Message, Record, XtrId, msg_type,
};

use super::*;
use crate::core::action::{Action, CONTROL_PORT, Event};
use crate::core::map_cache::Locator;
use crate::core::node::{Node, NodeConfig, Notification};
use crate::core::sim::build::{eid, ip, map_server, xtr};
use crate::core::sim::{DataOutcome, NodeId, Sim};
use crate::core::xtr::{MAX_REGISTER_LEN, MapServerPeer};

const KEY: &[u8] = b"site-secret";
const MS: &str = "192.0.2.1";
const A1: &str = "192.0.2.11";
const A2: &str = "192.0.2.12";
const B: &str = "192.0.2.21";
const R: &str = "192.0.2.31";
const GROUP_A: &str = "239.1.1.1";
const GROUP_B: &str = "239.1.1.2";
const VLAN10: u32 = 10;
const VM: &str = "198.51.100.5";
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 5];
const INACTIVITY: Duration = Duration::from_secs(30);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn loc(a: &str) -> Locator {
    Locator {
        addr: ip(a),
        priority: 1,
        weight: 100,
    }
}

/// Dynamic-EID map "Roamer-1" (198.51.100.0/25 and 2001:db8:aa::/64 → `site_rlocs`) on vlan10
/// (ifindex 10), with the global map-server.
fn mobility(site_rlocs: &[&str], group: &str, mode: MobilityMode) -> MobilityConfig {
    let locators: Vec<Locator> = site_rlocs.iter().map(|r| loc(r)).collect();
    MobilityConfig {
        maps: vec![DynamicEidMapConfig {
            name: "Roamer-1".into(),
            instance_id: 0,
            prefixes: vec![
                DynamicPrefix {
                    eid: eid("198.51.100.0/25"),
                    locators: locators.clone(),
                },
                DynamicPrefix {
                    eid: eid("2001:db8:aa::/64"),
                    locators,
                },
            ],
            group: ip(group),
            map_servers: Vec::new(),
            inactivity: INACTIVITY,
        }],
        interfaces: vec![MobilityInterface {
            name: "vlan10".into(),
            map: 0,
            mode,
            trunk: None,
            ifindex: VLAN10,
        }],
        ..MobilityConfig::default()
    }
}

/// An xTR of the data centre whose locators are `site_rlocs`: its Site-ID is the last byte of
/// the first of them (the xTRs of one data centre share it, the map-server tells them apart).
fn vm_xtr(rloc: &str, site_rlocs: &[&str], group: &str, mode: MobilityMode) -> NodeConfig {
    let mut x = xtr(rloc, &[], &[MS], KEY);
    if let (Some(id), IpAddr::V4(first)) = (x.xtr_id.as_mut(), ip(site_rlocs[0])) {
        id.site_id = u64::from(first.octets()[3]);
    }
    NodeConfig {
        mobility: mobility(site_rlocs, group, mode),
        ..NodeConfig::xtr(x)
    }
}

struct Lab {
    sim: Sim,
    ms: NodeId,
    a1: NodeId,
    a2: NodeId,
    b: NodeId,
    r: NodeId,
}

/// A map-server; site A with two xTRs (a1, a2: multihomed, one group); site B with one xTR;
/// a remote ITR r (203.0.113.0/24). Extended-subnet mode: both sites share the group (the LAN
/// extension carries it); across-subnet mode: each site has its own.
fn lab(mode: MobilityMode) -> Lab {
    let mut sim = Sim::new(7);
    let ms = sim.add_node(
        "ms",
        NodeConfig::map_server(map_server(
            KEY,
            &["198.51.100.0/24", "2001:db8:aa::/48", "203.0.113.0/24"],
        )),
        &[MS],
    );
    let group_b = match mode {
        MobilityMode::ExtendedSubnet => GROUP_A,
        MobilityMode::AcrossSubnet => GROUP_B,
    };
    let a1 = sim.add_node("a1", vm_xtr(A1, &[A1, A2], GROUP_A, mode), &[]);
    let a2 = sim.add_node("a2", vm_xtr(A2, &[A1, A2], GROUP_A, mode), &[]);
    let b = sim.add_node("b", vm_xtr(B, &[B], group_b, mode), &[]);
    let r = sim.add_node(
        "r",
        NodeConfig::xtr(xtr(R, &["203.0.113.0/24"], &[MS], KEY)),
        &[],
    );
    sim.join(GROUP_A, a1);
    sim.join(GROUP_A, a2);
    sim.join(group_b, b);
    sim.run_for(secs(2));
    Lab {
        sim,
        ms,
        a1,
        a2,
        b,
        r,
    }
}

fn detected(eid: &str) -> Event {
    Event::DynamicEidDetected {
        ifindex: VLAN10,
        vlan: None,
        instance_id: 0,
        eid: ip(eid),
        mac: MAC,
        kind: DetectionKind::Data,
    }
}

fn origin(sim: &Sim, n: NodeId, e: &str) -> Option<Origin> {
    sim.node(n)
        .mobility()
        .dynamic_eid(0, ip(e))
        .map(|v| v.origin)
}

/// The RLOCs the map-server holds for the host `e`.
fn registered_at(sim: &Sim, ms: NodeId, e: &str) -> Vec<IpAddr> {
    let p: lisp_common::prefix::IpPrefix =
        format!("{e}/{}", if e.contains(':') { 128 } else { 32 })
            .parse()
            .unwrap();
    sim.node(ms)
        .map_server()
        .unwrap()
        .registration(&Eid::new(None, p), sim.now())
        .map(|r| r.record.locators.iter().map(|l| l.address).collect())
        .unwrap_or_default()
}

/// Map-Registers sent by `n` whose records include the host `e`, with the record TTL.
fn registers_of(sim: &Sim, n: NodeId, e: &str) -> Vec<u32> {
    sim.messages_from(n)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::MapRegister(r) => Some(r),
            _ => None,
        })
        .flat_map(|r| r.records)
        .filter(|rec| rec.eid.prefix.addr() == ip(e) && rec.eid.prefix.is_host())
        .map(|rec| rec.ttl)
        .collect()
}

#[test]
fn detection_puts_the_map_register_on_the_wire_in_the_same_handle_call() {
    let mut n = Node::new(
        vm_xtr(A1, &[A1, A2], GROUP_A, MobilityMode::AcrossSubnet),
        Timestamp::ZERO,
    );
    n.handle(Timestamp::ZERO, Event::Timer);
    let now = Timestamp::from_secs(5);
    let out = n.handle(now, detected(VM));
    let host = |a: &Action| match a {
        Action::Send { to, payload, .. } => {
            let Ok(Message::MapRegister(r)) = Message::parse(payload) else {
                return false;
            };
            *to == SocketAddr::new(ip(MS), CONTROL_PORT)
                && r.records.len() == 1
                && r.records[0].eid.prefix.to_string() == "198.51.100.5/32"
                && r.records[0]
                    .locators
                    .iter()
                    .map(|l| l.address)
                    .collect::<Vec<_>>()
                    == vec![ip(A1), ip(A2)]
                && auth::verify(payload, KEY).is_ok()
        }
        _ => false,
    };
    assert_eq!(out.iter().filter(|a| host(a)).count(), 1, "{out:?}");
    assert!(out.contains(&Action::AddLocalDynamicEid {
        instance_id: 0,
        eid: ip(VM),
        ifindex: VLAN10,
        vlan: None
    }));
    assert!(out.contains(&Action::AddHostRoute {
        instance_id: 0,
        eid: ip(VM),
        ifindex: VLAN10
    }));
    let group: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendMulticast {
                group,
                ifindex,
                from,
                payload,
            } => Some((*group, *ifindex, *from, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(group.len(), 1);
    let (g, ifx, from, payload) = &group[0];
    assert_eq!((*g, *ifx, *from), (ip(GROUP_A), VLAN10, Some(ip(A1))));
    let Ok(Message::MapNotify(notify)) = Message::parse(payload) else {
        panic!("not a Map-Notify")
    };
    assert_eq!(payload[0] >> 4, msg_type::MAP_NOTIFY);
    assert!(auth::verify(payload, KEY).is_ok());
    assert!(notify.xtr.is_some());
    assert_eq!(notify.records[0].ttl, n.xtr().config().record_ttl_min);
    assert_eq!(
        n.poll_notification(),
        Some(Notification::Mobility(MobilityNotification::Detected {
            eid: ip(VM),
            interface: "vlan10".into(),
            map: "Roamer-1".into(),
            kind: DetectionKind::Data,
        }))
    );
    assert_eq!(
        MobilityNotification::Detected {
            eid: ip(VM),
            interface: "vlan10".into(),
            map: "Roamer-1".into(),
            kind: DetectionKind::GratuitousArp,
        }
        .to_string(),
        "dynamic-eid 198.51.100.5 detected on vlan10 (Roamer-1, gratuitous-arp)"
    );
    // The same EID again on the same interface: the data plane is told again, nothing else.
    let again = n.handle(now, detected(VM));
    assert_eq!(
        again,
        vec![Action::AddLocalDynamicEid {
            instance_id: 0,
            eid: ip(VM),
            ifindex: VLAN10,
            vlan: None
        }]
    );
    assert_eq!(n.mobility().counters().detected, 1);
    assert_eq!(n.mobility().counters().redetected, 1);
}

#[test]
fn detections_outside_the_dynamic_prefixes_or_interfaces_are_refused() {
    let mut n = Node::new(
        vm_xtr(A1, &[A1], GROUP_A, MobilityMode::AcrossSubnet),
        Timestamp::ZERO,
    );
    assert!(
        n.handle(Timestamp::ZERO, detected("198.51.100.200"))
            .is_empty()
    );
    let mut other_if = detected(VM);
    if let Event::DynamicEidDetected { ifindex, .. } = &mut other_if {
        *ifindex = 99;
    }
    assert!(n.handle(Timestamp::ZERO, other_if).is_empty());
    let mut tagged = detected(VM);
    if let Event::DynamicEidDetected { vlan, .. } = &mut tagged {
        *vlan = Some(10);
    }
    assert!(n.handle(Timestamp::ZERO, tagged).is_empty());
    let c = n.mobility().counters();
    assert_eq!(c.refused(Refused::OutsidePrefix), 1);
    assert_eq!(c.refused(Refused::UnknownInterface), 2);
    assert_eq!(c.detected, 0);
    assert_eq!(n.mobility().table_sizes(), (0, 0));
}

#[test]
fn trunk_detection_selects_the_svi_by_vlan_and_routes_via_the_svi() {
    let mut cfg = vm_xtr(A1, &[A1], GROUP_A, MobilityMode::ExtendedSubnet);
    cfg.mobility.interfaces[0].trunk = Some(Trunk {
        parent: "eth1".into(),
        vlan_id: 10,
        parent_ifindex: 3,
    });
    let mut n = Node::new(cfg, Timestamp::ZERO);
    let ev = Event::DynamicEidDetected {
        ifindex: 3,
        vlan: Some(10),
        instance_id: 0,
        eid: ip(VM),
        mac: MAC,
        kind: DetectionKind::Rarp,
    };
    let out = n.handle(Timestamp::ZERO, ev);
    assert!(out.contains(&Action::AddLocalDynamicEid {
        instance_id: 0,
        eid: ip(VM),
        ifindex: 3,
        vlan: Some(10)
    }));
    assert!(out.contains(&Action::AddHostRoute {
        instance_id: 0,
        eid: ip(VM),
        ifindex: VLAN10
    }));
}

#[test]
fn group_notify_makes_the_multihomed_peer_learn_and_register_too() {
    let mut l = lab(MobilityMode::AcrossSubnet);
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(origin(&l.sim, l.a2, VM), Some(Origin::Site));
    // a2: entry, route, and its own Map-Register of the host.
    assert_eq!(
        l.sim.local_eids(l.a2).get(&(0, ip(VM))),
        Some(&(VLAN10, None))
    );
    assert_eq!(l.sim.host_routes(l.a2).get(&(0, ip(VM))), Some(&VLAN10));
    assert_eq!(registers_of(&l.sim, l.a2, VM).len(), 1);
    assert_eq!(l.sim.node(l.a2).mobility().counters().learned_from_site, 1);
    assert_eq!(
        l.sim.node(l.a2).mobility().counters().group_notify_received,
        1
    );
    // Site B is on another group in this mode: it heard nothing.
    assert_eq!(origin(&l.sim, l.b, VM), None);
    assert_eq!(registered_at(&l.sim, l.ms, VM), vec![ip(A1), ip(A2)]);
    assert!(l.sim.notifications(l.a2).iter().any(|(_, n)| {
        n == &Notification::Mobility(MobilityNotification::LearnedFromSite {
            eid: ip(VM),
            from: ip(A1),
        })
    }));
    // Both keep registering it with the periodic rounds (register interval 60 s).
    l.sim.run_for(secs(61));
    assert_eq!(registers_of(&l.sim, l.a1, VM).len(), 2);
    assert_eq!(registers_of(&l.sim, l.a2, VM).len(), 2);
}

/// The VM moves from site A (a1) to site B and back; in either mode the old router ends with
/// no entry and no route, an away map-cache entry to the new RLOC, and the map-server maps the
/// host to the new site.
fn move_between_sites(mode: MobilityMode) {
    let mut l = lab(mode);
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    assert_eq!(registered_at(&l.sim, l.ms, VM), vec![ip(A1), ip(A2)]);

    // The VM's first packet at site B.
    l.sim.inject(l.b, detected(VM));
    l.sim.run_for(secs(2));
    assert_eq!(registered_at(&l.sim, l.ms, VM), vec![ip(B)]);
    assert_eq!(origin(&l.sim, l.b, VM), Some(Origin::Local));
    for old in [l.a1, l.a2] {
        assert_eq!(
            origin(&l.sim, old, VM),
            Some(Origin::Away),
            "{}",
            l.sim.name(old)
        );
        assert!(l.sim.local_eids(old).is_empty());
        assert!(l.sim.host_routes(old).is_empty());
        assert_eq!(
            l.sim.lookup(old, 0, VM).map(|(p, d)| (p.len, d.clone())),
            Some((32, MapCacheData::Positive(vec![loc(B)])))
        );
        assert_eq!(l.sim.node(old).mobility().counters().moved_away, 1);
        // Not deregistered: a TTL 0 racing site B's registration would withdraw it at a
        // map-server that keeps one registration per prefix (see the module doc).
        assert!(!registers_of(&l.sim, old, VM).contains(&0));
        assert!(
            !l.sim
                .node(old)
                .xtr()
                .is_dynamic(&EidPrefix::host(0, ip(VM)))
        );
    }
    assert!(l.sim.notifications(l.a1).iter().any(|(_, n)| {
        n == &Notification::Mobility(MobilityNotification::MovedAway {
            eid: ip(VM),
            rlocs: vec![ip(B)],
        })
    }));

    // And back to a1.
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(2));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(origin(&l.sim, l.b, VM), Some(Origin::Away));
    assert!(l.sim.lookup(l.a1, 0, VM).is_none(), "away entry removed");
    assert_eq!(l.sim.host_routes(l.a1).get(&(0, ip(VM))), Some(&VLAN10));
    assert!(l.sim.local_eids(l.b).is_empty());
    assert_eq!(
        l.sim.lookup(l.b, 0, VM).map(|(_, d)| d.clone()),
        Some(MapCacheData::Positive(vec![loc(A1), loc(A2)]))
    );
    assert_eq!(registered_at(&l.sim, l.ms, VM), vec![ip(A1), ip(A2)]);
    let _ = l.r;
}

#[test]
fn move_between_sites_extended_subnet_mode() {
    move_between_sites(MobilityMode::ExtendedSubnet);
}

#[test]
fn move_between_sites_across_subnet_mode() {
    move_between_sites(MobilityMode::AcrossSubnet);
}

#[test]
fn ipv6_dynamic_eids_move_too() {
    let mut l = lab(MobilityMode::ExtendedSubnet);
    let vm6 = "2001:db8:aa::5";
    l.sim.inject(l.a1, detected(vm6));
    l.sim.run_for(secs(1));
    assert_eq!(registered_at(&l.sim, l.ms, vm6), vec![ip(A1), ip(A2)]);
    assert_eq!(origin(&l.sim, l.a2, vm6), Some(Origin::Site));
    l.sim.inject(l.b, detected(vm6));
    l.sim.run_for(secs(2));
    assert_eq!(registered_at(&l.sim, l.ms, vm6), vec![ip(B)]);
    assert_eq!(origin(&l.sim, l.a1, vm6), Some(Origin::Away));
    assert_eq!(l.sim.lookup(l.a1, 0, vm6).map(|(p, _)| p.len), Some(128));
}

#[test]
fn inactivity_deregisters_and_activity_keeps_alive() {
    let mut l = lab(MobilityMode::AcrossSubnet);
    l.sim.inject(l.a1, detected(VM));
    l.sim.inject(l.a1, detected("198.51.100.6"));
    // .5 keeps sending (reported every second), .6 is silent.
    for _ in 0..40 {
        l.sim.run_for(secs(1));
        l.sim.inject(
            l.a1,
            Event::DynamicEidActivity {
                seen: vec![(0, ip(VM))],
            },
        );
    }
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(origin(&l.sim, l.a1, "198.51.100.6"), None);
    assert_eq!(registers_of(&l.sim, l.a1, "198.51.100.6").last(), Some(&0));
    assert!(
        !l.sim
            .local_eids(l.a1)
            .contains_key(&(0, ip("198.51.100.6")))
    );
    assert!(
        !l.sim
            .host_routes(l.a1)
            .contains_key(&(0, ip("198.51.100.6")))
    );
    assert!(l.sim.local_eids(l.a1).contains_key(&(0, ip(VM))));
    assert_eq!(
        registered_at(&l.sim, l.ms, "198.51.100.6"),
        Vec::<IpAddr>::new()
    );
    assert_eq!(l.sim.node(l.a1).mobility().counters().expired, 1);
    let expired: Vec<_> = l
        .sim
        .notifications(l.a1)
        .iter()
        .filter_map(|(t, n)| match n {
            Notification::Mobility(m @ MobilityNotification::Expired { .. }) => Some((*t, m)),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0].1.to_string(),
        "dynamic-eid 198.51.100.6 expired (inactive 30s), deregistered"
    );
    // a2 learnt both from the group; it sees no traffic of either and lets both go.
    assert_eq!(origin(&l.sim, l.a2, "198.51.100.6"), None);
}

/// A group Map-Notify as another xTR would send it.
fn group_notify(key: &[u8], host: &str, rlocs: &[&str], xtr: bool) -> Vec<u8> {
    group_notify_n(key, host, rlocs, xtr, 77)
}

fn group_notify_n(key: &[u8], host: &str, rlocs: &[&str], xtr: bool, nonce: u64) -> Vec<u8> {
    let mut rec = Record::new(Eid::new(None, format!("{host}/32").parse().unwrap()), 1440);
    rec.locators = rlocs
        .iter()
        .map(|r| WireLocator::new(ip(r), 1, 100))
        .collect();
    let n = MapNotify {
        nonce,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![rec],
        xtr: xtr.then_some(XtrId {
            xtr_id: [9; 16],
            site_id: 0,
        }),
        ..MapNotify::default()
    };
    auth::emit_signed(&Message::MapNotify(n), key).unwrap()
}

#[test]
fn bad_group_input_is_refused_and_counted() {
    let mut l = lab(MobilityMode::ExtendedSubnet);
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    let before: Vec<_> = l.sim.local_eids(l.a1).clone().into_iter().collect();
    let g = |from: &str, ifindex: u32, bytes: Vec<u8>| Event::GroupDatagram {
        ifindex,
        from: SocketAddr::new(ip(from), CONTROL_PORT),
        group: ip(GROUP_A),
        bytes,
    };
    // Each of these would move the VM away to B if it were accepted.
    let good = group_notify(KEY, VM, &[B], true);
    let mut cut = good.clone();
    cut.truncate(20);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    l.sim.inject(l.a1, g(B, VLAN10, vec![0xff; 3]));
    l.sim.inject(l.a1, g(B, VLAN10, cut));
    l.sim
        .inject(l.a1, g(B, VLAN10, group_notify(KEY, VM, &[B], false)));
    l.sim
        .inject(l.a1, g(B, VLAN10, group_notify(b"wrong", VM, &[B], true)));
    l.sim.inject(l.a1, g(B, VLAN10, flipped));
    // From an address that is not a locator of the record, or on a non-mobility interface.
    l.sim.inject(l.a1, g("192.0.2.99", VLAN10, good.clone()));
    l.sim.inject(l.a1, g(B, 99, good.clone()));
    // A record outside the dynamic prefixes.
    l.sim.inject(
        l.a1,
        g(
            B,
            VLAN10,
            group_notify_n(KEY, "198.51.100.200", &[B], true, 70),
        ),
    );
    let c = l.sim.node(l.a1).mobility().counters().clone();
    assert_eq!(c.refused(Refused::Malformed), 3);
    assert_eq!(c.refused(Refused::Unauthenticated), 2);
    assert_eq!(c.refused(Refused::OutsideSite), 2);
    assert_eq!(c.refused(Refused::OutsidePrefix), 1);
    assert_eq!(c.moved_away, 0);
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(
        l.sim
            .local_eids(l.a1)
            .clone()
            .into_iter()
            .collect::<Vec<_>>(),
        before
    );
    assert_eq!(origin(&l.sim, l.a1, "198.51.100.200"), None);
    // The good one moves it.
    l.sim.inject(l.a1, g(B, VLAN10, good.clone()));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Away));
    // The VM comes back; a recording of that notify played again must not move it away.
    l.sim.inject(l.a1, detected(VM));
    l.sim.inject(l.a1, g(B, VLAN10, good));
    l.sim
        .inject(l.a1, g(B, VLAN10, group_notify_n(KEY, VM, &[B], true, 76)));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(
        l.sim
            .node(l.a1)
            .mobility()
            .counters()
            .refused(Refused::Replayed),
        2
    );
    // A newer one from that xTR is taken.
    l.sim
        .inject(l.a1, g(B, VLAN10, group_notify_n(KEY, VM, &[B], true, 78)));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Away));
}

#[test]
fn flapping_host_keeps_the_state_consistent() {
    let mut l = lab(MobilityMode::ExtendedSubnet);
    // Every 100 ms the VM shows up at the other site, for 5 minutes: each move queues an
    // expiry check (a day ahead for an away entry), so the queue would outgrow its bound
    // without compaction.
    const MOVES: u64 = 3000;
    for i in 0..MOVES {
        let at = if i % 2 == 0 { l.a1 } else { l.b };
        l.sim.inject(at, detected(VM));
        l.sim.run_for(Duration::from_millis(100));
    }
    l.sim.run_for(secs(5));
    // The last detection was at b.
    assert_eq!(origin(&l.sim, l.b, VM), Some(Origin::Local));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Away));
    assert_eq!(origin(&l.sim, l.a2, VM), Some(Origin::Away));
    assert_eq!(registered_at(&l.sim, l.ms, VM), vec![ip(B)]);
    assert!(l.sim.local_eids(l.a1).is_empty());
    assert!(l.sim.host_routes(l.a1).is_empty());
    assert_eq!(l.sim.local_eids(l.b).len(), 1);
    for n in [l.a1, l.a2, l.b] {
        let (eids, due) = l.sim.node(n).mobility().table_sizes();
        assert_eq!(eids, 1, "{}", l.sim.name(n));
        assert!(due <= 2 + EXPIRE_BATCH, "{}: {due}", l.sim.name(n));
    }
    let c = l.sim.node(l.a1).mobility().counters();
    assert_eq!(c.detected, MOVES / 2);
    assert_eq!(c.moved_away, MOVES / 2);
}

#[test]
fn a_full_table_refuses_new_eids_and_counts() {
    let mut cfg = vm_xtr(A1, &[A1], GROUP_A, MobilityMode::AcrossSubnet);
    cfg.mobility.max_eids = 3;
    let mut n = Node::new(cfg, Timestamp::ZERO);
    for i in 1..=5 {
        n.handle(Timestamp::ZERO, detected(&format!("198.51.100.{i}")));
    }
    assert_eq!(n.mobility().table_sizes().0, 3);
    assert_eq!(n.mobility().counters().refused(Refused::TableFull), 2);
    assert_eq!(n.xtr().dynamic_count(), 3);
}

#[test]
fn a_maps_own_map_server_gets_its_hosts_and_signs_the_group_notify() {
    let mut cfg = vm_xtr(A1, &[A1], GROUP_A, MobilityMode::AcrossSubnet);
    cfg.mobility.maps[0].map_servers = vec![MapServerPeer {
        address: ip("192.0.2.2"),
        key: b"own".to_vec(),
        algorithm: Algorithm::HmacSha256,
        proxy_reply: true,
    }];
    let mut n = Node::new(cfg, Timestamp::ZERO);
    let first = n.handle(Timestamp::ZERO, Event::Timer);
    // The global map-server's round carries no dynamic host and the map's one has nothing yet.
    assert_eq!(first.len(), 1);
    let out = n.handle(Timestamp::from_secs(1), detected(VM));
    let sends: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, payload, .. } => Some((to.ip(), payload.clone())),
            Action::SendMulticast { payload, .. } => Some((ip(GROUP_A), payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 2, "{out:?}");
    assert_eq!(sends[0].0, ip("192.0.2.2"));
    let Ok(Message::MapRegister(r)) = Message::parse(&sends[0].1) else {
        panic!()
    };
    assert!(r.proxy_reply);
    assert!(auth::verify(&sends[0].1, b"own").is_ok());
    assert!(auth::verify(&sends[1].1, b"own").is_ok());
}

#[test]
fn ten_thousand_dynamic_eids_move_at_once() {
    const N: u32 = 10_000;
    let mut l = lab(MobilityMode::ExtendedSubnet);
    // 10k hosts in 10.0.0.0/18 style: the /25 holds only 128, so the map gets a /16.
    for n in [l.a1, l.a2, l.b] {
        let _ = n;
    }
    let hosts: Vec<IpAddr> = (0..N)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0xc633_0000u32 + i)))
        .collect();
    let big = |site: &[&str], rloc: &str, group: &str| {
        let mut c = vm_xtr(rloc, site, group, MobilityMode::ExtendedSubnet);
        c.mobility.maps[0].prefixes[0].eid = eid("198.51.0.0/16");
        // No activity reports in this test: nothing expires meanwhile.
        c.mobility.maps[0].inactivity = secs(3600);
        c
    };
    let mut sim = Sim::new(3);
    let ms = sim.add_node(
        "ms",
        NodeConfig::map_server(map_server(KEY, &["198.51.0.0/16", "203.0.113.0/24"])),
        &[MS],
    );
    let a = sim.add_node("a", big(&[A1], A1, GROUP_A), &[]);
    let b = sim.add_node("b", big(&[B], B, GROUP_A), &[]);
    // A remote ITR subscribed to what it resolves (pubsub): it must follow every host.
    let mut rc = xtr(R, &["203.0.113.0/24"], &[MS], KEY);
    rc.subscribe = true;
    let r = sim.add_node("r", NodeConfig::xtr(rc), &[]);
    sim.join(GROUP_A, a);
    sim.join(GROUP_A, b);
    sim.run_for(secs(2));
    l.sim = sim;
    for h in &hosts {
        l.sim.inject(a, detected(&h.to_string()));
    }
    l.sim.run_for(secs(5));
    // The ITR resolves every host (in chunks its pending table takes).
    for chunk in hosts.chunks(2000) {
        for h in chunk {
            l.sim.send_data(r, 0, "203.0.113.1", &h.to_string());
        }
        l.sim.run_for(secs(1));
    }
    // Exact /32 entries (a longest-match scan per host would be quadratic here).
    let entries = |sim: &Sim, rloc: &str| {
        let want = MapCacheData::Positive(vec![loc(rloc)]);
        hosts
            .iter()
            .filter(|h| sim.map_cache(r).get(&EidPrefix::host(0, **h)) == Some(&want))
            .count()
    };
    assert_eq!(entries(&l.sim, A1), N as usize);
    assert_eq!(
        l.sim.node(b).mobility().table_sizes().0,
        0,
        "b learnt nothing: other site"
    );
    let at = |sim: &Sim, h: &IpAddr| registered_at(sim, ms, &h.to_string());
    assert!(hosts.iter().all(|h| at(&l.sim, h) == vec![ip(A1)]));

    // The periodic round batches: every Map-Register within 1400 bytes, all hosts in it.
    let t0 = l.sim.trace().len();
    l.sim.run_for(secs(60));
    let round: Vec<_> = l.sim.trace()[t0..]
        .iter()
        .filter(|s| s.from_node == a && s.payload[0] >> 4 == msg_type::MAP_REGISTER)
        .collect();
    assert!(round.iter().all(|s| s.payload.len() <= MAX_REGISTER_LEN));
    let records: usize = round
        .iter()
        .map(|s| match s.message() {
            Some(Message::MapRegister(r)) => r.records.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(records, N as usize);
    let sizes: Vec<(u64, usize)> = round
        .iter()
        .take(5)
        .map(|s| (s.at.as_millis(), s.payload.len()))
        .collect();
    assert!(
        round.len() < N as usize / 20,
        "{} Map-Registers {sizes:?}",
        round.len()
    );

    // All move to b at once.
    for h in &hosts {
        l.sim.inject(b, detected(&h.to_string()));
    }
    l.sim.run_for(secs(5));
    assert!(hosts.iter().all(|h| at(&l.sim, h) == vec![ip(B)]));
    // Every host's publication reached the ITR.
    assert_eq!(entries(&l.sim, B), N as usize);
    assert_eq!(
        l.sim.node(a).mobility().counts(),
        [("local", 0), ("site", 0), ("away", N as usize)]
    );
    assert_eq!(
        l.sim.node(b).mobility().counts(),
        [("local", N as usize), ("site", 0), ("away", 0)]
    );
    assert!(l.sim.local_eids(a).is_empty());
    assert_eq!(l.sim.map_cache(a).len(), N as usize);
    let (eids, due) = l.sim.node(a).mobility().table_sizes();
    assert_eq!(eids, N as usize);
    assert!(due <= 2 * N as usize + EXPIRE_BATCH);
    assert_eq!(l.sim.node(a).xtr().dynamic_count(), 0);
}

/// The remote ITR's map-cache entry for the VM: (prefix length, locators).
fn itr_entry(sim: &Sim, r: NodeId, e: &str) -> Option<(u8, Vec<IpAddr>)> {
    sim.lookup(r, 0, e).map(|(p, d)| match d {
        MapCacheData::Positive(l) => (p.len, l.iter().map(|l| l.addr).collect()),
        MapCacheData::Negative(_) => (p.len, Vec::new()),
    })
}

/// The remote ITR streams to the VM at site A, the VM moves to B: the old router (away entry)
/// answers the ITR's next packet with an SMR, rate-limited, and the ITR re-resolves to the
/// /32 at B through the mapping system.
fn remote_itr_follows_the_move(mode: MobilityMode) {
    let mut l = lab(mode);
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    assert_eq!(
        l.sim.send_data(l.r, 0, "203.0.113.1", VM),
        DataOutcome::Miss
    );
    l.sim.run_for(secs(1));
    // Answered by the ETR that holds the host, with the /32 (not the /25 around it).
    assert_eq!(itr_entry(&l.sim, l.r, VM), Some((32, vec![ip(A1), ip(A2)])));

    l.sim.inject(l.b, detected(VM));
    l.sim.run_for(secs(1));
    // The stale entry still sends to a1, which no longer holds the host.
    let out = l.sim.send_data(l.r, 0, "203.0.113.1", VM);
    assert_eq!(
        out,
        DataOutcome::Encapsulated {
            rloc: ip(A1),
            etr: Some(l.a1),
            owned: false
        }
    );
    // a1's data plane re-encapsulates it (its away entry) and reports it.
    assert_eq!(itr_entry(&l.sim, l.a1, VM), Some((32, vec![ip(B)])));
    let absent = Event::DataForAbsentEid {
        instance_id: 0,
        itr_rloc: ip(R),
        src_eid: ip("203.0.113.1"),
        dst_eid: ip(VM),
    };
    let smrs = |sim: &Sim| {
        sim.messages_from(l.a1)
            .into_iter()
            .filter(|(to, m)| to.ip() == ip(R) && matches!(m, Message::MapRequest(r) if r.smr))
            .count()
    };
    l.sim.inject(l.a1, absent.clone());
    l.sim.inject(l.a1, absent.clone());
    assert_eq!(smrs(&l.sim), 1, "rate-limited per ITR");
    l.sim.run_for(secs(1));
    assert_eq!(itr_entry(&l.sim, l.r, VM), Some((32, vec![ip(B)])));
    assert_eq!(
        l.sim.send_data(l.r, 0, "203.0.113.1", VM),
        DataOutcome::Encapsulated {
            rloc: ip(B),
            etr: Some(l.b),
            owned: true
        }
    );
}

#[test]
fn remote_itr_follows_the_move_extended_subnet_mode() {
    remote_itr_follows_the_move(MobilityMode::ExtendedSubnet);
}

#[test]
fn remote_itr_follows_the_move_across_subnet_mode() {
    remote_itr_follows_the_move(MobilityMode::AcrossSubnet);
}

#[test]
fn subscribed_itr_follows_the_move_without_traffic() {
    let mut l = lab(MobilityMode::AcrossSubnet);
    let mut cfg = xtr("192.0.2.32", &["203.0.113.128/25"], &[MS], KEY);
    cfg.subscribe = true;
    let r2 = l.sim.add_node("r2", NodeConfig::xtr(cfg), &[]);
    l.sim.run_for(secs(2));
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    assert_eq!(
        l.sim.send_data(r2, 0, "203.0.113.129", VM),
        DataOutcome::Miss
    );
    l.sim.run_for(secs(1));
    assert_eq!(
        itr_entry(&l.sim, r2, VM).map(|e| e.1),
        Some(vec![ip(A1), ip(A2)])
    );
    l.sim.inject(l.b, detected(VM));
    // No data, no SMR: the map-server's publication moves it.
    l.sim.run_for(Duration::from_millis(50));
    assert_eq!(itr_entry(&l.sim, r2, VM), Some((32, vec![ip(B)])));
}

#[test]
fn only_a_verified_map_server_notify_moves_a_host_away() {
    let mut l = lab(MobilityMode::AcrossSubnet);
    l.sim.inject(l.a1, detected(VM));
    l.sim.run_for(secs(1));
    // "Your host is at B": from the map-server's address but signed with another key, then
    // signed right but from an address that is not one of our map-servers.
    let forged = group_notify(b"wrong", VM, &[B], true);
    l.sim.send_as(l.ms, Some(MS), &format!("{A1}:4342"), forged);
    let stranger = l
        .sim
        .add_node("x", NodeConfig::xtr(xtr("192.0.2.99", &[], &[], KEY)), &[]);
    l.sim.send_as(
        stranger,
        None,
        &format!("{A1}:4342"),
        group_notify(KEY, VM, &[B], true),
    );
    l.sim.run_for(secs(1));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Local));
    assert_eq!(l.sim.node(l.a1).mobility().counters().moved_away, 0);
    // The real one.
    l.sim.send_as(
        l.ms,
        Some(MS),
        &format!("{A1}:4342"),
        group_notify(KEY, VM, &[B], true),
    );
    l.sim.run_for(secs(1));
    assert_eq!(origin(&l.sim, l.a1, VM), Some(Origin::Away));
}
