//! End to end through the XDP data plane, in network namespaces (needs root):
//! host A — xTR A — core — xTR B — host B (see `support/lab.rs`).
//!
//! What it proves: EID traffic crosses the core only inside LISP, only while the agents run; the
//! agents' counters account for every packet; tshark decodes the core-link capture as LISP data
//! with the configured addresses and flags and finds nothing malformed.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::lab::{self, AgentOptions, CORE, ETR, HA, HB, ITR};
use support::netns::{self, Topology};

const PINGS: u32 = 4;
const DATAGRAMS: u32 = 50;
const BIG_PINGS: u32 = 2;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

/// Runs all the traffic of one measurement: pings both families A→B and UDP both ways.
/// Returns how many packets each direction carried (for the counters).
struct Traffic {
    /// Packets hA → hB of each EID family (v4, v6).
    a_to_b: (u64, u64),
    /// Packets hB → hA of each EID family.
    b_to_a: (u64, u64),
}

fn run_traffic(t: &Topology) -> Traffic {
    let p4 = lab::ping(t, HA, lab::HB_V4, PINGS).unwrap();
    assert_eq!(p4, PINGS, "IPv4 EID ping hA -> hB over LISP lost replies");
    let p6 = lab::ping(t, HA, lab::HB_V6, PINGS).unwrap();
    assert_eq!(p6, PINGS, "IPv6 EID ping hA -> hB over LISP lost replies");
    // Full-size packets (1500 bytes of IP, the hosts' MTU) still fit the underlay once
    // encapsulated (1536 with an IPv4 outer header, 1556 with IPv6; underlay MTU 1600).
    let big4 = lab::ping_sized(t, HA, lab::HB_V4, BIG_PINGS, 1500 - 28).unwrap();
    assert_eq!(big4, BIG_PINGS, "1500-byte IPv4 EID packets over LISP");
    let big6 = lab::ping_sized(t, HA, lab::HB_V6, BIG_PINGS, 1500 - 48).unwrap();
    assert_eq!(big6, BIG_PINGS, "1500-byte IPv6 EID packets over LISP");
    let u4 = lab::udp_echo(t, (HA, lab::HA_V4), (HB, lab::HB_V4), 7001, DATAGRAMS).unwrap();
    assert_eq!(u4, (DATAGRAMS, DATAGRAMS), "IPv4 UDP echo over LISP");
    let u6 = lab::udp_echo(t, (HB, lab::HB_V6), (HA, lab::HA_V6), 7002, DATAGRAMS).unwrap();
    assert_eq!(
        u6,
        (DATAGRAMS, DATAGRAMS),
        "IPv6 UDP echo (started by hB) over LISP"
    );
    let (p, d) = (u64::from(PINGS + BIG_PINGS), u64::from(DATAGRAMS));
    Traffic {
        a_to_b: (p + d, p + d),
        b_to_a: (p + d, p + d),
    }
}

fn no_eid_traffic(t: &Topology, why: &str) {
    assert_eq!(
        lab::ping(t, HA, lab::HB_V4, 2).unwrap(),
        0,
        "IPv4 EID traffic flowed {why}"
    );
    assert_eq!(
        lab::ping(t, HA, lab::HB_V6, 2).unwrap(),
        0,
        "IPv6 EID traffic flowed {why}"
    );
}

fn counters(t: &Topology, ns: &str) -> BTreeMap<String, u64> {
    lab::metrics(&t.ns(ns)).unwrap()
}

/// IPv4 and IPv6 EIDs over IPv4 and IPv6 RLOCs, default instance (no I bit), N bit from A only.
#[test]
fn lisp_overlay_between_two_sites_through_xdp() {
    scenario(&AgentOptions::default());
}

/// The same with both sites in instance-id 7: the I bit and the instance-id travel in every
/// packet (and the nonce swaps sides), and each ETR maps instance 7 to its main table.
#[test]
fn instance_id_travels_in_the_lisp_header() {
    scenario(&AgentOptions {
        instance_id: 7,
        nonce_a: false,
        ..AgentOptions::default()
    });
}

/// The same with computed UDP checksums in the IPv6 outer headers (`ipv6-udp-checksum`):
/// tshark verifies every one of them.
#[test]
fn ipv6_outer_udp_checksums_verify_when_enabled() {
    scenario(&AgentOptions {
        ipv6_udp_checksum: true,
        ..AgentOptions::default()
    });
}

fn scenario(opts: &AgentOptions) {
    if !netns::is_root() {
        panic!(
            "this end-to-end test needs root (network namespaces, XDP); run `cargo xtask test` as root"
        );
    }
    let prefix = netns::unique_prefix("lispe2e");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();

    // The underlay works (RLOC to RLOC through the core), so what follows fails for want of LISP
    // and not because the lab is broken.
    assert_eq!(lab::ping(&t, ITR, lab::RLOC_B_V4, 2).unwrap(), 2);
    assert_eq!(lab::ping(&t, ITR, lab::RLOC_B_V6, 2).unwrap(), 2);
    no_eid_traffic(&t, "before the agents started (the core has no EID routes)");

    let (a, b) = lab::start_agents(&mut t, &agent_bin(), opts).unwrap();

    let pcap = t.workdir.join("core-itr0.pcap");
    let cap = lab::start_capture(&mut t, CORE, "itr0", &pcap).unwrap();
    let before_a = counters(&t, ITR);
    let before_b = counters(&t, ETR);
    let traffic = run_traffic(&t);
    let after_a = counters(&t, ITR);
    let after_b = counters(&t, ETR);
    // Let tcpdump write the last frames before it is stopped.
    std::thread::sleep(std::time::Duration::from_millis(300));
    t.stop(cap);

    // xTR A encapsulates everything A→B with an IPv4 outer header (B's IPv4 RLOC) and
    // decapsulates everything B→A; xTR B the mirror image with an IPv6 outer header.
    let ab = traffic.a_to_b.0 + traffic.a_to_b.1;
    let ba = traffic.b_to_a.0 + traffic.b_to_a.1;
    let d = |b: &BTreeMap<String, u64>, a: &BTreeMap<String, u64>, n: &str| lab::delta(b, a, n);
    assert_eq!(
        d(&before_a, &after_a, "encap_ipv4"),
        ab,
        "xTR A encap_ipv4: {after_a:?}"
    );
    assert_eq!(d(&before_a, &after_a, "encap_ipv6"), 0, "xTR A encap_ipv6");
    assert_eq!(
        d(&before_a, &after_a, "decap"),
        ba,
        "xTR A decap: {after_a:?}"
    );
    assert_eq!(
        d(&before_b, &after_b, "encap_ipv6"),
        ba,
        "xTR B encap_ipv6: {after_b:?}"
    );
    assert_eq!(d(&before_b, &after_b, "encap_ipv4"), 0, "xTR B encap_ipv4");
    assert_eq!(
        d(&before_b, &after_b, "decap"),
        ab,
        "xTR B decap: {after_b:?}"
    );
    for (side, b, a) in [("A", &before_a, &after_a), ("B", &before_b, &after_b)] {
        for bad in [
            "encap_no_next_hop",
            "drop_bad_lisp",
            "pass_malformed",
            "decap_pass",
        ] {
            assert_eq!(d(b, a, bad), 0, "xTR {side} counted {bad}: {a:?}");
        }
    }

    check_capture(&pcap, ab, ba, opts);

    // Stopped agents detach: EID traffic stops flowing.
    for h in [a, b] {
        let st = t.stop(h).expect("agent exit status");
        assert!(st.success(), "agent did not exit cleanly on SIGTERM: {st}");
    }
    no_eid_traffic(&t, "after the agents stopped");
    // Logs, configs and the capture stay behind only when something failed.
    let _ = std::fs::remove_dir_all(&t.workdir);
}

/// Checks the core-link capture frame by frame.
fn check_capture(pcap: &Path, a_to_b: u64, b_to_a: u64, opts: &AgentOptions) {
    let nonce_a = opts.nonce_a;
    // Nothing malformed, no expert warnings or errors, anywhere in the capture.
    let bad = lab::tshark_fields(
        pcap,
        Some("_ws.malformed || _ws.expert.severity >= warning"),
        &["frame.number", "_ws.expert.message", "frame.protocols"],
    )
    .unwrap();
    assert!(
        bad.is_empty(),
        "tshark found malformed/expert frames: {bad:?}"
    );

    let rows = lab::tshark_fields(
        pcap,
        None,
        &[
            "frame.number",
            "frame.protocols",
            "ip.src",
            "ip.dst",
            "ipv6.src",
            "ipv6.dst",
            "udp.dstport",
            "lisp-data.flags.nonce",
            "lisp-data.flags.iid",
            "lisp-data.iid",
            "udp.srcport",
            "udp.checksum",
            "udp.checksum.status",
        ],
    )
    .unwrap();
    let eid = |a: &str| {
        a.starts_with("198.51.100.")
            || a.starts_with("203.0.113.")
            || a.starts_with("2001:db8:1:")
            || a.starts_with("2001:db8:2:")
            || a.starts_with("2001:db8:1::")
            || a.starts_with("2001:db8:2::")
    };
    let (mut seen_ab, mut seen_ba) = (0u64, 0u64);
    // Outer UDP source ports by inner flow (addresses + inner protocol stack).
    let mut sports: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut combos = std::collections::BTreeSet::new();
    for r in &rows {
        let f = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        let protos: Vec<&str> = f(1).split(':').collect();
        let all = |i: usize| -> Vec<&str> { f(i).split(',').filter(|s| !s.is_empty()).collect() };
        let (ip4s, ip4d, ip6s, ip6d) = (all(2), all(3), all(4), all(5));
        // Layers in order: the outer IP is the first ip/ipv6 in the protocol list.
        let outer_v6 = protos.iter().position(|p| *p == "ipv6");
        let outer_v4 = protos.iter().position(|p| *p == "ip");
        let outer_is_v6 = match (outer_v4, outer_v6) {
            (Some(a), Some(b)) => b < a,
            (None, Some(_)) => true,
            _ => false,
        };
        let is_lisp = protos.contains(&"lisp-data");
        if !is_lisp {
            // Not LISP: must carry no EID address at all (no native EID traffic on the core).
            for a in ip4s.iter().chain(&ip4d).chain(&ip6s).chain(&ip6d) {
                assert!(
                    !eid(a),
                    "frame {} carries EID {a} outside LISP: {r:?}",
                    f(0)
                );
            }
            continue;
        }
        assert_eq!(
            f(6).split(',').next(),
            Some("4341"),
            "LISP data not to UDP 4341: {r:?}"
        );
        let (outer_src, outer_dst) = if outer_is_v6 {
            (ip6s[0], ip6d[0])
        } else {
            (ip4s[0], ip4d[0])
        };
        // Inner = the last IP layer.
        let inner_is_v6 =
            protos.iter().rposition(|p| *p == "ipv6") > protos.iter().rposition(|p| *p == "ip");
        let (inner_src, inner_dst) = if inner_is_v6 {
            (*ip6s.last().unwrap(), *ip6d.last().unwrap())
        } else {
            (*ip4s.last().unwrap(), *ip4d.last().unwrap())
        };
        assert!(eid(inner_src) && eid(inner_dst), "inner not EIDs: {r:?}");
        let nonce = matches!(f(7), "1" | "True" | "true");
        let iid_flag = matches!(f(8), "1" | "True" | "true");
        // The I bit exactly when the instance is not the default one, with that instance-id.
        assert_eq!(iid_flag, opts.instance_id != 0, "I bit: {r:?}");
        if iid_flag {
            assert_eq!(f(9), opts.instance_id.to_string(), "instance-id: {r:?}");
        }
        if inner_src.starts_with("198.51.100.") || inner_src.starts_with("2001:db8:1:") {
            // A → B: xTR A's IPv4 RLOC to xTR B's IPv4 RLOC, N as configured on A.
            assert_eq!(
                (outer_src, outer_dst),
                (lab::RLOC_A_V4, lab::RLOC_B_V4),
                "{r:?}"
            );
            assert!(inner_dst.starts_with("203.0.113.") || inner_dst.starts_with("2001:db8:2:"));
            assert_eq!(nonce, nonce_a, "N bit of A→B frame: {r:?}");
            seen_ab += 1;
        } else {
            assert_eq!(
                (outer_src, outer_dst),
                (lab::RLOC_B_V6, lab::RLOC_A_V6),
                "{r:?}"
            );
            assert!(inner_dst.starts_with("198.51.100.") || inner_dst.starts_with("2001:db8:1:"));
            assert_eq!(nonce, !nonce_a, "N bit of B→A frame: {r:?}");
            seen_ba += 1;
        }
        // The outer UDP checksum (first UDP layer): zero by default (RFC 6935/6936), computed
        // and verified by tshark (status 1 = good) for IPv6 outer headers when enabled.
        let outer_csum = f(11).split(',').next().unwrap_or("");
        let outer_csum_status = f(12).split(',').next().unwrap_or("");
        if outer_is_v6 && opts.ipv6_udp_checksum {
            assert_ne!(outer_csum, "0x0000", "IPv6 outer checksum computed: {r:?}");
            assert_eq!(
                outer_csum_status, "1",
                "IPv6 outer checksum verifies: {r:?}"
            );
        } else {
            assert_eq!(outer_csum, "0x0000", "zero outer UDP checksum: {r:?}");
        }
        combos.insert((inner_is_v6, outer_is_v6));
        let sport = f(10).split(',').next().unwrap_or("").to_string();
        sports
            .entry(format!("{inner_src} {inner_dst} {}", f(1)))
            .or_default()
            .insert(sport);
    }
    assert_eq!(seen_ab, a_to_b, "LISP frames A→B on the core link");
    assert_eq!(seen_ba, b_to_a, "LISP frames B→A on the core link");
    assert_eq!(
        combos.len(),
        4,
        "all inner×outer family combinations seen: {combos:?}"
    );
}

/// Pings `dst` `count` times with `size` bytes of ICMP payload and DF off (`-M dont`): the
/// host fragments what exceeds its own MTU. Returns the replies.
fn ping_no_df(t: &Topology, ns: &str, dst: &str, count: u32, size: u32) -> u32 {
    ping_with(
        t,
        ns,
        dst,
        count,
        "0.2",
        &["-M", "dont", "-s", &size.to_string()],
    )
}

/// Pings `dst` `count` times `interval` seconds apart with `extra` options; returns the replies.
fn ping_with(t: &Topology, ns: &str, dst: &str, count: u32, interval: &str, extra: &[&str]) -> u32 {
    let count = count.to_string();
    let mut args = vec!["ping", "-n", "-c", &count, "-i", interval, "-W", "2"];
    args.extend_from_slice(extra);
    args.push(dst);
    let out = t.command(ns, &args).output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// RFC 9300 §7.1 across an underlay of 1500 bytes: a 3000-byte IPv4 ping without DF leaves host
/// A as fragments of 1500, 1500 and 68 bytes. The small one fits once encapsulated (XDP); the
/// two big ones do not (1536 with IPv4 outer, 1556 with IPv6): XDP hands them to the agent,
/// which sends them on its UDP 4341 socket with path-MTU discovery off, and the kernel
/// fragments the outer packets. At the far xTR, XDP passes the outer fragments to the kernel,
/// which reassembles them for the agent's socket; the agent decapsulates and delivers. Every
/// echo and every reply arrives; each count below is exact.
#[test]
fn big_ipv4_without_df_is_fragmented_by_the_slow_path() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    const N: u64 = 3;
    let prefix = netns::unique_prefix("lispfrag");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    for (ns, dev) in [
        (ITR, "rloc0"),
        (CORE, "itr0"),
        (CORE, "etr0"),
        (ETR, "rloc0"),
    ] {
        t.ip(ns, &["link", "set", dev, "mtu", "1500"]).unwrap();
    }
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let (a, b) = lab::start_agents(
        &mut t,
        &agent_bin(),
        &AgentOptions {
            log_level: "debug",
            ..AgentOptions::default()
        },
    )
    .unwrap();
    let pcap = t.workdir.join("core-itr0-frag.pcap");
    let cap = lab::start_capture(&mut t, CORE, "itr0", &pcap).unwrap();
    let metrics_text = |ns: &str| lab::metrics_text(&t.ns(ns)).unwrap();
    let slow = |text: &str, outcome: &str| {
        lab::series(
            text,
            &format!("lisp_slow_path_packets_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0)
    };
    let (before_a, before_b) = (counters(&t, ITR), counters(&t, ETR));
    let (sa0, sb0) = (metrics_text(ITR), metrics_text(ETR));

    let got = ping_no_df(&t, HA, lab::HB_V4, N as u32, 3000);
    assert_eq!(
        u64::from(got),
        N,
        "3000-byte pings without DF over a 1500-byte underlay"
    );

    let (after_a, after_b) = (counters(&t, ITR), counters(&t, ETR));
    let (sa1, sb1) = (metrics_text(ITR), metrics_text(ETR));
    std::thread::sleep(std::time::Duration::from_millis(300));
    t.stop(cap);
    let d = |b: &BTreeMap<String, u64>, a: &BTreeMap<String, u64>, n: &str| lab::delta(b, a, n);
    // Per ping and direction: two big fragments by the slow path, one small by XDP; at the
    // receiving xTR two outer datagrams in two fragments each, reassembled by the kernel for
    // the agent, which runs them back through XDP (so XDP decapsulates all three).
    for (side, b, a, s0, s1, encap) in [
        ("A", &before_a, &after_a, &sa0, &sa1, "encap_ipv4"),
        ("B", &before_b, &after_b, &sb0, &sb1, "encap_ipv6"),
    ] {
        assert_eq!(d(b, a, "slow_path"), 2 * N, "xTR {side} slow_path: {a:?}");
        assert_eq!(d(b, a, encap), N, "xTR {side} {encap}");
        assert_eq!(d(b, a, "pass_fragment"), 4 * N, "xTR {side} pass_fragment");
        assert_eq!(d(b, a, "decap"), 3 * N, "xTR {side} decap");
        for bad in [
            "slow_path_lost",
            "encap_no_next_hop",
            "too_big_pass",
            "drop_cannot_encap",
        ] {
            assert_eq!(d(b, a, bad), 0, "xTR {side} {bad}");
        }
        assert_eq!(
            slow(s1, "encap_sent") - slow(s0, "encap_sent"),
            2 * N,
            "xTR {side}"
        );
        assert_eq!(
            slow(s1, "decap_reinjected") - slow(s0, "decap_reinjected"),
            2 * N,
            "xTR {side} reassembled datagrams back through XDP"
        );
        for bad in [
            "decap_delivered",
            "encap_failed",
            "lost",
            "decap_unknown_instance",
            "decap_malformed",
            "decap_failed",
        ] {
            assert_eq!(slow(s1, bad), slow(s0, bad), "xTR {side} slow path {bad}");
        }
    }

    // On the core: the outer fragments themselves (A→B IPv4, B→A IPv6), 4 per ping each way,
    // and no EID packet outside LISP.
    let frag4 = lab::tshark_fields(
        &pcap,
        Some(&format!(
            // Layer 1 (the outer header): the inner packets are fragments too.
            "ip.src#1 == {} && ip.dst#1 == {} && (ip.flags.mf#1 == 1 || ip.frag_offset#1 > 0)",
            lab::RLOC_A_V4,
            lab::RLOC_B_V4
        )),
        &["frame.number"],
    )
    .unwrap();
    assert_eq!(
        frag4.len() as u64,
        4 * N,
        "IPv4 outer fragments A→B on the core"
    );
    let frag6 = lab::tshark_fields(
        &pcap,
        Some(&format!(
            "ipv6.src == {} && ipv6.dst == {} && ipv6.fraghdr",
            lab::RLOC_B_V6,
            lab::RLOC_A_V6
        )),
        &["frame.number"],
    )
    .unwrap();
    assert_eq!(
        frag6.len() as u64,
        4 * N,
        "IPv6 outer fragments B→A on the core"
    );
    let native = lab::tshark_fields(
        &pcap,
        Some(&format!(
            "(ip.addr == {} || ip.addr == {}) && !udp.port == 4341",
            lab::HA_V4,
            lab::HB_V4
        )),
        &["frame.number"],
    )
    .unwrap();
    assert!(
        native.is_empty(),
        "EID packets outside LISP on the core: {native:?}"
    );

    for h in [a, b] {
        assert!(t.stop(h).expect("agent exit status").success());
    }
    let _ = std::fs::remove_dir_all(&t.workdir);
}

/// The ITR never hands a packet it cannot encapsulate to the kernel. With the next hop towards
/// the core unresolved, the first packet is dropped (counted) and raises the next-hop event;
/// the agent has the kernel resolve the neighbour (managed entry) and every later packet is
/// encapsulated. Exactly the first echo of the ping is lost, and nothing leaks onto the core.
#[test]
fn unresolved_next_hop_loses_exactly_the_first_packet() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    const N: u32 = 5;
    let prefix = netns::unique_prefix("lispnhloss");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let (a, b) = lab::start_agents(&mut t, &agent_bin(), &AgentOptions::default()).unwrap();
    // xTR A has a default route into the underlay, as routers do: a bare EID packet handed to
    // its kernel would leave natively towards the core. Then it forgets its gateway.
    t.ip(ITR, &["route", "add", "default", "via", "192.0.2.1"])
        .unwrap();
    t.ip(ITR, &["neigh", "del", "192.0.2.1", "dev", "rloc0"])
        .unwrap();
    let pcap = t.workdir.join("core-itr0-nh.pcap");
    let cap = lab::start_capture(&mut t, CORE, "itr0", &pcap).unwrap();
    let before = counters(&t, ITR);
    // Half a second apart: the agent's part (event → managed neighbour → ARP) takes a few
    // milliseconds, so only the first echo meets the unresolved neighbour even on a busy host.
    let got = ping_with(&t, HA, lab::HB_V4, N, "0.5", &[]);
    let after = counters(&t, ITR);
    std::thread::sleep(std::time::Duration::from_millis(300));
    t.stop(cap);
    assert_eq!(
        got,
        N - 1,
        "exactly the first echo is lost while the next hop resolves"
    );
    assert_eq!(lab::delta(&before, &after, "encap_no_next_hop"), 1);
    assert_eq!(lab::delta(&before, &after, "encap_ipv4"), u64::from(N - 1));
    let leaked = lab::tshark_fields(
        &pcap,
        Some(&format!("ip.addr == {} && !udp.port == 4341", lab::HB_V4)),
        &["frame.number"],
    )
    .unwrap();
    assert!(
        leaked.is_empty(),
        "bare EID packets on the core: {leaked:?}"
    );
    for h in [a, b] {
        assert!(t.stop(h).expect("agent exit status").success());
    }
    let _ = std::fs::remove_dir_all(&t.workdir);
}

/// Data for an EID the ETR does not hold (here: xTR B's database-mapping shrinks to
/// 203.0.113.128/25 while xTR A still sends 203.0.113.10 to it) is still delivered, and the
/// ETR's data plane reports it once to its agent (the per-destination limit holds the repeats
/// back): the event an SMR is made from.
#[test]
fn data_for_an_eid_no_longer_here_is_delivered_and_reported() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispabs");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let o = AgentOptions::default();
    // A per-destination interval far longer than the test: exactly one event, however slow
    // the host.
    let cfg_b = lab::config_b(&o)
        .replace("eid-prefix: 203.0.113.0/24", "eid-prefix: 203.0.113.128/25")
        .replace("\ndata-nonce:", "\nmiss-event-interval: 60s\ndata-nonce:");
    assert!(cfg_b.contains("203.0.113.128/25") && cfg_b.contains("miss-event-interval: 60s"));
    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "agent-a", &lab::config_a(&o)).unwrap();
    let b = lab::start_agent(&mut t, &agent_bin(), ETR, "agent-b", &cfg_b).unwrap();
    let received = |text: &str| lab::series(text, "lisp_dataplane_events_received_total").unwrap();
    let before = counters(&t, ETR);
    let before_events = received(&lab::metrics_text(&t.ns(ETR)).unwrap());
    // Four pings 0.1 s apart: all within the per-destination interval.
    assert_eq!(
        lab::ping(&t, HA, lab::HB_V4, 4).unwrap(),
        4,
        "still delivered"
    );
    let after = counters(&t, ETR);
    assert_eq!(lab::delta(&before, &after, "decap"), 4);
    assert_eq!(lab::delta(&before, &after, "miss_event"), 1, "{after:?}");
    // The agent got exactly that event (B's map-cache is static: no misses either).
    let ok = Topology::wait_for(std::time::Duration::from_secs(2), || {
        Ok(received(&lab::metrics_text(&t.ns(ETR))?) == before_events + 1)
    })
    .unwrap();
    assert!(ok, "the absent-EID event reached agent B");
    // An EID B still holds: no event.
    let before = counters(&t, ETR);
    assert_eq!(lab::ping(&t, HA, lab::HB_V6, 2).unwrap(), 2);
    let after = counters(&t, ETR);
    assert_eq!(lab::delta(&before, &after, "miss_event"), 0);
    for h in [a, b] {
        assert!(t.stop(h).expect("agent exit status").success());
    }
    let _ = std::fs::remove_dir_all(&t.workdir);
}

/// The reassembled datagrams are decapsulated into the instance's own routing table: xTR B maps
/// instance 7 to table 100, whose route to host B is the only usable one (B's main table
/// blackholes host B). Every 3000-byte ping without DF arrives; at B, XDP decapsulates the
/// small fragment and, run again by the agent, both reassembled datagrams.
#[test]
fn reassembled_datagrams_are_routed_in_the_instance_table() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    const N: u64 = 2;
    let prefix = netns::unique_prefix("lispfragiid");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    for (ns, dev) in [
        (ITR, "rloc0"),
        (CORE, "itr0"),
        (CORE, "etr0"),
        (ETR, "rloc0"),
    ] {
        t.ip(ns, &["link", "set", dev, "mtu", "1500"]).unwrap();
    }
    t.ip(
        ETR,
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "dev",
            "eid0",
            "table",
            "100",
        ],
    )
    .unwrap();
    t.ip(ETR, &["route", "add", "blackhole", "203.0.113.10/32"])
        .unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let o = AgentOptions {
        instance_id: 7,
        ..AgentOptions::default()
    };
    let cfg_b = lab::config_b(&o).replace(
        "{ instance-id: 7, table: main }",
        "{ instance-id: 7, table: 100 }",
    );
    assert!(cfg_b.contains("table: 100"));
    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "agent-a", &lab::config_a(&o)).unwrap();
    let b = lab::start_agent(&mut t, &agent_bin(), ETR, "agent-b", &cfg_b).unwrap();
    let reinjected = |ns: &str| {
        lab::series(
            &lab::metrics_text(&t.ns(ns)).unwrap(),
            "lisp_slow_path_packets_total{outcome=\"decap_reinjected\"}",
        )
        .unwrap()
    };
    let before = counters(&t, ETR);
    let r0 = reinjected(ETR);
    let got = ping_no_df(&t, HA, lab::HB_V4, N as u32, 3000);
    assert_eq!(
        u64::from(got),
        N,
        "3000-byte pings into instance 7 (table 100)"
    );
    let after = counters(&t, ETR);
    assert_eq!(reinjected(ETR) - r0, 2 * N);
    assert_eq!(lab::delta(&before, &after, "decap"), 3 * N, "{after:?}");
    assert_eq!(lab::delta(&before, &after, "decap_pass"), 0);
    for h in [a, b] {
        assert!(t.stop(h).expect("agent exit status").success());
    }
    let _ = std::fs::remove_dir_all(&t.workdir);
}
