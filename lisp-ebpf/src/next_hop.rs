//! The next-hop caches of both directions (per RLOC for the ITR, per instance, interface and
//! inner destination for the ETR): a hash lookup instead of a FIB lookup per packet.

#[allow(unused_imports)]
use crate::*;

/// A resolved next hop towards an RLOC: value of [`NEXT_HOPS`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct NextHop {
    pub(crate) ifindex: u32,
    /// Egress MTU (L3) as the FIB reported it.
    pub(crate) mtu: u32,
    pub(crate) dmac: [u8; 6],
    pub(crate) smac: [u8; 6],
    pub(crate) _pad: u32,
    /// [`cache_clock`] at the FIB lookup that produced it.
    pub(crate) stamp: u64,
}

/// Next-hop cache per RLOC, internal to the program (the agent needs not know it). A FIB lookup
/// costs ~170 ns here, the bulk of an encapsulation; the cache turns it into a hash lookup.
/// Entries are revalidated by a new FIB lookup once older than [`NEXT_HOP_TTL_NS`], so a route
/// or neighbour change reaches the data plane within that time. Only successful lookups are
/// cached: unresolved neighbours keep going to the kernel, which resolves them.
#[map(name = "NEXT_HOPS")]
pub(crate) static NEXT_HOPS: LruHashMap<RlocKey, NextHop> = LruHashMap::with_max_entries(16384, 0);
pub(crate) const NEXT_HOP_TTL_NS: u64 = 100_000_000;

/// Clock of the next-hop caches: the coarse one (a tick's resolution, a few ms against the
/// 100 ms TTL) is read from memory, without the clocksource access of bpf_ktime_get_ns, and it
/// is read on every forwarded packet.
#[inline(always)]
pub(crate) fn cache_clock() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Key of [`ETR_NEXT_HOPS`]: where a decapsulated packet goes depends on the instance (its
/// routing table), the ingress interface (the FIB lookup's `iif`, and whether forwarding is on
/// there) and the inner destination.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EtrKey {
    pub(crate) instance_id: u32,
    pub(crate) ifindex: u32,
    /// AF_IPV4 / AF_IPV6, as a word: no padding to zero.
    pub(crate) family: u32,
    pub(crate) addr: [u8; 16],
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
pub(crate) static ETR_NEXT_HOPS: LruHashMap<EtrKey, NextHop> =
    LruHashMap::with_max_entries(65536, 0);

/// Copies a cached next hop out of its map value.
#[inline(always)]
pub(crate) fn copy_next_hop(to: &mut NextHop, from: *const NextHop) {
    // SAFETY: `from` is a map value (valid for this run), `to` scratch memory: distinct.
    unsafe { core::ptr::copy_nonoverlapping(from, to as *mut NextHop, 1) };
}

/// A successful FIB lookup as a cacheable next hop stamped `now`.
#[inline(always)]
pub(crate) fn next_hop_from_fib(nh: &mut NextHop, fib: &bpf_fib_lookup, now: u64) {
    nh.ifindex = fib.ifindex;
    // Set on success too (since Linux 5.12) when tot_len was given.
    nh.mtu = unsafe { fib.__bindgen_anon_1.mtu_result } as u32;
    nh.dmac = fib.dmac;
    nh.smac = fib.smac;
    nh.stamp = now;
}
