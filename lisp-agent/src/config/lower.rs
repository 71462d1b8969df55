//! Lowering: the validated YAML [`Config`] → the core's own config types ([`NodeConfig`]).
//!
//! The one place that knows both shapes: the core never imports `crate::config` (so a YAML
//! change cannot reach into protocol code, and core tests build their configs directly), and
//! the config never imports the core's state machines. What the core needs from the outside
//! world at start (entropy, wall-clock time) comes in as plain values ([`Seeds`]).

use std::net::IpAddr;

use lisp_common::wire::control::{Eid, XtrId};

use super::{Config, LocatorConfig, MapServerRef, MapServerRole, NegativeAction, ReplayProtection};
use crate::core::action::{EidPrefix, MapCacheData};
use crate::core::map_cache::{Locator, Negative};
use crate::core::map_server::config::{
    MapServerConfig, MapServerConfigError, NonceCheck, SiteConfig, SitePrefix,
};
use crate::core::mobility::{
    DynamicEidMapConfig, DynamicPrefix, MobilityConfig, MobilityInterface, MobilityMode, Trunk,
};
use crate::core::node::NodeConfig;
use crate::core::nonce::NonceSeed;
use crate::core::xtr::{
    DEFAULT_RECORD_TTL_MIN, DatabaseMapping, MapServerPeer, StaticMapping, XtrConfig, XtrLimits,
};

/// What the shell draws from the world once at start: the core has no entropy source or clock
/// of its own, so that its tests are deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// Key of the xTR's nonce generator (32 bytes of OS entropy).
    pub nonce_seed: NonceSeed,
    /// Key of the map-server's nonce generator (its own: the two roles must not draw the same
    /// nonces).
    pub map_server_nonce_seed: NonceSeed,
    /// First Map-Register nonce: something that grows with wall-clock time, so that nonces keep
    /// increasing across restarts (map-servers that insist on increasing nonces).
    pub register_nonce_base: u64,
}

/// The whole node: the xTR always, the map-server when `map-server.enabled`.
pub fn node_config(c: &Config, seeds: Seeds) -> Result<NodeConfig, MapServerConfigError> {
    let map_server = if c.map_server.enabled {
        let mut m = map_server_config(&c.map_server)?;
        m.nonce_seed = seeds.map_server_nonce_seed;
        Some(m)
    } else {
        None
    };
    Ok(NodeConfig {
        xtr: xtr_config(c, seeds),
        map_server,
        mobility: mobility_config(c),
    })
}

fn map_server_peer(m: &MapServerRef) -> MapServerPeer {
    MapServerPeer {
        address: m.address,
        key: m.key.as_bytes().to_vec(),
        algorithm: m.key_algorithm.into(),
        proxy_reply: m.proxy_reply,
    }
}

/// The mobility role's part: the dynamic-EID maps and the interfaces that use them (by name;
/// the shell fills in the ifindexes with `MobilityConfig::resolve_ifindexes`).
pub fn mobility_config(c: &Config) -> MobilityConfig {
    let maps: Vec<DynamicEidMapConfig> = c
        .dynamic_eid_maps
        .iter()
        .map(|d| DynamicEidMapConfig {
            name: d.name.clone(),
            instance_id: d.instance_id,
            prefixes: d
                .database_mappings
                .iter()
                .map(|m| DynamicPrefix {
                    eid: EidPrefix::from_ip_prefix(d.instance_id, m.eid_prefix),
                    locators: m.locators.iter().map(Locator::from).collect(),
                })
                .collect(),
            // Validation makes the group required; unspecified only for an unvalidated config.
            group: d
                .map_notify_group
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            map_servers: d.map_servers.iter().map(map_server_peer).collect(),
            inactivity: d.inactivity_timeout.0,
        })
        .collect();
    let interfaces = c
        .interfaces
        .iter()
        .filter_map(|i| {
            let map = maps
                .iter()
                .position(|m| Some(&m.name) == i.mobility.as_ref())?;
            Some(MobilityInterface {
                name: i.name.clone(),
                map,
                mode: if i.extended_subnet_mode {
                    MobilityMode::ExtendedSubnet
                } else {
                    MobilityMode::AcrossSubnet
                },
                trunk: i.trunk.as_ref().map(|t| Trunk {
                    parent: t.parent.clone(),
                    vlan_id: u16::try_from(t.vlan_id).unwrap_or(0),
                    parent_ifindex: 0,
                }),
                ifindex: 0,
            })
        })
        .collect();
    MobilityConfig { maps, interfaces }
}

/// The config's view of a locator: priority/weight already validated to fit a byte.
impl From<&LocatorConfig> for Locator {
    fn from(l: &LocatorConfig) -> Self {
        let (priority, weight) = l.priority_weight();
        Locator {
            addr: l.address,
            priority,
            weight,
        }
    }
}

impl From<NegativeAction> for Negative {
    fn from(a: NegativeAction) -> Self {
        match a {
            NegativeAction::Drop => Negative::Drop,
            NegativeAction::NativelyForward => Negative::NativelyForward,
            NegativeAction::SendMapRequest => Negative::SendMapRequest,
        }
    }
}

/// The xTR's part.
pub fn xtr_config(c: &Config, seeds: Seeds) -> XtrConfig {
    let locators: Vec<IpAddr> = c
        .locators
        .ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(c.locators.ipv6.map(IpAddr::V6))
        .collect();
    let locs = |l: &[LocatorConfig]| l.iter().map(Locator::from).collect();
    let database_mappings = c
        .database_mappings
        .iter()
        .map(|m| DatabaseMapping {
            eid: EidPrefix::from_ip_prefix(m.instance_id, m.eid_prefix),
            locators: locs(&m.locators),
        })
        .collect();
    let static_map_cache = c
        .map_cache
        .iter()
        .map(|m| StaticMapping {
            eid: EidPrefix::from_ip_prefix(m.instance_id, m.eid_prefix),
            data: match m.action {
                Some(a) => MapCacheData::Negative(a.into()),
                None => MapCacheData::Positive(locs(&m.locators)),
            },
        })
        .collect();
    let map_servers = c.map_servers.iter().map(map_server_peer).collect();
    // The eid-space prefixes apply in every instance the ITR serves; the xTR matches them in
    // the instance of the miss, so instance 0 stands for all here.
    let eid_space = c
        .eid_space
        .iter()
        .map(|p| EidPrefix::from_ip_prefix(0, *p))
        .collect();
    // A stable xTR-ID (map-servers key replay protection by it): derived from our locators.
    let mut id = [0u8; 16];
    if let Some(v6) = c.locators.ipv6 {
        id = v6.octets();
    }
    if let Some(v4) = c.locators.ipv4 {
        id[..4].copy_from_slice(&v4.octets());
    }
    XtrConfig {
        locators,
        database_mappings,
        map_servers,
        map_resolvers: c.map_resolvers.clone(),
        eid_space,
        static_map_cache,
        register_interval: c.register_interval.0,
        record_ttl_min: DEFAULT_RECORD_TTL_MIN,
        xtr_id: Some(XtrId {
            xtr_id: id,
            site_id: 0,
        }),
        nonce_seed: seeds.nonce_seed,
        register_nonce_base: seeds.register_nonce_base,
        subscribe: c.subscribe,
        limits: XtrLimits::default(),
    }
}

/// The map-server's part, with the core's defaults for everything the YAML does not say.
pub fn map_server_config(role: &MapServerRole) -> Result<MapServerConfig, MapServerConfigError> {
    let mut sites = Vec::with_capacity(role.sites.len());
    for s in &role.sites {
        let mut prefixes = Vec::with_capacity(s.eid_prefixes.len());
        for p in &s.eid_prefixes {
            // Validation already refused host bits; this keeps the core's invariant even for a
            // config built without `validate`.
            if p.prefix.has_host_bits() {
                return Err(MapServerConfigError::BadPrefix {
                    site: s.name.clone(),
                    prefix: p.prefix.to_string(),
                });
            }
            prefixes.push(SitePrefix {
                // Instance 0 without the LCAF: the core keys both spellings alike.
                eid: Eid::new((p.instance_id != 0).then_some(p.instance_id), p.prefix),
                accept_more_specifics: p.accept_more_specifics,
            });
        }
        sites.push(SiteConfig {
            name: s.name.clone(),
            key: s.key.as_bytes().to_vec(),
            algorithm: s.key_algorithm.into(),
            prefixes,
        });
    }
    let cfg = MapServerConfig {
        sites,
        nonce_check: match role.replay_protection {
            ReplayProtection::FreshChanges => NonceCheck::FreshChanges,
            ReplayProtection::IncreasingNonce => NonceCheck::Increasing,
            ReplayProtection::NoRepeat => NonceCheck::NoRepeat,
        },
        ..MapServerConfig::default()
    };
    cfg.check()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyAlgorithm, Site, SitePrefix as YamlSitePrefix};
    use lisp_common::wire::control::auth::Algorithm;
    use std::time::Duration;

    const EXAMPLE: &str = include_str!("../../../deploy/lisp-agent.example.yaml");
    const SEEDS: Seeds = Seeds {
        nonce_seed: NonceSeed([1; 32]),
        map_server_nonce_seed: NonceSeed([3; 32]),
        register_nonce_base: 2,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pfx(s: &str) -> EidPrefix {
        EidPrefix::from_ip_prefix(0, s.parse().unwrap())
    }

    #[test]
    fn xtr_config_from_the_example_yaml() {
        let c = Config::from_yaml_str(EXAMPLE).unwrap();
        let x = xtr_config(&c, SEEDS);
        assert_eq!(x.locators, vec![ip("192.0.2.17"), ip("2001:db8:ff:11::1")]);
        assert_eq!(x.database_mappings.len(), 2);
        assert_eq!(x.database_mappings[0].eid, pfx("198.51.100.0/24"));
        assert_eq!(x.database_mappings[1].locators[1].priority, 2);
        assert_eq!(x.map_servers.len(), 1);
        assert_eq!(x.map_servers[0].algorithm, Algorithm::HmacSha256);
        assert_eq!(x.map_servers[0].key, b"site1-secret");
        assert_eq!(x.map_resolvers, vec![ip("192.0.2.1")]);
        assert_eq!(x.eid_space.len(), 2);
        assert_eq!(x.static_map_cache.len(), 2);
        assert_eq!(x.static_map_cache[0].eid, pfx("203.0.113.0/24"));
        let MapCacheData::Positive(l) = &x.static_map_cache[0].data else {
            panic!("{:?}", x.static_map_cache[0])
        };
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[2].addr, l[2].priority, l[2].weight),
            (ip("2001:db8:ff:12::1"), 2, 100)
        );
        assert_eq!(
            x.static_map_cache[1],
            StaticMapping {
                eid: pfx("203.0.113.128/25"),
                data: MapCacheData::Negative(Negative::Drop),
            }
        );
        assert_eq!(x.register_interval, Duration::from_secs(60));
        assert_eq!(
            (x.nonce_seed, x.register_nonce_base),
            (NonceSeed([1; 32]), 2)
        );
        assert!(x.xtr_id.is_some());
        assert!(x.subscribe);
        // Off unless asked for.
        let off = EXAMPLE.replace("subscribe: true\n", "");
        assert!(!xtr_config(&Config::from_yaml_str(&off).unwrap(), SEEDS).subscribe);
        // The key is not printed.
        assert!(!format!("{:?}", x.map_servers[0]).contains("site1-secret"));
    }

    #[test]
    fn mobility_config_from_yaml() {
        let y = "
locators: { ipv4: 192.0.2.17 }
map-servers: [{ address: 192.0.2.1, key: global }]
dynamic-eid-maps:
  - name: Roamer-1
    instance-id: 7
    database-mappings:
      - { eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 100 }] }
      - { eid-prefix: '2001:db8:aa::/64', locators: [{ address: 192.0.2.17, priority: 2, weight: 50 }] }
    map-notify-group: 239.1.1.254
    map-servers: [{ address: 192.0.2.2, key: own, proxy-reply: true }]
    inactivity-timeout: 30s
  - name: other
    database-mappings: [{ eid-prefix: 203.0.113.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }]
    map-notify-group: 239.1.1.253
interfaces:
  - { name: eth0, role: rloc }
  - { name: vlan10, role: eid, instance-id: 7, mobility: Roamer-1, extended-subnet-mode: true, trunk: { parent: eth1, vlan-id: 10 } }
  - { name: vlan20, role: eid, mobility: other }
";
        let c = Config::from_yaml_str(y).unwrap();
        let mut m = mobility_config(&c);
        assert_eq!(m.maps.len(), 2);
        let r = &m.maps[0];
        assert_eq!((r.name.as_str(), r.instance_id), ("Roamer-1", 7));
        assert_eq!(
            r.prefixes[1].eid,
            EidPrefix::from_ip_prefix(7, "2001:db8:aa::/64".parse().unwrap())
        );
        assert_eq!(
            r.prefixes[1].locators,
            vec![Locator {
                addr: ip("192.0.2.17"),
                priority: 2,
                weight: 50
            }]
        );
        assert_eq!(r.group, ip("239.1.1.254"));
        assert_eq!(r.map_servers.len(), 1);
        assert_eq!(r.map_servers[0].key, b"own");
        assert!(r.map_servers[0].proxy_reply);
        assert_eq!(r.inactivity, Duration::from_secs(30));
        // No map-servers of its own: the global ones apply (empty here).
        assert!(m.maps[1].map_servers.is_empty());
        assert_eq!(m.maps[1].inactivity, Duration::from_secs(180));
        assert_eq!(m.interfaces.len(), 2);
        let v10 = &m.interfaces[0];
        assert_eq!(
            (v10.name.as_str(), v10.map, v10.mode),
            ("vlan10", 0, MobilityMode::ExtendedSubnet)
        );
        assert_eq!(
            v10.trunk.as_ref().map(|t| (t.parent.as_str(), t.vlan_id)),
            Some(("eth1", 10))
        );
        assert_eq!(
            (m.interfaces[1].map, m.interfaces[1].mode),
            (1, MobilityMode::AcrossSubnet)
        );

        let names = |n: &str| match n {
            "vlan10" => Some(10),
            "eth1" => Some(3),
            "vlan20" => Some(20),
            _ => None,
        };
        m.resolve_ifindexes(names).unwrap();
        assert_eq!(m.interface_of(3, Some(10)), Some(0));
        assert_eq!(m.interface_of(3, Some(11)), None);
        assert_eq!(m.interface_of(20, None), Some(1));
        assert_eq!(m.interface_of(20, Some(10)), None);
        let mut missing = mobility_config(&c);
        assert_eq!(
            missing
                .resolve_ifindexes(|n| (n != "eth1").then_some(1))
                .unwrap_err()
                .to_string(),
            "mobility interface 'eth1' does not exist"
        );
        assert_eq!(
            node_config(&c, SEEDS).unwrap().mobility,
            mobility_config(&c)
        );
    }

    #[test]
    fn node_config_has_a_map_server_only_when_enabled() {
        let mut c = Config::from_yaml_str(EXAMPLE).unwrap();
        c.map_server.enabled = true;
        let n = node_config(&c, SEEDS).unwrap();
        assert_eq!(n.xtr, xtr_config(&c, SEEDS));
        let ms = n.map_server.expect("enabled");
        assert_eq!(ms.sites.len(), c.map_server.sites.len());
        // Its own key, not a constant nor the xTR's.
        assert_eq!(ms.nonce_seed, NonceSeed([3; 32]));
        c.map_server.enabled = false;
        assert!(node_config(&c, SEEDS).unwrap().map_server.is_none());
    }

    fn role() -> MapServerRole {
        MapServerRole {
            enabled: true,
            sites: vec![Site {
                name: "site1".into(),
                key: "site1-secret".into(),
                key_algorithm: KeyAlgorithm::HmacSha1,
                eid_prefixes: vec![
                    YamlSitePrefix {
                        prefix: "198.51.100.0/24".parse().unwrap(),
                        instance_id: 0,
                        accept_more_specifics: true,
                    },
                    YamlSitePrefix {
                        prefix: "198.51.100.0/24".parse().unwrap(),
                        instance_id: 100,
                        accept_more_specifics: false,
                    },
                ],
            }],
            replay_protection: ReplayProtection::IncreasingNonce,
        }
    }

    #[test]
    fn map_server_config_from_yaml_section() {
        let role = role();
        let c = map_server_config(&role).unwrap();
        assert_eq!(c.nonce_check, NonceCheck::Increasing);
        let by_default = MapServerRole {
            replay_protection: Default::default(),
            ..role.clone()
        };
        assert_eq!(
            map_server_config(&by_default).unwrap().nonce_check,
            NonceCheck::FreshChanges
        );
        let random_nonce_peers = MapServerRole {
            replay_protection: ReplayProtection::NoRepeat,
            ..role.clone()
        };
        assert_eq!(
            map_server_config(&random_nonce_peers).unwrap().nonce_check,
            NonceCheck::NoRepeat
        );
        assert_eq!(c.sites[0].algorithm, Algorithm::HmacSha1);
        assert_eq!(c.sites[0].key, b"site1-secret");
        assert_eq!(
            c.sites[0].prefixes[0].eid,
            Eid::new(None, "198.51.100.0/24".parse().unwrap())
        );
        // A site prefix in an instance: the EID carries it (the LCAF on the wire).
        assert_eq!(
            c.sites[0].prefixes[1].eid,
            Eid::new(Some(100), "198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(c.registration_lifetime, Duration::from_secs(180));
        assert!(!format!("{:?}", c.sites[0]).contains("secret"));
        let mut dup = role.clone();
        dup.sites.push(Site {
            name: "site2".into(),
            ..role.sites[0].clone()
        });
        assert!(matches!(
            map_server_config(&dup),
            Err(MapServerConfigError::DuplicatePrefix { .. })
        ));
        let mut host_bits = role.clone();
        host_bits.sites[0].eid_prefixes[0].prefix = "198.51.100.7/24".parse().unwrap();
        assert!(matches!(
            map_server_config(&host_bits),
            Err(MapServerConfigError::BadPrefix { .. })
        ));
    }

    /// The rule this module exists for: no code line under `src/core` names the config
    /// (comments may point here).
    #[test]
    fn core_does_not_import_the_config() {
        fn walk(dir: &std::path::Path, bad: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, bad);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or("");
                        if code.contains("crate::config") || code.contains("lisp_agent::config") {
                            bad.push(format!("{}:{}: {line}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        let mut bad = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"),
            &mut bad,
        );
        assert!(
            bad.is_empty(),
            "core imports the config:\n{}",
            bad.join("\n")
        );
    }
}
