//! Counters of the xTR control plane: every message sent and received by type, and every
//! rejected input by reason. Plain integers: the core is single-threaded; the shell copies them
//! out for `/metrics`.

/// Why an input was dropped. Each one leaves the state unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The datagram does not parse as a control message.
    Malformed,
    /// A message type an xTR does not take (Map-Register, Map-Notify-Ack, unknown types).
    UnexpectedType,
    /// An ECM that does not carry a Map-Request.
    UnexpectedEcm,
    /// Map-Notify whose nonce matches no outstanding Map-Register and no map-server key.
    NotifyUnknownNonce,
    /// Map-Notify with the right nonce but an authentication that does not verify.
    NotifyBadAuth,
    /// A second Map-Notify for a registration round already answered.
    NotifyDuplicate,
    /// Map-Reply whose nonce matches no outstanding Map-Request.
    ReplyUnsolicited,
    /// Map-Reply with a known nonce whose records do not cover the EID asked for.
    ReplyEidMismatch,
    /// Map-Reply record that cannot be turned into a map-cache entry.
    ReplyBadRecord,
    /// Map-Reply (or Map-Notify) record for /0: it would capture every destination, the
    /// underlay included; no map-server sends one.
    ReplyTooBroad,
    /// Map-Reply record for exactly the prefix of a static map-cache entry (not installed).
    ReplyStatic,
    /// Map-Request for an EID that is not one of our database-mappings.
    RequestNotOurs,
    /// Map-Request with no ITR-RLOC we can reach (family without a local locator).
    RequestNoItrRloc,
    /// SMR for an EID that is not in the map-cache.
    SmrNotCached,
    /// SMR for an EID whose best map-cache match is a static entry (nothing to re-resolve).
    SmrStatic,
    /// SMR-invoked Map-Request suppressed by the 3 s per-prefix limit.
    SmrRateLimited,
    /// Outgoing SMR suppressed by the 3 s per-RLOC limit.
    SmrSendRateLimited,
    /// Miss outside the configured EID space.
    MissOutsideEidSpace,
    /// Miss for an EID already being resolved (the retransmit timer handles it).
    MissPending,
    /// Miss for an EID in hold-down after 10 unanswered Map-Requests.
    MissHoldDown,
    /// Miss for an EID that is already in the map-cache.
    MissCached,
    /// Miss, but no map-resolver is configured.
    MissNoResolver,
    /// Miss whose source and destination families differ (cannot build the ECM inner header).
    MissBadAddress,
    /// Miss (or SMR) not resolved: the table of pending resolutions is full of live ones.
    PendingTableFull,
    /// Map-Reply or Map-Notify record not installed: the map-cache is full.
    CacheFull,
    /// SMR or SMR-invoked request not sent: its rate-limit table is full of recent entries.
    RateTableFull,
    /// Data for an absent EID with addresses we cannot use (families differ, or no locator of
    /// the ITR's family): no SMR.
    AbsentEidBadAddress,
    /// Record of an authenticated Map-Notify for exactly one of our database-mappings: our own
    /// registration, not a map-cache entry.
    NotifyOwnRecord,
    /// Record of an authenticated Map-Notify for exactly a static map-cache prefix.
    NotifyStatic,
    /// Map-Notify carrying another xTR's xTR-ID (a publication meant for someone else).
    NotifyOtherXtr,
}

impl Reject {
    pub const ALL: [Reject; 30] = [
        Reject::Malformed,
        Reject::UnexpectedType,
        Reject::UnexpectedEcm,
        Reject::NotifyUnknownNonce,
        Reject::NotifyBadAuth,
        Reject::NotifyDuplicate,
        Reject::ReplyUnsolicited,
        Reject::ReplyEidMismatch,
        Reject::ReplyBadRecord,
        Reject::ReplyTooBroad,
        Reject::ReplyStatic,
        Reject::RequestNotOurs,
        Reject::RequestNoItrRloc,
        Reject::SmrNotCached,
        Reject::SmrStatic,
        Reject::SmrRateLimited,
        Reject::SmrSendRateLimited,
        Reject::MissOutsideEidSpace,
        Reject::MissPending,
        Reject::MissHoldDown,
        Reject::MissCached,
        Reject::MissNoResolver,
        Reject::MissBadAddress,
        Reject::PendingTableFull,
        Reject::CacheFull,
        Reject::RateTableFull,
        Reject::AbsentEidBadAddress,
        Reject::NotifyOwnRecord,
        Reject::NotifyStatic,
        Reject::NotifyOtherXtr,
    ];

    /// Stable snake_case name, used as a metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnexpectedType => "unexpected_type",
            Reject::UnexpectedEcm => "unexpected_ecm",
            Reject::NotifyUnknownNonce => "notify_unknown_nonce",
            Reject::NotifyBadAuth => "notify_bad_auth",
            Reject::NotifyDuplicate => "notify_duplicate",
            Reject::ReplyUnsolicited => "reply_unsolicited",
            Reject::ReplyEidMismatch => "reply_eid_mismatch",
            Reject::ReplyBadRecord => "reply_bad_record",
            Reject::ReplyTooBroad => "reply_too_broad",
            Reject::ReplyStatic => "reply_static",
            Reject::RequestNotOurs => "request_not_ours",
            Reject::RequestNoItrRloc => "request_no_itr_rloc",
            Reject::SmrNotCached => "smr_not_cached",
            Reject::SmrStatic => "smr_static",
            Reject::SmrRateLimited => "smr_rate_limited",
            Reject::SmrSendRateLimited => "smr_send_rate_limited",
            Reject::MissOutsideEidSpace => "miss_outside_eid_space",
            Reject::MissPending => "miss_pending",
            Reject::MissHoldDown => "miss_hold_down",
            Reject::MissCached => "miss_cached",
            Reject::MissNoResolver => "miss_no_resolver",
            Reject::MissBadAddress => "miss_bad_address",
            Reject::PendingTableFull => "pending_table_full",
            Reject::CacheFull => "cache_full",
            Reject::RateTableFull => "rate_table_full",
            Reject::AbsentEidBadAddress => "absent_eid_bad_address",
            Reject::NotifyOwnRecord => "notify_own_record",
            Reject::NotifyStatic => "notify_static",
            Reject::NotifyOtherXtr => "notify_other_xtr",
        }
    }

    fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Message counters. `sent_*` count datagrams handed to the shell, `rx_*` accepted inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub sent_map_register: u64,
    /// Map-Requests sent inside an ECM to a map-resolver (first sends and retransmits).
    pub sent_map_request: u64,
    /// Of those, retransmits.
    pub sent_map_request_retry: u64,
    /// Of those, SMR-invoked.
    pub sent_smr_invoked: u64,
    pub sent_smr: u64,
    pub sent_map_reply: u64,
    pub sent_probe_reply: u64,
    pub sent_map_notify_ack: u64,
    pub rx_map_notify: u64,
    /// Unsolicited Map-Notifies received again (a retransmission): acknowledged, not applied.
    pub rx_map_notify_repeated: u64,
    pub rx_map_reply: u64,
    pub rx_map_request: u64,
    pub rx_probe: u64,
    pub rx_smr: u64,
    pub map_cache_installed: u64,
    pub map_cache_expired: u64,
    /// Misses that started a resolution.
    pub miss_resolving: u64,
    /// Resolutions abandoned after 10 unanswered Map-Requests.
    pub resolve_gave_up: u64,
    /// Data packets for an EID we no longer hold, reported by the data plane.
    pub rx_data_for_absent_eid: u64,
    /// Map-cache entries installed or replaced by a Map-Notify record (publication or
    /// unsolicited notify from a map-server).
    pub notify_cache_updated: u64,
    /// Map-cache entries removed by a Map-Notify record (TTL 0 or no locators).
    pub notify_cache_removed: u64,
    /// Held-down resolutions dropped early to make room in a full pending table.
    pub pending_evicted: u64,
    /// Records / locators (ITR-RLOCs included) of received messages left out because they are
    /// encoded in an LCAF type we do not know (the rest of the message is used).
    pub skipped_records: u64,
    pub skipped_locators: u64,
    rejected: [u64; Reject::ALL.len()],
}

impl Counters {
    pub(crate) fn reject(&mut self, r: Reject) {
        self.rejected[r.index()] += 1;
    }

    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()]
    }

    /// Every rejected-input counter with its name.
    pub fn rejects(&self) -> impl Iterator<Item = (Reject, u64)> + '_ {
        Reject::ALL.iter().map(|r| (*r, self.rejected(*r)))
    }

    /// Count what the codec left out of a received message (unknown LCAF types).
    pub(crate) fn count_skipped(&mut self, msg: &lisp_common::wire::control::Message) {
        use lisp_common::wire::control::Message;
        let s = match msg {
            Message::MapReply(m) => m.skipped,
            Message::MapNotify(m) => m.skipped,
            Message::MapRequest(m) => m.skipped,
            Message::Ecm(e) => match &*e.message {
                Message::MapRequest(m) => m.skipped,
                _ => return,
            },
            _ => return,
        };
        self.skipped_records += u64::from(s.records);
        self.skipped_locators += u64::from(s.locators);
    }

    /// Every message counter with its name (for metrics).
    pub fn messages(&self) -> [(&'static str, u64); 24] {
        [
            ("sent_map_register", self.sent_map_register),
            ("sent_map_request", self.sent_map_request),
            ("sent_map_request_retry", self.sent_map_request_retry),
            ("sent_smr_invoked", self.sent_smr_invoked),
            ("sent_smr", self.sent_smr),
            ("sent_map_reply", self.sent_map_reply),
            ("sent_probe_reply", self.sent_probe_reply),
            ("sent_map_notify_ack", self.sent_map_notify_ack),
            ("rx_map_notify", self.rx_map_notify),
            ("rx_map_notify_repeated", self.rx_map_notify_repeated),
            ("rx_map_reply", self.rx_map_reply),
            ("rx_map_request", self.rx_map_request),
            ("rx_probe", self.rx_probe),
            ("rx_smr", self.rx_smr),
            ("map_cache_installed", self.map_cache_installed),
            ("map_cache_expired", self.map_cache_expired),
            ("miss_resolving", self.miss_resolving),
            ("resolve_gave_up", self.resolve_gave_up),
            ("rx_data_for_absent_eid", self.rx_data_for_absent_eid),
            ("notify_cache_updated", self.notify_cache_updated),
            ("notify_cache_removed", self.notify_cache_removed),
            ("pending_evicted", self.pending_evicted),
            ("skipped_records", self.skipped_records),
            ("skipped_locators", self.skipped_locators),
        ]
    }
}
