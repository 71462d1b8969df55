//! Real packets from independent implementations (OOR, tcpdump's test suite, scapy) decode with
//! the fields their decodes show (see testdata/captures/*/README.md and oor/decodes/), re-encode
//! to the same bytes, and their HMACs verify with the known keys.

mod support;

use lisp_common::wire::control::{self, Action, Error, Message, auth};
use lisp_common::wire::data;
use lisp_common::wire::{LISP_CONTROL_PORT, LISP_DATA_PORT};
use std::net::{IpAddr, Ipv4Addr};
use support::{Udp, lisp_datagrams};

const OOR_FILES: &[&str] = &[
    "oor/01-map-register-notify-site1.pcap",
    "oor/02-map-register-notify-site2-proxy-reply.pcap",
    "oor/03-ecm-map-request-ms-proxy-map-reply.pcap",
    "oor/04-ecm-map-request-forwarded-etr-map-reply.pcap",
    "oor/05-lisp-data-ipv4-in-ipv4-ping.pcap",
    "oor/06-lisp-data-ipv6-in-ipv4-ping.pcap",
    "oor/07-rloc-probe-request-reply.pcap",
    "oor/08-ecm-map-request-negative-map-reply.pcap",
    "oor/09-dual-rloc-v4v6-register-request-reply-data.pcap",
    "oor/10-map-register-wrong-key-no-notify-retries.pcap",
    "oor/11-ecm-map-request-negative-reply-not-registered.pcap",
    "oor/12-python-xtr-vs-oor-ms-ephemeral-port.pcap",
];
/// Captures whose every control message is valid (tcpdump's lisp_eid_notify.pcap has two
/// malformed frames and is checked on its own).
const VALID_OTHER: &[&str] = &[
    "tcpdump/lisp_eid_register.pcap",
    "tcpdump/lisp_ipv6.pcap",
    "scapy/lisp-handbuilt.pcap",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn control(file: &str) -> Vec<(Udp, Message)> {
    lisp_datagrams(file, LISP_CONTROL_PORT)
        .into_iter()
        .map(|u| {
            let m = Message::parse(&u.payload)
                .unwrap_or_else(|e| panic!("{file} frame {}: {e:?}", u.frame));
            (u, m)
        })
        .collect()
}

/// The first message of a capture that `pick` accepts (e.g. the first Map-Reply); panics
/// naming `what` if there is none, because the capture is known to hold one.
fn first<'a, T>(d: &'a [(Udp, Message)], what: &str, pick: impl Fn(&'a Message) -> Option<T>) -> T {
    d.iter()
        .find_map(|(_, m)| pick(m))
        .unwrap_or_else(|| panic!("no {what} in the capture"))
}

/// Every control message of every valid capture parses and re-encodes to the same bytes.
#[test]
fn every_control_message_round_trips_byte_for_byte() {
    let mut n = 0;
    for file in OOR_FILES.iter().chain(VALID_OTHER) {
        for (u, m) in control(file) {
            assert_eq!(m.to_vec().unwrap(), u.payload, "{file} frame {}", u.frame);
            assert_eq!(m.buffer_len(), u.payload.len());
            n += 1;
        }
    }
    // `tshark -Y udp.port==4342` counts 53 in these files: the pcap reader misses none.
    assert_eq!(n, 53);
}

/// tcpdump's lisp_eid_notify.pcap: frames 1 and 2 are valid Map-Notifies (2 with the I bit and
/// its xTR-ID); frame 3 sets I but stops after the records (tcpdump prints "[|lisp]", tshark
/// "Malformed"); frame 4 has 24 bytes after its records without the I bit (tcpdump prints them
/// as "Data"). The last two are refused with typed errors: trailing bytes would be covered by
/// the MAC but carry nothing this codec can represent or re-encode.
#[test]
fn tcpdump_notify_captures() {
    let d = lisp_datagrams("tcpdump/lisp_eid_notify.pcap", LISP_CONTROL_PORT);
    assert_eq!(d.len(), 4);
    let Message::MapNotify(n) = Message::parse(&d[0].payload).unwrap() else {
        panic!("not a Map-Notify")
    };
    assert_eq!(n.records.len(), 3);
    assert!(n.xtr.is_none());
    // The sender copied the Map-Register's M bit into the reserved field.
    assert_eq!(n.reserved, 1);
    assert_eq!(n.auth.algorithm(), Some(auth::Algorithm::HmacSha1));
    assert_eq!(n.auth.data[..4], [0x4b, 0xbb, 0x96, 0x14]);
    let r = &n.records[1];
    assert_eq!(
        (r.ttl, r.authoritative, r.action),
        (1440, true, Action::NoAction)
    );
    assert_eq!(r.eid.prefix.to_string(), "10.30.1.96/32");
    let locs: Vec<_> = r.locators.iter().map(|l| l.address).collect();
    assert_eq!(locs, [ip("20.20.8.251"), ip("20.20.8.252")]);
    let l = &r.locators[0];
    assert_eq!(
        (l.priority, l.weight, l.m_priority, l.m_weight),
        (1, 100, 1, 100)
    );
    assert!(!l.local && !l.probed && !l.reachable);
    assert_eq!(n.to_vec().unwrap(), d[0].payload);
    let Message::MapNotify(n2) = Message::parse(&d[1].payload).unwrap() else {
        panic!()
    };
    assert_eq!(n2.records.len(), 2);
    assert_eq!(n2.xtr.unwrap().xtr_id[..4], [0x97, 0x87, 0xad, 0x75]);
    assert_eq!(n2.to_vec().unwrap(), d[1].payload);
    assert_eq!(Message::parse(&d[2].payload), Err(Error::Truncated));
    assert_eq!(Message::parse(&d[3].payload), Err(Error::TrailingBytes));
}

#[test]
fn tcpdump_invalid_captures_are_typed_errors() {
    let d = lisp_datagrams("tcpdump/lisp_invalid.pcap", LISP_CONTROL_PORT);
    assert_eq!(d.len(), 2);
    // Record EID AFI 7680 (tcpdump: "unsupported address family identifier 7680").
    assert_eq!(Message::parse(&d[0].payload), Err(Error::BadAfi(7680)));
    // Authentication data length 35117: longer than the message.
    assert_eq!(Message::parse(&d[1].payload), Err(Error::Truncated));
    assert!(auth::verify(&d[1].payload, b"any").is_err());
    let d = lisp_datagrams("tcpdump/lisp_invalid_length.pcap", LISP_CONTROL_PORT);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].payload.len(), 8);
    assert!(matches!(
        Message::parse(&d[0].payload),
        Err(Error::Truncated | Error::BadType(_))
    ));
}

#[test]
fn tcpdump_register_with_xtr_id_and_ipv6_eids() {
    let d = control("tcpdump/lisp_eid_register.pcap");
    let Message::MapRegister(r) = &d[1].1 else {
        panic!()
    };
    assert!(r.want_map_notify && !r.proxy_reply);
    let x = r.xtr.expect("I bit");
    assert_eq!(x.xtr_id[..4], [0x97, 0x87, 0xad, 0x75]);
    assert_eq!(x.site_id, 0);
    assert_eq!(r.records[1].locators.len(), 2);
    let d = control("tcpdump/lisp_ipv6.pcap");
    let Message::MapRegister(r) = &d[0].1 else {
        panic!()
    };
    // Host bits set below /80: kept as received (same bytes on re-emit), cleared by network().
    let p = r.records[0].eid.prefix;
    assert_eq!(p.to_string(), "2001:db8:85a3::8a2e:370:7334/80");
    assert!(p.has_host_bits());
    assert_eq!(p.network().to_string(), "2001:db8:85a3::/80");
    assert!(matches!(&d[1].1, Message::MapNotify(n) if n.records.len() == 2));
}

#[test]
fn oor_register_and_notify_site1() {
    let d = control("oor/01-map-register-notify-site1.pcap");
    assert_eq!(d.len(), 4);
    let Message::MapRegister(r) = &d[0].1 else {
        panic!()
    };
    assert!(r.want_map_notify && !r.proxy_reply && r.xtr.is_none());
    assert_eq!(r.nonce, 0xffda_ef7b_f6ee_8a3d);
    // OOR's 16-bit "key-id 1" is Key ID 0 + Algorithm ID 1 (HMAC-SHA-1), 20 bytes.
    assert_eq!(
        (r.auth.key_id, r.auth.algorithm_id, r.auth.data.len()),
        (0, 1, 20)
    );
    assert_eq!(r.auth.data[..4], [0x20, 0x35, 0xa6, 0x18]);
    assert_eq!(r.auth.data[18..], [0x7b, 0x99]);
    let rec = &r.records[0];
    assert_eq!(rec.eid.prefix.to_string(), "198.51.100.0/24");
    assert_eq!(rec.eid.instance_id, None);
    assert_eq!(
        (rec.ttl, rec.authoritative, rec.action, rec.map_version),
        (10, true, Action::NoAction, 0)
    );
    let l = &rec.locators[0];
    assert_eq!(l.address, ip("192.0.2.17"));
    assert_eq!(
        (l.priority, l.weight, l.m_priority, l.m_weight),
        (1, 100, 255, 0)
    );
    assert!(l.local && !l.probed && l.reachable);
    let Message::MapNotify(n) = &d[1].1 else {
        panic!()
    };
    assert_eq!(n.nonce, r.nonce);
    assert_eq!(n.records[0].eid, rec.eid);
    assert!(!n.records[0].locators[0].local && n.records[0].locators[0].reachable);
    let Message::MapRegister(r6) = &d[2].1 else {
        panic!()
    };
    assert_eq!(r6.records[0].eid.prefix.to_string(), "2001:db8:1::/48");
    assert_eq!(r6.records[0].locators[0].address, ip("192.0.2.17"));
    for (u, _) in &d {
        auth::verify(&u.payload, b"site1-secret").unwrap();
        assert_eq!(
            auth::verify(&u.payload, b"site2-secret"),
            Err(auth::AuthError::Mismatch)
        );
    }
}

#[test]
fn oor_hmacs_verify_only_with_their_keys() {
    let cases: &[(&str, &[u8])] = &[
        ("oor/01-map-register-notify-site1.pcap", b"site1-secret"),
        (
            "oor/02-map-register-notify-site2-proxy-reply.pcap",
            b"site2-secret",
        ),
        (
            "oor/09-dual-rloc-v4v6-register-request-reply-data.pcap",
            b"site1-secret",
        ),
        (
            "oor/10-map-register-wrong-key-no-notify-retries.pcap",
            b"wrong-key",
        ),
        ("scapy/lisp-handbuilt.pcap", b"site1-secret"),
    ];
    let keys: [&[u8]; 3] = [b"site1-secret", b"site2-secret", b"wrong-key"];
    let mut checked = 0;
    for (file, key) in cases {
        for (u, m) in control(file) {
            if !matches!(
                m,
                Message::MapRegister(_) | Message::MapNotify(_) | Message::MapNotifyAck(_)
            ) {
                continue;
            }
            auth::verify(&u.payload, key)
                .unwrap_or_else(|e| panic!("{file} frame {}: {e}", u.frame));
            for other in keys.iter().filter(|k| *k != key) {
                assert_eq!(
                    auth::verify(&u.payload, other),
                    Err(auth::AuthError::Mismatch),
                    "{file} frame {}",
                    u.frame
                );
            }
            // Re-signing the parsed-and-re-emitted message reproduces the peer's MAC.
            let mut again = m.to_vec().unwrap();
            again[16..36].fill(0);
            auth::sign(&mut again, key).unwrap();
            assert_eq!(again, u.payload);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} authenticated messages");
}

#[test]
fn oor_proxy_reply_register() {
    let d = control("oor/02-map-register-notify-site2-proxy-reply.pcap");
    let regs: Vec<_> = d
        .iter()
        .filter_map(|(_, m)| {
            if let Message::MapRegister(r) = m {
                Some(r)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(regs.len(), 2);
    assert!(regs.iter().all(|r| r.proxy_reply && r.want_map_notify));
    let eids: Vec<_> = regs
        .iter()
        .map(|r| r.records[0].eid.prefix.to_string())
        .collect();
    assert_eq!(eids, ["203.0.113.0/24", "2001:db8:2::/48"]);
}

#[test]
fn oor_ecm_map_request_and_proxy_reply() {
    let d = control("oor/03-ecm-map-request-ms-proxy-map-reply.pcap");
    let Message::Ecm(e) = &d[0].1 else { panic!() };
    assert!(!e.security && !e.ddt);
    assert_eq!(
        (d[0].0.src, d[0].0.dst),
        (ip("192.0.2.17"), ip("192.0.2.1"))
    );
    let control::InnerIp::V4 {
        src,
        dst,
        ttl,
        dont_fragment,
        ..
    } = e.ip
    else {
        panic!()
    };
    assert_eq!(
        (src, dst),
        (
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::new(203, 0, 113, 10)
        )
    );
    assert_eq!(
        (ttl, dont_fragment, e.src_port, e.dst_port),
        (255, true, 4342, 4342)
    );
    let Message::MapRequest(q) = &*e.message else {
        panic!()
    };
    assert!(
        !q.authoritative
            && !q.probe
            && !q.smr
            && !q.smr_invoked
            && !q.pitr
            && q.map_reply.is_none()
    );
    assert_eq!(q.nonce, 0x24dd_7f7f_ef7e_8d24);
    assert_eq!(q.itr_rlocs, [ip("192.0.2.17")]);
    assert_eq!(q.source_eid, control::Address::ip(ip("198.51.100.10")));
    assert_eq!(q.eids.len(), 1);
    assert_eq!(q.eids[0].prefix.to_string(), "203.0.113.10/32");
    // The inner message re-emits as the captured inner UDP payload: after the ECM header (4),
    // the inner IPv4 header (20) and the inner UDP header (8).
    assert_eq!(e.message.to_vec().unwrap(), d[0].0.payload[4 + 20 + 8..]);
    let Message::MapReply(r) = &d[1].1 else {
        panic!()
    };
    assert_eq!(r.nonce, q.nonce);
    assert!(!r.probe);
    let rec = &r.records[0];
    assert_eq!(
        (rec.eid.prefix.to_string(), rec.ttl, rec.authoritative),
        ("203.0.113.0/24".into(), 10, false)
    );
    let l = &rec.locators[0];
    assert_eq!(
        (l.address, l.priority, l.weight, l.local, l.reachable),
        (ip("192.0.2.33"), 1, 100, false, true)
    );
    // IPv6 EID over IPv4 outer: inner header IPv6.
    let Message::Ecm(e6) = &d[2].1 else { panic!() };
    assert!(matches!(e6.ip, control::InnerIp::V6 { hop_limit: 255, .. }));
    assert_eq!(e6.ip.dst(), ip("2001:db8:2::10"));
    let Message::MapRequest(q6) = &*e6.message else {
        panic!()
    };
    assert_eq!(q6.eids[0].prefix.to_string(), "2001:db8:2::10/128");
    let Message::MapReply(r6) = &d[3].1 else {
        panic!()
    };
    assert_eq!(r6.records[0].eid.prefix.to_string(), "2001:db8:2::/48");
}

#[test]
fn oor_forwarded_ecm_and_etr_reply() {
    let d = control("oor/04-ecm-map-request-forwarded-etr-map-reply.pcap");
    // The map-server forwards the ECM byte for byte.
    assert_eq!(d[0].0.payload, d[1].0.payload);
    let Message::Ecm(e) = &d[0].1 else { panic!() };
    assert_eq!(
        (e.ip.src(), e.ip.dst()),
        (ip("203.0.113.10"), ip("198.51.100.10"))
    );
    let Message::MapReply(r) = &d[2].1 else {
        panic!()
    };
    assert_eq!(
        (d[2].0.src, d[2].0.dst),
        (ip("192.0.2.17"), ip("192.0.2.33"))
    );
    assert!(r.records[0].authoritative);
    let l = &r.records[0].locators[0];
    assert!(l.local && l.reachable && !l.probed);
}

#[test]
fn oor_rloc_probes() {
    let d = control("oor/07-rloc-probe-request-reply.pcap");
    let mut reqs = 0;
    let mut replies = 0;
    for (_, m) in &d {
        match m {
            Message::MapRequest(q) => {
                assert!(q.probe);
                assert_eq!(q.source_eid, control::Address::NONE);
                assert_eq!(q.itr_rlocs.len(), 1);
                assert_eq!(q.eids.len(), 1);
                reqs += 1;
            }
            Message::MapReply(r) => {
                assert!(r.probe);
                assert!(r.records[0].authoritative);
                let l = &r.records[0].locators[0];
                assert!(l.local && l.probed && l.reachable);
                replies += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(reqs >= 2 && replies >= 2);
}

#[test]
fn oor_negative_replies() {
    for (file, prefix, ttl) in [
        (
            "oor/08-ecm-map-request-negative-map-reply.pcap",
            "192.0.0.0/6",
            15,
        ),
        (
            "oor/11-ecm-map-request-negative-reply-not-registered.pcap",
            "198.51.100.10/32",
            1,
        ),
    ] {
        let d = control(file);
        let r = first(&d, "Map-Reply", |m| match m {
            Message::MapReply(r) => Some(r),
            _ => None,
        });
        let rec = &r.records[0];
        assert!(rec.is_negative());
        assert_eq!(
            (
                rec.eid.prefix.to_string(),
                rec.ttl,
                rec.action,
                rec.authoritative
            ),
            (prefix.into(), ttl, Action::NativelyForward, true)
        );
    }
}

#[test]
fn oor_dual_rloc() {
    let d = control("oor/09-dual-rloc-v4v6-register-request-reply-data.pcap");
    let reg = first(&d, "Map-Register", |m| match m {
        Message::MapRegister(r) => Some(r),
        _ => None,
    });
    let locs: Vec<_> = reg.records[0]
        .locators
        .iter()
        .map(|l| (l.address, l.priority))
        .collect();
    assert_eq!(locs, [(ip("192.0.2.17"), 1), (ip("2001:db8:ff:11::1"), 2)]);
    let q = first(&d, "ECM Map-Request", |m| match m {
        Message::Ecm(e) => match &*e.message {
            Message::MapRequest(q) => Some(q),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(q.itr_rlocs.len(), 2);
    assert!(q.itr_rlocs[0].is_ipv6() && q.itr_rlocs[1].is_ipv4());
    let rep = first(&d, "Map-Reply", |m| match m {
        Message::MapReply(r) => Some(r),
        _ => None,
    });
    assert_eq!(rep.records[0].locators.len(), 2);
}

#[test]
fn python_xtr_ecm_from_ephemeral_port() {
    let d = control("oor/12-python-xtr-vs-oor-ms-ephemeral-port.pcap");
    let e = first(&d, "ECM", |m| match m {
        Message::Ecm(e) => Some(e),
        _ => None,
    });
    assert_ne!(e.src_port, 4342);
    assert_eq!(e.dst_port, 4342);
    assert!(
        d.iter()
            .any(|(_, m)| matches!(m, Message::MapRegister(r) if r.proxy_reply))
    );
}

fn data_headers(file: &str) -> Vec<(Udp, data::Repr)> {
    lisp_datagrams(file, LISP_DATA_PORT)
        .into_iter()
        .filter(|u| u.dport == LISP_DATA_PORT)
        .map(|u| {
            let p = data::Packet::new_checked(&u.payload[..]).unwrap();
            let r = data::Repr::parse(&p).unwrap();
            (u, r)
        })
        .collect()
}

#[test]
fn oor_data_packets() {
    for (file, inner_version) in [
        ("oor/05-lisp-data-ipv4-in-ipv4-ping.pcap", Some(4)),
        ("oor/06-lisp-data-ipv6-in-ipv4-ping.pcap", Some(6)),
        (
            "oor/09-dual-rloc-v4v6-register-request-reply-data.pcap",
            None,
        ),
    ] {
        let d = data_headers(file);
        assert!(d.len() >= 2, "{file}");
        for (u, r) in &d {
            // OOR: 8 zero bytes, fixed source port 4341.
            assert_eq!(*r, data::Repr::default(), "{file} frame {}", u.frame);
            assert_eq!(u.sport, 4341);
            let v = u.payload[data::HEADER_LEN] >> 4;
            if let Some(want) = inner_version {
                assert_eq!(v, want);
            } else {
                assert!(v == 4 || v == 6);
            }
            let mut again = u.payload.clone();
            r.emit(&mut data::Packet::new_unchecked(&mut again[..]))
                .unwrap();
            assert_eq!(again, u.payload);
            for cut in 0..data::HEADER_LEN {
                assert_eq!(
                    data::Packet::new_checked(&u.payload[..cut]).err(),
                    Some(data::Error::Truncated)
                );
            }
        }
    }
    // File 09 has data with an IPv6 outer header.
    assert!(
        data_headers("oor/09-dual-rloc-v4v6-register-request-reply-data.pcap")
            .iter()
            .any(|(u, _)| u.src.is_ipv6())
    );
}

#[test]
fn scapy_data_packet_with_nonce_and_instance_id() {
    let d = data_headers("scapy/lisp-handbuilt.pcap");
    assert_eq!(d.len(), 1);
    let (u, r) = &d[0];
    assert_eq!(r.nonce, Some(0x12_3456));
    assert_eq!(r.instance_id, Some(0));
    assert_eq!((r.lsb, r.map_version, r.echo_nonce), (None, None, false));
    assert_eq!(u.sport, 61000);
    let p = data::Packet::new_checked(&u.payload[..]).unwrap();
    assert_eq!(p.payload()[0] >> 4, 4);
}
