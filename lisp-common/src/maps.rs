//! The BPF maps shared by the XDP program and the agent: names, keys, values, event records.
//!
//! Every type here is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields instead, so
//! that both sides and the kernel's hash of the key see the same bytes) and is plain old data.
//! A layout change here changes both sides at once; that is the point of this module.

/// Address family of an EID or RLOC as stored in map keys and values.
///
/// These are not IANA AFI numbers (1/2 happen to match); they only need to agree between the two
/// sides of the BPF maps.
pub const AF_NONE: u8 = 0;
pub const AF_IPV4: u8 = 1;
pub const AF_IPV6: u8 = 2;

// ---------------------------------------------------------------- map names
/// `HashMap<EidKey, MapCacheEntry>`: host EIDs (/32, /128), looked up first.
pub const MAP_CACHE_HOST: &str = "MAP_CACHE_HOST";
/// `LpmTrie<EidKey, MapCacheEntry>`: aggregates; prefix length = [`EID_KEY_PREFIX_BITS`] + EID mask.
pub const MAP_CACHE_PREFIX: &str = "MAP_CACHE_PREFIX";
/// `LpmTrie<EidKey, u8>`: configured EID space (remote EID prefixes the ITR may resolve). A
/// destination inside it with no map-cache entry raises a [`MissEvent`]; outside it the packet
/// passes to the kernel untouched.
pub const EID_SPACE: &str = "EID_SPACE";
/// `HashMap<RlocKey, u8>`: this router's own RLOCs; only LISP data addressed to one is decapsulated.
pub const LOCAL_RLOCS: &str = "LOCAL_RLOCS";
/// `HashMap<u32 /* ifindex */, InterfaceConfig>`: what to do with packets arriving on an interface.
pub const INTERFACES: &str = "INTERFACES";
/// `HashMap<u32 /* instance-id */, u32 /* kernel table id */>`: where decapsulated packets of an
/// instance-id are routed. Instance-id 0 (or no I bit) without an entry uses the main table.
pub const IID_TABLES: &str = "IID_TABLES";
/// `Array<Settings>` with one element.
pub const SETTINGS: &str = "SETTINGS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const COUNTERS: &str = "COUNTERS";
/// `PerfEventArray<MissEvent>`: data-plane events for the agent.
pub const EVENTS: &str = "EVENTS";
/// `LruHashMap<EidKey, u64>`: kernel-internal, last event time per destination (rate limit).
pub const EVENT_RATE: &str = "EVENT_RATE";
/// `PerCpuArray<EventBucket>` indexed by event kind: kernel-internal token buckets bounding the
/// event rate of each kind on each CPU, whatever the number of destinations.
pub const EVENT_BUCKETS: &str = "EVENT_BUCKETS";
/// `LpmTrie<EidKey, u8>`: this router's own EID prefixes (database-mappings). The ETR checks a
/// decapsulated packet's inner destination against it when it (re)fills its next-hop cache; a
/// destination outside raises [`event_kind::DATA_FOR_ABSENT_EID`] (the agent answers with SMRs).
pub const LOCAL_EIDS: &str = "LOCAL_EIDS";
/// `PerfEventArray<SlowPathRecord>`: packets the program cannot encapsulate itself but the agent
/// can (too big for the path and not to be answered with ICMP): each sample is a
/// [`SlowPathRecord`] followed by the whole frame.
pub const SLOW_PATH: &str = "SLOW_PATH";
/// `HashMap<MobilityIfaceKey, MobilityIface>`: mobility interfaces. Key: the ingress ifindex and
/// the 802.1Q VLAN ID (0: untagged, the SVI itself; a VID: a trunk parent's VLAN).
pub const MOBILITY_IFACES: &str = "MOBILITY_IFACES";
/// `LpmTrie<ScopedEidKey, u8>`: dynamic-EID prefixes, scope = [`MobilityIface::map_id`].
pub const DYNAMIC_PREFIXES: &str = "DYNAMIC_PREFIXES";
/// `LpmTrie<ScopedEidKey, u8>`: the subnets of each mobility interface (its kernel addresses),
/// scope = [`MobilityIface::subnet_scope`]. Across-subnet mode: a source inside is no detection.
pub const IFACE_SUBNETS: &str = "IFACE_SUBNETS";
/// `HashMap<EidKey, DynamicEidState>`: local dynamic EIDs the agent knows (no more detection
/// events for them); the program refreshes `last_seen_ns` at most once per
/// [`LAST_SEEN_REFRESH_NS`] per EID.
pub const LOCAL_DYNAMIC_EIDS: &str = "LOCAL_DYNAMIC_EIDS";

/// Name of the main XDP program in the object.
pub const PROG_XDP_LISP: &str = "xdp_lisp";
/// An XDP program that passes everything. Native XDP_REDIRECT into a veth is dropped unless the
/// receiving peer has an XDP program attached; tests and labs attach this one there.
pub const PROG_XDP_PASS: &str = "xdp_pass";

// ---------------------------------------------------------------- keys

/// Bits of [`EidKey`] before the address: family (8) and instance-id (24). An LPM key for an EID
/// prefix of length `n` has prefix length `EID_KEY_PREFIX_BITS + n`, so the family and instance-id
/// always match exactly.
pub const EID_KEY_PREFIX_BITS: u32 = 32;

/// An EID within its instance-id and family. IPv4 addresses sit in the first 4 bytes of `addr`,
/// the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EidKey {
    /// `[family, iid >> 16, iid >> 8, iid]`: big-endian so that LPM matches it bit by bit.
    pub family_iid: [u8; 4],
    pub addr: [u8; 16],
}

impl EidKey {
    pub const fn new(family: u8, instance_id: u32, addr: [u8; 16]) -> Self {
        EidKey {
            family_iid: [
                family,
                (instance_id >> 16) as u8,
                (instance_id >> 8) as u8,
                instance_id as u8,
            ],
            addr,
        }
    }
    pub const fn family(&self) -> u8 {
        self.family_iid[0]
    }
    pub const fn instance_id(&self) -> u32 {
        ((self.family_iid[1] as u32) << 16)
            | ((self.family_iid[2] as u32) << 8)
            | self.family_iid[3] as u32
    }
}

/// A locator address with its family; key of [`LOCAL_RLOCS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RlocKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl RlocKey {
    pub const fn new(family: u8, addr: [u8; 16]) -> Self {
        RlocKey {
            family,
            _pad: [0; 3],
            addr,
        }
    }
}

// ---------------------------------------------------------------- map-cache values

/// Locators per map-cache entry the data plane can choose among.
pub const MAX_RLOCS: usize = 8;
/// Hash buckets of [`MapCacheEntry::select`]: resolution of weight-proportional balancing.
pub const SELECT_SLOTS: usize = 32;

/// What the ITR does with a packet whose destination matched an entry (RFC 9301 §5.4 actions for
/// negative entries; `Encapsulate` for positive ones).
pub mod action {
    /// Positive entry: encapsulate to the RLOC chosen by [`super::MapCacheEntry::select`].
    pub const ENCAPSULATE: u8 = 0;
    /// Negative, "Natively-Forward": hand to the kernel's routing unchanged.
    pub const NATIVELY_FORWARD: u8 = 1;
    /// Negative, "Send-Map-Request": drop and raise a miss event (rate-limited).
    pub const SEND_MAP_REQUEST: u8 = 2;
    /// Negative, "Drop" (RFC 9301 Drop/No-Reason, Drop/Policy-Denied, Drop/Auth-Failure).
    pub const DROP: u8 = 3;
}

/// Flags of [`MapCacheEntry::flags`].
pub mod entry_flags {
    /// Put the I bit and the key's instance-id in the LISP header.
    pub const INSTANCE_ID: u8 = 0x01;
}

/// One locator of a map-cache entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rloc {
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub family: u8,
    pub priority: u8,
    pub weight: u8,
    /// [`rloc_flags`].
    pub flags: u8,
}

/// Flags of [`Rloc::flags`].
pub mod rloc_flags {
    /// Compute the UDP checksum of IPv6 outer headers towards this RLOC (instead of zero).
    pub const IPV6_UDP_CHECKSUM: u8 = 0x01;
}

/// Value of [`MAP_CACHE_HOST`] and [`MAP_CACHE_PREFIX`].
///
/// Choosing the locator (best priority among usable RLOCs, then weight-proportional) is done by
/// the agent when it writes the entry: it fills `select` so that the data plane only indexes it
/// with the inner flow hash. `select[i]` is an index into `rlocs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCacheEntry {
    pub action: u8,
    pub flags: u8,
    pub rloc_count: u8,
    pub _pad: u8,
    pub select: [u8; SELECT_SLOTS],
    pub rlocs: [Rloc; MAX_RLOCS],
}

impl Default for MapCacheEntry {
    fn default() -> Self {
        MapCacheEntry {
            action: action::DROP,
            flags: 0,
            rloc_count: 0,
            _pad: 0,
            select: [0; SELECT_SLOTS],
            rlocs: [Rloc::default(); MAX_RLOCS],
        }
    }
}

// ---------------------------------------------------------------- interfaces and settings

/// Flags of [`InterfaceConfig::flags`].
pub mod iface_flags {
    /// EID-facing: packets arriving here are candidates for encapsulation (ITR).
    pub const ITR: u32 = 0x01;
    /// RLOC-facing: LISP data arriving here for a local RLOC is decapsulated (ETR).
    pub const ETR: u32 = 0x02;
    /// Mobility enabled (`mobility:` on the interface): untagged frames are looked at for
    /// dynamic-EID detection with the [`super::MOBILITY_IFACES`] entry of (ifindex, VLAN 0).
    pub const MOBILITY: u32 = 0x04;
    /// 802.1Q trunk parent: tagged frames whose VID has a [`super::MOBILITY_IFACES`] entry are
    /// processed (detection, ITR with the tag removed); other tagged frames are the kernel's.
    pub const TRUNK: u32 = 0x08;
}

// ---------------------------------------------------------------- mobility

/// Key of [`MOBILITY_IFACES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MobilityIfaceKey {
    /// Ingress interface: the SVI (untagged) or the trunk parent.
    pub ifindex: u32,
    /// 802.1Q VLAN ID; 0 for untagged frames.
    pub vlan: u16,
    pub _pad: [u8; 2],
}

impl MobilityIfaceKey {
    pub const fn new(ifindex: u32, vlan: u16) -> Self {
        MobilityIfaceKey {
            ifindex,
            vlan,
            _pad: [0; 2],
        }
    }
}

/// Flags of [`MobilityIface::flags`].
pub mod mobility_flags {
    /// Extended-subnet mode: every source in a dynamic prefix counts, whatever the interface's
    /// own subnets (across-subnet mode, the default, skips sources inside them).
    pub const EXTENDED_SUBNET: u32 = 0x01;
    /// This router is an ITR: encapsulate the VLAN's traffic (tagged frames of a trunk; an
    /// untagged SVI goes by its [`super::InterfaceConfig`]).
    pub const ITR: u32 = 0x02;
}

/// Value of [`MOBILITY_IFACES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MobilityIface {
    /// [`mobility_flags`].
    pub flags: u32,
    /// Instance-id of the dynamic-EID map (the key of detections and local dynamic EIDs).
    pub map_instance_id: u32,
    /// Instance-id the ITR encapsulates this interface's traffic with (for tagged frames; an
    /// untagged SVI uses its [`InterfaceConfig`]).
    pub itr_instance_id: u32,
    /// Scope of the map's prefixes in [`DYNAMIC_PREFIXES`] (the map's index + 1).
    pub map_id: u32,
    /// Scope of this interface's subnets in [`IFACE_SUBNETS`] (the interface's index + 1).
    pub subnet_scope: u32,
    /// The SVI (host routes, ARP): for the agent's logs; events name the ingress interface.
    pub svi_ifindex: u32,
}

/// Bits of [`ScopedEidKey`] before the address (scope, family, instance-id): an LPM key of an
/// EID prefix of length `n` has prefix length `SCOPED_KEY_PREFIX_BITS + n`.
pub const SCOPED_KEY_PREFIX_BITS: u32 = 64;

/// An [`EidKey`] within a scope (a map or an interface), for the mobility tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScopedEidKey {
    /// Big-endian, so that LPM matches it bit by bit.
    pub scope: [u8; 4],
    pub key: EidKey,
}

impl ScopedEidKey {
    pub const fn new(scope: u32, key: EidKey) -> Self {
        ScopedEidKey {
            scope: scope.to_be_bytes(),
            key,
        }
    }
}

/// Value of [`LOCAL_DYNAMIC_EIDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DynamicEidState {
    /// CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`) of the last refresh.
    pub last_seen_ns: u64,
    /// Where the agent learned it: a packet from the same EID arriving elsewhere (another
    /// interface or VLAN of this router) is a detection again.
    pub ifindex: u32,
    pub vlan: u16,
    pub _pad: [u8; 2],
}

/// A known dynamic EID's last-seen stamp is rewritten at most this often: one store per EID
/// per second, not one per packet (a per-CPU-contended cache line otherwise).
pub const LAST_SEEN_REFRESH_NS: u64 = 1_000_000_000;

/// What made the data plane report a dynamic EID ([`event_kind::DYNAMIC_EID_DETECTED`]).
pub mod detection {
    /// An IP packet with the EID as source.
    pub const DATA: u8 = 0;
    /// A gratuitous ARP (sender address = target address).
    pub const GRATUITOUS_ARP: u8 = 1;
    /// A RARP frame carrying the EID (sender or target protocol address).
    pub const RARP: u8 = 2;
    /// IPv6 Neighbour Solicitation / Advertisement (a DAD NS: its target address).
    pub const NEIGHBOUR_DISCOVERY: u8 = 3;
}

/// Value of [`INTERFACES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterfaceConfig {
    pub flags: u32,
    /// Instance-id of the EIDs behind this interface (ITR side).
    pub instance_id: u32,
}

/// Flags of [`Settings::flags`].
pub mod settings_flags {
    pub const HAS_RLOC4: u32 = 0x01;
    pub const HAS_RLOC6: u32 = 0x02;
    /// Send the N bit with a random nonce in every encapsulated packet.
    pub const NONCE: u32 = 0x04;
    /// Compute the UDP checksum of every IPv6 outer header (RFC 6935/6936 allow zero, the
    /// default; some receivers refuse it). Per RLOC: [`super::rloc_flags::IPV6_UDP_CHECKSUM`].
    pub const IPV6_UDP_CHECKSUM: u32 = 0x08;
    /// [`super::LOCAL_EIDS`] holds this router's EID prefixes: the ETR raises
    /// [`super::event_kind::DATA_FOR_ABSENT_EID`] for inner destinations outside them.
    pub const CHECK_LOCAL_EIDS: u32 = 0x10;
    /// Mobility is configured: the ETR looks each decapsulated packet's inner destination up
    /// in [`super::MAP_CACHE_HOST`]; a positive entry there is an "away" dynamic EID (it moved
    /// to another site) and the packet is re-encapsulated to it, with an absent-EID event.
    pub const REENCAP_AWAY: u32 = 0x20;
}

/// Value of [`SETTINGS`] (index 0): the source locators and global knobs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    pub flags: u32,
    /// Source RLOC for IPv4 outer headers.
    pub rloc4: [u8; 4],
    /// Source RLOC for IPv6 outer headers.
    pub rloc6: [u8; 16],
    /// Minimum interval between two events for the same destination, nanoseconds.
    pub event_interval_ns: u64,
    /// Token bucket of each event kind on each CPU, in nanoseconds of credit: an event costs
    /// `event_cost_ns` (1 s / rate), credit accrues with time up to `event_credit_max_ns`
    /// (cost × burst). 0 = [`DEFAULT_EVENT_COST_NS`] / [`DEFAULT_EVENT_CREDIT_MAX_NS`].
    pub event_cost_ns: u64,
    pub event_credit_max_ns: u64,
}

/// Default event rate per kind and CPU: 1000 events/s ...
pub const DEFAULT_EVENT_COST_NS: u64 = 1_000_000;
/// ... with bursts of 100.
pub const DEFAULT_EVENT_CREDIT_MAX_NS: u64 = 100 * DEFAULT_EVENT_COST_NS;

/// Value of [`EVENT_BUCKETS`]: credit left (ns) at time `stamp` (bpf_ktime_get_ns). All zero
/// at start: the first event finds a full bucket (the elapsed time since boot tops it up).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventBucket {
    pub credit_ns: u64,
    pub stamp: u64,
}

// ---------------------------------------------------------------- events

/// Kinds of [`MissEvent`].
pub mod event_kind {
    /// Destination inside the EID space, no map-cache entry.
    pub const MAP_CACHE_MISS: u8 = 1;
    /// Destination matched a negative entry with action Send-Map-Request.
    pub const NEGATIVE_SEND_MAP_REQUEST: u8 = 2;
    /// The next hop towards an RLOC has no resolved neighbour (the kernel never sees the
    /// encapsulated traffic, so nothing else would make it resolve one). `dst` holds the next-hop
    /// address (family, instance-id [`NEXT_HOP_IID`]) and `ifindex` the egress interface; the
    /// agent asks the kernel to resolve and keep it resolved (a managed neighbour entry).
    pub const NEXT_HOP_UNRESOLVED: u8 = 3;
    /// The ETR decapsulated a packet whose inner destination is none of this router's EIDs
    /// (outside [`super::LOCAL_EIDS`]): the sending ITR has a stale mapping. `dst` is the inner
    /// destination (with the packet's instance-id), `src` the inner source, `rloc` the outer
    /// source (the ITR), `ifindex` the ingress interface. The packet is still delivered.
    pub const DATA_FOR_ABSENT_EID: u8 = 4;
    /// A source inside a mobility interface's dynamic-EID prefix that is not a known local
    /// dynamic EID (there). `dst` is the EID (family, the map's instance-id, address),
    /// `ifindex` the ingress interface (a trunk: the parent), and `src` packs the rest, see
    /// [`super::MissEvent::detection`]. Rate-limited per EID, and by two buckets: first
    /// sightings, and sources refused once and seen again ([`DETECTION_REPEAT_BUCKET`]), so
    /// that a flood of one-packet spoofed sources cannot starve a real host, which keeps
    /// sending.
    pub const DYNAMIC_EID_DETECTED: u8 = 5;
    /// Bucket index (not an event kind) of detections of sources seen before.
    pub const DETECTION_REPEAT_BUCKET: u8 = 6;
    /// Number of buckets, plus one (index 0 unused): size of [`super::EVENT_BUCKETS`].
    pub const SLOTS: u32 = 7;
}

/// Instance-id field of the [`EidKey`] of a next-hop event: outside any EID space, so that its
/// rate-limit slot never collides with a destination EID's.
pub const NEXT_HOP_IID: u32 = 0x00ff_ffff;

/// Record sent through [`EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MissEvent {
    /// The destination EID that needs resolving (instance-id from the ingress interface); for
    /// [`event_kind::NEXT_HOP_UNRESOLVED`], the next-hop address.
    pub dst: EidKey,
    /// The source EID of the packet (the host behind this ITR): source EID of the Map-Request.
    /// Zero for a next-hop event.
    pub src: [u8; 16],
    /// Ingress interface; for a next-hop event, the egress interface.
    pub ifindex: u32,
    pub kind: u8,
    /// Family of `rloc` ([`AF_NONE`] when the kind has none).
    pub rloc_family: u8,
    pub _pad: [u8; 2],
    /// For [`event_kind::DATA_FOR_ABSENT_EID`]: the outer source address (the ITR's RLOC).
    pub rloc: [u8; 16],
}

/// The detection part of a [`event_kind::DYNAMIC_EID_DETECTED`] event, packed into
/// [`MissEvent::src`]: bytes 0..6 the source MAC, 6..8 the VLAN ID (big-endian, 0 = untagged),
/// byte 8 the [`detection`] kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    pub mac: [u8; 6],
    pub vlan: u16,
    pub kind: u8,
}

impl Detection {
    pub const fn pack(&self) -> [u8; 16] {
        let v = self.vlan.to_be_bytes();
        let m = self.mac;
        [
            m[0], m[1], m[2], m[3], m[4], m[5], v[0], v[1], self.kind, 0, 0, 0, 0, 0, 0, 0,
        ]
    }
}

impl MissEvent {
    /// The detection of a [`event_kind::DYNAMIC_EID_DETECTED`] event.
    pub const fn detection(&self) -> Option<Detection> {
        if self.kind != event_kind::DYNAMIC_EID_DETECTED {
            return None;
        }
        let s = self.src;
        Some(Detection {
            mac: [s[0], s[1], s[2], s[3], s[4], s[5]],
            vlan: u16::from_be_bytes([s[6], s[7]]),
            kind: s[8],
        })
    }
}

/// Record of a [`SLOW_PATH`] sample, followed by the frame (Ethernet header first) as it
/// arrived. The program has chosen the RLOC and built the LISP header; the agent sends
/// `lisp_header` + the frame's IP packet in a UDP datagram from the local RLOC of
/// `rloc_family` to `rloc`, port 4341, and lets the kernel fragment the outer packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlowPathRecord {
    /// The RLOC to send to; IPv4 in the first 4 bytes.
    pub rloc: [u8; 16],
    pub rloc_family: u8,
    /// Outer TTL / hop limit and TOS / traffic class, as the fast path would have set them.
    pub ttl: u8,
    pub tos: u8,
    pub _pad: u8,
    /// Bytes of frame appended to this record.
    pub frame_len: u32,
    /// The 8-byte LISP header, as on the wire.
    pub lisp_header: [u8; 8],
}

// ---------------------------------------------------------------- counters

/// Per-CPU counters by outcome, index of [`COUNTERS`]. Append only: the agent names them in
/// metrics by [`Counter::name`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not IPv4/IPv6, or on an interface with no role: passed untouched.
    PassOther = 0,
    /// IP, but neither for encapsulation nor for decapsulation.
    PassNoMatch,
    /// Encapsulated with an IPv4 outer header and redirected.
    EncapIpv4,
    /// Encapsulated with an IPv6 outer header and redirected.
    EncapIpv6,
    /// To be encapsulated, but no outer next hop (unresolved neighbour, no route, or no local
    /// RLOC of the chosen RLOC's family): dropped. Never passed to the kernel, which would
    /// route the bare EID packet natively into the underlay. An unresolved neighbour also
    /// raises [`event_kind::NEXT_HOP_UNRESOLVED`], so only the packets that arrive until the
    /// agent has had the neighbour resolved are lost.
    EncapNoNextHop,
    /// Decapsulated and redirected.
    Decap,
    /// Decapsulated and passed to the kernel: no fib result for the inner destination, TTL /
    /// hop limit would expire, or too big for the egress MTU.
    DecapPass,
    /// An event raised (miss, Send-Map-Request, unresolved next hop).
    MissEvent,
    /// A miss or Send-Map-Request packet whose event was suppressed by the rate limit.
    MissRateLimited,
    /// Dropped by a negative entry (Drop action, or Send-Map-Request / miss).
    NegativeDrop,
    /// Negative entry Natively-Forward: passed to the kernel.
    NativelyForward,
    /// Too big for the egress MTU once encapsulated; ICMP sent back to the source.
    TooBigIcmp,
    /// Too big for the egress MTU once encapsulated; passed to the kernel. No longer used by
    /// the program (such packets take the slow path, [`Counter::SlowPath`]); kept so that the
    /// counter indices stay stable.
    TooBigPass,
    /// TTL / hop limit would expire: passed to the kernel (which sends ICMP time exceeded).
    TtlExpired,
    /// Truncated or malformed IP header: passed to the kernel untouched.
    PassMalformed,
    /// LISP data to a local RLOC with a malformed or truncated LISP/inner header: dropped.
    DropBadLisp,
    /// LISP data with an instance-id that has no local table: dropped.
    DropUnknownInstance,
    /// Outer fragment of LISP data: passed to the kernel for reassembly.
    PassFragment,
    /// Failed to grow or shrink the packet: dropped (ETR, ICMP error). An ITR without headroom
    /// hands the packet to the slow path instead ([`Counter::SlowPath`]).
    PassNoHeadroom,
    /// LISP data whose outer header says CE but whose inner packet is Not-ECT: dropped
    /// (RFC 6040 §4.2).
    DropEcn,
    /// A miss, Send-Map-Request or absent-EID event suppressed because the event kind's token
    /// bucket on this CPU was empty (many destinations at once, e.g. a scan).
    EventBucketEmpty,
    /// To be encapsulated but too big for the path and not to be answered with ICMP (IPv4
    /// without DF, or no ICMP allowed): handed to the agent, which encapsulates it and lets the
    /// kernel fragment the outer packet (RFC 9300 §7.1).
    SlowPath,
    /// Would have gone to the slow path, but the perf buffer was full: dropped.
    SlowPathLost,
    /// To be encapsulated, but the encapsulation cannot happen (outer header would exceed 64 KiB,
    /// or an inconsistent map-cache entry): dropped, never passed bare into the underlay.
    DropCannotEncap,
    /// A dynamic-EID detection event raised (also counted in neither miss counter).
    DetectionEvent,
    /// A detection suppressed: the same EID was reported within the interval, or the
    /// detection buckets were empty (a flood of new sources).
    DetectionSuppressed,
    /// An ARP or RARP frame of a mobility interface (looked at for detection), passed.
    PassArp,
    /// Decapsulated for an "away" dynamic EID (a positive host entry in the map-cache: it
    /// moved to another site) and re-encapsulated towards its new RLOC.
    Reencap,
    /// An 802.1Q-tagged frame of a trunk whose VLAN has no mobility interface: the kernel's.
    PassOtherVlan,
}

impl Counter {
    pub const ALL: [Counter; 29] = [
        Counter::PassOther,
        Counter::PassNoMatch,
        Counter::EncapIpv4,
        Counter::EncapIpv6,
        Counter::EncapNoNextHop,
        Counter::Decap,
        Counter::DecapPass,
        Counter::MissEvent,
        Counter::MissRateLimited,
        Counter::NegativeDrop,
        Counter::NativelyForward,
        Counter::TooBigIcmp,
        Counter::TooBigPass,
        Counter::TtlExpired,
        Counter::PassMalformed,
        Counter::DropBadLisp,
        Counter::DropUnknownInstance,
        Counter::PassFragment,
        Counter::PassNoHeadroom,
        Counter::DropEcn,
        Counter::EventBucketEmpty,
        Counter::SlowPath,
        Counter::SlowPathLost,
        Counter::DropCannotEncap,
        Counter::DetectionEvent,
        Counter::DetectionSuppressed,
        Counter::PassArp,
        Counter::Reencap,
        Counter::PassOtherVlan,
    ];
    /// Size of [`COUNTERS`].
    pub const SLOTS: u32 = 32;

    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassOther => "pass_other",
            Counter::PassNoMatch => "pass_no_match",
            Counter::EncapIpv4 => "encap_ipv4",
            Counter::EncapIpv6 => "encap_ipv6",
            Counter::EncapNoNextHop => "encap_no_next_hop",
            Counter::Decap => "decap",
            Counter::DecapPass => "decap_pass",
            Counter::MissEvent => "miss_event",
            Counter::MissRateLimited => "miss_rate_limited",
            Counter::NegativeDrop => "negative_drop",
            Counter::NativelyForward => "natively_forward",
            Counter::TooBigIcmp => "too_big_icmp",
            Counter::TooBigPass => "too_big_pass",
            Counter::TtlExpired => "ttl_expired",
            Counter::PassMalformed => "pass_malformed",
            Counter::DropBadLisp => "drop_bad_lisp",
            Counter::DropUnknownInstance => "drop_unknown_instance",
            Counter::PassFragment => "pass_fragment",
            Counter::PassNoHeadroom => "pass_no_headroom",
            Counter::DropEcn => "drop_ecn",
            Counter::EventBucketEmpty => "event_bucket_empty",
            Counter::SlowPath => "slow_path",
            Counter::SlowPathLost => "slow_path_lost",
            Counter::DropCannotEncap => "drop_cannot_encap",
            Counter::DetectionEvent => "detection_event",
            Counter::DetectionSuppressed => "detection_suppressed",
            Counter::PassArp => "pass_arp",
            Counter::Reencap => "reencap",
            Counter::PassOtherVlan => "pass_other_vlan",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, with explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for super::EidKey {}
    unsafe impl aya::Pod for super::RlocKey {}
    unsafe impl aya::Pod for super::MapCacheEntry {}
    unsafe impl aya::Pod for super::InterfaceConfig {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::MissEvent {}
    unsafe impl aya::Pod for super::EventBucket {}
    unsafe impl aya::Pod for super::SlowPathRecord {}
    unsafe impl aya::Pod for super::MobilityIfaceKey {}
    unsafe impl aya::Pod for super::MobilityIface {}
    unsafe impl aya::Pod for super::ScopedEidKey {}
    unsafe impl aya::Pod for super::DynamicEidState {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EidKey>(), 20);
        assert_eq!(size_of::<RlocKey>(), 20);
        assert_eq!(size_of::<Rloc>(), 20);
        assert_eq!(
            size_of::<MapCacheEntry>(),
            4 + SELECT_SLOTS + 20 * MAX_RLOCS
        );
        assert_eq!(size_of::<InterfaceConfig>(), 8);
        assert_eq!(size_of::<Settings>(), 4 + 4 + 16 + 8 * 3);
        assert_eq!(size_of::<MissEvent>(), 20 + 16 + 4 + 4 + 16);
        assert_eq!(size_of::<SlowPathRecord>(), 16 + 4 + 4 + 8);
        assert_eq!(size_of::<EventBucket>(), 16);
        assert_eq!(size_of::<MobilityIfaceKey>(), 8);
        assert_eq!(size_of::<MobilityIface>(), 24);
        assert_eq!(size_of::<ScopedEidKey>(), 24);
        assert_eq!(size_of::<DynamicEidState>(), 16);
    }

    #[test]
    fn detection_packs_into_the_event_and_back() {
        let d = Detection {
            mac: [2, 0, 0, 0, 0, 0x10],
            vlan: 0x0abc,
            kind: detection::RARP,
        };
        let ev = MissEvent {
            kind: event_kind::DYNAMIC_EID_DETECTED,
            src: d.pack(),
            ..Default::default()
        };
        assert_eq!(ev.detection(), Some(d));
        assert_eq!(&ev.src[6..9], &[0x0a, 0xbc, detection::RARP]);
        let miss = MissEvent {
            kind: event_kind::MAP_CACHE_MISS,
            ..ev
        };
        assert_eq!(miss.detection(), None);
    }

    #[test]
    fn eid_key_round_trips_family_and_instance_id() {
        let k = EidKey::new(AF_IPV6, 0x00ab_cdef, [7; 16]);
        assert_eq!(k.family(), AF_IPV6);
        assert_eq!(k.instance_id(), 0x00ab_cdef);
        assert_eq!(k.family_iid, [AF_IPV6, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn counter_table_is_dense_and_fits() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert!(Counter::ALL.len() as u32 <= Counter::SLOTS);
    }
}
