//! `cargo xtask lab [--keep|--down]`: the whole xTR on one screen, in network namespaces.
//!
//! ```text
//!                          ms1 (map-server / map-resolver, 192.0.2.130)
//!                           |
//!  ha ── itr (xTR A) ──── core ──── etr (xTR B) ── hb
//! ```
//!
//! Steps, each printed with what it shows: hA cannot reach hB without LISP; the map-server and
//! both xTRs start, the xTRs register (state from the metrics); the first pings from hA to hB
//! miss in both map-caches, which sends ECM Map-Requests to the map-resolver and installs the
//! Map-Replies in the XDP map-cache (the first echo is lost, the rest come back), for IPv4 and
//! IPv6 EIDs; then the XDP counters of both xTRs, the map-server's counters, and tshark's decode
//! of the control (UDP 4342) and data (UDP 4341) packets the core saw.
//!
//! xTR A registers without proxy-reply and xTR B with it, so both ways of answering show: the
//! map-server answers for B's EIDs itself and forwards Map-Requests for A's EIDs to xTR A.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::support::lab::{self, CORE, ETR, HA, HB, ITR, MS1, Registration, SiteKey};
use crate::support::netns::{self, Topology};
use crate::{build_agent, check_interrupt, install_deps};

/// Namespace prefix of the interactive lab (fixed, so `--down` finds what `--keep` left).
pub const LAB_PREFIX: &str = "lisplab-";
/// Where `lab --keep` pins its pass-through XDP links (bpffs, outside any `ip netns exec`).
const PIN_DIR: &str = "/sys/fs/bpf";

/// Both sites authenticate with HMAC-SHA-256 (the RFC 9301 "SHOULD").
const KEY_A: SiteKey = SiteKey {
    key: "lab-site-a-secret",
    algorithm: "hmac-sha-256",
};
const KEY_B: SiteKey = SiteKey {
    key: "lab-site-b-secret",
    algorithm: "hmac-sha-256",
};
/// Long enough that the decode shows one registration round per xTR, short enough to see a
/// refresh in a `--keep` lab.
const REGISTER_INTERVAL_S: u64 = 30;

/// Starts the map-server in `ms1` and both xTRs registering with it (A without proxy-reply, B
/// with it), and waits until both are registered. Returns the handles (ms, A, B).
pub fn start_mapping_system(t: &mut Topology, agent: &Path) -> Result<(usize, usize, usize)> {
    let ms_addr = MS1.addr();
    let ms = lab::start_agent(
        t,
        agent,
        MS1.ns,
        "map-server",
        &lab::map_server_config(ms_addr, KEY_A, KEY_B),
    )?;
    let o = lab::AgentOptions::default();
    let reg = |proxy_reply| {
        [Registration {
            map_server: ms_addr,
            proxy_reply,
        }]
    };
    let cfg_a = lab::xtr_config(
        &lab::config_a(&o),
        KEY_A,
        REGISTER_INTERVAL_S,
        &reg(false),
        &[ms_addr],
    )?;
    let cfg_b = lab::xtr_config(
        &lab::config_b(&o),
        KEY_B,
        REGISTER_INTERVAL_S,
        &reg(true),
        &[ms_addr],
    )?;
    let a = lab::start_agent(t, agent, ITR, "xtr-a", &cfg_a)?;
    let b = lab::start_agent(t, agent, ETR, "xtr-b", &cfg_b)?;
    let gauge = format!("lisp_xtr_registered{{map_server=\"{ms_addr}\"}}");
    for (h, ns) in [(a, ITR), (b, ETR)] {
        let full = t.ns(ns);
        let ok = Topology::wait_for(Duration::from_secs(10), || {
            check_interrupt()?;
            Ok(lab::metrics_text(&full)
                .map(|m| lab::series(&m, &gauge) == Some(1))
                .unwrap_or(false))
        })?;
        if !ok {
            bail!(
                "xTR in {ns} did not register with {ms_addr}; its log:\n{}",
                t.proc(h).log_text()
            );
        }
    }
    Ok((ms, a, b))
}

pub fn down() -> Result<()> {
    let n = netns::delete_netns_with_prefix(LAB_PREFIX)?;
    let mut pins = 0;
    if let Ok(d) = std::fs::read_dir(PIN_DIR) {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with(LAB_PREFIX) {
                std::fs::remove_file(e.path())?;
                pins += 1;
            }
        }
    }
    println!("lab: removed {n} namespaces and {pins} pinned links");
    Ok(())
}

fn step(s: &str) {
    println!("\n==> {s}");
}

fn say(s: &str) {
    println!("    {s}");
}

/// Prints the given series of an agent's metrics (`name` exact up to the value); absent ones as -.
fn show_series(text: &str, names: &[&str]) {
    for n in names {
        let v = lab::series(text, n).map_or("-".to_string(), |v| v.to_string());
        say(&format!("{n:<58} {v}"));
    }
}

/// The map-cache lines an agent logged since `from` (byte offset in its log).
fn map_cache_log(t: &mut Topology, h: usize, from: usize) -> Vec<String> {
    let log = t.proc(h).log_text();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("map-cache ["))
        .map(|l| {
            // Drop the logger's timestamp/level prefix: "[... INFO  lisp_agent::...] map-cache ..."
            l.find("map-cache [").map_or(l, |i| &l[i..]).to_string()
        })
        .collect()
}

pub fn run(keep: bool) -> Result<()> {
    if !netns::is_root() {
        bail!("the lab needs root (network namespaces, XDP)");
    }
    let started = Instant::now();
    install_deps()?;
    let (agent, object) = build_agent()?;
    crate::catch_sigint();
    if netns::list_netns()
        .iter()
        .any(|n| n.starts_with(LAB_PREFIX))
    {
        step("removing the previous lab");
        down()?;
    }
    let workdir = std::env::temp_dir().join("lisp-lab");
    let _ = std::fs::remove_dir_all(&workdir);
    let mut t = Topology::new(LAB_PREFIX, &workdir)?;
    step(&format!(
        "topology [namespaces {LAB_PREFIX}*]: ha — itr (xTR A) — core — etr (xTR B) — hb, \
         and {} (map-server/map-resolver {}) off the core",
        MS1.ns,
        MS1.addr()
    ));
    say(&format!(
        "site A: {} behind xTR A (RLOCs {}, {})",
        lab::SITE_A.join(", "),
        lab::RLOC_A_V4,
        lab::RLOC_A_V6
    ));
    say(&format!(
        "site B: {} behind xTR B (RLOCs {}, {})",
        lab::SITE_B.join(", "),
        lab::RLOC_B_V4,
        lab::RLOC_B_V6
    ));
    lab::build(&mut t)?;
    lab::add_map_servers(&mut t, &[MS1])?;
    if keep && !Path::new(PIN_DIR).join(".").exists() {
        bail!("--keep needs a bpffs at {PIN_DIR} (scripts/install-deps.sh mounts it)");
    }
    let _pass = lab::attach_pass(&t, &object, keep.then_some(Path::new(PIN_DIR)))?;
    check_interrupt()?;

    step("without LISP, hA cannot reach hB: the core routes RLOCs only, never EID prefixes");
    let got = lab::ping(&t, HA, lab::HB_V4, 1)?;
    say(&format!(
        "ping {} -> {}: {got}/1 replies",
        lab::HA_V4,
        lab::HB_V4
    ));

    // Everything the core receives from here on (each packet once: as it comes in).
    let pcap = workdir.join("core.pcap");
    let cap = lab::start_capture(&mut t, CORE, "any", &pcap)?;

    step(&format!(
        "starting the map-server and both xTRs (configs and logs in {})",
        workdir.display()
    ));
    say(
        "the xTRs have NO map-cache entries for the other site: only `eid-space` (what to ask for)",
    );
    say(&format!(
        "xTR A registers {} with proxy-reply off, xTR B {} with proxy-reply on (HMAC-SHA-256)",
        lab::SITE_A.join(" + "),
        lab::SITE_B.join(" + ")
    ));
    let (ms, a, b) = start_mapping_system(&mut t, &agent)?;
    say(&format!(
        "pids: map-server {}, xTR A {}, xTR B {}",
        t.proc(ms).pid(),
        t.proc(a).pid(),
        t.proc(b).pid()
    ));
    let gauge = format!("lisp_xtr_registered{{map_server=\"{}\"}}", MS1.addr());
    for (name, ns) in [("xTR A", ITR), ("xTR B", ETR)] {
        let m = lab::metrics_text(&t.ns(ns))?;
        say(&format!("{name} metrics:"));
        show_series(
            &m,
            &[
                &gauge,
                "lisp_xtr_total{event=\"sent_map_register\"}",
                "lisp_xtr_total{event=\"rx_map_notify\"}",
                "lisp_xtr_map_cache_entries",
            ],
        );
    }
    let m = lab::metrics_text(&t.ns(MS1.ns))?;
    say("map-server metrics:");
    show_series(
        &m,
        &[
            "lisp_map_server_total{event=\"rx_map_register\"}",
            "lisp_map_server_total{event=\"registrations_created\"}",
            "lisp_map_server_total{event=\"tx_map_notify\"}",
            "lisp_map_server_total{event=\"rejected_auth_failed\"}",
        ],
    );
    check_interrupt()?;

    for (family, dst, src, site_b) in [
        ("IPv4", lab::HB_V4, lab::HA_V4, lab::SITE_B[0]),
        ("IPv6", lab::HB_V6, lab::HA_V6, lab::SITE_B[1]),
    ] {
        let (log_a, log_b) = (t.proc(a).log_text().len(), t.proc(b).log_text().len());
        step(&format!(
            "{family}: ping {dst} from hA, the first time: both map-caches miss"
        ));
        say(&format!(
            "xTR A has no entry for {dst} -> ECM Map-Request to {} -> the map-server answers \
             itself (proxy-reply) with xTR B's mapping for {site_b}",
            MS1.addr()
        ));
        say(&format!(
            "xTR B has no entry for {src} (the echo reply) -> the map-server forwards the \
             request to xTR A, which answers B directly"
        ));
        say(
            "so two echoes are lost: the 1st dies at xTR A (A resolves), the 2nd reaches hB but \
             its reply dies at xTR B (B resolves); then replies:",
        );
        let st = t
            .command(HA, &["ping", "-n", "-c", "5", "-i", "0.2", "-W", "1", dst])
            .status()?;
        check_interrupt()?;
        if !st.success() {
            say(&format!(
                "(some pings got no reply; agent logs are in {})",
                workdir.display()
            ));
        }
        say("installed in the XDP map-cache (agent logs):");
        for l in map_cache_log(&mut t, a, log_a) {
            say(&format!("  xTR A: {l}"));
        }
        for l in map_cache_log(&mut t, b, log_b) {
            say(&format!("  xTR B: {l}"));
        }
    }

    step("control-plane metrics after resolution");
    for (name, ns) in [("xTR A", ITR), ("xTR B", ETR)] {
        let m = lab::metrics_text(&t.ns(ns))?;
        say(&format!("{name}:"));
        show_series(
            &m,
            &[
                "lisp_dataplane_events_received_total",
                "lisp_xtr_total{event=\"miss_resolving\"}",
                "lisp_xtr_total{event=\"sent_map_request\"}",
                "lisp_xtr_total{event=\"rx_map_reply\"}",
                "lisp_xtr_total{event=\"rx_map_request\"}",
                "lisp_xtr_total{event=\"sent_map_reply\"}",
                "lisp_xtr_total{event=\"map_cache_installed\"}",
                "lisp_xtr_map_cache_entries",
            ],
        );
    }
    let m = lab::metrics_text(&t.ns(MS1.ns))?;
    say("map-server:");
    show_series(
        &m,
        &[
            "lisp_map_server_total{event=\"rx_ecm_map_request\"}",
            "lisp_map_server_total{event=\"tx_map_reply_proxy\"}",
            "lisp_map_server_total{event=\"tx_ecm_forwarded\"}",
            "lisp_map_server_total{event=\"tx_map_reply_negative\"}",
        ],
    );

    step("steady state: 5 pings each way, no loss expected");
    for (ns, dst) in [(HA, lab::HB_V4), (HA, lab::HB_V6), (HB, lab::HA_V4)] {
        let got = lab::ping(&t, ns, dst, 5)?;
        say(&format!("ping from {ns} to {dst}: {got}/5 replies"));
    }
    check_interrupt()?;
    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);

    for (name, ns) in [("xTR A (itr)", ITR), ("xTR B (etr)", ETR)] {
        step(&format!(
            "{name} XDP counters (lisp_xdp_packets_total, non-zero)"
        ));
        match lab::metrics(&t.ns(ns)) {
            Ok(m) => {
                for (k, v) in m.iter().filter(|(_, v)| **v > 0) {
                    say(&format!("{k:<24} {v}"));
                }
            }
            Err(e) => say(&format!("metrics unavailable: {e:#}")),
        }
    }

    step("control packets the core received (UDP 4342), as tshark decodes them");
    show_control(&pcap)?;
    step("data packets the core received (UDP 4341): outer | LISP | inner (first 12)");
    show_data(&pcap)?;
    check_interrupt()?;

    if !keep {
        // The second story: a VM moving between sites (its own topologies, both torn down).
        step("tearing down the xTR lab; next: VM mobility");
        drop(t);
        crate::lab_mobility::run(&agent, &object)?;
        println!("lab took {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    {
        t.keep = true;
        step("lab left up (--keep). Try:");
        say(&format!(
            "ip netns exec {LAB_PREFIX}{HA} ping {}",
            lab::HB_V6
        ));
        say(&format!(
            "ip netns exec {LAB_PREFIX}{CORE} tcpdump -ni any udp port 4341 or udp port 4342"
        ));
        for ns in [ITR, ETR, MS1.ns] {
            say(&format!(
                "ip netns exec {LAB_PREFIX}{ns} curl -s http://{}/metrics",
                lab::METRICS_ADDR
            ));
        }
        say(&format!(
            "configs and logs: {}/{{map-server,xtr-a,xtr-b}}.{{yaml,log}}",
            workdir.display()
        ));
        say("remove it with: cargo xtask lab --down");
        say("(the VM-mobility story runs without --keep, or alone: cargo xtask lab-mobility)");
    }
    println!("lab took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// tshark filter for "received by the core": a capture on `any` holds every forwarded packet
/// twice (in and out); outgoing ones have packet type 4.
const INCOMING: &str = "sll.pkttype != 4";

fn show_control(pcap: &Path) -> Result<()> {
    let rows = lab::tshark_fields(
        pcap,
        Some(&format!(
            "udp.port == 4342 && !icmp && !icmpv6 && {INCOMING}"
        )),
        &[
            "frame.time_relative",
            "ip.src",
            "ip.dst",
            "lisp.type",
            "_ws.col.Info",
        ],
    )?;
    let who = |a: &str| match a {
        lab::RLOC_A_V4 => "xTR A",
        lab::RLOC_B_V4 => "xTR B",
        x if x == MS1.addr() => "map-server",
        _ => "?",
    };
    for r in &rows {
        let f = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        // The outer addresses come first (an ECM carries inner ones too).
        let src = f(1).split(',').next().unwrap_or("");
        let dst = f(2).split(',').next().unwrap_or("");
        say(&format!(
            "{:>7.3}s {:<10} -> {:<10} {}",
            f(0).parse::<f64>().unwrap_or(0.0),
            who(src),
            who(dst),
            f(4)
        ));
    }
    if rows.is_empty() {
        say("(no control packets captured)");
    }
    let took: Vec<String> = lab::request_reply_ms(pcap, Some(INCOMING))?
        .iter()
        .map(|ms| format!("{ms:.2} ms"))
        .collect();
    say(&format!(
        "ECM Map-Request -> Map-Reply on the core, by nonce: {}",
        if took.is_empty() {
            "(none matched)".to_string()
        } else {
            took.join(", ")
        }
    ));
    Ok(())
}

fn show_data(pcap: &Path) -> Result<()> {
    let rows = lab::tshark_fields(
        pcap,
        Some(&format!("lisp-data && {INCOMING}")),
        &[
            "frame.number",
            "ip.src",
            "ip.dst",
            "ipv6.src",
            "ipv6.dst",
            "udp.srcport",
            "udp.dstport",
            "lisp-data.flags",
            "lisp-data.nonce",
            "_ws.col.Info",
        ],
    )?;
    for r in rows.iter().take(12) {
        let f = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        let split = |s: &'_ str| -> Vec<String> {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        // Fields come per protocol (all IPv4 then all IPv6): work out outer/inner by family.
        let (v4s, v4d, v6s, v6d) = (split(f(1)), split(f(2)), split(f(3)), split(f(4)));
        let outer_v4 = v4s.first().is_some_and(|a| a.starts_with("192.0.2."));
        let pick = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
        let (os, od, is, id) = if outer_v4 {
            if v4s.len() > 1 {
                (pick(&v4s, 0), pick(&v4d, 0), pick(&v4s, 1), pick(&v4d, 1))
            } else {
                (pick(&v4s, 0), pick(&v4d, 0), pick(&v6s, 0), pick(&v6d, 0))
            }
        } else if v6s.len() > 1 {
            (pick(&v6s, 0), pick(&v6d, 0), pick(&v6s, 1), pick(&v6d, 1))
        } else {
            (pick(&v6s, 0), pick(&v6d, 0), pick(&v4s, 0), pick(&v4d, 0))
        };
        let sport = f(5).split(',').next().unwrap_or("");
        let dport = f(6).split(',').next().unwrap_or("");
        say(&format!(
            "#{:<4} {os} -> {od} udp {sport}->{dport} | flags {} nonce {:<8} | {is} -> {id}: {}",
            f(0),
            f(7),
            f(8),
            f(9)
        ));
    }
    if rows.is_empty() {
        say("(no data packets captured)");
    }
    // `-c 1` would count frames read, not shown: select the first one by number.
    if let Some(first) = rows.first().and_then(|r| r.first()) {
        step("the first LISP data packet in detail (tshark -V)");
        let _ = Command::new("tshark")
            .args(["-n", "-r"])
            .arg(pcap)
            .args(lab::TSHARK_PREFS.iter().flat_map(|p| ["-o", p]))
            .args([
                "-Y",
                &format!("frame.number == {first}"),
                "-O",
                "ip,ipv6,udp,lisp-data",
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok(())
}
