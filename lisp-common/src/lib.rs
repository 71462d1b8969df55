//! Types shared by the XDP program (`lisp-ebpf`, no_std, no alloc) and the agent.
//!
//! * [`maps`]: names, keys, values and event records of the BPF maps.
//! * [`prefix`]: the one IP / EID prefix type of the workspace.
//! * [`wire`]: views over byte buffers and parsed representations of LISP headers.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod maps;
pub mod prefix;
pub mod wire;
