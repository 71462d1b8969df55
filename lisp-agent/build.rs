//! Builds the XDP object (`lisp-ebpf`) from source on every build of lisp-agent.
//!
//! The eBPF crate needs `-Z build-std=core` for `bpfel-unknown-none`, hence core's sources; the
//! rustup toolchains on the target machines have none, so it is built with Debian's Rust
//! (/usr/bin/cargo, /usr/bin/rustc, rust-web-src) and bpf-linker (see
//! the project notes on the eBPF toolchain; scripts/install-deps.sh installs it). `RUSTC_BOOTSTRAP=1` unlocks `-Z` on that stable compiler.
//!
//! The object goes to a fixed directory under the workspace `target/` (not OUT_DIR) so that
//! `cargo build`, `cargo test` and `cargo clippy` share one eBPF build instead of three.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";
const HINT: &str = "run scripts/install-deps.sh";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root").to_path_buf();
    let ebpf_dir = workspace.join("lisp-ebpf");
    let common_dir = workspace.join("lisp-common");

    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=LISP_EBPF_OBJECT");

    // Escape hatch for machines that build the object elsewhere (e.g. `cargo xtask`): use it as is.
    if let Ok(obj) = env::var("LISP_EBPF_OBJECT") {
        println!("cargo:rustc-env=LISP_EBPF_OBJECT={obj}");
        return;
    }

    let bpf_linker = find_bpf_linker();
    for (what, path) in [
        ("Debian cargo", DEBIAN_CARGO),
        ("Debian rustc", DEBIAN_RUSTC),
    ] {
        if !Path::new(path).exists() {
            fail(&format!("{what} ({path}) is missing: {HINT}"));
        }
    }
    if !Path::new(RUST_SRC).exists() {
        fail(&format!(
            "core's sources ({RUST_SRC}, package rust-web-src) are missing: {HINT}"
        ));
    }
    let Some(bpf_linker) = bpf_linker else {
        fail(&format!(
            "bpf-linker is not on PATH nor in ~/.cargo/bin: {HINT}"
        ));
    };

    let target_dir = workspace.join("target").join("lisp-ebpf");
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = bpf_linker.parent() {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(env::split_paths(&path));
        path = env::join_paths(dirs).expect("PATH");
    }

    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--release",
            "--target-dir",
        ])
        .arg(&target_dir);
    // What cargo and rustup hand to build scripts would otherwise leak into the inner build and
    // point it at the userspace toolchain, its flags, or our own target directory.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_")
            || key.starts_with("RUSTUP_")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key.starts_with("DEP_")
            || matches!(
                key,
                "CARGO"
                    | "RUSTFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            )
        {
            cmd.env_remove(key);
        }
    }
    // Keep the registry cache of the user (CARGO_HOME was removed above with CARGO_*).
    if let Some(home) = env::var_os("CARGO_HOME") {
        cmd.env("CARGO_HOME", home);
    }
    cmd.env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf");

    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {DEBIAN_CARGO}: {e}; {HINT}")));
    if !status.success() {
        fail(&format!(
            "building lisp-ebpf failed ({status}); see the output above"
        ));
    }
    let obj = target_dir.join("bpfel-unknown-none/release/lisp-ebpf");
    if !obj.exists() {
        fail(&format!("lisp-ebpf built but {} is missing", obj.display()));
    }
    println!("cargo:rustc-env=LISP_EBPF_OBJECT={}", obj.display());
}

fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

fn fail(msg: &str) -> ! {
    println!("cargo:warning=lisp-ebpf: {msg}");
    eprintln!("error: lisp-ebpf: {msg}");
    std::process::exit(1);
}
