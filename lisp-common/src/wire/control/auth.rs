//! Authentication of Map-Register, Map-Notify and Map-Notify-Ack (RFC 9301 §5.6).
//!
//! The field after the nonce is `Key ID (8) | Algorithm ID (8) | Auth Data Length (16) | data`.
//! Older peers (OOR, Wireshark, tcpdump) read the first 16 bits as one Key ID; sending Key ID 0
//! makes both readings agree (OOR's "key-id 1" is our key 0 + algorithm 1).
//!
//! The MAC covers the whole message (type byte to the end, xTR-ID/Site-ID trailer included)
//! with the authentication data zeroed. Peers send the untruncated MAC (20 bytes for SHA-1,
//! 32 for SHA-256) although the algorithms are named -96 / -128; [`verify`] accepts both the
//! full and the truncated length and compares in constant time; [`Auth::zeroed`] reserves the
//! full length, which is what OOR and lispers.net expect.

use super::{Error, Reader, Writer, msg_type};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use hmac::{Hmac, Mac};

/// Offset of the Key ID byte in a Map-Register / Map-Notify / Map-Notify-Ack.
pub const AUTH_OFFSET: usize = 12;
/// Offset of the authentication data.
pub const AUTH_DATA_OFFSET: usize = 16;

/// Authentication algorithms (Algorithm ID values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// 1: HMAC-SHA-1-96.
    HmacSha1 = 1,
    /// 2: HMAC-SHA-256-128 (the one RFC 9301 makes mandatory).
    HmacSha256 = 2,
}

impl Algorithm {
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Algorithm::HmacSha1),
            2 => Some(Algorithm::HmacSha256),
            _ => None,
        }
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// Untruncated MAC length: what peers send and what [`Auth::zeroed`] reserves.
    pub fn full_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 20,
            Algorithm::HmacSha256 => 32,
        }
    }

    /// Truncated length the algorithm is named after (96 / 128 bits).
    pub fn truncated_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 12,
            Algorithm::HmacSha256 => 16,
        }
    }

    fn accepts_len(self, len: usize) -> bool {
        len == self.full_len() || len == self.truncated_len()
    }
}

/// The authentication header of a Map-Register / Map-Notify / Map-Notify-Ack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Auth {
    pub key_id: u8,
    /// Algorithm ID as sent (see [`Algorithm`]); 0 = none.
    pub algorithm_id: u8,
    pub data: Vec<u8>,
}

impl Auth {
    /// Key ID 0, the algorithm, and zeroed data of the algorithm's full length, ready for
    /// [`sign`] after emission.
    pub fn zeroed(alg: Algorithm) -> Self {
        Auth {
            key_id: 0,
            algorithm_id: alg.id(),
            data: vec![0; alg.full_len()],
        }
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_id(self.algorithm_id)
    }

    pub fn wire_len(&self) -> usize {
        4 + self.data.len()
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let key_id = r.u8()?;
        let algorithm_id = r.u8()?;
        let len = usize::from(r.u16()?);
        Ok(Auth {
            key_id,
            algorithm_id,
            data: r.bytes(len)?.to_vec(),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let len = u16::try_from(self.data.len()).map_err(|_| Error::ValueTooLarge)?;
        w.u8(self.key_id)?;
        w.u8(self.algorithm_id)?;
        w.u16(len)?;
        w.bytes(&self.data)
    }
}

/// Why [`sign`] or [`verify`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not a Map-Register / Map-Notify / Map-Notify-Ack, or shorter than its auth field.
    Malformed(Error),
    /// Algorithm ID we do not implement (0 = none, 3 = with HKDF...).
    UnknownAlgorithm(u8),
    /// Authentication data length that does not fit the algorithm.
    BadLength { algorithm: u8, len: u16 },
    /// The MAC does not match (wrong key or altered message).
    Mismatch,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(e) => write!(f, "cannot authenticate: {e}"),
            AuthError::UnknownAlgorithm(a) => write!(f, "unknown authentication algorithm {a}"),
            AuthError::BadLength { algorithm, len } => {
                write!(
                    f,
                    "authentication data length {len} does not fit algorithm {algorithm}"
                )
            }
            AuthError::Mismatch => write!(f, "authentication data mismatch"),
        }
    }
}

impl core::error::Error for AuthError {}

/// Locate the auth field: (algorithm, data length). The whole data must be inside `msg`.
fn locate(msg: &[u8]) -> Result<(Algorithm, usize), AuthError> {
    let ty = *msg.first().ok_or(AuthError::Malformed(Error::Truncated))? >> 4;
    if !matches!(
        ty,
        msg_type::MAP_REGISTER | msg_type::MAP_NOTIFY | msg_type::MAP_NOTIFY_ACK
    ) {
        return Err(AuthError::Malformed(Error::BadType(ty)));
    }
    if msg.len() < AUTH_DATA_OFFSET {
        return Err(AuthError::Malformed(Error::Truncated));
    }
    let alg_id = msg[AUTH_OFFSET + 1];
    let len16 = u16::from_be_bytes([msg[AUTH_OFFSET + 2], msg[AUTH_OFFSET + 3]]);
    let len = usize::from(len16);
    let alg = Algorithm::from_id(alg_id).ok_or(AuthError::UnknownAlgorithm(alg_id))?;
    if !alg.accepts_len(len) {
        return Err(AuthError::BadLength {
            algorithm: alg_id,
            len: len16,
        });
    }
    if msg.len() < AUTH_DATA_OFFSET + len {
        return Err(AuthError::Malformed(Error::Truncated));
    }
    Ok((alg, len))
}

/// Feed the message with the auth data replaced by zeros, without copying it.
fn feed<M: Mac>(mut mac: M, msg: &[u8], len: usize) -> M {
    const ZEROS: [u8; 32] = [0; 32];
    mac.update(&msg[..AUTH_DATA_OFFSET]);
    mac.update(&ZEROS[..len]);
    mac.update(&msg[AUTH_DATA_OFFSET + len..]);
    mac
}

/// Fill in the authentication data of an emitted Map-Register / Map-Notify / Map-Notify-Ack,
/// using the algorithm and length already in its header (see [`Auth::zeroed`]).
pub fn sign(msg: &mut [u8], key: &[u8]) -> Result<(), AuthError> {
    let (alg, len) = locate(msg)?;
    let mut tag = [0u8; 32];
    match alg {
        Algorithm::HmacSha1 => {
            let mac = Hmac::<sha1::Sha1>::new_from_slice(key).map_err(|_| AuthError::Mismatch)?;
            tag[..20].copy_from_slice(&feed(mac, msg, len).finalize().into_bytes());
        }
        Algorithm::HmacSha256 => {
            let mac = Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|_| AuthError::Mismatch)?;
            tag.copy_from_slice(&feed(mac, msg, len).finalize().into_bytes());
        }
    }
    msg[AUTH_DATA_OFFSET..AUTH_DATA_OFFSET + len].copy_from_slice(&tag[..len]);
    Ok(())
}

/// Check the authentication data of a received Map-Register / Map-Notify / Map-Notify-Ack
/// against `key`, in constant time. Does not parse the rest of the message.
pub fn verify(msg: &[u8], key: &[u8]) -> Result<(), AuthError> {
    let (alg, len) = locate(msg)?;
    let got = &msg[AUTH_DATA_OFFSET..AUTH_DATA_OFFSET + len];
    // verify_truncated_left compares the first `len` bytes of the MAC in constant time.
    let ok = match alg {
        Algorithm::HmacSha1 => Hmac::<sha1::Sha1>::new_from_slice(key)
            .map_err(|_| AuthError::Mismatch)
            .map(|m| feed(m, msg, len).verify_truncated_left(got).is_ok())?,
        Algorithm::HmacSha256 => Hmac::<sha2::Sha256>::new_from_slice(key)
            .map_err(|_| AuthError::Mismatch)
            .map(|m| feed(m, msg, len).verify_truncated_left(got).is_ok())?,
    };
    if ok { Ok(()) } else { Err(AuthError::Mismatch) }
}

/// Emit a Map-Register / Map-Notify / Map-Notify-Ack message and sign it with `key`.
pub fn emit_signed(msg: &super::Message, key: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut v = msg.to_vec().map_err(AuthError::Malformed)?;
    sign(&mut v, key)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signing fills the field, the same key verifies, another key or an altered byte does
    /// not, and no truncation is accepted.
    #[test]
    fn sign_then_verify_both_algorithms_and_lengths() {
        for (alg, len) in [
            (Algorithm::HmacSha1, 20),
            (Algorithm::HmacSha1, 12),
            (Algorithm::HmacSha256, 32),
            (Algorithm::HmacSha256, 16),
        ] {
            let mut msg = vec![
                0x30,
                0,
                1,
                0,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                0,
                alg.id(),
                0,
                len as u8,
            ];
            msg.extend(core::iter::repeat_n(0u8, len));
            msg.extend_from_slice(b"records and trailer");
            sign(&mut msg, b"site1-secret").unwrap();
            assert_ne!(&msg[16..16 + len], &vec![0u8; len][..]);
            verify(&msg, b"site1-secret").unwrap();
            assert_eq!(verify(&msg, b"site1-secreT"), Err(AuthError::Mismatch));
            let mut altered = msg.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert_eq!(verify(&altered, b"site1-secret"), Err(AuthError::Mismatch));
            for cut in 0..16 + len {
                assert!(verify(&msg[..cut], b"site1-secret").is_err());
            }
        }
    }

    #[test]
    fn known_answer_sha256() {
        // The MAC is plain HMAC over the message with zeroed auth data: recompute it with the
        // hmac crate on a hand-zeroed copy and compare.
        let mut msg = vec![0x30, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0, 32];
        msg.extend([0u8; 32]);
        msg.extend([1, 2, 3]);
        let expect = {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
            m.update(&msg);
            m.finalize().into_bytes()
        };
        sign(&mut msg, b"k").unwrap();
        assert_eq!(&msg[16..48], &expect[..]);
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        let mut msg = vec![0x30, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 3, 0, 32];
        msg.extend([0u8; 32]);
        assert_eq!(verify(&msg, b"k"), Err(AuthError::UnknownAlgorithm(3)));
        msg[13] = 1;
        assert_eq!(
            verify(&msg, b"k"),
            Err(AuthError::BadLength {
                algorithm: 1,
                len: 32
            })
        );
        msg[0] = 0x20;
        assert_eq!(
            verify(&msg, b"k"),
            Err(AuthError::Malformed(Error::BadType(2)))
        );
    }
}
