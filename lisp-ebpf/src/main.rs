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
mod mobility;
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
        AF_IPV4, AF_IPV6, Counter, DynamicEidState, EID_KEY_PREFIX_BITS, EidKey, EventBucket,
        InterfaceConfig, MAX_RLOCS, MapCacheEntry, MissEvent, MobilityIface, MobilityIfaceKey,
        Rloc, RlocKey, SELECT_SLOTS, ScopedEidKey, Settings, SlowPathRecord, action, entry_flags,
        event_kind, iface_flags, mobility_flags, rloc_flags, settings_flags,
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
#[map(name = "MOBILITY_IFACES")]
static MOBILITY_IFACES: HashMap<MobilityIfaceKey, MobilityIface> =
    HashMap::with_max_entries(1024, 0);
#[map(name = "DYNAMIC_PREFIXES")]
static DYNAMIC_PREFIXES: LpmTrie<ScopedEidKey, u8> = LpmTrie::with_max_entries(4096, 0);
#[map(name = "IFACE_SUBNETS")]
static IFACE_SUBNETS: LpmTrie<ScopedEidKey, u8> = LpmTrie::with_max_entries(4096, 0);
// Written by the agent only (one entry per detected host it accepted), so bounded by what it
// accepts; 100k dynamic EIDs is the benchmark's figure.
#[map(name = "LOCAL_DYNAMIC_EIDS")]
static LOCAL_DYNAMIC_EIDS: HashMap<EidKey, DynamicEidState> =
    HashMap::with_max_entries(1 << 18, BPF_F_NO_PREALLOC);

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
    /// The mobility interface of the packet (valid when the packet is on one).
    mob: MobilityIface,
    /// 802.1Q VLAN ID of the frame, 0 when untagged.
    vlan: u16,
    /// The frame's 802.1Q tag (TPID + TCI) while it is removed for the ITR.
    tag: [u8; 4],
    /// Offset of the inner IP header of a packet the ETR hands over for re-encapsulation.
    inner_off: usize,
    /// Detection: the candidate EID, its key, the LPM key, the packed detection, the
    /// rate-limit key.
    det_addr: [u8; 16],
    dkey: EidKey,
    lpm: Key<ScopedEidKey>,
    det: [u8; 16],
    rate_key: EidKey,
    /// The event record being sent (BPF stack is short).
    ev: MissEvent,
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
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_RARP: u16 = 0x8035;
const ETH_P_8021Q: u16 = 0x8100;
const VLAN_TAG_LEN: usize = 4;
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
    let l3 = match classify(ctx, s, ifindex, iface.flags) {
        L2_IP => ETH_LEN,
        L2_TAGGED_IP => ETH_LEN + VLAN_TAG_LEN,
        L2_OTHER_VLAN => return (xdp_action::XDP_PASS, Counter::PassOtherVlan),
        L2_ARP => return (xdp_action::XDP_PASS, Counter::PassArp),
        L2_MALFORMED => return (xdp_action::XDP_PASS, Counter::PassMalformed),
        _ => return (xdp_action::XDP_PASS, Counter::PassOther),
    };
    if l3 != ETH_LEN {
        if s.mob.flags & mobility_flags::ITR == 0 {
            return (xdp_action::XDP_PASS, Counter::PassNoMatch);
        }
        if !untag(ctx, s) {
            return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
        }
        let iid = s.mob.itr_instance_id;
        let r = itr_path(ctx, s, ifindex, iid);
        if (r.0 == xdp_action::XDP_PASS || r.0 == xdp_action::XDP_TX) && !retag(ctx, s) {
            return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
        }
        return r;
    }
    if iface.flags & iface_flags::ETR != 0 {
        let r = etr(ctx, s, ifindex);
        if r.0 == REENCAPSULATE {
            if !strip_for_reencap(ctx, s) {
                return (xdp_action::XDP_DROP, Counter::DropBadLisp);
            }
            let iid = s.etr_key.instance_id;
            let r = itr(ctx, s, ifindex, iid);
            return match r.1 {
                Counter::EncapIpv4 | Counter::EncapIpv6 => (r.0, Counter::Reencap),
                // An ICMP error would leave bare into the underlay towards a remote EID.
                Counter::TooBigIcmp => (xdp_action::XDP_DROP, Counter::DropCannotEncap),
                _ if r.0 == TO_SLOW_PATH => slow_path::hand_over(ctx, &mut s.slow),
                _ => r,
            };
        }
        if r.0 != NOT_FOR_ETR {
            return r;
        }
    }
    if iface.flags & iface_flags::ITR != 0 {
        return itr_path(ctx, s, ifindex, iface.instance_id);
    }
    (xdp_action::XDP_PASS, Counter::PassNoMatch)
}

// Results of `classify`.
const L2_OTHER: u8 = 0;
const L2_IP: u8 = 1;
const L2_TAGGED_IP: u8 = 2;
const L2_OTHER_VLAN: u8 = 3;
const L2_ARP: u8 = 4;
const L2_MALFORMED: u8 = 5;

/// The frame's layer 2 (an 802.1Q tag on a trunk, ARP), its IP header parsed into `s.outer`,
/// and the dynamic-EID detection of a mobility interface. A function of its own, off the
/// ITR's call chain, so that its stack does not add to the deepest one.
#[inline(never)]
fn classify(ctx: &XdpContext, s: &mut Scratch, ifindex: u32, flags: u32) -> u8 {
    let Some(eth) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return L2_OTHER;
    };
    let mut proto = rd_be16(eth as *const u8, 12);
    let mut l3 = ETH_LEN;
    s.vlan = 0;
    if proto == ETH_P_8021Q {
        // Tags are only ours on a trunk parent (mobility on one of its VLANs).
        if flags & iface_flags::TRUNK == 0 {
            return L2_OTHER;
        }
        let Some(t) = ptr_at::<[u8; ETH_LEN + VLAN_TAG_LEN]>(ctx, 0) else {
            return L2_MALFORMED;
        };
        s.vlan = rd_be16(t as *const u8, 14) & 0x0fff;
        proto = rd_be16(t as *const u8, 16);
        l3 = ETH_LEN + VLAN_TAG_LEN;
    }
    let mut mobile = false;
    if s.vlan != 0 || flags & iface_flags::MOBILITY != 0 {
        // SAFETY: read-only use of a value the agent writes whole.
        if let Some(m) = unsafe { MOBILITY_IFACES.get(&MobilityIfaceKey::new(ifindex, s.vlan)) } {
            s.mob = *m;
            mobile = true;
        }
    }
    if l3 != ETH_LEN && !mobile {
        // Another VLAN of the trunk (or a priority tag, VID 0): the kernel's.
        return L2_OTHER_VLAN;
    }
    let v6 = match proto {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        ETH_P_ARP | ETH_P_RARP if mobile => {
            mobility::observe_arp(ctx, s, l3, proto == ETH_P_RARP, ifindex);
            return L2_ARP;
        }
        // Other VLAN tags (QinQ), ARP elsewhere, ... are the kernel's.
        _ => return L2_OTHER,
    };
    if parse_ip(ctx, l3, v6, &mut s.outer).is_none() {
        return L2_MALFORMED;
    }
    if mobile {
        mobility::observe_ip(ctx, s, l3, ifindex);
    }
    if l3 == ETH_LEN { L2_IP } else { L2_TAGGED_IP }
}

/// The ITR and what its verdicts hand on (ICMP too-big, slow path).
#[inline(always)]
fn itr_path(ctx: &XdpContext, s: &mut Scratch, ifindex: u32, iid: u32) -> (u32, Counter) {
    let mut r = itr(ctx, s, ifindex, iid);
    // Called from here rather than from `itr` so that the stack frames do not add up.
    if r.1 == Counter::TooBigIcmp {
        r = too_big(ctx, s, ifindex);
    }
    if r.0 == TO_SLOW_PATH {
        return slow_path::hand_over(ctx, &mut s.slow);
    }
    r
}

// The trunk and re-encapsulation steps below are functions of their own that return before
// the ITR runs: calling the ITR from inside them would add a frame to the deepest call chain,
// and the BPF stack (512 bytes for the whole chain) has no room for it.

/// A tagged frame of a mobility VLAN of a trunk (`s.outer` parsed after the tag): removes the
/// tag so that the ITR sees a plain Ethernet frame and the encapsulated packet leaves untagged.
/// `false`: could not (then the frame is to be dropped: its MACs may have moved).
#[inline(never)]
fn untag(ctx: &XdpContext, s: &mut Scratch) -> bool {
    let Some(t) = ptr_at::<[u8; ETH_LEN + VLAN_TAG_LEN]>(ctx, 0) else {
        return false;
    };
    let t = t as *mut u8;
    let macs: [u8; 12] = rd_bytes(t, 0);
    s.tag = rd_bytes(t, 12);
    wr_bytes(t, VLAN_TAG_LEN, &macs);
    unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, VLAN_TAG_LEN as i32) == 0 }
}

/// Puts back the tag [`untag`] removed (a frame the kernel gets back, passed or an ICMP error
/// sent back out, is then byte for byte what arrived, or properly tagged).
#[inline(never)]
fn retag(ctx: &XdpContext, s: &mut Scratch) -> bool {
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -(VLAN_TAG_LEN as i32)) } != 0 {
        return false;
    }
    let Some(t) = ptr_at::<[u8; ETH_LEN + VLAN_TAG_LEN]>(ctx, 0) else {
        return false;
    };
    let t = t as *mut u8;
    let macs: [u8; 12] = rd_bytes(t, VLAN_TAG_LEN);
    wr_bytes(t, 0, &macs);
    wr_bytes(t, 12, &s.tag);
    true
}

/// The ETR found the inner destination in the map-cache: an "away" dynamic EID, now at
/// another site. Tells the agent (the sending ITR gets an SMR) and strips the outer headers,
/// leaving the inner packet parsed in `s.outer` for the ITR to encapsulate again towards the
/// EID's new RLOC. `false`: the packet is to be dropped.
#[inline(never)]
fn strip_for_reencap(ctx: &XdpContext, s: &mut Scratch) -> bool {
    // Before `s.outer` is overwritten: the event names the sending ITR.
    events::data_for_absent_eid(ctx, s);
    let v6 = s.inner.v6;
    let shrink = (s.inner_off - ETH_LEN) & 0xff;
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, shrink as i32) } != 0 {
        return false;
    }
    let Some(p) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return false;
    };
    // The MACs are the ITR's to write; the type must say what follows now.
    wr_be16(p as *mut u8, 12, if v6 { ETH_P_IPV6 } else { ETH_P_IP });
    parse_ip(ctx, ETH_LEN, v6, &mut s.outer).is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
