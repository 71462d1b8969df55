//! The ITR: map-cache lookup, RLOC choice and LISP encapsulation (RFC 9300 §5).

#[allow(unused_imports)]
use crate::*;

#[inline(always)]
pub(crate) fn lookup_map_cache(key: &EidKey, v6: bool) -> Option<*const MapCacheEntry> {
    if let Some(e) = MAP_CACHE_HOST.get_ptr(key) {
        return Some(e);
    }
    let bits = EID_KEY_PREFIX_BITS + if v6 { 128 } else { 32 };
    MAP_CACHE_PREFIX
        .get(Key::new(bits, *key))
        .map(|e| e as *const MapCacheEntry)
}

/// Inner 5-tuple hash: addresses, protocol, and ports for unfragmented TCP/UDP.
#[inline(always)]
pub(crate) fn flow_hash(ctx: &XdpContext, ip: &Ip) -> u32 {
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
pub(crate) fn itr(ctx: &XdpContext, s: &mut Scratch, ifindex: u32, iid: u32) -> (u32, Counter) {
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
        // An entry the agent wrote inconsistently: drop, and say so (an agent bug, not
        // something a packet can trigger, so the log cannot be flooded from outside).
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

/// FIB lookup for the outer header; `fib` holds the result.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fib_outer(
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
pub(crate) fn write_udp_lisp(p: *mut u8, o: usize, sport: u16, inner_len: usize, w0: u32, w1: u32) {
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
pub(crate) fn lisp_header_bytes(w0: u32, w1: u32) -> [u8; 8] {
    let a = w0.to_be_bytes();
    let b = w1.to_be_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// Only reachable if the verifier-visible bounds check fails after a successful grow, which the
/// packet length makes impossible; shrink back and let the slow path encapsulate the original.
#[inline(always)]
pub(crate) fn undo_head(
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
