//! lisp-agent: a LISP xTR (and map-server) whose data plane runs in XDP.
//!
//! The rule between modules: `core` is sans-IO (no sockets, clocks, aya or netlink) and never
//! imports `dataplane` or the I/O shell; arrows point down: `main → shell → core → lisp-common`.

pub mod config;
pub mod core;
pub mod dataplane;
pub mod shell;
