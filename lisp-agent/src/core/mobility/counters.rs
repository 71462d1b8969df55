//! What the mobility role counted: events (`lisp_mobility_total{event}`) and refusals
//! (`lisp_mobility_refused_total{reason}`).

/// Why an input was refused (no state changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    /// A detection from an interface (ifindex, VLAN) that is not a mobility interface.
    UnknownInterface,
    /// A detection, or a record of a group Map-Notify, outside the map's dynamic prefixes.
    OutsidePrefix,
    /// The dynamic-EID table is full.
    TableFull,
    /// A group datagram that is not a Map-Notify with an xTR-ID, or does not parse.
    Malformed,
    /// A group Map-Notify whose MAC verifies with none of the map's keys.
    Unauthenticated,
    /// A group Map-Notify on an interface or group of no map, or sent from an address that is
    /// not one of its record's locators (not an xTR of the site it speaks for).
    OutsideSite,
    /// A group Map-Notify whose nonce is not above the last one accepted from its sender
    /// (xTR-ID): a replay.
    Replayed,
}

impl Refused {
    pub const ALL: [Refused; 7] = [
        Refused::UnknownInterface,
        Refused::OutsidePrefix,
        Refused::TableFull,
        Refused::Malformed,
        Refused::Unauthenticated,
        Refused::OutsideSite,
        Refused::Replayed,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::UnknownInterface => "unknown_interface",
            Refused::OutsidePrefix => "outside_prefix",
            Refused::TableFull => "table_full",
            Refused::Malformed => "malformed",
            Refused::Unauthenticated => "unauthenticated",
            Refused::OutsideSite => "outside_site",
            Refused::Replayed => "replayed",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MobilityCounters {
    /// New local dynamic EIDs (detections of an EID not already local here).
    pub detected: u64,
    /// Detections of an EID already local on the same interface (the data plane lost it).
    pub redetected: u64,
    /// EIDs learnt from a Map-Notify of another xTR of our site.
    pub learned_from_site: u64,
    /// Local EIDs that moved to another site.
    pub moved_away: u64,
    /// Local or site EIDs removed after inactivity.
    pub expired: u64,
    /// Away entries that reached the end of their TTL.
    pub away_expired: u64,
    pub group_notify_sent: u64,
    pub group_notify_received: u64,
    /// Our own group Map-Notifies received back (multicast loop).
    pub group_notify_own: u64,
    /// Activity reports for EIDs that are not local (raced with a removal).
    pub activity_unknown: u64,
    refused: [u64; Refused::ALL.len()],
}

impl MobilityCounters {
    pub(super) fn refuse(&mut self, r: Refused) {
        self.refused[r as usize] += 1;
    }

    pub fn refused(&self, r: Refused) -> u64 {
        self.refused[r as usize]
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// `lisp_mobility_total{event}` (the xTR counts `smr_sent`).
    pub fn events(&self) -> [(&'static str, u64); 7] {
        [
            ("detected", self.detected),
            ("redetected", self.redetected),
            ("learned_from_site", self.learned_from_site),
            ("moved_away", self.moved_away),
            ("expired", self.expired),
            ("group_notify_sent", self.group_notify_sent),
            ("group_notify_received", self.group_notify_received),
        ]
    }

    /// `lisp_mobility_refused_total{reason}`.
    pub fn refusals(&self) -> [(&'static str, u64); Refused::ALL.len()] {
        Refused::ALL.map(|r| (r.as_str(), self.refused(r)))
    }
}
