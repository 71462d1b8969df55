//! Time as the sans-IO core sees it: a monotonic millisecond count handed in by the shell.
//!
//! The core never reads a clock; every entry point takes `now: Timestamp`. The shell maps its
//! `tokio::time::Instant` to a `Timestamp` by measuring from a fixed origin, tests simply count.
//! Milliseconds are fine-grained enough for LISP timers (the shortest is the 1 s retransmit).

use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point on a monotonic clock, in milliseconds since an arbitrary origin chosen by the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);
    /// A deadline that never comes (saturates instead of wrapping).
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Timestamp::NEVER`] so a huge TTL cannot wrap into the past.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later (never negative).
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, earlier: Timestamp) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// The earlier of two optional deadlines (`None` = no deadline).
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(5);
        assert_eq!((t + Duration::from_millis(250)).as_millis(), 5250);
        assert_eq!(t - Timestamp::from_secs(7), Duration::ZERO);
        assert_eq!(Timestamp::from_secs(7) - t, Duration::from_secs(2));
        assert_eq!(
            Timestamp(u64::MAX - 1) + Duration::from_secs(1),
            Timestamp::NEVER
        );
        assert_eq!(earliest(Some(t), None), Some(t));
        assert_eq!(
            earliest(Some(t), Some(Timestamp::ZERO)),
            Some(Timestamp::ZERO)
        );
        assert_eq!(earliest(None, None), None);
    }
}
