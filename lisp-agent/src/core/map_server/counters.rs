//! Counters of the map-server: every message received, sent and refused, by reason. Plain
//! `u64` fields with stable names; [`Counters::iter`] lists them as `(name, value)` for the
//! metrics endpoint (`lisp_map_server_<name>_total`).

/// Why a message was dropped. Each drop changes no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not a parseable LISP control message (truncated, bad AFI, trailing bytes...).
    Malformed,
    /// A message type the map-server does not take (Map-Reply, Map-Notify, a plain Map-Request).
    UnexpectedType,
    /// A Map-Register without records.
    NoRecords,
    /// A record whose EID-prefix is inside no configured site.
    UnknownEid,
    /// A record more specific than its site prefix, which does not accept more-specifics.
    MoreSpecificRefused,
    /// Records belonging to different sites in one Map-Register (one key cannot sign for both).
    MixedSites,
    /// The authentication algorithm is not the one configured for the site (or unknown).
    WrongAlgorithm,
    /// The HMAC does not verify with the site key (or the auth field is inconsistent).
    AuthFailed,
    /// A replay: a state-changing Map-Register already accepted from this registrant (or with
    /// a nonce not above the last, from one that increases them), or under the legacy nonce
    /// policies a nonce already used / not greater than the last one.
    ReplayedNonce,
    /// The registration table is full.
    TableFull,
    /// A Map-Notify-Ack whose nonce matches no Map-Notify we are retransmitting.
    UnsolicitedAck,
    /// An ECM that does not carry a Map-Request, or a Map-Request without an EID record.
    BadMapRequest,
    /// A subscription (N bit) from an ITR that is in no site (no key to sign notifications
    /// with), or over the subscription limit.
    SubscriptionRefused,
}

/// The map-server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    // Received (before validation).
    pub rx_map_register: u64,
    pub rx_map_notify_ack: u64,
    pub rx_ecm_map_request: u64,
    pub rx_other: u64,
    // Sent.
    pub tx_map_notify: u64,
    pub tx_map_notify_unsolicited: u64,
    pub tx_map_notify_retransmit: u64,
    pub tx_map_reply_proxy: u64,
    pub tx_map_reply_negative: u64,
    pub tx_ecm_forwarded: u64,
    // Registration state.
    pub registrations_created: u64,
    pub registrations_refreshed: u64,
    pub registrations_changed: u64,
    pub registrations_withdrawn: u64,
    pub registrations_expired: u64,
    /// Registrants dropped because another registering site took their prefix (a host moved).
    pub registrations_displaced: u64,
    /// Registered prefixes whose host bits were cleared.
    pub records_host_bits_masked: u64,
    /// Records / locators (ITR-RLOCs included) of Map-Registers and Map-Requests left out:
    /// encoded in an LCAF type we do not know.
    pub records_skipped: u64,
    pub locators_skipped: u64,
    /// Replay histories of long-silent registrants dropped to make room for new ones.
    pub registrants_forgotten: u64,
    pub notify_acked: u64,
    pub notify_given_up: u64,
    pub subscriptions_added: u64,
    pub subscriptions_expired: u64,
    /// Map-Requests with the D bit: subscription only, no answer.
    pub map_request_no_reply: u64,
    /// A message we built could not be encoded (a value outside its field); never expected.
    pub emit_failed: u64,
    // Refused, by reason.
    pub rejected_malformed: u64,
    pub rejected_unexpected_type: u64,
    pub rejected_no_records: u64,
    pub rejected_unknown_eid: u64,
    pub rejected_more_specific: u64,
    pub rejected_mixed_sites: u64,
    pub rejected_wrong_algorithm: u64,
    pub rejected_auth_failed: u64,
    pub rejected_replayed_nonce: u64,
    pub rejected_table_full: u64,
    pub rejected_unsolicited_ack: u64,
    pub rejected_bad_map_request: u64,
    pub rejected_subscription: u64,
}

impl Reject {
    /// Why, in words, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed message",
            Reject::UnexpectedType => "message type not taken by a map-server",
            Reject::NoRecords => "no EID record",
            Reject::UnknownEid => "EID-prefix inside no configured site",
            Reject::MoreSpecificRefused => {
                "more specific than its site prefix, which does not accept more-specifics"
            }
            Reject::MixedSites => "records of several sites in one message",
            Reject::WrongAlgorithm => "authentication algorithm is not the site's",
            Reject::AuthFailed => "authentication failed (wrong key?)",
            Reject::ReplayedNonce => "replay of an earlier Map-Register",
            Reject::TableFull => "registration table full",
            Reject::UnsolicitedAck => "Map-Notify-Ack for no pending Map-Notify",
            Reject::BadMapRequest => "not a usable Map-Request",
            Reject::SubscriptionRefused => "subscription refused",
        }
    }
}

impl Counters {
    pub fn reject(&mut self, why: Reject) {
        let c = match why {
            Reject::Malformed => &mut self.rejected_malformed,
            Reject::UnexpectedType => &mut self.rejected_unexpected_type,
            Reject::NoRecords => &mut self.rejected_no_records,
            Reject::UnknownEid => &mut self.rejected_unknown_eid,
            Reject::MoreSpecificRefused => &mut self.rejected_more_specific,
            Reject::MixedSites => &mut self.rejected_mixed_sites,
            Reject::WrongAlgorithm => &mut self.rejected_wrong_algorithm,
            Reject::AuthFailed => &mut self.rejected_auth_failed,
            Reject::ReplayedNonce => &mut self.rejected_replayed_nonce,
            Reject::TableFull => &mut self.rejected_table_full,
            Reject::UnsolicitedAck => &mut self.rejected_unsolicited_ack,
            Reject::BadMapRequest => &mut self.rejected_bad_map_request,
            Reject::SubscriptionRefused => &mut self.rejected_subscription,
        };
        *c += 1;
    }

    /// Sum of every `rejected_*` counter.
    pub fn rejected_total(&self) -> u64 {
        self.iter()
            .filter(|(n, _)| n.starts_with("rejected_"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Every counter as `(name, value)`, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("rx_map_register", self.rx_map_register),
            ("rx_map_notify_ack", self.rx_map_notify_ack),
            ("rx_ecm_map_request", self.rx_ecm_map_request),
            ("rx_other", self.rx_other),
            ("tx_map_notify", self.tx_map_notify),
            ("tx_map_notify_unsolicited", self.tx_map_notify_unsolicited),
            ("tx_map_notify_retransmit", self.tx_map_notify_retransmit),
            ("tx_map_reply_proxy", self.tx_map_reply_proxy),
            ("tx_map_reply_negative", self.tx_map_reply_negative),
            ("tx_ecm_forwarded", self.tx_ecm_forwarded),
            ("registrations_created", self.registrations_created),
            ("registrations_refreshed", self.registrations_refreshed),
            ("registrations_changed", self.registrations_changed),
            ("registrations_withdrawn", self.registrations_withdrawn),
            ("registrations_expired", self.registrations_expired),
            ("registrations_displaced", self.registrations_displaced),
            ("records_host_bits_masked", self.records_host_bits_masked),
            ("records_skipped", self.records_skipped),
            ("locators_skipped", self.locators_skipped),
            ("registrants_forgotten", self.registrants_forgotten),
            ("notify_acked", self.notify_acked),
            ("notify_given_up", self.notify_given_up),
            ("subscriptions_added", self.subscriptions_added),
            ("subscriptions_expired", self.subscriptions_expired),
            ("map_request_no_reply", self.map_request_no_reply),
            ("emit_failed", self.emit_failed),
            ("rejected_malformed", self.rejected_malformed),
            ("rejected_unexpected_type", self.rejected_unexpected_type),
            ("rejected_no_records", self.rejected_no_records),
            ("rejected_unknown_eid", self.rejected_unknown_eid),
            ("rejected_more_specific", self.rejected_more_specific),
            ("rejected_mixed_sites", self.rejected_mixed_sites),
            ("rejected_wrong_algorithm", self.rejected_wrong_algorithm),
            ("rejected_auth_failed", self.rejected_auth_failed),
            ("rejected_replayed_nonce", self.rejected_replayed_nonce),
            ("rejected_table_full", self.rejected_table_full),
            ("rejected_unsolicited_ack", self.rejected_unsolicited_ack),
            ("rejected_bad_map_request", self.rejected_bad_map_request),
            ("rejected_subscription", self.rejected_subscription),
        ]
        .into_iter()
    }
}
