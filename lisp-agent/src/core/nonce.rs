//! The nonce source of the xTR and the map-server: a cryptographic generator, injected and
//! seeded so that tests are repeatable.
//!
//! A Map-Request nonce is the only thing that ties a Map-Reply to our request (RFC 9301 §5.2),
//! so whoever can predict our next nonce can answer for any EID before the real map-resolver
//! does. A plain mixing generator (SplitMix64, what this used before) gives its whole state away
//! in one output: the finalizer is a bijection that can be inverted, and the state then only
//! counts up. ChaCha20 (RFC 8439 block function, as a stream generator) does not: recovering its
//! key from outputs is breaking ChaCha20. The core draws no entropy itself: the shell seeds the
//! generator with 32 bytes from the OS (`getrandom`), tests with a constant.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// The 256-bit key of a [`NonceSource`]. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NonceSeed(pub [u8; 32]);

/// A small number as a seed, for tests and benchmarks that must repeat: the number in the first
/// eight bytes (little-endian), the rest zero. Not for production, where the shell passes 32
/// random bytes.
impl From<u64> for NonceSeed {
    fn from(n: u64) -> Self {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&n.to_le_bytes());
        NonceSeed(k)
    }
}

impl Default for NonceSeed {
    fn default() -> Self {
        NonceSeed::from(0)
    }
}

// The seed predicts every nonce: it stays out of logs and `Debug` dumps of configs.
impl std::fmt::Debug for NonceSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceSeed(<redacted>)")
    }
}

/// A deterministic cryptographic 64-bit generator (ChaCha20).
#[derive(Clone, Debug)]
pub struct NonceSource {
    rng: ChaCha20Rng,
}

impl NonceSource {
    pub fn new(seed: impl Into<NonceSeed>) -> Self {
        NonceSource {
            rng: ChaCha20Rng::from_seed(seed.into().0),
        }
    }

    /// The next nonce; never 0 (0 reads as "no nonce" to some peers and to our own tables).
    pub fn next_nonce(&mut self) -> u64 {
        loop {
            let z = self.rng.next_u64();
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
            let mut n = NonceSource::new(NonceSeed([8; 32]));
            (0..100).map(|_| n.next_nonce()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "no repeats");
        assert!(a.iter().all(|&n| n != 0));
        assert!(!format!("{:?}", NonceSeed([8; 32])).contains('8'));
    }

    /// Inverse of `x * m` modulo 2^64 for odd `m` (Newton's iteration doubles the correct bits).
    fn mul_inverse(m: u64) -> u64 {
        let mut x = m;
        for _ in 0..6 {
            x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
        }
        x
    }

    /// Inverse of `z ^= z >> s`.
    fn unxorshift(z: u64, s: u32) -> u64 {
        let mut x = z;
        for _ in 0..(64 / s) {
            x = z ^ (x >> s);
        }
        x
    }

    /// The attack on the old generator: one observed SplitMix64 output gives its state, and so
    /// the next output.
    fn splitmix_predict_next(observed: u64) -> u64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        const M1: u64 = 0xbf58_476d_1ce4_e5b9;
        const M2: u64 = 0x94d0_49bb_1331_11eb;
        let mut z = unxorshift(observed, 31);
        z = z.wrapping_mul(mul_inverse(M2));
        z = unxorshift(z, 27);
        z = z.wrapping_mul(mul_inverse(M1));
        let state = unxorshift(z, 30);
        let mut z = state.wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(M1);
        z = (z ^ (z >> 27)).wrapping_mul(M2);
        z ^ (z >> 31)
    }

    #[test]
    fn observed_nonces_do_not_predict_the_next_one() {
        // The attack works against SplitMix64 itself (so this test can tell the difference)...
        let mut state = 12345u64;
        let mut splitmix = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (a, b) = (splitmix(), splitmix());
        assert_eq!(splitmix_predict_next(a), b);
        // ...and fails against every pair of consecutive nonces we hand out, nor does the next
        // nonce follow from the previous one by any fixed difference or xor.
        let mut n = NonceSource::new(12345);
        let out: Vec<u64> = (0..1000).map(|_| n.next_nonce()).collect();
        for w in out.windows(2) {
            assert_ne!(splitmix_predict_next(w[0]), w[1]);
        }
        let diffs: std::collections::HashSet<u64> =
            out.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert_eq!(diffs.len(), out.len() - 1);
        let xors: std::collections::HashSet<u64> = out.windows(2).map(|w| w[1] ^ w[0]).collect();
        assert_eq!(xors.len(), out.len() - 1);
    }
}
