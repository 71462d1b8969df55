//! The optional UDP checksum of IPv6 outer headers. RFC 6935/6936 allow a zero checksum for
//! tunnels (the default); some receivers still refuse it, so the agent can ask for a computed
//! one, globally or per RLOC. It costs a pass over the whole packet.

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};

use crate::{ETH_LEN, IPV6_LEN, PROTO_UDP, UDP_LEN, fold, ptr_at, rd_be16, wr_be16};

/// Offset bound of the summing loops, for the verifier: datagrams up to 16 KiB are summed.
const MAX_SUMMED: usize = 0x3fff;
/// A bound LLVM cannot see through (so it keeps the loop instead of unrolling it); the verifier
/// bounds the loop through the offset mask.
static CHUNKS: usize = MAX_SUMMED / 64;

/// Fills the UDP checksum of the IPv6/UDP/LISP frame the ITR has just written (its checksum
/// field is zero). A datagram longer than [`MAX_SUMMED`] keeps the zero checksum RFC 6935
/// allows.
#[inline(never)]
pub fn fill_udp6_checksum(ctx: &XdpContext) {
    const HDRS: usize = ETH_LEN + IPV6_LEN + UDP_LEN;
    let Some(h) = ptr_at::<[u8; HDRS]>(ctx, 0) else {
        return;
    };
    let h = h as *mut u8;
    let udp = ETH_LEN + IPV6_LEN;
    let ulen = rd_be16(h, udp + 4) as usize;
    if ulen < UDP_LEN + 8 || ulen > MAX_SUMMED {
        return;
    }
    // Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
    let mut sum = ulen as u64 + PROTO_UDP as u64;
    let mut i = 0;
    while i < 16 {
        sum += rd_be16(h, ETH_LEN + 8 + 2 * i) as u64;
        i += 1;
    }
    // The datagram: 64-byte chunks through bpf_csum_diff, then 4-byte words, then the last
    // 1–3 bytes from a 4-byte window that ends with the datagram.
    let mut off = 0usize;
    let mut c = 0;
    let chunks = unsafe { core::ptr::read_volatile(&CHUNKS) };
    while c < chunks {
        if off + 64 > ulen {
            break;
        }
        let Some(p) = ptr_at::<[u8; 64]>(ctx, udp + (off & MAX_SUMMED)) else {
            return;
        };
        let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, 64, 0) };
        if r < 0 {
            return;
        }
        // csum_partial sums host-order (little-endian) words: byte-swap the folded result.
        sum += fold(r as u64).swap_bytes() as u64;
        off += 64;
        c += 1;
    }
    let mut j = 0;
    while j < 16 {
        if off + 4 > ulen {
            break;
        }
        let Some(w) = ptr_at::<[u8; 4]>(ctx, udp + (off & MAX_SUMMED)) else {
            return;
        };
        let w = w as *const u8;
        sum += rd_be16(w, 0) as u64 + rd_be16(w, 2) as u64;
        off += 4;
        j += 1;
    }
    let rest = ulen - off;
    if rest > 0 {
        // `off` is a multiple of 4, so the first remaining byte is the high byte of a word.
        let Some(w) = ptr_at::<[u8; 4]>(ctx, udp + ((ulen - 4) & MAX_SUMMED)) else {
            return;
        };
        let w = w as *const u8;
        let b = |k: usize| unsafe { *w.add(k) } as u64;
        sum += match rest {
            1 => b(3) << 8,
            2 => (b(2) << 8) | b(3),
            _ => ((b(1) << 8) | b(2)) + (b(3) << 8),
        };
    }
    let Some(h) = ptr_at::<[u8; HDRS]>(ctx, 0) else {
        return;
    };
    let csum = !fold(sum);
    // A computed zero is sent as all ones (zero means "no checksum", RFC 768 / RFC 8200).
    wr_be16(h as *mut u8, udp + 6, if csum == 0 { 0xffff } else { csum });
}
