//! The prefix lengths present in a prefix table, per family: a longest-prefix match over a hash
//! or ordered map then probes only the lengths that exist (a handful) instead of all 33 / 129.
//! Used by the xTR's learnt map-cache and by the map-server's sites and registrations.

#[derive(Clone, Debug)]
pub struct LengthSet {
    v4: [u32; 33],
    v6: [u32; 129],
}

impl Default for LengthSet {
    fn default() -> Self {
        LengthSet {
            v4: [0; 33],
            v6: [0; 129],
        }
    }
}

impl LengthSet {
    /// One more prefix of `len` bits in the family of `v4` (IPv4 if true).
    pub fn add(&mut self, v4: bool, len: u8) {
        if let Some(c) = self.slot(v4, len) {
            *c += 1;
        }
    }

    /// One prefix of `len` bits fewer (nothing if there is none).
    pub fn remove(&mut self, v4: bool, len: u8) {
        if let Some(c) = self.slot(v4, len) {
            *c = c.saturating_sub(1);
        }
    }

    fn slot(&mut self, v4: bool, len: u8) -> Option<&mut u32> {
        let l = usize::from(len);
        if v4 {
            self.v4.get_mut(l)
        } else {
            self.v6.get_mut(l)
        }
    }

    /// Lengths ≤ `max` present for the family of `v4`, longest first.
    pub fn descending(&self, v4: bool, max: u8) -> impl Iterator<Item = u8> + '_ {
        let counts: &[u32] = if v4 { &self.v4 } else { &self.v6 };
        let top = usize::from(max).min(counts.len() - 1);
        (0..=top)
            .rev()
            .filter(move |&l| counts[l] > 0)
            .map(|l| l as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_per_family_and_listed_longest_first() {
        let mut s = LengthSet::default();
        s.add(true, 24);
        s.add(true, 24);
        s.add(true, 32);
        s.add(false, 48);
        // Out of range for the family: ignored rather than a panic.
        s.add(true, 33);
        assert_eq!(s.descending(true, 128).collect::<Vec<_>>(), vec![32, 24]);
        assert_eq!(s.descending(true, 31).collect::<Vec<_>>(), vec![24]);
        assert_eq!(s.descending(false, 128).collect::<Vec<_>>(), vec![48]);
        s.remove(true, 24);
        assert_eq!(s.descending(true, 32).collect::<Vec<_>>(), vec![32, 24]);
        s.remove(true, 24);
        s.remove(true, 24);
        s.remove(true, 32);
        assert_eq!(s.descending(true, 32).count(), 0);
    }
}
