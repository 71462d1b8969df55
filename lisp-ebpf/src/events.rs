//! Events to the agent (EVENTS perf array): map-cache misses, unresolved next hops, data for an
//! EID this router does not hold. Two limits apply to every event, so that what a remote party
//! can make the data plane emit is bounded whatever the traffic:
//!
//! - per destination: at most one event per key per `Settings::event_interval_ns` (EVENT_RATE);
//! - per kind and CPU: a token bucket (EVENT_BUCKETS), so that a scan of the whole EID space,
//!   one packet per destination, emits at most `burst + rate × time` events per CPU. Per CPU
//!   rather than global: no atomics or locks on the packet path, and the bound is still fixed
//!   (× the number of CPUs). One bucket per kind: a flood of misses cannot starve the
//!   next-hop events the agent needs to keep forwarding.

use aya_ebpf::{
    bindings::bpf_fib_lookup, helpers::generated::bpf_ktime_get_ns, programs::XdpContext,
};
use lisp_common::maps::{
    AF_IPV4, AF_IPV6, AF_NONE, DEFAULT_EVENT_COST_NS, DEFAULT_EVENT_CREDIT_MAX_NS, EidKey,
    MissEvent, NEXT_HOP_IID, event_kind,
};

use crate::{
    Counter, DEFAULT_EVENT_INTERVAL_NS, EVENT_BUCKETS, EVENT_RATE, EVENTS, Ip, Scratch, count,
    settings,
};

/// Bit set in the family byte of an absent-EID event's rate-limit key: that event and a miss for
/// the same destination (a router that is ITR and ETR) must not share a slot.
const ABSENT_EID_KEY_BIT: u8 = 0x80;
/// ... and this one when the ITR's RLOC is IPv6.
const ABSENT_EID_KEY_V6_RLOC: u8 = 0x40;

/// The outer FIB lookup found a route but no resolved neighbour: `fib` holds the egress
/// ifindex and the next-hop address (the gateway, or the RLOC itself when on-link). Tell the
/// agent, which makes the kernel resolve it; until then the packets are dropped.
#[inline(never)]
pub fn next_hop_unresolved(ctx: &XdpContext, fib: &bpf_fib_lookup, v6: bool) {
    let mut addr = [0u8; 16];
    let family = if v6 {
        let w = unsafe { fib.__bindgen_anon_4.ipv6_dst };
        let mut i = 0;
        while i < 4 {
            let b = w[i].to_ne_bytes();
            addr[i * 4] = b[0];
            addr[i * 4 + 1] = b[1];
            addr[i * 4 + 2] = b[2];
            addr[i * 4 + 3] = b[3];
            i += 1;
        }
        AF_IPV6
    } else {
        let b = unsafe { fib.__bindgen_anon_4.ipv4_dst }.to_ne_bytes();
        addr[..4].copy_from_slice(&b);
        AF_IPV4
    };
    let key = EidKey::new(family, NEXT_HOP_IID, addr);
    raise_event(
        ctx,
        &key,
        &key,
        &[0; 16],
        fib.ifindex,
        event_kind::NEXT_HOP_UNRESOLVED,
        AF_NONE,
        &[0; 16],
    );
}

/// Raises a miss event for `key`.
#[inline(never)]
pub fn miss(ctx: &XdpContext, key: &EidKey, ip: &Ip, ifindex: u32, kind: u8) {
    raise_event(ctx, key, key, &ip.src, ifindex, kind, AF_NONE, &[0; 16]);
}

/// The ETR decapsulated a packet for an EID it does not hold (see
/// [`lisp_common::maps::event_kind::DATA_FOR_ABSENT_EID`]); `s` still describes the packet.
#[inline(never)]
pub fn data_for_absent_eid(ctx: &XdpContext, s: &Scratch) {
    let family = if s.inner.v6 { AF_IPV6 } else { AF_IPV4 };
    let iid = s.etr_key.instance_id;
    let dst = EidKey::new(family, iid, s.inner.dst);
    // Limited per destination *and* ITR: every ITR still sending to a moved EID is told, not
    // only the first one. The ITR's RLOC, folded to 32 bits, is mixed into the last word of the
    // address (zero for IPv4 EIDs, so exact there; a collision for IPv6 only delays an event).
    let r = &s.outer.src;
    let mut fold = [r[0], r[1], r[2], r[3]];
    if s.outer.v6 {
        let mut i = 4;
        while i < 16 {
            fold[i % 4] ^= r[i];
            i += 1;
        }
    }
    let mut addr = s.inner.dst;
    addr[12] ^= fold[0];
    addr[13] ^= fold[1];
    addr[14] ^= fold[2];
    addr[15] ^= fold[3];
    let v6_bit = if s.outer.v6 {
        ABSENT_EID_KEY_V6_RLOC
    } else {
        0
    };
    let rate_key = EidKey::new(family | ABSENT_EID_KEY_BIT | v6_bit, iid, addr);
    raise_event(
        ctx,
        &rate_key,
        &dst,
        &s.inner.src,
        s.etr_key.ifindex,
        event_kind::DATA_FOR_ABSENT_EID,
        if s.outer.v6 { AF_IPV6 } else { AF_IPV4 },
        &s.outer.src,
    );
}

/// Takes one event's worth of credit from the bucket of `kind` on this CPU, if there is one.
#[inline(always)]
fn bucket_allows(kind: u8, now: u64) -> bool {
    let (cost, max) = match settings() {
        Some(st) if st.event_cost_ns != 0 && st.event_credit_max_ns != 0 => {
            (st.event_cost_ns, st.event_credit_max_ns)
        }
        _ => (DEFAULT_EVENT_COST_NS, DEFAULT_EVENT_CREDIT_MAX_NS),
    };
    let Some(b) = EVENT_BUCKETS.get_ptr_mut(kind as u32) else {
        return false;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let b = unsafe { &mut *b };
    // Credit accrues with time (1 ns of credit per ns), up to the burst. The all-zero initial
    // state has accrued the time since boot: a full bucket.
    let mut credit = b.credit_ns.saturating_add(now.wrapping_sub(b.stamp));
    if credit > max {
        credit = max;
    }
    b.stamp = now;
    if credit < cost {
        b.credit_ns = credit;
        return false;
    }
    b.credit_ns = credit - cost;
    true
}

/// Sends `kind` for `dst` on EVENTS unless one was sent for `rate_key` within the interval or
/// the kind's bucket is empty; each suppression is counted.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn raise_event(
    ctx: &XdpContext,
    rate_key: &EidKey,
    dst: &EidKey,
    src: &[u8; 16],
    ifindex: u32,
    kind: u8,
    rloc_family: u8,
    rloc: &[u8; 16],
) {
    let now = unsafe { bpf_ktime_get_ns() };
    let interval = match settings() {
        Some(st) if st.event_interval_ns != 0 => st.event_interval_ns,
        _ => DEFAULT_EVENT_INTERVAL_NS,
    };
    if let Some(last) = EVENT_RATE.get_ptr(rate_key) {
        let last = unsafe { *last };
        if now.wrapping_sub(last) < interval {
            count(Counter::MissRateLimited);
            return;
        }
    }
    // After the per-destination check, so that repeats of one destination cost no credit; a
    // destination refused here is not remembered, so it gets its event once credit is back.
    if !bucket_allows(kind, now) {
        count(Counter::EventBucketEmpty);
        return;
    }
    let _ = EVENT_RATE.insert(rate_key, now, 0);
    let ev = MissEvent {
        dst: *dst,
        src: *src,
        ifindex,
        kind,
        rloc_family,
        _pad: [0; 2],
        rloc: *rloc,
    };
    EVENTS.output(ctx, ev, 0);
    count(Counter::MissEvent);
}

/// Bit set in the family byte of a detection's rate-limit key (see [`ABSENT_EID_KEY_BIT`]).
const DETECTION_KEY_BIT: u8 = 0x20;
/// Marks an EVENT_RATE stamp of a source whose detection the bucket refused: seen again, it
/// draws from the repeat bucket.
const REFUSED: u64 = 1 << 63;

/// A dynamic EID detected (`s.dkey`, `s.det` packed, see
/// [`lisp_common::maps::event_kind::DYNAMIC_EID_DETECTED`]).
///
/// Limits: one event per EID per interval; first sightings draw from the detection bucket,
/// and a source the bucket refused is remembered (in the same LRU) so that its next packet
/// draws from a second, repeat bucket. A flood of spoofed sources, each sending once, empties
/// the first bucket only; a real host keeps sending (and a hypervisor repeats its GARPs), so
/// it is still reported within one more packet.
#[inline(never)]
pub fn dynamic_eid_detected(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    let interval = match settings() {
        Some(st) if st.event_interval_ns != 0 => st.event_interval_ns,
        _ => DEFAULT_EVENT_INTERVAL_NS,
    };
    s.rate_key = s.dkey;
    s.rate_key.family_iid[0] |= DETECTION_KEY_BIT;
    let mut bucket = event_kind::DYNAMIC_EID_DETECTED;
    if let Some(last) = EVENT_RATE.get_ptr(&s.rate_key) {
        let last = unsafe { *last };
        if last & REFUSED != 0 {
            bucket = event_kind::DETECTION_REPEAT_BUCKET;
        } else if now.wrapping_sub(last) < interval {
            count(Counter::DetectionSuppressed);
            return;
        }
    }
    if !bucket_allows(bucket, now) {
        if bucket == event_kind::DYNAMIC_EID_DETECTED {
            let _ = EVENT_RATE.insert(&s.rate_key, now | REFUSED, 0);
        }
        count(Counter::DetectionSuppressed);
        return;
    }
    let _ = EVENT_RATE.insert(&s.rate_key, now, 0);
    s.ev.dst = s.dkey;
    s.ev.src = s.det;
    s.ev.ifindex = ifindex;
    s.ev.kind = event_kind::DYNAMIC_EID_DETECTED;
    s.ev.rloc_family = AF_NONE;
    s.ev._pad = [0; 2];
    s.ev.rloc = [0; 16];
    EVENTS.output(ctx, &s.ev, 0);
    count(Counter::DetectionEvent);
}
