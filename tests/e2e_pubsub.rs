//! RFC 9437 publish/subscribe end to end, in network namespaces (needs root): the lab of
//! `support/lab.rs` with one map-server/map-resolver (lisp-agent with `map-server.enabled`):
//!
//! ```text
//!                 ms1 192.0.2.130
//!                        |
//!  ha ── itr (xTR A) ── core ── etr (xTR B) ── hb
//! ```
//!
//! xTR A has `subscribe: true`. Its first packets to hB resolve site B's /24 (Map-Request with
//! the N bit and A's xTR-ID); then xTR B restarts with other locator weights and re-registers.
//! Without any traffic or Map-Request from A, the map-server's publication (Map-Notify) reaches
//! A, which acknowledges it and rewrites its XDP map-cache entry; traffic still flows.

mod support;

use std::path::PathBuf;
use std::time::Duration;

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

fn wait_log(t: &mut Topology, h: usize, needle: &str, timeout: Duration) -> bool {
    Topology::wait_for(timeout, || Ok(t.proc(h).log_text().contains(needle))).unwrap()
}

#[test]
fn a_subscribed_itr_follows_a_changed_mapping_without_traffic() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispsub");
    let workdir = std::env::temp_dir().join(format!("lisp-e2e-{}", prefix.trim_end_matches('-')));
    let mut t = Topology::new(&prefix, &workdir).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1]).unwrap();
    assert_eq!(lab::MS1.addr(), MS1_ADDR);
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();

    let bin = agent_bin();
    let ms_yaml = lab::map_server_config(MS1_ADDR, KEY_A, KEY_B);
    let _ms = lab::start_agent(&mut t, &bin, lab::MS1.ns, "ms1", &ms_yaml).unwrap();
    let o = AgentOptions::default();
    let cfg_a = format!("{}subscribe: true\n", xtr_config(&lab::config_a(&o), KEY_A));
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

    // First contact: the resolution that subscribes.
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
        Some(1),
        "A subscribed to the EID it asked for:\n{ms_metrics}"
    );
    let requests = counter(&t, ITR, "sent_map_request");
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
    // A learns it from the publication: its data-plane entry is rewritten with the new weights.
    assert!(
        wait_log(&mut t, a, "weight: 40", Duration::from_secs(5)),
        "A's map-cache did not follow:\n{}",
        t.proc(a).log_text()
    );
    // The metrics are copied out of the core after the actions are carried out: wait for them.
    Topology::wait_for(Duration::from_secs(2), || {
        Ok(counter(&t, ITR, "notify_cache_updated") >= 1)
    })
    .unwrap();
    assert_eq!(
        counter(&t, ITR, "notify_cache_updated"),
        1,
        "the v4 /24 only"
    );
    assert_eq!(counter(&t, ITR, "sent_map_notify_ack"), 1);
    assert_eq!(
        counter(&t, ITR, "sent_map_request"),
        requests,
        "no Map-Request: the change came to A"
    );
    // And the mapping works: A encapsulates at once; the restarted B has an empty map-cache,
    // so exactly the first echo reply is lost while B resolves site A (half of the lab's
    // first-contact loss).
    assert_eq!(
        lab::ping(&t, HA, lab::HB_V4, 5).unwrap(),
        5 - lab::FIRST_CONTACT_LOSS / 2
    );
    assert_eq!(
        counter(&t, ITR, "sent_map_request"),
        requests,
        "A still needed no Map-Request"
    );
}
