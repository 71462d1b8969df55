//! Map-server behaviour under a simulated clock, and against OOR's map-server (captures).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Algorithm};
use lisp_common::wire::control::ecm::udp_checksum;
use lisp_common::wire::control::{
    Action as RecordAction, Address, Auth, Ecm, Eid, IpPrefix, Locator, MapNotify, MapRegister,
    MapReply, MapRequest, Message, Record, XtrId,
};

use super::*;
use crate::core::action::{Action, Event};
use crate::core::time::Timestamp;

const K1: &[u8] = b"site1-secret";
const K2: &[u8] = b"site2-secret";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn eid(s: &str) -> Eid {
    let (a, l) = s.split_once('/').unwrap();
    Eid::new(None, IpPrefix::new(ip(a), l.parse().unwrap()).unwrap())
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn site(name: &str, key: &[u8], algorithm: Algorithm, prefixes: &[(&str, bool)]) -> SiteConfig {
    SiteConfig {
        name: name.into(),
        key: key.to_vec(),
        algorithm,
        prefixes: prefixes
            .iter()
            .map(|(p, ams)| SitePrefix {
                eid: eid(p),
                accept_more_specifics: *ams,
            })
            .collect(),
    }
}

/// The OOR lab's two sites (HMAC-SHA-1, as OOR 1.3 only speaks that).
fn oor_config() -> MapServerConfig {
    MapServerConfig {
        sites: vec![
            site(
                "site1",
                K1,
                Algorithm::HmacSha1,
                &[("198.51.100.0/24", true), ("2001:db8:1::/48", true)],
            ),
            site(
                "site2",
                K2,
                Algorithm::HmacSha1,
                &[("203.0.113.0/24", true), ("2001:db8:2::/48", true)],
            ),
        ],
        nonce_check: NonceCheck::NoRepeat,
        ..MapServerConfig::default()
    }
}

/// Site 1 with SHA-256 and a prefix that refuses more-specifics, site 2 as in OOR.
fn config() -> MapServerConfig {
    MapServerConfig {
        sites: vec![
            site(
                "site1",
                K1,
                Algorithm::HmacSha256,
                &[
                    ("198.51.100.0/24", true),
                    ("2001:db8:1::/48", true),
                    ("192.0.2.128/25", false),
                ],
            ),
            site(
                "site2",
                K2,
                Algorithm::HmacSha256,
                &[("203.0.113.0/24", true), ("2001:db8:2::/48", true)],
            ),
        ],
        ..MapServerConfig::default()
    }
}

const MS: &str = "192.0.2.1:4342";
const ETR1: &str = "192.0.2.17:4342";
const ETR2: &str = "192.0.2.33:4342";

fn record(e: &str, ttl: u32, rlocs: &[&str]) -> Record {
    let mut r = Record::new(eid(e), ttl);
    r.locators = rlocs
        .iter()
        .map(|a| {
            let mut l = Locator::new(ip(a), 1, 100);
            l.local = true;
            l
        })
        .collect();
    r
}

struct Reg {
    nonce: u64,
    records: Vec<Record>,
    proxy: bool,
    want_notify: bool,
    use_ttl: bool,
    xtr: Option<XtrId>,
    alg: Algorithm,
    key: &'static [u8],
}

impl Reg {
    fn new(nonce: u64, records: Vec<Record>, key: &'static [u8]) -> Self {
        Reg {
            nonce,
            records,
            proxy: false,
            want_notify: true,
            use_ttl: false,
            xtr: None,
            alg: Algorithm::HmacSha256,
            key,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let m = MapRegister {
            proxy_reply: self.proxy,
            want_map_notify: self.want_notify,
            use_ttl: self.use_ttl,
            nonce: self.nonce,
            auth: Auth::zeroed(self.alg),
            records: self.records.clone(),
            xtr: self.xtr,
            ..MapRegister::default()
        };
        let mut v = m.to_vec().unwrap();
        auth::sign(&mut v, self.key).unwrap();
        v
    }
}

/// An ECM Map-Request from ITR `itr` for `dst` (host EID), source EID `src`; `n` sets the
/// RFC 9437 N bit (the codec does not model it: set in the bytes, UDP checksum redone).
fn ecm(src: &str, dst: &str, itrs: &[&str], nonce: u64, n: bool, xtr: Option<XtrId>) -> Vec<u8> {
    let req = MapRequest {
        nonce,
        source_eid: Address::ip(ip(src)),
        itr_rlocs: itrs.iter().map(|a| ip(a)).collect(),
        eids: vec![Eid::new(None, IpPrefix::host(ip(dst)))],
        xtr,
        ..MapRequest::default()
    };
    let e = Ecm::new(ip(src), ip(dst), Message::MapRequest(req.clone())).unwrap();
    let mut v = e.to_vec().unwrap();
    if n {
        let iph = e.ip.header_len();
        let inner = 4 + iph + 8;
        let rec = 12
            + req.source_eid.wire_len()
            + req
                .itr_rlocs
                .iter()
                .map(|a| Address::ip(*a).wire_len())
                .sum::<usize>();
        v[inner + rec] |= 0x80;
        let udp = 4 + iph;
        v[udp + 6] = 0;
        v[udp + 7] = 0;
        let c = udp_checksum(ip(src), ip(dst), &v[udp..]);
        v[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
        assert!(Ecm::parse(&v).is_ok());
    }
    v
}

fn dg(ms: &mut MapServer, from: &str, bytes: &[u8], now: Timestamp) -> Vec<Action> {
    ms.handle(
        &Event::Datagram {
            from: sa(from),
            to: sa(MS),
            bytes: bytes.to_vec(),
        },
        now,
    )
}

fn sends(actions: &[Action]) -> Vec<(SocketAddr, Vec<u8>)> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send { to, payload, .. } => (*to, payload.clone()),
            other => panic!("unexpected action {other:?}"),
        })
        .collect()
}

/// The source address each datagram among `actions` names.
fn froms(actions: &[Action]) -> Vec<Option<IpAddr>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { from, .. } => Some(*from),
            _ => None,
        })
        .collect()
}

fn one_send(actions: &[Action]) -> (SocketAddr, Vec<u8>) {
    let s = sends(actions);
    assert_eq!(s.len(), 1, "{actions:?}");
    s.into_iter().next().unwrap()
}

fn reply(bytes: &[u8]) -> MapReply {
    MapReply::parse(bytes).unwrap()
}

// ---- Map-Register ----------------------------------------------------------------------

#[test]
fn registration_stores_and_map_notify_echoes() {
    let mut ms = MapServer::new(config());
    let reg = Reg::new(
        7,
        vec![record("198.51.100.0/24", 1440, &["192.0.2.17"])],
        K1,
    );
    let acts = dg(&mut ms, ETR1, &reg.bytes(), t(0));
    let (to, payload) = one_send(&acts);
    assert_eq!(to, sa(ETR1));
    assert!(matches!(acts[0], Action::Send { from: Some(f), .. } if f == ip("192.0.2.1")));
    let n = MapNotify::parse(&payload).unwrap();
    assert_eq!(n.nonce, 7);
    auth::verify(&payload, K1).unwrap();
    assert!(auth::verify(&payload, K2).is_err());
    // Same record, but the L bit describes the ETR, not the map-server: cleared (as OOR does).
    let mut expect = record("198.51.100.0/24", 1440, &["192.0.2.17"]);
    expect.locators[0].local = false;
    assert_eq!(n.records, vec![expect.clone()]);
    let r = ms.registration(&eid("198.51.100.0/24"), t(1)).unwrap();
    assert_eq!(r.record, expect);
    assert_eq!(r.etr, sa(ETR1));
    assert!(!r.proxy_reply);
    assert_eq!(ms.counters().registrations_created, 1);
    assert_eq!(ms.counters().tx_map_notify, 1);

    // Without M: stored, nothing sent.
    let mut reg = Reg::new(
        8,
        vec![record("198.51.100.0/24", 1440, &["192.0.2.17"])],
        K1,
    );
    reg.want_notify = false;
    assert!(dg(&mut ms, ETR1, &reg.bytes(), t(60)).is_empty());
    assert_eq!(ms.counters().registrations_refreshed, 1);
}

#[test]
fn wrong_key_or_algorithm_is_dropped_without_state_change() {
    let mut ms = MapServer::new(config());
    let reg = Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K2);
    assert!(dg(&mut ms, ETR1, &reg.bytes(), t(0)).is_empty());
    assert_eq!(ms.counters().rejected_auth_failed, 1);
    assert!(ms.registrations().next().is_none());
    assert_eq!(ms.next_deadline(), None);

    let mut reg = Reg::new(2, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1);
    reg.alg = Algorithm::HmacSha1;
    assert!(dg(&mut ms, ETR1, &reg.bytes(), t(0)).is_empty());
    assert_eq!(ms.counters().rejected_wrong_algorithm, 1);

    // A flipped bit anywhere after signing breaks the MAC.
    let mut bytes = Reg::new(3, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(dg(&mut ms, ETR1, &bytes, t(0)).is_empty());
    assert_eq!(ms.counters().rejected_auth_failed, 2);
    assert!(ms.registrations().next().is_none());
    // The failed attempts did not consume nonces: nonce 1 is still good.
    let reg = Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1);
    assert_eq!(dg(&mut ms, ETR1, &reg.bytes(), t(0)).len(), 1);
}

#[test]
fn legacy_increasing_policy_rejects_replayed_or_old_nonces() {
    let mut ms = MapServer::new(MapServerConfig {
        nonce_check: NonceCheck::Increasing,
        ..config()
    });
    let rec = || vec![record("198.51.100.0/24", 10, &["192.0.2.17"])];
    let first = Reg::new(5, rec(), K1).bytes();
    assert_eq!(dg(&mut ms, ETR1, &first, t(0)).len(), 1);
    // The same message again (a replay), and an older nonce.
    assert!(dg(&mut ms, ETR1, &first, t(1)).is_empty());
    assert!(dg(&mut ms, ETR1, &Reg::new(4, rec(), K1).bytes(), t(1)).is_empty());
    assert_eq!(ms.counters().rejected_replayed_nonce, 2);
    // The replay did not refresh the registration.
    assert_eq!(
        ms.registration(&eid("198.51.100.0/24"), t(1))
            .unwrap()
            .expires,
        t(180)
    );
    assert_eq!(
        dg(&mut ms, ETR1, &Reg::new(6, rec(), K1).bytes(), t(2)).len(),
        1
    );

    // Another ETR of the same site has its own sequence, and so has an xTR-ID.
    let other = Reg::new(1, vec![record("2001:db8:1::/48", 10, &["192.0.2.18"])], K1);
    assert_eq!(
        dg(&mut ms, "192.0.2.18:4342", &other.bytes(), t(3)).len(),
        1
    );
    let mut with_id = Reg::new(1, rec(), K1);
    with_id.xtr = Some(XtrId {
        xtr_id: [9; 16],
        site_id: 1,
    });
    assert_eq!(dg(&mut ms, ETR1, &with_id.bytes(), t(4)).len(), 1);
    // Same xTR-ID from another address: same sequence.
    assert!(dg(&mut ms, "192.0.2.19:4342", &with_id.bytes(), t(5)).is_empty());
    assert_eq!(ms.counters().rejected_replayed_nonce, 3);
}

#[test]
fn no_repeat_policy_accepts_random_nonces_but_not_repeats() {
    let mut ms = MapServer::new(MapServerConfig {
        nonce_check: NonceCheck::NoRepeat,
        ..config()
    });
    let rec = || vec![record("198.51.100.0/24", 10, &["192.0.2.17"])];
    assert_eq!(
        dg(&mut ms, ETR1, &Reg::new(50, rec(), K1).bytes(), t(0)).len(),
        1
    );
    assert_eq!(
        dg(&mut ms, ETR1, &Reg::new(3, rec(), K1).bytes(), t(1)).len(),
        1
    );
    assert!(dg(&mut ms, ETR1, &Reg::new(50, rec(), K1).bytes(), t(2)).is_empty());
    assert_eq!(ms.counters().rejected_replayed_nonce, 1);
}

#[test]
fn site_prefix_rules() {
    let mut ms = MapServer::new(config());
    let mut n = 0;
    let mut try_reg = |ms: &mut MapServer, recs: Vec<Record>, key: &'static [u8]| {
        n += 1;
        !dg(ms, ETR1, &Reg::new(n, recs, key).bytes(), t(0)).is_empty()
    };
    // More-specific inside an accept-more-specifics prefix: fine (a dynamic EID /32).
    assert!(try_reg(
        &mut ms,
        vec![record("198.51.100.10/32", 10, &["192.0.2.17"])],
        K1
    ));
    // More-specific inside a prefix that refuses them; the exact prefix is fine.
    assert!(!try_reg(
        &mut ms,
        vec![record("192.0.2.192/26", 10, &["192.0.2.17"])],
        K1
    ));
    assert_eq!(ms.counters().rejected_more_specific, 1);
    assert!(try_reg(
        &mut ms,
        vec![record("192.0.2.128/25", 10, &["192.0.2.17"])],
        K1
    ));
    // Less specific than the site prefix, or outside every site.
    assert!(!try_reg(
        &mut ms,
        vec![record("198.51.0.0/16", 10, &["192.0.2.17"])],
        K1
    ));
    assert!(!try_reg(
        &mut ms,
        vec![record("10.0.0.0/8", 10, &["192.0.2.17"])],
        K1
    ));
    assert_eq!(ms.counters().rejected_unknown_eid, 2);
    // One message for two sites: refused as a whole (neither record stored).
    assert!(!try_reg(
        &mut ms,
        vec![
            record("2001:db8:1::/48", 10, &["192.0.2.17"]),
            record("203.0.113.0/24", 10, &["192.0.2.17"])
        ],
        K1
    ));
    assert_eq!(ms.counters().rejected_mixed_sites, 1);
    assert!(ms.registration(&eid("2001:db8:1::/48"), t(0)).is_none());
    // Site 2's prefix with site 1's key.
    assert!(!try_reg(
        &mut ms,
        vec![record("203.0.113.0/24", 10, &["192.0.2.17"])],
        K1
    ));
    assert_eq!(ms.counters().rejected_auth_failed, 1);
    // Two records of one site in one message.
    assert!(try_reg(
        &mut ms,
        vec![
            record("2001:db8:1::/48", 10, &["192.0.2.17"]),
            record("198.51.100.0/24", 10, &["192.0.2.17"])
        ],
        K1
    ));
    assert_eq!(ms.registrations().count(), 4);
}

#[test]
fn registration_expires_after_180_s_unless_refreshed() {
    let mut ms = MapServer::new(config());
    let rec = || vec![record("198.51.100.0/24", 10, &["192.0.2.17"])];
    dg(&mut ms, ETR1, &Reg::new(1, rec(), K1).bytes(), t(0));
    assert_eq!(ms.next_deadline(), Some(t(180)));
    // Refreshed at 60 s: now due at 240 s.
    dg(&mut ms, ETR1, &Reg::new(2, rec(), K1).bytes(), t(60));
    assert_eq!(ms.next_deadline(), Some(t(240)));
    assert!(ms.on_timer(t(239)).is_empty());
    let e = eid("198.51.100.10/32");
    assert!(ms.lookup(&e, Timestamp::from_millis(239_999)).is_some());
    // Past the deadline a lookup already misses, even before the timer event.
    assert!(ms.lookup(&e, t(240)).is_none());
    assert!(ms.on_timer(t(240)).is_empty());
    assert_eq!(ms.registrations().count(), 0);
    assert_eq!(ms.counters().registrations_expired, 1);
    assert_eq!(ms.next_deadline(), None);

    // T bit: the record TTL (minutes) is the lifetime.
    let mut reg = Reg::new(3, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1);
    reg.use_ttl = true;
    dg(&mut ms, ETR1, &reg.bytes(), t(1000));
    assert_eq!(ms.next_deadline(), Some(t(1600)));
    // TTL 0 withdraws.
    let w = Reg::new(4, vec![record("198.51.100.0/24", 0, &["192.0.2.17"])], K1);
    let acts = dg(&mut ms, ETR1, &w.bytes(), t(1001));
    assert_eq!(sends(&acts).len(), 1);
    assert_eq!(ms.registrations().count(), 0);
    assert_eq!(ms.counters().registrations_withdrawn, 1);
    assert_eq!(ms.next_deadline(), None);
}

// ---- Map-Resolver ----------------------------------------------------------------------

#[test]
fn proxy_reply_or_forward() {
    let mut ms = MapServer::new(config());
    let mut p = Reg::new(1, vec![record("203.0.113.0/24", 10, &["192.0.2.33"])], K2);
    p.proxy = true;
    dg(&mut ms, ETR2, &p.bytes(), t(0));
    dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes(),
        t(0),
    );

    // Proxy: the map-server answers the ITR (family of the ECM's source) at the inner port.
    let q = ecm(
        "198.51.100.10",
        "203.0.113.10",
        &["2001:db8:ff:11::1", "192.0.2.17"],
        0xabc,
        false,
        None,
    );
    let (to, payload) = one_send(&dg(&mut ms, ETR1, &q, t(1)));
    assert_eq!(to, sa("192.0.2.17:4342"));
    let r = reply(&payload);
    assert_eq!(r.nonce, 0xabc);
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].eid, eid("203.0.113.0/24"));
    assert!(!r.records[0].authoritative);
    assert_eq!(r.records[0].locators[0].address, ip("192.0.2.33"));
    assert!(!r.records[0].locators[0].local);
    assert_eq!(ms.counters().tx_map_reply_proxy, 1);

    // No proxy: the ECM goes to the ETR unchanged.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        0xdef,
        false,
        None,
    );
    let (to, payload) = one_send(&dg(&mut ms, ETR2, &q, t(1)));
    assert_eq!(to, sa("192.0.2.17:4342"));
    assert_eq!(payload, q);
    assert_eq!(ms.counters().tx_ecm_forwarded, 1);

    // The longest match wins: a /32 registered inside the /24 by another ETR.
    dg(
        &mut ms,
        "192.0.2.20:4342",
        &Reg::new(1, vec![record("198.51.100.10/32", 10, &["192.0.2.20"])], K1).bytes(),
        t(2),
    );
    let (to, _) = one_send(&dg(&mut ms, ETR2, &q, t(3)));
    assert_eq!(to, sa("192.0.2.20:4342"));
    let q2 = ecm(
        "203.0.113.10",
        "198.51.100.11",
        &["192.0.2.33"],
        1,
        false,
        None,
    );
    let (to, _) = one_send(&dg(&mut ms, ETR2, &q2, t(3)));
    assert_eq!(to, sa("192.0.2.17:4342"));
}

#[test]
fn negative_replies() {
    let mut ms = MapServer::new(config());
    // In a site (accepts more-specifics) but not registered: the EID as asked, 1 minute.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        1,
        false,
        None,
    );
    let (to, payload) = one_send(&dg(&mut ms, ETR2, &q, t(0)));
    assert_eq!(to, sa("192.0.2.33:4342"));
    let r = reply(&payload);
    assert_eq!(r.records[0].eid, eid("198.51.100.10/32"));
    assert_eq!(r.records[0].ttl, NEGATIVE_TTL_UNREGISTERED);
    assert_eq!(r.records[0].action, RecordAction::NativelyForward);
    assert!(r.records[0].locators.is_empty());
    assert!(r.records[0].authoritative);
    // In a site prefix that refuses more-specifics: the site prefix.
    let q = ecm(
        "203.0.113.10",
        "192.0.2.200",
        &["192.0.2.33"],
        2,
        false,
        None,
    );
    let r = reply(&one_send(&dg(&mut ms, ETR2, &q, t(0))).1);
    assert_eq!(r.records[0].eid, eid("192.0.2.128/25"));
    assert_eq!(r.records[0].ttl, 1);
    // Outside every site: the largest hole around it, 15 minutes.
    let q = ecm("203.0.113.10", "10.1.2.3", &["192.0.2.33"], 3, false, None);
    let r = reply(&one_send(&dg(&mut ms, ETR2, &q, t(0))).1);
    assert_eq!(r.records[0].eid, eid("0.0.0.0/1"));
    assert_eq!(r.records[0].ttl, NEGATIVE_TTL_NON_LISP);
    assert_eq!(r.records[0].action, RecordAction::NativelyForward);
    let q = ecm(
        "2001:db8:2::10",
        "2001:db8:3::1",
        &["2001:db8:ff:12::1"],
        4,
        false,
        None,
    );
    let r = reply(&one_send(&dg(&mut ms, "[2001:db8:ff:12::1]:4342", &q, t(0))).1);
    let hole = r.records[0].eid.prefix;
    assert!(hole.contains(ip("2001:db8:3::1")));
    let site_prefixes = ["2001:db8:1::/48", "2001:db8:2::/48"].map(|p| eid(p).prefix);
    assert!(
        site_prefixes
            .iter()
            .all(|s| !s.covers(&hole) && !hole.covers(s))
    );
    // The largest: one bit shorter would overlap a site.
    let parent = IpPrefix::new_masked(hole.addr(), hole.len() - 1).unwrap();
    assert!(site_prefixes.iter().any(|s| parent.covers(s)));
    assert_eq!(ms.counters().tx_map_reply_negative, 4);
    assert!(ms.registrations().next().is_none());
}

// ---- RLOC change, Map-Notify-Ack, retransmission -----------------------------------------

fn ack(nonce: u64, key: &[u8]) -> Vec<u8> {
    let a = MapNotify {
        nonce,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        ..MapNotify::default()
    };
    let mut v = a.to_vec_ack().unwrap();
    auth::sign(&mut v, key).unwrap();
    v
}

/// An xTR-ID + Site-ID trailer.
fn xtr_id(id: u8, site_id: u64) -> Option<XtrId> {
    Some(XtrId {
        xtr_id: [id; 16],
        site_id,
    })
}

#[test]
fn host_moving_to_another_site_notifies_previous_rlocs_until_acked() {
    let mut ms = MapServer::new(config());
    let host = "198.51.100.10/32";
    let mut first = Reg::new(1, vec![record(host, 10, &["192.0.2.17"])], K1);
    first.xtr = xtr_id(1, 1);
    dg(&mut ms, ETR1, &first.bytes(), t(0));
    // The host moves behind an xTR of another site (Site-ID 2): the newest site wins.
    let mut moved = Reg::new(1, vec![record(host, 10, &["192.0.2.20"])], K1);
    moved.xtr = xtr_id(2, 2);
    let acts = dg(&mut ms, "192.0.2.20:4342", &moved.bytes(), t(10));
    let s = sends(&acts);
    assert_eq!(s.len(), 2, "{acts:?}");
    // Both from the address the Map-Register came to (the ETRs know the map-server by it).
    let ours = Some(sa(MS).ip());
    assert_eq!(froms(&acts), vec![ours, ours]);
    // The solicited Map-Notify to the new ETR and the unsolicited one to the old RLOC.
    assert_eq!(s[1].0, sa("192.0.2.20:4342"));
    let (to, payload) = &s[0];
    assert_eq!(*to, sa("192.0.2.17:4342"));
    let n = MapNotify::parse(payload).unwrap();
    auth::verify(payload, K1).unwrap();
    assert_eq!(n.records[0].locators.len(), 1);
    assert_eq!(n.records[0].locators[0].address, ip("192.0.2.20"));
    // Addressed to the xTR that lost the host (its xTR-ID in the trailer).
    assert_eq!(n.xtr, xtr_id(1, 1));
    assert_eq!(ms.counters().registrations_displaced, 1);
    let r = ms.registration(&eid(host), t(10)).unwrap();
    assert_eq!(r.registrants.len(), 1);
    assert_eq!(r.site_id, Some(2));
    assert_eq!(ms.pending_notifies(), 1);
    assert_eq!(ms.next_deadline(), Some(t(11)));

    // Retransmitted after 1 s, then 2 s later.
    let r = ms.on_timer(t(11));
    assert_eq!(sends(&r), vec![(sa("192.0.2.17:4342"), payload.clone())]);
    assert_eq!(
        froms(&r),
        vec![ours],
        "retransmission from the same address"
    );
    assert_eq!(ms.next_deadline(), Some(t(13)));
    assert!(ms.on_timer(Timestamp::from_millis(12_999)).is_empty());
    assert_eq!(sends(&ms.on_timer(t(13))).len(), 1);

    // A wrong-key ack and an unknown nonce do not stop it.
    assert!(dg(&mut ms, ETR1, &ack(n.nonce, K2), t(14)).is_empty());
    assert!(dg(&mut ms, ETR1, &ack(n.nonce ^ 1, K1), t(14)).is_empty());
    assert_eq!(ms.counters().rejected_auth_failed, 1);
    assert_eq!(ms.counters().rejected_unsolicited_ack, 1);
    assert_eq!(ms.pending_notifies(), 1);
    // The right ack does.
    assert!(dg(&mut ms, ETR1, &ack(n.nonce, K1), t(14)).is_empty());
    assert_eq!(ms.pending_notifies(), 0);
    assert_eq!(ms.counters().notify_acked, 1);
    assert!(ms.on_timer(t(100)).is_empty());
    // A second ack for it is now unsolicited.
    dg(&mut ms, ETR1, &ack(n.nonce, K1), t(101));
    assert_eq!(ms.counters().rejected_unsolicited_ack, 2);
}

#[test]
fn unacked_notify_gives_up_after_bounded_tries() {
    let mut ms = MapServer::new(config());
    let host = "198.51.100.10/32";
    dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record(host, 10, &["192.0.2.17"])], K1).bytes(),
        t(0),
    );
    dg(
        &mut ms,
        ETR1,
        &Reg::new(2, vec![record(host, 10, &["192.0.2.21"])], K1).bytes(),
        t(0),
    );
    let mut now = t(0);
    let mut retransmits = 0;
    while let Some(d) = ms.next_deadline() {
        if d >= t(180) {
            break;
        }
        assert!(d > now);
        now = d;
        retransmits += sends(&ms.on_timer(now)).len();
    }
    let max = ms.config().notify_max_sends as usize;
    assert_eq!(retransmits, max - 1);
    // 1 + 2 + 4 + 8 s of backoff, then the last wait before giving up.
    assert_eq!(now, t(1 + 2 + 4 + 8 + 16));
    assert_eq!(ms.counters().notify_given_up, 1);
    assert_eq!(ms.pending_notifies(), 0);
}

#[test]
fn only_priority_changes_do_not_notify_old_rlocs() {
    let mut ms = MapServer::new(config());
    let host = "198.51.100.10/32";
    dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record(host, 10, &["192.0.2.17", "192.0.2.18"])], K1).bytes(),
        t(0),
    );
    let acts = dg(
        &mut ms,
        ETR1,
        &Reg::new(2, vec![record(host, 10, &["192.0.2.17"])], K1).bytes(),
        t(1),
    );
    // Map-Notify to the ETR + unsolicited to the dropped 192.0.2.18 only.
    let s = sends(&acts);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, sa("192.0.2.18:4342"));
    // Refresh with the same set: nothing unsolicited.
    let acts = dg(
        &mut ms,
        ETR1,
        &Reg::new(3, vec![record(host, 10, &["192.0.2.17"])], K1).bytes(),
        t(2),
    );
    assert_eq!(sends(&acts).len(), 1);
    assert_eq!(ms.counters().registrations_refreshed, 1);
}

// ---- PubSub ----------------------------------------------------------------------------

#[test]
fn subscription_gets_notified_of_registration_change_and_expiry() {
    let mut ms = MapServer::new(config());
    let xtr = XtrId {
        xtr_id: [2; 16],
        site_id: 2,
    };
    // xTR 2 (site 2) asks for 198.51.100.10 with N: not registered yet → negative reply.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        100,
        true,
        Some(xtr),
    );
    let r = reply(&one_send(&dg(&mut ms, ETR2, &q, t(0))).1);
    assert!(r.records[0].locators.is_empty());
    assert_eq!(ms.subscription_count(), 1);
    // Renewing does not add a second subscription.
    dg(&mut ms, ETR2, &q, t(1));
    assert_eq!(ms.subscription_count(), 1);

    // Site 1 registers its /24: the subscriber hears about it, signed with its own site's key.
    let acts = dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes(),
        t(5),
    );
    let s = sends(&acts);
    assert_eq!(s.len(), 2);
    let (to, payload) = &s[0];
    assert_eq!(*to, sa("192.0.2.33:4342"));
    // From the address the subscribing Map-Request came to.
    assert_eq!(froms(&acts)[0], Some(sa(MS).ip()));
    auth::verify(payload, K2).unwrap();
    let n = MapNotify::parse(payload).unwrap();
    assert_eq!(n.nonce, 101);
    assert_eq!(n.xtr, Some(xtr));
    assert_eq!(n.records[0].eid, eid("198.51.100.0/24"));
    assert_eq!(n.records[0].locators[0].address, ip("192.0.2.17"));
    assert!(dg(&mut ms, ETR2, &ack(101, K2), t(5)).is_empty());
    assert_eq!(ms.counters().notify_acked, 1);

    // A plain refresh is not a change.
    let acts = dg(
        &mut ms,
        ETR1,
        &Reg::new(2, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes(),
        t(60),
    );
    assert_eq!(sends(&acts).len(), 1);

    // The registration expires: the subscriber is told (TTL 0, no locators).
    let acts = ms.on_timer(t(240));
    let (to, payload) = one_send(&acts);
    assert_eq!(to, sa("192.0.2.33:4342"));
    let n = MapNotify::parse(&payload).unwrap();
    assert_eq!(n.nonce, 102);
    assert_eq!(n.records[0].ttl, 0);
    assert!(n.records[0].locators.is_empty());

    // A subscription from an ITR whose source EID is in no site is refused, the request is
    // still answered.
    let q = ecm("10.0.0.1", "198.51.100.10", &["192.0.2.99"], 5, true, None);
    assert_eq!(sends(&dg(&mut ms, "192.0.2.99:4342", &q, t(300))).len(), 1);
    assert_eq!(ms.counters().rejected_subscription, 1);
    assert_eq!(ms.subscription_count(), 1);
    // Subscriptions end after their lifetime.
    ms.on_timer(t(2 * 24 * 3600));
    assert_eq!(ms.subscription_count(), 0);
}

// ---- Bad input -------------------------------------------------------------------------

#[test]
fn malformed_input_changes_nothing() {
    let mut ms = MapServer::new(config());
    let good = Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes();
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        1,
        false,
        None,
    );
    for cut in 0..good.len() {
        assert!(dg(&mut ms, ETR1, &good[..cut], t(0)).is_empty());
    }
    for cut in 0..q.len() {
        assert!(dg(&mut ms, ETR2, &q[..cut], t(0)).is_empty());
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(dg(&mut ms, ETR1, &trailing, t(0)).is_empty());
    // Types the map-server does not take.
    let mr = MapReply {
        nonce: 1,
        ..MapReply::default()
    }
    .to_vec()
    .unwrap();
    assert!(dg(&mut ms, ETR1, &mr, t(0)).is_empty());
    assert!(dg(&mut ms, ETR1, &[0xf0, 0, 0, 0], t(0)).is_empty());
    // An ECM around something else than a Map-Request.
    let e = Ecm::new(
        ip("203.0.113.10"),
        ip("198.51.100.10"),
        Message::MapReply(MapReply::default()),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    assert!(dg(&mut ms, ETR2, &e, t(0)).is_empty());
    assert_eq!(ms.counters().rejected_bad_map_request, 1);
    // A register with no records (signed).
    let empty = Reg::new(1, vec![], K1).bytes();
    assert!(dg(&mut ms, ETR1, &empty, t(0)).is_empty());
    assert_eq!(ms.counters().rejected_no_records, 1);

    assert!(ms.registrations().next().is_none());
    assert_eq!(ms.next_deadline(), None);
    let c = ms.counters();
    assert_eq!(c.rejected_unexpected_type, 2);
    assert!(c.rejected_malformed as usize >= good.len() + q.len());
    assert_eq!(
        c.tx_map_notify + c.tx_map_reply_negative + c.tx_ecm_forwarded,
        0
    );
    // The nonce of the good message was never consumed.
    assert_eq!(dg(&mut ms, ETR1, &good, t(0)).len(), 1);
}

#[test]
fn table_limit_is_enforced_without_partial_registration() {
    let mut ms = MapServer::new(MapServerConfig {
        max_registrations: 1,
        ..config()
    });
    let two = Reg::new(
        1,
        vec![
            record("198.51.100.1/32", 10, &["192.0.2.17"]),
            record("198.51.100.2/32", 10, &["192.0.2.17"]),
        ],
        K1,
    );
    assert!(dg(&mut ms, ETR1, &two.bytes(), t(0)).is_empty());
    assert_eq!(ms.counters().rejected_table_full, 1);
    assert_eq!(ms.registrations().count(), 0);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes, or a valid message with one byte changed: never a panic, never a
        /// registration, never an answer to a Map-Register that fails verification.
        #[test]
        fn garbage_never_panics_or_registers(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            pos in any::<usize>(),
            flip in 1u8..=255,
        ) {
            let mut ms = MapServer::new(config());
            dg(&mut ms, ETR1, &bytes, t(0));
            let mut reg = Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes();
            let i = pos % reg.len();
            reg[i] ^= flip;
            let acts = dg(&mut ms, ETR1, &reg, t(0));
            // The MAC covers every byte, the nonce included.
            prop_assert!(acts.is_empty());
            prop_assert!(ms.registrations().next().is_none());
        }
    }
}

// ---- OOR captures ------------------------------------------------------------------------

// The OOR 1.3.0 captures of testdata/captures/oor, read with the pcap reader of lisp-common's
// tests (one reader for both crates; both sit at the workspace root, so its path to the
// captures holds here too).
#[path = "../../../../lisp-common/tests/support/mod.rs"]
mod pcap;

/// A frame of an OOR capture: file name, tshark frame number (see oor/README.md, decodes/).
type Frame = (&'static str, usize);

/// The UDP payload of a frame.
fn frame_payload((file, frame): Frame) -> Vec<u8> {
    pcap::udp_payload(&format!("oor/{file}"), frame)
}

mod oor {
    use super::Frame;
    const F01: &str = "01-map-register-notify-site1.pcap";
    const F02: &str = "02-map-register-notify-site2-proxy-reply.pcap";
    const F03: &str = "03-ecm-map-request-ms-proxy-map-reply.pcap";
    const F04: &str = "04-ecm-map-request-forwarded-etr-map-reply.pcap";
    const F08: &str = "08-ecm-map-request-negative-map-reply.pcap";
    const F10: &str = "10-map-register-wrong-key-no-notify-retries.pcap";
    const F11: &str = "11-ecm-map-request-negative-reply-not-registered.pcap";
    const F12: &str = "12-python-xtr-vs-oor-ms-ephemeral-port.pcap";
    pub const C01_REG_V4: Frame = (F01, 1);
    pub const C01_NOTIFY_V4: Frame = (F01, 2);
    pub const C01_REG_V6: Frame = (F01, 3);
    pub const C01_NOTIFY_V6: Frame = (F01, 4);
    pub const C02_REG_V4: Frame = (F02, 1);
    pub const C02_REG_V6: Frame = (F02, 2);
    pub const C02_NOTIFY_V4: Frame = (F02, 3);
    pub const C02_NOTIFY_V6: Frame = (F02, 4);
    pub const C03_ECM_V4: Frame = (F03, 1);
    pub const C03_REPLY_V4: Frame = (F03, 2);
    pub const C03_ECM_V6: Frame = (F03, 3);
    pub const C03_REPLY_V6: Frame = (F03, 4);
    /// The ECMs as the ITR sent them to the map-server (frames 2 and 5 are the forwarded ones).
    pub const C04_ECM_V4: Frame = (F04, 1);
    pub const C04_ECM_V6: Frame = (F04, 4);
    pub const C08_ECM: Frame = (F08, 1);
    pub const C08_REPLY: Frame = (F08, 2);
    pub const C10_REGS: [Frame; 2] = [(F10, 1), (F10, 2)];
    pub const C11_ECM: Frame = (F11, 1);
    pub const C11_REPLY: Frame = (F11, 2);
    pub const C12_REG: Frame = (F12, 1);
    pub const C12_NOTIFY: Frame = (F12, 2);
    pub const C12_ECM: Frame = (F12, 3);
    pub const C12_REPLY: Frame = (F12, 4);
}

/// Our Map-Notify for OOR's Map-Register is byte for byte OOR's map-server's (same records,
/// L bit cleared, same nonce, same 20-byte SHA-1 HMAC).
#[test]
fn oor_capture_01_02_map_notify_identical() {
    let mut ms = MapServer::new(oor_config());
    for (from, reg, notify) in [
        (ETR1, oor::C01_REG_V4, oor::C01_NOTIFY_V4),
        (ETR1, oor::C01_REG_V6, oor::C01_NOTIFY_V6),
        (ETR2, oor::C02_REG_V4, oor::C02_NOTIFY_V4),
        (ETR2, oor::C02_REG_V6, oor::C02_NOTIFY_V6),
    ] {
        let (to, payload) = one_send(&dg(&mut ms, from, &frame_payload(reg), t(0)));
        assert_eq!(to, sa(from));
        assert_eq!(payload, frame_payload(notify), "notify for {reg:?}");
    }
    assert_eq!(ms.registrations().count(), 4);
    assert!(
        ms.registration(&eid("203.0.113.0/24"), t(1))
            .unwrap()
            .proxy_reply
    );
    assert!(
        !ms.registration(&eid("198.51.100.0/24"), t(1))
            .unwrap()
            .proxy_reply
    );
}

#[test]
fn oor_capture_03_04_proxy_reply_and_forward() {
    let mut ms = MapServer::new(oor_config());
    for (from, reg) in [
        (ETR1, oor::C01_REG_V4),
        (ETR1, oor::C01_REG_V6),
        (ETR2, oor::C02_REG_V4),
        (ETR2, oor::C02_REG_V6),
    ] {
        dg(&mut ms, from, &frame_payload(reg), t(0));
    }
    // 03: site 2 registered with P: our Map-Reply is OOR's, byte for byte.
    for (q, r) in [
        (oor::C03_ECM_V4, oor::C03_REPLY_V4),
        (oor::C03_ECM_V6, oor::C03_REPLY_V6),
    ] {
        let (to, payload) = one_send(&dg(&mut ms, ETR1, &frame_payload(q), t(1)));
        assert_eq!(to, sa("192.0.2.17:4342"));
        assert_eq!(payload, frame_payload(r));
    }
    // 04: site 1 without P: the ECM is forwarded unchanged to xtr1.
    for q in [oor::C04_ECM_V4, oor::C04_ECM_V6] {
        let (to, payload) = one_send(&dg(&mut ms, ETR2, &frame_payload(q), t(1)));
        assert_eq!(to, sa("192.0.2.17:4342"));
        assert_eq!(payload, frame_payload(q));
    }
}

#[test]
fn oor_capture_08_11_negative_replies_identical() {
    let mut ms = MapServer::new(oor_config());
    // 08: 192.0.2.1 is in no site → 192.0.0.0/6, 15 min.
    let (to, payload) = one_send(&dg(&mut ms, ETR1, &frame_payload(oor::C08_ECM), t(0)));
    assert_eq!(to, sa("192.0.2.17:4342"));
    assert_eq!(payload, frame_payload(oor::C08_REPLY));
    // 11: site 1 configured, not registered → the /32 as asked, 1 min.
    let (to, payload) = one_send(&dg(&mut ms, ETR2, &frame_payload(oor::C11_ECM), t(0)));
    assert_eq!(to, sa("192.0.2.33:4342"));
    assert_eq!(payload, frame_payload(oor::C11_REPLY));
}

#[test]
fn oor_capture_10_wrong_key_gets_nothing() {
    let mut ms = MapServer::new(oor_config());
    for r in oor::C10_REGS {
        assert!(dg(&mut ms, ETR1, &frame_payload(r), t(0)).is_empty());
    }
    assert_eq!(ms.counters().rejected_auth_failed, 2);
    assert_eq!(ms.registrations().count(), 0);
}

#[test]
fn oor_capture_12_ephemeral_port() {
    let mut ms = MapServer::new(oor_config());
    let from = "192.0.2.17:46179";
    let (to, payload) = one_send(&dg(&mut ms, from, &frame_payload(oor::C12_REG), t(0)));
    assert_eq!(to, sa(from));
    assert_eq!(payload, frame_payload(oor::C12_NOTIFY));
    let (to, payload) = one_send(&dg(&mut ms, from, &frame_payload(oor::C12_ECM), t(1)));
    assert_eq!(to, sa(from));
    assert_eq!(payload, frame_payload(oor::C12_REPLY));
}

#[test]
fn instance_id_zero_lcaf_is_the_default_instance_and_others_are_separate() {
    let mut ms = MapServer::new(config());
    let mut rec = record("198.51.100.0/24", 10, &["192.0.2.17"]);
    rec.eid.instance_id = Some(0);
    assert_eq!(
        dg(
            &mut ms,
            ETR1,
            &Reg::new(1, vec![rec.clone()], K1).bytes(),
            t(0)
        )
        .len(),
        1
    );
    // Found with or without the LCAF.
    assert!(ms.lookup(&eid("198.51.100.7/32"), t(1)).is_some());
    // Sites are configured in instance 0: instance 5 is nobody's.
    rec.eid.instance_id = Some(5);
    assert!(dg(&mut ms, ETR1, &Reg::new(2, vec![rec], K1).bytes(), t(0)).is_empty());
    assert_eq!(ms.counters().rejected_unknown_eid, 1);
    let mut e = eid("198.51.100.7/32");
    e.instance_id = Some(5);
    assert!(ms.lookup(&e, t(1)).is_none());
}

#[test]
fn a_registration_of_another_site_does_not_answer_for_a_more_specific_site() {
    let mut cfg = config();
    cfg.sites.push(site(
        "site3",
        b"site3-secret",
        Algorithm::HmacSha256,
        &[("198.51.100.128/25", false)],
    ));
    let mut ms = MapServer::new(cfg);
    dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record("198.51.100.0/24", 10, &["192.0.2.17"])], K1).bytes(),
        t(0),
    );
    // In site 1's part of the /24: forwarded to site 1's ETR.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        1,
        false,
        None,
    );
    assert_eq!(
        one_send(&dg(&mut ms, ETR2, &q, t(1))).0,
        sa("192.0.2.17:4342")
    );
    // In site 3's /25 (not registered): negative for site 3's prefix, not site 1's mapping.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.200",
        &["192.0.2.33"],
        2,
        false,
        None,
    );
    let (to, payload) = one_send(&dg(&mut ms, ETR2, &q, t(1)));
    assert_eq!(to, sa("192.0.2.33:4342"));
    let r = reply(&payload);
    assert_eq!(r.records[0].eid, eid("198.51.100.128/25"));
    assert!(r.records[0].locators.is_empty());
}

mod stateful {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Register host `eid` of site 1 with locator `rloc` (TTL 0 = withdraw), from ETR `etr`,
        /// with an xTR-ID trailer of Site-ID `sid` unless it is 0 (takeovers across Site-IDs).
        Register {
            eid: u8,
            rloc: u8,
            etr: u8,
            withdraw: bool,
            sid: u8,
        },
        Advance(u16),
        Timer,
        Request(u8),
        Ack(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 0u8..3, 0u8..3, proptest::bool::weighted(0.1), 0u8..3)
                .prop_map(|(eid, rloc, etr, withdraw, sid)| Op::Register { eid, rloc, etr, withdraw, sid }),
            2 => (0u16..400).prop_map(Op::Advance),
            2 => Just(Op::Timer),
            2 => (0u8..8).prop_map(Op::Request),
            1 => any::<u8>().prop_map(Op::Ack),
        ]
    }

    proptest! {
        /// Whatever the sequence of registrations, moves, withdrawals, requests and timers:
        /// the table agrees with the counters, nothing outlives its expiry once the timer ran,
        /// the deadline is never later than the next expiry, and every request gets one answer.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..60)) {
            let mut ms = MapServer::new(config());
            let mut now = t(0);
            let mut nonces = [0u64; 3];
            let mut sent_nonces: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Register { eid: e, rloc, etr, withdraw, sid } => {
                        let ttl = if withdraw { 0 } else { 10 };
                        let host = format!("198.51.100.{}/32", e + 1);
                        let loc = format!("192.0.2.{}", 17 + rloc);
                        nonces[usize::from(etr)] += 1;
                        let mut reg = Reg::new(nonces[usize::from(etr)], vec![record(&host, ttl, &[&loc])], K1);
                        reg.xtr = (sid > 0).then(|| XtrId { xtr_id: [etr; 16], site_id: u64::from(sid) });
                        let from = format!("192.0.2.{}:4342", 40 + etr);
                        let acts = dg(&mut ms, &from, &reg.bytes(), now);
                        for (to, p) in sends(&acts) {
                            if to.port() == 4342 && to != sa(&from) {
                                sent_nonces.push(MapNotify::parse(&p).unwrap().nonce);
                            }
                        }
                    }
                    Op::Advance(s) => now += Duration::from_secs(u64::from(s)),
                    Op::Timer => {
                        ms.on_timer(now);
                        for r in ms.registrations() {
                            prop_assert!(r.expires > now);
                        }
                    }
                    Op::Request(e) => {
                        let dst = format!("198.51.100.{}", e + 1);
                        let q = ecm("203.0.113.10", &dst, &["192.0.2.33"], 9, false, None);
                        prop_assert_eq!(dg(&mut ms, ETR2, &q, now).len(), 1);
                    }
                    Op::Ack(i) => {
                        if let Some(n) = sent_nonces.get(usize::from(i) % sent_nonces.len().max(1)) {
                            dg(&mut ms, ETR1, &ack(*n, K1), now);
                        }
                    }
                }
                let c = ms.counters().clone();
                let entries: usize = ms.registrations().map(|r| r.registrants.len()).sum();
                prop_assert_eq!(
                    entries as u64,
                    c.registrations_created
                        - c.registrations_expired
                        - c.registrations_withdrawn
                        - c.registrations_displaced
                );
                // The merged record is the union of the registrants' locators, nothing else.
                for r in ms.registrations() {
                    prop_assert!(!r.registrants.is_empty());
                    let mut want: Vec<IpAddr> = r
                        .registrants
                        .iter()
                        .flat_map(|x| x.record.locators.iter().map(|l| l.address))
                        .collect();
                    want.sort();
                    want.dedup();
                    let mut got: Vec<IpAddr> = r.record.locators.iter().map(|l| l.address).collect();
                    got.sort();
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(c.rejected_total(), c.rejected_unsolicited_ack);
                let min_exp = ms.registrations().map(|r| r.expires).min();
                match (ms.next_deadline(), min_exp) {
                    (Some(d), Some(m)) => prop_assert!(d <= m),
                    (None, Some(_)) => prop_assert!(false, "registrations but no deadline"),
                    (_, None) => {}
                }
                prop_assert!(ms.pending_notifies() <= ms.config().max_pending_notifies);
            }
        }
    }
}

// ---- Replay protection with real peers' nonces (default policy) -------------------------

/// How a peer picks its Map-Register nonces.
#[derive(Clone, Copy, Debug)]
enum Nonces {
    /// lisp-agent's xTR.
    Increasing,
    /// OOR.
    Random,
    /// lispers.net.
    Constant,
}

struct Peer {
    kind: Nonces,
    rng: crate::core::nonce::NonceSource,
    n: u64,
}

impl Peer {
    fn new(kind: Nonces) -> Self {
        Peer {
            kind,
            rng: crate::core::nonce::NonceSource::new(0x0123_4567),
            n: 0,
        }
    }
    fn next(&mut self) -> u64 {
        self.n += 1;
        match self.kind {
            Nonces::Increasing => 1_000 + self.n,
            Nonces::Random => self.rng.next_nonce(),
            Nonces::Constant => 0x6c69_7370,
        }
    }
}

const HOST: &str = "198.51.100.10/32";

fn host_reg(nonce: u64, rloc: &str, xtr: Option<XtrId>) -> Vec<u8> {
    let mut r = Reg::new(nonce, vec![record(HOST, 10, &[rloc])], K1);
    r.xtr = xtr;
    r.bytes()
}

/// The locators the map-server holds for the host, or `None`.
fn held(ms: &MapServer, now: Timestamp) -> Option<Vec<IpAddr>> {
    ms.registration(&eid(HOST), now)
        .map(|r| r.record.locators.iter().map(|l| l.address).collect())
}

/// Registers the host at `rloc` and refreshes it every 60 s for `minutes`, asserting every one is
/// accepted and the registration never lapses; returns every message sent.
fn refresh_for(
    ms: &mut MapServer,
    peer: &mut Peer,
    rloc: &str,
    xtr: Option<XtrId>,
    from: Timestamp,
    minutes: u64,
) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for i in 0..=minutes {
        let now = from + Duration::from_secs(60 * i);
        ms.on_timer(now);
        let m = host_reg(peer.next(), rloc, xtr);
        let acts = dg(ms, ETR1, &m, now);
        assert_eq!(
            sends(&acts).len(),
            1,
            "{:?}: refresh {i} not answered",
            peer.kind
        );
        assert_eq!(
            held(ms, now),
            Some(vec![ip(rloc)]),
            "{:?} at {i}",
            peer.kind
        );
        assert_eq!(
            ms.registration(&eid(HOST), now).unwrap().expires,
            now + Duration::from_secs(180)
        );
        sent.push(m);
    }
    assert_eq!(ms.counters().rejected_total(), 0, "{:?}", peer.kind);
    sent
}

/// 65 minutes of refreshes, with and without xTR-ID: all accepted, never expired.
fn refreshes_for_an_hour(kind: Nonces) {
    for xtr in [None, xtr_id(1, 1)] {
        let mut ms = MapServer::new(config());
        let mut peer = Peer::new(kind);
        refresh_for(&mut ms, &mut peer, "192.0.2.17", xtr, t(0), 65);
        assert_eq!(ms.counters().registrations_created, 1);
        assert_eq!(ms.counters().registrations_refreshed, 65);
        assert_eq!(ms.counters().registrations_expired, 0);
    }
}

#[test]
fn increasing_nonce_refreshes_are_accepted_for_an_hour() {
    refreshes_for_an_hour(Nonces::Increasing);
}

#[test]
fn random_nonce_refreshes_are_accepted_for_an_hour() {
    refreshes_for_an_hour(Nonces::Random);
}

#[test]
fn constant_nonce_refreshes_are_accepted_for_an_hour() {
    refreshes_for_an_hour(Nonces::Constant);
}

#[test]
fn replayed_old_register_never_moves_the_eid_back_after_the_registrant_changed() {
    for kind in [Nonces::Increasing, Nonces::Random, Nonces::Constant] {
        let mut ms = MapServer::new(config());
        let mut peer = Peer::new(kind);
        let x = xtr_id(1, 1);
        let old = refresh_for(&mut ms, &mut peer, "192.0.2.17", x, t(0), 60);
        // The same xTR now registers the host at another locator.
        let moved_at = t(61 * 60);
        let acts = dg(
            &mut ms,
            ETR1,
            &host_reg(peer.next(), "192.0.2.21", x),
            moved_at,
        );
        assert!(!sends(&acts).is_empty(), "{kind:?}: the change is accepted");
        assert_eq!(held(&ms, moved_at), Some(vec![ip("192.0.2.21")]));
        // Every old message, replayed: refused, counted, nothing changes.
        let before = ms.counters().clone();
        for (i, m) in old.iter().enumerate() {
            let acts = dg(&mut ms, ETR1, m, moved_at + Duration::from_secs(1));
            assert!(acts.is_empty(), "{kind:?}: replay {i} answered");
        }
        assert_eq!(
            held(&ms, moved_at + Duration::from_secs(1)),
            Some(vec![ip("192.0.2.21")]),
            "{kind:?}"
        );
        let c = ms.counters();
        assert_eq!(
            c.rejected_replayed_nonce - before.rejected_replayed_nonce,
            old.len() as u64,
            "{kind:?}"
        );
        assert_eq!(c.registrations_changed, before.registrations_changed);
        assert_eq!(
            c.tx_map_notify_unsolicited,
            before.tx_map_notify_unsolicited
        );
    }
}

#[test]
fn replayed_old_register_never_takes_a_moved_host_back_from_the_new_site() {
    for kind in [Nonces::Increasing, Nonces::Random, Nonces::Constant] {
        let mut ms = MapServer::new(config());
        let mut peer = Peer::new(kind);
        let old = refresh_for(&mut ms, &mut peer, "192.0.2.17", xtr_id(1, 1), t(0), 60);
        // The host moves to an xTR of another site.
        let moved_at = t(61 * 60);
        let mut other = Peer::new(Nonces::Increasing);
        dg(
            &mut ms,
            ETR2,
            &host_reg(other.next(), "192.0.2.33", xtr_id(2, 2)),
            moved_at,
        );
        assert_eq!(held(&ms, moved_at), Some(vec![ip("192.0.2.33")]));
        for m in &old {
            assert!(dg(&mut ms, ETR1, m, moved_at + Duration::from_secs(2)).is_empty());
        }
        assert_eq!(
            held(&ms, moved_at + Duration::from_secs(2)),
            Some(vec![ip("192.0.2.33")]),
            "{kind:?}"
        );
        assert_eq!(ms.counters().rejected_replayed_nonce, old.len() as u64);
        // A genuine new registration by the first xTR (the host came back) is accepted at once,
        // except from a constant-nonce peer, whose return is byte for byte an old message.
        let back = host_reg(peer.next(), "192.0.2.17", xtr_id(1, 1));
        let now = moved_at + Duration::from_secs(60);
        let accepted = !dg(&mut ms, ETR1, &back, now).is_empty();
        assert_eq!(accepted, !matches!(kind, Nonces::Constant), "{kind:?}");
    }
}

/// The documented limit: a constant-nonce peer's genuine return to earlier content is refused
/// while a newer registration holds the EID, and accepted once that one has ended.
#[test]
fn constant_nonce_return_waits_for_the_newer_registration_to_end() {
    let mut ms = MapServer::new(config());
    let mut peer = Peer::new(Nonces::Constant);
    let x = xtr_id(1, 1);
    refresh_for(&mut ms, &mut peer, "192.0.2.17", x, t(0), 3);
    // Moves to .21 at 240 s (refreshed once), back to .17 from 300 s on, every 60 s.
    dg(
        &mut ms,
        ETR1,
        &host_reg(peer.next(), "192.0.2.21", x),
        t(240),
    );
    let mut now = t(300);
    let mut first_accepted = None;
    while now <= t(900) {
        ms.on_timer(now);
        if !dg(&mut ms, ETR1, &host_reg(peer.next(), "192.0.2.17", x), now).is_empty() {
            first_accepted.get_or_insert(now);
        }
        // Never anything but one of the two genuine states, never nothing for long.
        let h = held(&ms, now);
        assert!(
            h == Some(vec![ip("192.0.2.21")]) || h == Some(vec![ip("192.0.2.17")]),
            "{h:?} at {now:?}"
        );
        now += Duration::from_secs(60);
    }
    // .21 was registered at 240 s and expires at 420 s; the next refresh of .17 is taken.
    assert_eq!(first_accepted, Some(t(420)));
}

// ---- Several ETRs of one site -----------------------------------------------------------

#[test]
fn two_etrs_of_a_site_are_answered_with_the_union_without_flapping_or_notify_storm() {
    let mut ms = MapServer::new(config());
    let site = "198.51.100.0/24";
    let reg_at = |nonce, rlocs: &[&str], proxy| {
        let mut r = Reg::new(nonce, vec![record(site, 10, rlocs)], K1);
        r.proxy = proxy;
        r.bytes()
    };
    // Two ETRs (no xTR-ID, as OOR sends: told apart by source address), different locators, one
    // locator in common; both refresh every 60 s, interleaved, for 10 minutes.
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        7,
        false,
        None,
    );
    let mut answers = Vec::new();
    for i in 0..10u64 {
        let a = dg(
            &mut ms,
            ETR1,
            &reg_at(10 + i, &["192.0.2.17", "192.0.2.50"], true),
            t(60 * i),
        );
        let b = dg(
            &mut ms,
            "192.0.2.18:4342",
            &reg_at(100 + i, &["192.0.2.18", "192.0.2.50"], true),
            t(60 * i + 30),
        );
        // Each gets its solicited Map-Notify, with the merged record; nothing unsolicited.
        assert_eq!(sends(&a).len(), 1);
        assert_eq!(sends(&b).len(), 1);
        let n = MapNotify::parse(&sends(&b)[0].1).unwrap();
        assert_eq!(n.records[0].locators.len(), 3);
        answers.push(one_send(&dg(&mut ms, ETR2, &q, t(60 * i + 45))).1);
    }
    assert_eq!(ms.counters().tx_map_notify_unsolicited, 0);
    assert_eq!(ms.counters().registrations_created, 2);
    assert_eq!(ms.counters().registrations_changed, 0);
    // The answer never changed: the union, in a fixed order.
    assert!(answers[1..].iter().all(|a| a == &answers[0]));
    let r = reply(&answers[0]);
    let addrs: Vec<IpAddr> = r.records[0].locators.iter().map(|l| l.address).collect();
    assert_eq!(
        addrs,
        vec![ip("192.0.2.17"), ip("192.0.2.50"), ip("192.0.2.18")]
    );

    // ETR 2 deregisters (TTL 0): only its own locator goes (.50 is still ETR 1's).
    let now = t(600);
    let mut bye = Reg::new(
        200,
        vec![record(site, 0, &["192.0.2.18", "192.0.2.50"])],
        K1,
    );
    bye.proxy = true;
    dg(&mut ms, "192.0.2.18:4342", &bye.bytes(), now);
    let r = reply(&one_send(&dg(&mut ms, ETR2, &q, now)).1);
    let addrs: Vec<IpAddr> = r.records[0].locators.iter().map(|l| l.address).collect();
    assert_eq!(addrs, vec![ip("192.0.2.17"), ip("192.0.2.50")]);
    assert_eq!(ms.counters().registrations_withdrawn, 1);
    assert_eq!(ms.counters().tx_map_notify_unsolicited, 0);
    // ETR 1 expires 180 s after its last refresh (540 s): then nothing is registered.
    ms.on_timer(t(719));
    assert!(ms.registration(&eid(site), t(719)).is_some());
    ms.on_timer(t(720));
    assert!(ms.registration(&eid(site), t(720)).is_none());
    assert_eq!(ms.counters().registrations_expired, 1);
}

#[test]
fn expiry_of_one_etr_keeps_the_other_and_forwarding_picks_a_live_one() {
    let mut ms = MapServer::new(config());
    let site = "198.51.100.0/24";
    dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record(site, 10, &["192.0.2.17"])], K1).bytes(),
        t(0),
    );
    dg(
        &mut ms,
        "192.0.2.18:4342",
        &Reg::new(1, vec![record(site, 10, &["192.0.2.18"])], K1).bytes(),
        t(100),
    );
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        7,
        false,
        None,
    );
    // Not proxied: forwarded to the registrant heard last.
    assert_eq!(
        one_send(&dg(&mut ms, ETR2, &q, t(101))).0,
        sa("192.0.2.18:4342")
    );
    // ETR 2 stops refreshing and expires at 280 s; ETR 1, refreshed at 150 s, stays.
    dg(
        &mut ms,
        ETR1,
        &Reg::new(2, vec![record(site, 10, &["192.0.2.17"])], K1).bytes(),
        t(150),
    );
    assert_eq!(
        one_send(&dg(&mut ms, ETR2, &q, t(151))).0,
        sa("192.0.2.17:4342")
    );
    ms.on_timer(t(280));
    let r = ms.registration(&eid(site), t(280)).unwrap();
    assert_eq!(r.registrants.len(), 1);
    assert_eq!(r.record.locators.len(), 1);
    assert_eq!(r.record.locators[0].address, ip("192.0.2.17"));
    assert_eq!(
        one_send(&dg(&mut ms, ETR2, &q, t(281))).0,
        sa("192.0.2.17:4342")
    );
}

// ---- Instance-ids, host bits, unknown LCAFs ----------------------------------------------

/// A Map-Register for 198.51.100.0/24 in instance-id `iid` built byte by byte as an
/// independent xTR sends it (LCAF AFI 16387, type 2, IID mask-length 32), HMAC-SHA-256.
fn independent_iid_register(iid: u32, nonce: u64) -> Vec<u8> {
    let mut v = vec![0x30, 0, 0x01, 1];
    v.extend_from_slice(&nonce.to_be_bytes());
    v.extend_from_slice(&[0, 2, 0, 32]);
    v.extend_from_slice(&[0; 32]);
    // Record: TTL 1440, 1 locator, mask 24, A bit, map-version 0.
    v.extend_from_slice(&[0, 0, 0x05, 0xa0, 1, 24, 0x10, 0, 0, 0]);
    v.extend_from_slice(&[0x40, 0x03, 0, 0, 2, 32, 0, 10]);
    v.extend_from_slice(&iid.to_be_bytes());
    v.extend_from_slice(&[0, 1, 198, 51, 100, 0]);
    // Locator 192.0.2.17, priority 1 weight 100, L and R bits.
    v.extend_from_slice(&[1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 17]);
    auth::sign(&mut v, K1).unwrap();
    v
}

#[test]
fn site_prefix_in_an_instance_accepts_an_independent_xtrs_registration() {
    // As `config::lower` builds it from `{ prefix: 198.51.100.0/24, instance-id: 100 }`.
    let mut site1 = site(
        "site1",
        K1,
        Algorithm::HmacSha256,
        &[("198.51.100.0/24", false)],
    );
    site1.prefixes[0].eid.instance_id = Some(100);
    let mut ms = MapServer::new(MapServerConfig {
        sites: vec![site1],
        ..MapServerConfig::default()
    });
    let (to, payload) = one_send(&dg(&mut ms, ETR1, &independent_iid_register(100, 1), t(0)));
    assert_eq!(to, sa(ETR1));
    let n = MapNotify::parse(&payload).unwrap();
    assert_eq!(n.records[0].eid.instance_id, Some(100));
    // Our own encoding of the echoed EID: the same IID mask-length 32.
    let at = payload.len() - 12 - 18;
    assert_eq!(&payload[at..at + 6], &[0x40, 0x03, 0, 0, 2, 32]);
    let mut e = eid("198.51.100.7/32");
    e.instance_id = Some(100);
    assert!(ms.lookup(&e, t(1)).is_some());
    // The same prefix in another instance (or in none) belongs to no site.
    assert!(dg(&mut ms, ETR1, &independent_iid_register(101, 2), t(0)).is_empty());
    assert_eq!(ms.counters().rejected_unknown_eid, 1);
    assert!(ms.lookup(&eid("198.51.100.7/32"), t(1)).is_none());
}

#[test]
fn host_bits_of_a_registered_prefix_are_cleared_and_counted() {
    let mut ms = MapServer::new(config());
    let mut rec = record("198.51.100.0/24", 10, &["192.0.2.17"]);
    rec.eid.prefix = IpPrefix::new_unmasked(ip("198.51.100.77"), 24).unwrap();
    let (_, payload) = one_send(&dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![rec], K1).bytes(),
        t(0),
    ));
    assert_eq!(ms.counters().records_host_bits_masked, 1);
    assert!(ms.lookup(&eid("198.51.100.9/32"), t(1)).is_some());
    let r = ms.registration(&eid("198.51.100.0/24"), t(1)).unwrap();
    assert_eq!(r.record.eid, eid("198.51.100.0/24"));
    assert_eq!(
        MapNotify::parse(&payload).unwrap().records[0].eid,
        eid("198.51.100.0/24")
    );
}

#[test]
fn a_record_in_an_unknown_lcaf_is_skipped_and_the_others_registered() {
    let mut ms = MapServer::new(config());
    let m = MapRegister {
        want_map_notify: true,
        nonce: 1,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![record("198.51.100.0/24", 10, &["192.0.2.17"])],
        ..MapRegister::default()
    };
    let mut v = m.to_vec().unwrap();
    // A second record whose EID is a geo-coordinates LCAF (type 5), 1 locator.
    v[3] = 2;
    v.extend_from_slice(&[0, 0, 0, 10, 1, 32, 0x10, 0, 0, 0]);
    v.extend_from_slice(&[0x40, 0x03, 0, 0, 5, 0, 0, 4, 1, 2, 3, 4]);
    v.extend_from_slice(&[1, 100, 255, 0, 0, 5, 0, 1, 192, 0, 2, 17]);
    auth::sign(&mut v, K1).unwrap();
    assert_eq!(sends(&dg(&mut ms, ETR1, &v, t(0))).len(), 1);
    assert_eq!(ms.counters().records_skipped, 1);
    assert_eq!(ms.counters().rejected_malformed, 0);
    assert!(ms.registration(&eid("198.51.100.0/24"), t(1)).is_some());
}

#[test]
fn a_refresh_replayed_from_another_address_is_refused_and_forwarding_stays_put() {
    for kind in [Nonces::Increasing, Nonces::Random, Nonces::Constant] {
        let mut ms = MapServer::new(config());
        let mut peer = Peer::new(kind);
        let sent = refresh_for(&mut ms, &mut peer, "192.0.2.17", xtr_id(1, 1), t(0), 2);
        // The newest Map-Register, byte for byte, from an attacker's address.
        let now = t(130);
        assert!(dg(&mut ms, "192.0.2.178:4342", sent.last().unwrap(), now).is_empty());
        assert_eq!(ms.counters().rejected_replayed_nonce, 1, "{kind:?}");
        let r = ms.registration(&eid(HOST), now).unwrap();
        assert_eq!(r.etr, sa(ETR1), "{kind:?}");
        let q = ecm(
            "203.0.113.10",
            "198.51.100.10",
            &["192.0.2.33"],
            7,
            false,
            None,
        );
        assert_eq!(
            one_send(&dg(&mut ms, ETR2, &q, now)).0,
            sa("192.0.2.17:4342")
        );
    }
}

#[test]
fn publications_carry_the_union_and_refreshes_of_either_etr_publish_nothing() {
    let mut ms = MapServer::new(config());
    let sub = xtr_id(2, 2).unwrap();
    let q = ecm(
        "203.0.113.10",
        "198.51.100.10",
        &["192.0.2.33"],
        100,
        true,
        Some(sub),
    );
    dg(&mut ms, ETR2, &q, t(0));
    let site = "198.51.100.0/24";
    let publications = |acts: &[Action]| -> Vec<MapNotify> {
        sends(acts)
            .into_iter()
            .filter(|(to, _)| *to == sa("192.0.2.33:4342"))
            .map(|(_, p)| MapNotify::parse(&p).unwrap())
            .collect()
    };
    let addrs = |n: &MapNotify| -> Vec<IpAddr> {
        n.records[0].locators.iter().map(|l| l.address).collect()
    };
    let a = dg(
        &mut ms,
        ETR1,
        &Reg::new(1, vec![record(site, 10, &["192.0.2.17"])], K1).bytes(),
        t(1),
    );
    assert_eq!(addrs(&publications(&a)[0]), vec![ip("192.0.2.17")]);
    let b = dg(
        &mut ms,
        "192.0.2.18:4342",
        &Reg::new(1, vec![record(site, 10, &["192.0.2.18"])], K1).bytes(),
        t(2),
    );
    assert_eq!(
        addrs(&publications(&b)[0]),
        vec![ip("192.0.2.17"), ip("192.0.2.18")]
    );
    for i in 0..5u64 {
        let a = dg(
            &mut ms,
            ETR1,
            &Reg::new(2 + i, vec![record(site, 10, &["192.0.2.17"])], K1).bytes(),
            t(60 * (i + 1)),
        );
        let b = dg(
            &mut ms,
            "192.0.2.18:4342",
            &Reg::new(2 + i, vec![record(site, 10, &["192.0.2.18"])], K1).bytes(),
            t(60 * (i + 1) + 1),
        );
        assert!(publications(&a).is_empty() && publications(&b).is_empty());
    }
    // ETR 2 withdraws: the subscriber gets ETR 1's locators, not a removal.
    let w = dg(
        &mut ms,
        "192.0.2.18:4342",
        &Reg::new(9, vec![record(site, 0, &["192.0.2.18"])], K1).bytes(),
        t(400),
    );
    let p = publications(&w);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].records[0].ttl, 10);
    assert_eq!(addrs(&p[0]), vec![ip("192.0.2.17")]);
}

#[test]
fn registrants_with_replay_history_are_bounded() {
    let mut ms = MapServer::new(MapServerConfig {
        max_registrants: 2,
        ..config()
    });
    let site = "198.51.100.0/24";
    for (i, from) in ["192.0.2.17:4342", "192.0.2.18:4342"].iter().enumerate() {
        let r = Reg::new(1, vec![record(site, 10, &[&from[..10]])], K1);
        assert_eq!(sends(&dg(&mut ms, from, &r.bytes(), t(i as u64))).len(), 1);
    }
    let third = Reg::new(1, vec![record(site, 10, &["192.0.2.19"])], K1);
    assert!(dg(&mut ms, "192.0.2.19:4342", &third.bytes(), t(3)).is_empty());
    assert_eq!(ms.counters().rejected_table_full, 1);
    // The known ones keep refreshing.
    let again = Reg::new(2, vec![record(site, 10, &["192.0.2.17"])], K1);
    assert_eq!(sends(&dg(&mut ms, ETR1, &again.bytes(), t(60))).len(), 1);
    assert_eq!(
        ms.registration(&eid(site), t(60))
            .unwrap()
            .registrants
            .len(),
        2
    );
    // Once one of them holds nothing and has been silent for a day, it can make room.
    let bye = Reg::new(3, vec![record(site, 0, &["192.0.2.18"])], K1);
    dg(&mut ms, "192.0.2.18:4342", &bye.bytes(), t(61));
    let later = t(61) + replay::FORGET_AFTER;
    let early = Timestamp::from_millis(later.as_millis() - 1000);
    ms.on_timer(early);
    let refresh = Reg::new(4, vec![record(site, 10, &["192.0.2.17"])], K1);
    dg(&mut ms, ETR1, &refresh.bytes(), early);
    assert!(dg(&mut ms, "192.0.2.19:4342", &third.bytes(), early).is_empty());
    assert_eq!(
        sends(&dg(&mut ms, "192.0.2.19:4342", &third.bytes(), later)).len(),
        1
    );
    assert_eq!(ms.counters().registrants_forgotten, 1);
    assert_eq!(ms.counters().rejected_table_full, 2);
}

#[test]
fn a_registrant_without_xtr_id_joins_the_site_holding_the_prefix() {
    let mut ms = MapServer::new(config());
    let mut a = Reg::new(1, vec![record(HOST, 10, &["192.0.2.17"])], K1);
    a.xtr = xtr_id(1, 7);
    dg(&mut ms, ETR1, &a.bytes(), t(0));
    // An ETR that sends no trailer (OOR does not) is merged, not taken for another site...
    let b = Reg::new(1, vec![record(HOST, 10, &["192.0.2.18"])], K1);
    let acts = dg(&mut ms, "192.0.2.18:4342", &b.bytes(), t(1));
    assert_eq!(sends(&acts).len(), 1);
    assert_eq!(
        held(&ms, t(1)),
        Some(vec![ip("192.0.2.17"), ip("192.0.2.18")])
    );
    // ...and an xTR of the same Site-ID too; one of another Site-ID takes the host.
    let mut c = Reg::new(1, vec![record(HOST, 10, &["192.0.2.19"])], K1);
    c.xtr = xtr_id(3, 7);
    dg(&mut ms, "192.0.2.19:4342", &c.bytes(), t(2));
    assert_eq!(
        ms.registration(&eid(HOST), t(2)).unwrap().registrants.len(),
        3
    );
    let mut d = Reg::new(1, vec![record(HOST, 10, &["192.0.2.20"])], K1);
    d.xtr = xtr_id(4, 8);
    let acts = dg(&mut ms, "192.0.2.20:4342", &d.bytes(), t(3));
    assert_eq!(held(&ms, t(3)), Some(vec![ip("192.0.2.20")]));
    assert_eq!(ms.counters().registrations_displaced, 3);
    // Each previous locator is told, once.
    let mut told: Vec<SocketAddr> = sends(&acts)
        .into_iter()
        .map(|(to, _)| to)
        .filter(|to| *to != sa("192.0.2.20:4342"))
        .collect();
    told.sort();
    assert_eq!(
        told,
        vec![
            sa("192.0.2.17:4342"),
            sa("192.0.2.18:4342"),
            sa("192.0.2.19:4342")
        ]
    );
}

/// Two data centres, each its own site and key, sharing a dynamic-EID prefix.
fn shared_prefix_config() -> MapServerConfig {
    MapServerConfig {
        sites: vec![
            site(
                "dc1",
                K1,
                Algorithm::HmacSha256,
                &[("198.51.100.0/24", true)],
            ),
            site(
                "dc2",
                K2,
                Algorithm::HmacSha256,
                &[("198.51.100.0/24", true)],
            ),
        ],
        ..MapServerConfig::default()
    }
}

#[test]
fn a_prefix_shared_by_sites_only_with_accept_more_specifics_everywhere() {
    assert_eq!(shared_prefix_config().check(), Ok(()));
    let mut one_exact = shared_prefix_config();
    one_exact.sites[1].prefixes[0].accept_more_specifics = false;
    assert!(matches!(
        one_exact.check(),
        Err(MapServerConfigError::DuplicatePrefix { .. })
    ));
}

#[test]
fn host_moving_to_another_configured_site_is_taken_over_and_the_old_site_told_with_its_key() {
    let mut ms = MapServer::new(shared_prefix_config());
    let first = Reg::new(1, vec![record(HOST, 10, &["192.0.2.17"])], K1);
    assert_eq!(sends(&dg(&mut ms, ETR1, &first.bytes(), t(0))).len(), 1);
    assert_eq!(ms.registration(&eid(HOST), t(0)).unwrap().site, 0);
    // A key of neither site: refused.
    let stranger = Reg::new(1, vec![record(HOST, 10, &["192.0.2.66"])], b"nobody");
    assert!(dg(&mut ms, "192.0.2.66:4342", &stranger.bytes(), t(1)).is_empty());
    assert_eq!(ms.counters().rejected_auth_failed, 1);
    // The host moves to DC2, whose xTR registers it with DC2's key.
    let moved = Reg::new(1, vec![record(HOST, 10, &["192.0.2.33"])], K2);
    let acts = dg(&mut ms, ETR2, &moved.bytes(), t(10));
    let r = ms.registration(&eid(HOST), t(10)).unwrap();
    assert_eq!(r.site, 1);
    assert_eq!(held(&ms, t(10)), Some(vec![ip("192.0.2.33")]));
    assert_eq!(ms.counters().registrations_displaced, 1);
    let s = sends(&acts);
    assert_eq!(s.len(), 2, "{acts:?}");
    // DC1's xTR is told with DC1's key (the only one it has), DC2's answered with DC2's.
    assert_eq!(s[0].0, sa("192.0.2.17:4342"));
    auth::verify(&s[0].1, K1).unwrap();
    assert_eq!(
        MapNotify::parse(&s[0].1).unwrap().records[0].locators[0].address,
        ip("192.0.2.33")
    );
    assert_eq!(s[1].0, sa(ETR2));
    auth::verify(&s[1].1, K2).unwrap();
    // DC1's old Map-Register, replayed, does not take the host back.
    assert!(dg(&mut ms, ETR1, &first.bytes(), t(20)).is_empty());
    assert_eq!(ms.counters().rejected_replayed_nonce, 1);
    assert_eq!(held(&ms, t(20)), Some(vec![ip("192.0.2.33")]));
    // Both sites refresh their own hosts without disturbing each other.
    let other_host = Reg::new(2, vec![record("198.51.100.11/32", 10, &["192.0.2.17"])], K1);
    assert_eq!(
        sends(&dg(&mut ms, ETR1, &other_host.bytes(), t(30))).len(),
        1
    );
    let refresh = Reg::new(2, vec![record(HOST, 10, &["192.0.2.33"])], K2);
    assert_eq!(sends(&dg(&mut ms, ETR2, &refresh.bytes(), t(60))).len(), 1);
    assert_eq!(ms.counters().tx_map_notify_unsolicited, 1);
}

// ---- Log lines ---------------------------------------------------------------------------

/// Captures log records per thread (each test runs on its own thread), so that tests running in
/// parallel see only their own lines.
mod capture {
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Option<Vec<(log::Level, String)>>> = const { RefCell::new(None) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            LINES.with(|l| {
                if let Some(v) = l.borrow_mut().as_mut() {
                    v.push((r.level(), r.args().to_string()));
                }
            });
        }
        fn flush(&self) {}
    }

    static LOGGER: Capture = Capture;

    /// The log lines `f` produced on this thread.
    pub fn lines(f: impl FnOnce()) -> Vec<(log::Level, String)> {
        // Only this test module installs a logger; a second call finds it installed.
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Debug);
        LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
        f();
        LINES.with(|l| l.borrow_mut().take().unwrap_or_default())
    }
}

#[test]
fn every_registration_outcome_is_logged_with_site_registrant_and_prefix() {
    use log::Level::{Debug, Info, Warn};
    let mut ms = MapServer::new(config());
    let site = "198.51.100.0/24";
    let lines = capture::lines(|| {
        let r = |n, ttl, rloc| Reg::new(n, vec![record(site, ttl, &[rloc])], K1).bytes();
        dg(&mut ms, ETR1, &r(1, 10, "192.0.2.17"), t(0));
        dg(&mut ms, ETR1, &r(2, 10, "192.0.2.17"), t(60));
        dg(&mut ms, ETR1, &r(3, 10, "192.0.2.21"), t(61));
        // The first Map-Register again: a replay (it would move the EID back).
        dg(&mut ms, ETR1, &r(1, 10, "192.0.2.17"), t(62));
        dg(&mut ms, ETR1, &r(4, 0, "192.0.2.21"), t(63));
        // Wrong key, three times within a second: one line, then one saying how many followed.
        let bad = Reg::new(5, vec![record(site, 10, &["192.0.2.17"])], K2).bytes();
        for ms_ in [64_000, 64_300, 64_600, 65_100] {
            dg(&mut ms, ETR1, &bad, Timestamp::from_millis(ms_));
        }
        dg(&mut ms, ETR1, &r(6, 10, "192.0.2.17"), t(66));
        ms.on_timer(t(66 + 180));
    });
    let p = "[0]198.51.100.0/24";
    let who = "etr 192.0.2.17";
    let want: Vec<(log::Level, String)> = vec![
        (
            Info,
            format!("map-server: site site1: {who}: registered {p} (1 locators)"),
        ),
        (
            Debug,
            format!("map-server: site site1: {who}: refreshed {p}"),
        ),
        (
            Info,
            format!("map-server: site site1: {who}: changed {p} (1 locators)"),
        ),
        (
            Warn,
            format!(
                "map-server: refused Map-Register from {ETR1}, site site1, {who}, prefix {p}: \
                 replay of an earlier Map-Register"
            ),
        ),
        (Info, format!("map-server: site site1: {who}: withdrew {p}")),
        (
            Warn,
            format!(
                "map-server: refused Map-Register from {ETR1}, site site1, {who}, prefix {p}: \
                 authentication failed (wrong key?)"
            ),
        ),
        (
            Warn,
            format!(
                "map-server: refused Map-Register from {ETR1}, site site1, {who}, prefix {p}: \
                 authentication failed (wrong key?) (2 more refused for this reason since)"
            ),
        ),
        (
            Info,
            format!("map-server: site site1: {who}: registered {p} (1 locators)"),
        ),
        (
            Info,
            format!("map-server: site site1: {who}: registration of {p} expired"),
        ),
    ];
    assert_eq!(lines, want);
}

#[test]
fn an_itr_rloc_in_an_unknown_lcaf_is_skipped_and_the_reply_goes_to_a_plain_one() {
    let mut ms = MapServer::new(config());
    let mut p = Reg::new(1, vec![record("203.0.113.0/24", 10, &["192.0.2.33"])], K2);
    p.proxy = true;
    dg(&mut ms, ETR2, &p.bytes(), t(0));
    // A Map-Request whose first ITR-RLOC is a security-key LCAF (type 11, as lispers.net sends
    // with lisp-crypto), then a plain IPv4 one.
    let mut v = vec![0x10, 0, 1, 1];
    v.extend_from_slice(&0x77u64.to_be_bytes());
    v.extend_from_slice(&[0, 1, 198, 51, 100, 10]);
    v.extend_from_slice(&[0x40, 0x03, 0, 0, 11, 0, 0, 4, 1, 2, 3, 4]);
    v.extend_from_slice(&[0, 1, 192, 0, 2, 17]);
    v.extend_from_slice(&[0, 32, 0, 1, 203, 0, 113, 10]);
    let req = MapRequest::parse(&v).unwrap();
    assert_eq!(req.itr_rlocs, vec![ip("192.0.2.17")]);
    let e = Ecm::new(
        ip("198.51.100.10"),
        ip("203.0.113.10"),
        Message::MapRequest(req),
    )
    .unwrap();
    // Our ECM encoder re-emits the request without the LCAF: splice the peer's bytes back in.
    let mut bytes = e.to_vec().unwrap();
    let inner = 4 + e.ip.header_len() + 8;
    bytes.truncate(inner);
    bytes.extend_from_slice(&v);
    let udp = 4 + e.ip.header_len();
    let udp_len = (8 + v.len()) as u16;
    bytes[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
    let ip_len = (e.ip.header_len() + 8 + v.len()) as u16;
    bytes[4 + 2..4 + 4].copy_from_slice(&ip_len.to_be_bytes());
    bytes[4 + 10..4 + 12].copy_from_slice(&[0, 0]);
    let ck = lisp_common::wire::control::ecm::ipv4_header_checksum(&bytes[4..4 + 20]);
    bytes[4 + 10..4 + 12].copy_from_slice(&ck.to_be_bytes());
    bytes[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    let c = udp_checksum(ip("198.51.100.10"), ip("203.0.113.10"), &bytes[udp..]);
    bytes[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    let (to, payload) = one_send(&dg(&mut ms, ETR1, &bytes, t(1)));
    assert_eq!(to, sa("192.0.2.17:4342"));
    assert_eq!(reply(&payload).nonce, 0x77);
    assert_eq!(ms.counters().locators_skipped, 1);
    // With no plain ITR-RLOC left there is nowhere to answer: malformed.
    let mut only_lcaf = v.clone();
    only_lcaf[2] = 0;
    only_lcaf.drain(30..36);
    assert_eq!(
        MapRequest::parse(&only_lcaf),
        Err(lisp_common::wire::control::Error::RecordCount)
    );
}

// ---- On the simulation harness, with lisp-agent's own xTRs -------------------------------

/// Two of our xTRs serve one multihomed site (the same /24, each its own RLOC), with
/// proxy-reply; a third resolves an EID of it. For 10 minutes of refreshes: both stay
/// registered, the map-server sends nothing but the solicited Map-Notifies, and the third
/// xTR's map-cache holds both RLOCs.
#[test]
fn sim_two_of_our_xtrs_of_one_site_are_resolved_to_both_rlocs_without_notify_storm() {
    use crate::core::node::NodeConfig;
    use crate::core::sim::Sim;
    use crate::core::sim::build::{map_server, xtr};
    use crate::core::xtr::RegistrationState;
    use lisp_common::wire::control::msg_type;

    const KEY: &[u8] = b"site-secret";
    let mut sim = Sim::new(1);
    let ms = sim.add_node(
        "ms",
        NodeConfig::map_server(map_server(KEY, &["198.51.100.0/22"])),
        &["192.0.2.1"],
    );
    let proxied = |rloc: &str, eids: &[&str]| {
        let mut c = xtr(rloc, eids, &["192.0.2.1"], KEY);
        c.map_servers[0].proxy_reply = true;
        NodeConfig::xtr(c)
    };
    let a1 = sim.add_node("a1", proxied("192.0.2.11", &["198.51.100.0/24"]), &[]);
    let a2 = sim.add_node("a2", proxied("192.0.2.12", &["198.51.100.0/24"]), &[]);
    let c = sim.add_node("c", proxied("192.0.2.13", &["198.51.101.0/24"]), &[]);
    // Past the Map-Notifies answering the refreshes sent at 600 s.
    sim.run_until(Timestamp::from_millis(600_500));
    for x in [a1, a2] {
        let r = sim.node(x).xtr().registrations(sim.now());
        assert_eq!(r[0].state, RegistrationState::Registered, "{}", sim.name(x));
    }
    let from_ms: Vec<u8> = sim
        .trace()
        .iter()
        .filter(|s| s.from_node == ms)
        .map(|s| s.payload[0] >> 4)
        .collect();
    let registers = sim
        .trace()
        .iter()
        .filter(|s| s.from_node != ms && s.payload[0] >> 4 == msg_type::MAP_REGISTER)
        .count();
    // One solicited Map-Notify per Map-Register (3 xTRs, every 60 s), nothing unsolicited.
    assert_eq!(registers, 3 * 11);
    assert_eq!(from_ms.len(), registers);
    assert!(from_ms.iter().all(|t| *t == msg_type::MAP_NOTIFY));
    let counters = sim.node(ms).map_server().unwrap().counters().clone();
    assert_eq!(counters.tx_map_notify_unsolicited, 0);
    assert_eq!(counters.registrations_changed, 0);

    sim.miss(c, 0, "198.51.101.7", "198.51.100.9");
    assert!(sim.run_until_quiet(Duration::from_secs(2)));
    let (prefix, data) = sim.lookup(c, 0, "198.51.100.9").expect("resolved");
    assert_eq!(prefix.to_string(), "[0]198.51.100.0/24");
    let crate::core::action::MapCacheData::Positive(locs) = data else {
        panic!("{data:?}")
    };
    let mut rlocs: Vec<IpAddr> = locs.iter().map(|l| l.addr).collect();
    rlocs.sort();
    assert_eq!(rlocs, vec![ip("192.0.2.11"), ip("192.0.2.12")]);
}
