//! `cargo xtask bench`: figures for the XDP data plane, on the lab topology, in one run.
//!
//! Live traffic: `bench_gen` (lisp-ebpf/src/bench.rs) sends 64-byte frames with
//! BPF_PROG_TEST_RUN + live frames out of the upstream neighbour of the router under test; the
//! router runs the program under test; `bench_count` on the downstream neighbour's ingress counts
//! and drops what the router delivered. One router is measured at a time (single hop), so each
//! figure is that router's path and not the slowest of several:
//!
//! - ITR: hA → itr (xdp_lisp, encapsulate) → core/itr0, with 1, 100k and 1M host entries in the
//!   map-cache, traffic to the one entry it needs; and once more at 1M with the destinations
//!   spread over all entries (each packet another entry: what a table far bigger than the CPU
//!   caches costs when the traffic really uses it);
//! - ETR: core → etr (xdp_lisp, decapsulate) → hb/eth0;
//! - references on the same hops: the plain XDP forwarder `bench_fwd` (fib lookup + MAC
//!   rewrite + redirect) and kernel forwarding (`xdp_pass` on the ingress, as veth requires).
//!
//! Test-run costs (no traffic): ns per packet of `xdp_lisp` encapsulating against the empty
//! `xdp_pass`, and of a bare host-EID lookup (`bench_lookup`) at 1k and 1M entries, for one
//! destination and for destinations spread over the table.
//!
//! The data-plane objects here are loaded by the bench itself and their maps written following
//! lisp_common::maps (not by the agent): the bench measures the XDP program, not the agent.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::maps::{Array, HashMap, PerCpuArray};
use aya::programs::xdp::{XdpLink, XdpMode};
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use lisp_common::maps::*;

use crate::support::lab::{self, CORE, ETR, HA, HB, ITR};
use crate::support::netns::{Topology, in_netns, unique_prefix};
use crate::{build_agent, check_interrupt};

/// Mirror of `GenConfig` in lisp-ebpf/src/bench.rs.
#[repr(C)]
#[derive(Clone, Copy)]
struct GenConfig {
    len: u32,
    flags: u32,
    span: u32,
    _pad: u32,
    frame: [u8; GEN_FRAME_MAX],
}
// SAFETY: repr(C), no implicit padding, any bit pattern valid.
unsafe impl aya::Pod for GenConfig {}
const GEN_FRAME_MAX: usize = 192;
const GEN_VARY_DST6: u32 = 2;

/// Seconds of traffic per live measurement.
const MEASURE: Duration = Duration::from_millis(2000);
const WARMUP: Duration = Duration::from_millis(300);
/// Frames per test-run call (each call has a fixed cost of ~16 ms on this kernel).
const CHUNK: u32 = 1_000_000;
/// Test-run calls per cost figure.
const TR_RUNS: u32 = 100_000;
const LOOKUP_1K: &str = "host-EID lookup, 1k entries, one destination";
const LOOKUP_1M: &str = "host-EID lookup, 1M entries, one destination";

/// The program `name`, loaded into the kernel on first use (so that a figure can be taken of
/// one program even while another in the object does not pass the verifier).
fn xdp<'a>(e: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let p: &mut Xdp = e
        .program_mut(name)
        .with_context(|| format!("no program {name} in the object"))?
        .try_into()?;
    if p.fd().is_err() {
        p.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(p)
}

fn load(object: &[u8], small: bool) -> Result<Ebpf> {
    if small {
        lab::load_small(object)
    } else {
        Ok(aya::EbpfLoader::new().load(object)?)
    }
}

/// Attaches `prog` natively to `dev` in `ns`; detached when the returned link is dropped.
fn attach(e: &mut Ebpf, prog: &str, t: &Topology, ns: &str, dev: &str) -> Result<XdpLink> {
    let p = xdp(e, prog)?;
    let id = in_netns(&t.ns(ns), || {
        p.attach(dev, XdpMode::Driver)
            .with_context(|| format!("attaching {prog} to {dev} in {ns}"))
    })?;
    Ok(p.take_link(id)?)
}

/// The generator runs on this CPU, and with it (softirq of the veth it sends into) the router
/// under test and the counter: one CPU does the whole path, so the rate is 1 / (generator +
/// router + counter cost per frame) and the router's share is what differs between rows.
/// Giving the router its own CPU was tried (threaded NAPI pinned to the other CPU): the
/// generator then overruns the veth ring at ~12 Mpps and the producer/consumer contention on
/// it cut every path to ~0.7 Mpps, which measures the ring and not the router. Unpinned, the
/// softirq lands on either CPU from run to run and the figures varied by ±40 %.
const GEN_CPU: usize = 0;

fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap_or(0);
    }
    m
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("ipv6").octets()
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("ipv4").octets()
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv6 + UDP, `len` bytes in all.
fn frame_v6(dst_mac: &str, src_mac: &str, src: &str, dst: &str, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend(mac(dst_mac));
    f.extend(mac(src_mac));
    f.extend([0x86, 0xdd]);
    let payload = len - 14 - 40;
    f.extend([0x60, 0, 0, 0]);
    f.extend((payload as u16).to_be_bytes());
    f.extend([17, 64]);
    f.extend(v6(src));
    f.extend(v6(dst));
    f.extend(40000u16.to_be_bytes());
    f.extend(9u16.to_be_bytes());
    f.extend((payload as u16).to_be_bytes());
    // UDP checksum left zero: nothing on the measured path verifies it.
    f.extend([0, 0]);
    f.resize(len, 0xab);
    f
}

/// The same inner IPv6 packet (50 bytes) inside Ethernet + IPv4 + UDP 4341 + LISP (N bit).
fn frame_lisp(
    dst_mac: &str,
    src_mac: &str,
    outer_src: &str,
    outer_dst: &str,
    inner: &[u8],
) -> Vec<u8> {
    let inner = &inner[14..];
    let mut f = Vec::new();
    f.extend(mac(dst_mac));
    f.extend(mac(src_mac));
    f.extend([0x08, 0x00]);
    let total = 20 + 8 + 8 + inner.len();
    let mut ip = vec![0x45, 0];
    ip.extend((total as u16).to_be_bytes());
    ip.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(v4(outer_src));
    ip.extend(v4(outer_dst));
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend(0xc123u16.to_be_bytes());
    f.extend(4341u16.to_be_bytes());
    f.extend(((8 + 8 + inner.len()) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend([0x80, 0x12, 0x34, 0x56, 0, 0, 0, 0]);
    f.extend(inner);
    f
}

/// A live-traffic measurement.
struct Live {
    name: String,
    delivered_pps: f64,
    offered_pps: f64,
}

/// Runs the generator in `gen_ns` out of `gen_dev` for [`MEASURE`] and returns the rate counted
/// by `bench_count` (slot 0 of BENCH_COUNT in `tools`).
fn live(
    t: &Topology,
    tools: &mut Ebpf,
    name: &str,
    (gen_ns, gen_dev): (&str, &str),
    frame: &[u8],
    span: u32,
) -> Result<Live> {
    check_interrupt()?;
    let mut cfg = GenConfig {
        len: frame.len() as u32,
        flags: if span > 1 { GEN_VARY_DST6 } else { 0 },
        span: span.max(1),
        _pad: 0,
        frame: [0; GEN_FRAME_MAX],
    };
    cfg.frame[..frame.len()].copy_from_slice(frame);
    let mut gen_map: Array<_, GenConfig> =
        Array::try_from(tools.map_mut("BENCH_GEN").context("BENCH_GEN")?)?;
    gen_map.set(0, cfg, 0)?;
    let ifindex = t.ifindex(gen_ns, gen_dev)?;
    xdp(tools, "bench_gen")?;
    let count = || -> Result<u64> {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(tools.map("BENCH_COUNT").context("BENCH_COUNT")?)?;
        Ok(m.get(&0, 0)?.iter().sum())
    };
    let prog: &Xdp = tools
        .program("bench_gen")
        .context("bench_gen")?
        .try_into()?;
    // xdp_md as test-run context: data = 0, data_end = len, ingress ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let send = |n: u32| -> Result<()> {
        in_netns(&t.ns(gen_ns), || {
            pin_current_thread(GEN_CPU);
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            });
            r.map(|_| ())
                .map_err(|e: ProgramError| anyhow::anyhow!("live test-run: {e}"))
        })
    };
    send(CHUNK / 4)?;
    let t0 = Instant::now();
    while t0.elapsed() < WARMUP {
        send(CHUNK / 4)?;
    }
    let c0 = count()?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < MEASURE {
        send(CHUNK)?;
        sent += u64::from(CHUNK);
    }
    let secs = t0.elapsed().as_secs_f64();
    // Frames still in flight when the clock stops are negligible against millions.
    let delivered = count()? - c0;
    let l = Live {
        name: name.to_string(),
        delivered_pps: delivered as f64 / secs,
        offered_pps: sent as f64 / secs,
    };
    println!(
        "    {:<34} offered {:>6.2} Mpps, delivered {:>6.2} Mpps",
        l.name,
        l.offered_pps / 1e6,
        l.delivered_pps / 1e6
    );
    Ok(l)
}

fn entry_to(rloc: &str) -> MapCacheEntry {
    let mut e = MapCacheEntry {
        action: action::ENCAPSULATE,
        rloc_count: 1,
        ..Default::default()
    };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&v4(rloc));
    e.rlocs[0] = Rloc {
        addr,
        family: AF_IPV4,
        priority: 1,
        weight: 100,
        flags: 0,
    };
    e
}

/// Host EID number `i` of the filler range 2001:db8:2::1:0 + i.
fn host_eid(i: u32) -> [u8; 16] {
    let mut a = v6("2001:db8:2::1:0");
    let w = u32::from_be_bytes([a[12], a[13], a[14], a[15]]) + i;
    a[12..].copy_from_slice(&w.to_be_bytes());
    a
}

/// Grows MAP_CACHE_HOST of `e` to `n` host entries (the first is the one traffic needs).
fn fill_hosts(e: &mut Ebpf, from: u32, n: u32) -> Result<()> {
    let mut m: HashMap<_, EidKey, MapCacheEntry> =
        HashMap::try_from(e.map_mut(MAP_CACHE_HOST).context(MAP_CACHE_HOST)?)?;
    let v = entry_to(lab::RLOC_B_V4);
    let t0 = Instant::now();
    for i in from..n {
        m.insert(EidKey::new(AF_IPV6, 0, host_eid(i)), v, 0)
            .with_context(|| format!("map-cache host entry {i} (map full?)"))?;
    }
    if n > from + 1000 {
        println!(
            "    (filled {} host entries in {:.1} s)",
            n - from,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Average ns per run of `prog` under non-live test-run, over [`TR_RUNS`] calls (one run per call:
/// an encapsulating program cannot be repeated on the same buffer). `pick(i)` gives the frame.
fn ns_per_run(
    t: &Topology,
    e: &mut Ebpf,
    prog: &str,
    ns: &str,
    ifindex: u32,
    expect: u32,
    pick: impl Fn(u32) -> Vec<u8> + Sync,
) -> Result<f64> {
    let p: &Xdp = &*xdp(e, prog)?;
    in_netns(&t.ns(ns), || {
        let mut total = Duration::ZERO;
        let mut out = vec![0u8; 256];
        for i in 0..TR_RUNS {
            let f = pick(i);
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(&f),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    repeat: 1,
                    ..Default::default()
                })
                .map_err(|e| anyhow::anyhow!("test-run {prog}: {e}"))?;
            if r.return_value != expect {
                bail!(
                    "{prog} returned {} (expected {expect}) for run {i}",
                    r.return_value
                );
            }
            total += r.duration;
        }
        Ok(total.as_nanos() as f64 / f64::from(TR_RUNS))
    })
}

pub fn run() -> Result<()> {
    if !crate::support::netns::is_root() {
        bail!("the bench needs root (network namespaces, XDP)");
    }
    let started = Instant::now();
    let (_agent, object) = build_agent()?;
    crate::catch_sigint();
    let prefix = unique_prefix("lispbench");
    let mut t = Topology::new(
        &prefix,
        &std::env::temp_dir().join(format!("lisp-{prefix}")),
    )?;
    lab::build(&mut t)?;
    println!("==> lab topology up ({prefix}*); loading the XDP object three times");
    // Three copies: ITR (xTR A) and ETR (xTR B) each with their own maps (ifindexes of different
    // namespaces can collide in INTERFACES), and one for the generator, forwarder and counters.
    let mut a = load(&object, false)?;
    let mut b = load(&object, false)?;
    let mut tools = load(&object, true)?;

    // xTR A: ITR on eid0, source RLOCs A, nonce on (as the agent's default).
    let itr_eid0 = t.ifindex(ITR, "eid0")?;
    let etr_rloc0 = t.ifindex(ETR, "rloc0")?;
    for (e, ifx, role, r4, r6) in [
        (
            &mut a,
            itr_eid0,
            iface_flags::ITR,
            lab::RLOC_A_V4,
            lab::RLOC_A_V6,
        ),
        (
            &mut b,
            etr_rloc0,
            iface_flags::ETR,
            lab::RLOC_B_V4,
            lab::RLOC_B_V6,
        ),
    ] {
        let mut ifs: HashMap<_, u32, InterfaceConfig> =
            HashMap::try_from(e.map_mut(INTERFACES).context(INTERFACES)?)?;
        ifs.insert(
            ifx,
            InterfaceConfig {
                flags: role,
                instance_id: 0,
            },
            0,
        )?;
        let mut st: Array<_, Settings> = Array::try_from(e.map_mut(SETTINGS).context(SETTINGS)?)?;
        st.set(
            0,
            Settings {
                flags: settings_flags::HAS_RLOC4
                    | settings_flags::HAS_RLOC6
                    | settings_flags::NONCE,
                rloc4: v4(r4),
                rloc6: v6(r6),
                event_interval_ns: 1_000_000_000,
                ..Settings::default()
            },
            0,
        )?;
        let mut lr: HashMap<_, RlocKey, u8> =
            HashMap::try_from(e.map_mut(LOCAL_RLOCS).context(LOCAL_RLOCS)?)?;
        let mut k4 = [0u8; 16];
        k4[..4].copy_from_slice(&v4(r4));
        lr.insert(RlocKey::new(AF_IPV4, k4), 1, 0)?;
        lr.insert(RlocKey::new(AF_IPV6, v6(r6)), 1, 0)?;
        // The default instance is decapsulated only when listed (table 0: main, as the agent's
        // plan writes it for a router with EIDs in instance 0).
        let mut it: HashMap<_, u32, u32> =
            HashMap::try_from(e.map_mut(IID_TABLES).context(IID_TABLES)?)?;
        it.insert(0, 0, 0)?;
    }
    fill_hosts(&mut a, 0, 1)?;

    // Frames: hA → site B host EIDs (IPv6 inner; the ITR adds an IPv4 outer header), and the LISP
    // frame the core would hand xTR B.
    let itr_frame = frame_v6(
        lab::MAC_ITR_EID,
        lab::MAC_HA,
        lab::HA_V6,
        "2001:db8:2::1:0",
        64,
    );
    let inner = frame_v6(
        lab::MAC_ETR_RLOC,
        lab::MAC_CORE_ETR,
        lab::HA_V6,
        lab::HB_V6,
        64,
    );
    let etr_frame = frame_lisp(
        lab::MAC_ETR_RLOC,
        lab::MAC_CORE_ETR,
        lab::RLOC_A_V4,
        lab::RLOC_B_V4,
        &inner,
    );
    // The references on the ETR hop forward plain IPv6 frames as long as the LISP ones (100
    // bytes), so that the generator's and the counter's share is the same in all three rows.
    let fwd_etr_frame = frame_v6(
        lab::MAC_ETR_RLOC,
        lab::MAC_CORE_ETR,
        lab::HA_V6,
        lab::HB_V6,
        etr_frame.len(),
    );

    // Receivers count and drop; the generators' egress veths need an XDP program on the peer.
    let _c1 = attach(&mut tools, "bench_count", &t, CORE, "itr0")?;
    let _c2 = attach(&mut tools, "bench_count", &t, HB, "eth0")?;
    let _p1 = attach(&mut tools, PROG_XDP_PASS, &t, HA, "eth0")?;
    let _p2 = attach(&mut tools, PROG_XDP_PASS, &t, CORE, "etr0")?;

    let mut rows: Vec<Live> = Vec::new();
    println!(
        "==> live traffic, 64-byte frames, {} s each",
        MEASURE.as_secs_f64()
    );

    // References on the ITR hop: the plain forwarder and the kernel need a native route.
    t.ip(
        ITR,
        &["route", "add", "2001:db8:2::/48", "via", "2001:db8:ff:1::1"],
    )?;
    {
        let _l = attach(&mut tools, "bench_fwd", &t, ITR, "eid0")?;
        rows.push(live(
            &t,
            &mut tools,
            "XDP forwarder (itr hop)",
            (HA, "eth0"),
            &itr_frame,
            1,
        )?);
    }
    {
        let _l = attach(&mut tools, PROG_XDP_PASS, &t, ITR, "eid0")?;
        rows.push(live(
            &t,
            &mut tools,
            "kernel forwarding (itr hop)",
            (HA, "eth0"),
            &itr_frame,
            1,
        )?);
    }
    t.ip(ITR, &["route", "del", "2001:db8:2::/48"])?;

    // ITR with 1, 100k, 1M host entries (traffic to the one it needs, the others fill the
    // table), then 1M with the destinations spread over all entries (every lookup a different
    // entry: the cache-miss worst case). Test-run costs along the way.
    let mut costs: Vec<(String, f64)> = Vec::new();
    let spread = |n: u32| {
        let f = itr_frame.clone();
        move |i: u32| {
            let mut f = f.clone();
            // A fixed pseudo-random walk over the table (multiplicative hash).
            f[38..54].copy_from_slice(&host_eid(i.wrapping_mul(2_654_435_761) % n));
            f
        }
    };
    let one = |_: u32| itr_frame.clone();
    let cost_pass;
    let cost_encap;
    {
        let _l = attach(&mut a, PROG_XDP_LISP, &t, ITR, "eid0")?;
        rows.push(live(
            &t,
            &mut tools,
            "ITR xdp_lisp, 1 entry",
            (HA, "eth0"),
            &itr_frame,
            1,
        )?);

        println!("==> test-run costs (ns per packet, {TR_RUNS} runs each)");
        cost_pass = ns_per_run(&t, &mut a, PROG_XDP_PASS, ITR, itr_eid0, 2, one)?;
        cost_encap = ns_per_run(&t, &mut a, PROG_XDP_LISP, ITR, itr_eid0, 4, one)?;
        costs.push(("xdp_pass (empty program)".into(), cost_pass));
        costs.push((
            "xdp_lisp IPv6-in-IPv4 encapsulation, 1 entry".into(),
            cost_encap,
        ));

        fill_hosts(&mut a, 1, 1000)?;
        let c = ns_per_run(&t, &mut a, "bench_lookup", ITR, itr_eid0, 1, one)?;
        costs.push((LOOKUP_1K.into(), c));
        let c = ns_per_run(&t, &mut a, "bench_lookup", ITR, itr_eid0, 1, spread(1000))?;
        costs.push(("host-EID lookup, 1k entries, spread".into(), c));

        fill_hosts(&mut a, 1000, 100_000)?;
        rows.push(live(
            &t,
            &mut tools,
            "ITR xdp_lisp, 100k entries",
            (HA, "eth0"),
            &itr_frame,
            1,
        )?);
        fill_hosts(&mut a, 100_000, 1_000_000)?;
        rows.push(live(
            &t,
            &mut tools,
            "ITR xdp_lisp, 1M entries",
            (HA, "eth0"),
            &itr_frame,
            1,
        )?);
        rows.push(live(
            &t,
            &mut tools,
            "ITR xdp_lisp, 1M entries, dst spread",
            (HA, "eth0"),
            &itr_frame,
            1_000_000,
        )?);
        let c = ns_per_run(&t, &mut a, "bench_lookup", ITR, itr_eid0, 1, one)?;
        costs.push((LOOKUP_1M.into(), c));
        let c = ns_per_run(
            &t,
            &mut a,
            "bench_lookup",
            ITR,
            itr_eid0,
            1,
            spread(1_000_000),
        )?;
        costs.push(("host-EID lookup, 1M entries, spread".into(), c));
        let c = ns_per_run(&t, &mut a, PROG_XDP_LISP, ITR, itr_eid0, 4, one)?;
        costs.push(("xdp_lisp encapsulation, 1M entries".into(), c));
        let c = ns_per_run(
            &t,
            &mut a,
            PROG_XDP_LISP,
            ITR,
            itr_eid0,
            4,
            spread(1_000_000),
        )?;
        costs.push(("xdp_lisp encapsulation, 1M entries, spread".into(), c));
    }

    // ETR hop: xdp_lisp decapsulating, and the references.
    {
        let _l = attach(&mut tools, "bench_fwd", &t, ETR, "rloc0")?;
        rows.push(live(
            &t,
            &mut tools,
            "XDP forwarder (etr hop)",
            (CORE, "etr0"),
            &fwd_etr_frame,
            1,
        )?);
    }
    {
        let _l = attach(&mut tools, PROG_XDP_PASS, &t, ETR, "rloc0")?;
        rows.push(live(
            &t,
            &mut tools,
            "kernel forwarding (etr hop)",
            (CORE, "etr0"),
            &fwd_etr_frame,
            1,
        )?);
    }
    {
        let _l = attach(&mut b, PROG_XDP_LISP, &t, ETR, "rloc0")?;
        rows.push(live(
            &t,
            &mut tools,
            "ETR xdp_lisp decapsulation",
            (CORE, "etr0"),
            &etr_frame,
            1,
        )?);
    }
    // Per-packet cost on the ETR hop, decapsulation against the plain forwarder (both end in a
    // fib lookup and a redirect, 4 = XDP_REDIRECT).
    let f = etr_frame.clone();
    let c = ns_per_run(&t, &mut b, PROG_XDP_LISP, ETR, etr_rloc0, 4, |_| f.clone())?;
    costs.push(("xdp_lisp decapsulation (ETR)".into(), c));
    let f = fwd_etr_frame.clone();
    let c = ns_per_run(&t, &mut tools, "bench_fwd", ETR, etr_rloc0, 4, |_| {
        f.clone()
    })?;
    costs.push(("bench_fwd plain forwarder (ETR hop)".into(), c));

    // The data plane's own counters: the live runs really took the encap/decap paths.
    let counters = |e: &Ebpf| -> Result<Vec<(String, u64)>> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(e.map(COUNTERS).context(COUNTERS)?)?;
        let mut v = Vec::new();
        for c in Counter::ALL {
            let n: u64 = m.get(&(c as u32), 0)?.iter().sum();
            if n > 0 {
                v.push((c.name().to_string(), n));
            }
        }
        Ok(v)
    };

    let fwd_itr = rows[0].delivered_pps;
    let fwd_etr = rows
        .iter()
        .find(|r| r.name.starts_with("XDP forwarder (etr"))
        .map(|r| r.delivered_pps)
        .unwrap_or(f64::NAN);
    println!();
    println!(
        "Delivered packets/s (single hop, one run, generator + router + counter on one CPU; ratio vs the XDP forwarder on the same hop)"
    );
    println!("| path | delivered Mpps | offered Mpps | ratio |");
    println!("|---|---|---|---|");
    for r in &rows {
        let base = if r.name.contains("etr") || r.name.starts_with("ETR") {
            fwd_etr
        } else {
            fwd_itr
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.2}x |",
            r.name,
            r.delivered_pps / 1e6,
            r.offered_pps / 1e6,
            r.delivered_pps / base
        );
    }
    println!();
    println!(
        "BPF_PROG_TEST_RUN, ns per packet (one run per call, kernel-timed; includes ~the timer's own cost)"
    );
    println!("| program | ns |");
    println!("|---|---|");
    for (n, c) in &costs {
        println!("| {n} | {c:.1} |");
    }
    let get = |k: &str| {
        costs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, c)| *c)
            .unwrap_or(f64::NAN)
    };
    let (l1k, l1m) = (get(LOOKUP_1K), get(LOOKUP_1M));
    println!();
    println!(
        "encapsulation over empty program: +{:.1} ns; lookup 1M/1k: {:.2}x (target <= 1.2x); \
         lookup net of the empty program 1M/1k: {:.1}/{:.1} ns",
        cost_encap - cost_pass,
        l1m / l1k,
        l1m - cost_pass,
        l1k - cost_pass
    );
    let itr1m = rows
        .iter()
        .find(|r| r.name == "ITR xdp_lisp, 1M entries")
        .map(|r| r.delivered_pps)
        .unwrap_or(0.0);
    let etr = rows
        .iter()
        .find(|r| r.name.starts_with("ETR"))
        .map(|r| r.delivered_pps)
        .unwrap_or(0.0);
    println!(
        "targets: ITR (1M) {:.2}x and ETR {:.2}x the XDP forwarder (target >= 1.0x)",
        itr1m / fwd_itr,
        etr / fwd_etr
    );
    println!("xTR A xdp_lisp counters: {:?}", counters(&a)?);
    println!("xTR B xdp_lisp counters: {:?}", counters(&b)?);
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    let _ = HA;
    Ok(())
}
