//! Prometheus text exposition on a plain tokio TCP listener: one `GET /metrics` per connection,
//! `Connection: close`. Small enough not to need an HTTP crate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lisp_common::maps::Counter;
use log::{debug, info, warn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Stats;
use crate::dataplane::CounterReader;

/// Renders the exposition text. `counters` is `None` when they could not be read; the
/// agent's own series are still served.
pub fn render(counters: Option<&[(Counter, u64)]>, stats: &Stats) -> String {
    let mut s = String::new();
    if let Some(cs) = counters {
        s.push_str(
            "# HELP lisp_xdp_packets_total Packets handled by the XDP program, by outcome.\n",
        );
        s.push_str("# TYPE lisp_xdp_packets_total counter\n");
        for (c, v) in cs {
            let _ = writeln!(s, "lisp_xdp_packets_total{{outcome=\"{}\"}} {v}", c.name());
        }
    }
    let series = [
        (
            "lisp_dataplane_events_received_total",
            "Data-plane events (map-cache misses) received.",
            &stats.events_received,
        ),
        (
            "lisp_dataplane_events_lost_total",
            "Data-plane events lost because a perf buffer was full.",
            &stats.events_lost,
        ),
        (
            "lisp_dataplane_events_dropped_total",
            "Data-plane events dropped because the control plane lagged.",
            &stats.events_dropped,
        ),
        (
            "lisp_dataplane_events_malformed_total",
            "Data-plane event records that could not be decoded.",
            &stats.events_malformed,
        ),
        (
            "lisp_dataplane_events_handled_total",
            "Data-plane events taken by the control plane.",
            &stats.events_handled,
        ),
    ];
    for (name, help, v) in series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        let _ = writeln!(s, "{name} {}", v.load(Ordering::Relaxed));
    }
    let name = "lisp_slow_path_packets_total";
    let _ = writeln!(
        s,
        "# HELP {name} Packets of the data plane's slow path (fragmentation, reassembly), by outcome.\n# TYPE {name} counter"
    );
    for (outcome, v) in stats.slow_path.series() {
        let _ = writeln!(s, "{name}{{outcome=\"{outcome}\"}} {v}");
    }
    if let Ok(c) = stats.control_metrics.lock() {
        s.push_str(&c);
    }
    s
}

const MAX_REQUEST: usize = 8192;

/// Serves one connection: reads the request head, answers, closes.
pub async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    body: impl FnOnce() -> String,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(()); // closed before a full request head
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let b = body();
            respond(&mut stream, "200 OK", &b).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `addr` and serves metrics until the task is dropped.
pub async fn spawn(
    addr: SocketAddr,
    counters: Option<Arc<Mutex<CounterReader>>>,
    stats: Arc<Stats>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics-listen: cannot listen on {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!("metrics accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let counters = counters.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let body = move || {
                    let read = counters.as_ref().and_then(|c| match c.lock() {
                        Ok(r) => r
                            .read()
                            .map_err(|e| warn!("reading XDP counters: {e:#}"))
                            .ok(),
                        Err(_) => None,
                    });
                    render(read.as_deref(), &stats)
                };
                let r = tokio::time::timeout(Duration::from_secs(5), serve_one(sock, body)).await;
                if let Ok(Err(e)) = r {
                    debug!("metrics connection from {peer}: {e}");
                }
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_outcome_name() {
        let stats = Stats::default();
        stats.events_received.store(3, Ordering::Relaxed);
        let cs = [(Counter::EncapIpv4, 42u64), (Counter::Decap, 7)];
        let t = render(Some(&cs), &stats);
        assert!(
            t.contains("lisp_xdp_packets_total{outcome=\"encap_ipv4\"} 42\n"),
            "{t}"
        );
        assert!(t.contains("lisp_xdp_packets_total{outcome=\"decap\"} 7\n"));
        assert!(t.contains("lisp_dataplane_events_received_total 3\n"));
        assert!(t.contains("# TYPE lisp_xdp_packets_total counter\n"));
        let t = render(None, &stats);
        assert!(!t.contains("lisp_xdp_packets_total"));
    }

    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(serve_one(server, || "metric 1\n".to_string()));
        client.write_all(request).await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        srv.await.unwrap().unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let r = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 9\r\n"));
        assert!(r.ends_with("\r\n\r\nmetric 1\n"));
        let r = exchange(b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"));
        let r = exchange(b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"));
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
        let r = exchange(&big).await;
        assert!(r.starts_with("HTTP/1.1 431"));
    }
}
