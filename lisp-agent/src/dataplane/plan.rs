//! What the maps must hold for a configuration: computed without touching the kernel, so that
//! it is tested without root and the loader stays a plain copy loop.

use std::net::IpAddr;

use lisp_common::maps::{
    EidKey, InterfaceConfig, MapCacheEntry, MobilityIface, MobilityIfaceKey, RlocKey,
    SCOPED_KEY_PREFIX_BITS, ScopedEidKey, Settings, iface_flags, mobility_flags, rloc_flags,
    settings_flags,
};
use lisp_common::prefix::IpPrefix;

use crate::config::{Config, InterfaceRole, XdpModeConfig};
use crate::core::map_cache::{self, Locator, Placement};

/// An interface to attach to, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedInterface {
    pub name: String,
    pub ifindex: u32,
    pub value: InterfaceConfig,
    pub mode: XdpModeConfig,
}

/// One map-cache entry to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEntry {
    /// `203.0.113.0/24 (iid 0)`: for logs and errors.
    pub label: String,
    pub key: EidKey,
    pub placement: Placement,
    pub entry: MapCacheEntry,
}

/// Everything the loader writes, in the order it writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub settings: Settings,
    pub interfaces: Vec<PlannedInterface>,
    pub local_rlocs: Vec<RlocKey>,
    /// EID space: key and LPM prefix length.
    pub eid_space: Vec<(EidKey, u32)>,
    /// instance-id → kernel table (0: the main table through the policy rules). Only these
    /// instances are decapsulated.
    pub iid_tables: Vec<(u32, u32)>,
    /// This router's EID prefixes (database-mappings): key and LPM prefix length.
    pub local_eids: Vec<(EidKey, u32)>,
    /// Remote RLOCs whose IPv6 outer headers get a computed UDP checksum.
    pub checksum_rlocs: Vec<IpAddr>,
    pub map_cache: Vec<PlannedEntry>,
    /// Mobility interfaces (ingress ifindex + VLAN → map, instance, mode).
    pub mobility_ifaces: Vec<PlannedMobilityIface>,
    /// Dynamic-EID prefixes, scoped by map: key and LPM prefix length.
    pub dynamic_prefixes: Vec<(ScopedEidKey, u32)>,
    /// The mobility interfaces' own subnets (from the kernel, [`Plan::set_interface_subnets`]),
    /// scoped by interface: key and LPM prefix length.
    pub iface_subnets: Vec<(ScopedEidKey, u32)>,
}

/// One mobility interface: the SVI, or a VLAN of a trunk parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMobilityIface {
    /// Kernel name of the SVI (the `interfaces[].name`).
    pub svi: String,
    pub key: MobilityIfaceKey,
    pub value: MobilityIface,
}

impl Plan {
    /// Sets the subnets of the mobility interface `svi` (its kernel addresses, read by the
    /// shell at start): across-subnet mode does not report sources inside them. Replaces what
    /// was set before for that interface; an interface that is not a mobility one is ignored.
    pub fn set_interface_subnets(
        &mut self,
        svi: &str,
        subnets: &[IpPrefix],
    ) -> Result<(), map_cache::MapCacheError> {
        let Some(m) = self.mobility_ifaces.iter().find(|m| m.svi == svi) else {
            return Ok(());
        };
        let (scope, iid) = (m.value.subnet_scope, m.value.map_instance_id);
        let scope_bytes = scope.to_be_bytes();
        self.iface_subnets.retain(|(k, _)| k.scope != scope_bytes);
        for p in subnets {
            let (key, _) = map_cache::eid_key(iid, p.addr(), p.prefix_len())?;
            self.iface_subnets.push((
                ScopedEidKey::new(scope, key),
                SCOPED_KEY_PREFIX_BITS + u32::from(p.prefix_len()),
            ));
        }
        Ok(())
    }
}

/// Sets [`rloc_flags::IPV6_UDP_CHECKSUM`] on the locators of `entry` listed in `rlocs`.
pub fn mark_checksum_rlocs(entry: &mut MapCacheEntry, rlocs: &[IpAddr]) {
    for r in entry.rlocs.iter_mut().take(entry.rloc_count as usize) {
        if rlocs.iter().any(|a| {
            let (family, addr) = map_cache::addr_bytes(a);
            family == r.family && addr == r.addr
        }) {
            r.flags |= rloc_flags::IPV6_UDP_CHECKSUM;
        }
    }
}

/// LPM prefix length of an EID key of `placement`.
fn lpm_len(placement: Placement, prefix_len: u8) -> u32 {
    match placement {
        // A host route is a one-address trie entry.
        Placement::Host => lisp_common::maps::EID_KEY_PREFIX_BITS + u32::from(prefix_len),
        Placement::Prefix { lpm_len } => lpm_len,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "interfaces[{index}]: interface '{name}' does not exist on this host (or in this network namespace)"
    )]
    NoSuchInterface { index: usize, name: String },
    #[error("interfaces[{index}]: mobility map '{map}' is not among dynamic-eid-maps")]
    NoSuchMap { index: usize, map: String },
    #[error(
        "interfaces[{index}].trunk.parent: interface '{name}' does not exist on this host (or in this network namespace)"
    )]
    NoSuchTrunkParent { index: usize, name: String },
    #[error("{label}: {source}")]
    Entry {
        label: String,
        source: map_cache::MapCacheError,
    },
}

fn rloc_key(a: IpAddr) -> RlocKey {
    let (family, addr) = map_cache::addr_bytes(&a);
    RlocKey::new(family, addr)
}

/// Builds the plan; `ifindex` resolves an interface name (None = absent).
pub fn plan(cfg: &Config, ifindex: impl Fn(&str) -> Option<u32>) -> Result<Plan, PlanError> {
    // Token bucket per event kind and CPU: cost of one event in ns of credit, and the burst.
    let event_cost_ns = 1_000_000_000 / u64::from(cfg.miss_event_rate.max(1));
    let mut settings = Settings {
        event_interval_ns: u64::try_from(cfg.miss_event_interval.0.as_nanos()).unwrap_or(u64::MAX),
        event_cost_ns,
        event_credit_max_ns: event_cost_ns.saturating_mul(u64::from(cfg.miss_event_burst)),
        ..Settings::default()
    };
    let mut local_rlocs = Vec::new();
    if let Some(a) = cfg.locators.ipv4 {
        settings.flags |= settings_flags::HAS_RLOC4;
        settings.rloc4 = a.octets();
        local_rlocs.push(rloc_key(a.into()));
    }
    if let Some(a) = cfg.locators.ipv6 {
        settings.flags |= settings_flags::HAS_RLOC6;
        settings.rloc6 = a.octets();
        local_rlocs.push(rloc_key(a.into()));
    }
    if cfg.data_nonce {
        settings.flags |= settings_flags::NONCE;
    }
    if cfg.ipv6_udp_checksum {
        settings.flags |= settings_flags::IPV6_UDP_CHECKSUM;
    }

    let entry_err = |label: &str| {
        let label = label.to_string();
        move |source| PlanError::Entry { label, source }
    };

    let mut interfaces: Vec<PlannedInterface> = Vec::new();
    // Per entry of `interfaces`: made up for a trunk parent that is not configured itself.
    let mut synthetic: Vec<bool> = Vec::new();
    let mut mobility_ifaces = Vec::new();
    for (index, i) in cfg.interfaces.iter().enumerate() {
        let idx = ifindex(&i.name).ok_or_else(|| PlanError::NoSuchInterface {
            index,
            name: i.name.clone(),
        })?;
        let mut flags = match i.role {
            InterfaceRole::Eid if cfg.itr => iface_flags::ITR,
            InterfaceRole::Rloc if cfg.etr => iface_flags::ETR,
            _ => 0,
        };
        if let Some(map_name) = &i.mobility {
            let pos = cfg
                .dynamic_eid_maps
                .iter()
                .position(|m| &m.name == map_name)
                .ok_or_else(|| PlanError::NoSuchMap {
                    index,
                    map: map_name.clone(),
                })?;
            let map = &cfg.dynamic_eid_maps[pos];
            let mut mflags = 0;
            if i.extended_subnet_mode {
                mflags |= mobility_flags::EXTENDED_SUBNET;
            }
            if flags & iface_flags::ITR != 0 {
                mflags |= mobility_flags::ITR;
            }
            let value = MobilityIface {
                flags: mflags,
                map_instance_id: map.instance_id,
                itr_instance_id: i.instance_id,
                map_id: pos as u32 + 1,
                subnet_scope: index as u32 + 1,
                svi_ifindex: idx,
            };
            if let Some(t) = &i.trunk {
                // XDP runs on the parent (native), the VLAN ID selects this interface; the SVI
                // itself gets no program (it would see the same frames again, untagged).
                let pidx = ifindex(&t.parent).ok_or_else(|| PlanError::NoSuchTrunkParent {
                    index,
                    name: t.parent.clone(),
                })?;
                mobility_ifaces.push(PlannedMobilityIface {
                    svi: i.name.clone(),
                    key: MobilityIfaceKey::new(pidx, t.vlan_id as u16),
                    value,
                });
                interfaces.push(PlannedInterface {
                    name: t.parent.clone(),
                    ifindex: pidx,
                    value: InterfaceConfig {
                        flags: iface_flags::TRUNK,
                        instance_id: 0,
                    },
                    mode: cfg.xdp_mode_of(i),
                });
                synthetic.push(true);
                continue;
            }
            flags |= iface_flags::MOBILITY;
            mobility_ifaces.push(PlannedMobilityIface {
                svi: i.name.clone(),
                key: MobilityIfaceKey::new(idx, 0),
                value,
            });
        }
        interfaces.push(PlannedInterface {
            name: i.name.clone(),
            ifindex: idx,
            value: InterfaceConfig {
                flags,
                instance_id: i.instance_id,
            },
            mode: cfg.xdp_mode_of(i),
        });
        synthetic.push(false);
    }
    let interfaces = merge_interfaces(interfaces, &synthetic);

    let mut dynamic_prefixes = Vec::new();
    for (pos, m) in cfg.dynamic_eid_maps.iter().enumerate() {
        for d in &m.database_mappings {
            let label = format!(
                "dynamic-eid-maps {} {} (iid {})",
                m.name, d.eid_prefix, m.instance_id
            );
            let (key, _) = map_cache::eid_key(
                m.instance_id,
                d.eid_prefix.addr(),
                d.eid_prefix.prefix_len(),
            )
            .map_err(entry_err(&label))?;
            dynamic_prefixes.push((
                ScopedEidKey::new(pos as u32 + 1, key),
                SCOPED_KEY_PREFIX_BITS + u32::from(d.eid_prefix.prefix_len()),
            ));
        }
    }
    if cfg.etr && !cfg.dynamic_eid_maps.is_empty() {
        settings.flags |= settings_flags::REENCAP_AWAY;
    }

    let mut eid_space = Vec::new();
    for iid in cfg.itr_instance_ids() {
        for p in &cfg.eid_space {
            let label = format!("eid-space {p} (iid {iid})");
            let (key, placement) =
                map_cache::eid_key(iid, p.addr(), p.prefix_len()).map_err(entry_err(&label))?;
            eid_space.push((key, lpm_len(placement, p.prefix_len())));
        }
    }

    // Instances to decapsulate: those with a table, and the default one (0) when this router
    // has EIDs in it (its table: the main one through the policy rules, unless listed).
    let mut iid_tables: Vec<(u32, u32)> = cfg
        .instance_tables
        .iter()
        .map(|t| (t.instance_id, t.table.0))
        .collect();
    let default_used = cfg.database_mappings.iter().any(|m| m.instance_id == 0)
        || cfg.dynamic_eid_maps.iter().any(|d| d.instance_id == 0)
        || cfg
            .interfaces
            .iter()
            .any(|i| i.role == InterfaceRole::Eid && i.instance_id == 0);
    if default_used && !iid_tables.iter().any(|(iid, _)| *iid == 0) {
        iid_tables.push((0, 0));
    }

    let mut local_eids = Vec::new();
    for m in &cfg.database_mappings {
        let label = format!("database-mapping {} (iid {})", m.eid_prefix, m.instance_id);
        let (key, placement) = map_cache::eid_key(
            m.instance_id,
            m.eid_prefix.addr(),
            m.eid_prefix.prefix_len(),
        )
        .map_err(entry_err(&label))?;
        local_eids.push((key, lpm_len(placement, m.eid_prefix.prefix_len())));
    }
    if cfg.etr && !local_eids.is_empty() {
        settings.flags |= settings_flags::CHECK_LOCAL_EIDS;
    }

    let mut checksum_rlocs: Vec<IpAddr> = Vec::new();
    for l in cfg.map_cache.iter().flat_map(|m| &m.locators) {
        if l.ipv6_udp_checksum && l.address.is_ipv6() && !checksum_rlocs.contains(&l.address) {
            checksum_rlocs.push(l.address);
        }
    }

    let mut entries = Vec::new();
    for m in &cfg.map_cache {
        let label = format!("map-cache {} (iid {})", m.eid_prefix, m.instance_id);
        let (key, placement) = map_cache::eid_key(
            m.instance_id,
            m.eid_prefix.addr(),
            m.eid_prefix.prefix_len(),
        )
        .map_err(entry_err(&label))?;
        let entry = match m.action {
            Some(a) => map_cache::negative_entry(a.into()),
            None => {
                let locs: Vec<Locator> = m.locators.iter().map(Locator::from).collect();
                let mut e =
                    map_cache::positive_entry(&locs, m.instance_id).map_err(entry_err(&label))?;
                mark_checksum_rlocs(&mut e, &checksum_rlocs);
                e
            }
        };
        entries.push(PlannedEntry {
            label,
            key,
            placement,
            entry,
        });
    }

    Ok(Plan {
        settings,
        interfaces,
        local_rlocs,
        eid_space,
        iid_tables,
        local_eids,
        checksum_rlocs,
        map_cache: entries,
        mobility_ifaces,
        dynamic_prefixes,
        iface_subnets: Vec::new(),
    })
}

/// One entry per ifindex: a trunk parent named by several SVIs, or also configured itself,
/// is attached once with the flags of all (and its own name, instance-id and mode when it is
/// configured itself).
fn merge_interfaces(all: Vec<PlannedInterface>, synthetic: &[bool]) -> Vec<PlannedInterface> {
    let mut out: Vec<(PlannedInterface, bool)> = Vec::new();
    for (i, syn) in all.into_iter().zip(synthetic.iter().copied()) {
        match out.iter_mut().find(|(o, _)| o.ifindex == i.ifindex) {
            Some((o, o_syn)) => {
                let flags = o.value.flags | i.value.flags;
                if *o_syn && !syn {
                    *o = i;
                    *o_syn = false;
                }
                o.value.flags = flags;
            }
            None => out.push((i, syn)),
        }
    }
    out.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TABLE_MAIN;
    use lisp_common::maps::{AF_IPV4, AF_IPV6, EID_KEY_PREFIX_BITS, action};

    const EXAMPLE: &str = include_str!("../../../deploy/lisp-agent.example.yaml");

    fn example_plan() -> Plan {
        let cfg = Config::from_yaml_str(EXAMPLE).unwrap();
        plan(&cfg, |n| match n {
            "vlan10" => Some(7),
            "eth0" => Some(3),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn settings_from_example() {
        let p = example_plan();
        let s = p.settings;
        assert_eq!(
            s.flags,
            settings_flags::HAS_RLOC4
                | settings_flags::HAS_RLOC6
                | settings_flags::NONCE
                | settings_flags::CHECK_LOCAL_EIDS
                | settings_flags::REENCAP_AWAY
        );
        assert_eq!(s.rloc4, [192, 0, 2, 17]);
        assert_eq!(s.rloc6[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(s.event_interval_ns, 1_000_000_000);
        // 1000 events/s in bursts of 100 (defaults).
        assert_eq!(s.event_cost_ns, 1_000_000);
        assert_eq!(s.event_credit_max_ns, 100_000_000);
        assert_eq!(p.local_rlocs.len(), 2);
        assert_eq!(p.local_rlocs[0].family, AF_IPV4);
        assert_eq!(p.local_rlocs[0].addr[..4], [192, 0, 2, 17]);
        assert_eq!(p.local_rlocs[1].family, AF_IPV6);
    }

    #[test]
    fn interfaces_from_example() {
        let p = example_plan();
        assert_eq!(p.interfaces.len(), 2);
        assert_eq!(p.interfaces[0].name, "vlan10");
        assert_eq!(p.interfaces[0].ifindex, 7);
        assert_eq!(
            p.interfaces[0].value.flags,
            iface_flags::ITR | iface_flags::MOBILITY
        );
        assert_eq!(p.interfaces[1].ifindex, 3);
        assert_eq!(p.interfaces[1].value.flags, iface_flags::ETR);
        assert_eq!(p.interfaces[1].mode, XdpModeConfig::Auto);
    }

    #[test]
    fn roles_follow_itr_etr_switches() {
        let y = EXAMPLE.replace("itr: true", "itr: false");
        let cfg = Config::from_yaml_str(&y).unwrap();
        let p = plan(&cfg, |n| Some(if n == "vlan10" { 1 } else { 2 })).unwrap();
        assert_eq!(p.interfaces[0].value.flags, iface_flags::MOBILITY);
        assert_eq!(p.interfaces[1].value.flags, iface_flags::ETR);
        // Not an ITR: detection still, but no encapsulation of a trunk VLAN's frames.
        assert_eq!(p.mobility_ifaces[0].value.flags, 0);
    }

    fn ip_prefix(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn mobility_maps_from_example() {
        let mut p = example_plan();
        assert_eq!(
            p.mobility_ifaces,
            vec![PlannedMobilityIface {
                svi: "vlan10".into(),
                key: MobilityIfaceKey::new(7, 0),
                value: MobilityIface {
                    flags: mobility_flags::ITR,
                    map_instance_id: 0,
                    itr_instance_id: 0,
                    map_id: 1,
                    subnet_scope: 1,
                    svi_ifindex: 7,
                },
            }]
        );
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 51, 100, 0]);
        assert_eq!(
            p.dynamic_prefixes,
            vec![(
                ScopedEidKey::new(1, EidKey::new(AF_IPV4, 0, a)),
                SCOPED_KEY_PREFIX_BITS + 25
            )]
        );
        // The SVI's kernel addresses become its subnets (host bits cleared), replaced when
        // set again; an interface without mobility is ignored.
        assert!(p.iface_subnets.is_empty());
        p.set_interface_subnets("vlan10", &[ip_prefix("198.51.100.1/24")])
            .unwrap();
        p.set_interface_subnets(
            "vlan10",
            &[
                ip_prefix("198.51.100.129/24"),
                ip_prefix("2001:db8:1::1/64"),
            ],
        )
        .unwrap();
        p.set_interface_subnets("eth0", &[ip_prefix("192.0.2.17/28")])
            .unwrap();
        assert_eq!(p.iface_subnets.len(), 2);
        assert_eq!(
            p.iface_subnets[0],
            (
                ScopedEidKey::new(1, EidKey::new(AF_IPV4, 0, a)),
                SCOPED_KEY_PREFIX_BITS + 24
            )
        );
        assert_eq!(p.iface_subnets[1].0.key.family(), AF_IPV6);
        assert_eq!(p.iface_subnets[1].1, SCOPED_KEY_PREFIX_BITS + 64);
    }

    #[test]
    fn trunk_vlans_attach_to_the_parent_once() {
        let y = EXAMPLE.replace(
            "    extended-subnet-mode: false\n",
            "    extended-subnet-mode: true\n    instance-id: 0\n    trunk: { parent: eth1, vlan-id: 10 }\n  - { name: vlan20, role: eid, mobility: vm-mobility, trunk: { parent: eth1, vlan-id: 20 } }\n",
        );
        let y = y.replace("    instance-id: 0\n    mobility: vm-mobility\n    extended-subnet-mode: true\n    instance-id: 0\n", "    instance-id: 0\n    mobility: vm-mobility\n    extended-subnet-mode: true\n");
        let cfg = Config::from_yaml_str(&y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        let p = plan(&cfg, |n| match n {
            "vlan10" => Some(7),
            "vlan20" => Some(8),
            "eth1" => Some(5),
            "eth0" => Some(3),
            _ => None,
        })
        .unwrap();
        // eth1 (native XDP, tagged frames only), eth0; no program on the SVIs.
        let names: Vec<_> = p
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.ifindex))
            .collect();
        assert_eq!(names, vec![("eth1", 5), ("eth0", 3)]);
        assert_eq!(p.interfaces[0].value.flags, iface_flags::TRUNK);
        let keys: Vec<_> = p
            .mobility_ifaces
            .iter()
            .map(|m| (m.svi.as_str(), m.key, m.value.svi_ifindex, m.value.flags))
            .collect();
        assert_eq!(
            keys,
            vec![
                (
                    "vlan10",
                    MobilityIfaceKey::new(5, 10),
                    7,
                    mobility_flags::ITR | mobility_flags::EXTENDED_SUBNET
                ),
                (
                    "vlan20",
                    MobilityIfaceKey::new(5, 20),
                    8,
                    mobility_flags::ITR
                ),
            ]
        );
        assert_eq!(p.mobility_ifaces[1].value.subnet_scope, 2);
        // A trunk parent that is missing is named as such.
        let e = plan(&cfg, |n| (n != "eth1").then_some(1)).unwrap_err();
        assert_eq!(
            e,
            PlanError::NoSuchTrunkParent {
                index: 0,
                name: "eth1".into()
            }
        );
    }

    #[test]
    fn a_trunk_parent_configured_itself_keeps_its_role() {
        let trunk = IfaceEntry(7, "parent", true);
        let own = IfaceEntry(7, "parent", false);
        let merged = merge_interfaces(
            vec![
                trunk.planned(iface_flags::TRUNK, 0),
                own.planned(iface_flags::ITR, 3),
            ],
            &[trunk.2, own.2],
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].value.flags, iface_flags::TRUNK | iface_flags::ITR);
        assert_eq!(merged[0].value.instance_id, 3);
    }

    struct IfaceEntry(u32, &'static str, bool);
    impl IfaceEntry {
        fn planned(&self, flags: u32, iid: u32) -> PlannedInterface {
            PlannedInterface {
                name: self.1.into(),
                ifindex: self.0,
                value: InterfaceConfig {
                    flags,
                    instance_id: iid,
                },
                mode: XdpModeConfig::Auto,
            }
        }
    }

    #[test]
    fn eid_space_and_tables_from_example() {
        let p = example_plan();
        assert_eq!(p.eid_space.len(), 2);
        assert_eq!(p.eid_space[0].1, EID_KEY_PREFIX_BITS + 24);
        assert_eq!(p.eid_space[1].1, EID_KEY_PREFIX_BITS + 48);
        assert_eq!(p.eid_space[1].0.family(), AF_IPV6);
        assert_eq!(p.iid_tables, vec![(0, TABLE_MAIN)]);
    }

    #[test]
    fn eid_space_repeats_per_instance_id() {
        let y = "
locators: { ipv4: 192.0.2.17 }
eid-space: [203.0.113.0/24]
interfaces:
  - { name: a, role: eid, instance-id: 5 }
  - { name: b, role: eid, instance-id: 9 }
  - { name: c, role: eid, instance-id: 5 }
";
        let cfg = Config::from_yaml_str(y).unwrap();
        let p = plan(&cfg, |_| Some(1)).unwrap();
        let iids: Vec<u32> = p.eid_space.iter().map(|(k, _)| k.instance_id()).collect();
        assert_eq!(iids, vec![5, 9]);
    }

    #[test]
    fn map_cache_from_example() {
        let p = example_plan();
        assert_eq!(p.map_cache.len(), 2);
        let e0 = &p.map_cache[0];
        assert_eq!(e0.label, "map-cache 203.0.113.0/24 (iid 0)");
        assert_eq!(
            e0.placement,
            Placement::Prefix {
                lpm_len: EID_KEY_PREFIX_BITS + 24
            }
        );
        assert_eq!(e0.entry.action, action::ENCAPSULATE);
        assert_eq!(e0.entry.rloc_count, 3);
        let e1 = &p.map_cache[1];
        assert_eq!(e1.entry.action, action::DROP);
        assert_eq!(&e1.key.addr[..4], &[203, 0, 113, 128]);
    }

    #[test]
    fn host_entries_go_to_the_host_map() {
        let y = "
locators: { ipv4: 192.0.2.17 }
interfaces: [{ name: a, role: eid }]
map-cache:
  - { eid-prefix: 203.0.113.10/32, locators: [{ address: 192.0.2.33, priority: 1, weight: 1 }] }
";
        let cfg = Config::from_yaml_str(y).unwrap();
        let p = plan(&cfg, |_| Some(1)).unwrap();
        assert_eq!(p.map_cache[0].placement, Placement::Host);
    }

    #[test]
    fn only_instances_in_use_are_decapsulated() {
        let y = "
locators: { ipv4: 192.0.2.17 }
database-mappings:
  - { eid-prefix: 198.51.100.0/24, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }
  - { eid-prefix: 198.51.100.0/24, instance-id: 5, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }
instance-tables: [{ instance-id: 9, table: 100 }]
interfaces: [{ name: a, role: rloc }]
";
        let cfg = Config::from_yaml_str(y).unwrap();
        let p = plan(&cfg, |_| Some(1)).unwrap();
        // 9 has a table; 0 has EIDs here (main table through the rules); 5 has EIDs but no
        // table: not decapsulated, as before.
        assert_eq!(p.iid_tables, vec![(9, 100), (0, 0)]);
        assert_eq!(p.local_eids.len(), 2);
        assert_eq!(p.local_eids[1].0.instance_id(), 5);
        assert_eq!(p.local_eids[1].1, EID_KEY_PREFIX_BITS + 24);
        assert_ne!(p.settings.flags & settings_flags::CHECK_LOCAL_EIDS, 0);
        // Nothing in instance 0, no table for it: not decapsulated.
        let y = y.replace(
            "  - { eid-prefix: 198.51.100.0/24, locators",
            "  - { eid-prefix: 198.51.100.0/24, instance-id: 6, locators",
        );
        let p = plan(&Config::from_yaml_str(&y).unwrap(), |_| Some(1)).unwrap();
        assert_eq!(p.iid_tables, vec![(9, 100)]);
        // No database-mappings: no absent-EID checks.
        let y = "
locators: { ipv4: 192.0.2.17 }
interfaces: [{ name: a, role: rloc }]
";
        let p = plan(&Config::from_yaml_str(y).unwrap(), |_| Some(1)).unwrap();
        assert_eq!(p.settings.flags & settings_flags::CHECK_LOCAL_EIDS, 0);
        assert!(p.local_eids.is_empty());
    }

    #[test]
    fn checksum_option_global_and_per_locator() {
        let y = "
locators: { ipv4: 192.0.2.17, ipv6: '2001:db8:ff::1' }
ipv6-udp-checksum: true
interfaces: [{ name: a, role: eid }]
map-cache:
  - eid-prefix: 203.0.113.0/24
    locators:
      - { address: '2001:db8:ff::2', priority: 1, weight: 1, ipv6-udp-checksum: true }
      - { address: '2001:db8:ff::3', priority: 1, weight: 1 }
";
        let p = plan(&Config::from_yaml_str(y).unwrap(), |_| Some(1)).unwrap();
        assert_ne!(p.settings.flags & settings_flags::IPV6_UDP_CHECKSUM, 0);
        assert_eq!(
            p.checksum_rlocs,
            vec!["2001:db8:ff::2".parse::<IpAddr>().unwrap()]
        );
        let r = &p.map_cache[0].entry.rlocs;
        assert_eq!(r[0].flags, rloc_flags::IPV6_UDP_CHECKSUM);
        assert_eq!(r[1].flags, 0);
        let p = plan(
            &Config::from_yaml_str(&y.replace("ipv6-udp-checksum: true\n", "")).unwrap(),
            |_| Some(1),
        )
        .unwrap();
        assert_eq!(p.settings.flags & settings_flags::IPV6_UDP_CHECKSUM, 0);
    }

    #[test]
    fn missing_interface_is_named() {
        let cfg = Config::from_yaml_str(EXAMPLE).unwrap();
        let e = plan(&cfg, |n| (n == "vlan10").then_some(7)).unwrap_err();
        assert_eq!(
            e,
            PlanError::NoSuchInterface {
                index: 1,
                name: "eth0".into()
            }
        );
        assert!(
            e.to_string()
                .starts_with("interfaces[1]: interface 'eth0' does not exist")
        );
    }
}
