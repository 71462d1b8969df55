//! The xTR state machine under a simulated clock: no sockets, every datagram is built or parsed
//! with the wire codec, the way a peer would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Algorithm, Auth};
use lisp_common::wire::control::{
    Action as WireAction, Address, Ecm, Eid, IpPrefix, Locator as WireLocator, MapNotify,
    MapRegister, MapReply, MapRequest, Message, Record,
};

use super::*;
use crate::core::action::{CONTROL_PORT, MapCacheData};
use crate::core::map_cache::Negative;

const MS1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const MS2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const RLOC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 17));
const RLOC_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 18));
const ITR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 33));
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn secs(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn pfx(s: &str) -> EidPrefix {
    let (a, l) = s.split_once('/').unwrap();
    EidPrefix::new(0, ip(a), l.parse().unwrap())
}

fn cfg() -> XtrConfig {
    XtrConfig {
        locators: vec![RLOC, RLOC_B],
        database_mappings: vec![DatabaseMapping {
            eid: pfx("198.51.100.0/24"),
            locators: vec![
                Locator {
                    addr: RLOC,
                    priority: 1,
                    weight: 100,
                },
                Locator {
                    addr: RLOC_B,
                    priority: 2,
                    weight: 100,
                },
            ],
        }],
        map_servers: vec![
            MapServerPeer {
                address: MS1,
                key: b"k1".to_vec(),
                algorithm: Algorithm::HmacSha256,
                proxy_reply: false,
            },
            MapServerPeer {
                address: MS2,
                key: b"k2".to_vec(),
                algorithm: Algorithm::HmacSha1,
                proxy_reply: true,
            },
        ],
        map_resolvers: vec![MS1, MS2],
        eid_space: vec![pfx("203.0.113.0/24")],
        register_nonce_base: 1000,
        nonce_seed: 42.into(),
        ..XtrConfig::default()
    }
}

fn sa(a: IpAddr) -> SocketAddr {
    SocketAddr::new(a, CONTROL_PORT)
}

/// The datagrams among `actions`.
fn sends(actions: &[Action]) -> Vec<(SocketAddr, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, payload, .. } => Some((*to, payload.clone())),
            _ => None,
        })
        .collect()
}

fn sends_to(actions: &[Action], to: IpAddr) -> Vec<Vec<u8>> {
    sends(actions)
        .into_iter()
        .filter(|(a, _)| a.ip() == to)
        .map(|(_, p)| p)
        .collect()
}

fn parse_register(b: &[u8]) -> MapRegister {
    match Message::parse(b).unwrap() {
        Message::MapRegister(r) => r,
        m => panic!("not a Map-Register: {m:?}"),
    }
}

/// What a map-server answers to a Map-Register: a Map-Notify with its nonce, signed with `key`.
fn notify_for(reg: &[u8], key: &[u8]) -> Vec<u8> {
    let r = parse_register(reg);
    let n = MapNotify {
        nonce: r.nonce,
        auth: Auth::zeroed(r.auth.algorithm().unwrap()),
        records: r.records,
        xtr: r.xtr,
        ..MapNotify::default()
    };
    auth::emit_signed(&Message::MapNotify(n), key).unwrap()
}

/// The Map-Request inside an ECM, with the ECM.
fn parse_ecm(b: &[u8]) -> (Ecm, MapRequest) {
    match Message::parse(b).unwrap() {
        Message::Ecm(e) => {
            let r = match &*e.message {
                Message::MapRequest(r) => r.clone(),
                m => panic!("ECM carries {m:?}"),
            };
            (e, r)
        }
        m => panic!("not an ECM: {m:?}"),
    }
}

fn reply(nonce: u64, eid: &str, ttl: u32, locators: &[(IpAddr, u8)]) -> Vec<u8> {
    let p = pfx(eid);
    let mut rec = Record::new(Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap()), ttl);
    rec.locators = locators
        .iter()
        .map(|(a, prio)| WireLocator::new(*a, *prio, 50))
        .collect();
    Message::MapReply(MapReply {
        nonce,
        records: vec![rec],
        ..MapReply::default()
    })
    .to_vec()
    .unwrap()
}

/// The Map-Request (inside its ECM) that a miss for `dst` sends: there must be exactly one.
fn miss_request(x: &mut Xtr, now: Timestamp, dst: IpAddr) -> MapRequest {
    let s = sends(&x.handle_miss(now, 0, HOST, dst));
    assert_eq!(s.len(), 1, "a miss for {dst} sends one Map-Request");
    parse_ecm(&s[0].1).1
}

fn negative_reply(nonce: u64, eid: &str, ttl: u32, action: WireAction) -> Vec<u8> {
    let p = pfx(eid);
    let rec = Record::negative(
        Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap()),
        ttl,
        action,
    );
    Message::MapReply(MapReply {
        nonce,
        records: vec![rec],
        ..MapReply::default()
    })
    .to_vec()
    .unwrap()
}

fn rx(x: &mut Xtr, now: Timestamp, from: IpAddr, bytes: &[u8]) -> Vec<Action> {
    x.handle_datagram(now, sa(from), sa(RLOC), bytes)
}

/// Runs the timers from `from` to `until` (inclusive), returning each (time, actions) step.
fn run_timers(x: &mut Xtr, until: Timestamp) -> Vec<(Timestamp, Vec<Action>)> {
    let mut steps = Vec::new();
    while let Some(d) = x.next_deadline() {
        if d > until {
            break;
        }
        let a = x.handle_timer(d);
        steps.push((d, a));
    }
    steps
}

// ------------------------------------------------------------------------------- registration

#[test]
fn registers_every_database_mapping_with_every_map_server() {
    let mut x = Xtr::new(cfg(), t(0));
    assert_eq!(x.next_deadline(), Some(t(0)));
    let a = x.handle_timer(t(0));
    let s = sends(&a);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, sa(MS1));
    assert_eq!(s[1].0, sa(MS2));
    let r1 = parse_register(&s[0].1);
    let r2 = parse_register(&s[1].1);
    assert!(r1.want_map_notify && r2.want_map_notify);
    assert!(!r1.proxy_reply, "P bit per map-server");
    assert!(r2.proxy_reply);
    assert_eq!(r1.auth.algorithm(), Some(Algorithm::HmacSha256));
    assert_eq!(r2.auth.algorithm(), Some(Algorithm::HmacSha1));
    auth::verify(&s[0].1, b"k1").unwrap();
    auth::verify(&s[1].1, b"k2").unwrap();
    assert!(auth::verify(&s[0].1, b"k2").is_err());
    assert!(r2.nonce > r1.nonce);
    assert_eq!(r1.records.len(), 1);
    let rec = &r1.records[0];
    assert_eq!(rec.eid.prefix.to_string(), "198.51.100.0/24");
    assert_eq!(rec.eid.instance_id, None);
    assert_eq!(rec.ttl, DEFAULT_RECORD_TTL_MIN);
    assert_eq!(rec.locators.len(), 2);
    assert_eq!(
        (rec.locators[0].address, rec.locators[0].priority),
        (RLOC, 1)
    );
    assert!(rec.locators[0].local);
    assert_eq!(x.counters().sent_map_register, 2);
}

#[test]
fn retransmits_with_exponential_backoff_and_increasing_nonces() {
    let mut x = Xtr::new(cfg(), t(0));
    let steps = run_timers(&mut x, secs(300));
    let mut times = Vec::new();
    let mut nonces = Vec::new();
    for (when, a) in &steps {
        for (to, p) in sends(a) {
            nonces.push(parse_register(&p).nonce);
            if to == sa(MS1) {
                times.push(when.as_millis() / 1000);
            }
        }
    }
    // 1, 2, 4, ... s capped at 60 s.
    assert_eq!(times, vec![0, 1, 3, 7, 15, 31, 63, 123, 183, 243]);
    assert!(
        nonces.windows(2).all(|w| w[1] > w[0]),
        "nonces grow: {nonces:?}"
    );
    assert!(
        x.registrations(secs(300))
            .iter()
            .all(|r| r.state == RegistrationState::Registering)
    );
}

#[test]
fn backoff_never_exceeds_a_short_register_interval() {
    let mut c = cfg();
    c.register_interval = Duration::from_secs(3);
    c.map_servers.truncate(1);
    let mut x = Xtr::new(c, t(0));
    let times: Vec<u64> = run_timers(&mut x, secs(20))
        .iter()
        .filter(|(_, a)| !sends(a).is_empty())
        .map(|(w, _)| w.as_millis() / 1000)
        .collect();
    assert_eq!(times, vec![0, 1, 3, 6, 9, 12, 15, 18]);
}

#[test]
fn valid_map_notify_registers_and_refresh_follows_the_interval() {
    let mut x = Xtr::new(cfg(), t(0));
    let a = x.handle_timer(t(0));
    let reg1 = sends_to(&a, MS1).remove(0);
    let n = notify_for(&reg1, b"k1");
    assert!(rx(&mut x, t(200), MS1, &n).is_empty());
    let st = x.registrations(t(200));
    assert_eq!(st[0].state, RegistrationState::Registered);
    assert_eq!(st[0].last_notify, Some(t(200)));
    assert_eq!(
        st[1].state,
        RegistrationState::Registering,
        "the other map-server is independent"
    );
    assert_eq!(x.counters().rx_map_notify, 1);
    // MS1 is not sent to again until the interval; MS2 keeps retransmitting.
    let steps = run_timers(&mut x, t(59_999));
    assert!(steps.iter().all(|(_, a)| sends_to(a, MS1).is_empty()));
    assert!(steps.iter().any(|(_, a)| !sends_to(a, MS2).is_empty()));
    let a = x.handle_timer(secs(60));
    let again = sends_to(&a, MS1);
    assert_eq!(again.len(), 1, "refresh at 60 s");
    assert!(parse_register(&again[0]).nonce > parse_register(&reg1).nonce);
    // A notify for a retransmitted (or the current) nonce is good; the earlier one is no more.
    assert!(x.registrations(secs(60))[0].state == RegistrationState::Registered);
    // Without any further notify the registration shows as expired after three intervals.
    run_timers(&mut x, secs(60 + 181));
    assert_eq!(
        x.registrations(secs(60 + 181))[0].state,
        RegistrationState::Expired
    );
}

#[test]
fn notify_answering_an_earlier_retransmission_is_accepted() {
    let mut x = Xtr::new(cfg(), t(0));
    let first = sends_to(&x.handle_timer(t(0)), MS1).remove(0);
    let steps = run_timers(&mut x, secs(3));
    assert!(steps.iter().any(|(_, a)| !sends_to(a, MS1).is_empty()));
    rx(&mut x, secs(3), MS1, &notify_for(&first, b"k1"));
    assert_eq!(
        x.registrations(secs(3))[0].state,
        RegistrationState::Registered
    );
}

#[test]
fn map_notify_with_bad_hmac_or_wrong_nonce_changes_nothing() {
    let mut x = Xtr::new(cfg(), t(0));
    let a = x.handle_timer(t(0));
    let reg1 = sends_to(&a, MS1).remove(0);
    let deadline = x.next_deadline();

    // Right nonce, wrong key (MS2's key for MS1's registration).
    let bad = notify_for(&reg1, b"k2");
    assert!(rx(&mut x, t(100), MS1, &bad).is_empty());
    assert_eq!(x.counters().rejected(Reject::NotifyBadAuth), 1);
    // Right nonce, one altered byte after signing.
    let mut tampered = notify_for(&reg1, b"k1");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(rx(&mut x, t(100), MS1, &tampered).is_empty());
    assert_eq!(x.counters().rejected(Reject::NotifyBadAuth), 2);

    // Wrong nonce from somewhere that is not a map-server.
    let mut other = parse_register(&reg1);
    other.nonce = 7;
    other.auth = Auth::zeroed(Algorithm::HmacSha256);
    let wrong = notify_for(
        &auth::emit_signed(&Message::MapRegister(other), b"k1").unwrap(),
        b"k1",
    );
    assert!(rx(&mut x, t(100), ip("203.0.113.99"), &wrong).is_empty());
    assert_eq!(x.counters().rejected(Reject::NotifyUnknownNonce), 1);

    assert_eq!(x.counters().rx_map_notify, 0);
    assert!(
        x.registrations(t(100))
            .iter()
            .all(|r| r.state == RegistrationState::Registering && r.last_notify.is_none())
    );
    assert_eq!(x.next_deadline(), deadline, "no timer moved");
}

/// Map-Registers and Map-Notify-Acks leave from our locator of the map-server's family: the
/// map-server answers, and records the ETR at, the source address.
#[test]
fn map_registers_and_acks_name_our_locator_of_the_peers_family_as_source() {
    let v6 = ip("2001:db8:ff:1::10");
    let ms6 = ip("2001:db8:ff:c::130");
    let mut c = cfg();
    c.locators = vec![RLOC, v6];
    c.map_servers[1].address = ms6;
    let mut x = Xtr::new(c, t(0));
    let a = x.handle_timer(t(0));
    let froms: Vec<(Option<IpAddr>, IpAddr)> = a
        .iter()
        .filter_map(|a| match a {
            Action::Send { from, to, .. } => Some((*from, to.ip())),
            _ => None,
        })
        .collect();
    assert_eq!(froms, vec![(Some(RLOC), MS1), (Some(v6), ms6)]);
    let n = MapNotify {
        nonce: 7,
        auth: Auth::zeroed(Algorithm::HmacSha1),
        ..MapNotify::default()
    };
    let bytes = auth::emit_signed(&Message::MapNotify(n), b"k2").unwrap();
    let a = rx(&mut x, t(10), ms6, &bytes);
    assert!(
        matches!(a[..], [Action::Send { from: Some(f), to, .. }] if f == v6 && to.ip() == ms6),
        "{a:?}"
    );
}

#[test]
fn unsolicited_map_notify_from_a_map_server_is_acknowledged() {
    let mut x = Xtr::new(cfg(), t(0));
    x.handle_timer(t(0));
    let n = MapNotify {
        nonce: 0xdead_beef,
        auth: Auth::zeroed(Algorithm::HmacSha1),
        ..MapNotify::default()
    };
    let bytes = auth::emit_signed(&Message::MapNotify(n), b"k2").unwrap();
    let a = rx(&mut x, t(10), MS2, &bytes);
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, sa(MS2));
    match Message::parse(&s[0].1).unwrap() {
        Message::MapNotifyAck(ack) => assert_eq!(ack.nonce, 0xdead_beef),
        m => panic!("{m:?}"),
    }
    auth::verify(&s[0].1, b"k2").unwrap();
    // It did not complete any registration.
    assert!(
        x.registrations(t(10))
            .iter()
            .all(|r| r.last_notify.is_none())
    );
    // Signed with the wrong key: no ack.
    let n = MapNotify {
        nonce: 5,
        auth: Auth::zeroed(Algorithm::HmacSha1),
        ..MapNotify::default()
    };
    let bytes = auth::emit_signed(&Message::MapNotify(n), b"k1").unwrap();
    assert!(rx(&mut x, t(10), MS2, &bytes).is_empty());
    assert_eq!(x.counters().rejected(Reject::NotifyBadAuth), 1);
}

#[test]
fn redundant_map_servers_register_independently() {
    let mut x = Xtr::new(cfg(), t(0));
    let a = x.handle_timer(t(0));
    // MS1 is down; MS2 answers.
    let reg2 = sends_to(&a, MS2).remove(0);
    rx(&mut x, t(50), MS2, &notify_for(&reg2, b"k2"));
    let st = x.registrations(t(50));
    assert_eq!(st[0].state, RegistrationState::Registering);
    assert_eq!(st[1].state, RegistrationState::Registered);
    // MS1 comes back at 10 s: answers the next retransmission.
    let steps = run_timers(&mut x, secs(16));
    let last_to_ms1 = steps
        .iter()
        .filter_map(|(_, a)| sends_to(a, MS1).pop())
        .next_back()
        .unwrap();
    rx(&mut x, secs(16), MS1, &notify_for(&last_to_ms1, b"k1"));
    assert!(
        x.registrations(secs(16))
            .iter()
            .all(|r| r.state == RegistrationState::Registered)
    );
}

// ------------------------------------------------------------------------------- resolution

#[test]
fn miss_sends_an_ecm_map_request_and_the_reply_programs_the_cache() {
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    let dst = ip("203.0.113.7");
    let a = x.handle_miss(t(0), 0, HOST, dst);
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, sa(MS1));
    // Outer source pinned to our locator of the resolver's family.
    assert!(matches!(a[0], Action::Send { from: Some(f), .. } if f == RLOC));
    let (ecm, req) = parse_ecm(&s[0].1);
    assert_eq!((ecm.ip.src(), ecm.ip.dst()), (HOST, dst));
    assert_eq!((ecm.src_port, ecm.dst_port), (4342, 4342));
    // The codec verified the inner checksum on parse; it must also not be the "none" value.
    let udp_ck = u16::from_be_bytes([s[0].1[4 + 20 + 6], s[0].1[4 + 20 + 7]]);
    assert_ne!(udp_ck, 0);
    assert_eq!(req.itr_rlocs, vec![RLOC, RLOC_B]);
    assert_eq!(req.source_eid, Address::ip(HOST));
    assert_eq!(req.eids.len(), 1);
    assert_eq!(req.eids[0].prefix.to_string(), "203.0.113.7/32");
    assert!(!req.smr && !req.smr_invoked && !req.probe);

    let r = reply(
        req.nonce,
        "203.0.113.0/24",
        2,
        &[(ip("192.0.2.50"), 1), (ip("2001:db8::50"), 1)],
    );
    let a = rx(&mut x, t(30), MS1, &r);
    assert_eq!(a.len(), 1);
    match &a[0] {
        Action::InstallMapCache { eid, data, ttl } => {
            assert_eq!(*eid, pfx("203.0.113.0/24"));
            assert_eq!(*ttl, Duration::from_secs(120));
            let MapCacheData::Positive(l) = data else {
                panic!("{data:?}")
            };
            assert_eq!(
                l[0],
                Locator {
                    addr: ip("192.0.2.50"),
                    priority: 1,
                    weight: 50
                }
            );
            // No local IPv6 locator: that one cannot be used.
            assert_eq!(l[1].priority, crate::core::map_cache::PRIORITY_UNUSABLE);
        }
        other => panic!("{other:?}"),
    }
    assert!(!x.is_pending(&EidPrefix::host(0, dst)));
    // Another destination inside the cached prefix: nothing to do.
    assert!(x.handle_miss(t(40), 0, HOST, ip("203.0.113.99")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissCached), 1);
    // The same reply again is a replay: dropped.
    assert!(rx(&mut x, t(50), MS1, &r).is_empty());
    assert_eq!(x.counters().rejected(Reject::ReplyUnsolicited), 1);
    // TTL expiry removes the entry.
    assert_eq!(x.next_deadline(), Some(t(30 + 120_000)));
    assert!(x.handle_timer(t(30 + 119_999)).is_empty());
    let a = x.handle_timer(t(30 + 120_000));
    assert_eq!(
        a,
        vec![Action::RemoveMapCache {
            eid: pfx("203.0.113.0/24")
        }]
    );
    assert_eq!(x.cached().count(), 0);
    assert_eq!(x.counters().map_cache_expired, 1);
}

#[test]
fn one_request_per_second_ten_tries_then_thirty_second_hold_down() {
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    let dst = ip("203.0.113.7");
    assert_eq!(sends(&x.handle_miss(t(0), 0, HOST, dst)).len(), 1);
    // The data plane keeps reporting misses: they do not add requests.
    for ms in [100, 500, 999] {
        assert!(x.handle_miss(t(ms), 0, HOST, dst).is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::MissPending), 3);
    let steps = run_timers(&mut x, secs(20));
    let send_times: Vec<u64> = steps
        .iter()
        .filter(|(_, a)| !sends(a).is_empty())
        .map(|(w, _)| w.as_millis())
        .collect();
    assert_eq!(send_times, (1..10).map(|s| s * 1000).collect::<Vec<_>>());
    assert_eq!(x.counters().sent_map_request, 10);
    assert_eq!(x.counters().sent_map_request_retry, 9);
    assert_eq!(x.counters().resolve_gave_up, 1);
    // Hold-down from 10 s to 40 s.
    assert!(x.handle_miss(secs(39), 0, HOST, dst).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissHoldDown), 1);
    run_timers(&mut x, secs(40));
    assert_eq!(sends(&x.handle_miss(secs(40), 0, HOST, dst)).len(), 1);
    // Retransmissions alternate between the two map-resolvers.
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    let mut to = vec![sends(&x.handle_miss(t(0), 0, HOST, dst))[0].0.ip()];
    for (_, a) in run_timers(&mut x, t(3500)) {
        to.extend(sends(&a).iter().map(|(d, _)| d.ip()));
    }
    assert_eq!(to, vec![MS1, MS2, MS1, MS2]);
}

#[test]
fn a_dead_resolver_is_skipped_after_one_timeout() {
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    let a = x.handle_miss(t(0), 0, HOST, ip("203.0.113.7"));
    assert_eq!(sends(&a)[0].0, sa(MS1));
    // MS1 is dead: after 1 s the request goes to MS2, which answers (the reply to the first
    // request would have been good too).
    let a = x.handle_timer(secs(1));
    let s = sends(&a);
    assert_eq!(s[0].0, sa(MS2));
    let (_, req) = parse_ecm(&s[0].1);
    let a = rx(
        &mut x,
        t(1010),
        MS2,
        &reply(req.nonce, "203.0.113.0/25", 10, &[(ip("192.0.2.50"), 1)]),
    );
    assert_eq!(a.len(), 1);
    // The next resolution starts at MS2 directly.
    let a = x.handle_miss(t(1100), 0, HOST, ip("203.0.113.200"));
    assert_eq!(sends(&a)[0].0, sa(MS2));
}

#[test]
fn negative_replies_become_negative_entries_and_ttl_zero_removes() {
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    for (i, (action, want)) in [
        (WireAction::Drop, Negative::Drop),
        (WireAction::NativelyForward, Negative::NativelyForward),
        (WireAction::NoAction, Negative::NativelyForward),
        (WireAction::SendMapRequest, Negative::SendMapRequest),
    ]
    .into_iter()
    .enumerate()
    {
        let dst = ip(&format!("203.0.113.{}", 64 * i + 1));
        let req = miss_request(&mut x, t(0), dst);
        let eid = format!("203.0.113.{}/26", 64 * i);
        let a = rx(
            &mut x,
            t(10),
            MS1,
            &negative_reply(req.nonce, &eid, 15, action),
        );
        assert_eq!(
            a,
            vec![Action::InstallMapCache {
                eid: pfx(&eid),
                data: MapCacheData::Negative(want),
                ttl: Duration::from_secs(15 * 60),
            }]
        );
    }
    // A send-map-request entry asks for resolution on a miss.
    assert_eq!(
        sends(&x.handle_miss(secs(1), 0, HOST, ip("203.0.113.193"))).len(),
        1
    );
    // A drop entry does not.
    assert!(
        x.handle_miss(secs(1), 0, HOST, ip("203.0.113.2"))
            .is_empty()
    );
    // A TTL 0 answer removes what is cached and installs nothing.
    let mut x2 = Xtr::new(cfg(), t(0));
    let req = miss_request(&mut x2, t(0), ip("203.0.113.9"));
    rx(
        &mut x2,
        t(5),
        MS1,
        &reply(req.nonce, "203.0.113.0/24", 60, &[(ip("192.0.2.50"), 1)]),
    );
    // Force a re-resolution through an SMR, answered with TTL 0.
    let smr = Message::MapRequest(MapRequest {
        smr: true,
        nonce: 1,
        itr_rlocs: vec![ITR],
        eids: vec![Eid::new(
            None,
            IpPrefix::new(ip("203.0.113.0"), 24).unwrap(),
        )],
        ..MapRequest::default()
    })
    .to_vec()
    .unwrap();
    let (_, req) = parse_ecm(&sends(&rx(&mut x2, secs(1), ITR, &smr))[0].1);
    let a = rx(
        &mut x2,
        secs(1),
        MS1,
        &reply(req.nonce, "203.0.113.0/24", 0, &[(ip("192.0.2.50"), 1)]),
    );
    assert_eq!(
        a,
        vec![Action::RemoveMapCache {
            eid: pfx("203.0.113.0/24")
        }]
    );
    assert_eq!(x2.cached().count(), 0);
}

#[test]
fn unsolicited_mismatched_and_malformed_input_is_dropped_without_state_change() {
    let mut x = Xtr::new(cfg(), t(0));
    x.handle_timer(t(0));
    let dst = ip("203.0.113.7");
    let req = miss_request(&mut x, t(0), dst);
    let deadline = x.next_deadline();

    // Unknown nonce.
    assert!(
        rx(
            &mut x,
            t(5),
            MS1,
            &reply(req.nonce ^ 1, "203.0.113.0/24", 10, &[(RLOC, 1)])
        )
        .is_empty()
    );
    assert_eq!(x.counters().rejected(Reject::ReplyUnsolicited), 1);
    // Right nonce, a prefix that does not cover what was asked.
    assert!(
        rx(
            &mut x,
            t(5),
            MS1,
            &reply(req.nonce, "198.18.0.0/24", 10, &[(RLOC, 1)])
        )
        .is_empty()
    );
    assert_eq!(x.counters().rejected(Reject::ReplyEidMismatch), 1);
    // Garbage, truncated, empty, Map-Register, ECM carrying a Map-Reply.
    let good = reply(req.nonce, "203.0.113.0/24", 10, &[(RLOC, 1)]);
    for bad in [&b"\xff\x00garbage"[..], &good[..good.len() - 3], &[][..]] {
        assert!(rx(&mut x, t(5), MS1, bad).is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::Malformed), 3);
    let reg = MapRegister {
        auth: Auth::zeroed(Algorithm::HmacSha256),
        ..MapRegister::default()
    };
    assert!(
        rx(
            &mut x,
            t(5),
            MS1,
            &Message::MapRegister(reg).to_vec().unwrap()
        )
        .is_empty()
    );
    assert_eq!(x.counters().rejected(Reject::UnexpectedType), 1);
    let inner = Message::MapReply(MapReply {
        nonce: req.nonce,
        ..MapReply::default()
    });
    let ecm = Message::Ecm(Ecm::new(HOST, dst, inner).unwrap())
        .to_vec()
        .unwrap();
    assert!(rx(&mut x, t(5), MS1, &ecm).is_empty());
    assert_eq!(x.counters().rejected(Reject::UnexpectedEcm), 1);

    assert!(x.is_pending(&EidPrefix::host(0, dst)));
    assert_eq!(x.cached().count(), 0);
    assert_eq!(x.next_deadline(), deadline);
    // The genuine reply still works.
    assert_eq!(rx(&mut x, t(6), MS1, &good).len(), 1);
}

#[test]
fn misses_outside_the_eid_space_or_without_resolver_are_counted() {
    let mut x = Xtr::new(cfg(), t(0));
    assert!(x.handle_miss(t(0), 0, HOST, ip("198.18.0.1")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissOutsideEidSpace), 1);
    assert!(x.handle_miss(t(0), 0, HOST, ip("2001:db8::1")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissBadAddress), 1);
    let mut c = cfg();
    c.map_resolvers.clear();
    let mut x = Xtr::new(c, t(0));
    assert!(x.handle_miss(t(0), 0, HOST, ip("203.0.113.1")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissNoResolver), 1);
}

// ------------------------------------------------------------------------------- ETR

fn request(nonce: u64, eid: &str, probe: bool) -> MapRequest {
    let p = pfx(eid);
    MapRequest {
        probe,
        nonce,
        source_eid: Address::ip(ip("203.0.113.5")),
        itr_rlocs: vec![ip("2001:db8::33"), ITR],
        eids: vec![Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap())],
        ..MapRequest::default()
    }
}

fn parse_reply(b: &[u8]) -> MapReply {
    match Message::parse(b).unwrap() {
        Message::MapReply(r) => r,
        m => panic!("{m:?}"),
    }
}

/// In a multihomed site every xTR lists all the site's RLOCs; only this router's own get the
/// L bit (RFC 9301 §5.4: local to the ETR sending the Map-Reply).
#[test]
fn only_our_own_locators_of_a_site_mapping_are_marked_local() {
    let mut c = cfg();
    c.locators = vec![RLOC];
    let mut x = Xtr::new(c, t(0));
    let req = Message::MapRequest(request(79, "198.51.100.10/32", false))
        .to_vec()
        .unwrap();
    let a = x.handle_datagram(t(0), SocketAddr::new(ITR, 40000), sa(RLOC), &req);
    let r = parse_reply(&sends(&a)[0].1);
    let local: Vec<(IpAddr, bool)> = r.records[0]
        .locators
        .iter()
        .map(|l| (l.address, l.local))
        .collect();
    assert_eq!(local, vec![(RLOC, true), (RLOC_B, false)]);
}

#[test]
fn etr_answers_map_requests_for_its_eids_authoritatively() {
    let mut x = Xtr::new(cfg(), t(0));
    // Direct, from an ephemeral port: the reply goes to the IPv4 ITR-RLOC on that port.
    let req = Message::MapRequest(request(77, "198.51.100.10/32", false))
        .to_vec()
        .unwrap();
    let a = x.handle_datagram(t(0), SocketAddr::new(ITR, 40000), sa(RLOC), &req);
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, SocketAddr::new(ITR, 40000));
    let r = parse_reply(&s[0].1);
    assert_eq!(r.nonce, 77);
    assert!(!r.probe);
    assert_eq!(r.records.len(), 1);
    assert!(r.records[0].authoritative);
    assert_eq!(r.records[0].eid.prefix.to_string(), "198.51.100.0/24");
    assert_eq!(r.records[0].locators.len(), 2);
    assert!(r.records[0].locators.iter().all(|l| !l.probed));
    // Forwarded by the map-server inside an ECM: reply to the inner source port.
    let mut ecm = Ecm::new(
        ip("203.0.113.5"),
        HOST,
        Message::MapRequest(request(78, "198.51.100.10/32", false)),
    )
    .unwrap();
    ecm.src_port = 4342;
    let a = rx(&mut x, t(0), MS1, &Message::Ecm(ecm).to_vec().unwrap());
    let s = sends(&a);
    assert_eq!(s[0].0, sa(ITR));
    assert_eq!(parse_reply(&s[0].1).nonce, 78);
    assert_eq!(x.counters().sent_map_reply, 2);
    // Not ours.
    let req = Message::MapRequest(request(79, "203.0.113.10/32", false))
        .to_vec()
        .unwrap();
    assert!(rx(&mut x, t(0), ITR, &req).is_empty());
    assert_eq!(x.counters().rejected(Reject::RequestNotOurs), 1);
}

#[test]
fn rloc_probe_reply_marks_the_probed_locator() {
    let mut x = Xtr::new(cfg(), t(0));
    let req = Message::MapRequest(request(5, "198.51.100.0/24", true))
        .to_vec()
        .unwrap();
    // Probe sent to our second locator.
    let a = x.handle_datagram(t(0), sa(ITR), sa(RLOC_B), &req);
    assert!(matches!(a[0], Action::Send { from: Some(f), .. } if f == RLOC_B));
    let r = parse_reply(&sends(&a)[0].1);
    assert!(r.probe);
    assert_eq!(r.nonce, 5);
    let probed: Vec<IpAddr> = r.records[0]
        .locators
        .iter()
        .filter(|l| l.probed)
        .map(|l| l.address)
        .collect();
    assert_eq!(probed, vec![RLOC_B]);
    assert_eq!(x.counters().sent_probe_reply, 1);
}

// ------------------------------------------------------------------------------- SMR

/// An SMR as RFC 9301 §6.1 and OOR send it (capture 13): Source-EID = the EID whose mapping
/// changed, the record = our prefix as the sender caches it.
fn smr(changed: &str, record: &str) -> Vec<u8> {
    let p = pfx(record);
    Message::MapRequest(MapRequest {
        smr: true,
        nonce: 99,
        source_eid: Address::ip(ip(changed)),
        itr_rlocs: vec![ip("192.0.2.50")],
        eids: vec![Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap())],
        ..MapRequest::default()
    })
    .to_vec()
    .unwrap()
}

#[test]
fn smr_invoked_request_asks_for_the_changed_eid_so_a_moved_host_is_learnt_as_a_host() {
    let mut x = Xtr::new(cfg(), t(0));
    // Nothing cached: ignored.
    let ours = "198.51.100.0/24";
    assert!(rx(&mut x, t(0), ip("192.0.2.50"), &smr("203.0.113.7", ours)).is_empty());
    assert_eq!(x.counters().rejected(Reject::SmrNotCached), 1);
    let req = miss_request(&mut x, t(0), ip("203.0.113.20"));
    rx(
        &mut x,
        t(5),
        MS1,
        &reply(req.nonce, "203.0.113.0/24", 60, &[(ip("192.0.2.50"), 1)]),
    );

    // 203.0.113.7 moved away from the /24's site, whose ETR tells us.
    let a = rx(&mut x, secs(1), ip("192.0.2.50"), &smr("203.0.113.7", ours));
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].0,
        sa(MS1),
        "through the mapping system, not to the SMR's sender"
    );
    let (ecm, req) = parse_ecm(&s[0].1);
    assert!(req.smr_invoked && !req.smr);
    assert_eq!(
        req.eids[0].prefix.to_string(),
        "203.0.113.7/32",
        "the EID that changed"
    );
    assert_eq!(ecm.ip.dst(), ip("203.0.113.7"));
    assert_eq!(
        ecm.ip.src(),
        ip("198.51.100.0"),
        "the SMR's record: our EID"
    );
    assert_eq!(req.source_eid, Address::ip(ip("198.51.100.0")));
    // Within 3 s of it, another SMR for the same cached prefix is suppressed.
    assert!(rx(&mut x, t(3999), ip("192.0.2.50"), &smr("203.0.113.8", ours)).is_empty());
    assert_eq!(x.counters().rejected(Reject::SmrRateLimited), 1);
    // The map-server now holds the host as a /32 of its new site: learnt as a /32 beside the
    // /24, which keeps serving the hosts that did not move.
    let a = rx(
        &mut x,
        t(4000),
        MS1,
        &reply(req.nonce, "203.0.113.7/32", 60, &[(ip("192.0.2.51"), 1)]),
    );
    let Some(Action::InstallMapCache {
        eid,
        data: MapCacheData::Positive(l),
        ..
    }) = a.first()
    else {
        panic!("{a:?}")
    };
    assert_eq!((*eid, l[0].addr), (pfx("203.0.113.7/32"), ip("192.0.2.51")));
    let cached: Vec<EidPrefix> = x.cached().map(|(p, _)| *p).collect();
    assert_eq!(cached, vec![pfx("203.0.113.0/24"), pfx("203.0.113.7/32")]);
    // After 3 s another SMR for the /24 is honoured; an SMR whose changed EID is the /32 is
    // rate-limited on its own.
    let a = rx(&mut x, secs(4), ip("192.0.2.50"), &smr("203.0.113.8", ours));
    assert_eq!(
        parse_ecm(&sends(&a)[0].1).1.eids[0].prefix.to_string(),
        "203.0.113.8/32"
    );
    let a = rx(&mut x, secs(4), ip("192.0.2.51"), &smr("203.0.113.7", ours));
    assert_eq!(
        parse_ecm(&sends(&a)[0].1).1.eids[0].prefix.to_string(),
        "203.0.113.7/32"
    );
    assert_eq!(x.counters().sent_smr_invoked, 3);
    assert_eq!(x.counters().rx_smr, 5);
}

#[test]
fn smr_without_a_source_eid_names_the_changed_eid_in_its_record() {
    // Older senders (and this agent before) put the changed EID in the record, no Source-EID.
    let mut x = Xtr::new(cfg(), t(0));
    resolve_with(&mut x, t(0), "203.0.113.20", "203.0.113.0/24", 60);
    let old_style = Message::MapRequest(MapRequest {
        smr: true,
        nonce: 1,
        source_eid: Address::NONE,
        itr_rlocs: vec![ip("192.0.2.50")],
        eids: vec![Eid::new(
            None,
            IpPrefix::new(ip("203.0.113.9"), 32).unwrap(),
        )],
        ..MapRequest::default()
    })
    .to_vec()
    .unwrap();
    let a = rx(&mut x, secs(1), ip("192.0.2.50"), &old_style);
    let (ecm, req) = parse_ecm(&sends(&a)[0].1);
    assert_eq!(req.eids[0].prefix.to_string(), "203.0.113.9/32");
    assert_eq!(ecm.ip.src(), ip("198.51.100.0"), "one of our EIDs");
}

// SMRs as Open Overlay Router sends and answers them (capture 13, see its README): OOR's xTR 2
// (203.0.113.0/24) changed its RLOC from 192.0.2.33 to .34 and sent xTR 1 (198.51.100.0/24,
// RLOC 192.0.2.17) an SMR; xTR 1 sent its SMR-invoked Map-Request to the map-resolver 192.0.2.1.
// The captures reader of lisp-common's tests, as map_server's tests load it too (one reader, and
// one place that knows where the captures live).
#[allow(clippy::duplicate_mod)]
#[path = "../../../../lisp-common/tests/support/mod.rs"]
mod pcap;

fn oor_frame(file: &str, frame: usize) -> Vec<u8> {
    pcap::udp_payload(&format!("oor/{file}"), frame)
}

const OOR_SMR: &str = "13-smr-and-smr-invoked-request.pcap";

/// An xTR with the addresses of the OOR lab's xTR `rloc` serving `ours`, that caches `theirs`
/// at `their_rloc` (learnt by a Map-Reply).
fn oor_lab_xtr(rloc: &str, ours: &str, theirs: &str, their_rloc: &str) -> Xtr {
    let c = XtrConfig {
        locators: vec![ip(rloc)],
        database_mappings: vec![DatabaseMapping {
            eid: pfx(ours),
            locators: vec![Locator {
                addr: ip(rloc),
                priority: 1,
                weight: 100,
            }],
        }],
        map_resolvers: vec![ip("192.0.2.1")],
        ..XtrConfig::default()
    };
    let mut x = Xtr::new(c, t(0));
    let dst = pfx(theirs).addr;
    let s = sends(&x.handle_miss(t(0), 0, pfx(ours).addr, dst));
    let req = parse_ecm(&s[0].1).1;
    rx(
        &mut x,
        t(1),
        ip("192.0.2.1"),
        &reply(req.nonce, theirs, 10, &[(ip(their_rloc), 1)]),
    );
    assert_eq!(x.cached().count(), 1);
    x
}

/// The capture's two families: (xTR 1's prefix, xTR 2's prefix, its network address, a host of
/// xTR 1's prefix, the SMR's frame, the SMR-invoked request's frame).
const OOR_SMR_CASES: [(&str, &str, &str, &str, usize, usize); 2] = [
    (
        "198.51.100.0/24",
        "203.0.113.0/24",
        "203.0.113.0",
        "198.51.100.10",
        1,
        3,
    ),
    (
        "2001:db8:1::/48",
        "2001:db8:2::/48",
        "2001:db8:2::",
        "2001:db8:1::10",
        2,
        4,
    ),
];

#[test]
fn our_smr_has_the_bytes_of_oors() {
    for (site1, site2, site2_addr, host1, smr_frame, _) in OOR_SMR_CASES {
        // OOR's xTR 2 after the RLOC change; traffic from a host of site 1 for its EID arrives.
        // In the capture OOR names its whole prefix (its network address) as the changed EID.
        let mut x = oor_lab_xtr("192.0.2.34", site2, site1, "192.0.2.17");
        let a = x.handle_event(
            secs(10),
            Event::DataForAbsentEid {
                instance_id: 0,
                itr_rloc: ip("192.0.2.17"),
                src_eid: ip(host1),
                dst_eid: ip(site2_addr),
            },
        );
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, sa(ip("192.0.2.17")), "straight to the ITR, not ECM");
        let oor = oor_frame(OOR_SMR, smr_frame);
        let mut ours = s[0].1.clone();
        // The one difference: OOR sends nonce 0, we a random one (a nonce costs nothing and
        // lets nobody guess our generator's output from SMRs).
        assert_ne!(ours[4..12], [0; 8]);
        ours[4..12].fill(0);
        assert_eq!(ours, oor, "frame {smr_frame}");
    }
}

#[test]
fn oors_smr_gets_our_smr_invoked_request_in_oors_shape() {
    for (site1, site2, _, _, smr_frame, request_frame) in OOR_SMR_CASES {
        let mut x = oor_lab_xtr("192.0.2.17", site1, site2, "192.0.2.33");
        let a = rx(
            &mut x,
            secs(10),
            ip("192.0.2.34"),
            &oor_frame(OOR_SMR, smr_frame),
        );
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, sa(ip("192.0.2.1")), "through the map-resolver");
        let oor = oor_frame(OOR_SMR, request_frame);
        let (ecm, _) = parse_ecm(&s[0].1);
        let (oor_ecm, _) = parse_ecm(&oor);
        assert_eq!(
            (ecm.ip.src(), ecm.ip.dst(), ecm.src_port, ecm.dst_port),
            (
                oor_ecm.ip.src(),
                oor_ecm.ip.dst(),
                oor_ecm.src_port,
                oor_ecm.dst_port
            )
        );
        // The Map-Requests, byte for byte: behind the ECM header (4), the inner IP header (20
        // or 40) and UDP (8).
        let inner = 4 + if ecm.ip.src().is_ipv4() { 20 } else { 40 } + 8;
        let mut ours = s[0].1[inner..].to_vec();
        let theirs = &oor[inner..];
        // Two intended differences: the random nonce, and the record asks for the EID that
        // changed as a host (/32, /128), where OOR asks for its cached prefix again: so that a
        // host that moved out of a cached prefix is learnt on its own. The record (reserved,
        // prefix length, AFI, address) ends the message.
        let host_len = if ecm.ip.src().is_ipv4() { 32 } else { 128 };
        let addr_len = if ecm.ip.src().is_ipv4() { 4 } else { 16 };
        let len_at = ours.len() - addr_len - 3;
        ours[4..12].copy_from_slice(&theirs[4..12]);
        assert_eq!(ours[len_at], host_len);
        ours[len_at] = pfx(site2).len;
        assert_eq!(ours, theirs, "frame {request_frame}");
    }
}

#[test]
fn data_for_absent_eids_sends_smrs_rate_limited_per_rloc_in_a_bounded_table() {
    let mut c = cfg();
    c.limits.max_rate_entries = 4;
    let mut x = Xtr::new(c, t(0));
    let absent = |x: &mut Xtr, now: Timestamp, itr: &str| {
        x.handle_event(
            now,
            Event::DataForAbsentEid {
                instance_id: 0,
                itr_rloc: ip(itr),
                src_eid: ip("203.0.113.9"),
                dst_eid: ip("198.51.100.77"),
            },
        )
    };
    let a = absent(&mut x, t(0), "192.0.2.60");
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, sa(ip("192.0.2.60")));
    let Message::MapRequest(r) = Message::parse(&s[0].1).unwrap() else {
        panic!()
    };
    assert!(r.smr && !r.smr_invoked);
    assert_eq!(
        r.source_eid,
        Address::ip(ip("198.51.100.77")),
        "the EID that left"
    );
    assert_eq!(
        r.eids[0].prefix.to_string(),
        "203.0.113.9/32",
        "nothing cached for it"
    );
    // Every packet that follows within 3 s: no SMR.
    for ms in [1, 1000, 2999] {
        assert!(absent(&mut x, t(ms), "192.0.2.60").is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::SmrSendRateLimited), 3);
    // Other ITRs have their own limit, up to the table's 4 entries; the fifth RLOC within 3 s
    // is refused (and counted) rather than grow the table.
    for itr in ["192.0.2.61", "192.0.2.62", "192.0.2.63"] {
        assert_eq!(sends(&absent(&mut x, t(10), itr)).len(), 1);
    }
    assert!(absent(&mut x, t(10), "192.0.2.64").is_empty());
    assert_eq!(x.counters().rejected(Reject::RateTableFull), 1);
    assert_eq!(x.table_sizes().smr_sent_last, 4);
    // Once 3 s have passed the stale entries make room.
    assert_eq!(sends(&absent(&mut x, secs(3), "192.0.2.60")).len(), 1);
    assert_eq!(sends(&absent(&mut x, t(3010), "192.0.2.64")).len(), 1);
    assert!(x.table_sizes().smr_sent_last <= 4);
    // Addresses we cannot use: counted, nothing sent.
    let bad = x.handle_event(
        secs(20),
        Event::DataForAbsentEid {
            instance_id: 0,
            itr_rloc: ip("2001:db8::1"),
            src_eid: ip("203.0.113.9"),
            dst_eid: ip("198.51.100.77"),
        },
    );
    assert!(bad.is_empty());
    assert_eq!(x.counters().rejected(Reject::AbsentEidBadAddress), 1);
    assert_eq!(x.counters().sent_smr, 6);
    assert_eq!(x.counters().rx_data_for_absent_eid, 11);
}

// ------------------------------------------------------------------------------- static entries

/// `cfg()` with static entries: 203.0.113.0/24 positive, 203.0.113.128/25 send-map-request.
fn cfg_with_statics() -> XtrConfig {
    let mut c = cfg();
    c.map_servers.clear();
    c.static_map_cache = vec![
        StaticMapping {
            eid: pfx("203.0.113.0/24"),
            data: MapCacheData::Positive(vec![Locator {
                addr: ITR,
                priority: 1,
                weight: 100,
            }]),
        },
        StaticMapping {
            eid: pfx("203.0.113.128/25"),
            data: MapCacheData::Negative(Negative::SendMapRequest),
        },
    ];
    c
}

/// A miss for `dst` answered by a Map-Reply for `answer`: the actions of the reply.
fn resolve_with(x: &mut Xtr, now: Timestamp, dst: &str, answer: &str, ttl: u32) -> Vec<Action> {
    let req = miss_request(x, now, ip(dst));
    rx(
        x,
        now,
        MS1,
        &reply(req.nonce, answer, ttl, &[(ip("192.0.2.50"), 1)]),
    )
}

#[test]
fn static_entries_are_not_resolved_replaced_or_expired() {
    let mut x = Xtr::new(cfg_with_statics(), t(0));
    assert_eq!(x.static_entries().count(), 2);
    // Covered by the positive static /24: the data plane already encapsulates, no request.
    assert!(x.handle_miss(t(0), 0, HOST, ip("203.0.113.7")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissCached), 1);
    // The send-map-request /25 asks for resolution; the answer for exactly that prefix is not
    // installed (it would overwrite the static entry), and the resolution is over.
    assert!(resolve_with(&mut x, t(0), "203.0.113.200", "203.0.113.128/25", 1).is_empty());
    assert_eq!(x.counters().rejected(Reject::ReplyStatic), 1);
    assert!(!x.is_pending(&EidPrefix::host(0, ip("203.0.113.200"))));
    assert_eq!(x.cached().count(), 0);
    // Nor does a TTL-0 answer remove it.
    assert!(resolve_with(&mut x, t(10), "203.0.113.201", "203.0.113.128/25", 0).is_empty());
    assert_eq!(x.counters().rejected(Reject::ReplyStatic), 2);
    // Nothing is ever scheduled for the static entries.
    assert_eq!(x.next_deadline(), None);
    assert!(x.handle_timer(secs(365 * 86_400)).is_empty());
    assert_eq!(x.static_entries().count(), 2);
}

#[test]
fn a_learnt_prefix_inside_a_send_map_request_static_entry_is_cached() {
    let mut x = Xtr::new(cfg_with_statics(), t(0));
    let a = resolve_with(&mut x, t(0), "203.0.113.200", "203.0.113.192/26", 1);
    assert!(
        matches!(&a[..], [Action::InstallMapCache { eid, .. }] if *eid == pfx("203.0.113.192/26")),
        "{a:?}"
    );
    // The longer learnt prefix is the best match now: misses inside it are already served,
    // and it expires with its TTL while the static entries stay.
    assert!(x.handle_miss(t(1), 0, HOST, ip("203.0.113.250")).is_empty());
    assert_eq!(x.counters().rejected(Reject::MissCached), 1);
    let a = x.handle_timer(secs(60));
    assert_eq!(
        a,
        vec![Action::RemoveMapCache {
            eid: pfx("203.0.113.192/26")
        }]
    );
    assert_eq!(x.static_entries().count(), 2);
}

#[test]
fn smr_for_an_eid_of_a_static_entry_re_resolves_nothing() {
    let mut x = Xtr::new(cfg_with_statics(), t(0));
    // Best match the positive static /24, then the send-map-request static /25.
    for eid in ["203.0.113.7", "203.0.113.200"] {
        assert!(rx(&mut x, t(0), ip("192.0.2.50"), &smr(eid, "198.51.100.0/24")).is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::SmrStatic), 2);
    assert_eq!(x.counters().sent_smr_invoked, 0);
    // A learnt prefix more specific than the static one is re-resolved as usual.
    resolve_with(&mut x, t(0), "203.0.113.200", "203.0.113.192/26", 60);
    let a = rx(
        &mut x,
        secs(1),
        ip("192.0.2.50"),
        &smr("203.0.113.200", "198.51.100.0/24"),
    );
    let s = sends(&a);
    assert_eq!(s.len(), 1);
    let (_, req) = parse_ecm(&s[0].1);
    assert!(req.smr_invoked);
    assert_eq!(req.eids[0].prefix.to_string(), "203.0.113.200/32");
    assert_eq!(x.counters().rejected(Reject::SmrStatic), 2);
}

#[test]
fn sent_smrs_are_rate_limited_per_rloc() {
    let mut x = Xtr::new(cfg(), t(0));
    let eid = pfx("198.51.100.10/32");
    let a = x.send_smr(t(0), eid, ITR);
    let s = sends(&a);
    assert_eq!(s[0].0, sa(ITR));
    match Message::parse(&s[0].1).unwrap() {
        Message::MapRequest(r) => {
            assert!(r.smr);
            assert_eq!(r.eids[0].prefix.to_string(), "198.51.100.10/32");
            assert_eq!(r.itr_rlocs, vec![RLOC, RLOC_B]);
        }
        m => panic!("{m:?}"),
    }
    assert!(x.send_smr(t(2999), eid, ITR).is_empty());
    assert_eq!(x.counters().rejected(Reject::SmrSendRateLimited), 1);
    assert_eq!(sends(&x.send_smr(t(2999), eid, ip("192.0.2.34"))).len(), 1);
    assert_eq!(sends(&x.send_smr(secs(3), eid, ITR)).len(), 1);
    assert_eq!(x.counters().sent_smr, 3);
}

// ------------------------------------------------------------------------------- scale

/// 10k destinations through the whole cycle, with the work counted instead of timed (speed is
/// `cargo xtask bench`'s job): one Map-Request each, none retransmitted, repeated misses
/// absorbed, one install and one expiry each, every table empty at the end.
#[test]
fn ten_thousand_misses_each_cost_one_request_one_install_and_one_expiry() {
    let mut c = cfg();
    c.map_servers.clear();
    c.eid_space = vec![pfx("10.0.0.0/8")];
    let n = 10_000u32;
    c.limits.max_pending = n as usize;
    let mut x = Xtr::new(c, t(0));
    let dst = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    let mut nonces = Vec::with_capacity(n as usize);
    for i in 0..n {
        let a = x.handle_miss(t(1), 0, HOST, dst(i));
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        let (_, req) = parse_ecm(&s[0].1);
        nonces.push((req.nonce, dst(i)));
    }
    for i in 0..n {
        assert!(x.handle_miss(t(2), 0, HOST, dst(i)).is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::MissPending), u64::from(n));
    let mut installed = 0;
    for (nonce, dst) in &nonces {
        let r = reply(*nonce, &format!("{dst}/32"), 1, &[(ip("192.0.2.50"), 1)]);
        installed += rx(&mut x, t(500), MS1, &r).len();
    }
    assert_eq!(installed, n as usize);
    assert_eq!(x.cached().count(), n as usize);
    // Nothing was due before the TTL: no retransmission, no expiry.
    assert_eq!(x.next_deadline(), Some(t(500 + 60_000)));
    let a = x.handle_timer(t(500 + 60_000));
    let removed = a
        .iter()
        .filter(|a| matches!(a, Action::RemoveMapCache { .. }))
        .count();
    assert_eq!(removed, n as usize);
    let c = x.counters();
    assert_eq!(
        (
            c.miss_resolving,
            c.sent_map_request,
            c.sent_map_request_retry,
            c.rx_map_reply,
            c.map_cache_installed,
            c.map_cache_expired
        ),
        (
            u64::from(n),
            u64::from(n),
            0,
            u64::from(n),
            u64::from(n),
            u64::from(n)
        )
    );
    assert_eq!(x.table_sizes(), TableSizes::default());
    assert_eq!(x.next_deadline(), None);
}

/// A scan of a million distinct destinations at 100k misses/s with a map-resolver that answers
/// nothing: every table stays within its bound all along, every miss is accounted for, the
/// Map-Requests sent are bounded by the pending table (one per live resolution per second),
/// and once the scan stops a real destination resolves within one give-up period (10 s).
#[test]
fn a_scan_of_a_million_destinations_keeps_tables_bounded_and_a_real_one_resolves_after() {
    let mut c = cfg();
    c.map_servers.clear();
    c.eid_space = vec![pfx("10.0.0.0/8")];
    c.limits = XtrLimits {
        max_pending: 1000,
        max_cache: 5000,
        max_rate_entries: 100,
    };
    let lim = c.limits;
    let mut x = Xtr::new(c, t(0));
    let mut requests = 0u64;
    let mut misses = 0u64;
    let check = |x: &Xtr| {
        let z = x.table_sizes();
        assert!(z.pending <= lim.max_pending, "{z:?}");
        assert_eq!(z.pending_timers, z.pending, "{z:?}");
        assert!(
            z.request_nonces <= lim.max_pending * resolve::MAX_REQUESTS as usize,
            "{z:?}"
        );
        assert!(
            z.cache <= lim.max_cache && z.cache_timers == z.cache,
            "{z:?}"
        );
        assert!(z.smr_invoked_last <= lim.max_rate_entries, "{z:?}");
        assert!(z.smr_sent_last <= lim.max_rate_entries, "{z:?}");
    };
    // 10 s, 100 new destinations every millisecond.
    for ms in 0..10_000u64 {
        for k in 0..100u64 {
            let i = (ms * 100 + k) as u32;
            let a = x.handle_miss(t(ms), 0, HOST, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            requests += sends(&a).len() as u64;
            misses += 1;
        }
        for (_, a) in run_timers(&mut x, t(ms)) {
            requests += sends(&a).len() as u64;
        }
        if ms % 500 == 0 {
            check(&x);
        }
    }
    check(&x);
    assert_eq!(misses, 1_000_000);
    let c = x.counters();
    assert_eq!(
        c.miss_resolving + c.rejected(Reject::PendingTableFull),
        misses,
        "each miss started a resolution or was refused for room"
    );
    assert_eq!(requests, c.sent_map_request);
    // The first 1000 destinations (the first 10 ms) fill the table; each is asked for once a
    // second, 10 times, all within the scan; nothing else gets in before they give up.
    let max_pending = lim.max_pending as u64;
    assert_eq!(c.miss_resolving, max_pending);
    assert_eq!(requests, max_pending * u64::from(resolve::MAX_REQUESTS));
    // The scan stops. At most 10 s later every resolution it started has given up, and a real
    // destination takes the room of a held-down one.
    let end = t(10_000);
    run_timers(&mut x, end + Duration::from_secs(10));
    let now = end + Duration::from_secs(10);
    let real = ip("10.200.0.1");
    let req = miss_request(&mut x, now, real);
    let a = rx(
        &mut x,
        now,
        MS1,
        &reply(req.nonce, "10.200.0.0/16", 10, &[(ip("192.0.2.50"), 1)]),
    );
    assert!(
        matches!(&a[..], [Action::InstallMapCache { eid, .. }] if *eid == pfx("10.200.0.0/16")),
        "{a:?}"
    );
    assert_eq!(x.counters().pending_evicted, 1);
    check(&x);
}

#[test]
fn learnt_map_cache_is_bounded_and_full_is_counted() {
    let mut c = cfg();
    c.map_servers.clear();
    c.eid_space = vec![pfx("10.0.0.0/8")];
    c.limits.max_cache = 100;
    let mut x = Xtr::new(c, t(0));
    for i in 0..150u32 {
        let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let req = miss_request(&mut x, t(1), dst);
        rx(
            &mut x,
            t(2),
            MS1,
            &negative_reply(
                req.nonce,
                &format!("{dst}/32"),
                1,
                WireAction::NativelyForward,
            ),
        );
    }
    assert_eq!(x.cached().count(), 100);
    assert_eq!(x.counters().rejected(Reject::CacheFull), 50);
    assert_eq!(x.counters().map_cache_installed, 100);
    assert_eq!(x.table_sizes().cache_timers, 100);
}

// ------------------------------------------------------------------------------- reply acceptance

#[test]
fn a_map_reply_is_accepted_only_for_a_record_covering_the_eid_asked_for() {
    let mut c = cfg();
    c.map_servers.clear();
    c.eid_space.clear();
    let mut x = Xtr::new(c, t(0));
    let asked = ip("203.0.113.7");
    let req = miss_request(&mut x, t(0), asked);
    let wrong = [
        // Everything: would capture the underlay too.
        reply(req.nonce, "0.0.0.0/0", 60, &[(ip("192.0.2.66"), 1)]),
        // Unrelated, and a neighbour inside the same /24 that does not hold the EID.
        reply(req.nonce, "198.18.0.0/15", 60, &[(ip("192.0.2.66"), 1)]),
        reply(req.nonce, "203.0.113.128/25", 60, &[(ip("192.0.2.66"), 1)]),
        reply(req.nonce, "203.0.113.8/32", 60, &[(ip("192.0.2.66"), 1)]),
    ];
    for r in &wrong {
        assert!(rx(&mut x, t(1), MS1, r).is_empty());
    }
    assert_eq!(x.counters().rejected(Reject::ReplyTooBroad), 1);
    assert_eq!(x.counters().rejected(Reject::ReplyEidMismatch), 3);
    assert_eq!(x.cached().count(), 0);
    assert!(x.is_pending(&EidPrefix::host(0, asked)), "still waiting");
    // A record that covers it is the answer; the same nonce is then spent.
    let good = reply(req.nonce, "203.0.113.0/25", 60, &[(ip("192.0.2.50"), 1)]);
    assert_eq!(rx(&mut x, t(2), MS1, &good).len(), 1);
    assert!(rx(&mut x, t(3), MS1, &good).is_empty());
    assert_eq!(x.counters().rejected(Reject::ReplyUnsolicited), 1);
}

#[test]
fn a_record_broader_than_the_eid_space_is_cached_as_the_eid_space_prefix() {
    // cfg(): EID space 203.0.113.0/24. A negative /0 (say) from the map-resolver holds for the
    // EID space around the EID, and only there: caching the /0 would take every destination.
    let mut x = Xtr::new(cfg(), t(0));
    let req = miss_request(&mut x, t(0), ip("203.0.113.7"));
    let a = rx(
        &mut x,
        t(1),
        MS1,
        &negative_reply(req.nonce, "0.0.0.0/0", 15, WireAction::NativelyForward),
    );
    assert!(
        matches!(&a[..], [Action::InstallMapCache { eid, .. }] if *eid == pfx("203.0.113.0/24")),
        "{a:?}"
    );
}

// ------------------------------------------------------------------------------- Map-Notify records

/// An unsolicited Map-Notify from map-server 2 (key k2), with these records.
fn unsolicited(nonce: u64, records: Vec<Record>, xtr: Option<XtrId>) -> Vec<u8> {
    let n = MapNotify {
        nonce,
        auth: Auth::zeroed(Algorithm::HmacSha1),
        records,
        xtr,
        ..MapNotify::default()
    };
    auth::emit_signed(&Message::MapNotify(n), b"k2").unwrap()
}

fn record(eid: &str, ttl: u32, locators: &[&str]) -> Record {
    let p = pfx(eid);
    let mut r = Record::new(Eid::new(None, IpPrefix::new(p.addr, p.len).unwrap()), ttl);
    r.locators = locators
        .iter()
        .map(|a| WireLocator::new(ip(a), 1, 100))
        .collect();
    r
}

fn acked(a: &[Action], nonce: u64) -> bool {
    sends(a).iter().any(|(to, b)| {
        *to == sa(MS2)
            && matches!(Message::parse(b), Ok(Message::MapNotifyAck(k)) if k.nonce == nonce)
    })
}

fn installs(a: &[Action]) -> Vec<(EidPrefix, Vec<IpAddr>)> {
    a.iter()
        .filter_map(|a| match a {
            Action::InstallMapCache {
                eid,
                data: MapCacheData::Positive(l),
                ..
            } => Some((*eid, l.iter().map(|l| l.addr).collect())),
            _ => None,
        })
        .collect()
}

fn removals(a: &[Action]) -> Vec<EidPrefix> {
    a.iter()
        .filter_map(|a| match a {
            Action::RemoveMapCache { eid } => Some(*eid),
            _ => None,
        })
        .collect()
}

#[test]
fn records_of_an_unsolicited_map_notify_update_the_map_cache() {
    let mut x = Xtr::new(cfg(), t(0));
    let req = miss_request(&mut x, t(0), ip("203.0.113.20"));
    rx(
        &mut x,
        t(1),
        MS1,
        &reply(req.nonce, "203.0.113.0/24", 60, &[(ip("192.0.2.50"), 1)]),
    );
    // The site's RLOC changed: replaced.
    let a = rx(
        &mut x,
        secs(1),
        MS2,
        &unsolicited(1, vec![record("203.0.113.0/24", 60, &["192.0.2.51"])], None),
    );
    assert_eq!(
        installs(&a),
        vec![(pfx("203.0.113.0/24"), vec![ip("192.0.2.51")])]
    );
    assert!(acked(&a, 1));
    // A host of it moved elsewhere: installed beside it.
    let a = rx(
        &mut x,
        secs(2),
        MS2,
        &unsolicited(2, vec![record("203.0.113.9/32", 60, &["192.0.2.60"])], None),
    );
    assert_eq!(
        installs(&a),
        vec![(pfx("203.0.113.9/32"), vec![ip("192.0.2.60")])]
    );
    // One of our own EIDs is now registered elsewhere: our ITR sends its traffic there.
    let a = rx(
        &mut x,
        secs(3),
        MS2,
        &unsolicited(
            3,
            vec![record("198.51.100.10/32", 60, &["192.0.2.70"])],
            None,
        ),
    );
    assert_eq!(
        installs(&a),
        vec![(pfx("198.51.100.10/32"), vec![ip("192.0.2.70")])]
    );
    // ...and it came back: its locators are ours, the away entry goes.
    let a = rx(
        &mut x,
        secs(4),
        MS2,
        &unsolicited(
            4,
            vec![record("198.51.100.10/32", 60, &["192.0.2.17"])],
            None,
        ),
    );
    assert_eq!(removals(&a), vec![pfx("198.51.100.10/32")]);
    // Withdrawn: TTL 0, or no locators.
    let a = rx(
        &mut x,
        secs(5),
        MS2,
        &unsolicited(
            5,
            vec![
                record("203.0.113.9/32", 0, &["192.0.2.60"]),
                record("203.0.113.0/24", 60, &[]),
            ],
            None,
        ),
    );
    assert_eq!(
        removals(&a),
        vec![pfx("203.0.113.9/32"), pfx("203.0.113.0/24")]
    );
    assert!(acked(&a, 5));
    assert_eq!(x.cached().count(), 0);
    assert_eq!(
        (
            x.counters().notify_cache_updated,
            x.counters().notify_cache_removed
        ),
        (3, 3)
    );
    // Our own registration echoed, a /0: acknowledged, not cached.
    let a = rx(
        &mut x,
        secs(6),
        MS2,
        &unsolicited(
            6,
            vec![
                record("198.51.100.0/24", 60, &["192.0.2.17"]),
                record("0.0.0.0/0", 60, &["192.0.2.66"]),
            ],
            None,
        ),
    );
    assert!(installs(&a).is_empty() && acked(&a, 6));
    assert_eq!(x.counters().rejected(Reject::NotifyOwnRecord), 1);
    assert_eq!(x.counters().rejected(Reject::ReplyTooBroad), 1);
    // Not for us (another xTR-ID), or not from a map-server with its key: nothing at all.
    let mut c = cfg();
    c.xtr_id = Some(XtrId {
        xtr_id: [1; 16],
        site_id: 0,
    });
    let mut y = Xtr::new(c, t(0));
    let other = Some(XtrId {
        xtr_id: [2; 16],
        site_id: 0,
    });
    let n = unsolicited(
        7,
        vec![record("203.0.113.0/24", 60, &["192.0.2.66"])],
        other,
    );
    assert!(rx(&mut y, secs(7), MS2, &n).is_empty());
    assert_eq!(y.counters().rejected(Reject::NotifyOtherXtr), 1);
    let n = unsolicited(8, vec![record("203.0.113.0/24", 60, &["192.0.2.66"])], None);
    assert!(rx(&mut y, secs(7), ip("192.0.2.99"), &n).is_empty());
    assert!(rx(&mut y, secs(7), MS1, &n).is_empty(), "MS1's key is k1");
    assert_eq!(y.cached().count(), 0);
}

#[test]
fn a_retransmitted_notify_is_acked_again_but_does_not_undo_a_later_one() {
    let mut x = Xtr::new(cfg(), t(0));
    let old = unsolicited(1, vec![record("203.0.113.0/24", 60, &["192.0.2.51"])], None);
    let new = unsolicited(2, vec![record("203.0.113.0/24", 60, &["192.0.2.52"])], None);
    rx(&mut x, secs(1), MS2, &old);
    rx(&mut x, secs(2), MS2, &new);
    // Our ack of the first was lost: the map-server sends it again.
    let a = rx(&mut x, secs(3), MS2, &old);
    assert!(acked(&a, 1));
    assert!(installs(&a).is_empty());
    assert_eq!(x.counters().rx_map_notify_repeated, 1);
    let (_, m) = x.cached().next().unwrap();
    assert!(matches!(m.data, MapCacheData::Positive(l) if l[0].addr == ip("192.0.2.52")));
}

#[test]
fn a_notify_record_answers_a_pending_resolution() {
    let mut x = Xtr::new(cfg(), t(0));
    miss_request(&mut x, t(0), ip("203.0.113.20"));
    assert!(x.is_pending(&EidPrefix::host(0, ip("203.0.113.20"))));
    rx(
        &mut x,
        t(10),
        MS2,
        &unsolicited(1, vec![record("203.0.113.0/24", 60, &["192.0.2.51"])], None),
    );
    assert!(!x.is_pending(&EidPrefix::host(0, ip("203.0.113.20"))));
    // No retransmission is due any more.
    run_timers(&mut x, secs(20));
    assert_eq!(x.counters().sent_map_request, 1);
}

// ------------------------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Valid messages the xTR has no business acting on (a Map-Reply whose nonce answers
        /// nothing pending, a Map-Notify signed with another key, Map-Requests and an SMR for
        /// EIDs it has not cached), each with 1–3 bytes changed and possibly cut short or
        /// extended: they get past the first bytes of the parser, unlike random bytes, and still
        /// never install anything, register, or move a timer.
        #[test]
        fn mutated_messages_change_nothing(
            template in 0usize..5,
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
            // Mostly whole messages, so that many mutants still parse.
            cut in proptest::option::weighted(0.1, any::<usize>()),
            tail in prop_oneof![9 => Just(Vec::new()), 1 => proptest::collection::vec(any::<u8>(), 1..8)],
        ) {
            let mut x = Xtr::new(cfg(), t(0));
            let register = sends_to(&x.handle_timer(t(0)), MS1).remove(0);
            let pending = miss_request(&mut x, t(0), ip("203.0.113.7")).nonce;
            let deadline = x.next_deadline();
            // The registration state (not its counters: a bad MAC is counted there).
            let state = |x: &Xtr| {
                x.registrations(t(1))
                    .iter()
                    .map(|r| (r.state, r.last_notify, r.next_send, r.map_notifies_accepted))
                    .collect::<Vec<_>>()
            };
            let regs = state(&x);
            // Every byte of this nonce differs from the pending one, so three changed bytes
            // cannot turn it into an answer.
            let unrelated = !pending;
            let mut bytes = match template {
                0 => reply(unrelated, "203.0.113.0/24", 10, &[(ITR, 1)]),
                1 => negative_reply(unrelated, "203.0.113.0/24", 10, WireAction::NativelyForward),
                2 => notify_for(&register, b"not-the-key"),
                3 => Message::MapRequest(request(7, "198.51.100.10/32", false)).to_vec().unwrap(),
                _ => smr("203.0.113.0", "198.51.100.0/24"),
            };
            for (pos, xor) in &flips {
                let i = pos % bytes.len();
                bytes[i] ^= xor;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            let a = rx(&mut x, t(1), MS1, &bytes);
            let touched_cache = a
                .iter()
                .any(|a| matches!(a, Action::InstallMapCache { .. } | Action::RemoveMapCache { .. }));
            prop_assert!(!touched_cache);
            prop_assert_eq!(x.next_deadline(), deadline);
            prop_assert_eq!(state(&x), regs);
            prop_assert_eq!(x.cached().count(), 0);
        }

        /// No single-bit corruption of a genuine Map-Notify registers.
        #[test]
        fn corrupted_map_notify_never_registers(bit in 0usize..(8 * 200)) {
            let mut x = Xtr::new(cfg(), t(0));
            let reg = sends_to(&x.handle_timer(t(0)), MS1).remove(0);
            let mut n = notify_for(&reg, b"k1");
            let bit = bit % (8 * n.len());
            n[bit / 8] ^= 1 << (bit % 8);
            rx(&mut x, t(1), MS1, &n);
            prop_assert_eq!(x.registrations(t(1))[0].state, RegistrationState::Registering);
        }

        /// No single-bit corruption of a genuine unsolicited Map-Notify (a publication, say)
        /// reaches the map-cache or is acknowledged; the genuine one does both.
        #[test]
        fn corrupted_unsolicited_notify_never_touches_the_cache(bit in 0usize..(8 * 200)) {
            let mut x = Xtr::new(cfg(), t(0));
            let good = unsolicited(7, vec![record("203.0.113.0/24", 60, &["192.0.2.51"])], None);
            let mut n = good.clone();
            let bit = bit % (8 * n.len());
            n[bit / 8] ^= 1 << (bit % 8);
            let a = rx(&mut x, t(1), MS2, &n);
            prop_assert!(a.is_empty(), "{:?}", a);
            prop_assert_eq!(x.cached().count(), 0);
            let a = rx(&mut x, t(2), MS2, &good);
            prop_assert_eq!(installs(&a).len(), 1);
            prop_assert!(acked(&a, 7));
        }
    }
}

// ------------------------------------------------------------------------------- with a map-server

/// xTRs and our own map-server core in the shared simulation harness (`core::sim`): RFC 9437
/// (the ITR resolves once, the ETR's RLOC changes, the ITR learns it from the publication
/// alone), and a host moving out of a site's /24 (SMR from the old ETR, the ITR learns the /32).
mod mapping_system {
    use super::*;
    use crate::core::node::NodeConfig;
    use crate::core::sim::build::{map_server, xtr};
    use crate::core::sim::{DataOutcome, NodeId, Sim};

    const KEY: &[u8] = b"the-sites-key";
    const MS: &str = "192.0.2.1";
    const HOST_A: &str = "198.51.100.10";

    /// A map-server for both sites, ITR A (198.51.100.0/24 at .17, `subscribe` as given) and
    /// ETR B (203.0.113.0/24 at .33), registered; A has resolved 203.0.113.10 once.
    fn two_sites(subscribe: bool) -> (Sim, NodeId, NodeId) {
        let mut sim = Sim::new(1);
        let ms = map_server(KEY, &["198.51.100.0/24", "203.0.113.0/24"]);
        sim.add_node("ms", NodeConfig::map_server(ms), &[MS]);
        let mut ca = xtr("192.0.2.17", &["198.51.100.0/24"], &[MS], KEY);
        ca.subscribe = subscribe;
        let a = sim.add_node("a", NodeConfig::xtr(ca), &[]);
        let cb = xtr("192.0.2.33", &["203.0.113.0/24"], &[MS], KEY);
        let b = sim.add_node("b", NodeConfig::xtr(cb), &[]);
        sim.run_for(Duration::from_secs(2));
        assert_eq!(
            sim.send_data(a, 0, HOST_A, "203.0.113.10"),
            DataOutcome::Miss
        );
        assert!(sim.run_until_quiet(Duration::from_secs(5)));
        assert_eq!(
            sim.send_data(a, 0, HOST_A, "203.0.113.10"),
            DataOutcome::Encapsulated {
                rloc: ip("192.0.2.33"),
                etr: Some(b),
                owned: true
            }
        );
        (sim, a, b)
    }

    /// B comes back on a new RLOC (.33 → .34): same xTR-ID, Map-Register nonces higher (a
    /// restart), and re-registers. Returns the new node.
    fn etr_moves_to_a_new_rloc(sim: &mut Sim, b: NodeId) -> NodeId {
        let old = sim.node(b).xtr().config().clone();
        sim.set_down(b, true);
        let mut c = xtr("192.0.2.34", &["203.0.113.0/24"], &[MS], KEY);
        c.xtr_id = old.xtr_id;
        c.register_nonce_base = 1 << 40;
        let b2 = sim.add_node("b-moved", NodeConfig::xtr(c), &[]);
        sim.run_for(Duration::from_secs(2));
        b2
    }

    fn rloc_of(sim: &Sim, a: NodeId, dst: &str) -> Vec<IpAddr> {
        match sim.lookup(a, 0, dst) {
            Some((_, MapCacheData::Positive(l))) => l.iter().map(|l| l.addr).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_subscribed_itr_learns_a_changed_rloc_set_without_traffic() {
        let (mut sim, a, b) = two_sites(true);
        let b2 = etr_moves_to_a_new_rloc(&mut sim, b);
        assert_eq!(rloc_of(&sim, a, "203.0.113.10"), vec![ip("192.0.2.34")]);
        let x = sim.node(a).xtr();
        // One Map-Request in all (the miss); the change came as a publication, acknowledged
        // (the map-server has nothing left to retransmit to A).
        assert_eq!(x.counters().sent_map_request, 1);
        assert_eq!(x.counters().notify_cache_updated, 1);
        assert_eq!(x.counters().sent_map_notify_ack, 1);
        let ms = sim.node(0).map_server().unwrap();
        assert_eq!(ms.subscription_count(), 1);
        assert_eq!(
            sim.send_data(a, 0, HOST_A, "203.0.113.10"),
            DataOutcome::Encapsulated {
                rloc: ip("192.0.2.34"),
                etr: Some(b2),
                owned: true
            }
        );
    }

    #[test]
    fn without_subscription_the_itr_keeps_the_old_rloc_set() {
        let (mut sim, a, b) = two_sites(false);
        etr_moves_to_a_new_rloc(&mut sim, b);
        assert_eq!(rloc_of(&sim, a, "203.0.113.10"), vec![ip("192.0.2.33")]);
        assert_eq!(sim.node(0).map_server().unwrap().subscription_count(), 0);
    }

    #[test]
    fn map_requests_subscribe_with_the_n_bit_and_the_xtr_id_only_when_configured() {
        for subscribe in [false, true] {
            let mut c = xtr("192.0.2.17", &["198.51.100.0/24"], &[MS], KEY);
            c.subscribe = subscribe;
            let id = c.xtr_id;
            let mut x = Xtr::new(c, t(0));
            let s = sends(&x.handle_miss(t(0), 0, ip(HOST_A), ip("203.0.113.10")));
            let req = parse_ecm(&s[0].1).1;
            assert_eq!(req.notify_requested, subscribe);
            assert_eq!(req.xtr, if subscribe { id } else { None });
        }
    }

    #[test]
    fn a_host_moved_out_of_a_cached_prefix_is_learnt_as_a_host_after_the_old_etrs_smr() {
        let (mut sim, a, b) = two_sites(false);
        // The host moves behind C, which registers it as a /32 of the site.
        let moved = "203.0.113.7";
        let cc = xtr("192.0.2.49", &["203.0.113.7/32"], &[MS], KEY);
        let c = sim.add_node("c", NodeConfig::xtr(cc), &[]);
        sim.run_for(Duration::from_secs(2));
        // A still sends the host's traffic to B, whose data plane no longer finds the host.
        assert!(matches!(
            sim.send_data(a, 0, HOST_A, moved),
            DataOutcome::Encapsulated { etr: Some(e), .. } if e == b
        ));
        sim.inject(
            b,
            Event::DataForAbsentEid {
                instance_id: 0,
                itr_rloc: ip("192.0.2.17"),
                src_eid: ip(HOST_A),
                dst_eid: ip(moved),
            },
        );
        assert!(sim.run_until_quiet(Duration::from_secs(5)));
        assert_eq!(
            sim.send_data(a, 0, HOST_A, moved),
            DataOutcome::Encapsulated {
                rloc: ip("192.0.2.49"),
                etr: Some(c),
                owned: true
            }
        );
        let x = sim.node(a).xtr();
        assert_eq!((x.counters().rx_smr, x.counters().sent_smr_invoked), (1, 1));
        assert_eq!(sim.node(b).xtr().counters().sent_smr, 1);
        // The /24 keeps serving the hosts that stayed.
        let cached: Vec<EidPrefix> = sim.map_cache(a).keys().copied().collect();
        assert_eq!(cached, vec![pfx("203.0.113.0/24"), pfx("203.0.113.7/32")]);
        assert_eq!(rloc_of(&sim, a, "203.0.113.10"), vec![ip("192.0.2.33")]);
    }
}

#[test]
fn a_locator_in_an_unknown_lcaf_is_skipped_and_counted_and_the_rest_of_the_reply_used() {
    let mut c = cfg();
    c.map_servers.clear();
    let mut x = Xtr::new(c, t(0));
    let req = miss_request(&mut x, t(0), ip("203.0.113.7"));
    let mut r = reply(req.nonce, "203.0.113.0/24", 2, &[(ip("192.0.2.50"), 1)]);
    // A second locator as an explicit-locator-path LCAF (type 10), as a peer with re-encapsulating
    // tunnel routers may send: locator count 1 → 2, the locator appended after the first.
    r[16] = 2;
    r.extend_from_slice(&[
        1, 100, 255, 0, 0, 1, 0x40, 0x03, 0, 0, 10, 0, 0, 8, 0, 0, 0, 1, 192, 0, 2, 9,
    ]);
    let a = rx(&mut x, t(10), MS1, &r);
    match &a[..] {
        [Action::InstallMapCache { eid, data, .. }] => {
            assert_eq!(*eid, pfx("203.0.113.0/24"));
            let MapCacheData::Positive(l) = data else {
                panic!("{data:?}")
            };
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].addr, ip("192.0.2.50"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(x.counters().skipped_locators, 1);
    assert_eq!(x.counters().skipped_records, 0);
    assert_eq!(x.counters().rejected(Reject::Malformed), 0);
}
