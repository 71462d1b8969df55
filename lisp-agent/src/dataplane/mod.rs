//! The XDP data plane seen from userspace: the eBPF object, loading, attaching, map writing.
