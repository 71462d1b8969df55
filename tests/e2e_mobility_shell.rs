//! The mobility shell of a running agent, end to end in network namespaces (needs root): xTR A
//! of the lab (`support/lab.rs`) with a dynamic-EID map on its EID interface `eid0`.
//!
//! - the local API: `lisp-agent show dynamic-eid [--summary] [--json] --socket PATH` against
//!   the live agent, its JSON parsed back; the socket is root's (0600) and gone after the stop;
//! - the map-notify-group: a datagram host A sends to the group out of its link reaches the
//!   agent as a group datagram on `eid0` (the control socket joined the group there; the shell
//!   logs and counts what it hands the core as `Event::GroupDatagram`);
//! - host routes: a route of our protocol (246) left over by an earlier run is removed at start,
//!   routes of other protocols are not, and ours are removed at stop;
//! - the SVI's subnets, read from the kernel at start: a dynamic prefix not more specific than
//!   one of them stops the agent with the config's error.
//!
//! What the core does with group datagrams and which host routes it asks for are the mobility
//! core's (tests/e2e_mobility.rs); this test is about the shell's side.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::lab::{self, AgentOptions, HA, ITR, series};
use support::netns::{self, Topology, in_netns};

const GROUP: &str = "239.1.1.254";

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lisp-agent"))
}

/// xTR A's lab config with a dynamic-EID map on `eid0`, debug logs, and its own API socket.
/// The map's dynamic prefix leaves out host A (198.51.100.10) and its map-server (the core,
/// which is no map-server) is never reached: nothing here is detected or registered.
fn config(api: &Path) -> String {
    let base = lab::config_a(&AgentOptions {
        log_level: "debug",
        ..AgentOptions::default()
    });
    let interfaces = base
        .find("interfaces:\n")
        .expect("lab config has interfaces");
    format!(
        "{}api-socket: {}\ndynamic-eid-maps:\n  - name: Roamer-1\n    instance-id: 0\n    \
         database-mappings:\n      - {{ eid-prefix: 198.51.100.128/25, locators: [{{ address: {}, priority: 1, weight: 100 }}] }}\n    \
         map-notify-group: {GROUP}\n    \
         map-servers: [{{ address: 192.0.2.1, key: unused }}]\n{}",
        &base[..interfaces],
        api.display(),
        lab::RLOC_A_V4,
        base[interfaces..].replace(
            "  - name: eid0\n    role: eid\n    instance-id: 0\n",
            "  - name: eid0\n    role: eid\n    instance-id: 0\n    mobility: Roamer-1\n",
        )
    )
}

fn show(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(agent_bin())
        .arg("show")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn routes_246(t: &Topology) -> String {
    let out = t
        .ip(ITR, &["route", "show", "table", "all", "proto", "246"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn api_group_socket_and_route_cleanup_of_a_live_agent() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispmsh");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();

    // A crashed run's host route, and a route that is not ours.
    t.ip(
        ITR,
        &[
            "route",
            "add",
            "198.51.100.250/32",
            "dev",
            "eid0",
            "proto",
            "246",
        ],
    )
    .unwrap();
    t.ip(
        ITR,
        &[
            "route",
            "add",
            "198.51.100.251/32",
            "dev",
            "eid0",
            "proto",
            "static",
        ],
    )
    .unwrap();

    let api = t.workdir.join("a-api.sock");
    let yaml = config(&api);

    // The kernel's subnets of eid0 are part of the config's rules: with a /25 on it as wide as
    // the dynamic prefix, the agent refuses to start and says why.
    t.ip(ITR, &["addr", "add", "198.51.100.129/25", "dev", "eid0"])
        .unwrap();
    let path = t.workdir.join("agent-wide.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let bin = agent_bin().to_str().unwrap().to_string();
    let w = t
        .spawn(
            ITR,
            "agent-wide",
            &[&bin, "--config", path.to_str().unwrap()],
        )
        .unwrap();
    let exited = Topology::wait_for(Duration::from_secs(30), || Ok(!t.proc(w).running())).unwrap();
    assert!(exited, "agent started over a too wide subnet");
    assert!(
        t.proc(w).log_text().contains(
            "dynamic-EID prefix 198.51.100.128/25 of map 'Roamer-1' must be more specific than the subnet 198.51.100.128/25 of eid0"
        ),
        "{}",
        t.proc(w).log_text()
    );
    t.ip(ITR, &["addr", "del", "198.51.100.129/25", "dev", "eid0"])
        .unwrap();

    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "agent-a", &yaml).unwrap();
    let log = |t: &mut Topology| t.proc(a).log_text();

    // Leftovers of our protocol gone, the static route kept.
    assert_eq!(routes_246(&t), "", "leftover host route not removed");
    let kept = t.ip(ITR, &["route", "show", "198.51.100.251/32"]).unwrap();
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("proto static"),
        "a route that is not ours was touched"
    );
    assert!(
        log(&mut t).contains("removed 1 host route(s) left over by an earlier run"),
        "{}",
        log(&mut t)
    );
    assert!(
        log(&mut t).contains(&format!(
            "map-notify-group {GROUP} of dynamic-eid map Roamer-1 joined on eid0"
        )),
        "{}",
        log(&mut t)
    );

    // The API socket: root's only.
    let mode = std::fs::metadata(&api).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "API socket mode");
    let sock = api.to_str().unwrap();

    // JSON, parsed back: no dynamic EID has been seen yet.
    let (ok, out, err) = show(&["dynamic-eid", "--json", "--socket", sock]);
    assert!(ok, "show --json failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("show --json prints JSON");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["dynamic-eids"], serde_json::json!([]), "{v}");
    // The table: its header and the count.
    let (ok, out, err) = show(&["dynamic-eid", "--socket", sock]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "Map  EID  Interface  Uptime  Last packet  Origin\n0 dynamic EID(s)\n"
    );
    let (ok, out, err) = show(&["dynamic-eid", "--summary", "--json", "--socket", sock]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["local"], 0, "{v}");
    assert_eq!(v["maps"], serde_json::json!([]), "{v}");
    // Without an agent behind the path: a clear error and exit code 1.
    let (ok, _, err) = show(&["dynamic-eid", "--socket", "/nonexistent/api.sock"]);
    assert!(!ok);
    assert!(err.contains("cannot reach the agent"), "{err}");

    // Host A sends to the map-notify-group out of its link to xTR A's eid0.
    let group: std::net::Ipv4Addr = GROUP.parse().unwrap();
    in_netns(&t.ns(HA), || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        // Out of eth0: its address selects it.
        let mreq = libc::in_addr {
            s_addr: u32::from_ne_bytes(lab::HA_V4.parse::<std::net::Ipv4Addr>()?.octets()),
        };
        // SAFETY: setsockopt with a live in_addr and its size.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&raw const mreq).cast(),
                size_of::<libc::in_addr>() as u32,
            )
        };
        anyhow::ensure!(
            r == 0,
            "IP_MULTICAST_IF: {}",
            std::io::Error::last_os_error()
        );
        s.send_to(b"not a real Map-Notify", (group, 4342))?;
        Ok(())
    })
    .unwrap();
    let line = format!("group datagram from {}:", lab::HA_V4);
    let arrived = Topology::wait_for(Duration::from_secs(5), || {
        Ok(log(&mut t)
            .lines()
            .any(|l| l.contains(&line) && l.contains(&format!("to {GROUP} on eid0 (21 bytes)"))))
    })
    .unwrap();
    assert!(arrived, "no group datagram on eid0:\n{}", log(&mut t));
    let counted = "lisp_mobility_shell_total{event=\"group_datagram_received\"}";
    let mut m = String::new();
    Topology::wait_for(Duration::from_secs(3), || {
        m = lab::metrics_text(&t.ns(ITR))?;
        Ok(series(&m, counted).is_some_and(|n| n > 0))
    })
    .unwrap();
    assert_eq!(series(&m, counted), Some(1), "{m}");
    assert!(m.contains("lisp_mobility_total{event=\"detected\"}"), "{m}");
    assert!(m.contains("lisp_dynamic_eids{origin=\"local\"} 0"), "{m}");

    // At stop: our routes go (one added behind the agent's back stands for those it added),
    // the API socket too.
    t.ip(
        ITR,
        &[
            "route",
            "add",
            "198.51.100.252/32",
            "dev",
            "eid0",
            "proto",
            "246",
        ],
    )
    .unwrap();
    let st = t.stop(a).expect("agent exit status");
    assert!(st.success(), "agent exit: {st:?}\n{}", log(&mut t));
    assert_eq!(routes_246(&t), "", "host routes left after stop");
    assert!(!api.exists(), "API socket left after stop");
}

/// The three parts together (XDP detection, the core's mobility role, this shell): a host of
/// the dynamic prefix sends one packet on `eid0` (extended-subnet mode: its address is inside
/// eid0's subnet) and the agent shows it as a local dynamic EID, with its host route and the
/// data plane's entry (no second detection for its next packets).
#[test]
fn a_detected_host_gets_its_route_and_is_shown() {
    if !netns::is_root() {
        panic!("this end-to-end test needs root (network namespaces, XDP)");
    }
    let prefix = netns::unique_prefix("lispmsd");
    let mut t = Topology::new(&prefix, &netns::workdir(&prefix)).unwrap();
    lab::build(&mut t).unwrap();
    let _pass = lab::attach_pass(&t, lisp_agent::dataplane::object::bytecode(), None).unwrap();
    let api = t.workdir.join("a-api.sock");
    let yaml = config(&api).replace(
        "    mobility: Roamer-1\n",
        "    mobility: Roamer-1\n    extended-subnet-mode: true\n",
    );
    let a = lab::start_agent(&mut t, &agent_bin(), ITR, "agent-a", &yaml).unwrap();

    // The host: a second address of host A's, inside the dynamic prefix.
    t.ip(HA, &["addr", "add", "198.51.100.130/24", "dev", "eth0"])
        .unwrap();
    let sent = t
        .exec(
            HA,
            &[
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                "198.51.100.130",
                "198.51.100.1",
            ],
        )
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stdout)
    );
    let shown = Topology::wait_for(Duration::from_secs(5), || {
        let (ok, out, _) = show(&["dynamic-eid", "--json", "--socket", api.to_str().unwrap()]);
        Ok(ok && out.contains("198.51.100.130"))
    })
    .unwrap();
    assert!(shown, "not shown; agent log:\n{}", t.proc(a).log_text());
    let (_, out, _) = show(&["dynamic-eid", "--json", "--socket", api.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &v["dynamic-eids"][0];
    assert_eq!(row["eid"], "198.51.100.130", "{v}");
    assert_eq!(row["origin"], "local", "{v}");
    assert_eq!(row["interface"], "eid0", "{v}");
    assert_eq!(row["map"], "Roamer-1", "{v}");
    let route = Topology::wait_for(Duration::from_secs(5), || {
        Ok(routes_246(&t).contains("198.51.100.130 dev eid0 scope link"))
    })
    .unwrap();
    assert!(
        route,
        "no host route: {:?}\n{}",
        routes_246(&t),
        t.proc(a).log_text()
    );
    let log = t.proc(a).log_text();
    assert!(
        log.contains("dynamic-eid 198.51.100.130 detected on eid0 (Roamer-1, "),
        "{log}"
    );
    let mut m = String::new();
    Topology::wait_for(Duration::from_secs(3), || {
        m = lab::metrics_text(&t.ns(ITR))?;
        Ok(series(&m, "lisp_dynamic_eids{origin=\"local\"}") == Some(1))
    })
    .unwrap();
    assert_eq!(
        series(&m, "lisp_mobility_total{event=\"detected\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        series(&m, "lisp_mobility_shell_total{event=\"local_eid_written\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            "lisp_mobility_shell_total{event=\"group_datagram_sent\"}"
        ),
        Some(1),
        "{m}"
    );
    let st = t.stop(a).expect("agent exit status");
    assert!(st.success());
    assert_eq!(routes_246(&t), "", "host route left after stop");
}
