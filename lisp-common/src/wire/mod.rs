//! LISP headers on the wire: views over byte buffers (`Packet<T: AsRef<[u8]>>`) and parsed
//! representations (`Repr::parse` / `Repr::emit`), in the style of smoltcp's `wire` module.
//!
//! * [`data`] (no_std, no alloc; used by the XDP side): the 8-byte LISP data header,
//!   `data::Packet` view + `data::Repr` + `data::Error`.
//! * `control` (feature `alloc`): every RFC 9301 control message, addresses with the
//!   instance-id LCAF, and HMAC authentication. See its module docs for the API.
//! * [`hsrp`] (no_std, no alloc): HSRP v1 and v2 hellos for the first-hop gateway.

/// UDP destination port of LISP data packets (RFC 9300).
pub const LISP_DATA_PORT: u16 = 4341;
/// UDP port of LISP control messages (RFC 9301).
pub const LISP_CONTROL_PORT: u16 = 4342;

#[cfg(feature = "alloc")]
pub mod control;
pub mod data;
pub mod hsrp;
