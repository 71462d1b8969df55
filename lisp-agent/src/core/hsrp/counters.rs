//! Counters of one HSRP group: messages sent and received, every refused message by reason,
//! state changes. Plain integers (the core is single-threaded); the shell copies them to
//! `/metrics`.

/// Why a received message was refused. None of them changes any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Does not parse as HSRP (truncated, unknown op code / state, bad TLV...).
    Malformed,
    /// Authentication differs from ours (or is missing, or MD5, which is not supported).
    Auth,
    /// For another group number.
    OtherGroup,
    /// Another version, or the other address family (v2 over IPv4 vs IPv6).
    OtherVersion,
    /// A coup from a router that does not outrank us: the RFC lets only a higher one take over.
    LowerCoup,
    /// Our own hello looped back to us.
    Looped,
    /// Hold time 0, or a hello time not shorter than the hold time: believing it would make
    /// the sender expire at once or flap.
    BadTimers,
    /// Received while the interface is down (state initial).
    Down,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::Auth,
        Refusal::OtherGroup,
        Refusal::OtherVersion,
        Refusal::LowerCoup,
        Refusal::Looped,
        Refusal::BadTimers,
        Refusal::Down,
    ];

    /// Label value for metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Auth => "auth",
            Refusal::OtherGroup => "other_group",
            Refusal::OtherVersion => "other_version",
            Refusal::LowerCoup => "lower_coup",
            Refusal::Looped => "looped",
            Refusal::BadTimers => "bad_timers",
            Refusal::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub hellos_sent: u64,
    pub coups_sent: u64,
    pub resigns_sent: u64,
    /// Accepted (authenticated, our group and version).
    pub hellos_received: u64,
    pub coups_received: u64,
    pub resigns_received: u64,
    /// v1 op code 3 interface-state advertisements: not part of the election, ignored.
    pub advertisements_received: u64,
    refused: [u64; Refusal::ALL.len()],
    /// Accepted hellos whose virtual IP differs from the configured one (a misconfiguration
    /// somewhere: Cisco logs it too). The hello is still used for the election.
    pub vip_mismatch: u64,
    pub state_changes: u64,
    /// How often this router became active.
    pub became_active: u64,
}

impl Counters {
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize]
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    pub(super) fn refuse(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }
}
