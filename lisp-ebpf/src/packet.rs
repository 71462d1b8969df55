//! Byte-level helpers on packet and map memory: bounds-checked packet pointers, big-endian
//! reads and writes, one's-complement sums, the flow hash.

#[allow(unused_imports)]
use crate::*;

/// Bounds-checked pointer into the packet; the check is what the verifier needs to see.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
pub(crate) fn rd_u8(p: *const u8, off: usize) -> u8 {
    unsafe { *p.add(off) }
}
#[inline(always)]
pub(crate) fn rd_be16(p: *const u8, off: usize) -> u16 {
    unsafe { u16::from_be_bytes([*p.add(off), *p.add(off + 1)]) }
}
#[inline(always)]
pub(crate) fn wr_u8(p: *mut u8, off: usize, v: u8) {
    unsafe { *p.add(off) = v }
}
#[inline(always)]
pub(crate) fn wr_be16(p: *mut u8, off: usize, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
    }
}
#[inline(always)]
pub(crate) fn wr_be32(p: *mut u8, off: usize, v: u32) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
        *p.add(off + 2) = b[2];
        *p.add(off + 3) = b[3];
    }
}
#[inline(always)]
pub(crate) fn wr_bytes<const N: usize>(p: *mut u8, off: usize, v: &[u8; N]) {
    let mut i = 0;
    while i < N {
        unsafe { *p.add(off + i) = v[i] };
        i += 1;
    }
}
#[inline(always)]
pub(crate) fn rd_bytes<const N: usize>(p: *const u8, off: usize) -> [u8; N] {
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
pub(crate) fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
pub(crate) fn sum_bytes<const N: usize>(b: &[u8; N]) -> u64 {
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
pub(crate) fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    !fold((!csum) as u64 + (!old) as u64 + new as u64)
}

/// Mixing step of the flow hash (multiply-rotate; cheap, good enough to spread flows over
/// `SELECT_SLOTS` and UDP source ports).
#[inline(always)]
pub(crate) fn mix(h: u32, v: u32) -> u32 {
    (h ^ v).wrapping_mul(0x9e37_79b1).rotate_left(13)
}

#[inline(always)]
pub(crate) fn finish(mut h: u32) -> u32 {
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
pub(crate) fn set_addr4(a: &mut [u8; 16], v: [u8; 4]) {
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
pub(crate) fn set_rloc_key(k: &mut RlocKey, family: u8, addr: &[u8; 16]) {
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

#[inline(always)]
pub(crate) fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
