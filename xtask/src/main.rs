//! Project tasks: `cargo xtask test | lab [--keep|--down] | bench`.
//!
//! - `test`: installs what is missing (scripts/install-deps.sh), runs every workspace test
//!   (the network-namespace ones need root), then brief fuzz runs if `fuzz/` exists.
//! - `lab`: installs what is missing, brings up host A — xTR A — core — xTR B — host B plus a
//!   map-server/map-resolver in network namespaces, and shows the whole xTR at work:
//!   registration, resolution of the first packets (Map-Request → Map-Reply → XDP map-cache),
//!   traffic, counters and a tshark decode of the core (see lab.rs); then tears it down (also
//!   on Ctrl-C). `--keep` leaves it up; `--down` removes it.
//! - `bench`: the three below, then packets/s of the XDP paths on the lab topology and ns/packet
//!   under test-run.
//! - `bench-control`: map-server registrations/s and Map-Requests/s of the pure core (no root).
//! - `bench-resolve`: Map-Request → Map-Reply latency through the lab's map-server (proxy-reply
//!   and forwarded to the ETR).
//! - `bench-mobility`: a VM's move between sites: first packet → Map-Register, → remote ITR on
//!   the new RLOC (with and without pubsub), loss of a 10 kpps stream (bench_mobility.rs).
//! - `lab-mobility`: the lab's VM-mobility story alone (lab_mobility.rs).

#[path = "../../tests/support/mod.rs"]
mod support;

mod bench;
mod bench_control;
mod bench_mobility;
mod bench_resolve;
mod lab;
mod lab_mobility;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use support::netns;

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

pub(crate) fn cargo() -> Command {
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
                lab::down()
            } else {
                lab::run(keep)
            }
        }
        // The control-plane figures of the pure core need no root: printed first, then
        // resolution through the lab, then the XDP ones.
        Some("bench") => bench_control::run()
            .and_then(|()| bench_resolve::run())
            .and_then(|()| bench::run())
            .and_then(|()| bench_mobility_task()),
        Some("bench-mobility") => bench_mobility_task(),
        Some("lab-mobility") => build_agent().and_then(|(agent, object)| {
            catch_sigint();
            lab_mobility::run(&agent, &object)
        }),
        Some("bench-control") => bench_control::run(),
        Some("bench-resolve") => bench_resolve::run(),
        _ => {
            eprintln!(
                "usage: cargo xtask test | lab [--keep|--down] | lab-mobility | bench | bench-control | \
                 bench-resolve | bench-mobility"
            );
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

/// The mobility figures (root, namespaces): builds the agent, then bench_mobility.
fn bench_mobility_task() -> Result<()> {
    if !netns::is_root() {
        bail!("the mobility bench needs root (network namespaces, XDP)");
    }
    let (agent, object) = build_agent()?;
    catch_sigint();
    bench_mobility::run(&agent, &object)
}

/// Runs scripts/install-deps.sh (idempotent: quick when everything is there), so that `test`,
/// `lab` and `bench` work on a fresh machine.
pub(crate) fn install_deps() -> Result<()> {
    println!("==> scripts/install-deps.sh");
    let ok = Command::new("bash")
        .arg(workspace_root().join("scripts/install-deps.sh"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("scripts/install-deps.sh failed (it needs root and the Debian/crates.io registries)");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- test

fn test() -> Result<()> {
    let root = workspace_root();
    install_deps()?;
    if !netns::is_root() {
        println!(
            "note: not running as root: the network-namespace / XDP tests (e2e_*, \
             agent_cli, xdp_test_run) will fail; run `cargo xtask test` as root"
        );
    }
    println!("==> cargo test --workspace");
    let (tests_ok, passed, failed) = cargo_test()?;

    let fuzz_dir = root.join("fuzz");
    let fuzz = if fuzz_dir.join("Cargo.toml").exists() {
        run_fuzz(&fuzz_dir)?
    } else {
        None
    };
    let fuzz_failed: Vec<&str> = fuzz
        .iter()
        .flatten()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.as_str())
        .collect();
    let fuzz_summary = match &fuzz {
        Some(fuzz) => format!(
            "fuzz {}/{} targets clean{}",
            fuzz.len() - fuzz_failed.len(),
            fuzz.len(),
            if fuzz_failed.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", fuzz_failed.join(", "))
            }
        ),
        None if fuzz_dir.exists() => "fuzz targets not run (no nightly toolchain)".to_string(),
        None => "no fuzz/ directory".to_string(),
    };
    let ok = tests_ok && fuzz_failed.is_empty();
    println!(
        "xtask test: {} — workspace tests {} ({passed} passed, {failed} failed), {}",
        if ok { "PASSED" } else { "FAILED" },
        if tests_ok { "passed" } else { "FAILED" },
        fuzz_summary
    );
    // The plain closing line CI runners look for, alone on its line.
    println!("tests: {passed} passed, {failed} failed");
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
/// if it is missing. `None` when there is no nightly toolchain to run them with.
fn run_fuzz(dir: &Path) -> Result<Option<Vec<(String, bool)>>> {
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
    // cargo-fuzz needs a nightly compiler (sanitizers). rustup cannot download one here, so a
    // machine without it skips fuzzing, saying so, rather than failing every other test.
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"))
        .unwrap_or(false);
    if !nightly {
        println!("note: no rustup nightly toolchain on this machine: fuzz targets not run");
        return Ok(None);
    }
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
        // Start from the real messages of the test captures (testdata/captures).
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
    Ok(Some(results))
}
