//! XDP data plane of lisp-agent: LISP encapsulation (ITR) and decapsulation (ETR), RFC 9300.
//!
//! One pass per packet: Ethernet → IPv4/IPv6 → role of the ingress interface → either
//! decapsulate (UDP 4341 to a local RLOC, ETR), or look the destination up in the map-cache and
//! encapsulate (ITR), or pass. Every decision that can fail (next hop, MTU, headroom) is taken
//! *before* the first byte of the packet is written, so a packet is either passed untouched,
//! dropped, handed to the agent's slow path as it arrived, or fully rewritten — never
//! half-rewritten. A packet that matched the map-cache is never passed bare: the kernel would
//! route the EID packet natively into the underlay.
//!
//! This file holds the maps, the per-CPU scratch memory and the program entry; the rest is in
//! modules by job: `parse` (IP headers), `packet` (byte helpers, sums, flow hash), `itr`
//! (encapsulation), `etr` (decapsulation), `next_hop` (next-hop caches), `icmp` (too-big
//! errors), `events` (events to the agent and their limits), `slow_path` (handover of what XDP
//! cannot encapsulate), `checksum` (the optional IPv6 outer UDP checksum), `bench` (bench-only
//! programs).
//!
//! The maps and their types are the contract in `lisp_common::maps`.
#![no_std]
#![no_main]

mod bench;
mod checksum;
mod etr;
mod events;
mod icmp;
mod itr;
mod next_hop;
mod packet;
mod parse;
mod slow_path;

#[allow(unused_imports)]
use {etr::*, icmp::*, itr::*, next_hop::*, packet::*, parse::*};

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_NO_PREALLOC, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, BPF_FIB_LOOKUP_TBID, bpf_fib_lookup, xdp_action,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns,
        bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerfEventArray, lpm_trie::Key},
    programs::XdpContext,
};
use lisp_common::{
    maps::{
        AF_IPV4, AF_IPV6, Counter, EID_KEY_PREFIX_BITS, EidKey, EventBucket, InterfaceConfig,
        MAX_RLOCS, MapCacheEntry, MissEvent, Rloc, RlocKey, SELECT_SLOTS, Settings, SlowPathRecord,
        action, entry_flags, event_kind, iface_flags, rloc_flags, settings_flags,
    },
    wire::{
        LISP_DATA_PORT,
        data::{ENCAP_OVERHEAD_IPV4, ENCAP_OVERHEAD_IPV6, HEADER_LEN, flags as lisp_flags},
    },
};

// ---------------------------------------------------------------- maps (lisp_common::maps)

// Host EIDs can number a million (benchmark target); NO_PREALLOC keeps an idle map small.
#[map(name = "MAP_CACHE_HOST")]
static MAP_CACHE_HOST: HashMap<EidKey, MapCacheEntry> =
    HashMap::with_max_entries(1 << 20, BPF_F_NO_PREALLOC);
#[map(name = "MAP_CACHE_PREFIX")]
static MAP_CACHE_PREFIX: LpmTrie<EidKey, MapCacheEntry> = LpmTrie::with_max_entries(1 << 16, 0);
#[map(name = "EID_SPACE")]
static EID_SPACE: LpmTrie<EidKey, u8> = LpmTrie::with_max_entries(4096, 0);
#[map(name = "LOCAL_RLOCS")]
static LOCAL_RLOCS: HashMap<RlocKey, u8> = HashMap::with_max_entries(64, 0);
#[map(name = "INTERFACES")]
static INTERFACES: HashMap<u32, InterfaceConfig> = HashMap::with_max_entries(256, 0);
#[map(name = "IID_TABLES")]
static IID_TABLES: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::SLOTS, 0);
#[map(name = "EVENTS")]
static EVENTS: PerfEventArray<MissEvent> = PerfEventArray::new(0);
#[map(name = "EVENT_RATE")]
static EVENT_RATE: LruHashMap<EidKey, u64> = LruHashMap::with_max_entries(65536, 0);
#[map(name = "EVENT_BUCKETS")]
static EVENT_BUCKETS: PerCpuArray<EventBucket> =
    PerCpuArray::with_max_entries(event_kind::SLOTS, 0);
#[map(name = "LOCAL_EIDS")]
static LOCAL_EIDS: LpmTrie<EidKey, u8> = LpmTrie::with_max_entries(4096, 0);
#[map(name = "SLOW_PATH")]
static SLOW_PATH: PerfEventArray<SlowPathRecord> = PerfEventArray::new(0);

/// Per-CPU working memory of one program run (not part of the agent's contract). The BPF stack
/// is 512 bytes for the whole call chain and LLVM's BPF backend packs it poorly; the parsed
/// headers and the fib-lookup parameters live here instead.
#[repr(C)]
struct Scratch {
    fib: bpf_fib_lookup,
    outer: Ip,
    inner: Ip,
    /// Path MTU to report in an ICMP too-big error (set by the ITR for [`too_big`]).
    mtu: u32,
    /// MACs of an ICMP error being built: destination then source.
    mac: [u8; 12],
    /// Next hop of the packet being encapsulated or decapsulated.
    nh: NextHop,
    /// Key of the packet being decapsulated in [`ETR_NEXT_HOPS`].
    etr_key: EtrKey,
    /// Key of a LOCAL_RLOCS or NEXT_HOPS lookup.
    rkey: RlocKey,
    /// Key of a LOCAL_EIDS lookup.
    ekey: EidKey,
    /// Set by the ITR when the outer FIB lookup found no neighbour (`fib` then holds the next
    /// hop): the event is raised after the ITR's frame is gone, to stay within the BPF stack.
    unresolved: NextHopWanted,
    /// Set by the ETR when the inner destination is none of our EIDs (`etr_key`, `outer` and
    /// `inner` then describe it): the event is raised after the ETR's frame is gone.
    absent_eid: bool,
    /// Set by the ITR when the IPv6 outer header it wrote wants a computed UDP checksum.
    udp6_checksum: bool,
    /// What the slow path needs of a packet the ITR hands it (set with the verdict).
    slow: SlowPathRecord,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum NextHopWanted {
    No,
    Ipv4,
    Ipv6,
}
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

// ---------------------------------------------------------------- constants

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6_FRAG: u8 = 44;
const PROTO_ICMPV6: u8 = 58;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const DEFAULT_EVENT_INTERVAL_NS: u64 = 1_000_000_000;

// ---------------------------------------------------------------- counters and settings

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// The agent writes SETTINGS before attaching; an all-zero value (no RLOCs) is the default.
#[inline(always)]
fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

// ---------------------------------------------------------------- programs

/// Passes everything. Attached on veth peers: native XDP_REDIRECT into a veth whose peer has no
/// XDP program is silently dropped by the kernel.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn xdp_lisp(ctx: XdpContext) -> u32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        count(Counter::PassOther);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU memory, used by this run only (XDP runs are not preempted on a CPU).
    let s = unsafe { &mut *s };
    s.unresolved = NextHopWanted::No;
    s.absent_eid = false;
    s.udp6_checksum = false;
    let (action, counter) = process(&ctx, s);
    // Each of these runs after the path's own frame is gone, to stay within the BPF stack.
    if s.unresolved != NextHopWanted::No {
        events::next_hop_unresolved(&ctx, &s.fib, s.unresolved == NextHopWanted::Ipv6);
    }
    if s.absent_eid {
        events::data_for_absent_eid(&ctx, s);
    }
    if s.udp6_checksum {
        checksum::fill_udp6_checksum(&ctx);
    }
    count(counter);
    action
}

/// Verdict of the ITR for a packet the slow path must encapsulate (`Scratch::slow` filled):
/// not an XDP action.
const TO_SLOW_PATH: u32 = u32::MAX - 1;

#[inline(always)]
fn process(ctx: &XdpContext, s: &mut Scratch) -> (u32, Counter) {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: read-only use of a value the agent writes whole.
    let Some(iface) = (unsafe { INTERFACES.get(ifindex) }).copied() else {
        return (xdp_action::XDP_PASS, Counter::PassOther);
    };
    let Some(eth) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return (xdp_action::XDP_PASS, Counter::PassOther);
    };
    let v6 = match rd_be16(eth as *const u8, 12) {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        // VLAN tags, ARP, ... are the kernel's.
        _ => return (xdp_action::XDP_PASS, Counter::PassOther),
    };
    if parse_ip(ctx, ETH_LEN, v6, &mut s.outer).is_none() {
        return (xdp_action::XDP_PASS, Counter::PassMalformed);
    }
    if iface.flags & iface_flags::ETR != 0 {
        let r = etr(ctx, s, ifindex);
        if r.0 != NOT_FOR_ETR {
            return r;
        }
    }
    if iface.flags & iface_flags::ITR != 0 {
        let mut r = itr(ctx, s, ifindex, iface.instance_id);
        // Called from here rather than from `itr` so that the stack frames do not add up.
        if r.1 == Counter::TooBigIcmp {
            r = too_big(ctx, s, ifindex);
        }
        if r.0 == TO_SLOW_PATH {
            return slow_path::hand_over(ctx, &mut s.slow);
        }
        return r;
    }
    (xdp_action::XDP_PASS, Counter::PassNoMatch)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
