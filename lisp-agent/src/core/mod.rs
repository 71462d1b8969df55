//! Sans-IO protocol core: pure functions and state machines. No sockets, clocks, aya or netlink
//! here; time is an argument. The shell (`crate::shell`, `crate::dataplane`) carries out what the
//! core decides.

pub mod action;
pub mod hsrp;
pub mod map_cache;
pub mod map_server;
pub mod mobility;
pub mod next_hop;
pub mod node;
pub mod nonce;
pub mod prefix_lengths;
/// The multi-node simulation harness (also for integration tests and benches: feature `sim`).
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod time;
pub mod xtr;
