//! The slow path: packets the ITR must encapsulate but XDP cannot (too big for the path and not
//! to be answered with ICMP — IPv4 without DF, ICMP errors, a path MTU below the inner family's
//! minimum —, or no headroom). XDP cannot fragment; the agent can: the frame goes to it through
//! the SLOW_PATH perf array (record + frame bytes), and it sends the LISP datagram on a UDP
//! socket with path-MTU discovery off, so the kernel fragments the outer packet (RFC 9300
//! §7.1). Chosen over AF_XDP because these packets are rare and the perf array needs no
//! queue/UMEM setup per interface; a full perf buffer drops the packet (counted).

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_CPU, xdp_action},
    helpers::generated::bpf_perf_event_output,
    programs::XdpContext,
};
use lisp_common::maps::SlowPathRecord;

use crate::{Counter, SLOW_PATH};

/// Largest frame handed over: a perf sample's size field is 16 bits.
const MAX_FRAME: usize = 65535 - 64 - core::mem::size_of::<SlowPathRecord>();

/// Hands the frame (as it arrived) and `slow` to the agent; the packet is dropped here either way.
#[inline(never)]
pub fn hand_over(ctx: &XdpContext, slow: &mut SlowPathRecord) -> (u32, Counter) {
    let len = ctx.data_end() - ctx.data();
    if len > MAX_FRAME {
        return (xdp_action::XDP_DROP, Counter::SlowPathLost);
    }
    slow.frame_len = len as u32;
    // The upper 32 bits of the flags: how many bytes of the packet the kernel appends.
    let flags = ((len as u64) << 32) | BPF_F_CURRENT_CPU;
    // SAFETY: SLOW_PATH is the map definition (PerfEventArray is a transparent wrapper of it,
    // which is what aya's own `output` passes); `slow` is valid for its size.
    let rc = unsafe {
        bpf_perf_event_output(
            ctx.as_ptr(),
            &SLOW_PATH as *const _ as *mut _,
            flags,
            slow as *mut SlowPathRecord as *mut _,
            core::mem::size_of::<SlowPathRecord>() as u64,
        )
    };
    if rc != 0 {
        // No reader on this CPU, or its buffer is full.
        return (xdp_action::XDP_DROP, Counter::SlowPathLost);
    }
    (xdp_action::XDP_DROP, Counter::SlowPath)
}
