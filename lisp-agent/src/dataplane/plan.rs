//! What the maps must hold for a configuration: computed without touching the kernel, so that
//! it is tested without root and the loader stays a plain copy loop.

use std::net::IpAddr;

use lisp_common::maps::{
    EidKey, InterfaceConfig, MapCacheEntry, RlocKey, Settings, iface_flags, rloc_flags,
    settings_flags,
};

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

    let mut interfaces = Vec::new();
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
        if i.mobility.is_some() {
            flags |= iface_flags::MOBILITY;
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
    }

    let entry_err = |label: &str| {
        let label = label.to_string();
        move |source| PlanError::Entry { label, source }
    };

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
    })
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
        let p = plan(&cfg, |_| Some(1)).unwrap();
        assert_eq!(p.interfaces[0].value.flags, iface_flags::MOBILITY);
        assert_eq!(p.interfaces[1].value.flags, iface_flags::ETR);
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
