//! Dynamic-EID detection on mobility interfaces (reference design: `lisp mobility`).
//!
//! A source inside the interface's dynamic-EID prefixes (across-subnet mode: and outside the
//! interface's own subnets) that is not a known local dynamic EID there raises a detection
//! event; a known one costs one hash lookup and, at most once per
//! [`LAST_SEEN_REFRESH_NS`], a store of its last-seen stamp through the looked-up value (never
//! a map update per packet). Gratuitous ARP, RARP and IPv6 ND count too: a hypervisor announces
//! a migrated VM that way before the VM sends anything. The packet itself is never changed
//! here; the caller carries on with it as before.

#[allow(unused_imports)]
use crate::*;

use lisp_common::maps::{
    Detection, LAST_SEEN_REFRESH_NS, SCOPED_KEY_PREFIX_BITS, ScopedEidKey, detection,
    mobility_flags,
};

const ARP_LEN: usize = 28;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;

/// An IP packet on a mobility interface (`s.outer` parsed at `l3`, `s.mob` and `s.vlan` set):
/// ND by its addresses, anything else by its source.
#[inline(always)]
pub(crate) fn observe_ip(ctx: &XdpContext, s: &mut Scratch, l3: usize, ifindex: u32) {
    let mut kind = detection::DATA;
    s.det_addr = s.outer.src;
    // RFC 4861 §7.1: ND is only valid with hop limit 255 (never forwarded).
    if s.outer.v6 && s.outer.proto == PROTO_ICMPV6 && s.outer.ttl == 255 {
        if let Some(icmp) = ptr_at::<[u8; 24]>(ctx, (l3 & 0x1f) + IPV6_LEN) {
            let icmp = icmp as *const u8;
            let t = rd_u8(icmp, 0);
            if t == ICMPV6_NS || t == ICMPV6_NA {
                kind = detection::NEIGHBOUR_DISCOVERY;
                // An NA announces its target; so does a DAD NS (unspecified source). Any
                // other NS comes from its source.
                if t == ICMPV6_NA || s.outer.src == [0; 16] {
                    s.det_addr = rd_bytes::<16>(icmp, 8);
                }
            }
        }
    }
    observe(ctx, s, s.outer.v6, kind, ifindex);
}

/// An ARP (`rarp` false) or RARP frame at `l3` on a mobility interface.
#[inline(always)]
pub(crate) fn observe_arp(ctx: &XdpContext, s: &mut Scratch, l3: usize, rarp: bool, ifindex: u32) {
    let Some(a) = ptr_at::<[u8; ARP_LEN]>(ctx, l3 & 0x1f) else {
        return;
    };
    let a = a as *const u8;
    // Ethernet / IPv4 only.
    if rd_be16(a, 0) != 1 || rd_be16(a, 2) != ETH_P_IP || rd_u8(a, 4) != 6 || rd_u8(a, 5) != 4 {
        return;
    }
    let spa: [u8; 4] = rd_bytes(a, 14);
    let tpa: [u8; 4] = rd_bytes(a, 24);
    let (addr, kind) = if rarp {
        // Hypervisors' RARP often carries no address at all (the MAC only): nothing to detect
        // then (the agent cannot map a MAC to an EID from here).
        (if spa != [0; 4] { spa } else { tpa }, detection::RARP)
    } else if spa == tpa {
        (spa, detection::GRATUITOUS_ARP)
    } else {
        // An ordinary ARP request or reply: not an announcement.
        return;
    };
    if addr == [0; 4] {
        return;
    }
    set_addr4(&mut s.det_addr, addr);
    observe(ctx, s, false, kind, ifindex);
}

/// `s.det_addr` seen on the mobility interface `s.mob`: refresh it if known here, else report
/// it if it is a dynamic EID of the interface.
#[inline(always)]
fn observe(ctx: &XdpContext, s: &mut Scratch, v6: bool, kind: u8, ifindex: u32) {
    let family = if v6 { AF_IPV6 } else { AF_IPV4 };
    s.dkey = EidKey::new(family, s.mob.map_instance_id, s.det_addr);
    if let Some(p) = LOCAL_DYNAMIC_EIDS.get_ptr_mut(&s.dkey) {
        // SAFETY: map value, valid for this run; concurrent CPUs at worst store the same stamp.
        let st = unsafe { &mut *p };
        if st.ifindex == ifindex && st.vlan == s.vlan {
            let now = cache_clock();
            // A stamp in the future (agent's clock read a tick later) counts as fresh.
            if now.saturating_sub(st.last_seen_ns) >= LAST_SEEN_REFRESH_NS {
                st.last_seen_ns = now;
            }
            return;
        }
        // Known, but on another interface or VLAN of this router: it moved here.
    }
    s.lpm.prefix_len = SCOPED_KEY_PREFIX_BITS + if v6 { 128 } else { 32 };
    s.lpm.data = ScopedEidKey::new(s.mob.map_id, s.dkey);
    if DYNAMIC_PREFIXES.get(&s.lpm).is_none() {
        return;
    }
    if s.mob.flags & mobility_flags::EXTENDED_SUBNET == 0 {
        s.lpm.data.scope = s.mob.subnet_scope.to_be_bytes();
        if IFACE_SUBNETS.get(&s.lpm).is_some() {
            return;
        }
    }
    let Some(eth) = ptr_at::<[u8; ETH_LEN]>(ctx, 0) else {
        return;
    };
    s.det = Detection {
        mac: rd_bytes(eth as *const u8, 6),
        vlan: s.vlan,
        kind,
    }
    .pack();
    events::dynamic_eid_detected(ctx, s, ifindex);
}
