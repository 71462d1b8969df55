//! Sans-IO protocol core: pure functions and state machines. No sockets, clocks, aya or netlink
//! here; time is an argument. The shell (`crate::shell`, `crate::dataplane`) carries out what the
//! core decides.

pub mod action;
pub mod hsrp;
pub mod map_cache;
pub mod map_server;
pub mod node;
pub mod nonce;
pub mod prefix_lengths;
pub mod time;
pub mod xtr;
