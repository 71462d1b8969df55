//! VM mobility end to end, in network namespaces (needs root): the topology of
//! `support/mobility.rs` — two data-centre sites with an xTR each (site A optionally multihomed),
//! a map-server, a remote site whose host streams UDP to the VM — in both modes.
//!
//! `topology_scaffolding` proves the lab itself, without any agent: the VM reaches its own
//! site's SVI, the map-notify-group crosses the LAN extension (and only it), a re-plug moves
//! the VM's cable and nothing else, and a stream loses only what is sent while unplugged.

mod support;

use std::time::{Duration, Instant};

use support::mobility::{self as mob, Mode, Options, Site};
use support::netns::{self, Topology};
use support::stream::Stream;

fn workdir(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lisp-e2e-{}", prefix.trim_end_matches('-')))
}

fn topology(tag: &str) -> Topology {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix(tag);
    Topology::new(&prefix, &workdir(&prefix)).unwrap()
}

/// Without agents: what the lab's wiring alone must already do, in each mode.
#[test]
fn topology_scaffolding() {
    for mode in [Mode::ExtendedSubnet, Mode::AcrossSubnet] {
        scaffolding(mode);
    }
}

fn scaffolding(mode: Mode) {
    let mut t = topology("lispmobs");
    let mut m = mob::build(
        &mut t,
        Options {
            mode,
            multihomed: true,
        },
    )
    .unwrap();
    let ping = |t: &Topology, ns: &str, dst: &str| mob::reachable(t, ns, dst).unwrap();

    // At home: the VM reaches both site-A SVIs and the gateway; the remote host its ITR; the
    // core every RLOC.
    for dst in [
        mob::XA_SVI_V4,
        mob::XA_SVI_V6,
        mob::XA2_SVI_V4,
        mob::GW_V4,
        mob::GW_V6,
    ] {
        assert!(ping(&t, mob::VM, dst), "{mode:?}: VM at home -> {dst}");
    }
    assert!(ping(&t, mob::RH, mob::RI_EID_V4));
    assert!(ping(&t, mob::RH, mob::RI_EID_V6));
    for r in [
        mob::RLOC_A,
        mob::RLOC_A2,
        mob::RLOC_B,
        mob::RLOC_R,
        mob::MS_ADDR,
    ] {
        assert!(ping(&t, mob::CORE, r), "core -> {r}");
    }
    // No EID routing in the underlay: the remote host cannot reach the VM without LISP.
    assert!(
        !ping(&t, mob::RH, mob::VM_V4),
        "{mode:?}: EID reachable natively"
    );

    // The map-notify-group (TTL 1): site A's other xTR always hears it; site B only across the
    // LAN extension.
    let xa2 = mob::join_group(&t, mob::XA2, mob::XA2_SVI_V4, mob::GROUP, 4342).unwrap();
    mob::send_group(&t, mob::XA, mob::XA_SVI_V4, mob::GROUP, 4342, b"site A").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = xa2
        .recv_from(&mut buf)
        .expect("xa2 hears xa's group datagram");
    assert_eq!(
        (&buf[..n], from.ip().to_string().as_str()),
        (&b"site A"[..], mob::XA_SVI_V4)
    );
    if mode == Mode::ExtendedSubnet {
        let xa = mob::join_group(&t, mob::XA, mob::XA_SVI_V4, mob::GROUP, 4342).unwrap();
        mob::send_group(&t, mob::XB, mob::XB_SVI_V4, mob::GROUP, 4342, b"site B").unwrap();
        let (n, _) = xa.recv_from(&mut buf).expect("group crosses the extension");
        assert_eq!(&buf[..n], b"site B");
        // The gateway MAC stays at each site's own xTR: B's frames from the VMAC crossing the
        // extension did not move site A's FDB entry.
        let fdb = String::from_utf8_lossy(
            &t.exec(mob::LAN_A, &["bridge", "fdb", "show", "br", "br0"])
                .unwrap()
                .stdout,
        )
        .to_string();
        let vmac_ports: Vec<&str> = fdb.lines().filter(|l| l.starts_with(mob::VMAC)).collect();
        assert!(
            !vmac_ports.is_empty()
                && vmac_ports
                    .iter()
                    .all(|l| l.contains(&format!("dev {}", mob::XA))),
            "VMAC not pinned to xa's port in lana: {vmac_ports:?}"
        );
    }

    // A stream from the VM to xTR A's SVI across the move: in extended-subnet mode it keeps
    // arriving across the extension, and only datagrams sent while the cable is out are lost.
    let epoch = Instant::now();
    let s = Stream::start(
        &t,
        (mob::VM, mob::VM_V4),
        (mob::XA, mob::XA_SVI_V4),
        40000,
        1000,
        epoch,
    )
    .unwrap();
    assert!(
        s.wait_received(100, Duration::from_secs(2)),
        "stream at home"
    );
    let unplug = s.now();
    m.move_vm(&t, Site::B).unwrap();
    let plugged = s.now();
    std::thread::sleep(Duration::from_millis(300));
    let r = s.stop().unwrap();
    eprintln!(
        "{mode:?}: move took {:.2} ms; VM -> xa stream: {}",
        (plugged - unplug).as_secs_f64() * 1e3,
        r.summary()
    );
    match mode {
        Mode::ExtendedSubnet => {
            assert_eq!(
                r.lost_sent_after(plugged),
                Vec::<u64>::new(),
                "{}",
                r.summary()
            );
            assert!(r.lost_runs().len() <= 1, "{}", r.summary());
        }
        Mode::AcrossSubnet => {
            // Nothing sent after the unplug arrives: the cable is really elsewhere.
            let after = r.first_sent_after(plugged).unwrap().0;
            assert!(r.lost().contains(&after) && r.lost().last() == Some(&(r.sent() - 1)));
        }
    }

    // In site B: B's SVI is local; site A only across the extension.
    let (b4, b6) = m.b_svi();
    if mode == Mode::AcrossSubnet {
        // What the agent's host route will do (a kernel route here, no agent yet).
        t.ip(
            mob::XB,
            &[
                "route",
                "add",
                &format!("{}/32", mob::VM_V4),
                "dev",
                mob::SVI,
            ],
        )
        .unwrap();
        t.ip(
            mob::XB,
            &[
                "-6",
                "route",
                "add",
                &format!("{}/128", mob::VM_V6),
                "dev",
                mob::SVI,
            ],
        )
        .unwrap();
    }
    assert!(ping(&t, mob::VM, b4), "{mode:?}: VM in B -> {b4}");
    assert!(ping(&t, mob::VM, b6), "{mode:?}: VM in B -> {b6}");
    assert_eq!(
        ping(&t, mob::VM, mob::XA_SVI_V4),
        mode == Mode::ExtendedSubnet,
        "{mode:?}: VM in B -> site A's SVI"
    );
    // The VM kept its address, MAC and gateway entry.
    let n = mob::neighbour_state(&t, mob::VM, mob::VM_IF, mob::GW_V4).unwrap();
    assert!(n.contains(mob::VMAC) && n.contains("PERMANENT"), "{n}");

    // And back home.
    m.move_vm(&t, Site::A).unwrap();
    assert!(ping(&t, mob::VM, mob::XA_SVI_V4), "{mode:?}: VM back in A");
    if mode == Mode::AcrossSubnet {
        assert!(
            !ping(&t, mob::VM, b4),
            "{mode:?}: VM back in A still reaches B's own subnet"
        );
    }
}
