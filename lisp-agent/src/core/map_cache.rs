//! Map-cache entries as the XDP program reads them, built from EID prefixes and locator sets.
//!
//! Pure: the static config and (later) Map-Replies both go through here, so the data plane sees
//! one encoding. The locator choice of RFC 9300 §5 (best priority among usable locators, then
//! weight-proportional among equals) is decided here once per entry and written into
//! [`MapCacheEntry::select`]; the XDP program only indexes it with its flow hash.

use std::net::IpAddr;

use lisp_common::maps::{
    AF_IPV4, AF_IPV6, EID_KEY_PREFIX_BITS, EidKey, MAX_RLOCS, MapCacheEntry, Rloc, SELECT_SLOTS,
    action, entry_flags,
};

/// RFC 9301 §5.4: a locator with priority 255 must not be used for unicast forwarding.
pub const PRIORITY_UNUSABLE: u8 = 255;

/// One locator of a set, as received (config or Map-Reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locator {
    pub addr: IpAddr,
    pub priority: u8,
    pub weight: u8,
}

/// What a negative entry does (RFC 9301 §5.4 actions that the data plane implements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negative {
    Drop,
    NativelyForward,
    SendMapRequest,
}

impl Negative {
    pub fn action(self) -> u8 {
        match self {
            Negative::Drop => action::DROP,
            Negative::NativelyForward => action::NATIVELY_FORWARD,
            Negative::SendMapRequest => action::SEND_MAP_REQUEST,
        }
    }
}

/// Which BPF map an entry belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// /32 or /128: exact-match hash map (`MAP_CACHE_HOST`).
    Host,
    /// Shorter: LPM trie (`MAP_CACHE_PREFIX`) with this key prefix length.
    Prefix { lpm_len: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapCacheError {
    #[error("{0} locators, the data plane holds at most {MAX_RLOCS}")]
    TooManyLocators(usize),
    #[error("no locators: a positive entry needs at least one")]
    NoLocators,
    #[error("prefix length {len} exceeds the {width}-bit address")]
    BadPrefixLength { len: u8, width: u8 },
    #[error("instance-id {0} does not fit 24 bits")]
    BadInstanceId(u32),
}

/// Family and 16 address bytes as the maps store them (IPv4 in the first 4, the rest zero).
pub(crate) fn addr_bytes(a: &IpAddr) -> (u8, [u8; 16]) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => {
            b[..4].copy_from_slice(&v.octets());
            (AF_IPV4, b)
        }
        IpAddr::V6(v) => (AF_IPV6, v.octets()),
    }
}

/// The key of an EID (prefix `addr/len` in `instance_id`) and where it goes. Host bits of
/// `addr` are cleared so the LPM key and the hash key are canonical.
pub fn eid_key(
    instance_id: u32,
    addr: IpAddr,
    len: u8,
) -> Result<(EidKey, Placement), MapCacheError> {
    if instance_id > 0x00ff_ffff {
        return Err(MapCacheError::BadInstanceId(instance_id));
    }
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    if len > width {
        return Err(MapCacheError::BadPrefixLength { len, width });
    }
    let (family, mut bytes) = addr_bytes(&addr);
    // Clear host bits byte by byte.
    for (i, b) in bytes.iter_mut().enumerate() {
        let bit = (i as u32) * 8;
        let len = u32::from(len);
        if bit >= len {
            *b = 0;
        } else if len - bit < 8 {
            *b &= 0xffu8 << (8 - (len - bit));
        }
    }
    let key = EidKey::new(family, instance_id, bytes);
    let placement = if len == width {
        Placement::Host
    } else {
        Placement::Prefix {
            lpm_len: EID_KEY_PREFIX_BITS + u32::from(len),
        }
    };
    Ok((key, placement))
}

/// A negative entry.
pub fn negative_entry(n: Negative) -> MapCacheEntry {
    MapCacheEntry {
        action: n.action(),
        ..MapCacheEntry::default()
    }
}

/// A positive entry: the locators in their given order and the select table. With no usable
/// locator (all priority 255) the entry drops, which is what RFC 9301 asks of an ITR that has
/// no RLOC it may use.
pub fn positive_entry(
    locators: &[Locator],
    instance_id: u32,
) -> Result<MapCacheEntry, MapCacheError> {
    if locators.is_empty() {
        return Err(MapCacheError::NoLocators);
    }
    if locators.len() > MAX_RLOCS {
        return Err(MapCacheError::TooManyLocators(locators.len()));
    }
    let mut e = MapCacheEntry {
        action: action::ENCAPSULATE,
        // The I bit is only worth its word when the instance is not the default one.
        flags: if instance_id != 0 {
            entry_flags::INSTANCE_ID
        } else {
            0
        },
        rloc_count: locators.len() as u8,
        ..MapCacheEntry::default()
    };
    for (slot, l) in e.rlocs.iter_mut().zip(locators) {
        let (family, addr) = addr_bytes(&l.addr);
        *slot = Rloc {
            addr,
            family,
            priority: l.priority,
            weight: l.weight,
            flags: 0,
        };
    }
    match select_table(locators) {
        Some(t) => e.select = t,
        None => e.action = action::DROP,
    }
    Ok(e)
}

/// Slots per locator (index-aligned with `locators`) summing to [`SELECT_SLOTS`], or `None` when
/// no locator is usable.
///
/// Only locators of the best (lowest) usable priority get slots. Among them, slots are
/// proportional to weight by largest remainder (each share within one slot of its exact quota);
/// a positive-weight locator whose quota rounds to zero then takes one slot from the locator
/// with most slots so that every positive weight is actually used. Weight 0 next to positive
/// weights gets nothing; all weights 0 share equally.
pub fn slot_counts(locators: &[Locator]) -> Option<Vec<usize>> {
    let best = locators
        .iter()
        .map(|l| l.priority)
        .filter(|&p| p != PRIORITY_UNUSABLE)
        .min()?;
    let members: Vec<usize> = (0..locators.len())
        .filter(|&i| locators[i].priority == best)
        .collect();
    let all_zero = members.iter().all(|&i| locators[i].weight == 0);
    let weight = |i: usize| -> u64 {
        if all_zero {
            1
        } else {
            u64::from(locators[i].weight)
        }
    };
    let total: u64 = members.iter().map(|&i| weight(i)).sum();
    let slots = SELECT_SLOTS as u64;

    let mut counts = vec![0usize; locators.len()];
    // Floors, then the remaining slots by largest remainder (ties: earlier locator first).
    let mut given = 0u64;
    let mut rema: Vec<(u64, usize)> = Vec::with_capacity(members.len());
    for &i in &members {
        let exact = weight(i) * slots;
        counts[i] = (exact / total) as usize;
        given += exact / total;
        rema.push((exact % total, i));
    }
    rema.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rema.iter().take((slots - given) as usize) {
        counts[i] += 1;
    }
    // Every positive weight gets at least one slot (possible: MAX_RLOCS <= SELECT_SLOTS).
    for &i in &members {
        if weight(i) > 0 && counts[i] == 0 {
            // Donor: most slots; among equals the smallest weight, so a heavier locator never
            // ends with fewer slots than a lighter one.
            let donor = members
                .iter()
                .copied()
                .filter(|&j| counts[j] > 1)
                .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(weight(b).cmp(&weight(a))))?;
            counts[donor] -= 1;
            counts[i] = 1;
        }
    }
    Some(counts)
}

/// The select table: slot → locator index, each locator's slots spread out (round robin over
/// the locators with slots left) rather than in one run, so a hash that is poor in its low bits
/// still spreads across locators.
pub fn select_table(locators: &[Locator]) -> Option<[u8; SELECT_SLOTS]> {
    let mut counts = slot_counts(locators)?;
    let mut t = [0u8; SELECT_SLOTS];
    let mut k = 0;
    while k < SELECT_SLOTS {
        for (i, c) in counts.iter_mut().enumerate() {
            if *c > 0 && k < SELECT_SLOTS {
                t[k] = i as u8;
                *c -= 1;
                k += 1;
            }
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(last: u8, priority: u8, weight: u8) -> Locator {
        Locator {
            addr: IpAddr::from([192, 0, 2, last]),
            priority,
            weight,
        }
    }

    fn histogram(t: &[u8; SELECT_SLOTS], n: usize) -> Vec<usize> {
        let mut h = vec![0; n];
        for &i in t {
            h[i as usize] += 1;
        }
        h
    }

    #[test]
    fn host_and_prefix_keys() {
        let (k, p) = eid_key(0, "203.0.113.10".parse().unwrap(), 32).unwrap();
        assert_eq!(p, Placement::Host);
        assert_eq!(k.family(), AF_IPV4);
        assert_eq!(&k.addr[..4], &[203, 0, 113, 10]);
        assert!(k.addr[4..].iter().all(|&b| b == 0));

        let (k, p) = eid_key(7, "2001:db8:2::".parse().unwrap(), 48).unwrap();
        assert_eq!(
            p,
            Placement::Prefix {
                lpm_len: EID_KEY_PREFIX_BITS + 48
            }
        );
        assert_eq!(k.instance_id(), 7);
        assert_eq!(k.family(), AF_IPV6);

        let (_, p) = eid_key(0, "2001:db8::1".parse().unwrap(), 128).unwrap();
        assert_eq!(p, Placement::Host);
    }

    #[test]
    fn keys_are_canonical() {
        let (k, _) = eid_key(0, "203.0.113.129".parse().unwrap(), 25).unwrap();
        assert_eq!(&k.addr[..4], &[203, 0, 113, 128]);
        let (k, _) = eid_key(0, "255.255.255.255".parse().unwrap(), 0).unwrap();
        assert_eq!(k.addr, [0; 16]);
        let (k, _) = eid_key(0, "2001:db8:ffff::".parse().unwrap(), 36).unwrap();
        assert_eq!(&k.addr[..6], &[0x20, 0x01, 0x0d, 0xb8, 0xf0, 0]);
    }

    #[test]
    fn bad_keys_are_errors() {
        assert_eq!(
            eid_key(0, "203.0.113.1".parse().unwrap(), 33),
            Err(MapCacheError::BadPrefixLength { len: 33, width: 32 })
        );
        assert_eq!(
            eid_key(1 << 24, "203.0.113.1".parse().unwrap(), 32),
            Err(MapCacheError::BadInstanceId(1 << 24))
        );
    }

    #[test]
    fn best_priority_only() {
        let l = [loc(1, 2, 100), loc(2, 1, 50), loc(3, 1, 50)];
        let c = slot_counts(&l).unwrap();
        assert_eq!(c, vec![0, 16, 16]);
    }

    #[test]
    fn priority_255_is_unusable() {
        let l = [loc(1, 255, 100), loc(2, 7, 1)];
        assert_eq!(slot_counts(&l).unwrap(), vec![0, 32]);
        let e = positive_entry(&[loc(1, 255, 100)], 0).unwrap();
        assert_eq!(e.action, action::DROP);
        assert_eq!(e.rloc_count, 1);
    }

    #[test]
    fn all_zero_weights_share_equally() {
        let l = [loc(1, 1, 0), loc(2, 1, 0), loc(3, 1, 0), loc(4, 1, 0)];
        assert_eq!(slot_counts(&l).unwrap(), vec![8, 8, 8, 8]);
    }

    #[test]
    fn zero_weight_next_to_positive_gets_nothing() {
        let l = [loc(1, 1, 0), loc(2, 1, 10)];
        assert_eq!(slot_counts(&l).unwrap(), vec![0, 32]);
    }

    #[test]
    fn tiny_weight_still_gets_a_slot() {
        let l = [loc(1, 1, 255), loc(2, 1, 1)];
        assert_eq!(slot_counts(&l).unwrap(), vec![31, 1]);
    }

    #[test]
    fn example_entry_encodes() {
        let l = [
            loc(33, 1, 50),
            loc(34, 1, 50),
            Locator {
                addr: "2001:db8:ff:12::1".parse().unwrap(),
                priority: 2,
                weight: 100,
            },
        ];
        let e = positive_entry(&l, 0).unwrap();
        assert_eq!(e.action, action::ENCAPSULATE);
        assert_eq!(e.flags, 0);
        assert_eq!(e.rloc_count, 3);
        assert_eq!(e.rlocs[2].family, AF_IPV6);
        assert_eq!(e.rlocs[0].family, AF_IPV4);
        assert_eq!(&e.rlocs[1].addr[..4], &[192, 0, 2, 34]);
        assert_eq!(e.rlocs[1].priority, 1);
        assert_eq!(e.rlocs[1].weight, 50);
        assert_eq!(histogram(&e.select, 3), vec![16, 16, 0]);
        // Interleaved, not one run per locator.
        assert_ne!(e.select[0], e.select[1]);
        assert_eq!(
            positive_entry(&l, 5).unwrap().flags,
            entry_flags::INSTANCE_ID
        );
    }

    #[test]
    fn entry_errors() {
        assert_eq!(positive_entry(&[], 0), Err(MapCacheError::NoLocators));
        let many = [loc(1, 1, 1); MAX_RLOCS + 1];
        assert_eq!(
            positive_entry(&many, 0),
            Err(MapCacheError::TooManyLocators(MAX_RLOCS + 1))
        );
        let n = negative_entry(Negative::NativelyForward);
        assert_eq!(n.action, action::NATIVELY_FORWARD);
        assert_eq!(n.rloc_count, 0);
    }

    fn arb_locators() -> impl Strategy<Value = Vec<Locator>> {
        prop::collection::vec((0u8..=3, any::<u8>()), 1..=MAX_RLOCS).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (p, w))| Locator {
                    addr: IpAddr::from([192, 0, 2, i as u8 + 1]),
                    // Map 3 to "unusable" so that sets with unusable locators occur often.
                    priority: if p == 3 { PRIORITY_UNUSABLE } else { p },
                    weight: w,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn slots_follow_weights(locs in arb_locators()) {
            let Some(counts) = slot_counts(&locs) else {
                prop_assert!(locs.iter().all(|l| l.priority == PRIORITY_UNUSABLE));
                return Ok(());
            };
            prop_assert_eq!(counts.iter().sum::<usize>(), SELECT_SLOTS);
            let best = locs.iter().map(|l| l.priority).filter(|&p| p != PRIORITY_UNUSABLE).min().unwrap();
            let members: Vec<usize> = (0..locs.len()).filter(|&i| locs[i].priority == best).collect();
            let all_zero = members.iter().all(|&i| locs[i].weight == 0);
            let w = |i: usize| if all_zero { 1.0 } else { f64::from(locs[i].weight) };
            let total: f64 = members.iter().map(|&i| w(i)).sum();
            let boosted = members.iter().filter(|&&i| w(i) > 0.0 && w(i) * SELECT_SLOTS as f64 / total < 1.0).count();
            for (i, &c) in counts.iter().enumerate() {
                if !members.contains(&i) {
                    prop_assert_eq!(c, 0, "non-best locator {} got slots", i);
                    continue;
                }
                if w(i) == 0.0 {
                    prop_assert_eq!(c, 0);
                    continue;
                }
                prop_assert!(c >= 1, "positive weight without a slot");
                let quota = w(i) * SELECT_SLOTS as f64 / total;
                // Largest remainder is within one slot of the quota; each boost of a tiny
                // locator can take one more slot from a big one.
                prop_assert!((c as f64 - quota).abs() < 1.0 + boosted as f64,
                    "locator {} has {} slots for quota {:.2}", i, c, quota);
            }
            // Heavier never gets fewer slots than lighter.
            for &a in &members {
                for &b in &members {
                    if w(a) > w(b) {
                        prop_assert!(counts[a] >= counts[b]);
                    }
                }
            }
        }

        #[test]
        fn select_table_matches_counts(locs in arb_locators()) {
            match (select_table(&locs), slot_counts(&locs)) {
                (Some(t), Some(c)) => prop_assert_eq!(histogram(&t, locs.len()), c),
                (None, None) => {}
                _ => prop_assert!(false, "table and counts disagree"),
            }
        }
    }
}
