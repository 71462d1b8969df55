//! A mapping changes at the map-server; how an ITR that cached it learns, end to end in network
//! namespaces (needs root): the lab of `support/lab.rs` with one map-server/map-resolver
//! (lisp-agent with `map-server.enabled`):
//!
//! ```text
//!                 ms1 192.0.2.130
//!                        |
//!  ha ── itr (xTR A) ── core ── etr (xTR B) ── hb
//! ```
//!
//! Both tests: A's first packets to hB resolve site B's /24; then xTR B restarts with other
//! locator weights and re-registers, so A's entry is stale.
//! * RFC 9437: A has `subscribe: true` (N bit and xTR-ID in its Map-Request). Without traffic or
//!   any Map-Request from A, the map-server's publication (Map-Notify) reaches A, which
//!   acknowledges it and rewrites its XDP map-cache entry.
//! * RFC 9301 §6.1: A does not subscribe; an SMR from site B's RLOC (as B's ETR sends one for an
//!   EID it no longer holds) makes A send an SMR-invoked Map-Request through the map-resolver,
//!   whose answer rewrites the entry.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use lisp_common::wire::control::{Address, Eid, IpPrefix, MapRequest, Message};
use support::lab::{self, AgentOptions, ETR, HA, ITR, Registration, SiteKey, series};
use support::netns::{self, Topology};

const MS1_ADDR: &str = "192.0.2.130";
const KEY_A: SiteKey = SiteKey {
    key: "site-a-key",
    algorithm: "hmac-sha-256",
};
const KEY_B: SiteKey = SiteKey {
    key: "site-b-key",
    algorithm: "hmac-sha-1",
};
const REGISTER_INTERVAL_S: u64 = 2;
/// One lab at a time: the machine is small, and the loss counts assume an idle one.
static LAB: Mutex<()> = Mutex::new(());

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

fn xtr_config(lab_yaml: &str, key: SiteKey) -> String {
    lab::xtr_config(
        lab_yaml,
        key,
        REGISTER_INTERVAL_S,
        &[Registration {
            map_server: MS1_ADDR,
            proxy_reply: true,
        }],
        &[MS1_ADDR],
    )
    .unwrap()
}

fn counter(t: &Topology, ns: &str, event: &str) -> u64 {
    let m = lab::metrics_text(&t.ns(ns)).unwrap();
    series(&m, &format!("lisp_xtr_total{{event=\"{event}\"}}")).unwrap_or(0)
}

/// The metrics are copied out of the core after its actions are carried out: wait for them.
fn wait_counter(t: &Topology, ns: &str, event: &str, want: u64) -> u64 {
    Topology::wait_for(Duration::from_secs(2), || Ok(counter(t, ns, event) >= want)).unwrap();
    counter(t, ns, event)
}

fn wait_log(t: &mut Topology, h: usize, needle: &str, timeout: Duration) -> bool {
    Topology::wait_for(timeout, || Ok(t.proc(h).log_text().contains(needle))).unwrap()
}

/// The lab after the change: A has resolved B's /24 (its Map-Request count), B has re-registered
/// with weight 40 instead of 100.
struct Changed {
    // Fields drop in this order: the XDP programs before the namespaces they sit in.
    _pass: lab::PassPrograms,
    t: Topology,
    a: usize,
    requests: u64,
}

fn lab_with_a_changed_mapping(tag: &str, subscribe: bool) -> Changed {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix(tag);
    let workdir = std::env::temp_dir().join(format!("lisp-e2e-{}", prefix.trim_end_matches('-')));
    let mut t = Topology::new(&prefix, &workdir).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1]).unwrap();
    assert_eq!(lab::MS1.addr(), MS1_ADDR);
    let pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();

    let bin = agent_bin();
    let ms_yaml = lab::map_server_config(MS1_ADDR, KEY_A, KEY_B);
    lab::start_agent(&mut t, &bin, lab::MS1.ns, "ms1", &ms_yaml).unwrap();
    let o = AgentOptions::default();
    let cfg_a = format!(
        "{}subscribe: {subscribe}\n",
        xtr_config(&lab::config_a(&o), KEY_A)
    );
    let a = lab::start_agent(&mut t, &bin, ITR, "xtr-a", &cfg_a).unwrap();
    let cfg_b = xtr_config(&lab::config_b(&o), KEY_B);
    let b = lab::start_agent(&mut t, &bin, ETR, "xtr-b", &cfg_b).unwrap();
    let registered = format!("registered with map-server {MS1_ADDR}");
    let slack = Duration::from_secs(REGISTER_INTERVAL_S * 3);
    for (h, name) in [(a, "A"), (b, "B")] {
        assert!(
            wait_log(&mut t, h, &registered, slack),
            "{name} not registered:\n{}",
            t.proc(h).log_text()
        );
    }

    // First contact: the resolution (that subscribes, if A does).
    let got = lab::ping(&t, HA, lab::HB_V4, 10).unwrap();
    assert_eq!(
        got,
        10 - lab::FIRST_CONTACT_LOSS,
        "{}",
        t.proc(a).log_text()
    );
    let ms_metrics = lab::metrics_text(&t.ns(lab::MS1.ns)).unwrap();
    assert_eq!(
        series(
            &ms_metrics,
            "lisp_map_server_total{event=\"subscriptions_added\"}"
        ),
        Some(u64::from(subscribe)),
        "A subscribes to the EID it asked for exactly when configured to:\n{ms_metrics}"
    );
    let requests = counter(&t, ITR, "sent_map_request");
    assert_eq!(requests, 1, "B's IPv4 /24");
    assert_eq!(counter(&t, ITR, "notify_cache_updated"), 0);

    // B comes back with other weights: a changed locator set at the map-server.
    let st = t.stop(b).unwrap();
    assert!(st.success(), "B exit: {st}");
    let cfg_b2 = cfg_b.replace("weight: 100", "weight: 40");
    assert_ne!(cfg_b2, cfg_b);
    let b2 = lab::start_agent(&mut t, &bin, ETR, "xtr-b-reweighted", &cfg_b2).unwrap();
    assert!(
        wait_log(&mut t, b2, &registered, slack),
        "{}",
        t.proc(b2).log_text()
    );
    Changed {
        _pass: pass,
        t,
        a,
        requests,
    }
}

/// The mapping works after the change: A encapsulates at once; the restarted B has an empty
/// map-cache, so exactly the first echo reply is lost while B resolves site A (half of the
/// lab's first-contact loss).
fn traffic_flows(t: &Topology) {
    assert_eq!(
        lab::ping(t, HA, lab::HB_V4, 5).unwrap(),
        5 - lab::FIRST_CONTACT_LOSS / 2
    );
}

#[test]
fn a_subscribed_itr_follows_a_changed_mapping_without_traffic() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab_with_a_changed_mapping("lispsub", true);
    let (t, a, requests) = (&mut lab.t, lab.a, lab.requests);
    // A learns it from the publication: its data-plane entry is rewritten with the new weights.
    assert!(
        wait_log(t, a, "weight: 40", Duration::from_secs(5)),
        "A's map-cache did not follow:\n{}",
        t.proc(a).log_text()
    );
    assert_eq!(
        wait_counter(t, ITR, "notify_cache_updated", 1),
        1,
        "the v4 /24 only"
    );
    assert_eq!(counter(t, ITR, "sent_map_notify_ack"), 1);
    assert_eq!(
        counter(t, ITR, "sent_map_request"),
        requests,
        "no Map-Request: the change came to A"
    );
    traffic_flows(t);
    assert_eq!(counter(t, ITR, "sent_map_request"), requests);
}

#[test]
fn an_smr_makes_the_itr_re_resolve_through_the_map_resolver() {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab_with_a_changed_mapping("lispsmr", false);
    let (t, a, requests) = (&mut lab.t, lab.a, lab.requests);
    // Not subscribed: A's entry stays stale.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.proc(a).log_text().contains("weight: 40"));
    // An SMR as B's ETR sends it (RFC 9301 §6.1, OOR's shape): Source-EID = the EID whose
    // mapping changed, record = A's prefix, to A's RLOC. B's agent holds port 4342 in its
    // namespace, so it leaves from another port of B's RLOC: A answers through the mapping
    // system, never to the SMR's sender.
    let smr = Message::MapRequest(MapRequest {
        smr: true,
        nonce: 0x5eed_0001,
        source_eid: Address::ip(lab::HB_V4.parse().unwrap()),
        itr_rlocs: vec![lab::RLOC_B_V4.parse().unwrap()],
        eids: vec![Eid::new(None, lab::SITE_A[0].parse::<IpPrefix>().unwrap())],
        ..MapRequest::default()
    })
    .to_vec()
    .unwrap();
    let to: SocketAddr = SocketAddr::new(lab::RLOC_A_V4.parse::<IpAddr>().unwrap(), 4342);
    netns::in_netns(&t.ns(ETR), || {
        let s = UdpSocket::bind((lab::RLOC_B_V4, 0))?;
        s.send_to(&smr, to)?;
        Ok(())
    })
    .unwrap();
    assert!(
        wait_log(t, a, "weight: 40", Duration::from_secs(5)),
        "A did not re-resolve after the SMR:\n{}",
        t.proc(a).log_text()
    );
    assert_eq!(wait_counter(t, ITR, "rx_smr", 1), 1);
    assert_eq!(counter(t, ITR, "sent_smr_invoked"), 1);
    assert_eq!(counter(t, ITR, "sent_map_request"), requests + 1);
    assert_eq!(counter(t, ITR, "notify_cache_updated"), 0);
    traffic_flows(t);
}
