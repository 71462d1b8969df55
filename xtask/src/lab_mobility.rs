//! The lab's second story (`cargo xtask lab`, after the xTR one; alone: `cargo xtask
//! lab-mobility`): a VM moves between data centres and the traffic follows it, in both modes.
//!
//! ```text
//!        xa (xTR A) ──── core ──── xb (xTR B)        ms (map-server) and ri (remote ITR) off
//!        [xa2]            |         |                 the core; rh streams UDP to the VM
//!   lana ═══ LAN extension (extended-subnet only) ═══ lanb
//!     vm (198.51.100.10, 2001:db8:1::10) moves from lana to lanb
//! ```
//!
//! Steps, each printed with what it shows: the VM at home in site A, detected by xTR A from its
//! first packets (registered, host route, group notify learned by site A's second xTR in the
//! multihomed variant); the remote host streaming to it; the VM's cable re-plugged into site
//! B's LAN; site B's detection, the old router's "moved away" and SMRs, the remote ITR
//! re-pointed; then tshark's decode of every control message on the core and on site B's LAN
//! (the group Map-Notify), and the stream's loss and convergence time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::check_interrupt;
use crate::support::lab;
use crate::support::mobility::{self as mob, Mode, Options, Site};
use crate::support::netns::Topology;
use crate::support::stream::Stream;

fn step(s: &str) {
    println!("\n==> {s}");
}

fn say(s: &str) {
    println!("    {s}");
}

/// The mobility lines an agent logged since byte `from` (the logger's prefix dropped).
fn mobility_log(t: &mut Topology, h: usize, from: usize, eid: &str) -> Vec<String> {
    let log = t.proc(h).log_text();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| {
            (l.contains("dynamic-eid ") && l.contains(eid)) || l.contains(&format!("]{eid}/"))
        })
        .map(|l| l.find("] ").map_or(l, |i| &l[i + 2..]).to_string())
        .collect()
}

fn wait_log(t: &mut Topology, h: usize, from: usize, needles: &[&str]) -> Result<bool> {
    Topology::wait_for(Duration::from_secs(10), || {
        check_interrupt()?;
        let log = t.proc(h).log_text();
        Ok(log
            .get(from..)
            .unwrap_or("")
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n))))
    })
}

fn show_mobility_metrics(t: &Topology, ns: &str, name: &str) {
    let Ok(m) = lab::metrics_text(&t.ns(ns)) else {
        say(&format!("{name}: metrics unavailable"));
        return;
    };
    let mut parts = Vec::new();
    for (label, v) in lab::nonzero_series(&m, "lisp_mobility_total") {
        parts.push(format!("{label}={v}"));
    }
    for (label, v) in lab::nonzero_series(&m, "lisp_dynamic_eids") {
        parts.push(format!("eids[{label}]={v}"));
    }
    say(&format!(
        "{name:<10} {}",
        if parts.is_empty() {
            "(no mobility counters)".to_string()
        } else {
            parts.join(" ")
        }
    ));
}

/// Both modes, one after the other.
pub fn run(agent: &Path, object: &[u8]) -> Result<()> {
    for mode in [Mode::ExtendedSubnet, Mode::AcrossSubnet] {
        story(agent, object, mode)?;
        check_interrupt()?;
    }
    Ok(())
}

fn story(agent: &Path, object: &[u8], mode: Mode) -> Result<()> {
    let multihomed = mode == Mode::ExtendedSubnet;
    let prefix = format!(
        "{}m{}-",
        crate::lab::LAB_PREFIX,
        if multihomed { "e" } else { "x" }
    );
    let workdir = std::env::temp_dir().join(format!("lisp-lab-mobility-{}", mode.name()));
    let _ = std::fs::remove_dir_all(&workdir);
    let mut t = Topology::new(&prefix, &workdir)?;
    step(&format!(
        "VM mobility, {} mode [namespaces {prefix}*]{}",
        mode.name(),
        if multihomed {
            ", site A multihomed (xTRs A and A2 share the map-notify-group)"
        } else {
            ""
        }
    ));
    match mode {
        Mode::ExtendedSubnet => say(&format!(
            "both sites carry {} / {}, joined by a LAN extension (a veth between the LAN bridges)",
            mob::HOME_V4,
            mob::HOME_V6
        )),
        Mode::AcrossSubnet => say(&format!(
            "site B's LAN is {} / {}: the VM keeps its address from site A's {} anyway \
             (site B's SVI answers ARP by the kernel's proxy-ARP until the first-hop gateway \
             issue lands)",
            mob::B_SUBNET_V4,
            mob::B_SUBNET_V6,
            mob::HOME_V4
        )),
    }
    say(&format!(
        "dynamic-EID map {}: {} and {} -> the site's RLOCs, map-notify-group {}",
        mob::MAP_NAME,
        mob::DYN_V4,
        mob::DYN_V6,
        mob::GROUP
    ));
    let mut m = mob::build(&mut t, Options { mode, multihomed })?;
    let _pass = mob::attach_pass(&t, &m, object)?;
    let core_pcap = workdir.join("core.pcap");
    let lanb_pcap = workdir.join("lanb-to-xb.pcap");
    let cap_core = lab::start_capture(&mut t, mob::CORE, "any", &core_pcap)?;
    // The LAN port facing xTR B: the VM's frames to it, and the group notifies it sends.
    let cap_lan = lab::start_capture(&mut t, mob::LAN_B, mob::XB, &lanb_pcap)?;

    let o = mob::AgentOptions {
        register_interval_s: 30,
        log_level: "info",
        ..Default::default()
    };
    let a = match mob::start_agents(&mut t, &m, agent, &o) {
        Ok(a) => a,
        // A build whose configuration has no mobility yet refuses the dynamic-EID maps: say
        // so and skip the story rather than fail the whole lab.
        Err(e) => {
            say(&format!(
                "the agents did not start, so no mobility story: {e:#}"
            ));
            return Ok(());
        }
    };
    say(&format!(
        "agents up (configs and logs in {}): map-server, {}, remote ITR",
        workdir.display(),
        m.xtrs().join(", ")
    ));
    let xa = a.xtr(mob::XA);
    if !wait_log(&mut t, xa, 0, &["registered with map-server"])? {
        bail!(
            "xTR A did not register; its log:\n{}",
            t.proc(xa).log_text()
        );
    }
    check_interrupt()?;

    step("the VM at home in site A; the remote host streams to it (1000 datagrams/s each family)");
    say("the VM answers with a stream of its own (100/s): its first packet is its detection");
    let epoch = Instant::now();
    let fwd4 = Stream::start(
        &t,
        (mob::RH, mob::RH_V4),
        (mob::VM, mob::VM_V4),
        41004,
        1000,
        epoch,
    )?;
    let fwd6 = Stream::start(
        &t,
        (mob::RH, mob::RH_V6),
        (mob::VM, mob::VM_V6),
        41006,
        1000,
        epoch,
    )?;
    let rev4 = Stream::start(
        &t,
        (mob::VM, mob::VM_V4),
        (mob::RH, mob::RH_V4),
        42004,
        100,
        epoch,
    )?;
    let rev6 = Stream::start(
        &t,
        (mob::VM, mob::VM_V6),
        (mob::RH, mob::RH_V6),
        42006,
        100,
        epoch,
    )?;
    let detected = wait_log(&mut t, xa, 0, &["dynamic-eid", mob::VM_V6, "detected"])?;
    std::thread::sleep(Duration::from_secs(1));
    for (x, h) in a.xtrs.clone() {
        for eid in [mob::VM_V4, mob::VM_V6] {
            for l in mobility_log(&mut t, h, 0, eid) {
                say(&format!("{x:<4} {l}"));
            }
        }
    }
    if !detected {
        say("(xTR A has not detected the VM: is mobility in this build?)");
    }
    for eid in [mob::VM_V4, mob::VM_V6] {
        let r = mob::host_route(&t, mob::XA, eid)?;
        say(&format!(
            "xTR A host route for {eid}: {}",
            r.unwrap_or_else(|| "(none)".into())
        ));
    }
    say(&format!(
        "stream so far: {}/{} IPv4 and {}/{} IPv6 datagrams arrived at the VM",
        fwd4.received(),
        fwd4.sent(),
        fwd6.received(),
        fwd6.sent()
    ));
    check_interrupt()?;

    step("the VM moves to site B: its cable is re-plugged into site B's LAN, same IP and MAC");
    let (from_a, from_b, from_ri) = (
        t.proc(xa).log_text().len(),
        t.proc(a.xtr(mob::XB)).log_text().len(),
        t.proc(a.ri).log_text().len(),
    );
    let since = mob::epoch_now();
    let unplug = fwd4.now();
    m.move_vm(&t, Site::B)?;
    let plug = fwd4.now();
    say(&format!(
        "re-plugged in {:.1} ms",
        (plug - unplug).as_secs_f64() * 1e3
    ));
    let repointed = wait_log(
        &mut t,
        a.ri,
        from_ri,
        &[&format!("]{}/32", mob::VM_V4), mob::RLOC_B],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let xb = a.xtr(mob::XB);
    for (name, h, from) in [
        ("xb", xb, from_b),
        ("xa", xa, from_a),
        ("ri", a.ri, from_ri),
    ] {
        for eid in [mob::VM_V4, mob::VM_V6] {
            for l in mobility_log(&mut t, h, from, eid) {
                say(&format!("{name:<4} {l}"));
            }
        }
    }
    if !repointed {
        say("(the remote ITR has not been re-pointed to xTR B within 10 s)");
    }
    for x in [mob::XA, mob::XB] {
        for eid in [mob::VM_V4, mob::VM_V6] {
            let r = mob::host_route(&t, x, eid)?;
            say(&format!(
                "{x} host route for {eid}: {}",
                r.unwrap_or_else(|| "(none)".into())
            ));
        }
    }
    step("mobility counters (lisp_mobility_total, lisp_dynamic_eids)");
    for (x, _) in a.xtrs.clone() {
        show_mobility_metrics(&t, x, x);
    }
    show_mobility_metrics(&t, mob::RI, "remote ITR");

    let reports = [fwd4, fwd6].map(|s| s.stop());
    let _ = [rev4, rev6].map(|s| s.stop());
    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap_core);
    t.stop(cap_lan);

    step("control messages on the core after the move (tshark; time from the re-plug)");
    for l in mob::control_lines(&core_pcap, since, true)?.iter().take(40) {
        say(l);
    }
    step("control messages on site B's LAN after the move (the group Map-Notify, TTL 1)");
    for l in mob::control_lines(&lanb_pcap, since, false)?
        .iter()
        .take(20)
    {
        say(l);
    }

    step("the stream through the move");
    for (fam, r) in ["IPv4", "IPv6"].iter().zip(&reports) {
        let Ok(r) = r else {
            say(&format!("{fam}: stream failed"));
            continue;
        };
        let lost_after_plug = r.lost_sent_after(plug).len();
        let lost_in_move = r
            .lost()
            .iter()
            .filter(|&&s| r.send_times[s as usize] >= unplug)
            .count();
        say(&format!("{fam}: {}", r.summary()));
        say(&format!(
            "{fam}: lost during the move {lost_in_move} (of which sent after the re-plug: \
             {lost_after_plug})"
        ));
    }
    for eid in [mob::VM_V4, mob::VM_V6] {
        let tl = mob::move_timeline(&lanb_pcap, &core_pcap, eid, mob::RLOC_B, mob::RLOC_A, since)?;
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        say(&format!(
            "{eid}: first packet at site B -> Map-Register {}, -> SMR from xTR A {}, -> remote \
             ITR encapsulating to xTR B {}",
            f(tl.register_ms()),
            f(tl.smr_ms()),
            f(tl.convergence_ms())
        ));
    }
    step(&format!("tearing down the {} lab", mode.name()));
    Ok(())
}
