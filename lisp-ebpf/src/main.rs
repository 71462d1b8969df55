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
//! Modules by job: `events` (events to the agent and their limits), `slow_path` (handover of
//! what XDP cannot encapsulate), `checksum` (the optional IPv6 outer UDP checksum), `bench`
//! (bench-only programs).
//!
//! The maps and their types are the contract in `lisp_common::maps`.
#![no_std]
#![no_main]

mod bench;
mod checksum;
mod events;
mod slow_path;

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
        bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerfEventArray, lpm_trie::Key},
    programs::XdpContext,
};
use lisp_common::{
    maps::{
        AF_IPV4, AF_IPV6, Counter, EID_KEY_PREFIX_BITS, EidKey, EventBucket, InterfaceConfig,
        MAX_RLOCS, MapCacheEntry, MissEvent, NEXT_HOP_IID, Rloc, RlocKey, SELECT_SLOTS, Settings,
        SlowPathRecord, action, entry_flags, event_kind, iface_flags, rloc_flags, settings_flags,
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

/// A resolved next hop towards an RLOC: value of [`NEXT_HOPS`].
#[repr(C)]
#[derive(Clone, Copy)]
struct NextHop {
    ifindex: u32,
    /// Egress MTU (L3) as the FIB reported it.
    mtu: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
    _pad: u32,
    /// [`cache_clock`] at the FIB lookup that produced it.
    stamp: u64,
}

/// Next-hop cache per RLOC, internal to the program (the agent needs not know it). A FIB lookup
/// costs ~170 ns here, the bulk of an encapsulation; the cache turns it into a hash lookup.
/// Entries are revalidated by a new FIB lookup once older than [`NEXT_HOP_TTL_NS`], so a route
/// or neighbour change reaches the data plane within that time. Only successful lookups are
/// cached: unresolved neighbours keep going to the kernel, which resolves them.
#[map(name = "NEXT_HOPS")]
static NEXT_HOPS: LruHashMap<RlocKey, NextHop> = LruHashMap::with_max_entries(16384, 0);
const NEXT_HOP_TTL_NS: u64 = 100_000_000;

/// Clock of the next-hop caches: the coarse one (a tick's resolution, a few ms against the
/// 100 ms TTL) is read from memory, without the clocksource access of bpf_ktime_get_ns, and it
/// is read on every forwarded packet.
#[inline(always)]
fn cache_clock() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Key of [`ETR_NEXT_HOPS`]: where a decapsulated packet goes depends on the instance (its
/// routing table), the ingress interface (the FIB lookup's `iif`, and whether forwarding is on
/// there) and the inner destination.
#[repr(C)]
#[derive(Clone, Copy)]
struct EtrKey {
    instance_id: u32,
    ifindex: u32,
    /// AF_IPV4 / AF_IPV6, as a word: no padding to zero.
    family: u32,
    addr: [u8; 16],
}

/// Next-hop cache of the ETR per (instance-id, ingress interface, inner destination): the FIB
/// lookup of the inner packet is most of a decapsulation's cost, as on the ITR side. Keyed by
/// instance-id rather than table id so that a hit also saves the IID_TABLES lookup; an entry
/// exists only for an instance that had a table, and a changed or removed mapping takes effect
/// within [`NEXT_HOP_TTL_NS`] like route and neighbour changes. Only forwarding results are
/// cached: everything else goes to the kernel, which does its own (slow-path) lookup anyway.
/// One next hop per destination: with a multipath route the flows to one inner destination
/// share a path until the entry is revalidated.
#[map(name = "ETR_NEXT_HOPS")]
static ETR_NEXT_HOPS: LruHashMap<EtrKey, NextHop> = LruHashMap::with_max_entries(65536, 0);

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
/// ICMPv4 errors quote at most this much of the offending packet: 576 (RFC 1812 §4.3.2.3) minus
/// the error's own IPv4 and ICMP headers, rounded down to whole 32-bit words (summed 4 at a time).
const ICMP4_MAX_QUOTE: usize = 548;
/// ICMPv6 errors must fit the IPv6 minimum MTU (RFC 4443 §2.4 (c)): 1280 − 40 − 8.
const ICMP6_MAX_QUOTE: usize = 1232;
const ICMP_HDR_LEN: usize = 8;
const IPV6_MIN_MTU: u32 = 1280;
static QUOTE_CHUNKS: usize = ICMP6_MAX_QUOTE / 64;

// ---------------------------------------------------------------- small helpers

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Bounds-checked pointer into the packet; the check is what the verifier needs to see.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
fn rd_u8(p: *const u8, off: usize) -> u8 {
    unsafe { *p.add(off) }
}
#[inline(always)]
fn rd_be16(p: *const u8, off: usize) -> u16 {
    unsafe { u16::from_be_bytes([*p.add(off), *p.add(off + 1)]) }
}
#[inline(always)]
fn wr_u8(p: *mut u8, off: usize, v: u8) {
    unsafe { *p.add(off) = v }
}
#[inline(always)]
fn wr_be16(p: *mut u8, off: usize, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
    }
}
#[inline(always)]
fn wr_be32(p: *mut u8, off: usize, v: u32) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
        *p.add(off + 2) = b[2];
        *p.add(off + 3) = b[3];
    }
}
#[inline(always)]
fn wr_bytes<const N: usize>(p: *mut u8, off: usize, v: &[u8; N]) {
    let mut i = 0;
    while i < N {
        unsafe { *p.add(off + i) = v[i] };
        i += 1;
    }
}
#[inline(always)]
fn rd_bytes<const N: usize>(p: *const u8, off: usize) -> [u8; N] {
    let mut v = [0u8; N];
    let mut i = 0;
    while i < N {
        v[i] = unsafe { *p.add(off + i) };
        i += 1;
    }
    v
}

/// One's-complement sum of big-endian 16-bit words, folded.
#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
fn sum_bytes<const N: usize>(b: &[u8; N]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u64;
        i += 2;
    }
    s
}

/// RFC 1624 incremental update of a checksum when one 16-bit word changes from `old` to `new`.
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    !fold((!csum) as u64 + (!old) as u64 + new as u64)
}

/// Mixing step of the flow hash (multiply-rotate; cheap, good enough to spread flows over
/// `SELECT_SLOTS` and UDP source ports).
#[inline(always)]
fn mix(h: u32, v: u32) -> u32 {
    (h ^ v).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h
}

// LLVM merges zero stores into a memset and copies between possibly-overlapping places into a
// memmove, and the BPF backend emits both as calls to a byte loop (a 32-byte memmove is ~250
// instructions). The helpers below write with volatile stores, which are never merged, or copy
// with `copy_nonoverlapping`, which the backend inlines as word moves.

/// An IPv4 address into the first 4 bytes of `a`, the rest zeroed. `a` must be 4-byte aligned.
#[inline(always)]
fn set_addr4(a: &mut [u8; 16], v: [u8; 4]) {
    let p = a.as_mut_ptr() as *mut u32;
    // SAFETY: 16 bytes, aligned (the callers' fields are, see the assertion on `Ip`).
    unsafe {
        p.write_volatile(u32::from_ne_bytes(v));
        p.add(1).write_volatile(0);
        p.add(2).write_volatile(0);
        p.add(3).write_volatile(0);
    }
}

/// Fills a map key in place (see above for why not `RlocKey::new`).
#[inline(always)]
fn set_rloc_key(k: &mut RlocKey, family: u8, addr: &[u8; 16]) {
    let p = k as *mut RlocKey as *mut u8;
    // SAFETY: the first 4 bytes of the key are `family` and `_pad`.
    unsafe {
        p.write_volatile(family);
        p.add(1).write_volatile(0);
        p.add(2).write_volatile(0);
        p.add(3).write_volatile(0);
    }
    k.addr = *addr;
}

/// Copies a cached next hop out of its map value.
#[inline(always)]
fn copy_next_hop(to: &mut NextHop, from: *const NextHop) {
    // SAFETY: `from` is a map value (valid for this run), `to` scratch memory: distinct.
    unsafe { core::ptr::copy_nonoverlapping(from, to as *mut NextHop, 1) };
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

// ---------------------------------------------------------------- IP parsing

/// What the program needs of an IP header, parsed once.
#[repr(C, align(8))]
struct Ip {
    /// IPv4 addresses in the first 4 bytes. First, and the struct 8-aligned: [`set_addr4`]
    /// writes them as words.
    src: [u8; 16],
    dst: [u8; 16],
    v6: bool,
    /// Header length (IPv4 with options; 40 for IPv6, extension headers are payload here).
    hdr_len: usize,
    /// Total length of the IP packet (header + payload) as the header says.
    total_len: usize,
    /// IPv4 protocol / IPv6 next header.
    proto: u8,
    /// IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN).
    tos: u8,
    ttl: u8,
    /// Any fragment (IPv4 MF or offset; IPv6 fragment header first).
    fragment: bool,
    df: bool,
}

const _: () = assert!(core::mem::offset_of!(Ip, src) == 0 && core::mem::offset_of!(Ip, dst) == 16);

/// Parses the IP header at `off`. `None` when truncated or inconsistent (caller passes it).
#[inline(always)]
fn parse_ip(ctx: &XdpContext, off: usize, v6: bool, out: &mut Ip) -> Option<()> {
    let avail = ctx.data_end().checked_sub(ctx.data() + off)?;
    if !v6 {
        let h: *mut [u8; IPV4_LEN] = ptr_at(ctx, off)?;
        let h = h as *const u8;
        let b0 = rd_u8(h, 0);
        if b0 >> 4 != 4 {
            return None;
        }
        let hdr_len = ((b0 & 0x0f) as usize) * 4;
        let total_len = rd_be16(h, 2) as usize;
        if hdr_len < IPV4_LEN || total_len < hdr_len || total_len > avail {
            return None;
        }
        let frag = rd_be16(h, 6);
        out.v6 = false;
        out.hdr_len = hdr_len;
        out.total_len = total_len;
        out.proto = rd_u8(h, 9);
        out.tos = rd_u8(h, 1);
        out.ttl = rd_u8(h, 8);
        set_addr4(&mut out.src, rd_bytes::<4>(h, 12));
        set_addr4(&mut out.dst, rd_bytes::<4>(h, 16));
        out.fragment = frag & 0x3fff != 0;
        out.df = frag & 0x4000 != 0;
        Some(())
    } else {
        let h: *mut [u8; IPV6_LEN] = ptr_at(ctx, off)?;
        let h = h as *const u8;
        let b0 = rd_u8(h, 0);
        if b0 >> 4 != 6 {
            return None;
        }
        let total_len = rd_be16(h, 4) as usize + IPV6_LEN;
        if total_len > avail {
            return None;
        }
        let proto = rd_u8(h, 6);
        out.v6 = true;
        out.hdr_len = IPV6_LEN;
        out.total_len = total_len;
        out.proto = proto;
        out.tos = ((b0 & 0x0f) << 4) | (rd_u8(h, 1) >> 4);
        out.ttl = rd_u8(h, 7);
        out.src = rd_bytes::<16>(h, 8);
        out.dst = rd_bytes::<16>(h, 24);
        out.fragment = proto == PROTO_IPV6_FRAG;
        out.df = true;
        Some(())
    }
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

// ---------------------------------------------------------------- ITR

#[inline(always)]
fn lookup_map_cache(key: &EidKey, v6: bool) -> Option<*const MapCacheEntry> {
    if let Some(e) = MAP_CACHE_HOST.get_ptr(key) {
        return Some(e);
    }
    let bits = EID_KEY_PREFIX_BITS + if v6 { 128 } else { 32 };
    MAP_CACHE_PREFIX
        .get(Key::new(bits, *key))
        .map(|e| e as *const MapCacheEntry)
}

/// The agent writes SETTINGS before attaching; an all-zero value (no RLOCs) is the default.
#[inline(always)]
fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

/// Inner 5-tuple hash: addresses, protocol, and ports for unfragmented TCP/UDP.
#[inline(always)]
fn flow_hash(ctx: &XdpContext, ip: &Ip) -> u32 {
    let s = words(&ip.src);
    let d = words(&ip.dst);
    let mut h = 0x4c49_5350u32; // "LISP"
    h = mix(h, s[0]);
    h = mix(h, d[0]);
    if ip.v6 {
        h = mix(h, s[1]);
        h = mix(h, s[2]);
        h = mix(h, s[3]);
        h = mix(h, d[1]);
        h = mix(h, d[2]);
        h = mix(h, d[3]);
    }
    h = mix(h, ip.proto as u32);
    if (ip.proto == PROTO_TCP || ip.proto == PROTO_UDP)
        && !ip.fragment
        && ip.total_len >= ip.hdr_len + 4
        && let Some(p) = ptr_at::<u32>(ctx, ETH_LEN + (ip.hdr_len & 0x3c))
    {
        h = mix(h, unsafe { p.read_unaligned() });
    }
    finish(h)
}

#[inline(never)]
fn itr(ctx: &XdpContext, s: &mut Scratch, ifindex: u32, iid: u32) -> (u32, Counter) {
    let Scratch {
        fib,
        outer: ip,
        nh,
        rkey,
        mtu: mtu_out,
        unresolved,
        udp6_checksum,
        slow,
        ..
    } = &mut *s;
    let ip: &Ip = ip;
    let family = if ip.v6 { AF_IPV6 } else { AF_IPV4 };
    let key = EidKey::new(family, iid, ip.dst);
    let Some(entry) = lookup_map_cache(&key, ip.v6) else {
        let bits = EID_KEY_PREFIX_BITS + if ip.v6 { 128 } else { 32 };
        if EID_SPACE.get(Key::new(bits, key)).is_some() {
            events::miss(ctx, &key, ip, ifindex, event_kind::MAP_CACHE_MISS);
            return (xdp_action::XDP_DROP, Counter::NegativeDrop);
        }
        return (xdp_action::XDP_PASS, Counter::PassNoMatch);
    };
    // SAFETY: map value pointer valid for the duration of the program run.
    let entry = unsafe { &*entry };
    // From here on the packet is LISP's: whatever fails, it is encapsulated (here or by the
    // slow path) or dropped, never passed bare to the kernel, which would route the EID packet
    // natively into the underlay. (Natively-Forward, below, is the one deliberate exception;
    // TTL expiry goes to the kernel, which answers with time-exceeded and forwards nothing.)
    let cannot = (xdp_action::XDP_DROP, Counter::DropCannotEncap);
    let no_next_hop = (xdp_action::XDP_DROP, Counter::EncapNoNextHop);
    match entry.action {
        action::ENCAPSULATE => {}
        action::NATIVELY_FORWARD => return (xdp_action::XDP_PASS, Counter::NativelyForward),
        action::SEND_MAP_REQUEST => {
            events::miss(
                ctx,
                &key,
                ip,
                ifindex,
                event_kind::NEGATIVE_SEND_MAP_REQUEST,
            );
            return (xdp_action::XDP_DROP, Counter::NegativeDrop);
        }
        _ => return (xdp_action::XDP_DROP, Counter::NegativeDrop),
    }
    if ip.ttl <= 1 {
        return (xdp_action::XDP_PASS, Counter::TtlExpired);
    }
    let hash = flow_hash(ctx, ip);
    let slot = entry.select[(hash as usize) % SELECT_SLOTS] as usize;
    if slot >= entry.rloc_count as usize || slot >= MAX_RLOCS {
        // An entry the agent wrote inconsistently: let the kernel decide, and say so (an agent
        // bug, not something a packet can trigger, so the log cannot be flooded from outside).
        aya_log_ebpf::warn!(ctx, "map-cache entry with an RLOC index out of range");
        return cannot;
    }
    let rloc = entry.rlocs[slot];
    let Some(st) = settings() else {
        return no_next_hop;
    };
    let outer_v6 = match rloc.family {
        AF_IPV4 if st.flags & settings_flags::HAS_RLOC4 != 0 => false,
        AF_IPV6 if st.flags & settings_flags::HAS_RLOC6 != 0 => true,
        _ => return no_next_hop,
    };
    let ovh = if outer_v6 {
        ENCAP_OVERHEAD_IPV6
    } else {
        ENCAP_OVERHEAD_IPV4
    };
    let outer_len = ovh + ip.total_len;
    if outer_len > 0xffff {
        return cannot;
    }
    let sport = 0xc000 | (hash & 0x3fff) as u16;
    let new_ttl = ip.ttl - 1;

    let flags0 = (if st.flags & settings_flags::NONCE != 0 {
        lisp_flags::N
    } else {
        0
    }) | (if entry.flags & entry_flags::INSTANCE_ID != 0 {
        lisp_flags::I
    } else {
        0
    });
    let nonce = if flags0 & lisp_flags::N != 0 {
        (unsafe { bpf_get_prandom_u32() }) & 0x00ff_ffff
    } else {
        0
    };
    let word0 = ((flags0 as u32) << 24) | nonce;
    let word1 = if flags0 & lisp_flags::I != 0 {
        key.instance_id() << 8
    } else {
        0
    };
    // What the slow path needs if this packet ends up there (too big, no headroom).
    let to_slow = |slow: &mut SlowPathRecord| {
        slow.rloc = rloc.addr;
        slow.rloc_family = rloc.family;
        slow.ttl = new_ttl;
        slow.tos = ip.tos;
        slow.lisp_header = lisp_header_bytes(word0, word1);
    };

    // Next hop (and MTU) of the outer packet, before touching anything: from the per-RLOC
    // cache while it is fresh, else from the kernel FIB (and cached).
    set_rloc_key(rkey, rloc.family, &rloc.addr);
    let now = cache_clock();
    if let Some(c) = NEXT_HOPS.get_ptr(&*rkey)
        && now.wrapping_sub(unsafe { (*c).stamp }) < NEXT_HOP_TTL_NS
    {
        copy_next_hop(nh, c);
    } else {
        let r = fib_outer(
            ctx, fib, ip, st, &rloc, outer_v6, ifindex, hash, sport, outer_len,
        );
        if r == BPF_FIB_LKUP_RET_FRAG_NEEDED {
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
            *mtu_out = mtu.saturating_sub(ovh as u32);
            to_slow(slow);
            return (xdp_action::XDP_DROP, Counter::TooBigIcmp);
        }
        if r == BPF_FIB_LKUP_RET_NO_NEIGH {
            *unresolved = if outer_v6 {
                NextHopWanted::Ipv6
            } else {
                NextHopWanted::Ipv4
            };
        }
        if r != BPF_FIB_LKUP_RET_SUCCESS {
            return no_next_hop;
        }
        next_hop_from_fib(nh, fib, now);
        // By reference: the value stays in the scratch map instead of being copied to the
        // (scarce) stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = NEXT_HOPS.insert(&*rkey, &*nh, 0);
    }
    if outer_len > nh.mtu as usize {
        *mtu_out = nh.mtu.saturating_sub(ovh as u32);
        to_slow(slow);
        return (xdp_action::XDP_DROP, Counter::TooBigIcmp);
    }

    // Everything is decided: grow the head and write the outer headers.
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -(ovh as i32)) } != 0 {
        // A driver with too little headroom: the slow path can still encapsulate.
        to_slow(slow);
        return (TO_SLOW_PATH, Counter::SlowPath);
    }
    let inner_off = ETH_LEN + ovh;
    // Inner TTL / hop limit, as a router does.
    if ip.v6 {
        let Some(h) = ptr_at::<[u8; IPV6_LEN]>(ctx, inner_off) else {
            return undo_head(ctx, ovh, slow, &to_slow);
        };
        wr_u8(h as *mut u8, 7, new_ttl);
    } else {
        let Some(h) = ptr_at::<[u8; IPV4_LEN]>(ctx, inner_off) else {
            return undo_head(ctx, ovh, slow, &to_slow);
        };
        let h = h as *mut u8;
        let old = rd_be16(h, 8);
        let csum = rd_be16(h, 10);
        let new = old - 0x100;
        wr_u8(h, 8, new_ttl);
        wr_be16(h, 10, csum_replace(csum, old, new));
    }

    let counter = if outer_v6 {
        let Some(p) = ptr_at::<[u8; ETH_LEN + ENCAP_OVERHEAD_IPV6]>(ctx, 0) else {
            return undo_head(ctx, ovh, slow, &to_slow);
        };
        let p = p as *mut u8;
        wr_bytes(p, 0, &nh.dmac);
        wr_bytes(p, 6, &nh.smac);
        wr_be16(p, 12, ETH_P_IPV6);
        let o = ETH_LEN;
        // Version 6, traffic class = inner DSCP + ECN (RFC 6040 normal mode), flow label = hash.
        wr_be32(
            p,
            o,
            (6 << 28) | ((ip.tos as u32) << 20) | (hash & 0x000f_ffff),
        );
        wr_be16(p, o + 4, (UDP_LEN + HEADER_LEN + ip.total_len) as u16);
        wr_u8(p, o + 6, PROTO_UDP);
        wr_u8(p, o + 7, new_ttl);
        wr_bytes(p, o + 8, &st.rloc6);
        wr_bytes(p, o + 24, &rloc.addr);
        write_udp_lisp(p, o + IPV6_LEN, sport, ip.total_len, word0, word1);
        // Zero unless asked for (globally or for this RLOC): computed once the frame is done.
        *udp6_checksum = st.flags & settings_flags::IPV6_UDP_CHECKSUM != 0
            || rloc.flags & rloc_flags::IPV6_UDP_CHECKSUM != 0;
        Counter::EncapIpv6
    } else {
        let Some(p) = ptr_at::<[u8; ETH_LEN + ENCAP_OVERHEAD_IPV4]>(ctx, 0) else {
            return undo_head(ctx, ovh, slow, &to_slow);
        };
        let p = p as *mut u8;
        wr_bytes(p, 0, &nh.dmac);
        wr_bytes(p, 6, &nh.smac);
        wr_be16(p, 12, ETH_P_IP);
        let o = ETH_LEN;
        let tot = outer_len as u16;
        let dst4 = [rloc.addr[0], rloc.addr[1], rloc.addr[2], rloc.addr[3]];
        let ttl_proto = ((new_ttl as u16) << 8) | PROTO_UDP as u16;
        let sum = (0x4500u64 | ip.tos as u64)
            + tot as u64
            + 0x4000
            + ttl_proto as u64
            + sum_bytes(&st.rloc4)
            + sum_bytes(&dst4);
        wr_u8(p, o, 0x45);
        wr_u8(p, o + 1, ip.tos);
        wr_be16(p, o + 2, tot);
        wr_be16(p, o + 4, 0);
        // DF: XDP cannot fragment, and the inner source gets told the path MTU instead.
        wr_be16(p, o + 6, 0x4000);
        wr_be16(p, o + 8, ttl_proto);
        wr_be16(p, o + 10, !fold(sum));
        wr_bytes(p, o + 12, &st.rloc4);
        wr_bytes(p, o + 16, &dst4);
        write_udp_lisp(p, o + IPV4_LEN, sport, ip.total_len, word0, word1);
        Counter::EncapIpv4
    };
    (unsafe { bpf_redirect(nh.ifindex, 0) } as u32, counter)
}

/// A successful FIB lookup as a cacheable next hop stamped `now`.
#[inline(always)]
fn next_hop_from_fib(nh: &mut NextHop, fib: &bpf_fib_lookup, now: u64) {
    nh.ifindex = fib.ifindex;
    // Set on success too (since Linux 5.12) when tot_len was given.
    nh.mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
    nh.dmac = fib.dmac;
    nh.smac = fib.smac;
    nh.stamp = now;
}

/// FIB lookup for the outer header; `fib` holds the result.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fib_outer(
    ctx: &XdpContext,
    fib: &mut bpf_fib_lookup,
    ip: &Ip,
    st: &Settings,
    rloc: &Rloc,
    outer_v6: bool,
    ifindex: u32,
    hash: u32,
    sport: u16,
    outer_len: usize,
) -> u32 {
    unsafe { core::ptr::write_bytes(fib as *mut bpf_fib_lookup, 0, 1) };
    fib.l4_protocol = PROTO_UDP;
    fib.sport = sport.to_be();
    fib.dport = LISP_DATA_PORT.to_be();
    // Non-zero tot_len: the kernel checks it against the route's MTU and reports the MTU.
    fib.__bindgen_anon_1.tot_len = outer_len as u16;
    fib.ifindex = ifindex;
    if outer_v6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_2.flowinfo = (((ip.tos as u32) << 20) | (hash & 0xfffff)).to_be();
        fib.__bindgen_anon_3.ipv6_src = words(&st.rloc6);
        fib.__bindgen_anon_4.ipv6_dst = words(&rloc.addr);
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = ip.tos;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(st.rloc4);
        fib.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([rloc.addr[0], rloc.addr[1], rloc.addr[2], rloc.addr[3]]);
    }
    (unsafe {
        fib_lookup(
            ctx.as_ptr(),
            fib as *mut bpf_fib_lookup,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    }) as u32
}

#[inline(always)]
fn write_udp_lisp(p: *mut u8, o: usize, sport: u16, inner_len: usize, w0: u32, w1: u32) {
    wr_be16(p, o, sport);
    wr_be16(p, o + 2, LISP_DATA_PORT);
    wr_be16(p, o + 4, (UDP_LEN + HEADER_LEN + inner_len) as u16);
    // Zero UDP checksum, IPv4 and IPv6 alike (RFC 9300 §5.3, RFC 6935).
    wr_be16(p, o + 6, 0);
    wr_be32(p, o + 8, w0);
    wr_be32(p, o + 12, w1);
}

/// The LISP header words as the 8 bytes on the wire.
#[inline(always)]
fn lisp_header_bytes(w0: u32, w1: u32) -> [u8; 8] {
    let a = w0.to_be_bytes();
    let b = w1.to_be_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// Only reachable if the verifier-visible bounds check fails after a successful grow, which the
/// packet length makes impossible; shrink back and let the slow path encapsulate the original.
#[inline(always)]
fn undo_head(
    ctx: &XdpContext,
    ovh: usize,
    slow: &mut SlowPathRecord,
    to_slow: &impl Fn(&mut SlowPathRecord),
) -> (u32, Counter) {
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, ovh as i32) } != 0 {
        return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
    }
    to_slow(slow);
    (TO_SLOW_PATH, Counter::SlowPath)
}

// ---------------------------------------------------------------- ICMP too big

/// The encapsulated packet would exceed the egress MTU (`Scratch::mtu` left for the inner
/// packet): tell the inner source (ICMP fragmentation-needed / Packet Too Big, sent back out the
/// ingress interface with XDP_TX), or, when an ICMP error must not be sent (IPv4 without DF,
/// an ICMP error, a path MTU below what the inner family guarantees), hand it to the slow path,
/// which encapsulates it and has the kernel fragment the outer packet (RFC 9300 §7.1).
/// Never to the kernel as it is: that would leak the bare EID packet into the underlay.
///
/// Addresses and MACs are kept in the scratch map, not in locals: byte arrays in locals are
/// split into scalars by LLVM and spilled one stack slot per byte.
#[inline(never)]
fn too_big(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) -> (u32, Counter) {
    let mtu = s.mtu;
    let Scratch {
        fib,
        outer: ip,
        inner: tmp,
        mac,
        ..
    } = s;
    let ip: &Ip = ip;
    let slow = (TO_SLOW_PATH, Counter::SlowPath);
    // Failures below are not expected (bounds the verifier needs to see): dropped, counted.
    let pass = (xdp_action::XDP_DROP, Counter::DropCannotEncap);
    let Some(st) = settings() else {
        return pass;
    };
    if !ip.df || ip.fragment && !ip.v6 {
        return slow;
    }
    if ip.v6 && mtu < IPV6_MIN_MTU || !ip.v6 && mtu < 68 {
        return slow;
    }
    // Never an ICMP error about an ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)).
    if ip.proto == PROTO_ICMP && !ip.v6 || ip.proto == PROTO_ICMPV6 && ip.v6 {
        // Four bytes, not one: a one-byte check at a variable offset compiles to a comparison
        // the verifier draws no packet range from.
        let Some(t) = ptr_at::<[u8; 4]>(ctx, ETH_LEN + (ip.hdr_len & 0x3c)) else {
            return pass;
        };
        let t = unsafe { (*t)[0] };
        let is_error = if ip.v6 {
            t < 128
        } else {
            !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
        };
        if is_error {
            return slow;
        }
    }
    let max_quote = if ip.v6 {
        ICMP6_MAX_QUOTE
    } else {
        ICMP4_MAX_QUOTE
    };
    let quote = (if ip.total_len < max_quote {
        ip.total_len
    } else {
        max_quote
    }) & !3;

    // Source address of the error (into tmp.src): what the kernel would use towards the inner
    // source; the RLOC if there is no route back.
    unsafe { core::ptr::write_bytes(fib as *mut bpf_fib_lookup, 0, 1) };
    fib.ifindex = ifindex;
    if ip.v6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_4.ipv6_dst = words(&ip.src);
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([ip.src[0], ip.src[1], ip.src[2], ip.src[3]]);
    }
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            fib as *mut bpf_fib_lookup,
            size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    let from: *const u8 = if rc == 0 {
        &fib.__bindgen_anon_3 as *const _ as *const u8
    } else if ip.v6 {
        st.rloc6.as_ptr()
    } else {
        st.rloc4.as_ptr()
    };
    let alen = if ip.v6 { 16 } else { 4 };
    tmp.src = [0; 16];
    unsafe { core::ptr::copy_nonoverlapping(from, tmp.src.as_mut_ptr(), alen) };

    // Sum of the quoted bytes, read where they are (they stay in place below): 64-byte chunks
    // through bpf_csum_diff, then 4-byte words.
    let mut qsum = 0u64;
    let mut off = 0usize;
    let mut i = 0;
    // A bound LLVM cannot see through, so that it keeps the loop instead of unrolling it; the
    // verifier bounds it through `quote`.
    let chunks = unsafe { core::ptr::read_volatile(&QUOTE_CHUNKS) };
    while i < chunks {
        if off + 64 > quote {
            break;
        }
        let Some(c) = ptr_at::<[u8; 64]>(ctx, ETH_LEN + (off & 0x7ff)) else {
            return pass;
        };
        let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, c as *mut u32, 64, 0) };
        if r < 0 {
            return pass;
        }
        // csum_partial sums host-order (little-endian) words: byte-swap the folded result.
        qsum += fold(r as u64).swap_bytes() as u64;
        off += 64;
        i += 1;
    }
    let mut j = 0;
    while j < 16 {
        if off + 4 > quote {
            break;
        }
        let Some(w) = ptr_at::<[u8; 4]>(ctx, ETH_LEN + (off & 0x7ff)) else {
            return pass;
        };
        let w = w as *const u8;
        qsum += rd_be16(w, 0) as u64 + rd_be16(w, 2) as u64;
        off += 4;
        j += 1;
    }
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return pass;
    };
    // Swapped: the error goes back where the packet came from.
    unsafe {
        core::ptr::copy_nonoverlapping(eth as *const u8, mac.as_mut_ptr().add(6), 6);
        core::ptr::copy_nonoverlapping((eth as *const u8).add(6), mac.as_mut_ptr(), 6);
    }

    let hdrs = if ip.v6 { IPV6_LEN } else { IPV4_LEN } + ICMP_HDR_LEN;
    let frame_len = ctx.data_end() - ctx.data();
    let new_len = ETH_LEN + hdrs + quote;
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -(hdrs as i32)) } != 0 {
        return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
    }
    let shrink = new_len as i32 - (frame_len + hdrs) as i32;
    if shrink < 0 && unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, shrink) } != 0 {
        return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
    }
    if ip.v6 {
        let Some(p) = ptr_at::<[u8; ETH_LEN + IPV6_LEN + ICMP_HDR_LEN]>(ctx, 0) else {
            return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
        };
        let p = p as *mut u8;
        copy_to_packet(p, 0, mac.as_ptr(), 12);
        wr_be16(p, 12, ETH_P_IPV6);
        let o = ETH_LEN;
        let plen = (ICMP_HDR_LEN + quote) as u16;
        wr_be32(p, o, 6 << 28);
        wr_be16(p, o + 4, plen);
        wr_u8(p, o + 6, PROTO_ICMPV6);
        wr_u8(p, o + 7, 64);
        copy_to_packet(p, o + 8, tmp.src.as_ptr(), 16);
        copy_to_packet(p, o + 24, ip.src.as_ptr(), 16);
        let ic = o + IPV6_LEN;
        // Pseudo-header (RFC 8200 §8.1) + ICMPv6 header + quote.
        let sum = sum_bytes(&tmp.src)
            + sum_bytes(&ip.src)
            + plen as u64
            + PROTO_ICMPV6 as u64
            + 0x0200
            + (mtu >> 16) as u64
            + (mtu & 0xffff) as u64
            + qsum;
        wr_u8(p, ic, 2);
        wr_u8(p, ic + 1, 0);
        wr_be16(p, ic + 2, !fold(sum));
        wr_be32(p, ic + 4, mtu);
    } else {
        let Some(p) = ptr_at::<[u8; ETH_LEN + IPV4_LEN + ICMP_HDR_LEN]>(ctx, 0) else {
            return (xdp_action::XDP_DROP, Counter::PassNoHeadroom);
        };
        let p = p as *mut u8;
        copy_to_packet(p, 0, mac.as_ptr(), 12);
        wr_be16(p, 12, ETH_P_IP);
        let o = ETH_LEN;
        let tot = (IPV4_LEN + ICMP_HDR_LEN + quote) as u16;
        let ttl_proto = (64u16 << 8) | PROTO_ICMP as u16;
        let addr_sum = rd_be16(tmp.src.as_ptr(), 0) as u64
            + rd_be16(tmp.src.as_ptr(), 2) as u64
            + rd_be16(ip.src.as_ptr(), 0) as u64
            + rd_be16(ip.src.as_ptr(), 2) as u64;
        // TOS 0xc0: internetwork control, as routers mark their ICMP errors.
        let ipsum = 0x45c0u64 + tot as u64 + ttl_proto as u64 + addr_sum;
        wr_be16(p, o, 0x45c0);
        wr_be16(p, o + 2, tot);
        wr_be32(p, o + 4, 0);
        wr_be16(p, o + 8, ttl_proto);
        wr_be16(p, o + 10, !fold(ipsum));
        copy_to_packet(p, o + 12, tmp.src.as_ptr(), 4);
        copy_to_packet(p, o + 16, ip.src.as_ptr(), 4);
        let ic = o + IPV4_LEN;
        let mtu16 = mtu as u16;
        let sum = 0x0304u64 + mtu16 as u64 + qsum;
        wr_be16(p, ic, 0x0304);
        wr_be16(p, ic + 2, !fold(sum));
        wr_be16(p, ic + 4, 0);
        wr_be16(p, ic + 6, mtu16);
    }
    (xdp_action::XDP_TX, Counter::TooBigIcmp)
}

/// Copies `n` bytes from map memory into the packet (bounds already checked by the caller).
#[inline(always)]
fn copy_to_packet(p: *mut u8, off: usize, from: *const u8, n: usize) {
    unsafe { core::ptr::copy_nonoverlapping(from, p.add(off), n) };
}

// ---------------------------------------------------------------- ETR

/// Verdict of [`etr`] for a packet that is not LISP data for us (the ITR path may still want
/// it): not an XDP action.
const NOT_FOR_ETR: u32 = u32::MAX;

/// LISP data for a local RLOC: decapsulate; otherwise `(NOT_FOR_ETR, _)`.
///
/// A called function must not return an `Option` of a tuple: rustc describes it in BTF as a
/// union whose member sits at a non-zero offset, which the kernel refuses, and the object's
/// whole BTF is then dropped at load time.
#[inline(never)]
fn etr(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) -> (u32, Counter) {
    etr_decapsulate(ctx, s, ifindex).unwrap_or((NOT_FOR_ETR, Counter::PassNoMatch))
}

/// The body of [`etr`]; `None` when the packet is not LISP data for us.
#[inline(always)]
fn etr_decapsulate(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) -> Option<(u32, Counter)> {
    let Scratch {
        fib,
        outer,
        inner,
        nh,
        rkey,
        etr_key,
        ekey,
        absent_eid,
        ..
    } = s;
    let outer: &Ip = outer;
    if outer.proto != PROTO_UDP && !(outer.v6 && outer.proto == PROTO_IPV6_FRAG) {
        return None;
    }
    set_rloc_key(rkey, if outer.v6 { AF_IPV6 } else { AF_IPV4 }, &outer.dst);
    LOCAL_RLOCS.get_ptr(&*rkey)?;
    if outer.fragment {
        return Some((xdp_action::XDP_PASS, Counter::PassFragment));
    }
    let drop = Some((xdp_action::XDP_DROP, Counter::DropBadLisp));
    let udp_off = ETH_LEN + (outer.hdr_len & 0x3c);
    let payload = outer.total_len - outer.hdr_len;
    if payload < UDP_LEN {
        // Cannot even see the port: not ours to judge.
        return None;
    }
    let udp = ptr_at::<[u8; UDP_LEN]>(ctx, udp_off)? as *const u8;
    if rd_be16(udp, 2) != LISP_DATA_PORT {
        return None;
    }
    let udp_len = rd_be16(udp, 4) as usize;
    if udp_len > payload || udp_len < UDP_LEN + HEADER_LEN + IPV4_LEN {
        return drop;
    }
    let lisp_off = udp_off + UDP_LEN;
    let Some(lh) = ptr_at::<[u8; HEADER_LEN]>(ctx, lisp_off) else {
        return drop;
    };
    let lh = lh as *const u8;
    let f = rd_u8(lh, 0);
    if f & lisp_flags::N != 0 && f & lisp_flags::V != 0 {
        return drop;
    }
    let iid = if f & lisp_flags::I != 0 {
        u32::from_be_bytes([0, rd_u8(lh, 4), rd_u8(lh, 5), rd_u8(lh, 6)])
    } else {
        0
    };
    let inner_off = lisp_off + HEADER_LEN;
    let avail = udp_len - UDP_LEN - HEADER_LEN;
    // (Every valid inner packet has 4 bytes; see too_big for why not 1.)
    let Some(b0) = ptr_at::<[u8; 4]>(ctx, inner_off) else {
        return drop;
    };
    let inner_v6 = match unsafe { (*b0)[0] } >> 4 {
        4 => false,
        6 => true,
        _ => return drop,
    };
    if parse_ip(ctx, inner_off, inner_v6, inner).is_none() {
        return drop;
    }
    let inner: &Ip = inner;
    if inner.total_len > avail {
        return drop;
    }

    // ECN decapsulation, RFC 6040 §4.2 (a drop is returned after the instance check, whose
    // counter takes precedence).
    let o_ecn = outer.tos & 3;
    let i_ecn = inner.tos & 3;
    let ecn_drop = i_ecn == 0 && o_ecn == 3;
    let new_ecn = if i_ecn == 0 {
        0
    } else if o_ecn == 3 || (o_ecn == 1 && i_ecn == 2) {
        o_ecn
    } else {
        i_ecn
    };
    // TTL: min(inner, outer), RFC 9300 §5.3.
    let mut ttl = if outer.ttl < inner.ttl {
        outer.ttl
    } else {
        inner.ttl
    };

    // Route the inner packet before changing anything: from the cache while it is fresh, else
    // by a FIB lookup in the instance's table (and cached when it forwards).
    etr_key.instance_id = iid;
    etr_key.ifindex = ifindex;
    etr_key.family = if inner_v6 { AF_IPV6 } else { AF_IPV4 } as u32;
    etr_key.addr = inner.dst;
    let now = cache_clock();
    let mut routed = false;
    if let Some(c) = ETR_NEXT_HOPS.get_ptr(&*etr_key)
        && now.wrapping_sub(unsafe { (*c).stamp }) < NEXT_HOP_TTL_NS
    {
        copy_next_hop(nh, c);
        routed = true;
    } else {
        // Instance-id → routing table. Only configured instances are decapsulated, the
        // default one (0, no I bit) too: the agent lists each (table 0 = the main table
        // through the policy rules).
        let tbid = match unsafe { IID_TABLES.get(iid) } {
            Some(t) => *t,
            None => return Some((xdp_action::XDP_DROP, Counter::DropUnknownInstance)),
        };
        // Is the destination still one of our EIDs? Checked here, when the next-hop cache is
        // (re)filled, not per packet: the fast path stays one hash lookup. The packet is
        // delivered either way; the event (raised once this frame is gone) lets the agent
        // tell the sending ITR with an SMR.
        if let Some(st) = settings()
            && st.flags & settings_flags::CHECK_LOCAL_EIDS != 0
        {
            let family = if inner_v6 { AF_IPV6 } else { AF_IPV4 };
            *ekey = EidKey::new(family, iid, inner.dst);
            let bits = EID_KEY_PREFIX_BITS + if inner_v6 { 128 } else { 32 };
            if LOCAL_EIDS.get(Key::new(bits, *ekey)).is_none() {
                *absent_eid = true;
            }
        }
        if !ecn_drop {
            let rc = fib_inner(ctx, fib, inner, new_ecn, tbid, ifindex);
            if rc == BPF_FIB_LKUP_RET_SUCCESS {
                next_hop_from_fib(nh, fib, now);
                #[allow(clippy::needless_borrows_for_generic_args)]
                let _ = ETR_NEXT_HOPS.insert(&*etr_key, &*nh, 0);
                routed = true;
            }
        }
    }
    if ecn_drop {
        return Some((xdp_action::XDP_DROP, Counter::DropEcn));
    }
    // Too big for the egress MTU: the kernel fragments it or tells the source (the FIB lookup
    // reports that case as FRAG_NEEDED; a cached next hop has the MTU to compare with).
    let forward = routed && ttl > 1 && inner.total_len <= nh.mtu as usize;
    if forward {
        ttl -= 1;
    }
    let counter = if forward {
        Counter::Decap
    } else {
        Counter::DecapPass
    };

    let Some(eth) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return drop;
    };
    let (dmac, smac): ([u8; 6], [u8; 6]) = if forward {
        (nh.dmac, nh.smac)
    } else {
        // For the kernel: the frame stays addressed to this interface.
        (rd_bytes(eth as *const u8, 0), rd_bytes(eth as *const u8, 6))
    };
    let shrink = inner_off - ETH_LEN;
    // Rewrite the inner header in place first (its position does not depend on the head).
    if inner_v6 {
        let h = ptr_at::<[u8; IPV6_LEN]>(ctx, inner_off & 0x7f)? as *mut u8;
        let w0 = rd_be16(h, 0);
        wr_be16(h, 0, (w0 & !0x0030) | ((new_ecn as u16) << 4));
        wr_u8(h, 7, ttl);
    } else {
        let h = ptr_at::<[u8; IPV4_LEN]>(ctx, inner_off & 0x7f)? as *mut u8;
        let old_tos = rd_be16(h, 0);
        let new_tos = (old_tos & !3) | new_ecn as u16;
        let old_ttl = rd_be16(h, 8);
        let new_ttl = ((ttl as u16) << 8) | (old_ttl & 0xff);
        let mut csum = rd_be16(h, 10);
        csum = csum_replace(csum, old_tos, new_tos);
        csum = csum_replace(csum, old_ttl, new_ttl);
        wr_be16(h, 0, new_tos);
        wr_be16(h, 8, new_ttl);
        wr_be16(h, 10, csum);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, shrink as i32) } != 0 {
        // Cannot happen for a shrink inside the packet; the inner header is already consistent
        // but the outer TTL/ECN relation is not, so do not let it through half-done.
        return Some((xdp_action::XDP_DROP, Counter::PassNoHeadroom));
    }
    let Some(p) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return Some((xdp_action::XDP_DROP, Counter::PassNoHeadroom));
    };
    let p = p as *mut u8;
    wr_bytes(p, 0, &dmac);
    wr_bytes(p, 6, &smac);
    wr_be16(p, 12, if inner_v6 { ETH_P_IPV6 } else { ETH_P_IP });
    if forward {
        Some((unsafe { bpf_redirect(nh.ifindex, 0) } as u32, counter))
    } else {
        Some((xdp_action::XDP_PASS, counter))
    }
}

/// FIB lookup for a decapsulated packet in table `tbid` (0: the main table, through the policy
/// rules); `fib` holds the result.
#[inline(always)]
fn fib_inner(
    ctx: &XdpContext,
    fib: &mut bpf_fib_lookup,
    inner: &Ip,
    new_ecn: u8,
    tbid: u32,
    ifindex: u32,
) -> u32 {
    unsafe { core::ptr::write_bytes(fib as *mut bpf_fib_lookup, 0, 1) };
    fib.l4_protocol = inner.proto;
    // Non-zero tot_len: the kernel checks it against the route's MTU and reports the MTU.
    fib.__bindgen_anon_1.tot_len = inner.total_len as u16;
    fib.ifindex = ifindex;
    if inner.v6 {
        fib.family = AF_INET6;
        fib.__bindgen_anon_2.flowinfo = ((((inner.tos & !3) | new_ecn) as u32) << 20).to_be();
        fib.__bindgen_anon_3.ipv6_src = words(&inner.src);
        fib.__bindgen_anon_4.ipv6_dst = words(&inner.dst);
    } else {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = (inner.tos & !3) | new_ecn;
        fib.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([inner.src[0], inner.src[1], inner.src[2], inner.src[3]]);
        fib.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([inner.dst[0], inner.dst[1], inner.dst[2], inner.dst[3]]);
    }
    let mut flags = 0;
    if tbid != 0 {
        fib.__bindgen_anon_5.tbid = tbid;
        // The kernel honours TBID only together with DIRECT (no policy rules: the table is
        // the instance's, by configuration).
        flags |= BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID;
    }
    (unsafe {
        fib_lookup(
            ctx.as_ptr(),
            fib as *mut _,
            size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    }) as u32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
