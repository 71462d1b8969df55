//! auth::verify never panics; signing then verifying with the same key always succeeds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lisp_common::wire::control::auth;

fuzz_target!(|input: (&[u8], &[u8])| {
    let (key, msg) = input;
    let _ = auth::verify(msg, key);
    let mut copy = msg.to_vec();
    if auth::sign(&mut copy, key).is_ok() {
        assert_eq!(auth::verify(&copy, key), Ok(()));
    }
});
