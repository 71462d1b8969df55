//! The mobility role's configuration, in the core's own types (lowered from the YAML
//! `dynamic-eid-maps` and the `mobility` interfaces by `crate::config::lower`, or built by
//! tests).
//!
//! Interfaces are named, not numbered: the config knows kernel names only. The shell resolves
//! each name to its ifindex at start ([`MobilityConfig::resolve_ifindexes`]) before the node is
//! built, so that the core can match the ifindex of a detection event to its interface.

use std::net::IpAddr;
use std::time::Duration;

use crate::core::action::EidPrefix;
use crate::core::map_cache::Locator;
use crate::core::xtr::MapServerPeer;

/// `lisp dynamic-eid <name>` and every `lisp mobility <name>` interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MobilityConfig {
    pub maps: Vec<DynamicEidMapConfig>,
    pub interfaces: Vec<MobilityInterface>,
    /// Bound on the dynamic-EID table (local, site and away entries): detections beyond it are
    /// refused and counted.
    pub max_eids: usize,
}

/// Default bound of the dynamic-EID table: the 100k dynamic EIDs.
pub const DEFAULT_MAX_EIDS: usize = 100_000;

impl Default for MobilityConfig {
    fn default() -> Self {
        MobilityConfig {
            maps: Vec::new(),
            interfaces: Vec::new(),
            max_eids: DEFAULT_MAX_EIDS,
        }
    }
}

/// One dynamic-EID map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicEidMapConfig {
    /// Case-sensitive, `[A-Za-z0-9_-]`, 1..=64 characters (validated by the config).
    pub name: String,
    pub instance_id: u32,
    /// The prefixes hosts may roam in, each with this site's locators for it.
    pub prefixes: Vec<DynamicPrefix>,
    /// The site's map-notify-group (multicast).
    pub group: IpAddr,
    /// Map-servers the map's EIDs register with; empty: the global ones.
    pub map_servers: Vec<MapServerPeer>,
    /// A dynamic EID that sent nothing for this long is deregistered.
    pub inactivity: Duration,
}

/// A dynamic-EID prefix of a map (`database-mapping` inside `lisp dynamic-eid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicPrefix {
    pub eid: EidPrefix,
    /// This site's locators for the host routes registered from this prefix.
    pub locators: Vec<Locator>,
}

/// Detection rule of a mobility interface (reference: `lisp extended-subnet-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MobilityMode {
    /// The host moved to a site where its subnet does not exist: a source in the dynamic
    /// prefix and not in one of the interface's own subnets is a detection.
    #[default]
    AcrossSubnet,
    /// The subnet is stretched between sites: any source in the dynamic prefix not yet known.
    ExtendedSubnet,
}

/// An 802.1Q trunk: XDP on the physical `parent`, the VLAN ID selects this interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trunk {
    pub parent: String,
    pub vlan_id: u16,
    /// The parent's ifindex, set by [`MobilityConfig::resolve_ifindexes`]; 0 until then.
    pub parent_ifindex: u32,
}

/// An interface with `lisp mobility <map>`: the SVI (host routes and ARP live there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MobilityInterface {
    /// Kernel name of the SVI (`vlan10`, `eth1.10`).
    pub name: String,
    /// Index into [`MobilityConfig::maps`].
    pub map: usize,
    pub mode: MobilityMode,
    pub trunk: Option<Trunk>,
    /// The SVI's ifindex, set by [`MobilityConfig::resolve_ifindexes`]; 0 until then.
    pub ifindex: u32,
}

/// A name the shell could not resolve to an interface.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mobility interface '{0}' does not exist")]
pub struct NoSuchInterface(pub String);

impl MobilityConfig {
    /// Fills in the ifindexes of the interfaces and trunk parents from the kernel's names.
    pub fn resolve_ifindexes(
        &mut self,
        ifindex_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<(), NoSuchInterface> {
        for i in &mut self.interfaces {
            i.ifindex = ifindex_of(&i.name).ok_or_else(|| NoSuchInterface(i.name.clone()))?;
            if let Some(t) = &mut i.trunk {
                t.parent_ifindex =
                    ifindex_of(&t.parent).ok_or_else(|| NoSuchInterface(t.parent.clone()))?;
            }
        }
        Ok(())
    }

    /// The interface a detection event came from: the SVI itself (untagged), or the trunk
    /// parent with the VLAN ID.
    pub fn interface_of(&self, ifindex: u32, vlan: Option<u16>) -> Option<usize> {
        self.interfaces.iter().position(|i| match (vlan, &i.trunk) {
            (Some(v), Some(t)) => t.parent_ifindex == ifindex && t.vlan_id == v,
            (None, _) => i.ifindex == ifindex,
            (Some(_), None) => false,
        })
    }
}
