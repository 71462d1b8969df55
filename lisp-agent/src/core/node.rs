//! The whole node as one deterministic state machine: the xTR and, where configured, the
//! map-server.

use super::map_server::config::MapServerConfig;
use super::xtr::XtrConfig;

/// Everything the node needs, in the core's own types (lowered from the YAML by
/// `crate::config::lower`, or built directly by tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub xtr: XtrConfig,
    /// `None`: this node is not a map-server / map-resolver.
    pub map_server: Option<MapServerConfig>,
}
