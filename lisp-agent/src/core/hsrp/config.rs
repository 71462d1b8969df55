//! One HSRP group's configuration as the core takes it (the YAML config lowers into this), and
//! its validation: everything the wire or the election cannot represent is refused here, so the
//! state machine never has to.

use std::net::IpAddr;
use std::time::Duration;

use lisp_common::wire::hsrp::{self, DEFAULT_AUTH, DEFAULT_PRIORITY, Version};

/// Hello and hold times of a group (RFC 2281 §5.1; v1 carries whole seconds, v2 milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Interval between two hellos.
    pub hello: Duration,
    /// How long a router is believed after its last hello.
    pub hold: Duration,
}

impl Default for Timers {
    /// RFC 2281's recommended 3 s / 10 s.
    fn default() -> Self {
        Timers {
            hello: Duration::from_millis(u64::from(hsrp::DEFAULT_HELLO_MS)),
            hold: Duration::from_millis(u64::from(hsrp::DEFAULT_HOLD_MS)),
        }
    }
}

/// One group on one interface (`hsrp <group>` in the reference configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub version: Version,
    /// 0..=255 (v1), 0..=4095 (v2).
    pub group: u16,
    /// An IPv6 group (v2 only): hellos to `[ff02::66]:2029`, IPv6 virtual IP.
    pub ipv6: bool,
    /// `ip <vip>`; `None`: learned from the active router's hellos (RFC 2281 §5.1).
    pub vip: Option<IpAddr>,
    /// Higher wins; equal priorities are decided by the higher interface address.
    pub priority: u8,
    /// `preempt [delay minimum <d>]`: take over from a lower-priority active router with a
    /// coup, but not before `d` after the group came up (Cisco's "minimum" delay, counted
    /// "since that router was last restarted": routing converges before the router takes the
    /// traffic). `None`: no preemption.
    pub preempt: Option<Duration>,
    /// `timers <hello> <hold>`; `None`: learned from the active router, 3 s / 10 s until then.
    pub timers: Option<Timers>,
    /// Clear-text authentication, zero padded ("cisco" by default).
    pub auth: [u8; 8],
    /// `mac-address`: the virtual MAC; `None`: the well-known one of the version and group.
    pub mac: Option<[u8; 6]>,
    /// This router's address on the interface (IPv4, or the IPv6 link-local address of a v6
    /// group): the hellos' source, and the election's tie-break.
    pub local_addr: IpAddr,
    /// This router's interface MAC (the v2 "identifier").
    pub local_mac: [u8; 6],
}

// The password never appears in logs.
impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("version", &self.version)
            .field("group", &self.group)
            .field("ipv6", &self.ipv6)
            .field("vip", &self.vip)
            .field("priority", &self.priority)
            .field("preempt", &self.preempt)
            .field("timers", &self.timers)
            .field("auth", &"<redacted>")
            .field("mac", &self.mac)
            .field("local_addr", &self.local_addr)
            .field("local_mac", &self.local_mac)
            .finish()
    }
}

impl GroupConfig {
    /// A group with every default: priority 100, no preemption, learned timers and VIP,
    /// authentication "cisco", the well-known virtual MAC; IPv6 if `local_addr` is.
    pub fn new(version: Version, group: u16, local_addr: IpAddr, local_mac: [u8; 6]) -> Self {
        GroupConfig {
            version,
            group,
            ipv6: local_addr.is_ipv6(),
            vip: None,
            priority: DEFAULT_PRIORITY,
            preempt: None,
            timers: None,
            auth: DEFAULT_AUTH,
            mac: None,
            local_addr,
            local_mac,
        }
    }

    /// The authentication from a configured string (at most 8 bytes, zero padded).
    pub fn auth_from_str(s: &str) -> Result<[u8; 8], ConfigError> {
        let b = s.as_bytes();
        if b.len() > 8 {
            return Err(ConfigError::AuthTooLong(b.len()));
        }
        let mut a = [0; 8];
        a[..b.len()].copy_from_slice(b);
        Ok(a)
    }

    /// The virtual MAC in use: the configured one, else the well-known one.
    pub fn virtual_mac(&self) -> [u8; 6] {
        self.mac
            .or_else(|| hsrp::virtual_mac(self.version, self.ipv6, self.group))
            // validate() refuses groups without a well-known MAC.
            .unwrap_or([0; 6])
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = match self.version {
            Version::V1 => hsrp::V1_MAX_GROUP,
            Version::V2 => hsrp::V2_MAX_GROUP,
        };
        if self.group > max {
            return Err(ConfigError::GroupOutOfRange {
                group: self.group,
                max,
            });
        }
        if self.ipv6 && self.version == Version::V1 {
            return Err(ConfigError::Ipv6NeedsV2);
        }
        if self.local_addr.is_ipv6() != self.ipv6 {
            return Err(ConfigError::LocalAddrFamily(self.local_addr));
        }
        if let Some(vip) = self.vip {
            if vip.is_ipv6() != self.ipv6 {
                return Err(ConfigError::VipFamily(vip));
            }
            if vip.is_unspecified() || vip.is_multicast() {
                return Err(ConfigError::VipUnusable(vip));
            }
        }
        if let Some(mac) = self.mac {
            // A group (multicast) bit or all zeros cannot be a host's gateway MAC.
            if mac[0] & 1 != 0 || mac == [0; 6] {
                return Err(ConfigError::MacUnusable(mac));
            }
        }
        if let Some(t) = self.timers {
            if t.hello.is_zero() || t.hold <= t.hello {
                return Err(ConfigError::TimersOrder {
                    hello: t.hello,
                    hold: t.hold,
                });
            }
            match self.version {
                // v1 carries whole seconds in one octet.
                Version::V1 => {
                    for d in [t.hello, t.hold] {
                        if d.subsec_nanos() != 0 || d.as_secs() > 255 {
                            return Err(ConfigError::V1Timer(d));
                        }
                    }
                }
                Version::V2 => {
                    for d in [t.hello, t.hold] {
                        if d.subsec_nanos() % 1_000_000 != 0 || d.as_millis() > u32::MAX as u128 {
                            return Err(ConfigError::V2Timer(d));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with a [`GroupConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("HSRP group {group} out of range (at most {max} for this version)")]
    GroupOutOfRange { group: u16, max: u16 },
    #[error("HSRP for IPv6 needs version 2")]
    Ipv6NeedsV2,
    #[error("interface address {0} is not of the group's address family")]
    LocalAddrFamily(IpAddr),
    #[error("virtual IP {0} is not of the group's address family")]
    VipFamily(IpAddr),
    #[error("virtual IP {0} cannot be a gateway address")]
    VipUnusable(IpAddr),
    #[error("virtual MAC {0:02x?} is multicast or zero")]
    MacUnusable([u8; 6]),
    #[error("HSRP hold time {hold:?} must be longer than the hello time {hello:?} (> 0)")]
    TimersOrder { hello: Duration, hold: Duration },
    #[error("HSRPv1 timers are whole seconds up to 255: {0:?}")]
    V1Timer(Duration),
    #[error("HSRPv2 timers are whole milliseconds up to 2^32-1: {0:?}")]
    V2Timer(Duration),
    #[error("HSRP authentication is at most 8 bytes, got {0}")]
    AuthTooLong(usize),
}
