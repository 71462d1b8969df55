//! The HSRP groups of one interface: one receive path for all of them. A datagram is parsed
//! once and handed to the group it is for (same version, address family and group number);
//! what is for none of them is counted here, so that a group's counters only speak about its
//! own traffic.

use std::net::IpAddr;

use lisp_common::wire::hsrp::{Message, Version};

use super::config::{ConfigError, GroupConfig};
use super::group::{Action, Event, HsrpGroup};
use crate::core::time::{Timestamp, earliest};

/// Which group of an interface: what a received message is matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub version: Version,
    pub ipv6: bool,
    pub group: u16,
}

impl GroupKey {
    pub fn of(cfg: &GroupConfig) -> Self {
        GroupKey {
            version: cfg.version,
            ipv6: cfg.ipv6,
            group: cfg.group,
        }
    }

    /// The group a received message is for (`None`: a v1 advertisement, for no group).
    pub fn of_message(m: &Message) -> Option<Self> {
        match m {
            Message::V1(r) => Some(GroupKey {
                version: Version::V1,
                ipv6: false,
                group: u16::from(r.group),
            }),
            Message::V1Advertise(_) => None,
            Message::V2(r) => Some(GroupKey {
                version: Version::V2,
                ipv6: r.group_state.vip.is_ipv6(),
                group: r.group_state.group,
            }),
        }
    }
}

/// What an interface's groups are refused for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceConfigError {
    #[error("HSRP group {0:?}: {1}")]
    Group(GroupKey, ConfigError),
    #[error("HSRP group {0:?} configured twice on one interface")]
    Duplicate(GroupKey),
}

/// Datagrams that reached the interface but no group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Does not parse as HSRP.
    pub malformed: u64,
    /// For a version / family / group not configured here.
    pub no_group: u64,
    /// v1 interface-state advertisements (part of no group's election).
    pub advertisements: u64,
}

/// The groups configured on one interface (bounded by the configuration).
#[derive(Debug)]
pub struct HsrpInterface {
    groups: Vec<HsrpGroup>,
    counters: InterfaceCounters,
}

impl HsrpInterface {
    pub fn new(configs: Vec<GroupConfig>) -> Result<Self, InterfaceConfigError> {
        let mut groups: Vec<HsrpGroup> = Vec::with_capacity(configs.len());
        for cfg in configs {
            let key = GroupKey::of(&cfg);
            if groups.iter().any(|g| GroupKey::of(g.config()) == key) {
                return Err(InterfaceConfigError::Duplicate(key));
            }
            groups.push(HsrpGroup::new(cfg).map_err(|e| InterfaceConfigError::Group(key, e))?);
        }
        Ok(HsrpInterface {
            groups,
            counters: InterfaceCounters::default(),
        })
    }

    pub fn groups(&self) -> &[HsrpGroup] {
        &self.groups
    }

    pub fn group(&self, key: GroupKey) -> Option<&HsrpGroup> {
        self.groups.iter().find(|g| GroupKey::of(g.config()) == key)
    }

    pub fn counters(&self) -> &InterfaceCounters {
        &self.counters
    }

    /// The earliest timer of any group.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.groups
            .iter()
            .map(HsrpGroup::poll_timeout)
            .fold(None, earliest)
    }

    /// Up, Down and Timer go to every group (a group whose timer is not due does nothing);
    /// `Received` to the group it is for. Each action comes with its group.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<(GroupKey, Action)> {
        match event {
            Event::Received { message, .. } => {
                let Some(key) = GroupKey::of_message(&message) else {
                    self.counters.advertisements += 1;
                    return Vec::new();
                };
                match self
                    .groups
                    .iter_mut()
                    .find(|g| GroupKey::of(g.config()) == key)
                {
                    Some(g) => g.handle(now, event).into_iter().map(|a| (key, a)).collect(),
                    None => {
                        self.counters.no_group += 1;
                        Vec::new()
                    }
                }
            }
            Event::Up | Event::Down | Event::Timer => self
                .groups
                .iter_mut()
                .flat_map(|g| {
                    let key = GroupKey::of(g.config());
                    g.handle(now, event).into_iter().map(move |a| (key, a))
                })
                .collect(),
        }
    }

    /// A UDP payload received on port 1985 / 2029 from `src`.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        src: IpAddr,
        payload: &[u8],
    ) -> Vec<(GroupKey, Action)> {
        match Message::parse(payload) {
            Ok(message) => self.handle(now, Event::Received { src, message }),
            Err(_) => {
                self.counters.malformed += 1;
                Vec::new()
            }
        }
    }
}
