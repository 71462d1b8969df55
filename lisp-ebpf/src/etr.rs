//! The ETR: decapsulation of LISP data to a local RLOC (RFC 9300 §5.3), instance checks,
//! RFC 6040 ECN, delivery by the instance's routing table.

#[allow(unused_imports)]
use crate::*;

/// Verdict of [`etr`] for a packet that is not LISP data for us (the ITR path may still want
/// it): not an XDP action.
pub(crate) const NOT_FOR_ETR: u32 = u32::MAX;
/// Verdict of [`etr`] for LISP data whose inner destination is an "away" entry of the
/// map-cache (`Scratch::inner_off`, `inner`, `etr_key` describe it; nothing written yet).
pub(crate) const REENCAPSULATE: u32 = u32::MAX - 2;

/// LISP data for a local RLOC: decapsulate; otherwise `(NOT_FOR_ETR, _)`.
///
/// A called function must not return an `Option` of a tuple: rustc describes it in BTF as a
/// union whose member sits at a non-zero offset, which the kernel refuses, and the object's
/// whole BTF is then dropped at load time.
#[inline(never)]
pub(crate) fn etr(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) -> (u32, Counter) {
    etr_decapsulate(ctx, s, ifindex).unwrap_or((NOT_FOR_ETR, Counter::PassNoMatch))
}

/// The body of [`etr`]; `None` when the packet is not LISP data for us.
#[inline(always)]
pub(crate) fn etr_decapsulate(
    ctx: &XdpContext,
    s: &mut Scratch,
    ifindex: u32,
) -> Option<(u32, Counter)> {
    let Scratch {
        fib,
        outer,
        inner,
        nh,
        rkey,
        etr_key,
        ekey,
        absent_eid,
        inner_off: inner_off_out,
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
    // A dynamic EID that moved away: the map-cache holds its new RLOC (one hash lookup per
    // decapsulated packet, on routers with mobility only; a cached next hop must not win,
    // since it was filled while the host was here).
    if let Some(st) = settings()
        && st.flags & settings_flags::REENCAP_AWAY != 0
    {
        let family = if inner_v6 { AF_IPV6 } else { AF_IPV4 };
        *ekey = EidKey::new(family, iid, inner.dst);
        if let Some(e) = MAP_CACHE_HOST.get_ptr(&*ekey)
            && unsafe { (*e).action } == action::ENCAPSULATE
        {
            etr_key.instance_id = iid;
            etr_key.ifindex = ifindex;
            *inner_off_out = inner_off;
            return Some((REENCAPSULATE, Counter::Reencap));
        }
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
pub(crate) fn fib_inner(
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
