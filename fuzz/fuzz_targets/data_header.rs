//! LISP data header: parse never panics; what parses re-encodes to a header that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lisp_common::wire::data::{Packet, Repr};

fuzz_target!(|bytes: &[u8]| {
    let Ok(p) = Packet::new_checked(bytes) else {
        return;
    };
    let _ = (
        p.nonce(),
        p.map_versions(),
        p.instance_id(),
        p.lsb(),
        p.payload().len(),
    );
    if let Ok(r) = Repr::parse(&p) {
        let mut out = [0u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut out[..]))
            .expect("a parsed header re-encodes");
        assert_eq!(Repr::parse(&Packet::new_unchecked(&out[..])), Ok(r));
    }
});
