//! hsrp::Message::parse (v1, v1 advertisement, v2 TLVs) never panics; a parsed message emits
//! into exactly `buffer_len()` bytes that parse to the same value, and emitting is a fixed
//! point from then on. (The first emit may differ from the input: reserved bytes and IPv4
//! padding are sent as zero, unknown v2 TLVs are dropped.) An MD5-authenticated v2 message is
//! recognised but cannot be emitted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lisp_common::wire::hsrp::{Error, Message, v2};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = Message::parse(bytes) {
        let mut again = vec![0u8; m.buffer_len()];
        match m.emit(&mut again) {
            Err(Error::Unsupported) => {
                assert!(matches!(m, Message::V2(r) if r.auth == v2::Auth::Md5));
                return;
            }
            r => assert_eq!(r, Ok(again.len())),
        }
        let m2 = Message::parse(&again).expect("an emitted message parses");
        assert_eq!(m2, m);
        let mut third = vec![0u8; m2.buffer_len()];
        m2.emit(&mut third).unwrap();
        assert_eq!(third, again);
    }
});
