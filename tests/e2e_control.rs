//! The control plane end to end, in network namespaces (needs root): the lab of
//! `support/lab.rs` (host A — xTR A — core — xTR B — host B) without static map-cache entries,
//! plus two map-server/map-resolvers (lisp-agent with `map-server.enabled`) hanging off the core:
//!
//! ```text
//!                 ms1 192.0.2.130        ms2 192.0.2.162
//!                        \                   /
//!  ha ── itr (xTR A) ── core ────────── etr (xTR B) ── hb
//! ```
//!
//! What it proves, in order: an xTR with a wrong key is never registered; with the right keys both xTRs register with both map-servers; the first packet to
//! an unknown EID leads to Map-Request → Map-Reply → XDP map-cache and traffic flows; after a
//! map-server restart the registrations are back within one interval, and with the other
//! map-server killed resolution still works (through the restarted one); tshark decodes every
//! control message on the core without malformed or expert errors.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::lab::{self, AgentOptions, CORE, ETR, HA, ITR, Registration, SiteKey, series};
use support::netns::{self, Topology};

const MS1: &str = lab::MS1.ns;
const MS2: &str = lab::MS2.ns;
const MS1_ADDR: &str = "192.0.2.130";
const MS2_ADDR: &str = "192.0.2.162";
const KEY_A: &str = "site-a-key";
const KEY_B: &str = "site-b-key";
/// Short so that the restart check runs in seconds (the default is 60 s).
const REGISTER_INTERVAL_S: u64 = 2;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

const SITE_A_KEY: SiteKey = SiteKey {
    key: KEY_A,
    algorithm: "hmac-sha-256",
};
const SITE_B_KEY: SiteKey = SiteKey {
    key: KEY_B,
    algorithm: "hmac-sha-1",
};

fn map_server_config(addr: &str) -> String {
    lab::map_server_config(addr, SITE_A_KEY, SITE_B_KEY)
}

/// The lab's xTR configuration without its static map-cache, with the mapping system: both
/// map-servers (the second with proxy-reply, so both answering paths are used) and both
/// map-resolvers.
fn xtr_config(lab_yaml: &str, key: &'static str, algorithm: &'static str) -> String {
    lab::xtr_config(
        lab_yaml,
        SiteKey { key, algorithm },
        REGISTER_INTERVAL_S,
        &[
            Registration {
                map_server: MS1_ADDR,
                proxy_reply: false,
            },
            Registration {
                map_server: MS2_ADDR,
                proxy_reply: true,
            },
        ],
        &[MS1_ADDR, MS2_ADDR],
    )
    .unwrap()
}

/// Starts an agent with `yaml` in `ns`, waits for its metrics endpoint (loaded and attached).
fn start(t: &mut Topology, ns: &str, name: &str, yaml: &str) -> usize {
    lab::start_agent(t, &agent_bin(), ns, name, yaml).unwrap()
}

/// The raw Prometheus text of the agent in `ns` (the lab helper only keeps the XDP series).
fn metrics_text(t: &Topology, ns: &str) -> String {
    lab::metrics_text(&t.ns(ns)).unwrap()
}

fn log_has(t: &mut Topology, h: usize, needle: &str) -> bool {
    t.proc(h).log_text().contains(needle)
}

fn wait_log(t: &mut Topology, h: usize, needle: &str, timeout: Duration) -> bool {
    Topology::wait_for(timeout, || Ok(log_has(t, h, needle))).unwrap()
}

#[test]
fn registration_resolution_and_map_server_failover() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispctl");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1, lab::MS2]).unwrap();
    assert_eq!((lab::MS1.addr(), lab::MS2.addr()), (MS1_ADDR, MS2_ADDR));
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    assert_eq!(
        lab::ping(&t, ITR, MS1_ADDR, 1).unwrap(),
        1,
        "underlay to ms1"
    );
    assert_eq!(
        lab::ping(&t, ETR, MS2_ADDR, 1).unwrap(),
        1,
        "underlay to ms2"
    );

    let pcap = t.workdir.join("core-control.pcap");
    let cap = lab::start_capture(&mut t, CORE, "any", &pcap).unwrap();

    let ms1 = start(&mut t, MS1, "ms1", &map_server_config(MS1_ADDR));
    let ms2 = start(&mut t, MS2, "ms2", &map_server_config(MS2_ADDR));
    let o = AgentOptions::default();
    let cfg_a = xtr_config(&lab::config_a(&o), KEY_A, "hmac-sha-256");
    let a = start(&mut t, ITR, "xtr-a", &cfg_a);
    // B first with a wrong key.
    let b_bad = start(
        &mut t,
        ETR,
        "xtr-b-wrong-key",
        &xtr_config(&lab::config_b(&o), "not-the-key", "hmac-sha-1"),
    );

    let reg = |ms: &str| format!("registered with map-server {ms}");
    let slack = Duration::from_secs(REGISTER_INTERVAL_S * 3);
    assert!(
        wait_log(&mut t, a, &reg(MS1_ADDR), slack),
        "A not registered with ms1:\n{}",
        t.proc(a).log_text()
    );
    assert!(
        wait_log(&mut t, a, &reg(MS2_ADDR), slack),
        "A not registered with ms2"
    );

    // Wrong key: several intervals, never registered; its EIDs do not resolve.
    std::thread::sleep(Duration::from_secs(REGISTER_INTERVAL_S * 2));
    assert!(
        !log_has(&mut t, b_bad, "registered with map-server"),
        "{}",
        t.proc(b_bad).log_text()
    );
    let st = t.stop(b_bad).unwrap();
    assert!(st.success(), "agent exit: {st}");

    // The right key.
    let cfg_b = xtr_config(&lab::config_b(&o), KEY_B, "hmac-sha-1");
    let b = start(&mut t, ETR, "xtr-b", &cfg_b);
    assert!(
        wait_log(&mut t, b, &reg(MS1_ADDR), slack),
        "B not registered with ms1:\n{}",
        t.proc(b).log_text()
    );
    assert!(
        wait_log(&mut t, b, &reg(MS2_ADDR), slack),
        "B not registered with ms2"
    );
    // First packets to an unknown EID: Map-Request → Map-Reply → XDP map-cache → traffic.
    let got = lab::ping(&t, HA, lab::HB_V4, 10).unwrap();
    assert_eq!(
        got,
        10 - lab::FIRST_CONTACT_LOSS,
        "pings hA -> hB while both xTRs resolve:\nA:\n{}",
        t.proc(a).log_text()
    );
    assert!(
        log_has(&mut t, a, "map-cache [0]203.0.113.0/24: Positive"),
        "{}",
        t.proc(a).log_text()
    );
    assert!(
        log_has(&mut t, b, "map-cache [0]198.51.100.0/24: Positive"),
        "{}",
        t.proc(b).log_text()
    );
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 5).unwrap(), 5, "steady state");
    let ma = metrics_text(&t, ITR);
    for ms in [MS1_ADDR, MS2_ADDR] {
        let name = format!("lisp_xtr_registered{{map_server=\"{ms}\"}}");
        assert_eq!(series(&ma, &name), Some(1), "{ma}");
    }
    assert_eq!(series(&ma, "lisp_xtr_map_cache_entries"), Some(1), "{ma}");
    assert_eq!(
        series(&ma, "lisp_xtr_rejected_total{reason=\"malformed\"}"),
        Some(0),
        "{ma}"
    );

    // Map-server restart: registrations are back within one interval. Then ms1, the first
    // map-resolver every xTR tries, dies: IPv6 EIDs, never resolved so far, still resolve — each
    // xTR's first Map-Request goes unanswered, the retransmission goes to ms2, and ms2 can only
    // answer from the registrations it received since its restart.
    let st = t.stop(ms2).unwrap();
    assert!(st.success(), "ms2 exit: {st}");
    let _ms2b = start(&mut t, MS2, "ms2-restarted", &map_server_config(MS2_ADDR));
    std::thread::sleep(Duration::from_secs(REGISTER_INTERVAL_S) + Duration::from_millis(1500));
    let st = t.stop(ms1).unwrap();
    assert!(st.success(), "ms1 exit: {st}");
    // Each side loses one second to the dead resolver before its retransmission is answered
    // (B only starts when A's first packets reach hB), hence 4 s of pings.
    // So each direction loses the pings of one 1 s retransmission timeout — 10 at 10 pings/s,
    // or 11 when a ping leaves in the same millisecond as the retransmission — and nothing else.
    let got = lab::ping(&t, HA, lab::HB_V6, 40).unwrap();
    let per_timeout = lab::PINGS_PER_SECOND;
    let lost = 40 - got;
    assert!(
        (2 * per_timeout..=2 * (per_timeout + 1)).contains(&lost),
        "{lost}/40 IPv6 pings lost after ms2 restart and ms1 kill (one resolver timeout per \
         direction loses {per_timeout} or {}):\nA:\n{}",
        per_timeout + 1,
        t.proc(a).log_text()
    );
    assert!(log_has(&mut t, a, "map-cache [0]2001:db8:2::/48: Positive"));
    let ma = metrics_text(&t, ITR);
    assert!(
        series(&ma, "lisp_xtr_total{event=\"sent_map_request_retry\"}").unwrap_or(0) >= 1,
        "no retransmission to the second map-resolver:\n{ma}"
    );

    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);
    check_control_capture(&pcap);
}

/// Every control message on the core decodes in tshark without malformed/expert errors, and
/// every kind we send is there.
fn check_control_capture(pcap: &Path) {
    // Map-Notify-Ack (type 5) is unknown to tshark: leave it out.
    let bad = lab::tshark_fields(
        pcap,
        Some(
            "udp.port == 4342 && !icmp && !icmpv6 && !(lisp.type == 5) \
             && (_ws.malformed || _ws.expert.severity >= warning)",
        ),
        &["frame.number", "_ws.expert.message", "frame.protocols"],
    )
    .unwrap();
    assert!(
        bad.is_empty(),
        "tshark found malformed/expert control frames: {bad:?}"
    );
    let rows = lab::tshark_fields(
        pcap,
        Some("udp.port == 4342 && !icmp && !icmpv6"),
        &["frame.protocols", "lisp.type"],
    )
    .unwrap();
    let mut types = std::collections::BTreeSet::new();
    for r in &rows {
        assert!(
            r[0].contains("lisp"),
            "control frame not decoded as LISP: {r:?}"
        );
        for ty in r.get(1).map(String::as_str).unwrap_or("").split(',') {
            types.insert(ty.to_string());
        }
    }
    // Map-Request → Map-Reply latency through the lab: a figure, not a limit.
    let latencies = lab::request_reply_ms(pcap, None).unwrap();
    assert!(
        !latencies.is_empty(),
        "no Map-Reply answered an ECM Map-Request"
    );
    eprintln!("Map-Request -> Map-Reply through the lab (ms): {latencies:.3?}");
    // Map-Request (inside ECMs), Map-Reply, Map-Register, Map-Notify, ECM.
    for ty in ["1", "2", "3", "4", "8"] {
        assert!(
            types.contains(ty),
            "no LISP type {ty} in the capture: {types:?}"
        );
    }
}

/// Issue 6 §2.6: xTRs whose EIDs are in instance-id 100 register with a map-server whose site
/// prefixes are in instance-id 100 (before: refused as unknown EIDs, never registered), and
/// resolution in that instance works end to end. tshark decodes the instance-id LCAFs.
#[test]
fn registration_and_resolution_in_an_instance_id() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    const IID: u32 = 100;
    let prefix = netns::unique_prefix("lispiid");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1]).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let pcap = t.workdir.join("core-control-iid.pcap");
    let cap = lab::start_capture(&mut t, CORE, "any", &pcap).unwrap();

    let ms = start(
        &mut t,
        MS1,
        "ms1",
        &lab::map_server_config_in(MS1_ADDR, SITE_A_KEY, SITE_B_KEY, IID),
    );
    let o = AgentOptions {
        instance_id: IID,
        ..AgentOptions::default()
    };
    let one_ms = |lab_yaml: &str, key: SiteKey| {
        lab::xtr_config(
            lab_yaml,
            key,
            REGISTER_INTERVAL_S,
            &[Registration {
                map_server: MS1_ADDR,
                proxy_reply: false,
            }],
            &[MS1_ADDR],
        )
        .unwrap()
    };
    let a = start(
        &mut t,
        ITR,
        "xtr-a",
        &one_ms(&lab::config_a(&o), SITE_A_KEY),
    );
    let b = start(
        &mut t,
        ETR,
        "xtr-b",
        &one_ms(&lab::config_b(&o), SITE_B_KEY),
    );
    let reg = format!("registered with map-server {MS1_ADDR}");
    let slack = Duration::from_secs(REGISTER_INTERVAL_S * 3);
    for (h, name) in [(a, "A"), (b, "B")] {
        assert!(
            wait_log(&mut t, h, &reg, slack),
            "{name} not registered:\n{}\nmap-server:\n{}",
            t.proc(h).log_text(),
            t.proc(ms).log_text()
        );
    }
    // Both prefixes of both xTRs, once the metrics text has caught up (rebuilt every 500 ms).
    let created = |m: &str| series(m, "lisp_map_server_total{event=\"registrations_created\"}");
    let all = Topology::wait_for(Duration::from_secs(3), || {
        Ok(created(&metrics_text(&t, MS1)) == Some(4))
    })
    .unwrap();
    let m = metrics_text(&t, MS1);
    assert!(all, "{m}");
    assert_eq!(
        series(&m, "lisp_map_server_total{event=\"rejected_unknown_eid\"}"),
        Some(0),
        "{m}"
    );
    assert!(
        log_has(&mut t, ms, "registered [100]203.0.113.0/24"),
        "{}",
        t.proc(ms).log_text()
    );
    let got = lab::ping(&t, HA, lab::HB_V4, 10).unwrap();
    assert_eq!(
        got,
        10 - lab::FIRST_CONTACT_LOSS,
        "pings hA -> hB in instance {IID} while both xTRs resolve:\nA:\n{}",
        t.proc(a).log_text()
    );
    assert!(
        log_has(
            &mut t,
            a,
            &format!("map-cache [{IID}]203.0.113.0/24: Positive")
        ),
        "{}",
        t.proc(a).log_text()
    );
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 5).unwrap(), 5, "steady state");

    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);
    check_control_capture(&pcap);
    let iids = lab::tshark_fields(
        &pcap,
        Some("lisp.type == 3 || lisp.type == 4"),
        &["lisp.lcaf.iid"],
    )
    .unwrap();
    assert!(
        iids.iter()
            .any(|r| r.first().is_some_and(|f| f.split(',').all(|i| i == "100"))),
        "no instance-id 100 LCAF decoded in Map-Register / Map-Notify: {iids:?}"
    );
}
