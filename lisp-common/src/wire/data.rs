//! The 8-byte LISP data header (RFC 9300 §5.3).

/// Length of the LISP data header.
pub const HEADER_LEN: usize = 8;

/// Flag bits of byte 0.
pub mod flags {
    /// Nonce present.
    pub const N: u8 = 0x80;
    /// Locator-status-bits present.
    pub const L: u8 = 0x40;
    /// Echo-nonce request.
    pub const E: u8 = 0x20;
    /// Map-version present.
    pub const V: u8 = 0x10;
    /// Instance-id present (second word = 24-bit instance-id + 8 LSBs).
    pub const I: u8 = 0x08;
}

/// Outer header bytes pushed for an IPv4 outer header: IPv4 20 + UDP 8 + LISP 8.
pub const ENCAP_OVERHEAD_IPV4: usize = 20 + 8 + HEADER_LEN;
/// Outer header bytes pushed for an IPv6 outer header: IPv6 40 + UDP 8 + LISP 8.
pub const ENCAP_OVERHEAD_IPV6: usize = 40 + 8 + HEADER_LEN;

/// What was wrong with a LISP data header (on parse) or a [`Repr`] (on emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated,
    /// N and V both set: the first word cannot hold both a nonce and map-versions.
    NonceAndMapVersion,
    /// A value does not fit its field (24-bit nonce / instance-id, 12-bit map-version,
    /// 8-bit LSBs next to an instance-id).
    ValueTooLarge,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated LISP data header"),
            Error::NonceAndMapVersion => write!(f, "N and V bits both set"),
            Error::ValueTooLarge => write!(f, "value too large for its LISP data header field"),
        }
    }
}

impl core::error::Error for Error {}

/// A read/write view of a LISP data header at the start of `buffer` (the inner packet follows).
///
/// Accessors do not validate flag combinations; [`Repr::parse`] does.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking the length (accessors may then panic on short buffers).
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and check that the 8-byte header is there.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Packet { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn flags(&self) -> u8 {
        self.b()[0]
    }
    pub fn nonce_present(&self) -> bool {
        self.flags() & flags::N != 0
    }
    pub fn lsb_enabled(&self) -> bool {
        self.flags() & flags::L != 0
    }
    pub fn echo_nonce_request(&self) -> bool {
        self.flags() & flags::E != 0
    }
    pub fn map_version_present(&self) -> bool {
        self.flags() & flags::V != 0
    }
    pub fn instance_id_present(&self) -> bool {
        self.flags() & flags::I != 0
    }

    /// Bytes 1..4 as a 24-bit number (the nonce when N is set).
    pub fn nonce(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([0, b[1], b[2], b[3]])
    }

    /// (source, destination) map-versions: bytes 1..4 as two 12-bit numbers (when V is set).
    pub fn map_versions(&self) -> (u16, u16) {
        let w = self.nonce();
        ((w >> 12) as u16, (w & 0xfff) as u16)
    }

    /// The second word.
    pub fn second_word(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The instance-id (high 24 bits of the second word, when I is set).
    pub fn instance_id(&self) -> u32 {
        self.second_word() >> 8
    }

    /// Locator-status-bits: 8 bits when I is set, else 32 bits.
    pub fn lsb(&self) -> u32 {
        if self.instance_id_present() {
            self.second_word() & 0xff
        } else {
            self.second_word()
        }
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_flags(&mut self, v: u8) {
        self.bm()[0] = v;
    }
    /// Write a 24-bit value into bytes 1..4 (higher bits are dropped).
    pub fn set_nonce(&mut self, v: u32) {
        let b = v.to_be_bytes();
        self.bm()[1..4].copy_from_slice(&b[1..4]);
    }
    pub fn set_map_versions(&mut self, src: u16, dst: u16) {
        self.set_nonce((u32::from(src & 0xfff) << 12) | u32::from(dst & 0xfff));
    }
    pub fn set_second_word(&mut self, v: u32) {
        self.bm()[4..8].copy_from_slice(&v.to_be_bytes());
    }
    /// Instance-id (24 bits) and 8 LSBs into the second word.
    pub fn set_instance_id_lsb(&mut self, iid: u32, lsb: u8) {
        self.set_second_word(((iid & 0x00ff_ffff) << 8) | u32::from(lsb));
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.bm()[HEADER_LEN..]
    }
}

/// The meaning of a LISP data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Repr {
    /// N: 24-bit nonce.
    pub nonce: Option<u32>,
    /// E: echo-nonce request (only meaningful, and only sent, with a nonce).
    pub echo_nonce: bool,
    /// L: locator-status-bits: 32 bits, or 8 bits when an instance-id is present.
    pub lsb: Option<u32>,
    /// V: (source, destination) 12-bit map-versions.
    pub map_version: Option<(u16, u16)>,
    /// I: 24-bit instance-id.
    pub instance_id: Option<u32>,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, Error> {
        p.check_len()?;
        if p.nonce_present() && p.map_version_present() {
            return Err(Error::NonceAndMapVersion);
        }
        Ok(Repr {
            nonce: p.nonce_present().then(|| p.nonce()),
            // RFC 9300: E is ignored when N is clear.
            echo_nonce: p.nonce_present() && p.echo_nonce_request(),
            lsb: p.lsb_enabled().then(|| p.lsb()),
            map_version: p.map_version_present().then(|| p.map_versions()),
            instance_id: p.instance_id_present().then(|| p.instance_id()),
        })
    }

    /// Always [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Check that every value fits and that N and V are not both asked for.
    pub fn check(&self) -> Result<(), Error> {
        if self.nonce.is_some() && self.map_version.is_some() {
            return Err(Error::NonceAndMapVersion);
        }
        let too_big = self.nonce.is_some_and(|n| n > 0x00ff_ffff)
            || self.instance_id.is_some_and(|i| i > 0x00ff_ffff)
            || self
                .map_version
                .is_some_and(|(s, d)| s > 0xfff || d > 0xfff)
            || (self.instance_id.is_some() && self.lsb.is_some_and(|l| l > 0xff));
        if too_big {
            Err(Error::ValueTooLarge)
        } else {
            Ok(())
        }
    }

    /// Write the header into the first 8 bytes of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<(), Error> {
        self.check()?;
        p.check_len()?;
        let mut f = 0;
        let mut first = 0;
        if let Some(n) = self.nonce {
            f |= flags::N;
            if self.echo_nonce {
                f |= flags::E;
            }
            first = n;
        }
        if let Some((s, d)) = self.map_version {
            f |= flags::V;
            first = (u32::from(s) << 12) | u32::from(d);
        }
        if self.lsb.is_some() {
            f |= flags::L;
        }
        let second = match self.instance_id {
            Some(iid) => {
                f |= flags::I;
                (iid << 8) | self.lsb.unwrap_or(0)
            }
            None => self.lsb.unwrap_or(0),
        };
        p.set_flags(f);
        p.set_nonce(first);
        p.set_second_word(second);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: Repr) -> [u8; 8] {
        let mut buf = [0xaau8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            r
        );
        buf
    }

    #[test]
    fn layouts() {
        assert_eq!(round_trip(Repr::default()), [0; 8]);
        assert_eq!(
            round_trip(Repr {
                nonce: Some(0xabcdef),
                echo_nonce: true,
                ..Repr::default()
            }),
            [0xa0, 0xab, 0xcd, 0xef, 0, 0, 0, 0]
        );
        assert_eq!(
            round_trip(Repr {
                nonce: Some(1),
                instance_id: Some(0x123456),
                lsb: Some(3),
                ..Repr::default()
            }),
            [0xc8, 0, 0, 1, 0x12, 0x34, 0x56, 3]
        );
        assert_eq!(
            round_trip(Repr {
                map_version: Some((0xabc, 0x123)),
                lsb: Some(0xdeadbeef),
                ..Repr::default()
            }),
            [0x50, 0xab, 0xc1, 0x23, 0xde, 0xad, 0xbe, 0xef]
        );
    }

    #[test]
    fn rejects_bad_input() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&[0u8; 8][..n]).err(),
                Some(Error::Truncated)
            );
        }
        let nv = [flags::N | flags::V, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&nv[..])),
            Err(Error::NonceAndMapVersion)
        );
        // E without N is ignored (RFC 9300).
        let e = [flags::E, 1, 2, 3, 0, 0, 0, 0];
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&e[..])),
            Ok(Repr::default())
        );
        let mut buf = [0u8; 8];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        for bad in [
            Repr {
                nonce: Some(1 << 24),
                ..Repr::default()
            },
            Repr {
                instance_id: Some(1 << 24),
                ..Repr::default()
            },
            Repr {
                instance_id: Some(1),
                lsb: Some(0x100),
                ..Repr::default()
            },
            Repr {
                map_version: Some((0x1000, 0)),
                ..Repr::default()
            },
        ] {
            assert_eq!(bad.emit(&mut p), Err(Error::ValueTooLarge));
        }
        let nv = Repr {
            nonce: Some(1),
            map_version: Some((1, 1)),
            ..Repr::default()
        };
        assert_eq!(nv.emit(&mut p), Err(Error::NonceAndMapVersion));
        let mut short = [0u8; 7];
        assert_eq!(
            Repr::default().emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::Truncated)
        );
    }
}
