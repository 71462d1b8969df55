//! Bench-only XDP programs for `cargo xtask bench` (never attached by the agent):
//!
//! - `bench_gen`: a traffic generator for BPF_PROG_TEST_RUN with live frames. It writes the frame
//!   template from [`BENCH_GEN`] over the packet on *every* run (live-frame pages are recycled
//!   without being re-initialised, and the routers downstream rewrite them in place) and returns
//!   XDP_TX, so each run sends one frame out of the test-run's ingress interface.
//! - `bench_fwd`: the reference a LISP router is compared with: a plain XDP IPv4/IPv6 forwarder
//!   (fib lookup, TTL decrement, MAC rewrite, redirect), everything it cannot forward passed.
//! - `bench_count`: counts and drops what arrives at the receiving host, so that the measured
//!   rate is what the path under test delivered, not what the receiver's stack can absorb.
//!
//! The layout of [`GenConfig`] is mirrored in xtask/src/bench.rs (bench-only, so it is not part
//! of the lisp_common map contract).

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Largest frame the generator writes.
pub const GEN_FRAME_MAX: usize = 192;
/// [`GenConfig::flags`]: add `seq % span` to the IPv4 destination (offset 30) and recompute the
/// IPv4 header checksum (offset 14), so that consecutive frames go to `span` different hosts.
pub const GEN_VARY_DST4: u32 = 1;
/// [`GenConfig::flags`]: add `seq % span` to the last 32 bits of the IPv6 destination (offset
/// 50); no IPv4 checksum to fix (the frames' UDP checksum is zero and nothing on the path checks it).
pub const GEN_VARY_DST6: u32 = 2;

/// Value of [`BENCH_GEN`] (index 0).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// Frame length; the test-run `data_in` must be exactly this long.
    pub len: u32,
    pub flags: u32,
    pub span: u32,
    pub _pad: u32,
    pub frame: [u8; GEN_FRAME_MAX],
}

#[map(name = "BENCH_GEN")]
static BENCH_GEN: Array<GenConfig> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_SEQ")]
static BENCH_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// Index 0: frames received by `bench_count`; index 1: frames `bench_fwd` forwarded.
#[map(name = "BENCH_COUNT")]
static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

const ETH: usize = 14;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[inline(always)]
fn bump(i: u32) {
    if let Some(p) = BENCH_COUNT.get_ptr_mut(i) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = BENCH_GEN.get_ptr(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: map value, valid for this run.
    let cfg = unsafe { &*cfg };
    let start = ctx.data();
    let end = ctx.data_end();
    let len = cfg.len as usize;
    let mut i = 0;
    while i < GEN_FRAME_MAX / 8 {
        let off = i * 8;
        if off >= len || start + off + 8 > end {
            break;
        }
        // SAFETY: bounds checked against data_end just above.
        unsafe {
            let src = (cfg.frame.as_ptr() as *const u64).add(i).read_unaligned();
            ((start + off) as *mut u64).write_unaligned(src);
        }
        i += 1;
    }
    let flags = cfg.flags;
    // NonZero: `%` by it has no division-by-zero panic path (which the verifier would reject).
    let Some(span) = core::num::NonZeroU32::new(cfg.span) else {
        return xdp_action::XDP_TX;
    };
    if flags & (GEN_VARY_DST4 | GEN_VARY_DST6) == 0 {
        return xdp_action::XDP_TX;
    }
    let seq = match BENCH_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe {
            let s = *p;
            *p = s.wrapping_add(1);
            s
        },
        None => 0,
    };
    if flags & GEN_VARY_DST6 != 0 && start + ETH + 40 <= end {
        // SAFETY: 40 bytes of IPv6 header checked.
        unsafe {
            let dst = (start + ETH + 36) as *mut u32;
            let d = u32::from_be(dst.read_unaligned()).wrapping_add(seq % span);
            dst.write_unaligned(d.to_be());
        }
    }
    if flags & GEN_VARY_DST4 != 0 && start + ETH + 20 <= end {
        let h = (start + ETH) as *mut u8;
        // SAFETY: 20 bytes of IPv4 header checked above.
        unsafe {
            let dst = h.add(16) as *mut u32;
            let d = u32::from_be(dst.read_unaligned()).wrapping_add(seq % span);
            dst.write_unaligned(d.to_be());
            (h.add(10) as *mut u16).write_unaligned(0);
            let mut sum: u32 = 0;
            let mut w = 0;
            while w < 10 {
                sum += u16::from_be((h.add(w * 2) as *const u16).read_unaligned()) as u32;
                w += 1;
            }
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            (h.add(10) as *mut u16).write_unaligned((!(sum as u16)).to_be());
        }
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_count(_ctx: XdpContext) -> u32 {
    bump(0);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn be_words(p: *const u8) -> [u32; 4] {
    // SAFETY: callers checked 16 readable bytes.
    unsafe {
        [
            (p as *const u32).read_unaligned(),
            (p.add(4) as *const u32).read_unaligned(),
            (p.add(8) as *const u32).read_unaligned(),
            (p.add(12) as *const u32).read_unaligned(),
        ]
    }
}

#[xdp]
pub fn bench_fwd(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH > end {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut u8;
    // SAFETY: 14 bytes checked.
    let proto = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
    // SAFETY: zeroed is a valid bpf_fib_lookup.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.ifindex = ctx.ingress_ifindex() as u32;
    let h = (start + ETH) as *mut u8;
    match proto {
        0x0800 => {
            if start + ETH + 20 > end {
                return xdp_action::XDP_PASS;
            }
            // SAFETY: 20 bytes of IPv4 header checked.
            unsafe {
                if *h.add(8) <= 1 {
                    return xdp_action::XDP_PASS;
                }
                fib.family = AF_INET;
                fib.__bindgen_anon_2.tos = *h.add(1);
                fib.l4_protocol = *h.add(9);
                fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([*h.add(2), *h.add(3)]);
                fib.__bindgen_anon_3.ipv4_src = (h.add(12) as *const u32).read_unaligned();
                fib.__bindgen_anon_4.ipv4_dst = (h.add(16) as *const u32).read_unaligned();
            }
        }
        0x86dd => {
            if start + ETH + 40 > end {
                return xdp_action::XDP_PASS;
            }
            // SAFETY: 40 bytes of IPv6 header checked.
            unsafe {
                if *h.add(7) <= 1 {
                    return xdp_action::XDP_PASS;
                }
                fib.family = AF_INET6;
                fib.l4_protocol = *h.add(6);
                fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([*h.add(4), *h.add(5)]) + 40;
                fib.__bindgen_anon_3.ipv6_src = be_words(h.add(8));
                fib.__bindgen_anon_4.ipv6_dst = be_words(h.add(24));
            }
        }
        _ => return xdp_action::XDP_PASS,
    }
    // SAFETY: helper call with a properly sized struct.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    } as u32;
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the header lengths were checked above for the matching family.
    unsafe {
        if proto == 0x0800 {
            // TTL decrement with the incremental checksum update of RFC 1624 (TTL is the high
            // byte of its 16-bit word).
            *h.add(8) -= 1;
            let c = u16::from_be((h.add(10) as *const u16).read_unaligned()) as u32 + 0x0100;
            let c = (c & 0xffff) + (c >> 16);
            (h.add(10) as *mut u16).write_unaligned((c as u16).to_be());
        } else {
            *h.add(7) -= 1;
        }
        let mut i = 0;
        while i < 6 {
            *eth.add(i) = fib.dmac[i];
            *eth.add(6 + i) = fib.smac[i];
            i += 1;
        }
    }
    bump(1);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(fib.ifindex, 0) as u32 }
}

/// A bare host-EID lookup in the real map-cache map (IPv6 destination of the frame, instance 0):
/// DROP on a hit, PASS on a miss. Timed under test-run against `xdp_pass` for the lookup's cost
/// at different table sizes.
#[xdp]
pub fn bench_lookup(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + ETH + 40 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        // SAFETY: 40 bytes of IPv6 header checked.
        addr[i] = unsafe { *((start + ETH + 24 + i) as *const u8) };
        i += 1;
    }
    let key = lisp_common::maps::EidKey::new(lisp_common::maps::AF_IPV6, 0, addr);
    if super::MAP_CACHE_HOST.get_ptr(&key).is_some() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}
