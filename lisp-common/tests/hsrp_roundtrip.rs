//! Property tests of the HSRP codec: every representation survives emit → parse; arbitrary
//! and mutated bytes never panic the parser, and whatever parses re-emits into bytes that parse
//! to the same thing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lisp_common::wire::hsrp::{Message, OpCode, State, v1, v2};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Hello),
        Just(OpCode::Coup),
        Just(OpCode::Resign)
    ]
}

fn state() -> impl Strategy<Value = State> {
    proptest::sample::select(State::ALL.to_vec())
}

fn v1_repr() -> impl Strategy<Value = Message> {
    (
        op(),
        state(),
        any::<[u8; 5]>(),
        any::<[u8; 8]>(),
        any::<[u8; 4]>(),
    )
        .prop_map(|(op, state, f, auth, vip)| {
            Message::V1(v1::Repr {
                op,
                state,
                hellotime: f[0],
                holdtime: f[1],
                priority: f[2],
                group: f[3],
                auth,
                vip: Ipv4Addr::from(vip),
            })
        })
}

fn advertise() -> impl Strategy<Value = Message> {
    any::<(u16, u8, u8, u16, u16, u32)>().prop_map(|(t, s, r1, a, p, r2)| {
        Message::V1Advertise(v1::Advertise {
            tlv_type: t,
            state: s,
            reserved1: r1,
            active_groups: a,
            passive_groups: p,
            reserved2: r2,
        })
    })
}

fn v2_repr() -> impl Strategy<Value = Message> {
    let vip = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ];
    let auth = prop_oneof![
        Just(v2::Auth::None),
        any::<[u8; 8]>().prop_map(v2::Auth::Text)
    ];
    (
        op(),
        state(),
        0u16..=4095,
        any::<[u8; 6]>(),
        any::<[u32; 3]>(),
        vip,
        auth,
    )
        .prop_map(|(op, state, group, identifier, n, vip, auth)| {
            Message::V2(v2::Repr {
                group_state: v2::GroupState {
                    op,
                    state,
                    group,
                    identifier,
                    priority: n[0],
                    hellotime_ms: n[1],
                    holdtime_ms: n[2],
                    vip,
                },
                auth,
            })
        })
}

fn emit(m: &Message) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    assert_eq!(m.emit(&mut b), Ok(b.len()));
    b
}

proptest! {
    #[test]
    fn emit_then_parse(m in prop_oneof![v1_repr(), advertise(), v2_repr()]) {
        let b = emit(&m);
        prop_assert_eq!(Message::parse(&b), Ok(m));
        // A short buffer is refused, never written past.
        let mut short = vec![0u8; b.len() - 1];
        prop_assert!(m.emit(&mut short).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(m) = Message::parse(&b) {
            if !matches!(m, Message::V2(r) if r.auth == v2::Auth::Md5) {
                prop_assert_eq!(Message::parse(&emit(&m)), Ok(m));
            }
        }
    }

    #[test]
    fn mutated_messages(
        m in prop_oneof![v1_repr(), v2_repr()],
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut b = emit(&m);
        for (i, v) in flips {
            let n = b.len();
            b[i % n] = v;
        }
        if let Ok(m2) = Message::parse(&b) {
            if !matches!(m2, Message::V2(r) if r.auth == v2::Auth::Md5) {
                prop_assert_eq!(Message::parse(&emit(&m2)), Ok(m2));
            }
        }
    }
}
