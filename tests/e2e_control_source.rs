//! Control messages leave from the RLOC, not from the egress interface's address (needs root).
//!
//! The lab of `support/lab.rs` with two map-servers, reshaped the way many routers are: xTR A's
//! RLOCs (192.0.2.10, 2001:db8:ff:1::10) sit on the loopback (a dummy interface would do the
//! same, but this kernel may lack the module), while its link to
//! the core carries other addresses (192.0.2.20/26, 2001:db8:ff:1::20/64); the core routes
//! each RLOC via the link address. ms1 also gets an IPv6 address, and xTR A registers with it
//! and resolves through it over IPv6 (with ms2 over IPv4):
//!
//! ```text
//!                   ms1 192.0.2.130, 2001:db8:ff:c::130    ms2 192.0.2.162
//!                               \                          /
//!  ha ── [lo: RLOCs] itr rloc0 (.20, ::20) ── core ──────────── etr (xTR B) ── hb
//! ```
//!
//! For every route out of xTR A the kernel's own source choice is the link address. What the
//! test proves: every LISP control datagram xTR A puts on the wire — Map-Registers over IPv4
//! and IPv6, the ECM Map-Request, the Map-Reply — has the RLOC of its family as source (seen
//! by tcpdump on the core's link to A); the registrations complete (the Map-Notifies come back
//! to the RLOC) and traffic crosses the overlay.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::lab::{self, AgentOptions, CORE, ETR, HA, ITR, Registration, SiteKey, series};
use support::netns::{self, Topology};

const MS1: &str = lab::MS1.ns;
const MS1_V4: &str = "192.0.2.130";
const MS1_V6: &str = "2001:db8:ff:c::130";
const MS1_V6_CORE: &str = "2001:db8:ff:c::1";
const MS2_V4: &str = "192.0.2.162";
/// xTR A's addresses on its link to the core (what the kernel would pick as source).
const LINK_A_V4: &str = "192.0.2.20";
const LINK_A_V6: &str = "2001:db8:ff:1::20";
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

/// Moves xTR A's RLOCs from `rloc0` to the loopback, gives `rloc0` other addresses, puts
/// A's routes back (deleting the old subnet address took them) and makes the core route each
/// RLOC via A's link address.
fn move_rlocs_to_dummy(t: &Topology) -> anyhow::Result<()> {
    t.ip(ITR, &["addr", "del", "192.0.2.10/26", "dev", "rloc0"])?;
    t.ip(
        ITR,
        &["addr", "del", "2001:db8:ff:1::10/64", "dev", "rloc0"],
    )?;
    t.addr(ITR, "rloc0", &format!("{LINK_A_V4}/26"))?;
    t.addr(ITR, "rloc0", &format!("{LINK_A_V6}/64"))?;
    t.addr(ITR, "lo", &format!("{}/32", lab::RLOC_A_V4))?;
    t.addr(ITR, "lo", &format!("{}/128", lab::RLOC_A_V6))?;
    for (prefix, via) in [
        ("192.0.2.64/26", "192.0.2.1"),
        ("192.0.2.128/26", "192.0.2.1"),
        ("2001:db8:ff:2::/64", "2001:db8:ff:1::1"),
        ("2001:db8:ff:c::/64", "2001:db8:ff:1::1"),
    ] {
        t.ip(ITR, &["route", "replace", prefix, "via", via])?;
    }
    t.neigh(ITR, "rloc0", "192.0.2.1", lab::MAC_CORE_ITR)?;
    t.neigh(ITR, "rloc0", "2001:db8:ff:1::1", lab::MAC_CORE_ITR)?;
    t.neigh(CORE, "itr0", LINK_A_V4, lab::MAC_ITR_RLOC)?;
    t.neigh(CORE, "itr0", LINK_A_V6, lab::MAC_ITR_RLOC)?;
    t.ip(
        CORE,
        &[
            "route",
            "replace",
            &format!("{}/32", lab::RLOC_A_V4),
            "via",
            LINK_A_V4,
        ],
    )?;
    t.ip(
        CORE,
        &[
            "route",
            "replace",
            &format!("{}/128", lab::RLOC_A_V6),
            "via",
            LINK_A_V6,
        ],
    )?;
    Ok(())
}

/// ms1's IPv6 address and routes to it (xTR A's route is set by [`move_rlocs_to_dummy`]).
fn give_ms1_ipv6(t: &Topology) -> anyhow::Result<()> {
    t.addr(CORE, MS1, &format!("{MS1_V6_CORE}/64"))?;
    t.addr(MS1, "ms0", &format!("{MS1_V6}/64"))?;
    t.route(MS1, "default", MS1_V6_CORE)?;
    t.route(ETR, "2001:db8:ff:c::/64", "2001:db8:ff:2::1")?;
    Ok(())
}

/// Which source address the kernel picks towards `dst` in `ns` (`ip route get`).
fn kernel_source(t: &Topology, ns: &str, dst: &str) -> String {
    let out = t.ip(ns, &["route", "get", dst]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next().unwrap_or("").to_string();
        }
    }
    panic!("no src in `ip route get {dst}`: {text}");
}

#[test]
fn control_messages_leave_from_the_rloc_on_the_loopback() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispsrc");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    lab::add_map_servers(&mut t, &[lab::MS1, lab::MS2]).unwrap();
    move_rlocs_to_dummy(&t).unwrap();
    give_ms1_ipv6(&t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    // The premise: left to itself, the kernel would send from the link addresses.
    assert_eq!(kernel_source(&t, ITR, MS2_V4), LINK_A_V4);
    assert_eq!(kernel_source(&t, ITR, MS1_V6), LINK_A_V6);
    assert_eq!(kernel_source(&t, ITR, lab::RLOC_B_V4), LINK_A_V4);
    // And the underlay works: the core reaches the RLOCs, ms1 is reachable over IPv6.
    assert_eq!(lab::ping(&t, ETR, lab::RLOC_A_V4, 1).unwrap(), 1);
    assert_eq!(lab::ping(&t, ETR, lab::RLOC_A_V6, 1).unwrap(), 1);
    assert_eq!(lab::ping(&t, ITR, MS1_V6, 1).unwrap(), 1, "ms1 over IPv6");

    let pcap = t.workdir.join("core-itr0.pcap");
    let cap = lab::start_capture(&mut t, CORE, "itr0", &pcap).unwrap();

    let ms1_yaml = lab::map_server_config(MS1_V4, KEY_A, KEY_B).replace(
        &format!("  ipv4: {MS1_V4}\n"),
        &format!("  ipv4: {MS1_V4}\n  ipv6: \"{MS1_V6}\"\n"),
    );
    assert!(ms1_yaml.contains(MS1_V6));
    let _ms1 = lab::start_agent(&mut t, &agent_bin(), MS1, "ms1", &ms1_yaml).unwrap();
    let _ms2 = lab::start_agent(
        &mut t,
        &agent_bin(),
        lab::MS2.ns,
        "ms2",
        &lab::map_server_config(MS2_V4, KEY_A, KEY_B),
    )
    .unwrap();
    let o = AgentOptions::default();
    let ms1_v6_quoted = format!("\"{MS1_V6}\"");
    // A: ms1 over IPv6 (it forwards Map-Requests to A, so A sends Map-Replies), ms2 over IPv4;
    // resolves through ms1 over IPv6.
    let cfg_a = lab::xtr_config(
        &lab::config_a(&o),
        KEY_A,
        REGISTER_INTERVAL_S,
        &[
            Registration {
                map_server: &ms1_v6_quoted,
                proxy_reply: false,
            },
            Registration {
                map_server: MS2_V4,
                proxy_reply: true,
            },
        ],
        &[&ms1_v6_quoted],
    )
    .unwrap();
    let cfg_b = lab::xtr_config(
        &lab::config_b(&o),
        KEY_B,
        REGISTER_INTERVAL_S,
        &[Registration {
            map_server: MS1_V4,
            proxy_reply: false,
        }],
        &[MS1_V4],
    )
    .unwrap();
    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "xtr-a", &cfg_a).unwrap();
    let b = lab::start_agent(&mut t, &agent_bin(), ETR, "xtr-b", &cfg_b).unwrap();

    let slack = Duration::from_secs(REGISTER_INTERVAL_S * 3);
    for ms in [MS1_V6, MS2_V4] {
        let line = format!("registered with map-server {ms}");
        let ok = Topology::wait_for(slack, || Ok(t.proc(a).log_text().contains(&line))).unwrap();
        assert!(ok, "A not registered with {ms}:\n{}", t.proc(a).log_text());
    }
    let line = format!("registered with map-server {MS1_V4}");
    let ok = Topology::wait_for(slack, || Ok(t.proc(b).log_text().contains(&line))).unwrap();
    assert!(ok, "B not registered:\n{}", t.proc(b).log_text());

    // A resolves B's EIDs through ms1 (ECM over IPv6); B resolves A's through ms1, which
    // forwards the request to A at the address A registered from: A answers with a Map-Reply.
    let got = lab::ping(&t, HA, lab::HB_V4, 10).unwrap();
    assert_eq!(
        got,
        10 - lab::FIRST_CONTACT_LOSS,
        "pings hA -> hB while both xTRs resolve:\nA:\n{}\nB:\n{}",
        t.proc(a).log_text(),
        t.proc(b).log_text()
    );
    assert_eq!(lab::ping(&t, HA, lab::HB_V4, 5).unwrap(), 5, "steady state");
    let ma = lab::metrics_text(&t.ns(ITR)).unwrap();
    for ms in [MS1_V6, MS2_V4] {
        let name = format!("lisp_xtr_registered{{map_server=\"{ms}\"}}");
        assert_eq!(series(&ma, &name), Some(1), "{ma}");
    }
    assert!(
        series(&ma, "lisp_xtr_total{event=\"sent_map_reply\"}").unwrap_or(0) >= 1,
        "A sent no Map-Reply:\n{ma}"
    );

    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);
    check_sources(&pcap);
}

/// Every LISP control datagram from xTR A on the core's link has the RLOC of its family as
/// (outer) source, and the capture holds the kinds that matter over the right families.
fn check_sources(pcap: &std::path::Path) {
    let rows = lab::tshark_fields(
        pcap,
        Some(&format!(
            "udp.port == 4342 && !icmp && !icmpv6 && eth.src == {}",
            lab::MAC_ITR_RLOC
        )),
        &["frame.protocols", "ip.src", "ipv6.src", "lisp.type"],
    )
    .unwrap();
    assert!(
        !rows.is_empty(),
        "no control frames from A on the core link"
    );
    // (outer family is IPv6, LISP type) of every frame.
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        let field = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        let first = |i: usize| field(i).split(',').next().unwrap_or("").to_string();
        // The outer header is the first network layer after the Ethernet type.
        let v6 = field(0).starts_with("eth:ethertype:ipv6");
        let src = if v6 { first(2) } else { first(1) };
        let want = if v6 { lab::RLOC_A_V6 } else { lab::RLOC_A_V4 };
        assert_eq!(src, want, "control frame from A not from its RLOC: {r:?}");
        seen.insert((v6, first(3)));
    }
    eprintln!("A's control frames on the core link (IPv6 outer, LISP type): {seen:?}");
    for (v6, ty, what) in [
        (false, "3", "Map-Register over IPv4 (to ms2)"),
        (true, "3", "Map-Register over IPv6 (to ms1)"),
        (true, "8", "ECM Map-Request over IPv6 (to ms1)"),
    ] {
        assert!(
            seen.contains(&(v6, ty.to_string())),
            "no {what} in {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|(_, ty)| ty == "2"),
        "no Map-Reply from A in {seen:?}"
    );
}
