//! Property tests: parse(emit(x)) == x for every message type; every truncation of a valid
//! message and any corruption of it is an error or a different valid message, never a panic.

use lisp_common::wire::control::*;
use lisp_common::wire::data;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn prefix() -> impl Strategy<Value = IpPrefix> {
    (ip(), any::<u8>(), any::<bool>()).prop_map(|(a, l, masked)| {
        let l = l % (if a.is_ipv4() { 33 } else { 129 });
        // Both kinds occur: clean prefixes and prefixes with host bits as some peers send.
        if masked {
            IpPrefix::new_masked(a, l).unwrap()
        } else {
            IpPrefix::new_unmasked(a, l).unwrap()
        }
    })
}

fn eid() -> impl Strategy<Value = Eid> {
    (proptest::option::of(any::<u32>()), prefix()).prop_map(|(i, p)| Eid::new(i, p))
}

fn address() -> impl Strategy<Value = Address> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(ip()),
    )
        .prop_map(|(instance_id, ip)| Address { instance_id, ip })
}

fn locator() -> impl Strategy<Value = Locator> {
    (any::<[u8; 4]>(), any::<[bool; 3]>(), ip()).prop_map(|(p, f, address)| Locator {
        priority: p[0],
        weight: p[1],
        m_priority: p[2],
        m_weight: p[3],
        local: f[0],
        probed: f[1],
        reachable: f[2],
        address,
    })
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u32>(),
        0u8..8,
        any::<bool>(),
        0u16..0x1000,
        eid(),
        proptest::collection::vec(locator(), 0..4),
    )
        .prop_map(
            |(ttl, act, authoritative, map_version, eid, locators)| Record {
                ttl,
                action: Action::from_bits(act),
                authoritative,
                map_version,
                eid,
                locators,
            },
        )
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 0..4)
}

fn xtr() -> impl Strategy<Value = Option<XtrId>> {
    proptest::option::of(
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(xtr_id, site_id)| XtrId { xtr_id, site_id }),
    )
}

fn auth_field() -> impl Strategy<Value = Auth> {
    (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(key_id, algorithm_id, data)| Auth {
            key_id,
            algorithm_id,
            data,
        })
}

fn map_request() -> impl Strategy<Value = MapRequest> {
    (
        any::<[bool; 8]>(),
        any::<u64>(),
        address(),
        proptest::collection::vec(ip(), 1..33),
        proptest::collection::vec(eid(), 0..4),
        proptest::option::of(record()),
        xtr(),
    )
        .prop_map(
            |(f, nonce, source_eid, itr_rlocs, eids, map_reply, xtr)| MapRequest {
                authoritative: f[0],
                probe: f[1],
                smr: f[2],
                pitr: f[3],
                smr_invoked: f[4],
                local_xtr: f[5],
                dont_map_reply: f[6],
                nonce,
                source_eid,
                itr_rlocs,
                // N rides on the EID records: without one it cannot be sent.
                notify_requested: f[7] && !eids.is_empty(),
                eids,
                map_reply,
                xtr,
                skipped: Default::default(),
            },
        )
}

fn map_reply() -> impl Strategy<Value = MapReply> {
    (any::<[bool; 3]>(), any::<u64>(), records()).prop_map(|(f, nonce, records)| MapReply {
        probe: f[0],
        echo_nonce_capable: f[1],
        security: f[2],
        nonce,
        records,
        skipped: Default::default(),
    })
}

fn map_register() -> impl Strategy<Value = MapRegister> {
    (
        any::<[bool; 7]>(),
        any::<u64>(),
        auth_field(),
        records(),
        xtr(),
    )
        .prop_map(|(f, nonce, auth, records, xtr)| MapRegister {
            proxy_reply: f[0],
            security: f[1],
            rtr: f[2],
            eid_notify: f[3],
            use_ttl: f[4],
            merge: f[5],
            want_map_notify: f[6],
            nonce,
            auth,
            records,
            xtr,
            skipped: Default::default(),
        })
}

fn map_notify() -> impl Strategy<Value = MapNotify> {
    (
        any::<bool>(),
        any::<u64>(),
        auth_field(),
        records(),
        xtr(),
        0u32..0x40000,
    )
        .prop_map(|(rtr, nonce, auth, records, xtr, reserved)| MapNotify {
            rtr,
            nonce,
            auth,
            records,
            xtr,
            reserved,
            skipped: Default::default(),
        })
}

fn inner_ip() -> impl Strategy<Value = InnerIp> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(s, d, tos, ident, dont_fragment, ttl)| InnerIp::V4 {
                src: s.into(),
                dst: d.into(),
                tos,
                ident,
                dont_fragment,
                ttl
            }),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0u32..0x10_0000,
            any::<u8>()
        )
            .prop_map(|(s, d, traffic_class, flow_label, hop_limit)| InnerIp::V6 {
                src: s.into(),
                dst: d.into(),
                traffic_class,
                flow_label,
                hop_limit
            }),
    ]
}

fn non_ecm() -> impl Strategy<Value = Message> {
    prop_oneof![
        map_request().prop_map(Message::MapRequest),
        map_reply().prop_map(Message::MapReply),
        map_register().prop_map(Message::MapRegister),
        map_notify().prop_map(Message::MapNotify),
        map_notify().prop_map(Message::MapNotifyAck),
    ]
}

fn ecm() -> impl Strategy<Value = Ecm> {
    (
        any::<[bool; 4]>(),
        inner_ip(),
        any::<u16>(),
        any::<u16>(),
        non_ecm(),
    )
        .prop_map(|(f, ip, src_port, dst_port, m)| Ecm {
            security: f[0],
            ddt: f[1],
            to_etr: f[2],
            to_ms: f[3],
            ip,
            src_port,
            dst_port,
            message: Box::new(m),
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![4 => non_ecm(), 1 => ecm().prop_map(Message::Ecm)]
}

/// The message as re-emitting it gives it back: skipped records and locators are gone.
fn without_skipped(mut m: Message) -> Message {
    m.clear_skipped();
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trips(m in message()) {
        let bytes = m.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), m.buffer_len());
        prop_assert_eq!(Message::parse(&bytes).unwrap(), m.clone());
        // The per-type entry points agree with the dispatcher.
        match &m {
            Message::MapRequest(x) => prop_assert_eq!(&MapRequest::parse(&bytes).unwrap(), x),
            Message::MapReply(x) => prop_assert_eq!(&MapReply::parse(&bytes).unwrap(), x),
            Message::MapRegister(x) => prop_assert_eq!(&MapRegister::parse(&bytes).unwrap(), x),
            Message::MapNotify(x) => prop_assert_eq!(&MapNotify::parse(&bytes).unwrap(), x),
            Message::MapNotifyAck(x) => prop_assert_eq!(&MapNotify::parse_ack(&bytes).unwrap(), x),
            Message::Ecm(x) => prop_assert_eq!(&Ecm::parse(&bytes).unwrap(), x),
        }
    }

    #[test]
    fn every_truncation_is_an_error(m in message()) {
        let bytes = m.to_vec().unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(Message::parse(&bytes[..cut]).is_err(), "cut at {} of {}", cut, bytes.len());
        }
        // Too small an output buffer is an error too, not a panic.
        let mut small = vec![0u8; bytes.len().saturating_sub(1)];
        prop_assert!(m.emit(&mut small).is_err());
    }

    #[test]
    fn corruption_never_panics(m in message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = m.to_vec().unwrap();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        // Either an error or a message that re-encodes to a parseable message.
        if let Ok(p) = Message::parse(&bytes) {
            let again = p.to_vec().unwrap();
            // What was skipped on parse (unknown LCAF types) is not re-emitted.
            prop_assert_eq!(Message::parse(&again).unwrap(), without_skipped(p));
        }
        let _ = auth::verify(&bytes, b"k");
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::parse(&bytes);
        let _ = auth::verify(&bytes, b"k");
    }

    #[test]
    fn signed_messages_verify(m in prop_oneof![map_register().prop_map(Message::MapRegister), map_notify().prop_map(Message::MapNotify)],
                              sha256 in any::<bool>(), key in proptest::collection::vec(any::<u8>(), 1..64)) {
        let alg = if sha256 { auth::Algorithm::HmacSha256 } else { auth::Algorithm::HmacSha1 };
        let m = match m {
            Message::MapRegister(mut r) => { r.auth = Auth::zeroed(alg); Message::MapRegister(r) }
            Message::MapNotify(mut n) => { n.auth = Auth::zeroed(alg); Message::MapNotify(n) }
            _ => unreachable!(),
        };
        let bytes = auth::emit_signed(&m, &key).unwrap();
        prop_assert!(auth::verify(&bytes, &key).is_ok());
        let mut other = key.clone();
        other[0] ^= 1;
        prop_assert_eq!(auth::verify(&bytes, &other), Err(auth::AuthError::Mismatch));
        // Still parses, with the MAC in place.
        prop_assert!(Message::parse(&bytes).is_ok());
    }

    #[test]
    fn data_header_round_trips(nonce in proptest::option::of(0u32..0x100_0000), echo in any::<bool>(),
                               lsb in proptest::option::of(any::<u32>()), mv in proptest::option::of((0u16..0x1000, 0u16..0x1000)),
                               iid in proptest::option::of(0u32..0x100_0000), payload in proptest::collection::vec(any::<u8>(), 0..20)) {
        // Make the combination valid: N excludes V, E only with N, 8-bit LSBs with I.
        let mv = if nonce.is_some() { None } else { mv };
        let lsb = if iid.is_some() { lsb.map(|l| l & 0xff) } else { lsb };
        let r = data::Repr { nonce, echo_nonce: echo && nonce.is_some(), lsb, map_version: mv, instance_id: iid };
        let mut buf = vec![0u8; data::HEADER_LEN + payload.len()];
        buf[data::HEADER_LEN..].copy_from_slice(&payload);
        let mut p = data::Packet::new_checked(&mut buf[..]).unwrap();
        r.emit(&mut p).unwrap();
        let p = data::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(data::Repr::parse(&p).unwrap(), r);
        prop_assert_eq!(p.payload(), &payload[..]);
        for cut in 0..data::HEADER_LEN {
            prop_assert!(data::Packet::new_checked(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn data_header_any_bytes(bytes in any::<[u8; 8]>()) {
        let p = data::Packet::new_checked(&bytes[..]).unwrap();
        match data::Repr::parse(&p) {
            Ok(r) => {
                // A parsed header re-encodes to a header that parses the same.
                let mut out = [0u8; 8];
                r.emit(&mut data::Packet::new_unchecked(&mut out[..])).unwrap();
                prop_assert_eq!(data::Repr::parse(&data::Packet::new_unchecked(&out[..])).unwrap(), r);
            }
            Err(e) => prop_assert_eq!(e, data::Error::NonceAndMapVersion),
        }
    }
}

#[test]
fn emit_refuses_values_that_do_not_fit() {
    let e = Eid::new(None, IpPrefix::host("192.0.2.1".parse().unwrap()));
    let mut rec = Record::new(e, 1);
    rec.map_version = 0x1000;
    let reply = MapReply {
        records: vec![rec],
        ..MapReply::default()
    };
    assert_eq!(reply.to_vec(), Err(Error::ValueTooLarge));
    let req = MapRequest {
        itr_rlocs: vec![],
        ..MapRequest::default()
    };
    assert_eq!(req.to_vec(), Err(Error::RecordCount));
    let req = MapRequest {
        itr_rlocs: vec!["192.0.2.1".parse().unwrap(); 33],
        ..MapRequest::default()
    };
    assert_eq!(req.to_vec(), Err(Error::RecordCount));
    let reply = MapReply {
        records: vec![Record::new(e, 1); 256],
        ..MapReply::default()
    };
    assert_eq!(reply.to_vec(), Err(Error::RecordCount));
    let inner = Message::MapReply(MapReply::default());
    let ecm = Ecm::new(
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        inner,
    )
    .unwrap();
    let nested = Ecm {
        message: Box::new(Message::Ecm(ecm.clone())),
        ..ecm.clone()
    };
    assert_eq!(nested.to_vec(), Err(Error::NestedEcm));
    assert_eq!(
        Ecm::new(
            "192.0.2.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            Message::MapReply(MapReply::default())
        ),
        Err(Error::BadInnerHeader)
    );
}

#[test]
fn ecm_checksums_are_checked() {
    let req = MapRequest {
        nonce: 7,
        itr_rlocs: vec!["192.0.2.17".parse().unwrap()],
        eids: vec![Eid::new(
            None,
            IpPrefix::host("203.0.113.10".parse().unwrap()),
        )],
        ..MapRequest::default()
    };
    for (s, d) in [
        ("198.51.100.10", "203.0.113.10"),
        ("2001:db8:1::10", "2001:db8:2::10"),
    ] {
        let e = Ecm::new(
            s.parse().unwrap(),
            d.parse().unwrap(),
            Message::MapRequest(req.clone()),
        )
        .unwrap();
        let bytes = e.to_vec().unwrap();
        let udp_at = 4 + e.ip.header_len();
        assert_ne!(
            &bytes[udp_at + 6..udp_at + 8],
            &[0, 0],
            "UDP checksum must be filled in"
        );
        assert_eq!(Ecm::parse(&bytes).unwrap(), e);
        let mut bad = bytes.clone();
        bad[udp_at + 7] ^= 1;
        assert_eq!(Ecm::parse(&bad), Err(Error::BadChecksum));
        let mut zero = bytes.clone();
        zero[udp_at + 6] = 0;
        zero[udp_at + 7] = 0;
        // Zero UDP checksum: allowed over IPv4 (RFC 768), not over IPv6.
        match e.ip {
            InnerIp::V4 { .. } => assert_eq!(Ecm::parse(&zero).unwrap(), e),
            InnerIp::V6 { .. } => assert_eq!(Ecm::parse(&zero), Err(Error::BadChecksum)),
        }
        if let InnerIp::V4 { .. } = e.ip {
            let mut bad_ip = bytes.clone();
            bad_ip[4 + 10] ^= 1;
            assert_eq!(Ecm::parse(&bad_ip), Err(Error::BadChecksum));
        }
    }
}
