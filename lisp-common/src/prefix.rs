//! The one prefix type of the workspace (no_std, no alloc).
//!
//! * [`IpPrefix`]: an IPv4/IPv6 prefix whose mask length fits the family. [`IpPrefix::new`]
//!   refuses host bits below the mask, [`IpPrefix::new_masked`] clears them,
//!   [`IpPrefix::new_unmasked`] keeps them. Keeping them matters twice: the wire codec must
//!   re-encode what a peer sent byte for byte (tcpdump's `lisp_ipv6.pcap` registers
//!   `2001:db8:85a3::8a2e:370:7334/80`), and config validation must point at a prefix written
//!   with host bits instead of silently masking them. **Key tables by [`IpPrefix::network`]**,
//!   not by the prefix as received or written.
//! * [`EidPrefix`]: an instance-id and an address/length: the key of map-cache entries,
//!   registrations and rate limits in the agent's core.
//!
//! The wire codec (`wire::control::IpPrefix`), the config (`eid-prefix:` fields) and the core
//! (`core::action::EidPrefix`) all re-export these, so a prefix has one meaning everywhere.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// A mask length longer than the address (or host bits set, for [`IpPrefix::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPrefix;

impl fmt::Display for BadPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid prefix (mask length or host bits)")
    }
}

impl core::error::Error for BadPrefix {}

/// An IPv4 or IPv6 prefix: mask length at most 32 / 128. Host bits are zero unless it was
/// built by [`IpPrefix::new_unmasked`] (parsing); [`IpPrefix::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// 32 for IPv4, 128 for IPv6.
pub const fn max_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit after the first `len` cleared (`len` at most the address width).
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl IpPrefix {
    /// A prefix; [`BadPrefix`] if `len` is too long or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, BadPrefix> {
        if len > max_len(&addr) || mask(addr, len) != addr {
            return Err(BadPrefix);
        }
        Ok(IpPrefix { addr, len })
    }

    /// A prefix with the host bits of `addr` cleared; [`BadPrefix`] if `len` is too long.
    pub fn new_masked(addr: IpAddr, len: u8) -> Result<Self, BadPrefix> {
        if len > max_len(&addr) {
            return Err(BadPrefix);
        }
        Ok(IpPrefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// A prefix exactly as received or written: host bits kept; [`BadPrefix`] if `len` is too
    /// long.
    pub fn new_unmasked(addr: IpAddr, len: u8) -> Result<Self, BadPrefix> {
        if len > max_len(&addr) {
            return Err(BadPrefix);
        }
        Ok(IpPrefix { addr, len })
    }

    /// The same prefix with host bits cleared (what to key tables by).
    pub fn network(&self) -> Self {
        IpPrefix {
            addr: mask(self.addr, self.len),
            len: self.len,
        }
    }

    /// Are bits set below the mask (only possible after [`IpPrefix::new_unmasked`])?
    pub fn has_host_bits(&self) -> bool {
        mask(self.addr, self.len) != self.addr
    }

    /// The host prefix (/32 or /128) of an address.
    pub fn host(addr: IpAddr) -> Self {
        IpPrefix {
            addr,
            len: max_len(&addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The mask length (a prefix length, not a collection size: no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Same as [`IpPrefix::len`], under the name the config code uses.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for /0 (named so, not `is_empty`, because /0 covers everything).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// /32 for IPv4, /128 for IPv6.
    pub fn is_host(&self) -> bool {
        self.len == max_len(&self.addr)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// 32 or 128.
    pub fn max_len(&self) -> u8 {
        max_len(&self.addr)
    }

    /// Is `addr` inside this prefix (same family)?
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == mask(self.addr, self.len)
    }

    /// Is `other` inside (or equal to) this prefix?
    pub fn covers(&self, other: &IpPrefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why `address/length` text is not a prefix. The config turns these into messages that quote
/// the text (this crate has no allocator to hold it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsePrefixError {
    /// No `/`.
    NoSlash,
    /// The part before `/` is not an IP address.
    BadAddress,
    /// The part after `/` is not a number 0..=255.
    BadLength,
    /// The length exceeds the address width (`max` bits).
    TooLong { len: u8, max: u8 },
}

impl fmt::Display for ParsePrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsePrefixError::NoSlash => write!(f, "not a prefix (expected address/length)"),
            ParsePrefixError::BadAddress => write!(f, "not an IP address"),
            ParsePrefixError::BadLength => write!(f, "not a prefix length"),
            ParsePrefixError::TooLong { len, max } => {
                write!(f, "prefix length {len} exceeds {max} bits")
            }
        }
    }
}

impl core::error::Error for ParsePrefixError {}

/// `198.51.100.0/24`; host bits are kept (see the module doc).
impl FromStr for IpPrefix {
    type Err = ParsePrefixError;
    fn from_str(s: &str) -> Result<Self, ParsePrefixError> {
        let (a, l) = s.split_once('/').ok_or(ParsePrefixError::NoSlash)?;
        let addr: IpAddr = a.parse().map_err(|_| ParsePrefixError::BadAddress)?;
        let len: u8 = l.parse().map_err(|_| ParsePrefixError::BadLength)?;
        IpPrefix::new_unmasked(addr, len).map_err(|_| ParsePrefixError::TooLong {
            len,
            max: max_len(&addr),
        })
    }
}

/// An EID prefix in an instance: the key of a map-cache entry, a registration and rate limits.
///
/// Host bits below `len` are expected to be zero (the constructors of the codec, of
/// [`EidPrefix::from_ip_prefix`] and of the agent's `map_cache::eid_key` all mask them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EidPrefix {
    /// 24-bit LISP instance-id; 0 is the default instance.
    pub instance_id: u32,
    pub addr: IpAddr,
    pub len: u8,
}

impl EidPrefix {
    pub const fn new(instance_id: u32, addr: IpAddr, len: u8) -> Self {
        EidPrefix {
            instance_id,
            addr,
            len,
        }
    }

    /// A host prefix (/32 or /128).
    pub fn host(instance_id: u32, addr: IpAddr) -> Self {
        EidPrefix {
            instance_id,
            addr,
            len: max_len(&addr),
        }
    }

    /// `prefix` in `instance_id`, host bits cleared.
    pub fn from_ip_prefix(instance_id: u32, prefix: IpPrefix) -> Self {
        let n = prefix.network();
        EidPrefix::new(instance_id, n.addr(), n.len())
    }

    /// The address part as an [`IpPrefix`] (host bits cleared); [`BadPrefix`] if `len` is too
    /// long for the family.
    pub fn ip_prefix(&self) -> Result<IpPrefix, BadPrefix> {
        IpPrefix::new_masked(self.addr, self.len)
    }

    /// Whether `addr` in `instance_id` falls inside this prefix.
    pub fn contains(&self, instance_id: u32, addr: IpAddr) -> bool {
        instance_id == self.instance_id
            && addr.is_ipv4() == self.addr.is_ipv4()
            && mask(addr, self.len) == mask(self.addr, self.len)
    }

    /// Whether `other` lies inside (or equals) this prefix, in the same instance.
    pub fn covers(&self, other: &EidPrefix) -> bool {
        other.len >= self.len && self.contains(other.instance_id, other.addr)
    }
}

impl fmt::Display for EidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]{}/{}", self.instance_id, self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn prefix_validation() {
        assert!(IpPrefix::new(v4(198, 51, 100, 0), 24).is_ok());
        assert_eq!(IpPrefix::new(v4(198, 51, 100, 1), 24), Err(BadPrefix));
        assert_eq!(IpPrefix::new(v4(198, 51, 100, 0), 33), Err(BadPrefix));
        assert_eq!(
            IpPrefix::new_masked(v4(198, 51, 100, 77), 24)
                .unwrap()
                .addr(),
            v4(198, 51, 100, 0)
        );
        let p = IpPrefix::new(v4(192, 0, 0, 0), 6).unwrap();
        assert!(p.contains(v4(192, 0, 2, 1)));
        assert!(!p.contains(v4(198, 51, 100, 1)));
        assert!(
            IpPrefix::new(v4(0, 0, 0, 0), 0)
                .unwrap()
                .contains(v4(1, 2, 3, 4))
        );
        let v6: IpAddr = "2001:db8:1::".parse().unwrap();
        assert!(IpPrefix::new(v6, 48).is_ok());
        assert_eq!(IpPrefix::new(v6, 129), Err(BadPrefix));
        assert!(!IpPrefix::new(v6, 48).unwrap().contains(v4(1, 2, 3, 4)));
        let odd = IpPrefix::new_unmasked(v4(198, 51, 100, 7), 24).unwrap();
        assert!(odd.has_host_bits());
        assert_eq!(
            odd.network(),
            IpPrefix::new(v4(198, 51, 100, 0), 24).unwrap()
        );
        assert!(odd.contains(v4(198, 51, 100, 200)));
        assert_eq!(IpPrefix::new_unmasked(v4(1, 1, 1, 1), 33), Err(BadPrefix));
    }

    #[test]
    fn parse_keeps_host_bits_and_says_why_not() {
        let p: IpPrefix = "198.51.100.0/24".parse().unwrap();
        assert!(p.covers(&"198.51.100.0/25".parse().unwrap()));
        assert!(!p.covers(&"198.51.0.0/16".parse().unwrap()));
        assert!(!p.covers(&"2001:db8::/32".parse().unwrap()));
        assert!("2001:db8::1/128".parse::<IpPrefix>().unwrap().is_host());
        assert!("0.0.0.0/0".parse::<IpPrefix>().unwrap().covers(&p));
        let odd: IpPrefix = "198.51.100.9/24".parse().unwrap();
        assert!(odd.has_host_bits());
        assert_eq!(odd.addr(), v4(198, 51, 100, 9));
        assert_eq!(
            "198.51.100.0".parse::<IpPrefix>(),
            Err(ParsePrefixError::NoSlash)
        );
        assert_eq!(
            "198.51.100/24".parse::<IpPrefix>(),
            Err(ParsePrefixError::BadAddress)
        );
        assert_eq!(
            "198.51.100.0/x".parse::<IpPrefix>(),
            Err(ParsePrefixError::BadLength)
        );
        assert_eq!(
            "::/129".parse::<IpPrefix>(),
            Err(ParsePrefixError::TooLong { len: 129, max: 128 })
        );
    }

    #[test]
    fn eid_prefix_contains_and_covers() {
        let p = EidPrefix::new(7, v4(198, 51, 100, 0), 23);
        assert!(p.contains(7, v4(198, 51, 101, 9)));
        assert!(!p.contains(7, v4(198, 51, 102, 9)));
        assert!(!p.contains(8, v4(198, 51, 100, 9)));
        assert!(!p.contains(7, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let h = EidPrefix::host(0, "2001:db8::1".parse().unwrap());
        assert_eq!(h.len, 128);
        assert!(h.contains(0, "2001:db8::1".parse().unwrap()));
        assert!(!h.contains(0, "2001:db8::2".parse().unwrap()));
        let all = EidPrefix::new(0, v4(0, 0, 0, 0), 0);
        assert!(all.contains(0, v4(203, 0, 113, 1)));
        assert!(p.covers(&EidPrefix::host(7, v4(198, 51, 100, 1))));
        assert!(!p.covers(&EidPrefix::host(8, v4(198, 51, 100, 1))));
        assert!(!EidPrefix::host(7, v4(198, 51, 100, 1)).covers(&p));
        let from = EidPrefix::from_ip_prefix(3, "198.51.100.9/24".parse().unwrap());
        assert_eq!(from, EidPrefix::new(3, v4(198, 51, 100, 0), 24));
        assert_eq!(from.ip_prefix(), IpPrefix::new(v4(198, 51, 100, 0), 24));
        assert!(EidPrefix::new(0, v4(1, 1, 1, 1), 33).ip_prefix().is_err());
    }
}
