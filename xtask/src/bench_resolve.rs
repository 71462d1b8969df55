//! `cargo xtask bench-resolve` (also part of `cargo xtask bench`): Map-Request → Map-Reply
//! latency through the lab's mapping system (figures, not a test).
//!
//! The lab of `cargo xtask lab` (map-server `ms1` off the core, xTR A registered without
//! proxy-reply, xTR B with it) and a small UDP client in the core namespace playing an ITR: it
//! builds each Map-Request with the lisp-common codec, names its own address as ITR-RLOC and
//! times until the Map-Reply with the same nonce arrives. That is what an xTR's map-cache miss
//! costs between sending the request and having the answer to install (the agent's own share on
//! either side — miss event in, map-cache write out — is not in it). Three paths:
//!
//! - proxy-reply: ECM to the map-resolver for a site-B EID; the map-server answers itself;
//! - forwarded: ECM to the map-resolver for a site-A EID; the map-server forwards the ECM to
//!   xTR A, which answers the client directly (one more hop and one more agent);
//! - ETR direct: a plain Map-Request straight to xTR A (no mapping system): the ETR's share.
//!
//! Requests go one at a time (the next when the previous is answered or timed out), the three
//! paths taking turns, with a different host EID each time, alternating IPv4 and IPv6 EIDs.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lisp_common::wire::control::{Address, Ecm, Eid, IpPrefix, MapRequest, Message};

use crate::lab::start_mapping_system;
use crate::support::lab::{self, CORE, MS1};
use crate::support::netns::{Topology, in_netns, is_root, unique_prefix};
use crate::{build_agent, check_interrupt};

/// Resolutions per path.
const N: u32 = 200;
/// Requests per path before the measured ones.
const WARMUP: u32 = 5;
/// A request unanswered this long counts as lost.
const TIMEOUT: Duration = Duration::from_millis(500);
/// The core's addresses on the link to xTR A: the client's source and ITR-RLOC.
const CLIENT_V4: &str = "192.0.2.1";
const CLIENT_V6: &str = "2001:db8:ff:1::1";

#[derive(Clone, Copy)]
enum Path {
    Proxy,
    Forwarded,
    EtrDirect,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Proxy => "ECM Map-Request -> map-server, proxy-reply (site B EID)",
            Path::Forwarded => "ECM Map-Request -> map-server -> ETR (xTR A) (site A EID)",
            Path::EtrDirect => "Map-Request straight to the ETR (xTR A), no map-server",
        }
    }

    /// The i-th EID asked for: a different host each time, IPv4 and IPv6 alternately.
    fn eid(self, i: u32) -> IpAddr {
        let (v4, v6) = match self {
            Path::Proxy => ("203.0.113.0", "2001:db8:2::"),
            Path::Forwarded | Path::EtrDirect => ("198.51.100.0", "2001:db8:1::"),
        };
        let host = 1 + (i / 2) % 250;
        if i.is_multiple_of(2) {
            let mut o = v4.parse::<std::net::Ipv4Addr>().expect("v4").octets();
            o[3] = host as u8;
            IpAddr::from(o)
        } else {
            let mut o = v6.parse::<std::net::Ipv6Addr>().expect("v6").octets();
            o[15] = host as u8;
            IpAddr::from(o)
        }
    }

    fn target(self) -> &'static str {
        match self {
            Path::Proxy | Path::Forwarded => MS1.addr(),
            Path::EtrDirect => lab::RLOC_A_V4,
        }
    }
}

/// The datagram the client sends for request `nonce` about `eid`, replies to `port`.
fn request(path: Path, eid: IpAddr, nonce: u64, port: u16) -> Result<Vec<u8>> {
    let v4: IpAddr = CLIENT_V4.parse()?;
    let req = MapRequest {
        nonce,
        source_eid: Address::NONE,
        itr_rlocs: vec![v4],
        eids: vec![Eid::new(None, IpPrefix::host(eid))],
        ..MapRequest::default()
    };
    let msg = Message::MapRequest(req);
    Ok(match path {
        Path::EtrDirect => msg.to_vec()?,
        Path::Proxy | Path::Forwarded => {
            // The inner header goes from the ITR to the EID asked for, in the EID's family.
            let src: IpAddr = if eid.is_ipv4() {
                v4
            } else {
                CLIENT_V6.parse()?
            };
            let mut ecm = Ecm::new(src, eid, msg)?;
            // Map-Replies go to the inner source port: ours, not 4342.
            ecm.src_port = port;
            Message::Ecm(ecm).to_vec()?
        }
    })
}

/// One request about the `i`-th EID of `path`: its latency in µs, or None if unanswered.
fn one(sock: &UdpSocket, path: Path, i: u32, nonce: u64) -> Result<Option<f64>> {
    let port = sock.local_addr()?.port();
    let to = SocketAddr::new(path.target().parse()?, 4342);
    let mut buf = [0u8; 2048];
    let d = request(path, path.eid(i), nonce, port)?;
    let t0 = Instant::now();
    sock.send_to(&d, to)?;
    loop {
        let left = TIMEOUT.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            return Ok(None);
        };
        // Late answers to earlier (timed-out) requests are skipped.
        if let Ok(Message::MapReply(r)) = Message::parse(&buf[..n])
            && r.nonce == nonce
            && !r.records.is_empty()
        {
            return Ok(Some(t0.elapsed().as_secs_f64() * 1e6));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("the resolution bench needs root (network namespaces, XDP)");
    }
    let started = Instant::now();
    let (agent, object) = build_agent()?;
    crate::catch_sigint();
    let prefix = unique_prefix("lispres");
    let mut t = Topology::new(
        &prefix,
        &std::env::temp_dir().join(format!("lisp-{prefix}")),
    )?;
    lab::build(&mut t)?;
    lab::add_map_servers(&mut t, &[MS1])?;
    let _pass = lab::attach_pass(&t, &object, None)?;
    println!("==> Map-Request -> Map-Reply latency: lab with map-server up ({prefix}*)");
    let (_ms, _a, _b) = start_mapping_system(&mut t, &agent)?;
    let sock = in_netns(&t.ns(CORE), || {
        Ok(UdpSocket::bind(SocketAddr::new(CLIENT_V4.parse()?, 0))?)
    })
    .context("client socket in the core namespace")?;

    // The paths take turns request by request, so that whatever else the machine does at
    // some moment affects all three alike.
    const PATHS: [Path; 3] = [Path::Proxy, Path::Forwarded, Path::EtrDirect];
    let mut nonce = 0xbe7c_0000_0000_0000u64;
    for i in 0..WARMUP {
        // First-use costs (neighbour resolution, allocations), not counted.
        for p in PATHS {
            nonce += 1;
            one(&sock, p, i, nonce)?;
        }
    }
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut lost = [0u32; 3];
    for i in 0..N {
        if i.is_multiple_of(50) {
            check_interrupt()?;
        }
        for (k, p) in PATHS.into_iter().enumerate() {
            nonce += 1;
            match one(&sock, p, i, nonce)? {
                Some(us) => lat[k].push(us),
                None => lost[k] += 1,
            }
        }
    }
    let mut rows = Vec::new();
    for (k, p) in PATHS.into_iter().enumerate() {
        let mut l = std::mem::take(&mut lat[k]);
        l.sort_by(f64::total_cmp);
        rows.push((p, l, lost[k]));
    }
    // The agents rebuild their control-plane metrics text at most every 500 ms.
    std::thread::sleep(Duration::from_millis(1100));
    let ms_metrics = lab::metrics_text(&t.ns(MS1.ns)).unwrap_or_default();

    println!();
    println!(
        "Map-Request -> Map-Reply latency through the lab ({N} sequential requests per path, \
         one host EID each, IPv4/IPv6 alternating; client in the core namespace; agents: debug \
         build; µs)"
    );
    println!("| path | median µs | p99 µs | max µs | answered | lost |");
    println!("|---|---|---|---|---|---|");
    for (path, lat, lost) in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {lost} |",
            path.name(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len()
        );
    }
    println!(
        "map-server: {} ECM Map-Requests, {} proxy replies, {} forwarded to the ETR",
        lab::series(
            &ms_metrics,
            "lisp_map_server_total{event=\"rx_ecm_map_request\"}"
        )
        .unwrap_or(0),
        lab::series(
            &ms_metrics,
            "lisp_map_server_total{event=\"tx_map_reply_proxy\"}"
        )
        .unwrap_or(0),
        lab::series(
            &ms_metrics,
            "lisp_map_server_total{event=\"tx_ecm_forwarded\"}"
        )
        .unwrap_or(0),
    );
    println!(
        "resolution bench took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The agents' logs are of no further use (the lab keeps its own in /tmp/lisp-lab).
    let workdir = t.workdir.clone();
    drop(t);
    let _ = std::fs::remove_dir_all(workdir);
    Ok(())
}
