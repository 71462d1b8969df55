//! Data-plane events: decoding of [`MissEvent`] records and the per-CPU perf readers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aya::maps::perf::PerfEvent;
use aya::maps::{MapData, PerfEventArray};
use lisp_common::maps::{AF_IPV4, AF_IPV6, EidKey, MissEvent, detection, event_kind};
use log::{debug, warn};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Stats;
use crate::core::action::DetectionKind;

/// Why an event record was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event record of {0} bytes, expected at least {1}")]
    Short(usize, usize),
    #[error("event with unknown address family {0}")]
    Family(u8),
    #[error("event of unknown kind {0}")]
    Kind(u8),
    #[error("dynamic-EID detection of unknown kind {0}")]
    DetectionKind(u8),
}

/// What the data plane asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissKind {
    /// No map-cache entry for a destination inside the EID space.
    MapCacheMiss,
    /// A negative entry with action Send-Map-Request matched.
    NegativeSendMapRequest,
}

/// A decoded [`MissEvent`]: a destination EID to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    pub kind: MissKind,
    pub instance_id: u32,
    pub dst: IpAddr,
    /// Source EID of the packet (source EID of the Map-Request).
    pub src: IpAddr,
    pub ifindex: u32,
    /// Interface name, if it could be resolved when the event arrived.
    pub ifname: Option<String>,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            MissKind::MapCacheMiss => "map-cache miss",
            MissKind::NegativeSendMapRequest => "negative map-cache entry (send-map-request)",
        };
        write!(
            f,
            "{what}: {} (iid {}) from {} on ",
            self.dst, self.instance_id, self.src
        )?;
        match &self.ifname {
            Some(n) => f.write_str(n),
            None => write!(f, "ifindex {}", self.ifindex),
        }
    }
}

/// The ETR delivered a packet for an EID this router does not hold (outside its
/// database-mappings): the ITR at `itr_rloc` has a stale mapping and should get an SMR.
/// The core's counterpart is `Event::DataForAbsentEid` with the same fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsentEid {
    pub instance_id: u32,
    /// Outer source address of the packet: the ITR that sent it.
    pub itr_rloc: IpAddr,
    pub src_eid: IpAddr,
    pub dst_eid: IpAddr,
    /// Interface the packet arrived on.
    pub ifindex: u32,
}

impl fmt::Display for AbsentEid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data for absent EID {} (iid {}) from {} via ITR {}",
            self.dst_eid, self.instance_id, self.src_eid, self.itr_rloc
        )
    }
}

/// A source on a mobility interface inside a dynamic-EID prefix and not (there) a known local
/// dynamic EID. The core's counterpart is `Event::DynamicEidDetected`, same fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// Where XDP saw it: the SVI, or the trunk parent with `vlan`.
    pub ifindex: u32,
    pub vlan: Option<u16>,
    /// The dynamic-EID map's instance-id.
    pub instance_id: u32,
    pub eid: IpAddr,
    /// Source MAC of the frame.
    pub mac: [u8; 6],
    pub kind: DetectionKind,
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac;
        write!(
            f,
            "dynamic EID {} (iid {}) seen on ifindex {}",
            self.eid, self.instance_id, self.ifindex
        )?;
        if let Some(v) = self.vlan {
            write!(f, " vlan {v}")?;
        }
        write!(
            f,
            " from {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} ({})",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            self.kind.as_str()
        )
    }
}

impl Detected {
    fn from_event(ev: &MissEvent) -> Result<Detected, EventError> {
        let d = ev.detection().ok_or(EventError::Kind(ev.kind))?;
        let kind = match d.kind {
            detection::DATA => DetectionKind::Data,
            detection::GRATUITOUS_ARP => DetectionKind::GratuitousArp,
            detection::RARP => DetectionKind::Rarp,
            detection::NEIGHBOUR_DISCOVERY => DetectionKind::NeighbourDiscovery,
            k => return Err(EventError::DetectionKind(k)),
        };
        Ok(Detected {
            ifindex: ev.ifindex,
            vlan: (d.vlan != 0).then_some(d.vlan),
            instance_id: ev.dst.instance_id(),
            eid: ip_of(ev.dst.family(), &ev.dst.addr)?,
            mac: d.mac,
            kind,
        })
    }
}

/// Events the shell hands to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataplaneEvent {
    Miss(Miss),
    /// The next hop `addr` on `ifindex` towards an RLOC has no resolved neighbour: the core
    /// decides whether to have it resolved (`core::next_hop`).
    NextHopUnresolved {
        ifindex: u32,
        addr: IpAddr,
    },
    DataForAbsentEid(AbsentEid),
    DynamicEidDetected(Detected),
}

const RECORD_LEN: usize = size_of::<MissEvent>();

/// Decodes one perf sample. The sample may carry trailing alignment bytes; fields are read by
/// offset (the layout of `MissEvent`, checked by lisp-common's layout test), never by casting.
pub fn decode_miss(sample: &[u8]) -> Result<MissEvent, EventError> {
    if sample.len() < RECORD_LEN {
        return Err(EventError::Short(sample.len(), RECORD_LEN));
    }
    let arr = |r: std::ops::Range<usize>| -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&sample[r]);
        a
    };
    let mut family_iid = [0u8; 4];
    family_iid.copy_from_slice(&sample[0..4]);
    let mut ifindex = [0u8; 4];
    ifindex.copy_from_slice(&sample[36..40]);
    Ok(MissEvent {
        dst: EidKey {
            family_iid,
            addr: arr(4..20),
        },
        src: arr(20..36),
        ifindex: u32::from_ne_bytes(ifindex),
        kind: sample[40],
        rloc_family: sample[41],
        _pad: [0; 2],
        rloc: arr(44..60),
    })
}

fn ip_of(family: u8, b: &[u8; 16]) -> Result<IpAddr, EventError> {
    match family {
        AF_IPV4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_IPV6 => Ok(IpAddr::V6(Ipv6Addr::from(*b))),
        f => Err(EventError::Family(f)),
    }
}

impl Miss {
    /// Interprets a record; `ifname` names its interface.
    pub fn from_event(
        ev: &MissEvent,
        ifname: impl FnOnce(u32) -> Option<String>,
    ) -> Result<Miss, EventError> {
        let kind = match ev.kind {
            event_kind::MAP_CACHE_MISS => MissKind::MapCacheMiss,
            event_kind::NEGATIVE_SEND_MAP_REQUEST => MissKind::NegativeSendMapRequest,
            k => return Err(EventError::Kind(k)),
        };
        let fam = ev.dst.family();
        Ok(Miss {
            kind,
            instance_id: ev.dst.instance_id(),
            dst: ip_of(fam, &ev.dst.addr)?,
            // The source has the destination's family (same inner packet).
            src: ip_of(fam, &ev.src)?,
            ifindex: ev.ifindex,
            ifname: ifname(ev.ifindex),
        })
    }
}

/// What one perf sample asks of the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A destination to resolve: for the control plane.
    Miss(Miss),
    /// The next hop towards an RLOC has no resolved neighbour: for the shell itself.
    NextHopUnresolved { ifindex: u32, addr: IpAddr },
    /// Data for an EID we do not hold: for the control plane (SMR).
    DataForAbsentEid(AbsentEid),
    /// A dynamic EID seen on a mobility interface: for the control plane (mobility).
    DynamicEidDetected(Detected),
}

/// Decodes and interprets one perf sample, whatever its kind.
pub fn decode_event(
    sample: &[u8],
    ifname: impl FnOnce(u32) -> Option<String>,
) -> Result<Decoded, EventError> {
    let ev = decode_miss(sample)?;
    if ev.kind == event_kind::NEXT_HOP_UNRESOLVED {
        return Ok(Decoded::NextHopUnresolved {
            ifindex: ev.ifindex,
            addr: ip_of(ev.dst.family(), &ev.dst.addr)?,
        });
    }
    if ev.kind == event_kind::DATA_FOR_ABSENT_EID {
        let fam = ev.dst.family();
        return Ok(Decoded::DataForAbsentEid(AbsentEid {
            instance_id: ev.dst.instance_id(),
            // The outer family may differ from the inner one.
            itr_rloc: ip_of(ev.rloc_family, &ev.rloc)?,
            src_eid: ip_of(fam, &ev.src)?,
            dst_eid: ip_of(fam, &ev.dst.addr)?,
            ifindex: ev.ifindex,
        }));
    }
    if ev.kind == event_kind::DYNAMIC_EID_DETECTED {
        return Detected::from_event(&ev).map(Decoded::DynamicEidDetected);
    }
    Miss::from_event(&ev, ifname).map(Decoded::Miss)
}

/// Handles one perf sample: decode, log, count, forward. Never blocks on the control plane:
/// when it lags, the event is dropped and counted (the kernel will raise it again after its
/// interval).
pub fn handle_sample(
    bytes: &[u8],
    stats: &Stats,
    tx: &mpsc::Sender<DataplaneEvent>,
    ifname: impl FnOnce(u32) -> Option<String>,
) {
    match decode_event(bytes, ifname) {
        Ok(Decoded::Miss(miss)) => {
            stats.events_received.fetch_add(1, Ordering::Relaxed);
            // Debug, not info: one line per destination per second can be thousands a second;
            // the control plane logs what each resolution leads to.
            debug!("{miss}");
            if tx.try_send(DataplaneEvent::Miss(miss)).is_err() {
                stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                debug!("event channel full or closed: event dropped");
            }
        }
        Ok(Decoded::NextHopUnresolved { ifindex, addr }) => {
            stats.events_received.fetch_add(1, Ordering::Relaxed);
            debug!("next hop {addr} (ifindex {ifindex}) unresolved");
            if tx
                .try_send(DataplaneEvent::NextHopUnresolved { ifindex, addr })
                .is_err()
            {
                stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                debug!("event channel full or closed: event dropped");
            }
        }
        Ok(Decoded::DataForAbsentEid(a)) => {
            stats.events_received.fetch_add(1, Ordering::Relaxed);
            debug!("{a}");
            if tx.try_send(DataplaneEvent::DataForAbsentEid(a)).is_err() {
                stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                debug!("event channel full or closed: event dropped");
            }
        }
        Ok(Decoded::DynamicEidDetected(d)) => {
            stats.events_received.fetch_add(1, Ordering::Relaxed);
            debug!("{d}");
            if tx.try_send(DataplaneEvent::DynamicEidDetected(d)).is_err() {
                stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                debug!("event channel full or closed: event dropped");
            }
        }
        Err(e) => {
            stats.events_malformed.fetch_add(1, Ordering::Relaxed);
            warn!("data-plane event ignored: {e}");
        }
    }
}

/// Opens the perf buffer of every online CPU and spawns one reader task per CPU.
pub fn spawn_readers(
    mut events: PerfEventArray<MapData>,
    stats: Arc<Stats>,
    tx: mpsc::Sender<DataplaneEvent>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let cpus =
        aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?;
    let mut tasks = Vec::new();
    for cpu in cpus {
        // 16 pages per CPU: room for bursts of misses while the task is not scheduled.
        let buf = events
            .open(cpu, Some(16))
            .with_context(|| format!("opening the event buffer of CPU {cpu}"))?;
        // SAFETY: the buffer owns its perf fd, which stays open and unchanged until the
        // buffer (moved into the AsyncFd) is dropped.
        let mut fd = unsafe { AsyncFd::register_with_interest(buf, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the event buffer of CPU {cpu}: {e}"))?;
        let stats = stats.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut scratch = Vec::with_capacity(RECORD_LEN + 8);
            loop {
                let mut guard = match fd.readable_mut().await {
                    Ok(g) => g,
                    Err(e) => {
                        warn!("event buffer of CPU {cpu}: {e}");
                        return;
                    }
                };
                guard.get_inner_mut().for_each(|ev| match ev {
                    PerfEvent::Sample { head, tail } => {
                        let bytes = if tail.is_empty() {
                            head
                        } else {
                            // A sample across the ring's end comes in two pieces.
                            scratch.clear();
                            scratch.extend_from_slice(head);
                            scratch.extend_from_slice(tail);
                            &scratch[..]
                        };
                        handle_sample(bytes, &stats, &tx, crate::dataplane::ifname_of);
                    }
                    PerfEvent::Lost { count } => {
                        stats.events_lost.fetch_add(count, Ordering::Relaxed);
                        warn!("{count} data-plane event(s) lost (perf buffer of CPU {cpu} full)");
                    }
                });
                guard.clear_ready();
            }
        }));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ev: &MissEvent) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ev.dst.family_iid);
        v.extend_from_slice(&ev.dst.addr);
        v.extend_from_slice(&ev.src);
        v.extend_from_slice(&ev.ifindex.to_ne_bytes());
        v.push(ev.kind);
        v.push(ev.rloc_family);
        v.extend_from_slice(&[0; 2]);
        v.extend_from_slice(&ev.rloc);
        v
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a);
        b
    }

    fn sample_event() -> MissEvent {
        MissEvent {
            dst: EidKey::new(AF_IPV4, 0, v4([203, 0, 113, 10])),
            src: v4([198, 51, 100, 10]),
            ifindex: 7,
            kind: event_kind::MAP_CACHE_MISS,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_and_formats_a_miss() {
        let ev = sample_event();
        let mut bytes = record(&ev);
        assert_eq!(bytes.len(), RECORD_LEN);
        bytes.extend_from_slice(&[0xee; 4]); // perf alignment padding
        let back = decode_miss(&bytes).unwrap();
        assert_eq!(back, ev);
        let miss = Miss::from_event(&back, |i| (i == 7).then(|| "vlan10".to_string())).unwrap();
        assert_eq!(
            miss.to_string(),
            "map-cache miss: 203.0.113.10 (iid 0) from 198.51.100.10 on vlan10"
        );
        let miss = Miss::from_event(&back, |_| None).unwrap();
        assert!(miss.to_string().ends_with("on ifindex 7"));
    }

    #[test]
    fn decodes_ipv6_with_instance_id() {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        dst[15] = 1;
        let ev = MissEvent {
            dst: EidKey::new(AF_IPV6, 0x123456, dst),
            src: [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            ifindex: 3,
            kind: event_kind::NEGATIVE_SEND_MAP_REQUEST,
            ..Default::default()
        };
        let miss = Miss::from_event(&decode_miss(&record(&ev)).unwrap(), |_| None).unwrap();
        assert_eq!(miss.kind, MissKind::NegativeSendMapRequest);
        assert_eq!(miss.instance_id, 0x123456);
        assert_eq!(miss.dst, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(miss.src, "2001:db8:1::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn decodes_dynamic_eid_detections_of_every_kind() {
        use lisp_common::maps::Detection;
        let mac = [2, 0, 0, 0, 0, 0x10];
        let cases = [
            (detection::DATA, DetectionKind::Data, 0, None),
            (
                detection::GRATUITOUS_ARP,
                DetectionKind::GratuitousArp,
                10,
                Some(10),
            ),
            (detection::RARP, DetectionKind::Rarp, 4094, Some(4094)),
            (
                detection::NEIGHBOUR_DISCOVERY,
                DetectionKind::NeighbourDiscovery,
                0,
                None,
            ),
        ];
        for (raw, kind, vid, vlan) in cases {
            let ev = MissEvent {
                dst: EidKey::new(AF_IPV4, 5, v4([198, 51, 100, 10])),
                src: Detection {
                    mac,
                    vlan: vid,
                    kind: raw,
                }
                .pack(),
                ifindex: 9,
                kind: event_kind::DYNAMIC_EID_DETECTED,
                ..Default::default()
            };
            let d = decode_event(&record(&ev), |_| None).unwrap();
            assert_eq!(
                d,
                Decoded::DynamicEidDetected(Detected {
                    ifindex: 9,
                    vlan,
                    instance_id: 5,
                    eid: "198.51.100.10".parse().unwrap(),
                    mac,
                    kind,
                })
            );
        }
        let ev = MissEvent {
            dst: EidKey::new(AF_IPV6, 0, [0x20; 16]),
            src: Detection {
                mac,
                vlan: 10,
                kind: detection::DATA,
            }
            .pack(),
            ifindex: 4,
            kind: event_kind::DYNAMIC_EID_DETECTED,
            ..Default::default()
        };
        let Decoded::DynamicEidDetected(d) = decode_event(&record(&ev), |_| None).unwrap() else {
            panic!("not a detection");
        };
        assert_eq!(
            d.to_string(),
            "dynamic EID 2020:2020:2020:2020:2020:2020:2020:2020 (iid 0) seen on ifindex 4 vlan 10 from 02:00:00:00:00:10 (data)"
        );
        // A detection kind this agent does not know, and a bad family: errors, not events.
        let mut bad = ev;
        bad.src[8] = 9;
        assert_eq!(
            decode_event(&record(&bad), |_| None),
            Err(EventError::DetectionKind(9))
        );
        let mut bad = ev;
        bad.dst.family_iid[0] = 7;
        assert_eq!(
            decode_event(&record(&bad), |_| None),
            Err(EventError::Family(7))
        );
    }

    #[test]
    fn rejects_bad_records() {
        let bytes = record(&sample_event());
        for n in 0..RECORD_LEN {
            assert_eq!(
                decode_miss(&bytes[..n]),
                Err(EventError::Short(n, RECORD_LEN))
            );
        }
        let mut ev = sample_event();
        ev.dst.family_iid[0] = 9;
        assert_eq!(Miss::from_event(&ev, |_| None), Err(EventError::Family(9)));
        let mut ev = sample_event();
        ev.kind = 77;
        assert_eq!(Miss::from_event(&ev, |_| None), Err(EventError::Kind(77)));
    }

    #[test]
    fn decodes_next_hop_events_apart_from_misses() {
        let ev = MissEvent {
            dst: EidKey::new(AF_IPV6, lisp_common::maps::NEXT_HOP_IID, [0x20; 16]),
            src: [0; 16],
            ifindex: 4,
            kind: event_kind::NEXT_HOP_UNRESOLVED,
            ..Default::default()
        };
        assert_eq!(
            decode_event(&record(&ev), |_| panic!("no interface name needed")),
            Ok(Decoded::NextHopUnresolved {
                ifindex: 4,
                addr: IpAddr::V6(Ipv6Addr::from([0x20; 16])),
            })
        );
        let mut bad = ev;
        bad.dst.family_iid[0] = 9;
        assert_eq!(
            decode_event(&record(&bad), |_| None),
            Err(EventError::Family(9))
        );
        assert!(matches!(
            decode_event(&record(&sample_event()), |_| None),
            Ok(Decoded::Miss(_))
        ));
    }

    #[test]
    fn handle_sample_counts_and_forwards() {
        let stats = Stats::default();
        let (tx, mut rx) = mpsc::channel(1);
        let bytes = record(&sample_event());
        handle_sample(&bytes, &stats, &tx, |_| None);
        handle_sample(&bytes, &stats, &tx, |_| None); // channel full: dropped, counted
        handle_sample(&bytes[..10], &stats, &tx, |_| None);
        assert_eq!(stats.events_received.load(Ordering::Relaxed), 2);
        assert_eq!(stats.events_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(stats.events_malformed.load(Ordering::Relaxed), 1);
        let Ok(DataplaneEvent::Miss(m)) = rx.try_recv() else {
            panic!("no miss forwarded")
        };
        assert_eq!(m.dst, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert!(rx.try_recv().is_err());
        // A next-hop event goes to the control plane too (the core decides what to do).
        let mut nh = sample_event();
        nh.kind = event_kind::NEXT_HOP_UNRESOLVED;
        handle_sample(&record(&nh), &stats, &tx, |_| None);
        assert!(matches!(
            rx.try_recv(),
            Ok(DataplaneEvent::NextHopUnresolved { .. })
        ));
    }

    #[test]
    fn decodes_data_for_absent_eid_with_the_outer_family() {
        // IPv4 EIDs inside an IPv6 outer header: the ITR's RLOC is IPv6.
        let ev = MissEvent {
            dst: EidKey::new(AF_IPV4, 7, v4([203, 0, 113, 10])),
            src: v4([198, 51, 100, 10]),
            ifindex: 5,
            kind: event_kind::DATA_FOR_ABSENT_EID,
            rloc_family: AF_IPV6,
            rloc: [
                0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ],
            ..Default::default()
        };
        let want = AbsentEid {
            instance_id: 7,
            itr_rloc: "2001:db8:ff:1::10".parse().unwrap(),
            src_eid: "198.51.100.10".parse().unwrap(),
            dst_eid: "203.0.113.10".parse().unwrap(),
            ifindex: 5,
        };
        assert_eq!(
            decode_event(&record(&ev), |_| None),
            Ok(Decoded::DataForAbsentEid(want.clone()))
        );
        assert_eq!(
            want.to_string(),
            "data for absent EID 203.0.113.10 (iid 7) from 198.51.100.10 via ITR 2001:db8:ff:1::10"
        );
        let mut bad = ev;
        bad.rloc_family = 0;
        assert_eq!(
            decode_event(&record(&bad), |_| None),
            Err(EventError::Family(0))
        );
        // Forwarded to the control plane like a miss.
        let stats = Stats::default();
        let (tx, mut rx) = mpsc::channel(4);
        handle_sample(&record(&ev), &stats, &tx, |_| None);
        assert_eq!(
            rx.try_recv().ok(),
            Some(DataplaneEvent::DataForAbsentEid(want))
        );
        assert_eq!(stats.events_received.load(Ordering::Relaxed), 1);
    }
}
