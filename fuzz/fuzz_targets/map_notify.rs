//! MapNotify::parse never panics; what parses re-encodes to bytes that parse to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lisp_common::wire::control::MapNotify;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(mut m) = MapNotify::parse(bytes) {
        let again = m.to_vec().expect("a parsed message re-encodes");
        // Records / locators in unknown LCAF types are skipped on parse, not re-encoded.
        m.skipped = Default::default();
        assert_eq!(MapNotify::parse(&again).as_ref(), Ok(&m));
    }
});
