//! Map-Server throughput on one core: registrations/s with HMAC-SHA-256, and Map-Requests/s.
//!
//! Pure core, no sockets: pre-built, pre-signed Map-Registers with increasing nonces for many
//! sites and EIDs are fed to `MapServer::handle_datagram` in a loop, and the wall time is
//! divided by the count. Figures, not a test: `cargo bench -p lisp-agent --bench map_server`
//! (also run by `cargo xtask bench-control`). `MS_BENCH_SITES` / `MS_BENCH_EIDS` /
//! `MS_BENCH_ROUNDS` change the scale; `MS_BENCH_REPLAY=increasing-nonce` (or `no-repeat`)
//! measures a legacy replay policy instead of the default `fresh-changes`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use lisp_agent::core::map_server::{
    MapServer, MapServerConfig, NonceCheck, SiteConfig, SitePrefix,
};
use lisp_agent::core::time::Timestamp;
use lisp_common::wire::control::auth::{self, Algorithm};
use lisp_common::wire::control::{
    Address, Auth, Ecm, Eid, IpPrefix, Locator, MapRegister, MapRequest, Message, Record,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn site_prefix(s: usize) -> IpPrefix {
    // 2001:db8:S::/48, one per site (documentation space).
    let a = Ipv6Addr::new(0x2001, 0x0db8, s as u16, 0, 0, 0, 0, 0);
    IpPrefix::new(IpAddr::V6(a), 48).unwrap()
}

fn eid(s: usize, e: usize) -> Eid {
    let a = Ipv6Addr::new(0x2001, 0x0db8, s as u16, 0, 0, 0, 0, e as u16 + 1);
    Eid::new(None, IpPrefix::host(IpAddr::V6(a)))
}

fn etr(s: usize) -> SocketAddr {
    // 198.51.100.0/24 and 203.0.113.0/24 hold 512 ETR addresses; more sites share them
    // (replay state is per site + ETR, so sharing changes nothing).
    let i = s % 512;
    let ip = if i < 256 {
        Ipv4Addr::new(198, 51, 100, i as u8)
    } else {
        Ipv4Addr::new(203, 0, 113, (i - 256) as u8)
    };
    SocketAddr::new(IpAddr::V4(ip), 4342)
}

fn key(s: usize) -> Vec<u8> {
    format!("site-{s}-secret").into_bytes()
}

fn register(s: usize, e: usize, nonce: u64, want_notify: bool) -> Vec<u8> {
    let mut rec = Record::new(eid(s, e), 1440);
    let mut l = Locator::new(etr(s).ip(), 1, 100);
    l.local = true;
    rec.locators.push(l);
    let m = MapRegister {
        want_map_notify: want_notify,
        nonce,
        auth: Auth::zeroed(Algorithm::HmacSha256),
        records: vec![rec],
        ..MapRegister::default()
    };
    let mut v = m.to_vec().unwrap();
    auth::sign(&mut v, &key(s)).unwrap();
    v
}

fn config(sites: usize) -> MapServerConfig {
    MapServerConfig {
        sites: (0..sites)
            .map(|s| SiteConfig {
                name: format!("site{s}"),
                key: key(s),
                algorithm: Algorithm::HmacSha256,
                prefixes: vec![SitePrefix {
                    eid: Eid::new(None, site_prefix(s)),
                    accept_more_specifics: true,
                }],
            })
            .collect(),
        max_registrations: usize::MAX,
        max_registrants: usize::MAX,
        nonce_check: match std::env::var("MS_BENCH_REPLAY").as_deref() {
            Ok("increasing-nonce") => NonceCheck::Increasing,
            Ok("no-repeat") => NonceCheck::NoRepeat,
            _ => NonceCheck::FreshChanges,
        },
        ..MapServerConfig::default()
    }
}

fn main() {
    let sites = env("MS_BENCH_SITES", 1000);
    let eids = env("MS_BENCH_EIDS", 10);
    let rounds = env("MS_BENCH_ROUNDS", 20);
    let ms_addr: SocketAddr = "192.0.2.1:4342".parse().unwrap();
    println!(
        "map-server bench: {sites} sites x {eids} EIDs (/128 each), {rounds} rounds, HMAC-SHA-256, 1 core, replay policy {:?}",
        config(0).nonce_check
    );

    for want_notify in [false, true] {
        // Messages in send order: round-major, so each ETR's nonces increase.
        let mut msgs = Vec::with_capacity(sites * eids * rounds);
        let mut nonce = vec![0u64; sites];
        for _ in 0..rounds {
            for (s, n) in nonce.iter_mut().enumerate() {
                for e in 0..eids {
                    *n += 1;
                    msgs.push((etr(s), register(s, e, *n, want_notify)));
                }
            }
        }
        let mut ms = MapServer::new(config(sites));
        let first = sites * eids;
        let t0 = Instant::now();
        let mut sent = 0usize;
        let mut t_first = 0.0;
        for (i, (from, bytes)) in msgs.iter().enumerate() {
            let now = Timestamp::from_millis(i as u64 / 1000);
            sent += black_box(ms.handle_datagram(*from, ms_addr, bytes, now)).len();
            if i + 1 == first {
                t_first = t0.elapsed().as_secs_f64();
            }
        }
        let total = t0.elapsed().as_secs_f64();
        let c = ms.counters();
        assert_eq!(c.registrations_created as usize, first, "{c:?}");
        assert_eq!(c.rejected_total(), 0, "{c:?}");
        let label = if want_notify {
            "M=1 (verify + signed Map-Notify)"
        } else {
            "M=0 (verify only)            "
        };
        println!(
            "  registrations {label}: {:>9.0}/s overall, {:>9.0}/s creating {first}, {:>9.0}/s refreshing ({:.2} µs each; {} messages, {sent} Map-Notifies)",
            msgs.len() as f64 / total,
            first as f64 / t_first,
            (msgs.len() - first) as f64 / (total - t_first),
            total * 1e6 / msgs.len() as f64,
            msgs.len(),
        );
    }

    // Map-Requests against the full table: proxy replies (P=1) and forwards (P=0).
    for proxy in [true, false] {
        let mut ms = MapServer::new(config(sites));
        for s in 0..sites {
            for e in 0..eids {
                let mut bytes = register(s, e, (e + 1) as u64, false);
                if proxy {
                    // Set P and re-sign.
                    bytes[0] |= 0x08;
                    auth::sign(&mut bytes, &key(s)).unwrap();
                }
                ms.handle_datagram(etr(s), ms_addr, &bytes, Timestamp::ZERO);
            }
        }
        let n = (sites * eids).min(100_000);
        let reqs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let (s, e) = (i / eids, i % eids);
                let dst = eid(s, e).prefix.addr();
                let src = eid((s + 1) % sites, 0).prefix.addr();
                let req = MapRequest {
                    nonce: i as u64,
                    source_eid: Address::ip(src),
                    itr_rlocs: vec![etr((s + 1) % sites).ip()],
                    eids: vec![eid(s, e)],
                    ..MapRequest::default()
                };
                Ecm::new(src, dst, Message::MapRequest(req))
                    .unwrap()
                    .to_vec()
                    .unwrap()
            })
            .collect();
        let t0 = Instant::now();
        let mut out = 0;
        for (i, q) in reqs.iter().enumerate() {
            out += black_box(ms.handle_datagram(
                etr((i / eids + 1) % sites),
                ms_addr,
                q,
                Timestamp::from_secs(1),
            ))
            .len();
        }
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(out, n);
        println!(
            "  ECM Map-Requests {}: {:>9.0}/s ({:.2} µs each)",
            if proxy {
                "-> proxy Map-Reply"
            } else {
                "-> forwarded to ETR"
            },
            n as f64 / dt,
            dt * 1e6 / n as f64
        );
    }
}
