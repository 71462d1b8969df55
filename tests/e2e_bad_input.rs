//! Bad input end to end, in network namespaces (needs root): the lab of `support/lab.rs` with
//! one map-server and both xTRs registered with it (as in `e2e_control.rs`), plus a host off the
//! core that sends a bounded, seeded stream of bad input:
//!
//! ```text
//!                  ms1 192.0.2.130     evil 192.0.2.178, 2001:db8:ff:3::10
//!                           \           /
//!  ha ── itr (xTR A) ────── core ─────────── etr (xTR B) ── hb
//! ```
//!
//! At the map-server and at xTR B (UDP 4342; xTR B over IPv4 and IPv6): random bytes; every truncation of valid messages
//! built with the lisp-common codec; Map-Registers signed with a wrong key; a Map-Register
//! captured on the core and replayed byte for byte; Map-Replies / Map-Notifies /
//! Map-Notify-Acks with unknown nonces; datagrams of up to 65000 bytes; bit-flipped messages.
//! At xTR B's RLOCs (UDP 4341, IPv4 and IPv6 outer, through its XDP program): truncated LISP headers, inner packets
//! of a version that is neither 4 nor 6, random payloads.
//!
//! What it proves: both agents stay up and keep serving metrics; every input that must be
//! refused is counted as refused (and nothing is counted twice); no registration changed (same
//! registrations at the map-server, which still forwards Map-Requests to the same ETRs, which
//! still answer with the same records; the xTRs stay registered and keep refreshing); no
//! map-cache changed; and traffic still crosses the overlay afterwards.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lisp_common::wire::control::auth::{self, Algorithm};
use lisp_common::wire::control::ecm::ipv4_header_checksum;
use lisp_common::wire::control::{
    Address, Auth, Ecm, Eid, IpPrefix, Locator, MapNotify, MapRegister, MapReply, MapRequest,
    Message, Record, XtrId,
};
use lisp_common::wire::data;

use support::lab::{
    self, AgentOptions, CORE, ETR, HA, ITR, MapServerNode, Registration, SiteKey, series,
};
use support::netns::{self, Topology, in_netns};

const MS: &str = lab::MS1.ns;
const MS_ADDR: &str = "192.0.2.130";
/// The sender of the bad input: a host off the core, attached the way a map-server node is (its
/// own /28 inside 192.0.2.128/26, which the xTRs already route to the core).
const EVIL: MapServerNode = MapServerNode {
    ns: "evil",
    core_mac: "02:00:00:00:0e:01",
    ms_mac: "02:00:00:00:0e:02",
    core_cidr: "192.0.2.177/28",
    ms_cidr: "192.0.2.178/28",
};
const EVIL_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 178);
/// Its IPv6 address and the core's on that link (the map-server nodes have IPv4 only).
const EVIL_V6: &str = "2001:db8:ff:3::10";
const EVIL_V6_CORE: &str = "2001:db8:ff:3::1";
const KEY_A: &str = "site-a-key";
const KEY_B: &str = "site-b-key";
const WRONG_KEY: &[u8] = b"not-the-site-key";
const SITE_A_KEY: SiteKey = SiteKey {
    key: KEY_A,
    algorithm: "hmac-sha-256",
};
const SITE_B_KEY: SiteKey = SiteKey {
    key: KEY_B,
    algorithm: "hmac-sha-1",
};
/// Short, so that "still registered" is re-proved by fresh Map-Register rounds within seconds.
const REGISTER_INTERVAL_S: u64 = 2;
/// Everything sent is a function of this seed (the same datagrams on every run).
const SEED: u64 = 0x6261_642d_696e_7075;
/// Source EID and EID asked for in the Map-Requests sent: in no site and in no database-mapping,
/// and more bits away from both sites' prefixes than a bit flip changes.
const OTHER_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
const OTHER_EID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 251);
const OTHER_SRC_V6: &str = "2001:db8:ff:3::250";
const OTHER_EID_V6: &str = "2001:db8:ff:3::251";
/// How many of each kind of bad input (per target).
const RANDOM: usize = 400;
const WRONG_KEY_REGISTERS: usize = 100;
const REPLAYS: usize = 50;
const UNSOLICITED: usize = 100;
const OVERSIZED: usize = 12;
const BIT_FLIPS: usize = 800;
const DATA_REPEAT: usize = 10;
const DATA_RANDOM: usize = 300;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

/// splitmix64: a seeded generator is all the test needs (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Random,
    Truncated,
    WrongKey,
    Replay,
    UnsolicitedReply,
    UnsolicitedNotify,
    UnsolicitedAck,
    Oversized,
    BitFlip,
}

struct Bad {
    kind: Kind,
    bytes: Vec<u8>,
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn eid(prefix: &str) -> Eid {
    let (a, l) = prefix.split_once('/').unwrap();
    Eid::new(
        None,
        IpPrefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap(),
    )
}

/// A record for `prefix` pointing at the attacker: what a hijack would install.
fn hijack_record(prefix: &str) -> Record {
    let mut r = Record::new(eid(prefix), 1440);
    r.locators.push(Locator::new(v4(EVIL_ADDR), 1, 100));
    r
}

/// A well-formed Map-Register for site A's EIDs at the attacker's RLOC, signed with a wrong key.
fn wrong_key_register(rng: &mut Rng) -> Vec<u8> {
    let mut xtr_id = [0u8; 16];
    xtr_id.copy_from_slice(&rng.bytes(16));
    let reg = MapRegister {
        want_map_notify: true,
        nonce: rng.next(),
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: lab::SITE_A.iter().map(|p| hijack_record(p)).collect(),
        xtr: Some(XtrId { xtr_id, site_id: 0 }),
        ..MapRegister::default()
    };
    auth::emit_signed(&Message::MapRegister(reg), WRONG_KEY).unwrap()
}

/// A Map-Request for `want`, answered to `itr_rloc`, from a source EID of `want`'s family.
fn map_request(nonce: u64, itr_rloc: IpAddr, want: IpAddr) -> MapRequest {
    let src = if want.is_ipv4() {
        v4(OTHER_SRC)
    } else {
        OTHER_SRC_V6.parse().unwrap()
    };
    MapRequest {
        nonce,
        source_eid: Address::ip(src),
        itr_rlocs: vec![itr_rloc],
        eids: vec![Eid::new(None, IpPrefix::host(want))],
        ..MapRequest::default()
    }
}

fn ecm(req: MapRequest, src_port: u16) -> Vec<u8> {
    let want = req.eids[0].prefix.addr();
    let mut e = Ecm::new(req.source_eid.ip.unwrap(), want, Message::MapRequest(req)).unwrap();
    e.src_port = src_port;
    Message::Ecm(e).to_vec().unwrap()
}

fn unsolicited_reply(nonce: u64) -> Vec<u8> {
    let r = MapReply {
        nonce,
        records: vec![hijack_record(lab::SITE_B[0])],
        ..MapReply::default()
    };
    Message::MapReply(r).to_vec().unwrap()
}

/// A Map-Notify (or -Ack) for site B at the attacker's RLOC, signed with a wrong key.
fn unsolicited_notify(nonce: u64, ack: bool) -> Vec<u8> {
    let n = MapNotify {
        nonce,
        auth: Auth::zeroed(Algorithm::HmacSha1),
        records: vec![hijack_record(lab::SITE_B[0])],
        ..MapNotify::default()
    };
    let m = if ack {
        Message::MapNotifyAck(n)
    } else {
        Message::MapNotify(n)
    };
    auth::emit_signed(&m, WRONG_KEY).unwrap()
}

/// The bad control input sent to one target: every kind, shuffled together.
fn bad_control(rng: &mut Rng, captured_register: &[u8]) -> Vec<Bad> {
    let valid: Vec<Vec<u8>> = vec![
        wrong_key_register(rng),
        Message::MapRequest(map_request(rng.next(), v4(EVIL_ADDR), v4(OTHER_EID)))
            .to_vec()
            .unwrap(),
        ecm(map_request(rng.next(), v4(EVIL_ADDR), v4(OTHER_EID)), 4342),
        // IPv6 inner header, IPv6 ITR-RLOC: the other parse paths.
        ecm(
            map_request(
                rng.next(),
                EVIL_V6.parse().unwrap(),
                OTHER_EID_V6.parse().unwrap(),
            ),
            4342,
        ),
        unsolicited_reply(rng.next()),
        unsolicited_notify(rng.next(), false),
        unsolicited_notify(rng.next(), true),
    ];
    let mut out = Vec::new();
    let mut push = |kind, bytes| out.push(Bad { kind, bytes });
    for i in 0..RANDOM {
        let n = if i < 2 { i } else { rng.below(600) };
        push(Kind::Random, rng.bytes(n));
    }
    for m in &valid {
        for k in 0..m.len() {
            push(Kind::Truncated, m[..k].to_vec());
        }
    }
    for _ in 0..WRONG_KEY_REGISTERS {
        push(Kind::WrongKey, wrong_key_register(rng));
    }
    for _ in 0..REPLAYS {
        push(Kind::Replay, captured_register.to_vec());
    }
    for _ in 0..UNSOLICITED {
        push(Kind::UnsolicitedReply, unsolicited_reply(rng.next()));
        push(
            Kind::UnsolicitedNotify,
            unsolicited_notify(rng.next(), false),
        );
        push(Kind::UnsolicitedAck, unsolicited_notify(rng.next(), true));
    }
    for i in 0..OVERSIZED {
        let len = if i == 0 {
            65000
        } else {
            9217 + rng.below(65000 - 9217)
        };
        // Half random, half a valid message followed by padding (whatever prefix of it the
        // receiver reads is the message plus trailing bytes).
        let mut b = if i % 2 == 0 {
            valid[rng.below(valid.len())].clone()
        } else {
            Vec::new()
        };
        let pad = len - b.len();
        b.extend(rng.bytes(pad));
        push(Kind::Oversized, b);
    }
    for _ in 0..BIT_FLIPS {
        let pick = rng.below(valid.len() + 1);
        let mut b = valid.get(pick).map_or(captured_register, |v| v).to_vec();
        for _ in 0..1 + rng.below(3) {
            let bit = rng.below(b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
        }
        push(Kind::BitFlip, b);
    }
    rng.shuffle(&mut out);
    out
}

/// Could the map-server agent accept this datagram? Only an ECM carrying a Map-Request with an
/// EID record is answered; everything else it must refuse: its map-server core takes
/// Map-Registers (none of ours verifies with a site key, or has a fresh nonce), Map-Notify-Acks
/// (it has no unsolicited Map-Notify outstanding) and ECMs, and its xTR core the rest (it has
/// no database-mappings and no outstanding nonces).
fn map_server_may_accept(d: &[u8]) -> bool {
    matches!(Message::parse(d), Ok(Message::Ecm(e))
        if matches!(&*e.message, Message::MapRequest(r) if !r.eids.is_empty()))
}

/// A valid LISP data packet to site B (N bit, nonce; inner IPv4/UDP from hA to hB).
fn valid_lisp_data() -> Vec<u8> {
    let payload = b"lisp-bad-input";
    let total = 20 + 8 + payload.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&lab::HA_V4.parse::<Ipv4Addr>().unwrap().octets());
    ip[16..20].copy_from_slice(&lab::HB_V4.parse::<Ipv4Addr>().unwrap().octets());
    let c = ipv4_header_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    let mut out = vec![data::flags::N, 0x12, 0x34, 0x56, 0, 0, 0, 0];
    out.extend(ip);
    out.extend(udp);
    out.extend_from_slice(payload);
    out
}

/// Bytes of UDP payload below which no LISP data packet is acceptable: header + IPv4 header.
const MIN_LISP_DATA: usize = data::HEADER_LEN + 20;

/// Must the ETR's XDP program drop this UDP 4341 payload as bad LISP? (Too short for a header
/// and an IPv4 header, N and V both set, or an inner version that is neither 4 nor 6.) Others
/// may be dropped too (an inner header that does not parse) or decapsulated.
fn must_drop_lisp(p: &[u8]) -> bool {
    if p.len() < MIN_LISP_DATA {
        return true;
    }
    let f = p[0];
    if f & data::flags::N != 0 && f & data::flags::V != 0 {
        return true;
    }
    !matches!(p[data::HEADER_LEN] >> 4, 4 | 6)
}

/// Malformed LISP data: every truncation of a valid packet below [`MIN_LISP_DATA`], valid
/// packets with each bad inner version, random payloads.
fn bad_data(rng: &mut Rng) -> Vec<Vec<u8>> {
    let valid = valid_lisp_data();
    let mut out = Vec::new();
    for _ in 0..DATA_REPEAT {
        for k in 0..MIN_LISP_DATA {
            out.push(valid[..k].to_vec());
        }
        for v in (0u8..16).filter(|v| !matches!(v, 4 | 6)) {
            let mut b = valid.clone();
            b[data::HEADER_LEN] = (v << 4) | (b[data::HEADER_LEN] & 0x0f);
            out.push(b);
        }
    }
    for _ in 0..DATA_RANDOM {
        let n = rng.below(1400);
        out.push(rng.bytes(n));
    }
    rng.shuffle(&mut out);
    out
}

/// Sends `datagrams` in turn through each of `paths` (socket, destination), paced so that a
/// receiver doing real work per datagram keeps up (what overflows anyway is read back from the
/// kernel's UDP error counter).
fn send_paced(paths: &[(&UdpSocket, SocketAddr)], datagrams: &[&[u8]]) {
    for (i, d) in datagrams.iter().enumerate() {
        let (sock, to) = paths[i % paths.len()];
        sock.send_to(d, to).unwrap();
        if d.len() > 9000 {
            // Reassembled, one of these fills a good part of a receive buffer.
            std::thread::sleep(Duration::from_millis(10));
        } else if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn slices(v: &[Bad]) -> Vec<&[u8]> {
    v.iter().map(|d| d.bytes.as_slice()).collect()
}

/// Sum of the refusals an agent counted: its xTR core's and its map-server core's.
fn rejected(text: &str, except: &[&str]) -> u64 {
    let xtr: u64 = lab::nonzero_series(text, "lisp_xtr_rejected_total")
        .into_iter()
        .filter(|(r, _)| !except.contains(&r.as_str()))
        .map(|(_, v)| v)
        .sum();
    let ms: u64 = lab::nonzero_series(text, "lisp_map_server_total")
        .into_iter()
        .filter(|(e, _)| e.starts_with("rejected_"))
        .map(|(_, v)| v)
        .sum();
    xtr + ms
}

fn ms_counter(text: &str, event: &str) -> u64 {
    series(text, &format!("lisp_map_server_total{{event=\"{event}\"}}")).unwrap_or(0)
}

fn xtr_counter(text: &str, event: &str) -> u64 {
    series(text, &format!("lisp_xtr_total{{event=\"{event}\"}}")).unwrap_or(0)
}

fn xtr_rejected(text: &str, reason: &str) -> u64 {
    series(
        text,
        &format!("lisp_xtr_rejected_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

/// Live registrations at the map-server, from its counters.
fn live_registrations(ms: &str) -> u64 {
    ms_counter(ms, "registrations_created")
        - ms_counter(ms, "registrations_withdrawn")
        - ms_counter(ms, "registrations_expired")
}

/// Asks the map-server (ECM Map-Request from the attacker's host) for `want`; returns the records
/// of the Map-Reply, which comes from the ETR the map-server forwarded the request to.
fn resolve(t: &Topology, want: Ipv4Addr, nonce: u64) -> Vec<Record> {
    let sock = in_netns(&t.ns(EVIL.ns), || {
        Ok(UdpSocket::bind(SocketAddr::new(v4(EVIL_ADDR), 0))?)
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let to = SocketAddr::new(MS_ADDR.parse().unwrap(), 4342);
    let mut buf = [0u8; 4096];
    for attempt in 0..4u64 {
        let n = nonce + attempt;
        sock.send_to(&ecm(map_request(n, v4(EVIL_ADDR), v4(want)), port), to)
            .unwrap();
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if let Ok(Message::MapReply(r)) = Message::parse(&buf[..len])
                && r.nonce == n
            {
                return r.records;
            }
        }
    }
    panic!("no Map-Reply for {want} through the map-server");
}

fn map_cache_log_lines(t: &mut Topology, h: usize) -> usize {
    t.proc(h)
        .log_text()
        .lines()
        .filter(|l| l.contains("map-cache ["))
        .count()
}

fn metrics(t: &Topology, ns: &str) -> String {
    lab::metrics_text(&t.ns(ns)).unwrap()
}

#[test]
fn bad_control_and_data_input_changes_nothing() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let started = Instant::now();
    let prefix = netns::unique_prefix("lispbad");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1, EVIL]).unwrap();
    assert_eq!((lab::MS1.addr(), EVIL.addr()), (MS_ADDR, "192.0.2.178"));
    t.addr(EVIL.ns, "ms0", &format!("{EVIL_V6}/64")).unwrap();
    t.addr(CORE, EVIL.ns, &format!("{EVIL_V6_CORE}/64"))
        .unwrap();
    t.route(EVIL.ns, "default", EVIL_V6_CORE).unwrap();
    t.route(ETR, "2001:db8:ff:3::/64", "2001:db8:ff:2::1")
        .unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();

    // Capture the map-server's link, to replay a real Map-Register later.
    let pcap = t.workdir.join("core-ms1.pcap");
    let cap = lab::start_capture(&mut t, CORE, MS, &pcap).unwrap();

    let bin = agent_bin();
    let ms_yaml = lab::map_server_config(MS_ADDR, SITE_A_KEY, SITE_B_KEY);
    let ms = lab::start_agent(&mut t, &bin, MS, "ms1", &ms_yaml).unwrap();
    let o = AgentOptions::default();
    let xtr_yaml = |lab_yaml: &str, key: SiteKey| {
        lab::xtr_config(
            lab_yaml,
            key,
            REGISTER_INTERVAL_S,
            &[Registration {
                map_server: MS_ADDR,
                proxy_reply: false,
            }],
            &[MS_ADDR],
        )
        .unwrap()
    };
    let a = lab::start_agent(
        &mut t,
        &bin,
        ITR,
        "xtr-a",
        &xtr_yaml(&lab::config_a(&o), SITE_A_KEY),
    )
    .unwrap();
    let b = lab::start_agent(
        &mut t,
        &bin,
        ETR,
        "xtr-b",
        &xtr_yaml(&lab::config_b(&o), SITE_B_KEY),
    )
    .unwrap();
    let registered = format!("registered with map-server {MS_ADDR}");
    for h in [a, b] {
        let ok = Topology::wait_for(Duration::from_secs(REGISTER_INTERVAL_S * 3), || {
            Ok(t.proc(h).log_text().contains(&registered))
        })
        .unwrap();
        assert!(ok, "not registered:\n{}", t.proc(h).log_text());
    }
    // Resolution both ways fills both map-caches.
    let got = lab::ping(&t, HA, lab::HB_V4, 10).unwrap();
    assert_eq!(
        got,
        10 - lab::FIRST_CONTACT_LOSS,
        "pings hA -> hB while both xTRs resolve"
    );
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 3).unwrap(), 3, "steady state");

    // The newest Map-Register xTR A sent, as captured: valid, and already used.
    t.stop(cap);
    let rows = lab::tshark_fields(
        &pcap,
        Some(&format!("lisp.type == 3 && ip.src == {}", lab::RLOC_A_V4)),
        &["udp.payload"],
    )
    .unwrap();
    let hex: String = rows
        .last()
        .and_then(|r| r.first())
        .expect("no Map-Register from xTR A captured")
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    let captured: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        auth::verify(&captured, KEY_A.as_bytes()).is_ok()
            && matches!(Message::parse(&captured), Ok(Message::MapRegister(_))),
        "captured Map-Register does not verify: {hex}"
    );

    // Baseline, once the metrics text has caught up (refreshed at most every 500 ms).
    let cached = |text: &str| series(text, "lisp_xtr_map_cache_entries");
    let settled = Topology::wait_for(Duration::from_secs(3), || {
        Ok(cached(&metrics(&t, ITR)) == Some(1) && cached(&metrics(&t, ETR)) == Some(1))
    })
    .unwrap();
    assert!(settled, "map-caches not filled:\n{}", metrics(&t, ITR));
    let site_b_before = resolve(&t, lab::HB_V4.parse().unwrap(), 0x1000);
    let site_a_before = resolve(&t, lab::HA_V4.parse().unwrap(), 0x2000);
    for (records, rloc) in [
        (&site_b_before, lab::RLOC_B_V4),
        (&site_a_before, lab::RLOC_A_V4),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r.locators.iter().any(|l| l.address.to_string() == rloc)),
            "Map-Reply without {rloc}: {records:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    let ms0 = metrics(&t, MS);
    let (a0, b0) = (metrics(&t, ITR), metrics(&t, ETR));
    let xdp_b0 = lab::parse_counters(&b0);
    let (cache_log_a, cache_log_b) = (
        map_cache_log_lines(&mut t, a),
        map_cache_log_lines(&mut t, b),
    );
    let udp_err_ms0 = lab::udp_in_errors(&t, MS).unwrap();
    let udp_err_b0 = lab::udp_in_errors(&t, ETR).unwrap();
    assert_eq!(live_registrations(&ms0), 4, "{ms0}");

    // The bad input.
    let mut rng = Rng(SEED);
    let to_ms = bad_control(&mut rng, &captured);
    let to_b = bad_control(&mut rng, &captured);
    let data = bad_data(&mut rng);
    let (s4, s6) = in_netns(&t.ns(EVIL.ns), || {
        Ok((
            UdpSocket::bind(SocketAddr::new(v4(EVIL_ADDR), 0))?,
            UdpSocket::bind(SocketAddr::new(EVIL_V6.parse()?, 0))?,
        ))
    })
    .unwrap();
    let at = |a: &str, port| SocketAddr::new(a.parse().unwrap(), port);
    let send_start = Instant::now();
    // The map-server has an IPv4 locator only; xTR B gets every other datagram on each family.
    send_paced(&[(&s4, at(MS_ADDR, 4342))], &slices(&to_ms));
    send_paced(
        &[
            (&s4, at(lab::RLOC_B_V4, 4342)),
            (&s6, at(lab::RLOC_B_V6, 4342)),
        ],
        &slices(&to_b),
    );
    send_paced(
        &[
            (&s4, at(lab::RLOC_B_V4, 4341)),
            (&s6, at(lab::RLOC_B_V6, 4341)),
        ],
        &data.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    let send_time = send_start.elapsed();

    let count = |v: &[Bad], k: Kind| v.iter().filter(|d| d.kind == k).count() as u64;
    let ms_must = to_ms
        .iter()
        .filter(|d| !map_server_may_accept(&d.bytes))
        .count() as u64;
    let ms_sent = to_ms.len() as u64;
    let b_sent = to_b.len() as u64;
    let data_must = data.iter().filter(|d| must_drop_lisp(d)).count() as u64;
    // A legitimate Map-Notify answering a retransmitted Map-Register (the map-server was busy)
    // is counted as a duplicate: not something the bad input did.
    let not_ours = ["notify_duplicate"];
    let ms_rejected =
        |t: &Topology| rejected(&metrics(t, MS), &not_ours) - rejected(&ms0, &not_ours);
    let b_rejected =
        |t: &Topology| rejected(&metrics(t, ETR), &not_ours) - rejected(&b0, &not_ours);
    // Wait until both agents have worked through their queues (the counters stop moving).
    let mut last = (u64::MAX, u64::MAX);
    Topology::wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(550));
        let now = (ms_rejected(&t), b_rejected(&t));
        let stable = now == last;
        last = now;
        Ok(stable)
    })
    .unwrap();

    // Both agents are up and answer.
    for (h, name) in [(ms, "map-server"), (a, "xTR A"), (b, "xTR B")] {
        assert!(
            t.proc(h).running(),
            "{name} died:\n{}",
            t.proc(h).log_text()
        );
        assert!(
            !t.proc(h).log_text().contains("panicked"),
            "{name} panicked:\n{}",
            t.proc(h).log_text()
        );
    }
    let ms1 = metrics(&t, MS);
    let (a1, b1) = (metrics(&t, ITR), metrics(&t, ETR));
    let xdp_b1 = lab::parse_counters(&b1);
    let drops_ms = lab::udp_in_errors(&t, MS).unwrap() - udp_err_ms0;
    let drops_b = lab::udp_in_errors(&t, ETR).unwrap() - udp_err_b0;

    // Every refusal counted, none counted twice. (Drops by the kernel never reach the agent.)
    let ms_rej = rejected(&ms1, &not_ours) - rejected(&ms0, &not_ours);
    let b_rej = rejected(&b1, &not_ours) - rejected(&b0, &not_ours);
    let by_kind = |v: &[Bad]| {
        let mut m = BTreeMap::new();
        for d in v {
            *m.entry(format!("{:?}", d.kind)).or_insert(0u64) += 1;
        }
        m
    };
    eprintln!(
        "sent in {send_time:?}: {ms_sent} to the map-server {:?}, {b_sent} to xTR B, {} LISP data; \
         refused: map-server {ms_rej} (at least {ms_must} expected, {drops_ms} dropped by the \
         kernel), xTR B {b_rej} ({drops_b} dropped by the kernel)",
        by_kind(&to_ms),
        data.len()
    );
    assert!(
        ms_rej + drops_ms >= ms_must && ms_rej <= ms_sent,
        "map-server refused {ms_rej} of {ms_sent} (must: {ms_must}, kernel drops: {drops_ms}):\n{ms1}"
    );
    // Nothing sent to the xTR is acceptable to it (no outstanding nonce, no EID of ours asked
    // for, no message type it takes from a stranger).
    assert!(
        b_rej + drops_b >= b_sent && b_rej <= b_sent,
        "xTR B refused {b_rej} of {b_sent} (kernel drops: {drops_b}):\n{b1}"
    );
    let ms_delta = |e: &str| ms_counter(&ms1, e) - ms_counter(&ms0, e);
    let b_delta = |r: &str| xtr_rejected(&b1, r) - xtr_rejected(&b0, r);
    if drops_ms == 0 {
        assert!(
            ms_delta("rejected_auth_failed") >= count(&to_ms, Kind::WrongKey),
            "{ms1}"
        );
        assert!(
            ms_delta("rejected_replayed_nonce") >= count(&to_ms, Kind::Replay),
            "{ms1}"
        );
        assert!(
            ms_delta("rejected_unsolicited_ack") >= count(&to_ms, Kind::UnsolicitedAck),
            "{ms1}"
        );
    }
    if drops_b == 0 {
        assert!(
            b_delta("reply_unsolicited") >= count(&to_b, Kind::UnsolicitedReply),
            "{b1}"
        );
        assert!(
            b_delta("notify_unknown_nonce") >= count(&to_b, Kind::UnsolicitedNotify),
            "{b1}"
        );
        assert!(
            b_delta("unexpected_type")
                >= count(&to_b, Kind::WrongKey)
                    + count(&to_b, Kind::Replay)
                    + count(&to_b, Kind::UnsolicitedAck),
            "{b1}"
        );
    }
    // The XDP program dropped the malformed LISP data (and no more than was sent).
    let bad_lisp = lab::delta(&xdp_b0, &xdp_b1, "drop_bad_lisp");
    eprintln!(
        "xTR B XDP: drop_bad_lisp +{bad_lisp} of {} sent ({data_must} must), {:?}",
        data.len(),
        xdp_b1
    );
    assert!(
        bad_lisp >= data_must && bad_lisp <= data.len() as u64,
        "drop_bad_lisp +{bad_lisp}, {data_must} malformed LISP packets sent:\n{b1}"
    );

    // No registration changed: the same live ones, none changed, withdrawn or created, and the
    // map-server still sends each site's Map-Requests to its ETR, which answers the same.
    assert_eq!(live_registrations(&ms1), 4, "{ms1}");
    for e in [
        "registrations_created",
        "registrations_changed",
        "registrations_withdrawn",
        "registrations_expired",
        "tx_map_notify_unsolicited",
    ] {
        assert_eq!(ms_delta(e), 0, "{e} changed:\n{ms1}");
    }
    assert_eq!(
        resolve(&t, lab::HB_V4.parse().unwrap(), 0x3000),
        site_b_before
    );
    assert_eq!(
        resolve(&t, lab::HA_V4.parse().unwrap(), 0x4000),
        site_a_before
    );
    // No map-cache changed.
    for (before, after, h, log_before, name) in [
        (&a0, &a1, a, cache_log_a, "A"),
        (&b0, &b1, b, cache_log_b, "B"),
    ] {
        assert_eq!(cached(after), Some(1), "xTR {name}:\n{after}");
        assert_eq!(
            xtr_counter(after, "map_cache_installed"),
            xtr_counter(before, "map_cache_installed"),
            "xTR {name}"
        );
        assert_eq!(
            map_cache_log_lines(&mut t, h),
            log_before,
            "xTR {name} map-cache changed:\n{}",
            t.proc(h).log_text()
        );
    }
    // Both xTRs still registered, and still refreshing: a new Map-Notify accepted by each.
    let notifies = |text: &str| xtr_counter(text, "rx_map_notify");
    let (na, nb) = (notifies(&a1), notifies(&b1));
    let refreshed = Topology::wait_for(Duration::from_secs(REGISTER_INTERVAL_S * 2 + 1), || {
        Ok(notifies(&metrics(&t, ITR)) > na && notifies(&metrics(&t, ETR)) > nb)
    })
    .unwrap();
    assert!(refreshed, "no Map-Notify accepted after the bad input");
    for text in [metrics(&t, ITR), metrics(&t, ETR)] {
        assert_eq!(
            series(
                &text,
                &format!("lisp_xtr_registered{{map_server=\"{MS_ADDR}\"}}")
            ),
            Some(1),
            "{text}"
        );
    }

    // Traffic still crosses the overlay.
    assert_eq!(
        lab::ping(&t, HA, lab::HB_V4, 5).unwrap(),
        5,
        "pings after the bad input"
    );
    for (h, name) in [(ms, "map-server"), (a, "xTR A"), (b, "xTR B")] {
        assert!(t.proc(h).running(), "{name} died");
    }
    eprintln!("bad-input e2e took {:?}", started.elapsed());
}
