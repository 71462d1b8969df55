//! The real `lisp-agent` binary: `--check` on good and broken configs (no root needed), and a
//! run inside network namespaces (root): attach, map contents, a miss event, metrics, and a
//! clean detach on SIGTERM.

#[allow(dead_code)]
#[path = "../../tests/support/netns.rs"]
mod netns;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData};
use lisp_common::maps::{
    self as m, AF_IPV4, EID_KEY_PREFIX_BITS, EidKey, InterfaceConfig, MapCacheEntry, Settings,
    action, iface_flags, settings_flags,
};
use netns::Topology;

fn agent() -> &'static str {
    env!("CARGO_BIN_EXE_lisp-agent")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lisp-agent.example.yaml")
}

/// A scratch directory unique to this process and test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lisp-agent-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_accepts_the_example() {
    let out = Command::new(agent())
        .args(["--check", "--config"])
        .arg(example())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_refuses_broken_configs_with_exit_2_and_the_problem() {
    let good = std::fs::read_to_string(example()).unwrap();
    let dir = scratch("broken");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "priority",
            good.replace("priority: 1, weight: 50 }", "priority: 300, weight: 50 }"),
            "map-cache[0].locators[0]: priority 300 out of range 0..=255",
        ),
        (
            "mobility",
            good.replace("mobility: vm-mobility", "mobility: x"),
            "interfaces[0]: unknown dynamic-eid map 'x'",
        ),
        (
            "hostbits",
            good.replace("- 203.0.113.0/24\n  - 2001", "- 203.0.113.7/24\n  - 2001"),
            "eid-space[0]: prefix 203.0.113.7/24 has host bits set",
        ),
        (
            "unknown-key",
            format!("{good}\nfrobnicate: true\n"),
            "frobnicate",
        ),
        ("not-yaml", "locators: [".to_string(), "line"),
    ];
    for (name, text, needle) in cases {
        assert_ne!(text, good, "case {name} did not change the example");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(agent())
            .args(["--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {name}: {err}");
        assert!(
            err.contains(needle),
            "case {name}: {err:?} lacks {needle:?}"
        );
        assert!(
            err.contains(&*path.to_string_lossy()),
            "case {name}: file not named: {err}"
        );
    }
    // A file that does not exist is refused the same way.
    let out = Command::new(agent())
        .args(["--check", "--config", "/nonexistent/lisp-agent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_interface_fails_with_exit_1_naming_it() {
    // Resolved before anything is loaded: no root needed, nothing touched.
    let dir = scratch("noif");
    let path = dir.join("noif.yaml");
    std::fs::write(
        &path,
        "locators: { ipv4: 192.0.2.17 }\ninterfaces: [{ name: nosuchif0, role: eid }]\n",
    )
    .unwrap();
    let out = Command::new(agent())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interfaces[0]: interface 'nosuchif0' does not exist"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

const METRICS: &str = "127.0.0.1:9400";

fn http_metrics(ns: &str) -> anyhow::Result<String> {
    netns::in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&METRICS.parse()?, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn link_details(t: &Topology, ns: &str, ifname: &str) -> String {
    let out = t.ip(ns, &["-d", "link", "show", ifname]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id of the XDP program on a link, from `ip -d link` ("prog/xdp id 42").
fn xdp_prog_id(details: &str) -> Option<u32> {
    let i = details.find("prog/xdp id ")?;
    details[i + "prog/xdp id ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A map's name as the kernel keeps it: BPF object names are cut to 15 bytes
/// (`MAP_CACHE_PREFIX` becomes `MAP_CACHE_PREFI`).
fn take(maps: &mut std::collections::HashMap<String, MapData>, name: &str) -> MapData {
    let kname = &name[..name.len().min(15)];
    maps.remove(kname)
        .unwrap_or_else(|| panic!("program has no map {kname}: {:?}", maps.keys()))
}

/// The maps of a loaded program, by name (BPF objects are global, not per namespace).
fn maps_of(prog_id: u32) -> std::collections::HashMap<String, MapData> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .expect("attached program is loaded");
    let mut out = std::collections::HashMap::new();
    for id in info.map_ids().unwrap().unwrap_or_default() {
        let mi = aya::maps::MapInfo::from_id(id).unwrap();
        if let Some(name) = mi.name_as_str() {
            out.insert(name.to_string(), MapData::from_id(id).unwrap());
        }
    }
    out
}

fn v4key(a: [u8; 4]) -> EidKey {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a);
    EidKey::new(AF_IPV4, 0, b)
}

#[test]
fn runs_attaches_writes_maps_reports_misses_and_detaches_on_sigterm() {
    // A skip would pass without testing anything: fail as the other root-only tests do.
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces, XDP); run `cargo xtask test` as root"
    );
    let dir = scratch("run");
    let mut t = Topology::new(&netns::unique_prefix("h3cli"), &dir).unwrap();
    t.add_ns("r").unwrap();
    t.add_ns("h").unwrap();
    t.veth(
        "r",
        "eid0",
        "02:00:00:00:0a:02",
        "h",
        "eth0",
        "02:00:00:00:0a:01",
        1500,
    )
    .unwrap();
    t.veth(
        "r",
        "rloc0",
        "02:00:00:00:01:02",
        "h",
        "eth1",
        "02:00:00:00:01:01",
        1600,
    )
    .unwrap();
    t.addr("r", "eid0", "198.51.100.1/24").unwrap();
    t.addr("r", "rloc0", "192.0.2.17/24").unwrap();
    t.addr("h", "eth0", "198.51.100.10/24").unwrap();
    t.route("h", "203.0.113.0/24", "198.51.100.1").unwrap();
    t.router("r").unwrap();

    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"log-level: debug
metrics-listen: "{METRICS}"
locators: {{ ipv4: 192.0.2.17 }}
eid-space: [203.0.113.0/24]
map-cache:
  - eid-prefix: 203.0.113.128/25
    locators: [{{ address: 192.0.2.33, priority: 1, weight: 100 }}]
  - eid-prefix: 203.0.113.200/32
    locators: [{{ address: 192.0.2.34, priority: 1, weight: 100 }}]
  - {{ eid-prefix: 203.0.113.64/26, action: drop }}
instance-tables: [{{ instance-id: 0, table: main }}]
interfaces:
  - {{ name: eid0, role: eid }}
  - {{ name: rloc0, role: rloc, xdp-mode: generic }}
"#
        ),
    )
    .unwrap();
    let h = t
        .spawn("r", "agent", &[agent(), "--config", cfg.to_str().unwrap()])
        .unwrap();
    let ns_r = t.ns("r");
    // Up when it serves metrics (loaded, attached); stop waiting early if it exits.
    Topology::wait_for(Duration::from_secs(20), || {
        Ok(!t.proc(h).running() || http_metrics(&ns_r).is_ok())
    })
    .unwrap();
    assert!(
        t.proc(h).running() && http_metrics(&ns_r).is_ok(),
        "agent not up; log:\n{}",
        t.proc(h).log_text()
    );
    // The kernel accepted the object's BTF (rustc can emit types it refuses; aya then loads
    // without BTF and the verifier's messages lose their source lines).
    assert!(
        !t.proc(h).log_text().contains("BTF couldn't be loaded"),
        "object BTF refused by the kernel:\n{}",
        t.proc(h).log_text()
    );

    // Attached: native on the veth (auto), generic where the config overrides it.
    let eid = link_details(&t, "r", "eid0");
    let rloc = link_details(&t, "r", "rloc0");
    assert!(eid.contains("prog/xdp id"), "no XDP on eid0: {eid}");
    assert!(!eid.contains("xdpgeneric"), "eid0 should be native: {eid}");
    assert!(
        rloc.contains("xdpgeneric"),
        "rloc0 should be generic: {rloc}"
    );

    // The maps hold what the config says.
    let prog = xdp_prog_id(&eid).expect("program id on eid0");
    let mut maps = maps_of(prog);
    let ifaces: HashMap<MapData, u32, InterfaceConfig> =
        HashMap::try_from(Map::HashMap(take(&mut maps, m::INTERFACES))).unwrap();
    let eid_idx = t.ifindex("r", "eid0").unwrap();
    let rloc_idx = t.ifindex("r", "rloc0").unwrap();
    assert_eq!(ifaces.get(&eid_idx, 0).unwrap().flags, iface_flags::ITR);
    assert_eq!(ifaces.get(&rloc_idx, 0).unwrap().flags, iface_flags::ETR);
    let settings: Array<MapData, Settings> =
        Array::try_from(Map::Array(take(&mut maps, m::SETTINGS))).unwrap();
    let s = settings.get(&0, 0).unwrap();
    assert_eq!(s.rloc4, [192, 0, 2, 17]);
    assert_eq!(
        s.flags & settings_flags::HAS_RLOC4,
        settings_flags::HAS_RLOC4
    );
    let prefix: LpmTrie<MapData, EidKey, MapCacheEntry> =
        LpmTrie::try_from(Map::LpmTrie(take(&mut maps, m::MAP_CACHE_PREFIX))).unwrap();
    let e = prefix
        .get(
            &LpmKey::new(EID_KEY_PREFIX_BITS + 25, v4key([203, 0, 113, 128])),
            0,
        )
        .unwrap();
    assert_eq!(e.action, action::ENCAPSULATE);
    assert_eq!(&e.rlocs[0].addr[..4], &[192, 0, 2, 33]);
    let e = prefix
        .get(
            &LpmKey::new(EID_KEY_PREFIX_BITS + 26, v4key([203, 0, 113, 64])),
            0,
        )
        .unwrap();
    assert_eq!(e.action, action::DROP);
    let host: HashMap<MapData, EidKey, MapCacheEntry> =
        HashMap::try_from(Map::HashMap(take(&mut maps, m::MAP_CACHE_HOST))).unwrap();
    let e = host.get(&v4key([203, 0, 113, 200]), 0).unwrap();
    assert_eq!(&e.rlocs[0].addr[..4], &[192, 0, 2, 34]);

    // A packet to an EID-space address without a map-cache entry raises a logged miss event.
    let _ = t
        .command(
            "h",
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "203.0.113.10"],
        )
        .output();
    let want = "map-cache miss: 203.0.113.10 (iid 0) from 198.51.100.10 on eid0";
    let seen = Topology::wait_for(Duration::from_secs(5), || {
        Ok(t.proc(h).log_text().contains(want))
    })
    .unwrap();
    assert!(seen, "no miss logged; log:\n{}", t.proc(h).log_text());
    let text = http_metrics(&ns_r).unwrap();
    assert!(
        metric(&text, "lisp_dataplane_events_received_total").unwrap_or(0) >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "lisp_xdp_packets_total{outcome=\"miss_event\"}").unwrap_or(0) >= 1,
        "{text}"
    );

    // SIGTERM: exit 0 and no XDP left behind.
    let pid = t.proc(h).pid();
    let st = t.stop(h).expect("agent status");
    assert_eq!(
        st.code(),
        Some(0),
        "agent {pid} exit; log:\n{}",
        t.proc(h).log_text()
    );
    for ifname in ["eid0", "rloc0"] {
        let d = link_details(&t, "r", ifname);
        assert!(!d.contains("prog/xdp"), "XDP left on {ifname}: {d}");
    }
    drop(t);
    let _ = std::fs::remove_dir_all(dir);
}
