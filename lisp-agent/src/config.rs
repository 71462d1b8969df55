//! Typed, validated configuration (YAML).
//!
//! The shape follows the NX-OS LISP commands of the reference design; the annotated example in
//! `deploy/lisp-agent.example.yaml` is the contract (other tools generate configs in that shape).
//!
//! Parsing happens in two steps: serde turns the YAML into the types below (kebab-case keys,
//! unknown keys rejected, so a typo is an error rather than a silently ignored setting), then
//! [`Config::validate`] checks what serde cannot: ranges, prefixes with host bits, duplicates,
//! references between sections. Every error names where it is (`map-cache[1].locators[0]`) and
//! what is wrong.
//!
//! ## Why serde-saphyr
//! `serde_yaml` is archived upstream. Of its successors, `serde_yaml_ng` and `serde_norway` are
//! forks that still sit on `unsafe-libyaml` (a machine translation of libyaml to unsafe Rust).
//! `serde-saphyr` is maintained, builds on Rust 1.95 (MSRV 1.89), is a pure safe-Rust parser
//! (saphyr/granit) that advertises panic-free parsing and budgets against hostile documents
//! (alias bombs), and reports errors with line and column. We only need deserialization, so the
//! `serialize` feature is off.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use lisp_common::maps::MAX_RLOCS;
use serde::Deserialize;
use serde::de::{self, Deserializer};

pub mod lower;

/// Largest instance-id: 24 bits (RFC 9300 §5.3).
pub const MAX_INSTANCE_ID: u32 = 0x00ff_ffff;

/// Kernel routing table ids with names in `/etc/iproute2/rt_tables`.
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;
pub const TABLE_DEFAULT: u32 = 253;

// ------------------------------------------------------------------------------------- errors

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not YAML, or not the shape of a config (unknown key, wrong type, bad address...).
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but inconsistent or out of range.
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

fn invalid(path: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        problem: problem.into(),
    }
}

// ------------------------------------------------------------------------------------- prefix

/// The workspace's prefix type ([`lisp_common::prefix`]). A prefix is kept as written, host
/// bits included, so that validation can point at them instead of silently masking them away.
pub use lisp_common::prefix::IpPrefix;
use lisp_common::prefix::ParsePrefixError;

/// `address/length` text as a prefix, with an error that quotes the text.
pub fn parse_prefix(s: &str) -> Result<IpPrefix, String> {
    s.parse().map_err(|e| {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        match e {
            ParsePrefixError::NoSlash => {
                format!("'{s}' is not a prefix (expected address/length)")
            }
            ParsePrefixError::BadAddress => format!("'{a}' in prefix '{s}' is not an IP address"),
            ParsePrefixError::BadLength => {
                format!("'{l}' in prefix '{s}' is not a prefix length")
            }
            ParsePrefixError::TooLong { len, max } => {
                format!("prefix length {len} of '{s}' exceeds {max} bits")
            }
        }
    })
}

/// serde `deserialize_with` for a prefix field (the type lives in lisp-common, which has no
/// serde: the YAML shape stays a config concern).
fn de_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<IpPrefix, D::Error> {
    let s = String::deserialize(d)?;
    parse_prefix(&s).map_err(de::Error::custom)
}

/// serde `deserialize_with` for a list of prefixes.
fn de_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpPrefix>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_prefix(s).map_err(de::Error::custom))
        .collect()
}

// ------------------------------------------------------------------------------------- duration

/// A duration written as a number and a unit: `500ms`, `180s`, `3m`, `1h`. A bare number is
/// refused: a timeout in the wrong unit is a bug that is hard to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration '{s}' needs a unit (ms, s, m, h)"))?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration '{s}' does not start with a number"))?;
        let secs = |mul: u64| {
            n.checked_mul(mul)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("duration '{s}' is too large"))
        };
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => secs(1)?,
            "m" => secs(60)?,
            "h" => secs(3600)?,
            _ => {
                return Err(format!(
                    "duration '{s}': unknown unit '{unit}' (ms, s, m, h)"
                ));
            }
        };
        Ok(ConfigDuration(d))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

// ------------------------------------------------------------------------------------- enums

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XdpModeConfig {
    /// Let the kernel choose (native where the driver supports it); fall back to generic.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "hmac-sha-256")]
    HmacSha256,
    #[serde(rename = "hmac-sha-1")]
    HmacSha1,
}

/// The codec's algorithm for a configured key (xTR map-servers and map-server sites alike).
impl From<KeyAlgorithm> for lisp_common::wire::control::auth::Algorithm {
    fn from(a: KeyAlgorithm) -> Self {
        match a {
            KeyAlgorithm::HmacSha1 => Self::HmacSha1,
            KeyAlgorithm::HmacSha256 => Self::HmacSha256,
        }
    }
}

/// RFC 9301 negative map-cache actions usable in a static entry.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeAction {
    Drop,
    NativelyForward,
    SendMapRequest,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InterfaceRole {
    /// EID-facing: ITR ingress.
    Eid,
    /// RLOC-facing: the underlay, ETR ingress.
    Rloc,
}

/// A kernel routing table: `main`, `local`, `default` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableId(pub u32);

impl<'de> Deserialize<'de> for TableId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A YAML scalar: accept `main` as well as `100`.
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TableId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table number or one of main, local, default")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TableId, E> {
                match u32::try_from(v) {
                    Ok(t) if t != 0 => Ok(TableId(t)),
                    _ => Err(E::custom(format!("table {v} out of range 1..=4294967295"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TableId, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!("table {v} out of range 1..=4294967295"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TableId, E> {
                match v {
                    "main" => Ok(TableId(TABLE_MAIN)),
                    "local" => Ok(TableId(TABLE_LOCAL)),
                    "default" => Ok(TableId(TABLE_DEFAULT)),
                    _ => v
                        .parse::<u64>()
                        .map_err(|_| E::custom(format!("unknown routing table '{v}'")))
                        .and_then(|n| self.visit_u64(n)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// ------------------------------------------------------------------------------------- sections

/// One locator (RLOC) with its priority and weight. Kept as `u32` until validation so that an
/// out-of-range value is reported with its place instead of as a YAML type error.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LocatorConfig {
    pub address: IpAddr,
    pub priority: u32,
    pub weight: u32,
    /// Compute the UDP checksum of IPv6 outer headers towards this RLOC (map-cache locators;
    /// also applies to the same RLOC learned from Map-Replies). Default: the global
    /// `ipv6-udp-checksum`.
    #[serde(default)]
    pub ipv6_udp_checksum: bool,
}

impl LocatorConfig {
    /// Priority and weight; valid after [`Config::validate`].
    pub fn priority_weight(&self) -> (u8, u8) {
        (
            u8::try_from(self.priority).unwrap_or(u8::MAX),
            u8::try_from(self.weight).unwrap_or(0),
        )
    }
}

/// This router's own RLOCs.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LocalLocators {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl LocalLocators {
    fn has_family_of(&self, a: &IpAddr) -> bool {
        match a {
            IpAddr::V4(_) => self.ipv4.is_some(),
            IpAddr::V6(_) => self.ipv6.is_some(),
        }
    }
    fn contains(&self, a: &IpAddr) -> bool {
        match a {
            IpAddr::V4(v) => self.ipv4 == Some(*v),
            IpAddr::V6(v) => self.ipv6 == Some(*v),
        }
    }
}

/// `ip lisp database-mapping`: an EID prefix this site owns.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DatabaseMapping {
    #[serde(deserialize_with = "de_prefix")]
    pub eid_prefix: IpPrefix,
    #[serde(default)]
    pub instance_id: u32,
    pub locators: Vec<LocatorConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapServerRef {
    pub address: IpAddr,
    pub key: String,
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    #[serde(default)]
    pub proxy_reply: bool,
}

/// `ip lisp map-cache`: a static entry, positive (locators) or negative (action).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapCacheConfig {
    #[serde(deserialize_with = "de_prefix")]
    pub eid_prefix: IpPrefix,
    #[serde(default)]
    pub instance_id: u32,
    #[serde(default)]
    pub locators: Vec<LocatorConfig>,
    pub action: Option<NegativeAction>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InstanceTable {
    pub instance_id: u32,
    pub table: TableId,
}

/// `lisp dynamic-eid <name>`: prefixes hosts may roam in, and how this site tells the others.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DynamicEidMap {
    /// Case-sensitive, `[A-Za-z0-9_-]`, 1..=64 characters (the reference's rule).
    pub name: String,
    #[serde(default)]
    pub instance_id: u32,
    /// One or more `database-mapping` lines: dynamic prefix -> this site's locators.
    pub database_mappings: Vec<DynamicDatabaseMapping>,
    /// Required: the site's xTRs tell each other of detected hosts on this group.
    pub map_notify_group: Option<IpAddr>,
    /// The map's own map-servers; none: the global `map-servers`.
    #[serde(default)]
    pub map_servers: Vec<MapServerRef>,
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout: ConfigDuration,
}

/// A dynamic-EID prefix with the locators its /32 or /128 hosts are registered with.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DynamicDatabaseMapping {
    #[serde(deserialize_with = "de_prefix")]
    pub eid_prefix: IpPrefix,
    pub locators: Vec<LocatorConfig>,
}

fn default_inactivity() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(180))
}

/// An 802.1Q trunk: XDP runs natively on `parent`; frames tagged `vlan-id` belong to the
/// interface (the SVI) this is configured on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrunkConfig {
    pub parent: String,
    /// Kept wide until validation so that 0 or 5000 is reported with its place.
    pub vlan_id: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InterfaceConfigEntry {
    /// Free-form kernel name (`vlan10`, `eth0`); resolved to an ifindex at startup.
    pub name: String,
    pub role: InterfaceRole,
    #[serde(default)]
    pub instance_id: u32,
    /// Name of a dynamic-EID map (`lisp mobility <name>`).
    pub mobility: Option<String>,
    /// `lisp extended-subnet-mode`; default: across-subnet mode.
    #[serde(default)]
    pub extended_subnet_mode: bool,
    /// Mobility on a VLAN of a trunk (needs `mobility`).
    pub trunk: Option<TrunkConfig>,
    /// Overrides the global `xdp-mode`.
    pub xdp_mode: Option<XdpModeConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SitePrefix {
    #[serde(deserialize_with = "de_prefix")]
    pub prefix: IpPrefix,
    /// LISP instance-id (24 bits) the prefix is registered in; 0 is the default instance.
    #[serde(default)]
    pub instance_id: u32,
    #[serde(default)]
    pub accept_more_specifics: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Site {
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    #[serde(default)]
    pub eid_prefixes: Vec<SitePrefix>,
}

/// The built-in Map-Server / Map-Resolver role.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MapServerRole {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub replay_protection: ReplayProtection,
}

/// How the map-server refuses replayed Map-Registers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayProtection {
    /// A refresh (the same content as the registrant's live registration) is accepted whatever
    /// its nonce; a Map-Register that changes state must not repeat one already accepted (nor,
    /// from an xTR seen to increase its nonces, go below the last). Accepts lisp-agent's
    /// (increasing), OOR's (random) and lispers.net's (constant) nonces.
    #[default]
    FreshChanges,
    /// A Map-Register's nonce must be greater than the last one accepted from the same xTR
    /// (RFC 9301): refuses the refreshes of random- and constant-nonce peers.
    IncreasingNonce,
    /// Only a nonce repeated among the recent ones of the same xTR is refused: for peers that
    /// send random nonces (Open Overlay Router does); refuses constant-nonce peers' refreshes.
    NoRepeat,
}

fn yes() -> bool {
    true
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default)]
    pub xdp_mode: XdpModeConfig,
    #[serde(default = "yes")]
    pub itr: bool,
    #[serde(default = "yes")]
    pub etr: bool,
    #[serde(default)]
    pub locators: LocalLocators,
    #[serde(default = "yes")]
    pub data_nonce: bool,
    /// Minimum time between two miss events for one destination (kernel rate limit).
    #[serde(default = "default_miss_interval")]
    pub miss_event_interval: ConfigDuration,
    /// Events per second of each kind (misses, unresolved next hops, data for absent EIDs) on
    /// each CPU, whatever the number of destinations: a token bucket in the kernel.
    #[serde(default = "default_event_rate")]
    pub miss_event_rate: u32,
    /// Bucket size of `miss-event-rate`: events of one kind a CPU may emit at once.
    #[serde(default = "default_event_burst")]
    pub miss_event_burst: u32,
    /// Compute the UDP checksum of every IPv6 outer header. Off by default: RFC 6935/6936 allow
    /// zero for tunnels, but some receivers refuse it. Per RLOC: a locator's
    /// `ipv6-udp-checksum`.
    #[serde(default)]
    pub ipv6_udp_checksum: bool,
    /// How often the database-mappings are registered with each map-server (RFC 9301 §8.2:
    /// 60 s). Shorter values are for tests and labs.
    #[serde(default = "default_register_interval")]
    pub register_interval: ConfigDuration,
    #[serde(default)]
    pub database_mappings: Vec<DatabaseMapping>,
    #[serde(default)]
    pub map_servers: Vec<MapServerRef>,
    #[serde(default)]
    pub map_resolvers: Vec<IpAddr>,
    /// RFC 9437 pubsub: subscribe to every mapping we resolve (N bit and xTR-ID in our
    /// Map-Requests), so that the map-server publishes changes to us with Map-Notifies.
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default, deserialize_with = "de_prefixes")]
    pub eid_space: Vec<IpPrefix>,
    #[serde(default)]
    pub map_cache: Vec<MapCacheConfig>,
    #[serde(default)]
    pub instance_tables: Vec<InstanceTable>,
    /// Site-ID of the xTR-ID trailer of our Map-Registers and group Map-Notifies. The xTRs of
    /// one data centre share it; data centres that hosts move between need different ones, so
    /// that the map-server lets the newer one take a moved host over instead of merging both.
    #[serde(default)]
    pub site_id: u64,
    #[serde(default)]
    pub dynamic_eid_maps: Vec<DynamicEidMap>,
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfigEntry>,
    #[serde(default)]
    pub map_server: MapServerRole,
    /// `host:port` of the Prometheus endpoint; none = no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Path of the local API's Unix socket (`lisp-agent show …`); default
    /// `/run/lisp-agent/api.sock` (`shell::api::DEFAULT_SOCKET`).
    pub api_socket: Option<std::path::PathBuf>,
}

fn default_register_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

fn default_event_rate() -> u32 {
    (1_000_000_000 / lisp_common::maps::DEFAULT_EVENT_COST_NS) as u32
}

fn default_event_burst() -> u32 {
    (lisp_common::maps::DEFAULT_EVENT_CREDIT_MAX_NS / lisp_common::maps::DEFAULT_EVENT_COST_NS)
        as u32
}

fn default_miss_interval() -> ConfigDuration {
    // RFC 9301 §5.3: at most one Map-Request per second per destination.
    ConfigDuration(Duration::from_secs(1))
}

// ------------------------------------------------------------------------------------- loading

impl Config {
    /// Parses and validates a YAML document.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        // No source snippet in the message: the error must stay one paragraph (log lines,
        // systemd status); "line L column C" says where.
        let mut opts = serde_saphyr::Options::default();
        opts.with_snippet = false;
        let cfg: Config = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.trim();
            ConfigError::Syntax(msg.strip_prefix("error: ").unwrap_or(msg).to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::from_yaml_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The XDP mode of an interface: its own override or the global one.
    pub fn xdp_mode_of(&self, iface: &InterfaceConfigEntry) -> XdpModeConfig {
        iface.xdp_mode.unwrap_or(self.xdp_mode)
    }

    /// Instance-ids whose EID space the ITR resolves: those of the EID-facing interfaces (the
    /// `eid-space` prefixes apply in each of them), or 0 when no interface names one.
    pub fn itr_instance_ids(&self) -> BTreeSet<u32> {
        let mut ids: BTreeSet<u32> = self
            .interfaces
            .iter()
            .filter(|i| i.role == InterfaceRole::Eid)
            .map(|i| i.instance_id)
            .collect();
        if ids.is_empty() {
            ids.insert(0);
        }
        ids
    }

    /// Checks everything serde cannot; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_locals()?;

        let mut seen = Unique::default();
        for (i, m) in self.database_mappings.iter().enumerate() {
            let path = format!("database-mappings[{i}]");
            check_unique_eid(&mut seen, &path, m.eid_prefix, m.instance_id)?;
            self.check_locator_set(&path, &m.locators, true)?;
        }

        for (i, ms) in self.map_servers.iter().enumerate() {
            let path = format!("map-servers[{i}]");
            check_unicast(&format!("{path}.address"), &ms.address)?;
            if ms.key.is_empty() {
                return Err(invalid(&path, "key must not be empty"));
            }
        }
        // A second pass, so that a malformed entry is reported before a duplicate one.
        let mut seen = Unique::default();
        for (i, ms) in self.map_servers.iter().enumerate() {
            seen.insert(&format!("map-servers[{i}]"), ms.address, || {
                format!("map-server {} listed twice", ms.address)
            })?;
        }
        let mut seen = Unique::default();
        for (i, a) in self.map_resolvers.iter().enumerate() {
            let path = format!("map-resolvers[{i}]");
            check_unicast(&path, a)?;
            seen.insert(&path, *a, || format!("map-resolver {a} listed twice"))?;
        }

        let mut seen = Unique::default();
        for (i, p) in self.eid_space.iter().enumerate() {
            let path = format!("eid-space[{i}]");
            check_prefix(&path, p)?;
            seen.insert(&path, *p, || format!("duplicate prefix {p}"))?;
        }

        let mut seen = Unique::default();
        for (i, m) in self.map_cache.iter().enumerate() {
            let path = format!("map-cache[{i}]");
            check_unique_eid(&mut seen, &path, m.eid_prefix, m.instance_id)?;
            match (m.action, m.locators.is_empty()) {
                (Some(_), false) => {
                    return Err(invalid(
                        &path,
                        "has both locators and an action (a negative entry has no locators)",
                    ));
                }
                (None, true) => {
                    return Err(invalid(
                        &path,
                        "needs locators, or an action (drop, natively-forward, send-map-request)",
                    ));
                }
                (None, false) => self.check_locator_set(&path, &m.locators, false)?,
                (Some(_), true) => {}
            }
        }

        let mut seen = Unique::default();
        for (i, t) in self.instance_tables.iter().enumerate() {
            let path = format!("instance-tables[{i}]");
            check_iid(&path, t.instance_id)?;
            seen.insert(&path, t.instance_id, || {
                format!("instance-id {} listed twice", t.instance_id)
            })?;
        }

        self.validate_dynamic_eid_maps()?;

        if self.interfaces.is_empty() {
            return Err(invalid(
                "interfaces",
                "at least one interface is needed (the agent attaches XDP to them)",
            ));
        }
        let mut seen = Unique::default();
        let mut trunks = Unique::default();
        for (i, f) in self.interfaces.iter().enumerate() {
            let path = format!("interfaces[{i}]");
            check_ifname(&path, &f.name)?;
            seen.insert(&path, f.name.as_str(), || {
                format!("interface '{}' listed twice", f.name)
            })?;
            check_iid(&path, f.instance_id)?;
            if let Some(m) = &f.mobility {
                if f.role != InterfaceRole::Eid {
                    return Err(invalid(
                        &path,
                        "mobility is only possible on an interface with role eid",
                    ));
                }
                let Some(d) = self.dynamic_eid_maps.iter().find(|d| &d.name == m) else {
                    return Err(invalid(&path, format!("unknown dynamic-eid map '{m}'")));
                };
                if d.instance_id != f.instance_id {
                    return Err(invalid(
                        &path,
                        format!(
                            "instance-id {} differs from instance-id {} of dynamic-eid map '{m}'",
                            f.instance_id, d.instance_id
                        ),
                    ));
                }
            } else if f.extended_subnet_mode || f.trunk.is_some() {
                return Err(invalid(
                    &path,
                    "extended-subnet-mode and trunk need mobility (a dynamic-eid map)",
                ));
            }
            if let Some(t) = &f.trunk {
                let tp = format!("{path}.trunk");
                check_ifname(&format!("{tp}.parent"), &t.parent)?;
                if t.parent == f.name {
                    return Err(invalid(
                        &tp,
                        "parent must be another interface than the SVI",
                    ));
                }
                if !(1..=4094).contains(&t.vlan_id) {
                    return Err(invalid(
                        format!("{tp}.vlan-id"),
                        format!("vlan-id {} out of range 1..=4094", t.vlan_id),
                    ));
                }
                trunks.insert(&tp, (t.parent.as_str(), t.vlan_id), || {
                    format!(
                        "vlan-id {} on {} used by two interfaces",
                        t.vlan_id, t.parent
                    )
                })?;
            }
        }

        let mut names = Unique::default();
        for (i, s) in self.map_server.sites.iter().enumerate() {
            let path = format!("map-server.sites[{i}]");
            check_name(&path, &s.name)?;
            names.insert(&path, s.name.as_str(), || {
                format!("site '{}' defined twice", s.name)
            })?;
            if s.key.is_empty() {
                return Err(invalid(&path, "key must not be empty"));
            }
            let mut seen = Unique::default();
            for (j, p) in s.eid_prefixes.iter().enumerate() {
                let pp = format!("{path}.eid-prefixes[{j}]");
                check_prefix(&pp, &p.prefix)?;
                check_iid(&pp, p.instance_id)?;
                seen.insert(&pp, (p.instance_id, p.prefix), || {
                    format!(
                        "duplicate prefix {} in instance-id {}",
                        p.prefix, p.instance_id
                    )
                })?;
            }
        }
        if self.map_server.enabled && self.map_server.sites.is_empty() {
            return Err(invalid(
                "map-server",
                "enabled without any site: nothing could register",
            ));
        }
        Ok(())
    }

    /// The reference's rules for `lisp dynamic-eid`: name syntax, a group that is multicast,
    /// dynamic prefixes more specific than the global database-mapping covering them, and no
    /// prefix in two maps.
    fn validate_dynamic_eid_maps(&self) -> Result<(), ConfigError> {
        let mut names = Unique::default();
        let mut prefixes = Unique::default();
        for (i, d) in self.dynamic_eid_maps.iter().enumerate() {
            let path = format!("dynamic-eid-maps[{i}]");
            check_map_name(&format!("{path}.name"), &d.name)?;
            names.insert(&path, d.name.as_str(), || {
                format!("dynamic-eid map '{}' defined twice", d.name)
            })?;
            check_iid(&path, d.instance_id)?;
            if d.database_mappings.is_empty() {
                return Err(invalid(
                    format!("{path}.database-mappings"),
                    "needs at least one dynamic-EID prefix",
                ));
            }
            for (j, m) in d.database_mappings.iter().enumerate() {
                let mp = format!("{path}.database-mappings[{j}]");
                check_prefix(&format!("{mp}.eid-prefix"), &m.eid_prefix)?;
                prefixes.insert(&mp, (d.instance_id, m.eid_prefix), || {
                    format!(
                        "dynamic-EID prefix {} (instance-id {}) configured twice",
                        m.eid_prefix, d.instance_id
                    )
                })?;
                // Overlapping either way: a dynamic prefix wider than a mapping is as wrong as
                // an equal one (the site would register the same space twice).
                if let Some(g) = self.database_mappings.iter().find(|g| {
                    g.instance_id == d.instance_id
                        && (g.eid_prefix.covers(&m.eid_prefix)
                            || m.eid_prefix.covers(&g.eid_prefix))
                        && g.eid_prefix.len() >= m.eid_prefix.len()
                }) {
                    return Err(invalid(
                        format!("{mp}.eid-prefix"),
                        format!(
                            "dynamic-EID prefix {} must be more specific than the database-mapping {} covering it",
                            m.eid_prefix, g.eid_prefix
                        ),
                    ));
                }
                self.check_locator_set(&mp, &m.locators, true)?;
            }
            match d.map_notify_group {
                None => {
                    return Err(invalid(
                        format!("{path}.map-notify-group"),
                        "is required (the site's xTRs learn detected hosts through it)",
                    ));
                }
                Some(g) if !g.is_multicast() => {
                    return Err(invalid(
                        format!("{path}.map-notify-group"),
                        format!("{g} is not a multicast address"),
                    ));
                }
                Some(_) => {}
            }
            let mut seen = Unique::default();
            for (j, ms) in d.map_servers.iter().enumerate() {
                let sp = format!("{path}.map-servers[{j}]");
                check_unicast(&format!("{sp}.address"), &ms.address)?;
                if ms.key.is_empty() {
                    return Err(invalid(&sp, "key must not be empty"));
                }
                seen.insert(&sp, ms.address, || {
                    format!("map-server {} listed twice", ms.address)
                })?;
            }
            if d.map_servers.is_empty() && self.map_servers.is_empty() {
                return Err(invalid(
                    &path,
                    "no map-servers: neither the map's own nor global map-servers to register dynamic EIDs with (and to sign its group Map-Notifies)",
                ));
            }
            if d.inactivity_timeout.0.is_zero() {
                return Err(invalid(
                    format!("{path}.inactivity-timeout"),
                    "must be greater than zero",
                ));
            }
        }
        Ok(())
    }

    /// The reference's rule against the kernel's view, checked when the agent starts (the
    /// subnets of an SVI are the addresses on it, which the config does not hold): a
    /// dynamic-EID prefix of the interface's map that overlaps one of its subnets must be more
    /// specific than that subnet.
    pub fn check_interface_subnets(
        &self,
        ifname: &str,
        subnets: &[IpPrefix],
    ) -> Result<(), ConfigError> {
        let Some((i, f)) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == ifname)
        else {
            return Ok(());
        };
        let Some(d) = f
            .mobility
            .as_ref()
            .and_then(|m| self.dynamic_eid_maps.iter().find(|d| &d.name == m))
        else {
            return Ok(());
        };
        for m in &d.database_mappings {
            for s in subnets {
                let s = s.network();
                let overlap = s.covers(&m.eid_prefix) || m.eid_prefix.covers(&s);
                if overlap && s.len() >= m.eid_prefix.len() {
                    return Err(invalid(
                        format!("interfaces[{i}]"),
                        format!(
                            "dynamic-EID prefix {} of map '{}' must be more specific than the subnet {s} of {ifname}",
                            m.eid_prefix, d.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_locals(&self) -> Result<(), ConfigError> {
        if self.locators.ipv4.is_none() && self.locators.ipv6.is_none() {
            return Err(invalid(
                "locators",
                "at least one of ipv4 or ipv6 is needed (source of encapsulated packets)",
            ));
        }
        if let Some(a) = self.locators.ipv4 {
            check_unicast("locators.ipv4", &IpAddr::V4(a))?;
        }
        if let Some(a) = self.locators.ipv6 {
            check_unicast("locators.ipv6", &IpAddr::V6(a))?;
        }
        if self.miss_event_interval.0.is_zero() {
            return Err(invalid(
                "miss-event-interval",
                "must be greater than zero (it rate-limits events per destination)",
            ));
        }
        if self.register_interval.0 < Duration::from_secs(1) {
            return Err(invalid("register-interval", "must be at least 1s"));
        }
        if self.miss_event_rate == 0 || self.miss_event_rate > 1_000_000_000 {
            return Err(invalid(
                "miss-event-rate",
                "must be 1..=1000000000 events per second",
            ));
        }
        if self.miss_event_burst == 0 {
            return Err(invalid("miss-event-burst", "must be at least 1"));
        }
        Ok(())
    }

    /// A locator set: count, ranges, duplicates, and that each family can be used. `own` sets
    /// (database-mappings, dynamic EIDs) name this router's RLOCs; remote sets (map-cache) need
    /// a local locator of the same family as source address of the outer header.
    fn check_locator_set(
        &self,
        path: &str,
        locs: &[LocatorConfig],
        own: bool,
    ) -> Result<(), ConfigError> {
        if locs.is_empty() {
            return Err(invalid(path, "needs at least one locator"));
        }
        if locs.len() > MAX_RLOCS {
            return Err(invalid(
                format!("{path}.locators"),
                format!(
                    "{} locators, the data plane supports at most {MAX_RLOCS}",
                    locs.len()
                ),
            ));
        }
        let mut seen = Unique::default();
        for (i, l) in locs.iter().enumerate() {
            let lp = format!("{path}.locators[{i}]");
            check_unicast(&lp, &l.address)?;
            if l.priority > 255 {
                return Err(invalid(
                    &lp,
                    format!("priority {} out of range 0..=255", l.priority),
                ));
            }
            if l.weight > 255 {
                return Err(invalid(
                    &lp,
                    format!("weight {} out of range 0..=255", l.weight),
                ));
            }
            seen.insert(&lp, l.address, || {
                format!("locator {} listed twice", l.address)
            })?;
            // Own sets may list the other xTRs of a multihomed site too (the reference: every
            // xTR of a site configures the same mappings with the site's RLOCs); that at least
            // one is ours is checked after the loop.
            if !own && !self.locators.has_family_of(&l.address) {
                let fam = if l.address.is_ipv4() { "ipv4" } else { "ipv6" };
                return Err(invalid(
                    &lp,
                    format!(
                        "{} is an {fam} locator but locators.{fam} is not set (no source address for the outer header)",
                        l.address
                    ),
                ));
            }
        }
        if own && !locs.iter().any(|l| self.locators.contains(&l.address)) {
            return Err(invalid(
                format!("{path}.locators"),
                "none of these locators is one of this router's (locators.ipv4 / locators.ipv6): \
                 a site's mapping lists its xTRs' RLOCs, this router's among them",
            ));
        }
        Ok(())
    }
}

/// The keys seen so far in a list section: the second entry with a key is the error.
struct Unique<K>(BTreeSet<K>);

impl<K> Default for Unique<K> {
    fn default() -> Self {
        Unique(BTreeSet::new())
    }
}

impl<K: Ord> Unique<K> {
    /// `duplicate` words the error, built only when there is one.
    fn insert(
        &mut self,
        path: &str,
        key: K,
        duplicate: impl FnOnce() -> String,
    ) -> Result<(), ConfigError> {
        if self.0.insert(key) {
            Ok(())
        } else {
            Err(invalid(path, duplicate()))
        }
    }
}

/// `lisp dynamic-eid <name>`: case-sensitive, alphanumeric (plus `-` and `_`), 1..=64.
fn check_map_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(invalid(
            path,
            format!("'{name}' is not a valid map name (1 to 64 of A-Z a-z 0-9 - _)"),
        ));
    }
    Ok(())
}

/// Names of sites: they identify entries in logs and references.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(path, "name must not be empty"));
    }
    Ok(())
}

fn check_iid(path: &str, iid: u32) -> Result<(), ConfigError> {
    if iid > MAX_INSTANCE_ID {
        return Err(invalid(
            path,
            format!("instance-id {iid} out of range 0..={MAX_INSTANCE_ID}"),
        ));
    }
    Ok(())
}

fn check_prefix(path: &str, p: &IpPrefix) -> Result<(), ConfigError> {
    if p.has_host_bits() {
        return Err(invalid(
            path,
            format!(
                "prefix {p} has host bits set (did you mean {}?)",
                p.network()
            ),
        ));
    }
    Ok(())
}

fn check_eid(path: &str, p: &IpPrefix, iid: u32) -> Result<(), ConfigError> {
    check_prefix(&format!("{path}.eid-prefix"), p)?;
    check_iid(path, iid)
}

/// An EID entry (database-mappings, map-cache): a valid prefix and instance-id, listed once per
/// instance-id. The prefix is checked before the duplicate, so a malformed entry is named first.
fn check_unique_eid(
    seen: &mut Unique<(u32, IpPrefix)>,
    path: &str,
    p: IpPrefix,
    iid: u32,
) -> Result<(), ConfigError> {
    check_eid(path, &p, iid)?;
    seen.insert(path, (iid, p), || {
        format!("duplicate eid-prefix {p} (instance-id {iid})")
    })
}

fn check_unicast(path: &str, a: &IpAddr) -> Result<(), ConfigError> {
    if a.is_unspecified() || a.is_multicast() || *a == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(invalid(path, format!("{a} is not a unicast address")));
    }
    Ok(())
}

fn check_ifname(path: &str, name: &str) -> Result<(), ConfigError> {
    // Linux: at most IFNAMSIZ-1 = 15 bytes, no '/', no whitespace, not "." or "..".
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !ok {
        return Err(invalid(
            path,
            format!("'{name}' is not a valid interface name"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/lisp-agent.example.yaml");

    /// A small valid config; tests append or replace one part to break it.
    const BASE: &str = "
locators: { ipv4: 192.0.2.17, ipv6: '2001:db8:ff:11::1' }
interfaces:
  - { name: vlan10, role: eid }
  - { name: eth0, role: rloc }
";

    fn err_of(yaml: &str) -> String {
        match Config::from_yaml_str(yaml) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_rejects(yaml: &str, needle: &str) {
        let e = err_of(yaml);
        assert!(
            e.contains(needle),
            "error {e:?} does not contain {needle:?}"
        );
    }

    #[test]
    fn example_parses_with_every_section() {
        let c = Config::from_yaml_str(EXAMPLE).expect("example is valid");
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.xdp_mode, XdpModeConfig::Auto);
        assert!(c.itr && c.etr && c.data_nonce);
        assert_eq!(c.locators.ipv4, Some("192.0.2.17".parse().unwrap()));
        assert_eq!(c.locators.ipv6, Some("2001:db8:ff:11::1".parse().unwrap()));
        assert_eq!(c.database_mappings.len(), 2);
        assert_eq!(
            c.database_mappings[1].eid_prefix,
            "2001:db8:1::/48".parse().unwrap()
        );
        assert_eq!(c.database_mappings[1].locators[1].priority, 2);
        assert_eq!(c.map_servers[0].key, "site1-secret");
        assert_eq!(c.map_servers[0].key_algorithm, KeyAlgorithm::HmacSha256);
        assert!(!c.map_servers[0].proxy_reply);
        assert_eq!(
            c.map_resolvers,
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.eid_space.len(), 2);
        assert_eq!(c.map_cache.len(), 2);
        assert_eq!(c.map_cache[0].locators.len(), 3);
        assert_eq!(c.map_cache[1].action, Some(NegativeAction::Drop));
        assert_eq!(c.instance_tables[0].table, TableId(TABLE_MAIN));
        let d = &c.dynamic_eid_maps[0];
        assert_eq!(d.name, "vm-mobility");
        assert_eq!(d.inactivity_timeout.0, Duration::from_secs(180));
        assert_eq!(d.map_notify_group, Some("239.1.1.1".parse().unwrap()));
        assert_eq!(c.interfaces[0].name, "vlan10");
        assert_eq!(c.interfaces[0].role, InterfaceRole::Eid);
        assert_eq!(c.interfaces[0].mobility.as_deref(), Some("vm-mobility"));
        assert_eq!(c.interfaces[1].role, InterfaceRole::Rloc);
        assert!(!c.map_server.enabled);
        assert_eq!(c.map_server.sites[0].eid_prefixes.len(), 3);
        assert!(c.map_server.sites[0].eid_prefixes[0].accept_more_specifics);
        assert_eq!(c.map_server.sites[0].eid_prefixes[0].instance_id, 0);
        assert_eq!(c.map_server.sites[0].eid_prefixes[2].instance_id, 100);
        assert_eq!(
            c.map_server.replay_protection,
            ReplayProtection::FreshChanges
        );
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9400".parse().unwrap()));
        assert_eq!(c.miss_event_interval.0, Duration::from_secs(1));
    }

    #[test]
    fn kubernetes_configmap_is_valid() {
        let ds = include_str!("../../deploy/kubernetes/lisp-agent-daemonset.yaml");
        let start = ds.find("lisp-agent.yaml: |\n").expect("ConfigMap key") + 19;
        let block: String = ds[start..]
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let c = Config::from_yaml_str(&block).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9400".parse().unwrap()));
    }

    #[test]
    fn base_is_valid_with_defaults() {
        let c = Config::from_yaml_str(BASE).unwrap();
        assert!(c.itr && c.etr && c.data_nonce);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.xdp_mode_of(&c.interfaces[0]), XdpModeConfig::Auto);
        assert_eq!(
            c.itr_instance_ids().into_iter().collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn rejects_priority_out_of_range_with_its_place() {
        let y = format!(
            "{BASE}map-cache:
  - eid-prefix: 203.0.113.0/24
    locators: [{{ address: 192.0.2.33, priority: 1, weight: 1 }}]
  - eid-prefix: 203.0.114.0/24
    locators: [{{ address: 192.0.2.34, priority: 300, weight: 1 }}]
"
        );
        assert_eq!(
            err_of(&y),
            "map-cache[1].locators[0]: priority 300 out of range 0..=255"
        );
    }

    #[test]
    fn rejects_weight_out_of_range() {
        let y = format!(
            "{BASE}map-cache:
  - eid-prefix: 203.0.113.0/24
    locators: [{{ address: 192.0.2.33, priority: 1, weight: 256 }}]
"
        );
        assert_rejects(&y, "map-cache[0].locators[0]: weight 256 out of range");
    }

    #[test]
    fn rejects_unknown_dynamic_eid_map() {
        let y = "
locators: { ipv4: 192.0.2.17 }
interfaces:
  - { name: vlan10, role: eid, mobility: x }
";
        assert_eq!(err_of(y), "interfaces[0]: unknown dynamic-eid map 'x'");
    }

    #[test]
    fn rejects_mobility_on_rloc_interface() {
        let y = "
locators: { ipv4: 192.0.2.17 }
dynamic-eid-maps:
  - { name: m, database-mappings: [{ eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }], map-notify-group: 239.1.1.1 }
map-servers: [{ address: 192.0.2.1, key: k }]
interfaces:
  - { name: eth0, role: rloc, mobility: m }
";
        assert_rejects(y, "interfaces[0]: mobility is only possible");
    }

    #[test]
    fn rejects_prefix_with_host_bits() {
        let y = format!("{BASE}eid-space: [203.0.113.0/24, 203.0.113.1/24]\n");
        assert_eq!(
            err_of(&y),
            "eid-space[1]: prefix 203.0.113.1/24 has host bits set (did you mean 203.0.113.0/24?)"
        );
        let y =
            format!("{BASE}map-cache:\n  - {{ eid-prefix: '2001:db8:2::1/48', action: drop }}\n");
        assert_rejects(
            &y,
            "map-cache[0].eid-prefix: prefix 2001:db8:2::1/48 has host bits",
        );
    }

    #[test]
    fn rejects_duplicate_prefixes() {
        let y = format!(
            "{BASE}map-cache:
  - {{ eid-prefix: 203.0.113.0/24, action: drop }}
  - {{ eid-prefix: 203.0.113.0/24, action: natively-forward }}
"
        );
        assert_eq!(
            err_of(&y),
            "map-cache[1]: duplicate eid-prefix 203.0.113.0/24 (instance-id 0)"
        );
        // The same prefix in two instance-ids is two different EIDs.
        let y = format!(
            "{BASE}map-cache:
  - {{ eid-prefix: 203.0.113.0/24, action: drop }}
  - {{ eid-prefix: 203.0.113.0/24, instance-id: 7, action: drop }}
"
        );
        Config::from_yaml_str(&y).unwrap();
        let y = format!("{BASE}eid-space: [203.0.113.0/24, 203.0.113.0/24]\n");
        assert_rejects(&y, "eid-space[1]: duplicate prefix");
    }

    #[test]
    fn rejects_locator_family_without_local_locator() {
        let y = "
locators: { ipv4: 192.0.2.17 }
interfaces: [{ name: eth0, role: rloc }]
map-cache:
  - eid-prefix: 203.0.113.0/24
    locators: [{ address: '2001:db8:ff:12::1', priority: 1, weight: 1 }]
";
        assert_rejects(
            y,
            "map-cache[0].locators[0]: 2001:db8:ff:12::1 is an ipv6 locator but locators.ipv6 is not set",
        );
    }

    #[test]
    fn rejects_too_many_locators() {
        let locs: Vec<String> = (1..=MAX_RLOCS + 1)
            .map(|i| format!("{{ address: 192.0.2.{i}, priority: 1, weight: 1 }}"))
            .collect();
        let y = format!(
            "{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, locators: [{}] }}\n",
            locs.join(", ")
        );
        assert_rejects(
            &y,
            &format!(
                "map-cache[0].locators: 9 locators, the data plane supports at most {MAX_RLOCS}"
            ),
        );
    }

    #[test]
    fn rejects_interface_named_twice() {
        let y = "
locators: { ipv4: 192.0.2.17 }
interfaces:
  - { name: eth0, role: rloc }
  - { name: eth0, role: eid }
";
        assert_eq!(err_of(y), "interfaces[1]: interface 'eth0' listed twice");
    }

    #[test]
    fn rejects_bad_interface_name_and_no_interfaces() {
        let y = "locators: { ipv4: 192.0.2.17 }\ninterfaces: [{ name: 'a/b', role: eid }]\n";
        assert_rejects(y, "interfaces[0]: 'a/b' is not a valid interface name");
        let y = "locators: { ipv4: 192.0.2.17 }\ninterfaces: [{ name: averyveryverylongname, role: eid }]\n";
        assert_rejects(y, "is not a valid interface name");
        assert_rejects(
            "locators: { ipv4: 192.0.2.17 }\n",
            "interfaces: at least one interface",
        );
    }

    #[test]
    fn rejects_unknown_keys_anywhere() {
        assert_rejects(&format!("{BASE}colour: blue\n"), "colour");
        let y = format!(
            "{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, action: drop, priority: 3 }}\n"
        );
        assert_rejects(&y, "priority");
    }

    #[test]
    fn rejects_unknown_enum_values() {
        assert_rejects(&format!("{BASE}xdp-mode: turbo\n"), "turbo");
        assert_rejects(&format!("{BASE}log-level: loud\n"), "loud");
        let y =
            format!("{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, action: explode }}\n");
        assert_rejects(&y, "explode");
    }

    #[test]
    fn rejects_malformed_addresses_and_prefixes() {
        assert_rejects(
            &format!("{BASE}eid-space: [203.0.113.0/33]\n"),
            "exceeds 32 bits",
        );
        assert_rejects(
            &format!("{BASE}eid-space: [203.0.113.0]\n"),
            "is not a prefix",
        );
        assert_rejects(
            &format!("{BASE}eid-space: [203.0.113.x/24]\n"),
            "is not an IP address",
        );
        assert_rejects(
            &format!("{BASE}map-resolvers: [not-an-ip]\n"),
            "invalid IP address syntax at line 6",
        );
        assert_rejects(
            &format!("{BASE}map-resolvers: [224.0.0.1]\n"),
            "map-resolvers[0]: 224.0.0.1 is not a unicast",
        );
    }

    #[test]
    fn rejects_map_cache_entry_without_or_with_both_locators_and_action() {
        let y = format!("{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24 }}\n");
        assert_rejects(&y, "map-cache[0]: needs locators, or an action");
        let y = format!(
            "{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, action: drop, locators: [{{ address: 192.0.2.3, priority: 1, weight: 1 }}] }}\n"
        );
        assert_rejects(&y, "map-cache[0]: has both locators and an action");
    }

    #[test]
    fn rejects_instance_id_out_of_range() {
        let y = format!(
            "{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, instance-id: 16777216, action: drop }}\n"
        );
        assert_rejects(
            &y,
            "map-cache[0]: instance-id 16777216 out of range 0..=16777215",
        );
        let y = "locators: { ipv4: 192.0.2.17 }\ninterfaces: [{ name: e, role: eid, instance-id: 99999999 }]\n";
        assert_rejects(y, "interfaces[0]: instance-id 99999999 out of range");
    }

    #[test]
    fn rejects_database_mapping_with_foreign_locator() {
        let y = format!(
            "{BASE}database-mappings:\n  - {{ eid-prefix: 198.51.100.0/24, locators: [{{ address: 192.0.2.99, priority: 1, weight: 1 }}] }}\n"
        );
        assert_rejects(
            &y,
            "database-mappings[0].locators: none of these locators is one of this router's",
        );
        // A multihomed site: the other xTR's RLOC beside ours is fine.
        let site = format!(
            "{BASE}database-mappings:\n  - {{ eid-prefix: 198.51.100.0/24, locators: [{{ address: 192.0.2.17, priority: 1, weight: 50 }}, {{ address: 192.0.2.99, priority: 1, weight: 50 }}] }}\n"
        );
        Config::from_yaml_str(&site).unwrap();
    }

    #[test]
    fn rejects_missing_local_locators() {
        let y = "interfaces: [{ name: eth0, role: rloc }]\n";
        assert_rejects(y, "locators: at least one of ipv4 or ipv6");
        let y = "locators: { ipv4: 0.0.0.0 }\ninterfaces: [{ name: eth0, role: rloc }]\n";
        assert_rejects(y, "locators.ipv4: 0.0.0.0 is not a unicast address");
    }

    #[test]
    fn rejects_duplicate_locator_in_a_set() {
        let y = format!(
            "{BASE}map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, locators: [{{ address: 192.0.2.3, priority: 1, weight: 1 }}, {{ address: 192.0.2.3, priority: 2, weight: 1 }}] }}\n"
        );
        assert_rejects(
            &y,
            "map-cache[0].locators[1]: locator 192.0.2.3 listed twice",
        );
    }

    #[test]
    fn rejects_bad_dynamic_eid_maps() {
        const MS: &str = "map-servers: [{ address: 192.0.2.1, key: k }]\n";
        let dm = |extra: &str| {
            format!(
                "{BASE}{MS}database-mappings: [{{ eid-prefix: 198.51.100.0/24, locators: [{{ address: 192.0.2.17, priority: 1, weight: 1 }}] }}]\ndynamic-eid-maps:\n  - {{ name: m, database-mappings: [{{ eid-prefix: 198.51.100.0/25, locators: [{{ address: 192.0.2.17, priority: 1, weight: 1 }}] }}], map-notify-group: 239.1.1.1{extra} }}\n"
            )
        };
        Config::from_yaml_str(&dm("")).unwrap();
        assert_rejects(
            &dm(", map-notify-group: 192.0.2.5"),
            "duplicate mapping key: map-notify-group",
        );
        let no_group = dm("").replace(", map-notify-group: 239.1.1.1", "");
        assert_eq!(
            err_of(&no_group),
            "dynamic-eid-maps[0].map-notify-group: is required (the site's xTRs learn detected hosts through it)"
        );
        let unicast = dm("").replace("239.1.1.1", "192.0.2.5");
        assert_eq!(
            err_of(&unicast),
            "dynamic-eid-maps[0].map-notify-group: 192.0.2.5 is not a multicast address"
        );
        // An IPv6 group is fine.
        Config::from_yaml_str(&dm("").replace("239.1.1.1", "'ff05::1:2'")).unwrap();
        assert_rejects(
            &dm(", inactivity-timeout: 0s"),
            "dynamic-eid-maps[0].inactivity-timeout: must be greater than zero",
        );
        assert_rejects(&dm(", inactivity-timeout: 180"), "needs a unit");
        assert_rejects(&dm(", inactivity-timeout: 3 fortnights"), "unknown unit");
        // Not more specific than the global database-mapping covering it.
        let same = dm("").replace("198.51.100.0/25", "198.51.100.0/24");
        assert_eq!(
            err_of(&same),
            "dynamic-eid-maps[0].database-mappings[0].eid-prefix: dynamic-EID prefix 198.51.100.0/24 must be more specific than the database-mapping 198.51.100.0/24 covering it"
        );
        let wider = dm("").replace("198.51.100.0/25", "198.51.100.0/23");
        assert_rejects(
            &wider,
            "dynamic-EID prefix 198.51.100.0/23 must be more specific than the database-mapping 198.51.100.0/24",
        );
        // Outside every global mapping: allowed (the /32s are the only registrations).
        Config::from_yaml_str(&dm("").replace("198.51.100.0/25", "203.0.113.0/25")).unwrap();
        assert_rejects(
            &dm("").replace("198.51.100.0/25", "198.51.100.1/25"),
            "dynamic-eid-maps[0].database-mappings[0].eid-prefix: prefix 198.51.100.1/25 has host bits",
        );
        assert_rejects(
            &dm("").replace(
                "address: 192.0.2.17, priority: 1, weight: 1 }] }], map",
                "address: 192.0.2.99, priority: 1, weight: 1 }] }], map",
            ),
            "dynamic-eid-maps[0].database-mappings[0].locators: none of these locators is one of this router's",
        );
        assert_rejects(
            &dm(", map-servers: [{ address: 224.0.0.5, key: k }]"),
            "dynamic-eid-maps[0].map-servers[0].address: 224.0.0.5 is not a unicast address",
        );
        assert_rejects(
            &dm(", map-servers: [{ address: 192.0.2.2, key: '' }]"),
            "dynamic-eid-maps[0].map-servers[0]: key must not be empty",
        );
        // No map-server at all: nothing to register with or to sign group notifies.
        assert_rejects(
            &dm("").replace(MS, ""),
            "dynamic-eid-maps[0]: no map-servers",
        );
        Config::from_yaml_str(
            &dm(", map-servers: [{ address: 192.0.2.2, key: k2, proxy-reply: true }]")
                .replace(MS, ""),
        )
        .unwrap();
        assert_rejects(
            &dm("").replace("database-mappings: [{ eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }], map", "database-mappings: [], map"),
            "dynamic-eid-maps[0].database-mappings: needs at least one dynamic-EID prefix",
        );
        let twice = dm("").replace(
            "database-mappings: [{ eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }], map",
            "database-mappings: [{ eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }, { eid-prefix: 198.51.100.0/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 1 }] }], map",
        );
        assert_rejects(
            &twice,
            "dynamic-eid-maps[0].database-mappings[1]: dynamic-EID prefix 198.51.100.0/25 (instance-id 0) configured twice",
        );
        let two_maps = format!(
            "{}  - {{ name: m, database-mappings: [{{ eid-prefix: 198.51.100.128/25, locators: [{{ address: 192.0.2.17, priority: 1, weight: 1 }}] }}], map-notify-group: 239.1.1.2 }}\n",
            dm("")
        );
        assert_rejects(
            &two_maps,
            "dynamic-eid-maps[1]: dynamic-eid map 'm' defined twice",
        );
    }

    #[test]
    fn event_bucket_and_checksum_options() {
        let c = Config::from_yaml_str(BASE).unwrap();
        assert_eq!((c.miss_event_rate, c.miss_event_burst), (1000, 100));
        assert!(!c.ipv6_udp_checksum);
        let y = format!(
            "{BASE}miss-event-rate: 50\nmiss-event-burst: 7\nipv6-udp-checksum: true\n\
             map-cache:\n  - {{ eid-prefix: 203.0.113.0/24, locators: \
             [{{ address: '2001:db8::1', priority: 1, weight: 1, ipv6-udp-checksum: true }}] }}\n"
        );
        let c = Config::from_yaml_str(&y).unwrap();
        assert_eq!((c.miss_event_rate, c.miss_event_burst), (50, 7));
        assert!(c.ipv6_udp_checksum && c.map_cache[0].locators[0].ipv6_udp_checksum);
        assert_rejects(&format!("{BASE}miss-event-rate: 0\n"), "miss-event-rate");
        assert_rejects(&format!("{BASE}miss-event-burst: 0\n"), "miss-event-burst");
    }

    #[test]
    fn dynamic_eid_map_names_follow_the_reference() {
        let y = |name: &str| {
            format!(
                "{BASE}map-servers: [{{ address: 192.0.2.1, key: k }}]\ndynamic-eid-maps:\n  - {{ name: '{name}', database-mappings: [{{ eid-prefix: 198.51.100.0/25, locators: [{{ address: 192.0.2.17, priority: 1, weight: 1 }}] }}], map-notify-group: 239.1.1.1 }}\n"
            )
        };
        Config::from_yaml_str(&y("Roamer-1")).unwrap();
        Config::from_yaml_str(&y(&"a".repeat(64))).unwrap();
        for bad in ["", "a b", "Roamer/1", "é", &"a".repeat(65)] {
            assert_eq!(
                err_of(&y(bad)),
                format!(
                    "dynamic-eid-maps[0].name: '{bad}' is not a valid map name (1 to 64 of A-Z a-z 0-9 - _)"
                )
            );
        }
        // Case-sensitive: 'roamer-1' is another map than 'Roamer-1'.
        let iface = y("Roamer-1").replace(
            "  - { name: vlan10, role: eid }",
            "  - { name: vlan10, role: eid, mobility: roamer-1 }",
        );
        assert_eq!(
            err_of(&iface),
            "interfaces[0]: unknown dynamic-eid map 'roamer-1'"
        );
    }

    #[test]
    fn mobility_interfaces_modes_and_trunks() {
        let y = |iface: &str| {
            format!(
                "locators: {{ ipv4: 192.0.2.17 }}\nmap-servers: [{{ address: 192.0.2.1, key: k }}]\ndynamic-eid-maps:\n  - {{ name: R, database-mappings: [{{ eid-prefix: 198.51.100.0/25, locators: [{{ address: 192.0.2.17, priority: 1, weight: 1 }}] }}], map-notify-group: 239.1.1.1 }}\ninterfaces:\n  - {iface}\n  - {{ name: eth0, role: rloc }}\n"
            )
        };
        let c = Config::from_yaml_str(&y(
            "{ name: vlan10, role: eid, mobility: R, extended-subnet-mode: true, trunk: { parent: eth1, vlan-id: 10 } }",
        ))
        .unwrap();
        assert!(c.interfaces[0].extended_subnet_mode);
        assert_eq!(c.interfaces[0].trunk.as_ref().unwrap().vlan_id, 10);
        for (vid, ok) in [(0, false), (1, true), (4094, true), (4095, false)] {
            let r = Config::from_yaml_str(&y(&format!(
                "{{ name: vlan10, role: eid, mobility: R, trunk: {{ parent: eth1, vlan-id: {vid} }} }}"
            )));
            match ok {
                true => assert!(r.is_ok(), "{vid}: {r:?}"),
                false => assert_eq!(
                    r.unwrap_err().to_string(),
                    format!("interfaces[0].trunk.vlan-id: vlan-id {vid} out of range 1..=4094")
                ),
            }
        }
        assert_eq!(
            err_of(&y(
                "{ name: vlan10, role: eid, trunk: { parent: eth1, vlan-id: 10 } }"
            )),
            "interfaces[0]: extended-subnet-mode and trunk need mobility (a dynamic-eid map)"
        );
        assert_eq!(
            err_of(&y(
                "{ name: vlan10, role: eid, extended-subnet-mode: true }"
            )),
            "interfaces[0]: extended-subnet-mode and trunk need mobility (a dynamic-eid map)"
        );
        assert_eq!(
            err_of(&y(
                "{ name: vlan10, role: eid, mobility: R, trunk: { parent: 'a/b', vlan-id: 10 } }"
            )),
            "interfaces[0].trunk.parent: 'a/b' is not a valid interface name"
        );
        assert_eq!(
            err_of(&y(
                "{ name: vlan10, role: eid, mobility: R, trunk: { parent: vlan10, vlan-id: 10 } }"
            )),
            "interfaces[0].trunk: parent must be another interface than the SVI"
        );
        // One map per interface: a list is not a map name.
        assert_rejects(&y("{ name: vlan10, role: eid, mobility: [R, S] }"), "line");
        // Two SVIs on one VLAN of one trunk.
        let two = y("{ name: vlan10, role: eid, mobility: R, trunk: { parent: eth1, vlan-id: 10 } }")
            .replace(
                "  - { name: eth0, role: rloc }",
                "  - { name: vlan11, role: eid, mobility: R, trunk: { parent: eth1, vlan-id: 10 } }\n  - { name: eth0, role: rloc }",
            );
        assert_eq!(
            err_of(&two),
            "interfaces[1].trunk: vlan-id 10 on eth1 used by two interfaces"
        );
    }

    #[test]
    fn dynamic_prefixes_must_be_more_specific_than_the_interface_subnets() {
        let c = Config::from_yaml_str(EXAMPLE).unwrap();
        let p = |s: &str| parse_prefix(s).unwrap();
        // vlan10 uses vm-mobility (198.51.100.0/25).
        c.check_interface_subnets("vlan10", &[p("198.51.100.1/24"), p("10.0.0.1/8")])
            .unwrap();
        c.check_interface_subnets("vlan10", &[p("203.0.113.1/24")])
            .unwrap();
        assert_eq!(
            c.check_interface_subnets("vlan10", &[p("198.51.100.1/25")])
                .unwrap_err()
                .to_string(),
            "interfaces[0]: dynamic-EID prefix 198.51.100.0/25 of map 'vm-mobility' must be more specific than the subnet 198.51.100.0/25 of vlan10"
        );
        assert!(
            c.check_interface_subnets("vlan10", &[p("198.51.100.9/30")])
                .is_err()
        );
        // Interfaces without mobility have no such rule.
        c.check_interface_subnets("eth0", &[p("198.51.100.1/25")])
            .unwrap();
    }

    #[test]
    fn rejects_bad_instance_tables() {
        let y = format!(
            "{BASE}instance-tables: [{{ instance-id: 1, table: 100 }}, {{ instance-id: 1, table: main }}]\n"
        );
        assert_rejects(&y, "instance-tables[1]: instance-id 1 listed twice");
        let y = format!("{BASE}instance-tables: [{{ instance-id: 1, table: 0 }}]\n");
        assert_rejects(&y, "table 0 out of range");
        let y = format!("{BASE}instance-tables: [{{ instance-id: 1, table: nosuch }}]\n");
        assert_rejects(&y, "unknown routing table 'nosuch'");
    }

    #[test]
    fn rejects_bad_map_servers_and_sites() {
        let y = format!("{BASE}map-servers: [{{ address: 192.0.2.1, key: '' }}]\n");
        assert_rejects(&y, "map-servers[0]: key must not be empty");
        let y = format!(
            "{BASE}map-servers: [{{ address: 192.0.2.1, key: k }}, {{ address: 192.0.2.1, key: k }}]\n"
        );
        assert_rejects(&y, "map-servers[1]: map-server 192.0.2.1 listed twice");
        let y = format!("{BASE}map-server: {{ enabled: true }}\n");
        assert_rejects(&y, "map-server: enabled without any site");
        let y = format!(
            "{BASE}map-server:\n  sites:\n    - {{ name: s, key: k, eid-prefixes: [{{ prefix: 10.0.0.1/8 }}] }}\n"
        );
        assert_rejects(
            &y,
            "map-server.sites[0].eid-prefixes[0]: prefix 10.0.0.1/8 has host bits",
        );
        let y = format!(
            "{BASE}map-server:\n  sites:\n    - {{ name: s, key: k }}\n    - {{ name: s, key: j }}\n"
        );
        assert_rejects(&y, "map-server.sites[1]: site 's' defined twice");
        // The same prefix in two instances is two prefixes; twice in one instance is refused.
        let site = |iids: &str| {
            format!(
                "{BASE}map-server:\n  sites:\n    - {{ name: s, key: k, eid-prefixes: [{iids}] }}\n"
            )
        };
        let two = site("{ prefix: 10.0.0.0/8 }, { prefix: 10.0.0.0/8, instance-id: 100 }");
        let c = Config::from_yaml_str(&two).unwrap();
        assert_eq!(c.map_server.sites[0].eid_prefixes[1].instance_id, 100);
        assert_eq!(
            c.map_server.replay_protection,
            ReplayProtection::FreshChanges
        );
        assert_rejects(
            &site("{ prefix: 10.0.0.0/8, instance-id: 7 }, { prefix: 10.0.0.0/8, instance-id: 7 }"),
            "duplicate prefix 10.0.0.0/8 in instance-id 7",
        );
        assert_rejects(
            &site("{ prefix: 10.0.0.0/8, instance-id: 16777216 }"),
            "instance-id 16777216 out of range",
        );
    }

    #[test]
    fn rejects_non_yaml_with_a_location() {
        let e = err_of("locators: [unclosed\n");
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains('\n'), "one paragraph: {e:?}");
        let e = err_of("log-level: info\nxdp-mode: turbo\n");
        assert!(e.contains("turbo") && e.contains("line 2"), "{e}");
    }

    proptest::proptest! {
        /// Garbage and mutilated examples are refused with an error, never a panic.
        #[test]
        fn never_panics_on_mutilated_input(cut in 0usize..4000, junk in "[ -~\n]{0,40}") {
            let mut text: String = EXAMPLE.chars().take(cut).collect();
            text.push_str(&junk);
            let _ = Config::from_yaml_str(&text);
        }
    }

    #[test]
    fn durations_parse_in_every_unit() {
        let d = |s: &str| s.parse::<ConfigDuration>().map(|d| d.0);
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("180s"), Ok(Duration::from_secs(180)));
        assert_eq!(d("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(d("2h"), Ok(Duration::from_secs(7200)));
        assert!(d("s").is_err());
        assert!(d("99999999999999999999h").is_err());
    }

    #[test]
    fn prefix_messages_quote_the_text() {
        assert_eq!(
            parse_prefix("198.51.100.0"),
            Err("'198.51.100.0' is not a prefix (expected address/length)".into())
        );
        assert_eq!(
            parse_prefix("198.51.100/24"),
            Err("'198.51.100' in prefix '198.51.100/24' is not an IP address".into())
        );
        assert_eq!(
            parse_prefix("198.51.100.0/x"),
            Err("'x' in prefix '198.51.100.0/x' is not a prefix length".into())
        );
        assert_eq!(
            parse_prefix("::/129"),
            Err("prefix length 129 of '::/129' exceeds 128 bits".into())
        );
        // Kept as written: validation, not parsing, refuses host bits.
        assert!(parse_prefix("198.51.100.7/24").unwrap().has_host_bits());
    }
}
