//! A paced UDP stream with sequence numbers between two namespaces: exact loss, reordering,
//! duplicates, and per-packet send and arrival times on one clock (both ends run in this process,
//! so one `Instant` epoch serves both; no clock of the namespaces is involved).
//!
//! The sender sends datagram `seq` at `epoch + seq / pps` (a burst catches up if the thread was
//! late), so a packet's send time is known even if it is lost; the receiver keeps every arrival.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::netns::{Topology, in_netns};

const MAGIC: &[u8; 4] = b"LMOB";
/// Datagram size (payload): small, so a stream costs the lab little.
const PAYLOAD: usize = 64;

/// Send time per seq, and the count of refused sends.
type Sent = (Vec<Duration>, u64);
/// (seq, arrival time) in arrival order.
type Arrivals = Vec<(u64, Duration)>;

/// A running stream. [`Stream::stop`] ends it and returns what happened.
pub struct Stream {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    tx: Option<JoinHandle<Result<Sent>>>,
    rx: Option<JoinHandle<Result<Arrivals>>>,
}

impl Stream {
    /// Starts sending `pps` datagrams per second from `src` (in namespace `src_ns`) to `dst:port`
    /// (received in `dst_ns`). `epoch` is the shared clock's zero (pass the same one to several
    /// streams to compare their times).
    pub fn start(
        t: &Topology,
        (src_ns, src): (&str, &str),
        (dst_ns, dst): (&str, &str),
        port: u16,
        pps: u32,
        epoch: Instant,
    ) -> Result<Stream> {
        let dst_addr = SocketAddr::new(dst.parse()?, port);
        let src_addr = SocketAddr::new(src.parse()?, 0);
        // Each socket is created on a thread inside its namespace and stays bound to it.
        let rx_sock = in_netns(&t.ns(dst_ns), || Ok(UdpSocket::bind(dst_addr)?))?;
        let tx_sock = in_netns(&t.ns(src_ns), || {
            let s = UdpSocket::bind(src_addr)?;
            s.connect(dst_addr)?;
            Ok(s)
        })?;
        rx_sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));

        let (stop_rx, recv_n) = (stop.clone(), received.clone());
        let rx = std::thread::spawn(move || -> Result<Arrivals> {
            let mut arrivals = Vec::with_capacity(1 << 16);
            let mut buf = [0u8; 2048];
            loop {
                match rx_sock.recv(&mut buf) {
                    Ok(n) if n >= 12 && &buf[..4] == MAGIC => {
                        let at = epoch.elapsed();
                        let seq = u64::from_be_bytes(buf[4..12].try_into().unwrap_or_default());
                        arrivals.push((seq, at));
                        recv_n.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // A signal handler ran (xtask catches SIGINT/SIGTERM): a socket with a
                    // receive timeout returns EINTR even with SA_RESTART.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Timeout: stop only once asked to and nothing more is in flight.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stop_rx.load(Ordering::Relaxed) {
                            return Ok(arrivals);
                        }
                    }
                    Err(e) => return Err(anyhow!("stream receiver: {e}")),
                }
            }
        });

        let (stop_tx, sent_n) = (stop.clone(), sent.clone());
        let tx = std::thread::spawn(move || -> Result<Sent> {
            let mut times = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut buf = [0u8; PAYLOAD];
            buf[..4].copy_from_slice(MAGIC);
            let start = epoch.elapsed();
            let gap = Duration::from_secs(1) / pps.max(1);
            let mut seq = 0u64;
            while !stop_tx.load(Ordering::Relaxed) {
                let now = epoch.elapsed();
                let due = ((now - start).as_nanos() / gap.as_nanos().max(1)) as u64 + 1;
                while seq < due {
                    buf[4..12].copy_from_slice(&seq.to_be_bytes());
                    times.push(epoch.elapsed());
                    // A send error (no route while the VM is unplugged) is a lost packet.
                    if tx_sock.send(&buf).is_err() {
                        errors += 1;
                    }
                    seq += 1;
                    sent_n.store(seq, Ordering::Relaxed);
                }
                let next = start + gap * (seq as u32);
                let now = epoch.elapsed();
                if next > now {
                    std::thread::sleep((next - now).min(Duration::from_millis(1)));
                }
            }
            Ok((times, errors))
        });
        Ok(Stream {
            epoch,
            stop,
            sent,
            received,
            tx: Some(tx),
            rx: Some(rx),
        })
    }

    /// Time on the stream's clock.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `n` more datagrams than now have arrived, or `timeout`; whether they did.
    pub fn wait_received(&self, n: u64, timeout: Duration) -> bool {
        let target = self.received() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.received() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.received() >= target
    }

    /// Stops sending, waits for what is still in flight, and reports.
    pub fn stop(mut self) -> Result<StreamReport> {
        self.stop.store(true, Ordering::Relaxed);
        let (send_times, send_errors) = self
            .tx
            .take()
            .map(|h| h.join().map_err(|_| anyhow!("sender panicked")))
            .transpose()?
            .transpose()?
            .unwrap_or_default();
        let arrivals = self
            .rx
            .take()
            .map(|h| h.join().map_err(|_| anyhow!("receiver panicked")))
            .transpose()?
            .transpose()?
            .unwrap_or_default();
        Ok(StreamReport {
            send_times,
            send_errors,
            arrivals,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a stream did: per sequence number its send time, and every arrival in arrival order.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// Send time of datagram `seq` at index `seq`.
    pub send_times: Vec<Duration>,
    /// Datagrams the sender's kernel refused (counted as lost too).
    pub send_errors: u64,
    /// (seq, arrival time), in arrival order.
    pub arrivals: Vec<(u64, Duration)>,
}

impl StreamReport {
    pub fn sent(&self) -> u64 {
        self.send_times.len() as u64
    }

    fn seen(&self) -> Vec<bool> {
        let mut seen = vec![false; self.send_times.len()];
        for &(s, _) in &self.arrivals {
            if let Some(x) = seen.get_mut(s as usize) {
                *x = true;
            }
        }
        seen
    }

    /// Distinct datagrams that arrived.
    pub fn received(&self) -> u64 {
        self.seen().iter().filter(|s| **s).count() as u64
    }

    /// Sequence numbers that never arrived.
    pub fn lost(&self) -> Vec<u64> {
        self.seen()
            .iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| i as u64)
            .collect()
    }

    /// Lost datagrams sent at or after `t`.
    pub fn lost_sent_after(&self, t: Duration) -> Vec<u64> {
        self.lost()
            .into_iter()
            .filter(|&s| self.send_times[s as usize] >= t)
            .collect()
    }

    /// Lost datagrams as runs of consecutive sequence numbers `(first, last)`.
    pub fn lost_runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for s in self.lost() {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == s => *last = s,
                _ => runs.push((s, s)),
            }
        }
        runs
    }

    /// Arrivals of a sequence number lower than one that arrived before it.
    pub fn reordered(&self) -> u64 {
        let mut max = None;
        let mut n = 0;
        for &(s, _) in &self.arrivals {
            match max {
                Some(m) if s < m => n += 1,
                _ => max = Some(s),
            }
        }
        n
    }

    /// Arrivals beyond the first of a sequence number.
    pub fn duplicates(&self) -> u64 {
        self.arrivals.len() as u64 - self.received()
    }

    /// The first datagram sent at or after `t` (its seq and send time).
    pub fn first_sent_after(&self, t: Duration) -> Option<(u64, Duration)> {
        let i = self.send_times.partition_point(|&s| s < t);
        self.send_times.get(i).map(|&s| (i as u64, s))
    }

    /// The first arrival at or after `t` (seq, arrival time).
    pub fn first_arrival_after(&self, t: Duration) -> Option<(u64, Duration)> {
        self.arrivals.iter().copied().find(|&(_, a)| a >= t)
    }

    /// The longest time between two consecutive arrivals, and when it began.
    pub fn longest_gap(&self) -> (Duration, Duration) {
        self.arrivals
            .windows(2)
            .map(|w| (w[1].1.saturating_sub(w[0].1), w[0].1))
            .max()
            .unwrap_or_default()
    }

    /// One line for logs and the lab.
    pub fn summary(&self) -> String {
        let (gap, at) = self.longest_gap();
        format!(
            "sent {}, received {}, lost {} (runs {:?}), reordered {}, duplicates {}, send errors {}, \
             longest gap {:.1} ms at {:.3} s",
            self.sent(),
            self.received(),
            self.sent() - self.received(),
            self.lost_runs(),
            self.reordered(),
            self.duplicates(),
            self.send_errors,
            gap.as_secs_f64() * 1e3,
            at.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sent: u64, arrivals: &[u64]) -> StreamReport {
        StreamReport {
            send_times: (0..sent).map(Duration::from_millis).collect(),
            send_errors: 0,
            arrivals: arrivals
                .iter()
                .enumerate()
                .map(|(i, &s)| (s, Duration::from_millis(i as u64 * 10)))
                .collect(),
        }
    }

    #[test]
    fn loss_reordering_and_duplicates_are_exact() {
        let r = report(8, &[0, 1, 4, 3, 3, 7]);
        assert_eq!(r.lost(), vec![2, 5, 6]);
        assert_eq!(r.lost_runs(), vec![(2, 2), (5, 6)]);
        assert_eq!(r.received(), 5);
        assert_eq!(r.reordered(), 2);
        assert_eq!(r.duplicates(), 1);
        assert_eq!(r.lost_sent_after(Duration::from_millis(3)), vec![5, 6]);
        assert_eq!(
            r.first_sent_after(Duration::from_micros(2500)),
            Some((3, Duration::from_millis(3)))
        );
    }
}
