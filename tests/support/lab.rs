//! The lab topology shared by the end-to-end test, `cargo xtask lab` and `cargo xtask bench`:
//!
//! ```text
//!  ha ── eth0 ═ eid0 ── itr ── rloc0 ═ itr0 ── core ── etr0 ═ rloc0 ── etr ── eid0 ═ eth0 ── hb
//!  198.51.100.10       xTR A    192.0.2.10      192.0.2.1/.65   192.0.2.74  xTR B      203.0.113.10
//!  2001:db8:1::10             2001:db8:ff:1::10                2001:db8:ff:2::10     2001:db8:2::10
//! ```
//!
//! Both xTRs have both roles (ITR and ETR), so replies come back encapsulated. The core only
//! routes the RLOC subnets: it has no route for EID prefixes, so EID traffic can only cross it
//! inside LISP. xTR A's map-cache points at B's IPv4 RLOC (IPv4 outer), B's at A's IPv6 RLOC
//! (IPv6 outer): one ping in each direction covers all four inner/outer family combinations.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::netns::{Topology, in_netns};

pub const HA_V4: &str = "198.51.100.10";
pub const HA_V6: &str = "2001:db8:1::10";
pub const HB_V4: &str = "203.0.113.10";
pub const HB_V6: &str = "2001:db8:2::10";
pub const RLOC_A_V4: &str = "192.0.2.10";
pub const RLOC_A_V6: &str = "2001:db8:ff:1::10";
pub const RLOC_B_V4: &str = "192.0.2.74";
pub const RLOC_B_V6: &str = "2001:db8:ff:2::10";
pub const SITE_A: [&str; 2] = ["198.51.100.0/24", "2001:db8:1::/48"];
pub const SITE_B: [&str; 2] = ["203.0.113.0/24", "2001:db8:2::/48"];

/// Namespace short names, upstream to downstream.
pub const HA: &str = "ha";
pub const ITR: &str = "itr";
pub const CORE: &str = "core";
pub const ETR: &str = "etr";
pub const HB: &str = "hb";

/// Fixed MACs: every namespace is private, so the same MACs in two labs never meet; fixed values
/// let the lab install permanent neighbour entries without asking the kernel.
pub const MAC_HA: &str = "02:00:00:00:0a:01";
pub const MAC_ITR_EID: &str = "02:00:00:00:0a:02";
pub const MAC_ITR_RLOC: &str = "02:00:00:00:01:02";
pub const MAC_CORE_ITR: &str = "02:00:00:00:01:01";
pub const MAC_CORE_ETR: &str = "02:00:00:00:02:01";
pub const MAC_ETR_RLOC: &str = "02:00:00:00:02:02";
pub const MAC_ETR_EID: &str = "02:00:00:00:0b:02";
pub const MAC_HB: &str = "02:00:00:00:0b:01";

/// Underlay MTU: 1500-byte EID packets plus 56 bytes of IPv6/UDP/LISP must fit.
pub const UNDERLAY_MTU: u32 = 1600;
/// Where each agent serves Prometheus metrics, inside its own namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9464";

/// Interfaces that get the pass-through XDP program: the peers of the interfaces the xTRs
/// redirect into (native XDP_REDIRECT into a veth is dropped unless the peer runs XDP).
pub const PASS_IFACES: [(&str, &str); 4] =
    [(HA, "eth0"), (CORE, "itr0"), (CORE, "etr0"), (HB, "eth0")];

/// Creates the five namespaces, links, addresses, routes and neighbours.
pub fn build(t: &mut Topology) -> Result<()> {
    for ns in [HA, ITR, CORE, ETR, HB] {
        t.add_ns(ns)?;
    }
    for r in [ITR, CORE, ETR] {
        t.router(r)?;
    }
    t.veth(HA, "eth0", MAC_HA, ITR, "eid0", MAC_ITR_EID, 1500)?;
    t.veth(
        ITR,
        "rloc0",
        MAC_ITR_RLOC,
        CORE,
        "itr0",
        MAC_CORE_ITR,
        UNDERLAY_MTU,
    )?;
    t.veth(
        CORE,
        "etr0",
        MAC_CORE_ETR,
        ETR,
        "rloc0",
        MAC_ETR_RLOC,
        UNDERLAY_MTU,
    )?;
    t.veth(ETR, "eid0", MAC_ETR_EID, HB, "eth0", MAC_HB, 1500)?;

    // The hosts compute their checksums in software. A local sender on a veth otherwise leaves
    // UDP/TCP checksums "partial" (offloaded), and once XDP has redirected the frame the metadata
    // saying so is gone: the far host drops the datagram as corrupt. Hosts behind a real NIC or
    // wire always send complete checksums; this makes the lab's hosts behave like them.
    for h in [HA, HB] {
        t.exec(h, &["ethtool", "-K", "eth0", "tx", "off"])?;
    }

    t.addr(HA, "eth0", "198.51.100.10/24")?;
    t.addr(HA, "eth0", "2001:db8:1::10/48")?;
    t.addr(ITR, "eid0", "198.51.100.1/24")?;
    t.addr(ITR, "eid0", "2001:db8:1::1/48")?;
    t.addr(ITR, "rloc0", "192.0.2.10/26")?;
    t.addr(ITR, "rloc0", "2001:db8:ff:1::10/64")?;
    t.addr(CORE, "itr0", "192.0.2.1/26")?;
    t.addr(CORE, "itr0", "2001:db8:ff:1::1/64")?;
    t.addr(CORE, "etr0", "192.0.2.65/26")?;
    t.addr(CORE, "etr0", "2001:db8:ff:2::1/64")?;
    t.addr(ETR, "rloc0", "192.0.2.74/26")?;
    t.addr(ETR, "rloc0", "2001:db8:ff:2::10/64")?;
    t.addr(ETR, "eid0", "203.0.113.1/24")?;
    t.addr(ETR, "eid0", "2001:db8:2::1/48")?;
    t.addr(HB, "eth0", "203.0.113.10/24")?;
    t.addr(HB, "eth0", "2001:db8:2::10/48")?;

    // Hosts: default route to their xTR. xTRs: only the far RLOC subnet, via the core. Nobody
    // routes the remote EID prefixes natively, so without LISP EID traffic dies at the xTR.
    t.route(HA, "default", "198.51.100.1")?;
    t.route(HA, "default", "2001:db8:1::1")?;
    t.route(HB, "default", "203.0.113.1")?;
    t.route(HB, "default", "2001:db8:2::1")?;
    t.route(ITR, "192.0.2.64/26", "192.0.2.1")?;
    t.route(ITR, "2001:db8:ff:2::/64", "2001:db8:ff:1::1")?;
    t.route(ETR, "192.0.2.0/26", "192.0.2.65")?;
    t.route(ETR, "2001:db8:ff:1::/64", "2001:db8:ff:2::1")?;

    for (ns, dev, ip, mac) in [
        (HA, "eth0", "198.51.100.1", MAC_ITR_EID),
        (HA, "eth0", "2001:db8:1::1", MAC_ITR_EID),
        (ITR, "eid0", HA_V4, MAC_HA),
        (ITR, "eid0", HA_V6, MAC_HA),
        (ITR, "rloc0", "192.0.2.1", MAC_CORE_ITR),
        (ITR, "rloc0", "2001:db8:ff:1::1", MAC_CORE_ITR),
        (CORE, "itr0", RLOC_A_V4, MAC_ITR_RLOC),
        (CORE, "itr0", RLOC_A_V6, MAC_ITR_RLOC),
        (CORE, "etr0", RLOC_B_V4, MAC_ETR_RLOC),
        (CORE, "etr0", RLOC_B_V6, MAC_ETR_RLOC),
        (ETR, "rloc0", "192.0.2.65", MAC_CORE_ETR),
        (ETR, "rloc0", "2001:db8:ff:2::1", MAC_CORE_ETR),
        (ETR, "eid0", HB_V4, MAC_HB),
        (ETR, "eid0", HB_V6, MAC_HB),
        (HB, "eth0", "203.0.113.1", MAC_ETR_EID),
        (HB, "eth0", "2001:db8:2::1", MAC_ETR_EID),
    ] {
        t.neigh(ns, dev, ip, mac)?;
    }
    Ok(())
}

/// Options of the generated agent configurations.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `data-nonce` of xTR A (B gets the opposite, so a capture shows which side sent what).
    pub nonce_a: bool,
    pub xdp_mode: &'static str,
    pub log_level: &'static str,
    /// Instance-id of both sites' EIDs (0: no I bit on the wire).
    pub instance_id: u32,
    /// `ipv6-udp-checksum` of both agents (computed UDP checksums in IPv6 outer headers).
    pub ipv6_udp_checksum: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            nonce_a: true,
            xdp_mode: "auto",
            log_level: "info",
            instance_id: 0,
            ipv6_udp_checksum: false,
        }
    }
}

/// YAML configuration of xTR A (namespace `itr`): remote site B reached at B's IPv4 RLOC.
pub fn config_a(o: &AgentOptions) -> String {
    config(
        o,
        o.nonce_a,
        (RLOC_A_V4, RLOC_A_V6),
        SITE_A,
        SITE_B,
        RLOC_B_V4,
    )
}

/// YAML configuration of xTR B (namespace `etr`): remote site A reached at A's IPv6 RLOC.
pub fn config_b(o: &AgentOptions) -> String {
    config(
        o,
        !o.nonce_a,
        (RLOC_B_V4, RLOC_B_V6),
        SITE_B,
        SITE_A,
        RLOC_A_V6,
    )
}

fn config(
    o: &AgentOptions,
    nonce: bool,
    (rloc4, rloc6): (&str, &str),
    own: [&str; 2],
    remote: [&str; 2],
    remote_rloc: &str,
) -> String {
    format!(
        r#"# Generated by the lab (tests/support/lab.rs).
log-level: {log}
xdp-mode: {mode}
itr: true
etr: true
metrics-listen: "{metrics}"
locators:
  ipv4: {rloc4}
  ipv6: "{rloc6}"
data-nonce: {nonce}
ipv6-udp-checksum: {csum}
database-mappings:
  - eid-prefix: {own4}
    instance-id: {iid}
    locators:
      - {{ address: {rloc4}, priority: 1, weight: 100 }}
      - {{ address: "{rloc6}", priority: 2, weight: 100 }}
  - eid-prefix: "{own6}"
    instance-id: {iid}
    locators:
      - {{ address: {rloc4}, priority: 1, weight: 100 }}
      - {{ address: "{rloc6}", priority: 2, weight: 100 }}
eid-space:
  - {rem4}
  - "{rem6}"
map-cache:
  - eid-prefix: {rem4}
    instance-id: {iid}
    locators:
      - {{ address: "{remote_rloc}", priority: 1, weight: 100 }}
  - eid-prefix: "{rem6}"
    instance-id: {iid}
    locators:
      - {{ address: "{remote_rloc}", priority: 1, weight: 100 }}
instance-tables:
  - {{ instance-id: {iid}, table: main }}
interfaces:
  - name: eid0
    role: eid
    instance-id: {iid}
  - name: rloc0
    role: rloc
"#,
        log = o.log_level,
        csum = o.ipv6_udp_checksum,
        iid = o.instance_id,
        mode = o.xdp_mode,
        metrics = METRICS_ADDR,
        own4 = own[0],
        own6 = own[1],
        rem4 = remote[0],
        rem6 = remote[1],
    )
}

/// Writes both configurations into the topology's workdir and starts the two agents; waits until
/// both serve metrics (i.e. have loaded and attached). Returns the process handles (A, B).
pub fn start_agents(t: &mut Topology, agent: &Path, o: &AgentOptions) -> Result<(usize, usize)> {
    let ca = t.workdir.join("xtr-a.yaml");
    let cb = t.workdir.join("xtr-b.yaml");
    std::fs::write(&ca, config_a(o))?;
    std::fs::write(&cb, config_b(o))?;
    let bin = agent.to_str().context("agent path")?.to_string();
    let a = t.spawn(
        ITR,
        "agent-a",
        &[&bin, "--config", ca.to_str().context("path")?],
    )?;
    let b = t.spawn(
        ETR,
        "agent-b",
        &[&bin, "--config", cb.to_str().context("path")?],
    )?;
    for (h, ns) in [(a, ITR), (b, ETR)] {
        let name = t.ns(ns);
        let up = Topology::wait_for(Duration::from_secs(30), || {
            Ok(!t.proc(h).running() || metrics(&name).is_ok())
        })? && t.proc(h).running();
        if !up {
            let p = t.proc(h);
            let status = if p.running() {
                "running, but no metrics endpoint"
            } else {
                "exited"
            };
            bail!(
                "agent in {ns} not ready ({status}); its log:\n{}",
                p.log_text()
            );
        }
    }
    Ok((a, b))
}

/// The agent's `lisp_xdp_packets_total` counters by outcome (summed over any other labels).
pub fn metrics(ns: &str) -> Result<BTreeMap<String, u64>> {
    Ok(parse_counters(&metrics_text(ns)?))
}

/// Picks `lisp_xdp_packets_total{...outcome="X"...} N` lines out of a Prometheus text exposition.
pub fn parse_counters(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lisp_xdp_packets_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(outcome) = labels.split(',').find_map(|kv| {
            kv.trim()
                .strip_prefix("outcome=\"")
                .and_then(|v| v.strip_suffix('"'))
        }) else {
            continue;
        };
        let Ok(v) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        *out.entry(outcome.to_string()).or_insert(0) += v as u64;
    }
    out
}

/// `after - before` for one counter (0 where absent).
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after
        .get(name)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// Pass-through XDP programs on the peers of the xTRs (see [`PASS_IFACES`]); detached on drop.
pub struct PassPrograms {
    _ebpf: aya::Ebpf,
}

/// Loads the data-plane object (maps shrunk: only `xdp_pass` is used from this copy) and attaches
/// `xdp_pass` natively on [`PASS_IFACES`]. With `pin_dir`, the links are pinned there so they
/// outlive this process (`lab --keep`); otherwise they go when the returned value is dropped.
pub fn attach_pass(t: &Topology, object: &[u8], pin_dir: Option<&Path>) -> Result<PassPrograms> {
    attach_pass_to(t, object, &PASS_IFACES, pin_dir)
}

/// [`attach_pass`] on the given (namespace, interface) pairs (other topologies' peers).
pub fn attach_pass_to(
    t: &Topology,
    object: &[u8],
    ifaces: &[(&str, &str)],
    pin_dir: Option<&Path>,
) -> Result<PassPrograms> {
    let mut ebpf = load_small(object)?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(lisp_common::maps::PROG_XDP_PASS)
        .context("object has no xdp_pass program")?
        .try_into()?;
    prog.load()?;
    for &(ns, dev) in ifaces {
        let id = in_netns(&t.ns(ns), || {
            prog.attach(dev, aya::programs::xdp::XdpMode::Driver)
                .with_context(|| format!("attaching xdp_pass to {dev} in {ns}"))
        })?;
        if let Some(dir) = pin_dir {
            let link = prog.take_link(id)?;
            let fd: aya::programs::links::FdLink = link.try_into()?;
            let path = dir.join(format!("{}{ns}-{dev}", t.prefix()));
            let _ = std::fs::remove_file(&path);
            fd.pin(&path)
                .with_context(|| format!("pinning the xdp_pass link at {}", path.display()))?;
        }
    }
    Ok(PassPrograms { _ebpf: ebpf })
}

/// Loads the object with its big maps shrunk, for programs that do not use them.
pub fn load_small(object: &[u8]) -> Result<aya::Ebpf> {
    use lisp_common::maps::*;
    let mut l = aya::EbpfLoader::new();
    for m in [MAP_CACHE_HOST, MAP_CACHE_PREFIX, EID_SPACE, EVENT_RATE] {
        l.map_max_entries(m, 16);
    }
    l.load(object).context("loading the XDP object")
}

/// Pings `dst` from namespace `ns` `count` times (0.1 s apart); returns the replies received.
/// Echoes lost when host A first pings host B with neither xTR knowing the other site, and the
/// map-resolvers answer: exactly two. The first echo request misses at xTR A (no map-cache entry:
/// it triggers A's Map-Request and is not encapsulated); the resolution takes about a millisecond,
/// far less than [`ping`]'s 100 ms interval, so the second request reaches host B, whose echo
/// reply misses at xTR B (B has not resolved A's site) and triggers B's Map-Request. From the
/// third echo on both map-caches are filled. (Neither xTR learns the other's mapping from the
/// Map-Request it answers: RFC 9301 gleaning is not implemented.)
pub const FIRST_CONTACT_LOSS: u32 = 2;

/// The pings [`ping`] sends per second (`-i 0.1`).
pub const PINGS_PER_SECOND: u32 = 10;

pub fn ping(t: &Topology, ns: &str, dst: &str, count: u32) -> Result<u32> {
    ping_sized(t, ns, dst, count, 56)
}

/// [`ping`] with `size` bytes of ICMP payload, sent with "don't fragment" (IPv4), so that a
/// full-size packet that does not fit once encapsulated fails instead of being fragmented.
pub fn ping_sized(t: &Topology, ns: &str, dst: &str, count: u32, size: u32) -> Result<u32> {
    let (count, size) = (count.to_string(), size.to_string());
    let mut args = vec![
        "ping", "-n", "-c", &count, "-i", "0.1", "-W", "1", "-s", &size,
    ];
    if !dst.contains(':') {
        args.extend(["-M", "do"]);
    }
    args.push(dst);
    let out = t.command(ns, &args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, ..."
    let received = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(received)
}

/// Sends `count` UDP datagrams from `src_ns` (`src` address) to `dst:port` in `dst_ns`, each
/// echoed back by the receiver. Returns (received at the far end, echoes received back).
pub fn udp_echo(
    t: &Topology,
    (src_ns, src): (&str, &str),
    (dst_ns, dst): (&str, &str),
    port: u16,
    count: u32,
) -> Result<(u32, u32)> {
    use std::net::{SocketAddr, UdpSocket};
    let dst_addr: SocketAddr = SocketAddr::new(dst.parse()?, port);
    let src_addr: SocketAddr = SocketAddr::new(src.parse()?, 0);
    // Each socket is created on a thread inside its namespace and stays bound to it afterwards.
    let server = in_netns(&t.ns(dst_ns), || Ok(UdpSocket::bind(dst_addr)?))?;
    let client = in_netns(&t.ns(src_ns), || Ok(UdpSocket::bind(src_addr)?))?;
    server.set_read_timeout(Some(Duration::from_millis(500)))?;
    client.set_read_timeout(Some(Duration::from_millis(500)))?;
    let (mut got, mut echoed) = (0, 0);
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let msg = format!("lisp-lab datagram {i}");
        client.send_to(msg.as_bytes(), dst_addr)?;
        if let Ok((n, from)) = server.recv_from(&mut buf)
            && &buf[..n] == msg.as_bytes()
        {
            got += 1;
            server.send_to(&buf[..n], from)?;
            if let Ok((n, _)) = client.recv_from(&mut buf)
                && &buf[..n] == msg.as_bytes()
            {
                echoed += 1;
            }
        }
    }
    Ok((got, echoed))
}

/// Starts tcpdump on `dev` in `ns` writing `file`; returns once it is capturing.
pub fn start_capture(t: &mut Topology, ns: &str, dev: &str, file: &Path) -> Result<usize> {
    let name = format!("tcpdump-{ns}-{dev}");
    let f = file.to_str().context("path")?.to_string();
    let h = t.spawn(
        ns,
        &name,
        &[
            "tcpdump",
            "-i",
            dev,
            "-n",
            // Without it packets wait in the kernel ring for up to a second and are lost when
            // tcpdump is stopped.
            "--immediate-mode",
            // Immediate mode uses a ring of snaplen-sized slots: with the default 256 KiB snaplen
            // a 2 MiB ring holds 8 packets and a burst overflows it.
            "-s",
            "2048",
            "-B",
            "8192",
            "-U",
            "-w",
            &f,
        ],
    )?;
    let ok = Topology::wait_for(Duration::from_secs(10), || {
        Ok(t.proc(h).log_text().contains("listening on"))
    })?;
    if !ok {
        bail!("tcpdump did not start: {}", t.proc(h).log_text());
    }
    Ok(h)
}

/// tshark preferences of every decode: verify the IPv4 header and UDP checksums (outer and
/// inner), and accept a zero UDP checksum over IPv6, which RFC 6935/6936 allow for tunnel
/// protocols and which LISP uses (RFC 9300 §5.3); without it Wireshark flags every IPv6-outer
/// LISP packet "Illegal checksum value (0)".
pub const TSHARK_PREFS: [&str; 3] = [
    "ip.check_checksum:TRUE",
    "udp.check_checksum:TRUE",
    "udp.ignore_ipv6_zero_checksum:TRUE",
];

/// Decodes a capture with tshark: `tshark -r FILE [-Y FILTER] -T fields -e ...`, one row per
/// frame, every occurrence of a field joined by ','.
pub fn tshark_fields(
    file: &Path,
    filter: Option<&str>,
    fields: &[&str],
) -> Result<Vec<Vec<String>>> {
    let mut c = std::process::Command::new("tshark");
    c.arg("-n").arg("-r").arg(file);
    c.args(TSHARK_PREFS.iter().flat_map(|p| ["-o", p]));
    if let Some(f) = filter {
        c.args(["-Y", f]);
    }
    c.args([
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        c.args(["-e", f]);
    }
    let out = super::netns::run(&mut c)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// Map-Request → Map-Reply round trips in a capture, in milliseconds, in capture order: from the
/// first ECM (type 8) carrying a nonce to the first Map-Reply (type 2) with the same nonce (a
/// forwarded ECM keeps the ITR's nonce). `and_filter` narrows the frames further (e.g. one
/// direction of a link).
pub fn request_reply_ms(file: &Path, and_filter: Option<&str>) -> Result<Vec<f64>> {
    let types = "lisp.type == 8 || lisp.type == 2";
    let filter = match and_filter {
        Some(f) => format!("({types}) && {f}"),
        None => types.to_string(),
    };
    let rows = tshark_fields(
        file,
        Some(&filter),
        &["frame.time_relative", "lisp.type", "lisp.nonce"],
    )?;
    let mut asked = BTreeMap::new();
    let mut took = Vec::new();
    for r in &rows {
        let (Some(at), Some(ty), Some(nonce)) = (r.first(), r.get(1), r.get(2)) else {
            continue;
        };
        let at: f64 = at.parse().unwrap_or(0.0);
        let nonce = nonce.split(',').next().unwrap_or("").to_string();
        if ty.starts_with('8') {
            asked.entry(nonce).or_insert(at);
        } else if let Some(t0) = asked.remove(&nonce) {
            took.push((at - t0) * 1000.0);
        }
    }
    Ok(took)
}

// ------------------------------------------------------------------------- the mapping system
//
// Map-server/map-resolver nodes (lisp-agent with `map-server.enabled`) hang off the core, each on
// its own /27 of 192.0.2.128/26, and the xTRs register with them instead of carrying a static
// map-cache. Used by `cargo xtask lab`, `cargo xtask bench` and tests/e2e_control.rs.

/// One map-server node: its namespace, the veth pair to the core and its addresses.
#[derive(Clone, Copy, Debug)]
pub struct MapServerNode {
    /// Namespace short name; also the name of the core's interface towards it.
    pub ns: &'static str,
    pub core_mac: &'static str,
    pub ms_mac: &'static str,
    /// The core's address on the link, with its prefix length.
    pub core_cidr: &'static str,
    /// The map-server's address on the link, with its prefix length.
    pub ms_cidr: &'static str,
}

impl MapServerNode {
    /// The map-server's address (what the xTRs register with and send Map-Requests to).
    pub fn addr(&self) -> &'static str {
        self.ms_cidr.split('/').next().unwrap_or(self.ms_cidr)
    }
}

pub const MS1: MapServerNode = MapServerNode {
    ns: "ms1",
    core_mac: "02:00:00:00:0c:01",
    ms_mac: "02:00:00:00:0c:02",
    core_cidr: "192.0.2.129/27",
    ms_cidr: "192.0.2.130/27",
};

pub const MS2: MapServerNode = MapServerNode {
    ns: "ms2",
    core_mac: "02:00:00:00:0d:01",
    ms_mac: "02:00:00:00:0d:02",
    core_cidr: "192.0.2.161/27",
    ms_cidr: "192.0.2.162/27",
};

/// Adds map-server namespaces off the core (after [`build`]) and the xTRs' routes to them.
pub fn add_map_servers(t: &mut Topology, nodes: &[MapServerNode]) -> Result<()> {
    for n in nodes {
        t.add_ns(n.ns)?;
        t.veth(CORE, n.ns, n.core_mac, n.ns, "ms0", n.ms_mac, 1500)?;
        t.addr(CORE, n.ns, n.core_cidr)?;
        t.addr(n.ns, "ms0", n.ms_cidr)?;
        let gw = n.core_cidr.split('/').next().unwrap_or(n.core_cidr);
        t.route(n.ns, "default", gw)?;
    }
    // The xTRs only route the far RLOC subnet; add the map-servers' ones.
    t.route(ITR, "192.0.2.128/26", "192.0.2.1")?;
    t.route(ETR, "192.0.2.128/26", "192.0.2.65")?;
    // Control messages are sent by the kernel: on a veth it leaves UDP checksums "partial"
    // (offloaded), which a capture on the core shows as bad. A real NIC would fill them in;
    // software checksums make the capture show what a wire would carry.
    t.exec(ITR, &["ethtool", "-K", "rloc0", "tx", "off"])?;
    t.exec(ETR, &["ethtool", "-K", "rloc0", "tx", "off"])?;
    for n in nodes {
        t.exec(n.ns, &["ethtool", "-K", "ms0", "tx", "off"])?;
    }
    Ok(())
}

/// The authentication of one site: shared key and `key-algorithm` (`hmac-sha-256`/`hmac-sha-1`).
#[derive(Clone, Copy, Debug)]
pub struct SiteKey {
    pub key: &'static str,
    pub algorithm: &'static str,
}

/// Configuration of a map-server/map-resolver at `addr` serving site A (more-specifics
/// accepted) and site B (exact prefixes) of the lab.
pub fn map_server_config(addr: &str, a: SiteKey, b: SiteKey) -> String {
    map_server_config_in(addr, a, b, 0)
}

/// As [`map_server_config`], with the site prefixes in instance-id `iid`.
pub fn map_server_config_in(addr: &str, a: SiteKey, b: SiteKey, iid: u32) -> String {
    format!(
        r#"# Generated by the lab (tests/support/lab.rs): map-server / map-resolver.
log-level: debug
locators:
  ipv4: {addr}
metrics-listen: "{metrics}"
interfaces:
  - {{ name: ms0, role: rloc }}
map-server:
  enabled: true
  sites:
    - name: site-a
      key: {ka}
      key-algorithm: {aa}
      eid-prefixes:
        - {{ prefix: {a4}, instance-id: {iid}, accept-more-specifics: true }}
        - {{ prefix: "{a6}", instance-id: {iid}, accept-more-specifics: true }}
    - name: site-b
      key: {kb}
      key-algorithm: {ab}
      eid-prefixes:
        - {{ prefix: {b4}, instance-id: {iid} }}
        - {{ prefix: "{b6}", instance-id: {iid} }}
"#,
        metrics = METRICS_ADDR,
        ka = a.key,
        aa = a.algorithm,
        kb = b.key,
        ab = b.algorithm,
        a4 = SITE_A[0],
        a6 = SITE_A[1],
        b4 = SITE_B[0],
        b6 = SITE_B[1],
    )
}

/// One map-server an xTR registers with; `proxy_reply` asks it to answer Map-Requests for the
/// xTR's EIDs itself instead of forwarding them to the xTR.
#[derive(Clone, Copy, Debug)]
pub struct Registration<'a> {
    pub map_server: &'a str,
    pub proxy_reply: bool,
}

/// A lab xTR configuration ([`config_a`] / [`config_b`]) with its static map-cache taken out and
/// the mapping system put in: it registers with `map_servers` every `register_interval_s` and
/// resolves through `map_resolvers`; only `eid-space` says which destinations to ask for.
pub fn xtr_config(
    lab_yaml: &str,
    key: SiteKey,
    register_interval_s: u64,
    map_servers: &[Registration],
    map_resolvers: &[&str],
) -> Result<String> {
    let start = lab_yaml
        .find("map-cache:\n")
        .context("lab config has no map-cache")?;
    let end = lab_yaml
        .find("instance-tables:")
        .context("lab config has no instance-tables")?;
    let mut y = format!("{}{}", &lab_yaml[..start], &lab_yaml[end..]);
    y = y.replace("log-level: info", "log-level: debug");
    y.push_str(&format!(
        "register-interval: {register_interval_s}s\nmap-servers:\n"
    ));
    for r in map_servers {
        y.push_str(&format!(
            "  - {{ address: {}, key: {}, key-algorithm: {}, proxy-reply: {} }}\n",
            r.map_server, key.key, key.algorithm, r.proxy_reply
        ));
    }
    y.push_str("map-resolvers:\n");
    for r in map_resolvers {
        y.push_str(&format!("  - {r}\n"));
    }
    Ok(y)
}

/// Writes `yaml` to `workdir/NAME.yaml`, starts the agent with it in `ns` (log in
/// `workdir/NAME.log`) and waits until it serves metrics, i.e. has loaded and attached.
pub fn start_agent(
    t: &mut Topology,
    agent: &Path,
    ns: &str,
    name: &str,
    yaml: &str,
) -> Result<usize> {
    let path = t.workdir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    let bin = agent.to_str().context("agent path")?.to_string();
    let h = t.spawn(
        ns,
        name,
        &[&bin, "--config", path.to_str().context("config path")?],
    )?;
    let full = t.ns(ns);
    let up = Topology::wait_for(Duration::from_secs(30), || {
        Ok(!t.proc(h).running() || metrics(&full).is_ok())
    })? && t.proc(h).running();
    if !up {
        bail!(
            "agent {name} in {ns} did not come up; its log:\n{}",
            t.proc(h).log_text()
        );
    }
    Ok(h)
}

/// The raw Prometheus text of the agent in namespace `ns` (full name).
pub fn metrics_text(ns: &str) -> Result<String> {
    let body = in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&METRICS_ADDR.parse()?, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: lab\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })?;
    if !body.starts_with("HTTP/1.") || !body.contains(" 200") {
        bail!(
            "metrics: unexpected answer: {}",
            body.lines().next().unwrap_or("")
        );
    }
    Ok(body)
}

/// The value of the series `name` (its exact text up to the value, labels included).
pub fn series(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.trim();
        v.parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
    })
}

/// The non-zero series of metric `metric` as (label value, value), e.g. every
/// `lisp_xtr_total{event="..."} N` with N > 0.
pub fn nonzero_series(text: &str, metric: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let label = labels
            .split_once("=\"")
            .map(|(_, v)| v.trim_end_matches('"'))
            .unwrap_or(labels);
        if let Ok(v) = value.trim().parse::<u64>()
            && v > 0
        {
            out.push((label.to_string(), v));
        }
    }
    out
}

/// `Udp: InErrors` of namespace `short` (datagrams the kernel dropped on receive, receive-buffer
/// overflows included): tells a rejection the agent never saw from one it did not count.
pub fn udp_in_errors(t: &Topology, short: &str) -> Result<u64> {
    // /proc/net follows the network namespace of the reading process.
    let out = t.exec(short, &["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InErrors")
        .and_then(|(_, v)| v.parse().ok())
        .context("no Udp InErrors in /proc/net/snmp")
}
