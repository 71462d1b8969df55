//! What the tshark tests share (lisp-common's HSRP one and the workspace's control-message one,
//! which includes this file by path): write frames to a pcap, run `tshark -r` on it, and skip
//! only when asked to. Each test builds its own frames (their TTLs and headers differ).

use std::path::{Path, PathBuf};
use std::process::Command;

/// True if `tshark` runs. When it does not, the test may only be skipped on purpose
/// (`LISP_SKIP_TSHARK=1`): a missing decoder must not pass silently.
pub fn tshark_available() -> bool {
    if Command::new("tshark").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("LISP_SKIP_TSHARK").is_some(),
        "tshark is not installed (scripts/install-deps.sh), set LISP_SKIP_TSHARK=1 to skip"
    );
    false
}

/// RFC 791 header checksum (one's complement of the one's-complement sum of 16-bit words).
pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A classic pcap (microsecond, little-endian) of Ethernet frames, one second apart.
pub fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes()); // thiszone
    out.extend(0u32.to_le_bytes()); // sigfigs
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // Ethernet
    for (i, f) in frames.iter().enumerate() {
        out.extend((1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    out
}

/// Removes the pcap also when the test fails.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `tshark -r file args…`: its stdout; a failing tshark fails the test with its stderr.
pub fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
