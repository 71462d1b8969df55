//! Map-server and xTR in one process, end to end in network namespaces (needs root).
//!
//! The lab of `support/lab.rs` where xTR B also runs the map-server / map-resolver. The
//! map-server is reached at its own address, 192.0.2.100, on B's loopback (the core routes it
//! via B's RLOC 192.0.2.74); both xTRs — B itself included — register with it and resolve
//! through it:
//!
//! ```text
//!  ha ── itr (xTR A) ── core ── etr (xTR B + map-server 192.0.2.100 on lo) ── hb
//! ```
//!
//! What it proves (issue 6, §2 item 5):
//! * an ECM Map-Request for B's own EIDs reaches B's ETR, which answers A; the map-server does
//!   not forward it to B's own address (before, every ECM went to the map-server, which
//!   forwarded it to the ETR that registered — B itself — over and over);
//! * B's ITR resolves A's EIDs through its own map-resolver, which forwards to A;
//! * answers leave from the address the peer used: the Map-Notify to A comes from 192.0.2.100,
//!   the address A registered with, not from B's RLOC (before, the shell guessed the locator of
//!   the peer's family as the local address of every datagram).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::lab::{self, AgentOptions, CORE, ETR, HA, HB, ITR, Registration, SiteKey, series};
use support::netns::{self, Topology};

const MS_ADDR: &str = "192.0.2.100";
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

fn xtr_yaml(lab_yaml: &str, key: SiteKey) -> String {
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
}

/// The `map-server:` section of the lab's map-server config (sites A and B).
fn map_server_section() -> String {
    let full = lab::map_server_config(MS_ADDR, KEY_A, KEY_B);
    let at = full.find("map-server:\n").expect("map-server section");
    full[at..].to_string()
}

#[test]
fn map_server_and_xtr_in_one_agent() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispboth");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    t.addr(ETR, "lo", &format!("{MS_ADDR}/32")).unwrap();
    t.ip(
        CORE,
        &[
            "route",
            "replace",
            &format!("{MS_ADDR}/32"),
            "via",
            lab::RLOC_B_V4,
        ],
    )
    .unwrap();
    // Software checksums, so that the capture shows what a wire would carry.
    for ns in [ITR, ETR] {
        t.exec(ns, &["ethtool", "-K", "rloc0", "tx", "off"])
            .unwrap();
    }
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    assert_eq!(
        lab::ping(&t, ITR, MS_ADDR, 1).unwrap(),
        1,
        "underlay to the map-server"
    );

    let pcap = t.workdir.join("core-etr0.pcap");
    let cap = lab::start_capture(&mut t, CORE, "etr0", &pcap).unwrap();

    let o = AgentOptions::default();
    let cfg_b = format!(
        "{}{}",
        xtr_yaml(&lab::config_b(&o), KEY_B),
        map_server_section()
    );
    let cfg_a = xtr_yaml(&lab::config_a(&o), KEY_A);
    let b = lab::start_agent(&mut t, &agent_bin(), ETR, "xtr-b-ms", &cfg_b).unwrap();
    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "xtr-a", &cfg_a).unwrap();

    let line = format!("registered with map-server {MS_ADDR}");
    let slack = Duration::from_secs(REGISTER_INTERVAL_S * 3);
    for (h, who) in [(a, "A"), (b, "B")] {
        let ok = Topology::wait_for(slack, || Ok(t.proc(h).log_text().contains(&line))).unwrap();
        assert!(ok, "{who} not registered:\n{}", t.proc(h).log_text());
    }

    // A → B's EID: answered by B's ETR. B → A's EID: through B's own map-resolver to A. A
    // first ping of each direction starts the resolutions (an echo and its reply each need
    // one); once both entries are in the map-caches nothing may be lost.
    lab::ping(&t, HA, lab::HB_V4, 1).unwrap();
    lab::ping(&t, HB, lab::HA_V4, 1).unwrap();
    for (h, entry) in [
        (a, "map-cache [0]203.0.113.0/24: Positive"),
        (b, "map-cache [0]198.51.100.0/24: Positive"),
    ] {
        let ok = Topology::wait_for(Duration::from_secs(5), || {
            Ok(t.proc(h).log_text().contains(entry))
        })
        .unwrap();
        assert!(ok, "no '{entry}':\n{}", t.proc(h).log_text());
    }
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 5).unwrap(), 5, "hA -> hB");
    assert_eq!(lab::ping(&t, HB, lab::HA_V4, 5).unwrap(), 5, "hB -> hA");

    let mb = lab::metrics_text(&t.ns(ETR)).unwrap();
    let ma = lab::metrics_text(&t.ns(ITR)).unwrap();
    // A's Map-Requests went to B's ETR inside the node, none through the map-server's forward.
    let to_etr = series(&mb, "lisp_node_total{event=\"ecm_to_local_etr\"}").unwrap_or(0);
    let a_requests = series(&ma, "lisp_xtr_total{event=\"sent_map_request\"}").unwrap_or(0)
        + series(&ma, "lisp_xtr_total{event=\"sent_map_request_retry\"}").unwrap_or(0);
    assert!(a_requests >= 1, "{ma}");
    assert_eq!(to_etr, a_requests, "{mb}");
    // The map-server forwarded B's own requests to A, and nothing else (no loop to itself).
    let b_requests = series(&mb, "lisp_xtr_total{event=\"sent_map_request\"}").unwrap_or(0)
        + series(&mb, "lisp_xtr_total{event=\"sent_map_request_retry\"}").unwrap_or(0);
    assert_eq!(
        series(&mb, "lisp_map_server_total{event=\"tx_ecm_forwarded\"}"),
        Some(b_requests),
        "{mb}"
    );
    assert_eq!(
        series(&mb, "lisp_node_total{event=\"local_loop_dropped\"}"),
        Some(0)
    );
    assert!(series(&mb, "lisp_node_total{event=\"delivered_locally\"}").unwrap_or(0) >= 1);

    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);
    // Every Map-Notify to A and every Map-Reply to A left B from the map-server address A used.
    let rows = lab::tshark_fields(
        &pcap,
        Some(&format!(
            "udp.srcport == 4342 && ip.dst == {} && (lisp.type == 4 || lisp.type == 2)",
            lab::RLOC_A_V4
        )),
        &["ip.src", "lisp.type"],
    )
    .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.get(1).map(String::as_str) == Some("4")),
        "no Map-Notify to A captured: {rows:?}"
    );
    for r in &rows {
        assert_eq!(
            r[0], MS_ADDR,
            "answer to A not from the address A used: {r:?}"
        );
    }
}
