//! Parsing of IPv4/IPv6 headers, once per packet, into [`Ip`].

#[allow(unused_imports)]
use crate::*;

/// What the program needs of an IP header, parsed once.
#[repr(C, align(8))]
pub(crate) struct Ip {
    /// IPv4 addresses in the first 4 bytes. First, and the struct 8-aligned: [`set_addr4`]
    /// writes them as words.
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) v6: bool,
    /// Header length (IPv4 with options; 40 for IPv6, extension headers are payload here).
    pub(crate) hdr_len: usize,
    /// Total length of the IP packet (header + payload) as the header says.
    pub(crate) total_len: usize,
    /// IPv4 protocol / IPv6 next header.
    pub(crate) proto: u8,
    /// IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN).
    pub(crate) tos: u8,
    pub(crate) ttl: u8,
    /// Any fragment (IPv4 MF or offset; IPv6 fragment header first).
    pub(crate) fragment: bool,
    pub(crate) df: bool,
}

const _: () = assert!(core::mem::offset_of!(Ip, src) == 0 && core::mem::offset_of!(Ip, dst) == 16);

/// Parses the IP header at `off`. `None` when truncated or inconsistent (caller passes it).
#[inline(always)]
pub(crate) fn parse_ip(ctx: &XdpContext, off: usize, v6: bool, out: &mut Ip) -> Option<()> {
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
