//! The XDP data plane seen from userspace: the eBPF object, loading, attaching, map writing.
//!
//! [`plan`] computes what the maps must hold (pure, tested without root); this module copies it
//! into the kernel with aya and attaches the program. Maps that outlive loading are taken out of
//! the [`Ebpf`] into owned handles ([`MapCacheWriter`], [`CounterReader`], the event array) so
//! that the tasks using them own them and nothing borrows the loader.

pub mod object;
pub mod plan;

use std::ffi::CString;
use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerfEventArray};
use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use lisp_common::maps::{
    self as m, Counter, DynamicEidState, EidKey, InterfaceConfig, MapCacheEntry, MobilityIface,
    MobilityIfaceKey, RlocKey, ScopedEidKey, Settings,
};
use log::{info, warn};

use crate::config::XdpModeConfig;
use crate::core::map_cache::{self, Placement};
pub use plan::{Plan, PlanError, PlannedInterface};

/// The kernel's index of an interface by name, in the caller's network namespace.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The link-layer address of an interface, in the caller's network namespace (SIOCGIFHWADDR:
/// /sys may belong to another namespace).
pub fn mac_of(name: &str) -> std::io::Result<[u8; 6]> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: all-zero ifreq is valid; the name is copied in bounded by IFNAMSIZ - 1.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let n = name.as_bytes();
    if n.is_empty() || n.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(n) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a datagram socket only for the ioctl, owned and closed here.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFHWADDR fills the ifreq it is given.
    if unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFHWADDR,
            &mut req,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The kernel's name of an interface index (for log lines about events).
pub fn ifname_of(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Writes map-cache entries into the XDP maps (host hash map or prefix trie by prefix length).
/// The control plane programs Map-Replies through this.
///
/// It also holds the local dynamic EIDs (mobility): the agent adds one when it accepts a
/// detection, so that the data plane stops reporting it, and reads their last-seen stamps.
pub struct MapCacheWriter {
    host: HashMap<MapData, EidKey, MapCacheEntry>,
    prefix: LpmTrie<MapData, EidKey, MapCacheEntry>,
    dynamic: HashMap<MapData, EidKey, DynamicEidState>,
    /// RLOCs configured with `ipv6-udp-checksum`: marked in every entry written, so that the
    /// option also holds for the same RLOC learned from a Map-Reply.
    checksum_rlocs: Vec<IpAddr>,
}

impl MapCacheWriter {
    fn take(ebpf: &mut Ebpf, checksum_rlocs: Vec<IpAddr>) -> anyhow::Result<Self> {
        Ok(MapCacheWriter {
            host: take_map(ebpf, m::MAP_CACHE_HOST)?,
            prefix: take_map(ebpf, m::MAP_CACHE_PREFIX)?,
            dynamic: take_map(ebpf, m::LOCAL_DYNAMIC_EIDS)?,
            checksum_rlocs,
        })
    }

    /// Inserts or replaces the entry of `addr/len` in `instance_id`.
    pub fn insert(
        &mut self,
        instance_id: u32,
        addr: IpAddr,
        len: u8,
        entry: &MapCacheEntry,
    ) -> anyhow::Result<()> {
        let (key, placement) = map_cache::eid_key(instance_id, addr, len)?;
        let mut entry = *entry;
        plan::mark_checksum_rlocs(&mut entry, &self.checksum_rlocs);
        self.insert_key(key, placement, &entry)
            .with_context(|| format!("writing map-cache entry {addr}/{len} (iid {instance_id})"))
    }

    /// Removes the entry of `addr/len`; `Ok(false)` if there was none.
    pub fn remove(&mut self, instance_id: u32, addr: IpAddr, len: u8) -> anyhow::Result<bool> {
        let (key, placement) = map_cache::eid_key(instance_id, addr, len)?;
        let r = match placement {
            Placement::Host => self.host.remove(&key),
            Placement::Prefix { lpm_len } => self.prefix.remove(&LpmKey::new(lpm_len, key)),
        };
        match r {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| {
                format!("removing map-cache entry {addr}/{len} (iid {instance_id})")
            }),
        }
    }

    /// Makes `addr` (a host of a dynamic-EID map of `instance_id`) a known local dynamic EID
    /// on `ifindex` (the SVI, or the trunk parent with `vlan`, as the detection event named
    /// it): no more detection events for it from there, last-seen stamps instead. Its stamp
    /// starts now.
    pub fn add_local_dynamic_eid(
        &mut self,
        instance_id: u32,
        addr: IpAddr,
        ifindex: u32,
        vlan: Option<u16>,
    ) -> anyhow::Result<()> {
        let key = dynamic_key(instance_id, addr)?;
        let state = DynamicEidState {
            last_seen_ns: monotonic_coarse_ns(),
            ifindex,
            vlan: vlan.unwrap_or(0),
            _pad: [0; 2],
        };
        self.dynamic
            .insert(key, state, 0)
            .with_context(|| format!("writing local dynamic EID {addr} (iid {instance_id})"))
    }

    /// Forgets a local dynamic EID; `Ok(false)` if it was not there.
    pub fn remove_local_dynamic_eid(
        &mut self,
        instance_id: u32,
        addr: IpAddr,
    ) -> anyhow::Result<bool> {
        let key = dynamic_key(instance_id, addr)?;
        match self.dynamic.remove(&key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(e)
                .with_context(|| format!("removing local dynamic EID {addr} (iid {instance_id})")),
        }
    }

    /// The local dynamic EIDs whose last-seen stamp is at or after `since` (a
    /// [`monotonic_coarse_ns`] reading): those that sent something since then. Stamps are
    /// refreshed at most once per second per EID, so poll with `since` = the previous poll's
    /// time minus a second to see every active EID (the contract polls every second; an
    /// inactivity timeout is minutes).
    pub fn dynamic_eid_activity(&self, since: u64) -> anyhow::Result<Vec<(u32, IpAddr)>> {
        let mut seen = Vec::new();
        for r in self.dynamic.iter() {
            let (k, v) = r.context("reading LOCAL_DYNAMIC_EIDS")?;
            if v.last_seen_ns >= since
                && let Some(a) = ip_of_key(&k)
            {
                seen.push((k.instance_id(), a));
            }
        }
        Ok(seen)
    }

    fn insert_key(
        &mut self,
        key: EidKey,
        placement: Placement,
        entry: &MapCacheEntry,
    ) -> anyhow::Result<()> {
        match placement {
            Placement::Host => self.host.insert(key, entry, 0)?,
            Placement::Prefix { lpm_len } => {
                self.prefix.insert(&LpmKey::new(lpm_len, key), entry, 0)?
            }
        }
        Ok(())
    }
}

/// Key of a local dynamic EID: a host address (/32 or /128) in its instance.
fn dynamic_key(instance_id: u32, addr: IpAddr) -> anyhow::Result<EidKey> {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    Ok(map_cache::eid_key(instance_id, addr, len)?.0)
}

fn ip_of_key(k: &EidKey) -> Option<IpAddr> {
    let a = k.addr;
    match k.family() {
        m::AF_IPV4 => Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
        m::AF_IPV6 => Some(IpAddr::from(a)),
        _ => None,
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of the data plane's last-seen stamps
/// (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads the per-CPU outcome counters, summed over CPUs.
pub struct CounterReader {
    counters: PerCpuArray<MapData, u64>,
}

impl CounterReader {
    /// Every counter of [`Counter::ALL`] with its sum over CPUs.
    pub fn read(&self) -> anyhow::Result<Vec<(Counter, u64)>> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let v = self
                    .counters
                    .get(&(c as u32), 0)
                    .with_context(|| format!("reading counter {}", c.name()))?;
                Ok((c, v.iter().fold(0u64, |a, b| a.wrapping_add(*b))))
            })
            .collect()
    }
}

struct Attached {
    name: String,
    link: XdpLinkId,
}

/// The loaded object with its programs attached. Dropping it detaches them.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: Vec<Attached>,
    writer: Option<MapCacheWriter>,
    counters: Option<CounterReader>,
}

/// Map `name` taken out of the object as an owned handle of type `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the XDP object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} of the XDP object"))
}

/// Map `name` of the object, borrowed as type `T`.
fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("the XDP object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} of the XDP object"))
}

impl Dataplane {
    /// Loads the object and the XDP program into the kernel and fills the maps from `plan`.
    /// Nothing is attached yet.
    pub fn load(plan: &Plan) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new().load(object::bytecode()).context(
            "loading the XDP object into the kernel (needs root or CAP_BPF + CAP_NET_ADMIN)",
        )?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut(m::PROG_XDP_LISP)
                .ok_or_else(|| anyhow!("the XDP object has no program {}", m::PROG_XDP_LISP))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifying program {}", m::PROG_XDP_LISP))?;
        }

        let mut settings: Array<_, Settings> = map_mut(&mut ebpf, m::SETTINGS)?;
        settings
            .set(0, plan.settings, 0)
            .context("writing SETTINGS")?;

        let mut ifaces: HashMap<_, u32, InterfaceConfig> = map_mut(&mut ebpf, m::INTERFACES)?;
        for i in &plan.interfaces {
            ifaces
                .insert(i.ifindex, i.value, 0)
                .with_context(|| format!("writing INTERFACES for {}", i.name))?;
        }

        let mut rlocs: HashMap<_, RlocKey, u8> = map_mut(&mut ebpf, m::LOCAL_RLOCS)?;
        for r in &plan.local_rlocs {
            rlocs.insert(r, 1, 0).context("writing LOCAL_RLOCS")?;
        }

        let mut space: LpmTrie<_, EidKey, u8> = map_mut(&mut ebpf, m::EID_SPACE)?;
        for (key, lpm) in &plan.eid_space {
            space
                .insert(&LpmKey::new(*lpm, *key), 1, 0)
                .context("writing EID_SPACE")?;
        }

        let mut tables: HashMap<_, u32, u32> = map_mut(&mut ebpf, m::IID_TABLES)?;
        for (iid, table) in &plan.iid_tables {
            tables.insert(iid, table, 0).context("writing IID_TABLES")?;
        }

        let mut local: LpmTrie<_, EidKey, u8> = map_mut(&mut ebpf, m::LOCAL_EIDS)?;
        for (key, lpm) in &plan.local_eids {
            local
                .insert(&LpmKey::new(*lpm, *key), 1, 0)
                .context("writing LOCAL_EIDS")?;
        }

        let mut mob: HashMap<_, MobilityIfaceKey, MobilityIface> =
            map_mut(&mut ebpf, m::MOBILITY_IFACES)?;
        for i in &plan.mobility_ifaces {
            mob.insert(i.key, i.value, 0)
                .with_context(|| format!("writing MOBILITY_IFACES for {}", i.svi))?;
        }
        for (name, entries) in [
            (m::DYNAMIC_PREFIXES, &plan.dynamic_prefixes),
            (m::IFACE_SUBNETS, &plan.iface_subnets),
        ] {
            let mut trie: LpmTrie<_, ScopedEidKey, u8> = map_mut(&mut ebpf, name)?;
            for (key, lpm) in entries {
                trie.insert(&LpmKey::new(*lpm, *key), 1, 0)
                    .with_context(|| format!("writing {name}"))?;
            }
        }

        let mut writer = MapCacheWriter::take(&mut ebpf, plan.checksum_rlocs.clone())?;
        for e in &plan.map_cache {
            writer
                .insert_key(e.key, e.placement, &e.entry)
                .with_context(|| format!("writing {}", e.label))?;
        }
        let counters = CounterReader {
            counters: take_map(&mut ebpf, m::COUNTERS)?,
        };
        info!(
            "XDP object loaded: interfaces {}, local RLOCs {}, EID-space prefixes {}, static map-cache entries {}",
            plan.interfaces.len(),
            plan.local_rlocs.len(),
            plan.eid_space.len(),
            plan.map_cache.len()
        );
        Ok(Dataplane {
            ebpf,
            attached: Vec::new(),
            writer: Some(writer),
            counters: Some(counters),
        })
    }

    /// aya-log's reader of the program's log lines, if the object logs.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                // An object built without aya-log calls has no log map: not an error.
                warn!("eBPF log lines not available: {e}");
                None
            }
        }
    }

    /// The miss-event perf array.
    pub fn take_events(&mut self) -> anyhow::Result<PerfEventArray<MapData>> {
        take_map(&mut self.ebpf, m::EVENTS)
    }

    /// A descriptor of the loaded `xdp_lisp` program, for running frames through it.
    pub fn program_fd(&self) -> anyhow::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd as _;
        let prog: &Xdp = self
            .ebpf
            .program(m::PROG_XDP_LISP)
            .ok_or_else(|| anyhow!("the XDP object has no program {}", m::PROG_XDP_LISP))?
            .try_into()?;
        Ok(prog.fd()?.as_fd().try_clone_to_owned()?)
    }

    /// The slow-path perf array (packets for the agent to encapsulate).
    pub fn take_slow_path(&mut self) -> anyhow::Result<PerfEventArray<MapData>> {
        take_map(&mut self.ebpf, m::SLOW_PATH)
    }

    pub fn take_map_cache_writer(&mut self) -> Option<MapCacheWriter> {
        self.writer.take()
    }

    pub fn take_counters(&mut self) -> Option<CounterReader> {
        self.counters.take()
    }

    /// Attaches the program to every planned interface; on failure what was attached so far is
    /// detached again.
    pub fn attach_all(&mut self, plan: &Plan) -> anyhow::Result<()> {
        for i in &plan.interfaces {
            if let Err(e) = self.attach(i) {
                self.detach_all();
                return Err(e);
            }
        }
        Ok(())
    }

    fn attach(&mut self, i: &PlannedInterface) -> anyhow::Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(m::PROG_XDP_LISP)
            .ok_or_else(|| anyhow!("no program {}", m::PROG_XDP_LISP))?
            .try_into()?;
        let (link, how) = match i.mode {
            XdpModeConfig::Native => (
                prog.attach_to_if_index(i.ifindex, XdpMode::Driver)
                    .with_context(|| {
                        format!(
                            "attaching XDP in native mode to {} (xdp-mode: native; the driver may not support it: try auto or generic)",
                            i.name
                        )
                    })?,
                "native",
            ),
            XdpModeConfig::Generic => (
                prog.attach_to_if_index(i.ifindex, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP in generic mode to {}", i.name))?,
                "generic",
            ),
            XdpModeConfig::Auto => match prog.attach_to_if_index(i.ifindex, XdpMode::Default) {
                Ok(l) => (l, "auto (kernel's choice)"),
                Err(e) => {
                    // Bridges and macvlans refuse native XDP (EOPNOTSUPP): generic still works.
                    warn!(
                        "{}: native XDP attach failed ({e}); falling back to generic mode",
                        i.name
                    );
                    (
                        prog.attach_to_if_index(i.ifindex, XdpMode::Skb)
                            .with_context(|| {
                                format!("attaching XDP in generic mode to {}", i.name)
                            })?,
                        "generic (fallback)",
                    )
                }
            },
        };
        info!(
            "XDP attached to {} (ifindex {}, flags {:#x}, iid {}), mode {how}",
            i.name, i.ifindex, i.value.flags, i.value.instance_id
        );
        self.attached.push(Attached {
            name: i.name.clone(),
            link,
        });
        Ok(())
    }

    /// Detaches every attached program (idempotent).
    pub fn detach_all(&mut self) {
        let Some(prog) = self.ebpf.program_mut(m::PROG_XDP_LISP) else {
            return;
        };
        let Ok(prog): Result<&mut Xdp, _> = prog.try_into() else {
            return;
        };
        for a in self.attached.drain(..) {
            match prog.detach(a.link) {
                Ok(()) => info!("XDP detached from {}", a.name),
                Err(e) => warn!("detaching XDP from {}: {e}", a.name),
            }
        }
    }

    /// Names of the interfaces the program is attached to.
    pub fn attached(&self) -> Vec<&str> {
        self.attached.iter().map(|a| a.name.as_str()).collect()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

#[cfg(test)]
mod tests {
    use super::{m, object};

    /// What the agent needs of the embedded object, checked without loading it (no root).
    #[test]
    fn embedded_object_has_every_map_and_the_program() {
        let obj = aya_obj::Object::parse(object::bytecode()).expect("embedded XDP object parses");
        for name in [
            m::SETTINGS,
            m::INTERFACES,
            m::LOCAL_RLOCS,
            m::EID_SPACE,
            m::IID_TABLES,
            m::MAP_CACHE_HOST,
            m::MAP_CACHE_PREFIX,
            m::COUNTERS,
            m::EVENTS,
            m::EVENT_BUCKETS,
            m::LOCAL_EIDS,
            m::SLOW_PATH,
        ] {
            assert!(
                obj.maps.contains_key(name),
                "the XDP object has no map {name}"
            );
        }
        assert!(
            obj.programs.contains_key(m::PROG_XDP_LISP),
            "the XDP object has no program {}",
            m::PROG_XDP_LISP
        );
    }

    #[test]
    fn loopback_has_an_all_zero_mac() {
        assert_eq!(super::mac_of("lo").unwrap(), [0; 6]);
        assert!(super::mac_of("no-such-if0").is_err());
        assert!(super::mac_of("").is_err());
    }

    #[test]
    fn loopback_resolves_both_ways() {
        let i = super::ifindex_of("lo").expect("every namespace has lo");
        assert_eq!(super::ifname_of(i).as_deref(), Some("lo"));
        assert_eq!(super::ifindex_of("no-such-if0"), None);
        assert_eq!(super::ifindex_of("bad\0name"), None);
    }
}
