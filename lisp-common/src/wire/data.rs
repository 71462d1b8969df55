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
