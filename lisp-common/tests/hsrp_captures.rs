//! The HSRP codec against real and independently written captures: tcpdump's test captures of
//! Cisco routers (coup, election, failover; every hello checked field by field against
//! tcpdump's own verbose decode) and scapy-written v1 / v2 IPv4 / v2 IPv6 hellos (checked
//! against tshark's decode in oor/decodes/hsrpv*.txt). Every packet re-emits byte for byte and
//! every truncation is rejected.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use lisp_common::wire::hsrp::{
    self, DEFAULT_AUTH, Error, Message, OpCode, State, Version, v1, v2, virtual_mac,
};
use support::{Udp, captures_dir, read_frames, udp_datagrams};

fn hsrp_datagrams(rel: &str) -> Vec<Udp> {
    let d: Vec<Udp> = udp_datagrams(&captures_dir().join(rel))
        .into_iter()
        .filter(|u| [hsrp::PORT, hsrp::PORT_V6].contains(&u.dport))
        .collect();
    assert!(!d.is_empty(), "no HSRP datagram in {rel}");
    d
}

/// One line of tcpdump's verbose HSRP decode, by frame number.
#[derive(Debug)]
struct TcpdumpLine {
    frame: usize,
    src: IpAddr,
    text: String,
}

fn tcpdump_decode(rel: &str) -> Vec<TcpdumpLine> {
    let s = std::fs::read_to_string(captures_dir().join(rel)).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    lines
        .chunks(2)
        .map(|c| {
            let frame = c[0].split_whitespace().next().unwrap().parse().unwrap();
            let src_port = c[1].split_whitespace().next().unwrap();
            let src = src_port.rsplit_once('.').unwrap().0.parse().unwrap();
            TcpdumpLine {
                frame,
                src,
                text: c[1].trim().to_string(),
            }
        })
        .collect()
}

fn value<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + key.len()
        + 1;
    text[start..].split_whitespace().next().unwrap()
}

fn round_trips(payload: &[u8]) -> Message {
    let m = Message::parse(payload).unwrap_or_else(|e| panic!("{e}: {payload:02x?}"));
    let mut out = vec![0u8; m.buffer_len()];
    assert_eq!(m.emit(&mut out), Ok(payload.len()));
    assert_eq!(out, payload, "re-emitted differently: {m:?}");
    m
}

/// Every strict prefix of a packet is refused as truncated, except a cut exactly between two
/// v2 TLVs, which is a shorter valid message: it must then parse to the same group state with
/// the later TLVs (the authentication) gone.
fn truncations_rejected(payload: &[u8], full: &Message) {
    for n in 0..payload.len() {
        match (Message::parse(&payload[..n]), full) {
            (Ok(Message::V2(r)), Message::V2(f)) if n == 2 + v2::GROUP_STATE_LEN => {
                assert_eq!(r.group_state, f.group_state);
                assert_eq!(r.auth, v2::Auth::None);
            }
            (Err(Error::Truncated), _) => {}
            (other, _) => panic!("{n} of {} bytes: {other:?}", payload.len()),
        }
    }
}

#[test]
fn tcpdump_captures_match_tcpdumps_decode() {
    // (capture, tcpdump's decode of it, hellos + coups we expect, advertisements)
    for (pcap, out) in [
        ("tcpdump/HSRP_coup.pcap", "tcpdump/hsrp_1-v.out"),
        ("tcpdump/HSRP_election.pcap", "tcpdump/hsrp_2-v.out"),
        ("tcpdump/HSRP_failover.pcap", "tcpdump/hsrp_3-v.out"),
    ] {
        let decode = tcpdump_decode(out);
        let datagrams = hsrp_datagrams(pcap);
        assert_eq!(decode.len(), datagrams.len(), "{pcap}");
        let (mut hellos, mut coups, mut adverts) = (0, 0, 0);
        for (u, line) in datagrams.iter().zip(&decode) {
            assert_eq!((u.frame, u.src), (line.frame, line.src), "{pcap}");
            let m = round_trips(&u.payload);
            truncations_rejected(&u.payload, &m);
            let t = &line.text;
            match m {
                Message::V1(r) => {
                    let op = match r.op {
                        OpCode::Hello => {
                            hellos += 1;
                            "hello"
                        }
                        OpCode::Coup => {
                            coups += 1;
                            "coup"
                        }
                        OpCode::Resign => "resign",
                    };
                    assert!(t.contains(&format!("HSRPv0-{op} 20:")), "{t}");
                    assert_eq!(value(t, "state"), r.state.name(), "{t}");
                    assert_eq!(value(t, "group"), r.group.to_string(), "{t}");
                    assert_eq!(value(t, "addr"), r.vip.to_string(), "{t}");
                    assert_eq!(value(t, "hellotime"), format!("{}s", r.hellotime), "{t}");
                    assert_eq!(value(t, "holdtime"), format!("{}s", r.holdtime), "{t}");
                    assert_eq!(value(t, "priority"), r.priority.to_string(), "{t}");
                    assert_eq!(value(t, "auth"), "\"cisco\"", "{t}");
                    assert_eq!(r.auth, DEFAULT_AUTH);
                }
                Message::V1Advertise(a) => {
                    adverts += 1;
                    // tcpdump does not know op code 3: it prints byte 2 (the TLV type's high
                    // byte) as the state and byte 6 (the advertisement's state) as the group.
                    assert!(t.contains("HSRPv0-unknown (3) 16: state=initial"), "{t}");
                    assert_eq!(value(t, "group"), a.state.to_string(), "{t}");
                    assert_eq!(a.tlv_type, 1);
                    assert!(matches!(a.state, 2 | 3), "{a:?}");
                }
                Message::V2(_) => panic!("v2 in a v1 capture: {t}"),
            }
        }
        // What each capture shows, counted from tcpdump's decode.
        let count = |s: &str| decode.iter().filter(|l| l.text.contains(s)).count();
        assert_eq!(hellos, count("HSRPv0-hello"), "{pcap}");
        assert_eq!(coups, count("HSRPv0-coup"), "{pcap}");
        assert_eq!(adverts, count("HSRPv0-unknown (3)"), "{pcap}");
        assert!(hellos > 0 && adverts > 0, "{pcap}");
    }
    // The coup capture holds exactly one coup, sent from Listen by the priority-200 router.
    let coup: Vec<Message> = hsrp_datagrams("tcpdump/HSRP_coup.pcap")
        .iter()
        .map(|u| Message::parse(&u.payload).unwrap())
        .filter(|m| matches!(m, Message::V1(r) if r.op == OpCode::Coup))
        .collect();
    assert_eq!(coup.len(), 1);
    let Message::V1(c) = coup[0] else {
        unreachable!()
    };
    assert_eq!((c.state, c.priority), (State::Listen, 200));
}

/// The Ethernet source of the only frame of a capture.
fn eth_src(rel: &str) -> [u8; 6] {
    let frames = read_frames(&captures_dir().join(rel));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 1, "Ethernet");
    frames[0].1[6..12].try_into().unwrap()
}

/// The UDP payload tshark showed for frame 1 (oor/decodes/*.udp-payload-hex.txt).
fn decoded_payload(name: &str) -> Vec<u8> {
    let s = std::fs::read_to_string(
        captures_dir().join(format!("oor/decodes/{name}.udp-payload-hex.txt")),
    )
    .unwrap();
    let hex = s.split_whitespace().last().unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn scapy_v1_hello_matches_tshark_decode() {
    let d = hsrp_datagrams("scapy/hsrpv1.pcap");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].payload, decoded_payload("hsrpv1"));
    assert_eq!(
        (d[0].dst, d[0].sport, d[0].dport),
        (IpAddr::V4(hsrp::V1_MULTICAST), 1985, 1985)
    );
    let m = round_trips(&d[0].payload);
    truncations_rejected(&d[0].payload, &m);
    // tshark: Hello, Active (16), Hellotime 3, Holdtime 10, Priority 110, Group 1,
    // Authentication "cisco", Virtual IP 192.0.2.254.
    assert_eq!(
        m,
        Message::V1(v1::Repr {
            op: OpCode::Hello,
            state: State::Active,
            hellotime: 3,
            holdtime: 10,
            priority: 110,
            group: 1,
            auth: DEFAULT_AUTH,
            vip: Ipv4Addr::new(192, 0, 2, 254),
        })
    );
    // The active router sends from the virtual MAC (tshark: All-HSRP-routers_01).
    assert_eq!(
        Some(eth_src("scapy/hsrpv1.pcap")),
        virtual_mac(Version::V1, false, 1)
    );
}

#[test]
fn scapy_v2_hellos_match_tshark_decode() {
    for (name, vip, dst, port, ipv6) in [
        (
            "hsrpv2-ipv4",
            "192.0.2.254",
            IpAddr::V4(hsrp::V2_MULTICAST_V4),
            hsrp::PORT,
            false,
        ),
        (
            "hsrpv2-ipv6",
            "2001:db8:ff::fe",
            IpAddr::V6(hsrp::V2_MULTICAST_V6),
            hsrp::PORT_V6,
            true,
        ),
    ] {
        let rel = format!("scapy/{name}.pcap");
        let d = hsrp_datagrams(&rel);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].payload, decoded_payload(name));
        assert_eq!((d[0].dst, d[0].sport, d[0].dport), (dst, port, port));
        let m = round_trips(&d[0].payload);
        truncations_rejected(&d[0].payload, &m);
        // tshark: Group State TLV Len=40: Version 2, Hello, Active (6), IP Ver. 4 / 6,
        // Group 1, Identifier 02:00:00:00:00:02, Priority 110, Hellotime 3000,
        // Holdtime 10000, Virtual IP; Text Authentication TLV Len=8 "cisco".
        assert_eq!(
            m,
            Message::V2(v2::Repr {
                group_state: v2::GroupState {
                    op: OpCode::Hello,
                    state: State::Active,
                    group: 1,
                    identifier: [2, 0, 0, 0, 0, 2],
                    priority: 110,
                    hellotime_ms: 3000,
                    holdtime_ms: 10000,
                    vip: vip.parse().unwrap(),
                },
                auth: v2::Auth::Text(DEFAULT_AUTH),
            }),
            "{name}"
        );
        assert_eq!(
            Some(eth_src(&rel)),
            virtual_mac(Version::V2, ipv6, 1),
            "{name}"
        );
    }
}

#[test]
fn virtual_macs() {
    assert_eq!(
        virtual_mac(Version::V1, false, 0xab),
        Some([0, 0, 0x0c, 0x07, 0xac, 0xab])
    );
    assert_eq!(virtual_mac(Version::V1, false, 256), None);
    assert_eq!(virtual_mac(Version::V1, true, 1), None);
    assert_eq!(
        virtual_mac(Version::V2, false, 0xabc),
        Some([0, 0, 0x0c, 0x9f, 0xfa, 0xbc])
    );
    assert_eq!(
        virtual_mac(Version::V2, true, 4095),
        Some([0, 0x05, 0x73, 0xa0, 0x0f, 0xff])
    );
    assert_eq!(virtual_mac(Version::V2, false, 4096), None);
}
