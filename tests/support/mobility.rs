//! The VM-mobility topology shared by tests/e2e_mobility.rs, `cargo xtask lab` and `cargo xtask
//! bench`: two data-centre sites, a map-server, a remote site, and a VM that moves.
//!
//! ```text
//!                                   ms (map-server / map-resolver 192.0.2.66)
//!                                    |
//!        xa (xTR A 192.0.2.2) ───── core ───── xb (xTR B 192.0.2.34)
//!        [xa2 (xTR A2 192.0.2.18)]   |          |
//!         | vlan10                   |          | vlan10
//!   lana [br0] ═══ ext (extended-subnet mode only) ═══ [br0] lanb
//!         |                          |
//!        vm (198.51.100.10, 2001:db8:1::10, MAC fixed)     ri (remote ITR 192.0.2.50) ── rh
//!                                                          (203.0.113.130, 2001:db8:3::10)
//! ```
//!
//! * Each site's LAN is a bridge in a namespace of its own; an xTR's mobility interface is a veth
//!   named `vlan10` (the SVI of VLAN 10 on a real router: this machine has no 802.1Q) whose other
//!   end is a bridge port. The VM's vNIC is a port of a hypervisor switch (namespace `hv`) whose
//!   uplink ends in a LAN port called `vmport`; [`MobilityLab::move_vm`] re-plugs that port into
//!   the other LAN, so the VM keeps its IP, MAC, routes and ARP cache and never sees its carrier
//!   drop (as in a live migration).
//! * The first-hop gateway is what HSRP would make it (that issue has not landed): the active
//!   gateway of every site (xTRs A and B) owns the same virtual IP and virtual MAC ([`GW_V4`],
//!   [`GW_V6`], [`VMAC`]) on a macvlan over its SVI, and the VM keeps the gateway's MAC in its
//!   neighbour cache (a permanent entry) across the move. Each SVI has a MAC and addresses of its
//!   own, outside the dynamic-EID prefixes so that router-to-router traffic on the LAN is never
//!   mistaken for a roaming host.
//! * **Extended-subnet mode**: both LANs carry 198.51.100.0/24 and 2001:db8:1::/64, joined by a
//!   veth pair standing in for the LAN extension (OTV). The extension must not let one site's
//!   gateway MAC move to the other site (OTV filters FHRP for that reason); a sticky static FDB
//!   entry pins [`VMAC`] to the local xTR's port in each bridge. Multicast (the map-notify-group)
//!   crosses the extension, and IGMP/MLD snooping is off so that no querier is needed.
//! * **Across-subnet mode**: site B's LAN is another subnet (203.0.113.0/25, 2001:db8:2::/64); the
//!   moved VM keeps its old gateway address and MAC. Until the first-hop gateway issue lands, the
//!   builder enables the kernel's proxy-ARP on site B's SVI itself (proxy_delay 0, or replies
//!   wait up to half a second) so that the VM's ARPs for its old subnet are answered.
//! * **Multihomed site A** (option): a second xTR (`xa2`) on site A's LAN, with its own MAC (it is
//!   not the active gateway), sharing the dynamic-EID map and its map-notify-group with xTR A.
//!
//! The RLOCs are IPv4 (one /28 per core link); the EIDs are IPv4 and IPv6.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::lab::{self, MapServerNode};
use super::netns::{Topology, in_netns};

// ------------------------------------------------------------------------------- namespaces

pub const CORE: &str = "core";
pub const MS: &str = "ms";
/// xTR A (site A), the VM's home site.
pub const XA: &str = "xa";
/// The second xTR of site A in the multihomed variant.
pub const XA2: &str = "xa2";
/// xTR B (site B), where the VM moves to.
pub const XB: &str = "xb";
pub const LAN_A: &str = "lana";
pub const LAN_B: &str = "lanb";
pub const VM: &str = "vm";
/// The hypervisor's switch the VM's vNIC is plugged into; its uplink is what moves.
pub const HV: &str = "hv";
pub const HV_UPLINK: &str = "uplink";
/// The remote site's ITR and its host (the one streaming to the VM).
pub const RI: &str = "ri";
pub const RH: &str = "rh";

/// The VM's interface and the LAN-side port it is plugged in through.
pub const VM_IF: &str = "eth0";
pub const VM_PORT: &str = "vmport";
/// The mobility interface (SVI) of every site xTR.
pub const SVI: &str = "vlan10";
/// The underlay interface of every xTR and of the remote ITR.
pub const RLOC_IF: &str = "rloc0";
/// The remote ITR's EID interface.
pub const RI_EID_IF: &str = "eid0";

// ------------------------------------------------------------------------------- addresses

/// The VM: fixed addresses and MAC, kept through every move.
pub const VM_V4: &str = "198.51.100.10";
pub const VM_V6: &str = "2001:db8:1::10";
pub const VM_MAC: &str = "02:00:00:00:99:10";

/// The subnet the VM lives in (site A's; site B's too in extended-subnet mode).
pub const HOME_V4: &str = "198.51.100.0/24";
pub const HOME_V6: &str = "2001:db8:1::/64";
/// The dynamic-EID prefixes (more specific than the subnet: hosts that may roam).
pub const DYN_V4: &str = "198.51.100.0/25";
pub const DYN_V6: &str = "2001:db8:1::/112";
/// Site B's own subnet in across-subnet mode.
pub const B_SUBNET_V4: &str = "203.0.113.0/25";
pub const B_SUBNET_V6: &str = "2001:db8:2::/64";
pub const B_SVI_ACROSS_V4: &str = "203.0.113.1";
pub const B_SVI_ACROSS_V6: &str = "2001:db8:2::1";

/// The virtual gateway every site's SVI owns (outside the dynamic prefixes).
pub const GW_V4: &str = "198.51.100.254";
pub const GW_V6: &str = "2001:db8:1::1:1";
/// HSRP v1 group 10's virtual MAC: what the VM's neighbour cache holds for its gateway.
pub const VMAC: &str = "00:00:0c:07:ac:0a";
/// The SVIs' own addresses in the VM's subnet (outside the dynamic prefixes).
pub const XA_SVI_V4: &str = "198.51.100.251";
pub const XA_SVI_V6: &str = "2001:db8:1::1:2";
pub const XB_SVI_V4: &str = "198.51.100.252";
pub const XB_SVI_V6: &str = "2001:db8:1::1:3";
pub const XA2_SVI_V4: &str = "198.51.100.253";
pub const XA2_SVI_V6: &str = "2001:db8:1::1:4";
/// The SVIs' own MACs (the virtual MAC lives on a macvlan, [`GW_IF`], of the active gateways;
/// xTR A2 is not one).
pub const XA_SVI_MAC: &str = "02:00:00:00:a1:0a";
pub const XB_SVI_MAC: &str = "02:00:00:00:b1:0a";
pub const XA2_SVI_MAC: &str = "02:00:00:00:a2:0a";
/// The macvlan holding the virtual gateway on xTRs A and B.
pub const GW_IF: &str = "gw";

/// The remote site: its ITR's EID side and the streaming host.
pub const REMOTE_V4: &str = "203.0.113.128/25";
pub const REMOTE_V6: &str = "2001:db8:3::/64";
pub const RH_V4: &str = "203.0.113.130";
pub const RH_V6: &str = "2001:db8:3::10";
pub const RI_EID_V4: &str = "203.0.113.129";
pub const RI_EID_V6: &str = "2001:db8:3::1";
pub const RH_MAC: &str = "02:00:00:00:33:10";
pub const RI_EID_MAC: &str = "02:00:00:00:33:01";

/// The map-notify-group of the dynamic-EID map (TTL 1 on the site LANs).
pub const GROUP: &str = "239.1.1.254";
/// The dynamic-EID map's name (as NX-OS's `lisp dynamic-eid Roamer-1`).
pub const MAP_NAME: &str = "Roamer-1";
pub const INSTANCE_ID: u32 = 0;

/// One underlay link: core side and router side of a /28, with fixed MACs.
#[derive(Clone, Copy, Debug)]
pub struct CoreLink {
    /// Namespace at the far end (also the core's interface name towards it).
    pub ns: &'static str,
    pub core_v4: &'static str,
    /// The router's address: its RLOC.
    pub rloc: &'static str,
    pub core_mac: &'static str,
    pub far_mac: &'static str,
}

pub const LINK_XA: CoreLink = CoreLink {
    ns: XA,
    core_v4: "192.0.2.1",
    rloc: "192.0.2.2",
    core_mac: "02:00:00:00:c0:01",
    far_mac: "02:00:00:00:c0:02",
};
pub const LINK_XA2: CoreLink = CoreLink {
    ns: XA2,
    core_v4: "192.0.2.17",
    rloc: "192.0.2.18",
    core_mac: "02:00:00:00:c1:01",
    far_mac: "02:00:00:00:c1:02",
};
pub const LINK_XB: CoreLink = CoreLink {
    ns: XB,
    core_v4: "192.0.2.33",
    rloc: "192.0.2.34",
    core_mac: "02:00:00:00:c2:01",
    far_mac: "02:00:00:00:c2:02",
};
pub const LINK_RI: CoreLink = CoreLink {
    ns: RI,
    core_v4: "192.0.2.49",
    rloc: "192.0.2.50",
    core_mac: "02:00:00:00:c3:01",
    far_mac: "02:00:00:00:c3:02",
};
pub const LINK_MS: CoreLink = CoreLink {
    ns: MS,
    core_v4: "192.0.2.65",
    rloc: "192.0.2.66",
    core_mac: "02:00:00:00:c4:01",
    far_mac: "02:00:00:00:c4:02",
};

pub const RLOC_A: &str = LINK_XA.rloc;
pub const RLOC_A2: &str = LINK_XA2.rloc;
pub const RLOC_B: &str = LINK_XB.rloc;
pub const RLOC_R: &str = LINK_RI.rloc;
pub const MS_ADDR: &str = LINK_MS.rloc;

/// The map-server node in the terms of lab.rs (for code shared with the lab).
pub const MS_NODE: MapServerNode = MapServerNode {
    ns: MS,
    core_mac: LINK_MS.core_mac,
    ms_mac: LINK_MS.far_mac,
    core_cidr: "192.0.2.65/28",
    ms_cidr: "192.0.2.66/28",
};

/// Keys of the map-server's sites (HMAC-SHA-256).
pub const KEY_A: &str = "dc-a-secret";
pub const KEY_B: &str = "dc-b-secret";
pub const KEY_R: &str = "remote-secret";

// ------------------------------------------------------------------------------- the builder

/// How the VM's subnet relates to site B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The subnet is stretched over a LAN extension (`extended-subnet-mode: true`).
    ExtendedSubnet,
    /// Site B has a subnet of its own; the VM keeps its address anyway (the default mode).
    AcrossSubnet,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ExtendedSubnet => "extended-subnet",
            Mode::AcrossSubnet => "across-subnet",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    A,
    B,
}

impl Site {
    pub fn lan(self) -> &'static str {
        match self {
            Site::A => LAN_A,
            Site::B => LAN_B,
        }
    }
    pub fn other(self) -> Site {
        match self {
            Site::A => Site::B,
            Site::B => Site::A,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    /// A second xTR on site A's LAN (multihomed site).
    pub multihomed: bool,
}

/// What was built, and where the VM is now.
#[derive(Clone, Copy, Debug)]
pub struct MobilityLab {
    pub opts: Options,
    pub vm_site: Site,
}

impl MobilityLab {
    /// The site xTRs' namespaces (A, [A2,] B).
    pub fn xtrs(&self) -> Vec<&'static str> {
        if self.opts.multihomed {
            vec![XA, XA2, XB]
        } else {
            vec![XA, XB]
        }
    }

    /// Re-plugs the VM's LAN port into `to`'s LAN: the VM keeps its namespace, addresses, MAC,
    /// routes and neighbour cache; only the cable moves (carrier goes down and up, as when a
    /// hypervisor migrates a VM). Returns once the port is up in the new LAN.
    pub fn move_vm(&mut self, t: &Topology, to: Site) -> Result<()> {
        if self.vm_site == to {
            bail!("the VM is already in site {to:?}");
        }
        let (from_lan, to_lan) = (self.vm_site.lan(), to.lan());
        t.ip(from_lan, &["link", "set", VM_PORT, "netns", &t.ns(to_lan)])?;
        t.ip(to_lan, &["link", "set", VM_PORT, "master", "br0"])?;
        t.ip(to_lan, &["link", "set", VM_PORT, "up"])?;
        self.vm_site = to;
        // The carrier change reaches both bridge ports of the cable through the kernel's
        // linkwatch, which may batch it for up to a second: until then they do not forward. The
        // cable counts as plugged once both forward.
        let up = Topology::wait_for(Duration::from_secs(3), || {
            let hv = t.exec(HV, &["bridge", "link", "show", "dev", HV_UPLINK])?;
            let port = t.exec(to_lan, &["bridge", "link", "show", "dev", VM_PORT])?;
            Ok(
                String::from_utf8_lossy(&hv.stdout).contains("state forwarding")
                    && String::from_utf8_lossy(&port.stdout).contains("state forwarding"),
            )
        })?;
        if !up {
            bail!("the VM's link did not come up in {to:?}'s LAN");
        }
        Ok(())
    }

    /// The addresses of site B's SVI that the VM can reach in this mode (after a move).
    pub fn b_svi(&self) -> (&'static str, &'static str) {
        match self.opts.mode {
            Mode::ExtendedSubnet => (XB_SVI_V4, XB_SVI_V6),
            Mode::AcrossSubnet => (B_SVI_ACROSS_V4, B_SVI_ACROSS_V6),
        }
    }
}

fn cidr(addr: &str, len: u8) -> String {
    format!("{addr}/{len}")
}

/// Creates every namespace, link, address, route and neighbour of the mobility topology, with
/// the VM in site A. The agents are started separately ([`start_agents`]).
pub fn build(t: &mut Topology, opts: Options) -> Result<MobilityLab> {
    let mut names = vec![CORE, MS, XA, XB, LAN_A, LAN_B, HV, VM, RI, RH];
    if opts.multihomed {
        names.push(XA2);
    }
    for n in &names {
        t.add_ns(n)?;
    }
    for r in [CORE, XA, XB, RI] {
        t.router(r)?;
    }
    if opts.multihomed {
        t.router(XA2)?;
    }

    // Underlay: one /28 per core link, default route via the core.
    let mut links = vec![LINK_XA, LINK_XB, LINK_RI, LINK_MS];
    if opts.multihomed {
        links.push(LINK_XA2);
    }
    for l in &links {
        let far_if = if l.ns == MS { "ms0" } else { RLOC_IF };
        t.veth(
            CORE,
            l.ns,
            l.core_mac,
            l.ns,
            far_if,
            l.far_mac,
            lab::UNDERLAY_MTU,
        )?;
        t.addr(CORE, l.ns, &cidr(l.core_v4, 28))?;
        t.addr(l.ns, far_if, &cidr(l.rloc, 28))?;
        t.route(l.ns, "default", l.core_v4)?;
        t.neigh(CORE, l.ns, l.rloc, l.far_mac)?;
        t.neigh(l.ns, far_if, l.core_v4, l.core_mac)?;
        // Control messages are sent by the kernel: software checksums so that captures show what
        // a wire would carry (see lab::add_map_servers).
        t.exec(l.ns, &["ethtool", "-K", far_if, "tx", "off"])?;
    }

    // Site LANs: a bridge each.
    for lan in [LAN_A, LAN_B] {
        bridge(t, lan)?;
    }
    let mut svis = vec![(XA, LAN_A, XA_SVI_MAC), (XB, LAN_B, XB_SVI_MAC)];
    if opts.multihomed {
        svis.push((XA2, LAN_A, XA2_SVI_MAC));
    }
    for (x, lan, mac) in &svis {
        // The bridge port is named after the xTR.
        t.veth(x, SVI, mac, lan, x, &port_mac(x), 1500)?;
        t.ip(lan, &["link", "set", x, "master", "br0"])?;
        t.exec(x, &["ethtool", "-K", SVI, "tx", "off"])?;
    }
    // The active gateways (A and B): the virtual MAC on a macvlan over the SVI, holding the
    // virtual IP as a host address only (no second connected route for the subnet). The XDP
    // program on the SVI sees the frames to the virtual MAC first; what it passes reaches the
    // macvlan. arp_ignore 1: the SVI does not answer ARP for the virtual IP with its own MAC.
    for x in [XA, XB] {
        t.ip(
            x,
            &[
                "link", "add", "link", SVI, "name", GW_IF, "address", VMAC, "type", "macvlan",
                "mode", "private",
            ],
        )?;
        t.ip(x, &["link", "set", GW_IF, "up"])?;
        t.sysctl(x, &format!("net.ipv4.conf.{SVI}.arp_ignore"), "1")?;
        t.ip(x, &["addr", "add", &cidr(GW_V4, 32), "dev", GW_IF])?;
        t.ip(
            x,
            &["addr", "add", &cidr(GW_V6, 128), "dev", GW_IF, "nodad"],
        )?;
    }
    // The gateway's MAC lives at the local xTR's port, whatever crosses the extension.
    for (x, lan) in [(XA, LAN_A), (XB, LAN_B)] {
        t.exec(
            lan,
            &[
                "bridge", "fdb", "replace", VMAC, "dev", x, "master", "static", "sticky",
            ],
        )?;
    }

    // Site A's addresses: the gateway VIP on the active gateway, own addresses everywhere.
    t.addr(XA, SVI, &cidr(XA_SVI_V4, 24))?;
    t.addr(XA, SVI, &cidr(XA_SVI_V6, 64))?;
    if opts.multihomed {
        t.addr(XA2, SVI, &cidr(XA2_SVI_V4, 24))?;
        t.addr(XA2, SVI, &cidr(XA2_SVI_V6, 64))?;
    }
    match opts.mode {
        Mode::ExtendedSubnet => {
            t.addr(XB, SVI, &cidr(XB_SVI_V4, 24))?;
            t.addr(XB, SVI, &cidr(XB_SVI_V6, 64))?;
            // The LAN extension.
            t.veth(
                LAN_A,
                "ext",
                "02:00:00:00:e0:0a",
                LAN_B,
                "ext",
                "02:00:00:00:e0:0b",
                1500,
            )?;
            for lan in [LAN_A, LAN_B] {
                t.ip(lan, &["link", "set", "ext", "master", "br0"])?;
            }
        }
        Mode::AcrossSubnet => {
            t.addr(XB, SVI, &cidr(B_SVI_ACROSS_V4, 25))?;
            t.addr(XB, SVI, &cidr(B_SVI_ACROSS_V6, 64))?;
            // Stand-in for the first-hop gateway issue (not landed): the kernel's proxy-ARP on
            // site B's SVI answers the moved VM's ARPs for its old subnet; proxy_delay 0 or each
            // answer waits 100-540 ms.
            t.sysctl(XB, &format!("net.ipv4.conf.{SVI}.proxy_arp"), "1")?;
            t.sysctl(XB, &format!("net.ipv4.neigh.{SVI}.proxy_delay"), "0")?;
        }
    }

    // The VM: fixed MAC and addresses, default routes to the virtual gateway whose MAC it keeps.
    // Its vNIC is a port of the hypervisor's switch, whose uplink is the cable that moves: the VM
    // itself never sees its carrier drop (as in a live migration), so it keeps its neighbour
    // cache (a carrier loss would flush it).
    bridge(t, HV)?;
    t.veth(VM, VM_IF, VM_MAC, HV, "vnet0", "02:00:00:00:99:02", 1500)?;
    t.ip(HV, &["link", "set", "vnet0", "master", "br0"])?;
    // Fixed ifindexes, different from each other and from anything the namespaces number on
    // their own: the kernel's linkwatch treats a carrier change of a veth whose ifindex equals
    // its peer's as not urgent and batches it for up to a second, so a re-plug would take up
    // to a second of the lab's own making.
    t.ip(
        HV,
        &[
            "link",
            "add",
            HV_UPLINK,
            "index",
            "200",
            "address",
            "02:00:00:00:99:03",
            "type",
            "veth",
            "peer",
            "name",
            VM_PORT,
            "index",
            "100",
            "address",
            "02:00:00:00:99:01",
            "netns",
            &t.ns(LAN_A),
        ],
    )?;
    t.ip(HV, &["link", "set", HV_UPLINK, "up"])?;
    t.ip(LAN_A, &["link", "set", VM_PORT, "up"])?;
    t.ip(HV, &["link", "set", HV_UPLINK, "master", "br0"])?;
    t.ip(LAN_A, &["link", "set", VM_PORT, "master", "br0"])?;
    t.exec(VM, &["ethtool", "-K", VM_IF, "tx", "off"])?;
    t.addr(VM, VM_IF, &cidr(VM_V4, 24))?;
    t.addr(VM, VM_IF, &cidr(VM_V6, 64))?;
    t.neigh(VM, VM_IF, GW_V4, VMAC)?;
    t.neigh(VM, VM_IF, GW_V6, VMAC)?;
    t.route(VM, "default", GW_V4)?;
    t.route(VM, "default", GW_V6)?;

    // The remote site: host — ITR.
    t.veth(RI, RI_EID_IF, RI_EID_MAC, RH, "eth0", RH_MAC, 1500)?;
    t.exec(RH, &["ethtool", "-K", "eth0", "tx", "off"])?;
    t.addr(RI, RI_EID_IF, &cidr(RI_EID_V4, 25))?;
    t.addr(RI, RI_EID_IF, &cidr(RI_EID_V6, 64))?;
    t.addr(RH, "eth0", &cidr(RH_V4, 25))?;
    t.addr(RH, "eth0", &cidr(RH_V6, 64))?;
    t.route(RH, "default", RI_EID_V4)?;
    t.route(RH, "default", RI_EID_V6)?;
    t.neigh(RH, "eth0", RI_EID_V4, RI_EID_MAC)?;
    t.neigh(RH, "eth0", RI_EID_V6, RI_EID_MAC)?;
    t.neigh(RI, RI_EID_IF, RH_V4, RH_MAC)?;
    t.neigh(RI, RI_EID_IF, RH_V6, RH_MAC)?;

    Ok(MobilityLab {
        opts,
        vm_site: Site::A,
    })
}

/// A bridge `br0` in `ns`: no STP, no forwarding delay, snooping off (no querier in the lab; the
/// map-notify-group must flood).
fn bridge(t: &Topology, ns: &str) -> Result<()> {
    t.ip(
        ns,
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ],
    )?;
    t.ip(ns, &["link", "set", "br0", "up"])?;
    Ok(())
}

/// A fixed MAC for the LAN-side port towards xTR `x`.
fn port_mac(x: &str) -> String {
    match x {
        XA => "02:00:00:00:aa:01",
        XA2 => "02:00:00:00:aa:02",
        _ => "02:00:00:00:bb:01",
    }
    .to_string()
}

/// The interfaces that need the pass-through XDP program: the peers of every interface an xTR
/// redirects into (native XDP_REDIRECT into a veth is dropped unless the peer runs XDP).
pub fn pass_ifaces(m: &MobilityLab) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (CORE, XA),
        (CORE, XB),
        (CORE, RI),
        (LAN_A, XA),
        (LAN_B, XB),
        (RH, "eth0"),
    ];
    if m.opts.multihomed {
        v.extend([(CORE, XA2), (LAN_A, XA2)]);
    }
    v
}

/// Attaches `xdp_pass` on [`pass_ifaces`]; detached when the returned value is dropped.
pub fn attach_pass(t: &Topology, m: &MobilityLab, object: &[u8]) -> Result<lab::PassPrograms> {
    lab::attach_pass_to(t, object, &pass_ifaces(m), None)
}

// ------------------------------------------------------------------------------- configs

/// Options of the generated agent configurations.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub register_interval_s: u64,
    /// Inactivity timeout of the dynamic-EID map.
    pub inactivity_s: u64,
    /// The remote ITR subscribes to the mappings it resolves (RFC 9437 pubsub).
    pub pubsub: bool,
    pub log_level: &'static str,
    /// Configure mobility at all (false: the sites are plain xTRs, the VM a static host of site
    /// A; what the lab's wiring is checked with before mobility exists).
    pub mobility: bool,
    /// The IPv6 dynamic-EID prefix (the memory bench needs room for 100k hosts).
    pub dyn_v6: &'static str,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            register_interval_s: 60,
            inactivity_s: 180,
            pubsub: false,
            log_level: "debug",
            mobility: true,
            dyn_v6: DYN_V6,
        }
    }
}

/// One locator line per RLOC; the first has priority 1, the others 2 (standby): a multihomed
/// site's active xTR is the one remote ITRs send to, so which router sees the traffic (and
/// sends the SMRs) after a move is known.
fn locators_yaml(rlocs: &[&str], indent: &str) -> String {
    rlocs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = if i == 0 { 1 } else { 2 };
            format!("{indent}- {{ address: {r}, priority: {p}, weight: 100 }}\n")
        })
        .collect()
}

/// The RLOCs of the xTRs of `x`'s site (every xTR of a site configures the same mappings).
fn site_rlocs(m: &MobilityLab, x: &str) -> Vec<&'static str> {
    match x {
        XB => vec![RLOC_B],
        _ if m.opts.multihomed => vec![RLOC_A, RLOC_A2],
        _ => vec![RLOC_A],
    }
}

/// The YAML configuration of site xTR `x` (XA, XA2 or XB), in the contract's shape.
pub fn xtr_config(m: &MobilityLab, x: &str, o: &AgentOptions) -> String {
    let rloc = match x {
        XA => RLOC_A,
        XA2 => RLOC_A2,
        _ => RLOC_B,
    };
    let (key, own) = match (x, m.opts.mode) {
        (XB, Mode::ExtendedSubnet) => (KEY_B, None),
        (XB, Mode::AcrossSubnet) => (KEY_B, Some([B_SUBNET_V4, B_SUBNET_V6])),
        _ => (KEY_A, Some([HOME_V4, HOME_V6])),
    };
    let rlocs = site_rlocs(m, x);
    let mut y = format!(
        "# Generated by tests/support/mobility.rs: site xTR {x} ({mode}).\n\
         log-level: {log}\n\
         xdp-mode: auto\n\
         itr: true\n\
         etr: true\n\
         metrics-listen: \"{metrics}\"\n\
         locators:\n  ipv4: {rloc}\n\
         register-interval: {reg}s\n\
         map-servers:\n  - {{ address: {ms}, key: {key}, key-algorithm: hmac-sha-256, proxy-reply: false }}\n\
         map-resolvers:\n  - {ms}\n\
         eid-space:\n  - {r4}\n  - \"{r6}\"\n\
         instance-tables:\n  - {{ instance-id: {iid}, table: main }}\n",
        mode = m.opts.mode.name(),
        log = o.log_level,
        metrics = lab::METRICS_ADDR,
        reg = o.register_interval_s,
        ms = MS_ADDR,
        r4 = REMOTE_V4,
        r6 = REMOTE_V6,
        iid = INSTANCE_ID,
    );
    // The global database-mapping: the site's own (static) subnets. In extended-subnet mode the
    // stretched subnet belongs to site A; site B has no static EIDs of its own.
    if let Some(own) = own {
        y.push_str("database-mappings:\n");
        for p in own {
            y.push_str(&format!(
                "  - eid-prefix: \"{p}\"\n    instance-id: {INSTANCE_ID}\n    locators:\n{}",
                locators_yaml(&rlocs, "      ")
            ));
        }
    }
    if !o.mobility {
        y.push_str(&format!(
            "interfaces:\n  - {{ name: {SVI}, role: eid, instance-id: {INSTANCE_ID} }}\n  \
             - {{ name: {RLOC_IF}, role: rloc }}\n"
        ));
        return y;
    }
    y.push_str(&format!(
        "dynamic-eid-maps:\n  - name: {MAP_NAME}\n    instance-id: {INSTANCE_ID}\n    \
         database-mappings:\n"
    ));
    for p in [DYN_V4, o.dyn_v6] {
        y.push_str(&format!(
            "      - eid-prefix: \"{p}\"\n        locators:\n{}",
            locators_yaml(&rlocs, "          ")
        ));
    }
    y.push_str(&format!(
        "    map-notify-group: {GROUP}\n    inactivity-timeout: {}s\n",
        o.inactivity_s
    ));
    y.push_str(&format!(
        "interfaces:\n  - name: {SVI}\n    role: eid\n    instance-id: {INSTANCE_ID}\n    \
         mobility: {MAP_NAME}\n    extended-subnet-mode: {}\n  - name: {RLOC_IF}\n    role: rloc\n",
        m.opts.mode == Mode::ExtendedSubnet
    ));
    y
}

/// The remote site's ITR: registers its own site, resolves the VM's subnet through the
/// map-resolver, optionally subscribing (pubsub).
pub fn remote_itr_config(o: &AgentOptions) -> String {
    let mut y = format!(
        "# Generated by tests/support/mobility.rs: remote-site ITR.\n\
         log-level: {log}\n\
         xdp-mode: auto\n\
         itr: true\n\
         etr: true\n\
         metrics-listen: \"{metrics}\"\n\
         locators:\n  ipv4: {rloc}\n\
         register-interval: {reg}s\n\
         database-mappings:\n\
         \x20 - eid-prefix: {r4}\n    instance-id: {iid}\n    locators:\n{loc}\
         \x20 - eid-prefix: \"{r6}\"\n    instance-id: {iid}\n    locators:\n{loc}\
         map-servers:\n  - {{ address: {ms}, key: {KEY_R}, key-algorithm: hmac-sha-256, proxy-reply: false }}\n\
         map-resolvers:\n  - {ms}\n\
         eid-space:\n  - {h4}\n  - \"{h6}\"\n  - {b4}\n  - \"{b6}\"\n\
         instance-tables:\n  - {{ instance-id: {iid}, table: main }}\n\
         interfaces:\n  - {{ name: {RI_EID_IF}, role: eid, instance-id: {iid} }}\n  - {{ name: {RLOC_IF}, role: rloc }}\n",
        log = o.log_level,
        metrics = lab::METRICS_ADDR,
        rloc = RLOC_R,
        reg = o.register_interval_s,
        r4 = REMOTE_V4,
        r6 = REMOTE_V6,
        iid = INSTANCE_ID,
        loc = locators_yaml(&[RLOC_R], "      "),
        ms = MS_ADDR,
        h4 = HOME_V4,
        h6 = HOME_V6,
        b4 = B_SUBNET_V4,
        b6 = B_SUBNET_V6,
    );
    if o.pubsub {
        y.push_str("subscribe: true\n");
    }
    y
}

/// The map-server/map-resolver: one site per data centre, both accepting more-specifics of the
/// VM's subnet (a dynamic-EID prefix shared across data centres: the key tells the site, the
/// newest registration holds the host), and the remote site.
pub fn map_server_config(o: &AgentOptions) -> String {
    let shared = if o.mobility {
        format!(
            "        - {{ prefix: {HOME_V4}, accept-more-specifics: true }}\n        \
             - {{ prefix: \"{HOME_V6}\", accept-more-specifics: true }}\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"# Generated by tests/support/mobility.rs: map-server / map-resolver.
log-level: debug
locators:
  ipv4: {ms}
metrics-listen: "{metrics}"
interfaces:
  - {{ name: ms0, role: rloc }}
map-server:
  enabled: true
  sites:
    - name: dc-a
      key: {KEY_A}
      key-algorithm: hmac-sha-256
      eid-prefixes:
        - {{ prefix: {h4}, accept-more-specifics: true }}
        - {{ prefix: "{h6}", accept-more-specifics: true }}
    - name: dc-b
      key: {KEY_B}
      key-algorithm: hmac-sha-256
      eid-prefixes:
{shared}        - {{ prefix: {b4} }}
        - {{ prefix: "{b6}" }}
    - name: remote
      key: {KEY_R}
      key-algorithm: hmac-sha-256
      eid-prefixes:
        - {{ prefix: {r4} }}
        - {{ prefix: "{r6}" }}
"#,
        ms = MS_ADDR,
        metrics = lab::METRICS_ADDR,
        h4 = HOME_V4,
        h6 = HOME_V6,
        b4 = B_SUBNET_V4,
        b6 = B_SUBNET_V6,
        r4 = REMOTE_V4,
        r6 = REMOTE_V6,
    )
}

/// Handles of the started agents.
#[derive(Clone, Debug)]
pub struct Agents {
    pub ms: usize,
    /// (namespace, handle) of each site xTR, in [`MobilityLab::xtrs`] order.
    pub xtrs: Vec<(&'static str, usize)>,
    pub ri: usize,
}

impl Agents {
    pub fn xtr(&self, ns: &str) -> usize {
        self.xtrs
            .iter()
            .find(|(n, _)| *n == ns)
            .map(|(_, h)| *h)
            .unwrap_or_else(|| panic!("no xTR {ns}"))
    }
}

/// Starts the map-server, every site xTR and the remote ITR (each waits for its metrics
/// endpoint, i.e. loaded and attached).
pub fn start_agents(
    t: &mut Topology,
    m: &MobilityLab,
    agent: &Path,
    o: &AgentOptions,
) -> Result<Agents> {
    let ms = lab::start_agent(t, agent, MS, "map-server", &map_server_config(o))?;
    let mut xtrs = Vec::new();
    for x in m.xtrs() {
        let h = lab::start_agent(t, agent, x, &format!("xtr-{x}"), &xtr_config(m, x, o))?;
        xtrs.push((x, h));
    }
    let ri = lab::start_agent(t, agent, RI, "remote-itr", &remote_itr_config(o))?;
    Ok(Agents { ms, xtrs, ri })
}

// ------------------------------------------------------------------------------- observations

/// The routes of namespace `ns` for `dst` (`ip route show DST` / `ip -6 route show DST`), as text.
pub fn routes_to(t: &Topology, ns: &str, dst: &str) -> Result<String> {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    let out = t.ip(ns, &[fam, "route", "show", "exact", dst])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The host route (/32 or /128) for `eid` in `ns`, if any: e.g. `198.51.100.10 dev vlan10 proto 250`.
pub fn host_route(t: &Topology, ns: &str, eid: &str) -> Result<Option<String>> {
    let len = if eid.contains(':') { 128 } else { 32 };
    let r = routes_to(t, ns, &format!("{eid}/{len}"))?;
    Ok((!r.is_empty()).then_some(r))
}

/// Whether `ns` has a neighbour entry for `ip` on `dev` in a usable state.
pub fn neighbour_state(t: &Topology, ns: &str, dev: &str, ip: &str) -> Result<String> {
    let out = t.ip(ns, &["neigh", "show", ip, "dev", dev])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until `ns`'s agent metrics satisfy `cond` (text in, bool out), up to `timeout`.
pub fn wait_metrics(
    t: &Topology,
    ns: &str,
    timeout: Duration,
    mut cond: impl FnMut(&str) -> bool,
) -> Result<bool> {
    let full = t.ns(ns);
    Topology::wait_for(timeout, || {
        Ok(lab::metrics_text(&full).map(|m| cond(&m)).unwrap_or(false))
    })
}

/// Resident set size of process `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// One ICMP echo from `ns` to `dst` (1 s timeout): whether it was answered.
pub fn reachable(t: &Topology, ns: &str, dst: &str) -> Result<bool> {
    Ok(lab::ping(t, ns, dst, 1)? == 1)
}

/// Runs `f` with a thread in namespace `ns` (re-export for tests using only this module).
pub fn within<R: Send>(t: &Topology, ns: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    in_netns(&t.ns(ns), f)
}

/// Sends one UDP datagram from namespace `ns` to `group:port` with IP TTL 1, out of the
/// interface that has address `from` (as the agent sends to the map-notify-group).
pub fn send_group(
    t: &Topology,
    ns: &str,
    from: &str,
    group: &str,
    port: u16,
    payload: &[u8],
) -> Result<()> {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::fd::AsRawFd;
    let from: Ipv4Addr = from.parse()?;
    let group: Ipv4Addr = group.parse()?;
    within(t, ns, || {
        let s = UdpSocket::bind((from, 0))?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        let ifaddr = libc::in_addr {
            s_addr: u32::from(from).to_be(),
        };
        // SAFETY: setsockopt with a pointer to a live in_addr of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &ifaddr as *const libc::in_addr as *const libc::c_void,
                std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!("IP_MULTICAST_IF: {}", std::io::Error::last_os_error());
        }
        s.send_to(payload, (group, port))?;
        Ok(())
    })
}

/// A UDP socket in `ns` bound to `port` and joined to `group` on the interface that has address
/// `on` (read timeout 1 s).
pub fn join_group(
    t: &Topology,
    ns: &str,
    on: &str,
    group: &str,
    port: u16,
) -> Result<std::net::UdpSocket> {
    use std::net::{Ipv4Addr, UdpSocket};
    let on: Ipv4Addr = on.parse()?;
    let group: Ipv4Addr = group.parse()?;
    within(t, ns, || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
        s.join_multicast_v4(&group, &on)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(s)
    })
}

// ------------------------------------------------------------------------------- spoofed flood

/// The namespace of a host sending a spoofed-source flood into one site's LAN.
pub const SPOOF: &str = "spoof";
pub const SPOOF_MAC: &str = "02:00:00:00:5f:01";

/// The spoofing host's own address (in site B's across-subnet LAN; it only needs one to send
/// datagrams to the map-notify-group).
pub const SPOOF_V4: &str = "203.0.113.99";

/// Plugs a spoofing host into `site`'s LAN (after [`build`]).
pub fn add_spoofer(t: &mut Topology, site: Site) -> Result<()> {
    t.add_ns(SPOOF)?;
    t.veth(
        SPOOF,
        "eth0",
        SPOOF_MAC,
        site.lan(),
        "spoofport",
        "02:00:00:00:5f:02",
        1500,
    )?;
    t.ip(site.lan(), &["link", "set", "spoofport", "master", "br0"])?;
    t.addr(SPOOF, "eth0", &cidr(SPOOF_V4, 25))?;
    Ok(())
}

/// Sends one UDP frame from [`SPOOF`] with source `src` to the remote host, to the gateway MAC.
pub fn send_spoofed_v4(t: &Topology, src: &str) -> Result<()> {
    let ifindex = t.ifindex(SPOOF, "eth0")?;
    let frame = frame_v4(&parse_mac(VMAC), src.parse()?, RH_V4.parse()?);
    within(t, SPOOF, || {
        // SAFETY: socket(2), then sendto with a valid buffer and sockaddr_ll; the fd is closed
        // by the OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let _own = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let n = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        Ok(())
    })
}

/// A running flood; stops (and reports frames sent) when [`Flood::stop`] is called or dropped.
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Flood {
    /// Frames of UDP from a new pseudo-random source inside the dynamic-EID prefixes (IPv4 and
    /// IPv6 alternately, never the VM's own addresses) to the remote host, sent to the gateway
    /// MAC at `pps` from [`SPOOF`]: each one looks like a new dynamic EID to the site's xTR.
    pub fn start(t: &Topology, pps: u32) -> Result<Flood> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let ifindex = t.ifindex(SPOOF, "eth0")?;
        // SAFETY: plain socket(2); the fd is owned by the OwnedFd below.
        let fd = within(t, SPOOF, || {
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
            Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || -> Result<u64> {
            use std::os::fd::AsRawFd;
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            let dst_mac = parse_mac(VMAC);
            addr.sll_addr[..6].copy_from_slice(&dst_mac);
            let (v4, v6): (std::net::Ipv4Addr, std::net::Ipv6Addr) =
                (RH_V4.parse()?, RH_V6.parse()?);
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            let gap = Duration::from_secs(1) / pps.max(1);
            let start = std::time::Instant::now();
            let mut sent = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_nanos() / gap.as_nanos().max(1)) as u64;
                while sent < due {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let frame = if sent.is_multiple_of(2) {
                        // 198.51.100.20 ..= .126 (the VM is .10).
                        let src = std::net::Ipv4Addr::new(198, 51, 100, 20 + (rng % 107) as u8);
                        frame_v4(&dst_mac, src, v4)
                    } else {
                        // 2001:db8:1::100 ..= ::ffff (the VM is ::10).
                        let low = 0x100 + (rng % 0xff00) as u16;
                        let src = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, low);
                        frame_v6(&dst_mac, src, v6)
                    };
                    // SAFETY: sendto with a valid buffer and a sockaddr_ll of the size passed.
                    unsafe {
                        libc::sendto(
                            fd.as_raw_fd(),
                            frame.as_ptr() as *const libc::c_void,
                            frame.len(),
                            0,
                            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        )
                    };
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(sent)
        });
        Ok(Flood {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the flood; returns the frames sent.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("flood thread panicked"))?,
            None => Ok(0),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP (port 9, zero checksum: allowed in IPv4) with 18 bytes of payload.
fn frame_v4(dst_mac: &[u8; 6], src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(dst_mac);
    f.extend_from_slice(&parse_mac(SPOOF_MAC));
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = 20 + 8 + 18u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&(8 + 18u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5f; 18]);
    f
}

/// Ethernet + IPv6 + UDP (port 9) with 18 bytes of payload. The checksum is left zero: the
/// receiver drops the datagram, which is all a flood needs.
fn frame_v6(dst_mac: &[u8; 6], src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(dst_mac);
    f.extend_from_slice(&parse_mac(SPOOF_MAC));
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(8 + 18u16).to_be_bytes());
    f.push(17);
    f.push(64);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&(8 + 18u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5f; 18]);
    f
}

// ------------------------------------------------------------------------------- the wire

/// Who an address is, for printing captures.
pub fn who(addr: &str) -> &'static str {
    match addr {
        RLOC_A => "xTR A",
        RLOC_A2 => "xTR A2",
        RLOC_B => "xTR B",
        RLOC_R => "remote ITR",
        MS_ADDR => "map-server",
        GROUP => "site group",
        XA_SVI_V4 => "xTR A (SVI)",
        XA2_SVI_V4 => "xTR A2 (SVI)",
        XB_SVI_V4 | B_SVI_ACROSS_V4 => "xTR B (SVI)",
        _ => "?",
    }
}

/// What one move looked like on the wire, as epoch seconds (pcap timestamps: every namespace
/// shares the machine's clock).
#[derive(Clone, Copy, Debug, Default)]
pub struct MoveTimeline {
    /// The VM's first frame towards the new site's xTR (captured on the LAN port facing it).
    pub first_packet: Option<f64>,
    /// The new xTR's first Map-Register carrying the VM's EID, after that (on the core).
    pub map_register: Option<f64>,
    /// The first SMR the old xTR sent after that (on the core).
    pub smr: Option<f64>,
    /// The remote ITR's first data packet to the new RLOC for the VM (on the core).
    pub remote_encap: Option<f64>,
}

impl MoveTimeline {
    fn ms(a: Option<f64>, b: Option<f64>) -> Option<f64> {
        Some((b? - a?) * 1e3)
    }
    /// First packet at the new site → its Map-Register on the wire, in ms.
    pub fn register_ms(&self) -> Option<f64> {
        Self::ms(self.first_packet, self.map_register)
    }
    /// First packet at the new site → the remote ITR encapsulating to the new RLOC, in ms.
    pub fn convergence_ms(&self) -> Option<f64> {
        Self::ms(self.first_packet, self.remote_encap)
    }
    pub fn smr_ms(&self) -> Option<f64> {
        Self::ms(self.first_packet, self.smr)
    }
}

fn first_epoch(file: &Path, filter: &str) -> Result<Option<f64>> {
    let rows = lab::tshark_fields(file, Some(filter), &["frame.time_epoch"])?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok()))
}

/// Reads a move's timeline for `eid` out of a capture of the LAN port facing the new xTR and a
/// capture of the core (`any`), considering only frames after `since` (epoch seconds).
pub fn move_timeline(
    lan_pcap: &Path,
    core_pcap: &Path,
    eid: &str,
    new_rloc: &str,
    old_rloc: &str,
    since: f64,
) -> Result<MoveTimeline> {
    let fam = if eid.contains(':') { "ipv6" } else { "ip" };
    let eid_field = if eid.contains(':') {
        "lisp.mapping.eid.ipv6"
    } else {
        "lisp.mapping.eid.ipv4"
    };
    let after = |t: f64| format!("frame.time_epoch >= {t:.6}");
    let first_packet = first_epoch(lan_pcap, &format!("{fam}.src == {eid} && {}", after(since)))?;
    let from = first_packet.unwrap_or(since);
    // Incoming frames only: a capture on `any` holds each forwarded frame twice.
    let incoming = "sll.pkttype != 4";
    let map_register = first_epoch(
        core_pcap,
        &format!(
            "{incoming} && lisp.type == 3 && ip.src == {new_rloc} && {eid_field} == {eid} && {}",
            after(from)
        ),
    )?;
    let smr = first_epoch(
        core_pcap,
        &format!(
            "{incoming} && lisp.mreq.flags.smr == 1 && ip.src == {old_rloc} && {}",
            after(from)
        ),
    )?;
    let remote_encap = first_epoch(
        core_pcap,
        &format!(
            "{incoming} && lisp-data && ip.src == {RLOC_R} && ip.dst == {new_rloc} && {fam}.dst == {eid} && {}",
            after(from)
        ),
    )?;
    Ok(MoveTimeline {
        first_packet,
        map_register,
        smr,
        remote_encap,
    })
}

/// Now as epoch seconds (to compare with pcap timestamps).
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Prints (through `say`) the control messages (UDP 4342) in `pcap` after `since`, one line
/// each, time relative to `since`: who sent what to whom, as tshark decodes it.
pub fn control_lines(pcap: &Path, since: f64, any_capture: bool) -> Result<Vec<String>> {
    let mut filter =
        format!("udp.port == 4342 && !icmp && !icmpv6 && frame.time_epoch >= {since:.6}");
    if any_capture {
        filter.push_str(" && sll.pkttype != 4");
    }
    let rows = lab::tshark_fields(
        pcap,
        Some(&filter),
        &["frame.time_epoch", "ip.src", "ip.dst", "_ws.col.Info"],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let f = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            let at: f64 = f(0).parse().unwrap_or(since);
            let src = f(1).split(',').next().unwrap_or("");
            let dst = f(2).split(',').next().unwrap_or("");
            format!(
                "{:>+9.3} ms  {:<12} -> {:<12} {}",
                (at - since) * 1e3,
                who(src),
                who(dst),
                f(3)
            )
        })
        .collect())
}
