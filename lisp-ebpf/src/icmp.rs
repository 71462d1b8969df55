//! ICMP fragmentation-needed / Packet Too Big for packets too big once encapsulated.

#[allow(unused_imports)]
use crate::*;

/// ICMPv4 errors quote at most this much of the offending packet: 576 (RFC 1812 §4.3.2.3) minus
/// the error's own IPv4 and ICMP headers, rounded down to whole 32-bit words (summed 4 at a time).
pub(crate) const ICMP4_MAX_QUOTE: usize = 548;
/// ICMPv6 errors must fit the IPv6 minimum MTU (RFC 4443 §2.4 (c)): 1280 − 40 − 8.
pub(crate) const ICMP6_MAX_QUOTE: usize = 1232;
pub(crate) const ICMP_HDR_LEN: usize = 8;
pub(crate) const IPV6_MIN_MTU: u32 = 1280;
pub(crate) static QUOTE_CHUNKS: usize = ICMP6_MAX_QUOTE / 64;

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
pub(crate) fn too_big(ctx: &XdpContext, s: &mut Scratch, ifindex: u32) -> (u32, Counter) {
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
pub(crate) fn copy_to_packet(p: *mut u8, off: usize, from: *const u8, n: usize) {
    unsafe { core::ptr::copy_nonoverlapping(from, p.add(off), n) };
}
