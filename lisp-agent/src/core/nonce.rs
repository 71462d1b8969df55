//! The nonce source of the xTR and the map-server: injected and seeded so that tests are
//! repeatable.
//!
//! Map-Request nonces only need to be unpredictable to an off-path attacker (RFC 9301 §5.2 asks
//! for a random 64-bit value); the shell seeds this generator from the OS (`getrandom` through
//! std's `RandomState`), tests with a constant. SplitMix64 is enough: it is not a cryptographic
//! generator, but its outputs do not reveal each other to someone who sees a handful of them
//! without the seed's position, and it never repeats within 2^64 draws.

/// A deterministic 64-bit generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct NonceSource {
    state: u64,
}

impl NonceSource {
    pub fn new(seed: u64) -> Self {
        NonceSource { state: seed }
    }

    /// The next nonce; never 0 (0 reads as "no nonce" to some peers and to our own tables).
    pub fn next_nonce(&mut self) -> u64 {
        loop {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_repeat_and_differ() {
        let a: Vec<u64> = {
            let mut n = NonceSource::new(7);
            (0..100).map(|_| n.next_nonce()).collect()
        };
        let b: Vec<u64> = {
            let mut n = NonceSource::new(7);
            (0..100).map(|_| n.next_nonce()).collect()
        };
        let c: Vec<u64> = {
            let mut n = NonceSource::new(8);
            (0..100).map(|_| n.next_nonce()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "no repeats");
        assert!(a.iter().all(|&n| n != 0));
    }
}
