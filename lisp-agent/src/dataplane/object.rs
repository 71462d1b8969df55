//! The compiled XDP object, built from `lisp-ebpf/` by `build.rs` and embedded in the binary.

/// The eBPF ELF object with programs [`lisp_common::maps::PROG_XDP_LISP`] and
/// [`lisp_common::maps::PROG_XDP_PASS`], aligned to 8 bytes as the ELF parser requires.
pub fn bytecode() -> &'static [u8] {
    static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LISP_EBPF_OBJECT"));
    OBJECT
}
