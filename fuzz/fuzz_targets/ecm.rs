//! Ecm::parse never panics; what parses re-encodes to bytes that parse to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lisp_common::wire::control::Ecm;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(mut m) = Ecm::parse(bytes) {
        let again = m.to_vec().expect("a parsed message re-encodes");
        // Records / locators in unknown LCAF types are skipped on parse, not re-encoded.
        m.message.clear_skipped();
        assert_eq!(Ecm::parse(&again).as_ref(), Ok(&m));
    }
});
