//! An unresolved next hop towards an RLOC, end to end in network namespaces (needs root).
//!
//! The lab of `support/lab.rs` with static map-caches, but xTR A does not know the link-layer
//! address of its next hop towards the RLOCs (the core, 192.0.2.1): the lab's permanent
//! neighbour entry is deleted, and nothing on A sends through the core by itself, so only the
//! agent can get it resolved. The path under test crosses every layer: the XDP program's FIB
//! lookup finds no neighbour and raises an event; the shell turns it into
//! `Event::NextHopUnresolved`; the node decides (`core::next_hop`: once per next hop per
//! interval) and asks for `Action::EnsureNeighbour`; the shell creates a managed neighbour entry
//! through rtnetlink; the kernel resolves it and the overlay carries traffic.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::lab::{self, AgentOptions, HA, ITR, series};
use support::netns::{self, Topology};

const NEXT_HOP: &str = "192.0.2.1";

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

fn neighbour(t: &Topology) -> String {
    let out = t
        .ip(ITR, &["neigh", "show", NEXT_HOP, "dev", "rloc0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn unresolved_next_hop_gets_a_managed_neighbour() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispnh");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    t.ip(ITR, &["neigh", "del", NEXT_HOP, "dev", "rloc0"])
        .unwrap();
    assert_eq!(neighbour(&t), "", "the premise: no neighbour entry");
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let (a, _b) = lab::start_agents(&mut t, &agent_bin(), &AgentOptions::default()).unwrap();

    // The first packet finds no neighbour: the event, the node's decision, the netlink request.
    lab::ping(&t, HA, lab::HB_V4, 1).unwrap();
    let line = format!("next hop {NEXT_HOP} (ifindex");
    let ok = Topology::wait_for(Duration::from_secs(5), || {
        Ok(t.proc(a).log_text().contains(&line))
    })
    .unwrap();
    assert!(ok, "no neighbour request:\n{}", t.proc(a).log_text());
    assert!(
        t.proc(a)
            .log_text()
            .contains("unresolved: managed neighbour entry created"),
        "{}",
        t.proc(a).log_text()
    );
    let n = neighbour(&t);
    assert!(n.contains("managed"), "not a managed entry: {n:?}");

    // Resolved and kept: nothing lost from now on.
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 5).unwrap(), 5, "hA -> hB");
    let n = neighbour(&t);
    assert!(n.contains(lab::MAC_CORE_ITR), "not resolved: {n:?}");
    // One request: once the entry exists the data plane stops asking, and repeats within the
    // interval are the node's to suppress.
    // (The control-plane metrics text is refreshed at most twice a second: wait for it.)
    let requested = "lisp_next_hop_total{outcome=\"requested\"}";
    let mut m = String::new();
    Topology::wait_for(Duration::from_secs(3), || {
        m = lab::metrics_text(&t.ns(ITR))?;
        Ok(series(&m, requested).is_some_and(|n| n > 0))
    })
    .unwrap();
    assert_eq!(series(&m, requested), Some(1), "{m}");
}
