//! `cargo xtask bench-control` (also the first part of `cargo xtask bench`): control-plane
//! figures of the pure sans-IO core, no root needed — Map-Server registrations/s with
//! HMAC-SHA-256 on one core and Map-Requests/s. The measurement itself lives in
//! `lisp-agent/benches/map_server.rs` (it needs lisp-agent, which xtask does not link).

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    println!("==> control plane: cargo bench -p lisp-agent --bench map_server");
    let st = crate::cargo()
        .args(["bench", "-p", "lisp-agent", "--bench", "map_server"])
        .status()?;
    if !st.success() {
        bail!("the map-server bench failed");
    }
    Ok(())
}
