//! Project tasks: `cargo xtask test | lab [--keep|--down] | bench`.
//!
//! - `test`: installs what is missing (scripts/install-deps.sh), runs every workspace test
//!   (the network-namespace ones need root), then brief fuzz runs if `fuzz/` exists.
//! - `lab`: brings up host A — xTR A — core — xTR B — host B in network namespaces, starts the
//!   two agents, shows pings across the LISP overlay, the agents' counters and a decode of the
//!   core link, then tears it down (also on Ctrl-C). `--keep` leaves it up; `--down` removes it.
//! - `bench`: packets/s of the XDP paths on the lab topology, and ns/packet under test-run.
//! - `bench-control`: map-server registrations/s and Map-Requests/s of the pure core (no root;
//!   also printed first by `bench`).

#[path = "../../tests/support/mod.rs"]
mod support;

mod bench;
mod bench_control;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use support::lab::{self, CORE, ETR, HA, ITR};
use support::netns::{self, Topology};

/// Namespace prefix of the interactive lab (fixed, so `--down` finds what `--keep` left).
const LAB_PREFIX: &str = "lisplab-";
/// Where `lab --keep` pins its pass-through XDP links (bpffs, outside any `ip netns exec`).
const PIN_DIR: &str = "/sys/fs/bpf";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C only sets a flag: the task stops at its next step and the topology's Drop cleans up.
/// (Children in the foreground process group get the SIGINT too and simply exit.)
fn catch_sigint() {
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

pub(crate) fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the agent (and with it the XDP object); returns (agent binary, object bytes).
pub(crate) fn build_agent() -> Result<(PathBuf, Vec<u8>)> {
    println!("==> cargo build -p lisp-agent");
    let st = cargo().args(["build", "-p", "lisp-agent"]).status()?;
    if !st.success() {
        bail!("building lisp-agent failed (missing tools? run scripts/install-deps.sh)");
    }
    let bin = target_dir().join("debug/lisp-agent");
    // lisp-agent/build.rs builds the object here (or takes LISP_EBPF_OBJECT).
    let obj = std::env::var_os("LISP_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("lisp-ebpf/bpfel-unknown-none/release/lisp-ebpf"));
    let bytes = std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))?;
    Ok((bin, bytes))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lab") => {
            let keep = args.iter().any(|a| a == "--keep");
            if args.iter().any(|a| a == "--down") {
                lab_down()
            } else {
                lab(keep)
            }
        }
        // The control-plane figures need no root: printed first, then the XDP ones.
        Some("bench") => bench_control::run().and_then(|()| bench::run()),
        Some("bench-control") => bench_control::run(),
        _ => {
            eprintln!("usage: cargo xtask test | lab [--keep|--down] | bench | bench-control");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------------------------- test

fn test() -> Result<()> {
    let root = workspace_root();
    println!("==> scripts/install-deps.sh");
    let deps_ok = Command::new("bash")
        .arg(root.join("scripts/install-deps.sh"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !deps_ok {
        bail!("scripts/install-deps.sh failed; nothing tested");
    }
    if !netns::is_root() {
        println!(
            "note: not running as root: the network-namespace / XDP tests (e2e_dataplane, \
             BPF_PROG_TEST_RUN) will fail; run `cargo xtask test` as root"
        );
    }
    println!("==> cargo test --workspace");
    let (tests_ok, passed, failed) = cargo_test()?;

    let mut fuzz = Vec::new();
    let fuzz_dir = root.join("fuzz");
    if fuzz_dir.join("Cargo.toml").exists() {
        fuzz = run_fuzz(&fuzz_dir)?;
    }
    let fuzz_failed: Vec<&str> = fuzz
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.as_str())
        .collect();
    let fuzz_summary = if fuzz_dir.exists() {
        format!(
            "fuzz {}/{} targets clean{}",
            fuzz.len() - fuzz_failed.len(),
            fuzz.len(),
            if fuzz_failed.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", fuzz_failed.join(", "))
            }
        )
    } else {
        "no fuzz/ directory".to_string()
    };
    let ok = tests_ok && fuzz_failed.is_empty();
    println!(
        "xtask test: {} — workspace tests {} ({passed} passed, {failed} failed), {}",
        if ok { "PASSED" } else { "FAILED" },
        if tests_ok { "passed" } else { "FAILED" },
        fuzz_summary
    );
    if !ok {
        bail!("some tests failed");
    }
    Ok(())
}

/// `cargo test --workspace`, its output passed through and its "test result:" lines summed.
/// Returns (success, tests passed, tests failed).
fn cargo_test() -> Result<(bool, u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cargo()
        .args(["test", "--workspace"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            // "test result: ok. 110 passed; 0 failed; 0 ignored; ..."
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split([';', '.']) {
                    let mut w = part.split_whitespace();
                    match (w.next().and_then(|n| n.parse::<u64>().ok()), w.next()) {
                        (Some(n), Some("passed")) => passed += n,
                        (Some(n), Some("failed")) => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    Ok((child.wait()?.success(), passed, failed))
}

/// `cargo +nightly fuzz run <t> -- -max_total_time=10` for every target; installs cargo-fuzz
/// if it is missing.
fn run_fuzz(dir: &Path) -> Result<Vec<(String, bool)>> {
    // `cargo +nightly` from inside `cargo xtask`: drop what the outer cargo/rustup exported, or
    // the inner cargo would use the outer (stable) toolchain and compiler.
    let fuzz_cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args).current_dir(dir);
        for v in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTDOC",
            "CARGO",
            "RUSTC_WRAPPER",
        ] {
            c.env_remove(v);
        }
        c
    };
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        println!("==> cargo install cargo-fuzz");
        if !Command::new("cargo")
            .args(["install", "--locked", "cargo-fuzz"])
            .status()?
            .success()
        {
            bail!("could not install cargo-fuzz");
        }
    }
    if dir.join("seed.sh").exists() {
        // Start from the real messages of the shared captures where they are available.
        let _ = Command::new("sh").arg(dir.join("seed.sh")).status();
    }
    let out = fuzz_cargo(&["+nightly", "fuzz", "list"]).output()?;
    if !out.status.success() {
        bail!(
            "cargo +nightly fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut results = Vec::new();
    for t in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        println!("==> cargo +nightly fuzz run {t} -- -max_total_time=10");
        let ok = fuzz_cargo(&["+nightly", "fuzz", "run", t, "--", "-max_total_time=10"])
            .status()?
            .success();
        results.push((t.to_string(), ok));
    }
    Ok(results)
}

// ------------------------------------------------------------------------------------- lab

fn lab_down() -> Result<()> {
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

fn lab(keep: bool) -> Result<()> {
    if !netns::is_root() {
        bail!("the lab needs root (network namespaces, XDP)");
    }
    let (agent, object) = build_agent()?;
    catch_sigint();
    if netns::list_netns()
        .iter()
        .any(|n| n.starts_with(LAB_PREFIX))
    {
        println!("==> removing the previous lab");
        lab_down()?;
    }
    let workdir = std::env::temp_dir().join("lisp-lab");
    let mut t = Topology::new(LAB_PREFIX, &workdir)?;
    println!(
        "==> topology: ha — itr (xTR A) — core — etr (xTR B) — hb   [namespaces {LAB_PREFIX}*]"
    );
    lab::build(&mut t)?;
    if keep && !Path::new(PIN_DIR).join(".").exists() {
        bail!("--keep needs a bpffs at {PIN_DIR} (scripts/install-deps.sh mounts it)");
    }
    let _pass = lab::attach_pass(&t, &object, keep.then_some(Path::new(PIN_DIR)))?;
    check_interrupt()?;

    println!("==> without LISP: hA cannot reach hB (the core has no EID routes)");
    let lost = lab::ping(&t, HA, lab::HB_V4, 1)?;
    println!(
        "    ping {} -> {}: {lost}/1 replies",
        lab::HA_V4,
        lab::HB_V4
    );

    println!(
        "==> starting the agents (configs in {}): A encapsulates to B's IPv4 RLOC with the N bit, \
         B to A's IPv6 RLOC without it (data-nonce: false)",
        workdir.display()
    );
    let (a, b) = lab::start_agents(&mut t, &agent, &lab::AgentOptions::default())?;
    println!(
        "    xTR A pid {}, xTR B pid {}",
        t.proc(a).pid(),
        t.proc(b).pid()
    );
    check_interrupt()?;

    let pcap = workdir.join("core-itr0.pcap");
    let cap = lab::start_capture(&mut t, CORE, "itr0", &pcap)?;
    for dst in [lab::HB_V4, lab::HB_V6] {
        println!("==> ping {dst} from hA (EID to EID, across the LISP overlay)");
        let st = t
            .command(HA, &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", dst])
            .status()?;
        check_interrupt()?;
        if !st.success() {
            println!("    (ping failed; agent logs are in {})", workdir.display());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    t.stop(cap);

    for (name, ns) in [("xTR A (itr)", ITR), ("xTR B (etr)", ETR)] {
        println!("==> {name} counters (lisp_xdp_packets_total, non-zero)");
        match lab::metrics(&t.ns(ns)) {
            Ok(m) => {
                for (k, v) in m.iter().filter(|(_, v)| **v > 0) {
                    println!("    {k:<24} {v}");
                }
            }
            Err(e) => println!("    metrics unavailable: {e:#}"),
        }
    }

    println!("==> core link (core/itr0) as tshark decodes it: outer | LISP | inner");
    let rows = lab::tshark_fields(
        &pcap,
        Some("lisp-data"),
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
        // Fields come per protocol (all IPv4 then all IPv6): work out outer/inner by family.
        let (v4s, v4d): (Vec<&str>, Vec<&str>) = (
            f(1).split(',').filter(|s| !s.is_empty()).collect(),
            f(2).split(',').filter(|s| !s.is_empty()).collect(),
        );
        let (v6s, v6d): (Vec<&str>, Vec<&str>) = (
            f(3).split(',').filter(|s| !s.is_empty()).collect(),
            f(4).split(',').filter(|s| !s.is_empty()).collect(),
        );
        let outer_v4 = v4s.first().is_some_and(|a| a.starts_with("192.0.2."));
        let (os, od, is, id) = if outer_v4 {
            let (is, id) = if v4s.len() > 1 {
                (v4s[1], v4d[1])
            } else {
                (v6s[0], v6d[0])
            };
            (v4s[0], v4d[0], is, id)
        } else {
            let (is, id) = if v6s.len() > 1 {
                (v6s[1], v6d[1])
            } else {
                (v4s[0], v4d[0])
            };
            (v6s[0], v6d[0], is, id)
        };
        let sport = f(5).split(',').next().unwrap_or("");
        let dport = f(6).split(',').next().unwrap_or("");
        println!(
            "    #{:<3} {os} -> {od} udp {sport}->{dport} | flags {} nonce {:<8} | {is} -> {id}: {}",
            f(0),
            f(7),
            f(8),
            f(9)
        );
    }
    println!("==> first LISP frame in detail (tshark -V)");
    let _ = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(lab::TSHARK_PREFS.iter().flat_map(|p| ["-o", p]))
        .args(["-Y", "lisp-data", "-c", "1", "-O", "ip,ipv6,udp,lisp-data"])
        .stderr(std::process::Stdio::null())
        .status();
    check_interrupt()?;

    if keep {
        t.keep = true;
        println!("==> lab left up (--keep). Try:");
        println!("    ip netns exec {}{HA} ping {}", LAB_PREFIX, lab::HB_V6);
        println!(
            "    ip netns exec {}{CORE} tcpdump -ni itr0 udp port 4341",
            LAB_PREFIX
        );
        println!(
            "    ip netns exec {}{ITR} curl -s http://{}/metrics",
            LAB_PREFIX,
            lab::METRICS_ADDR
        );
        println!(
            "    agent logs: {}/agent-a.log, agent-b.log",
            workdir.display()
        );
        println!("    remove it with: cargo xtask lab --down");
    } else {
        println!("==> tearing down");
    }
    Ok(())
}
