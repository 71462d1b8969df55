//! Replay protection for Map-Registers that works with the nonces real peers send.
//!
//! # What peers do
//! OOR sends a random nonce in every Map-Register, lispers.net the same constant nonce every
//! time, lisp-agent's xTR an increasing one. A rule on the nonce alone ("greater than the last",
//! RFC 9301's suggestion, or "never seen before") refuses the refreshes of one of them and lets
//! its registrations expire.
//!
//! # The rule: what a replay could change decides, not the nonce
//! * A Map-Register whose content equals the registrant's live registration (same records,
//!   same P bit, from the same source address and port: a **refresh**) only extends expiry. It
//!   is accepted whatever its nonce: a captured refresh replayed can only keep alive what its
//!   owner registered and never withdrew. (The source counts because non-proxied Map-Requests
//!   are forwarded to it: replayed from elsewhere, a refresh is a change.)
//! * A Map-Register that **changes** state (new prefix, other locators, withdrawal, a prefix
//!   taken over from another site) must be fresh:
//!   - its authentication data must not be one already accepted from this registrant (the
//!     last [`HISTORY`] accepted messages; the HMAC covers nonce and content, so a random-nonce
//!     peer never repeats it, and a replay always does);
//!   - and, for a registrant seen to increase its nonce over its first [`INCREASING_AFTER`]
//!     messages, its nonce must be above the highest accepted one (this protects beyond the
//!     history window, without limit). A random-nonce peer passes those 16 messages all
//!     increasing with probability 1/16! ≈ 5·10⁻¹⁴, so it is not mistaken for one; a
//!     classification is never undone, so a replay cannot turn the check off.
//!
//! Only authenticated messages create history, so it is bounded by the registrants that know a
//! site key, and the number of registrants is bounded by the map-server's configuration
//! (`max_registrants`). When that table is full, a registrant that holds no registration and
//! has been silent for [`FORGET_AFTER`] (a day) is forgotten to make room (counted); a replay
//! of its older messages could then register again what it registered back then. With no
//! such registrant, a new one is refused (counted as table full) rather than any history lost.
//!
//! # The honest limit: constant-nonce peers
//! For a peer that always sends the same nonce, a genuine return to byte-identical content (an
//! EID that moved away and came back, with the same locators; a second identical withdrawal)
//! *is* a replay: the bytes are the same. Such a message is accepted only while no live registration holds any of its
//! EID-prefixes (nothing newer to overwrite); while one does it is refused (counted as a
//! replay). The peer keeps sending it as its refresh, so once the newer registration ends
//! (withdrawn, or expired 180 s after its last refresh) the return is accepted at the peer's
//! next Map-Register: a genuine return is delayed by at most a registration lifetime plus a
//! refresh interval (when the newer registration was the peer's own, the EID is unregistered
//! for up to that last interval), and a replay can never move an EID back while a newer
//! registration holds it. When the newer registration belongs to another xTR that keeps
//! refreshing it (it still believes it has the host), the return waits until that xTR stops. The same holds when such a peer's source address or port changes
//! (a restart on another port, say): its refreshes are refused until its old registration has
//! expired, then accepted. A replay can re-create a mapping that nobody holds any more (and
//! keep it alive by replaying it), which is what any constant-nonce peer exposes.
//!
//! Another limit: a peer classified as increasing that restarts its counter below the last
//! value has its refreshes accepted but its changes refused until it passes that value
//! (lisp-agent's xTR starts from a clock-derived base so that restarts keep increasing).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::core::time::Timestamp;

/// Accepted authentication data remembered per registrant: about 17 h of refreshes at one a
/// minute for a random-nonce peer.
pub const HISTORY: usize = 1024;

/// Messages, all with increasing nonces, after which a registrant counts as increasing.
pub const INCREASING_AFTER: u32 = 16;

/// The first 16 bytes of the authentication data (the whole of HMAC-SHA-1-96 and
/// HMAC-SHA-256-128, zero-padded): enough to tell two messages apart.
pub type Digest = [u8; 16];

pub fn digest(auth_data: &[u8]) -> Digest {
    let mut d = [0u8; 16];
    let n = auth_data.len().min(16);
    d[..n].copy_from_slice(&auth_data[..n]);
    d
}

/// When the registrant table is full, one that has held no registration and sent nothing for
/// this long may be forgotten to make room (see [`PeerHistory::forgettable`]).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What we know of one registrant's Map-Registers.
#[derive(Clone, Debug, Default)]
pub struct PeerHistory {
    /// Registrations (prefixes) it holds now.
    pub held: u32,
    pub last_heard: Timestamp,
    accepted: u32,
    first_nonce: u64,
    max_nonce: u64,
    /// Every accepted nonce so far was above all earlier ones (only followed while learning).
    rising: bool,
    /// Every accepted nonce so far equals the first one.
    constant: bool,
    increasing: bool,
    recent: VecDeque<Digest>,
    seen: HashSet<Digest>,
}

/// Why a state-changing Map-Register is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Nonce not above the highest accepted one, from a registrant known to increase it.
    OldNonce,
    /// Authentication data already accepted from this registrant.
    SeenBefore,
}

impl PeerHistory {
    /// May a Map-Register with `nonce` and `digest` change state? `contested`: some live
    /// registration holds one of its EID-prefixes (see the module doc on constant nonces).
    pub fn check_change(&self, nonce: u64, digest: &Digest, contested: bool) -> Result<(), Stale> {
        if self.increasing && nonce <= self.max_nonce {
            return Err(Stale::OldNonce);
        }
        if self.seen.contains(digest) && (contested || !self.is_constant()) {
            return Err(Stale::SeenBefore);
        }
        Ok(())
    }

    /// Record an accepted Map-Register (refresh or change).
    pub fn commit(&mut self, nonce: u64, digest: Digest, now: Timestamp) {
        self.last_heard = now;
        if self.accepted == 0 {
            self.first_nonce = nonce;
            self.max_nonce = nonce;
            self.rising = true;
            self.constant = true;
        } else {
            if !self.increasing {
                self.rising &= nonce > self.max_nonce;
            }
            self.constant &= nonce == self.first_nonce;
            self.max_nonce = self.max_nonce.max(nonce);
        }
        self.accepted = self.accepted.saturating_add(1);
        if !self.increasing && self.rising && self.accepted >= INCREASING_AFTER {
            self.increasing = true;
        }
        if self.seen.insert(digest) {
            self.recent.push_back(digest);
            if self.recent.len() > HISTORY
                && let Some(old) = self.recent.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }

    /// May this history be dropped to make room? Only a registrant that holds nothing and has
    /// been silent for [`FORGET_AFTER`]: a replay of its messages could otherwise register again
    /// what it registered before (the price of bounded memory, paid only when full).
    pub fn forgettable(&self, now: Timestamp) -> bool {
        self.held == 0 && now.saturating_duration_since(self.last_heard) >= FORGET_AFTER
    }

    /// Classified as increasing its nonces (never undone).
    pub fn is_increasing(&self) -> bool {
        self.increasing
    }

    /// At least two messages, all with the same nonce.
    pub fn is_constant(&self) -> bool {
        self.accepted >= 2 && self.constant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u64) -> Digest {
        digest(&i.to_be_bytes())
    }

    #[test]
    fn increasing_needs_sixteen_rising_nonces_and_stays() {
        let mut p = PeerHistory::default();
        for n in 1..INCREASING_AFTER as u64 {
            p.commit(n, d(n), Timestamp::ZERO);
            assert!(!p.is_increasing());
        }
        p.commit(100, d(100), Timestamp::ZERO);
        assert!(p.is_increasing());
        assert_eq!(p.check_change(100, &d(999), true), Err(Stale::OldNonce));
        assert_eq!(p.check_change(101, &d(999), true), Ok(()));
        // A replayed refresh (lower nonce) is recorded but does not undo the classification.
        p.commit(3, d(3), Timestamp::ZERO);
        assert!(p.is_increasing());
        // One fall while learning and the peer is never classified.
        let mut q = PeerHistory::default();
        for n in [5u64, 6, 4] {
            q.commit(n, d(n), Timestamp::ZERO);
        }
        for n in 10..40 {
            q.commit(n, d(n), Timestamp::ZERO);
        }
        assert!(!q.is_increasing());
        assert_eq!(q.check_change(1, &d(1), true), Ok(()));
    }

    #[test]
    fn seen_digest_is_stale_except_uncontested_for_a_constant_peer() {
        let mut p = PeerHistory::default();
        p.commit(7, d(1), Timestamp::ZERO);
        assert_eq!(p.check_change(9, &d(1), false), Err(Stale::SeenBefore));
        p.commit(7, d(1), Timestamp::ZERO);
        assert!(p.is_constant());
        assert_eq!(p.check_change(7, &d(1), true), Err(Stale::SeenBefore));
        assert_eq!(p.check_change(7, &d(1), false), Ok(()));
        p.commit(8, d(2), Timestamp::ZERO);
        assert!(!p.is_constant());
        assert_eq!(p.check_change(7, &d(1), false), Err(Stale::SeenBefore));
    }

    #[test]
    fn history_is_bounded() {
        let mut p = PeerHistory::default();
        for i in 0..(HISTORY as u64 + 10) {
            // Falling nonces: never classified increasing, only the history decides.
            p.commit(u64::MAX - i, d(i), Timestamp::ZERO);
        }
        assert_eq!(p.recent.len(), HISTORY);
        assert_eq!(p.seen.len(), HISTORY);
        assert_eq!(p.check_change(1, &d(5), true), Ok(()));
        assert_eq!(
            p.check_change(1, &d(HISTORY as u64), true),
            Err(Stale::SeenBefore)
        );
    }
}
