//! The local API: a Unix socket on which a running agent answers read-only questions about its
//! state, and the client side `lisp-agent show …` uses.
//!
//! One request per connection: a JSON object on one line (`{"show":"dynamic-eid"}`), answered by
//! one JSON object (`{"ok":true,…}` or `{"ok":false,"error":"…"}`) and the connection closed.
//! The socket is root's: mode 0600 (made so before it becomes reachable: bound under a temporary
//! name, chmod-ed, renamed into place) and each peer's credentials checked (root, or the agent's
//! own user). The answers come from the control loop, which owns the [`Node`]: a connection
//! hands its [`Request`] over as an [`ApiCall`] and the loop answers it with [`answer`] between
//! two events, so an answer is a consistent snapshot and never blocks the protocol for longer
//! than building it.
//!
//! Adding a question (`show map-cache`, `registrations`, `hsrp`, …) is one variant of
//! [`Request`], one `show_…` function building its JSON from the node, and one printer in
//! `main.rs`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use log::{debug, warn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::core::node::Node;
use crate::core::time::Timestamp;

/// Where the agent listens unless the config says otherwise (`api-socket`).
pub const DEFAULT_SOCKET: &str = "/run/lisp-agent/api.sock";

/// Largest request read (a request is a few dozen bytes).
const MAX_REQUEST: usize = 4096;

/// How long a connection may take to send its request, and the control loop to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A question to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "show", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// `show dynamic-eid`: every dynamic EID the node knows, local, learnt from the site, or
    /// away.
    DynamicEid,
    /// `show dynamic-eid --summary`: counts per map and origin.
    DynamicEidSummary,
}

/// Where the node knows a dynamic EID from (the `origin` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Detected here, on one of our mobility interfaces.
    Local,
    /// Learnt from another router of the site (map-notify-group).
    Site,
    /// Was here, moved to another site: an away map-cache entry towards its new RLOCs.
    Away,
}

impl Origin {
    pub const ALL: [Origin; 3] = [Origin::Local, Origin::Site, Origin::Away];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Site => "site",
            Origin::Away => "away",
        }
    }
}

/// One row of `show dynamic-eid`, as sent over the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DynamicEidRow {
    pub map: String,
    pub instance_id: u32,
    pub eid: IpAddr,
    /// The SVI a local EID was detected on (none for site / away entries).
    pub interface: Option<String>,
    /// Seconds since the node learnt the EID in its current origin.
    pub uptime_secs: u64,
    /// Seconds since the data plane last saw a packet from it (local EIDs; none if unknown).
    pub last_packet_secs: Option<u64>,
    pub origin: Origin,
    /// Away: where it went; site: the router that told us.
    pub rlocs: Vec<IpAddr>,
}

/// What `show dynamic-eid` reads of the core's mobility role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MobilityView {
    pub eids: Vec<DynamicEidRow>,
}

/// The node's dynamic EIDs as the API shows them (`core::mobility::DynamicEidView` per EID).
pub fn mobility_view(node: &Node, now: Timestamp) -> MobilityView {
    use crate::core::mobility::Origin as Core;
    let eids = node
        .mobility()
        .dynamic_eids()
        .map(|v| {
            let origin = match v.origin {
                Core::Local => Origin::Local,
                Core::Site => Origin::Site,
                Core::Away => Origin::Away,
            };
            DynamicEidRow {
                map: v.map.to_string(),
                instance_id: v.instance_id,
                eid: v.eid,
                interface: v.interface.map(str::to_string),
                uptime_secs: now.saturating_duration_since(v.since).as_secs(),
                // The data plane's stamps (or the detection) say when it last sent: local only.
                last_packet_secs: (origin == Origin::Local)
                    .then(|| now.saturating_duration_since(v.last_seen).as_secs()),
                origin,
                rlocs: v.rlocs.iter().map(|l| l.addr).collect(),
            }
        })
        .collect();
    MobilityView { eids }
}

/// The answer to `req` from the node's state at `now`.
pub fn answer(node: &Node, now: Timestamp, req: &Request) -> Value {
    match req {
        Request::DynamicEid => show_dynamic_eid(&mobility_view(node, now)),
        Request::DynamicEidSummary => show_dynamic_eid_summary(&mobility_view(node, now)),
    }
}

/// `show dynamic-eid`: the rows, sorted by map, instance, address.
pub fn show_dynamic_eid(view: &MobilityView) -> Value {
    let mut rows = view.eids.clone();
    rows.sort_by(|a, b| (&a.map, a.instance_id, a.eid).cmp(&(&b.map, b.instance_id, b.eid)));
    json!({ "ok": true, "dynamic-eids": rows })
}

/// One map's line of `show dynamic-eid --summary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SummaryRow {
    pub map: String,
    pub local: u64,
    pub site: u64,
    pub away: u64,
}

/// `show dynamic-eid --summary`: counts per map and origin, and the totals.
pub fn show_dynamic_eid_summary(view: &MobilityView) -> Value {
    let mut per_map: BTreeMap<&str, SummaryRow> = BTreeMap::new();
    let mut total = SummaryRow {
        map: "total".into(),
        ..SummaryRow::default()
    };
    for r in &view.eids {
        let row = per_map.entry(&r.map).or_insert_with(|| SummaryRow {
            map: r.map.clone(),
            ..SummaryRow::default()
        });
        for s in [&mut *row, &mut total] {
            match r.origin {
                Origin::Local => s.local += 1,
                Origin::Site => s.site += 1,
                Origin::Away => s.away += 1,
            }
        }
    }
    let maps: Vec<SummaryRow> = per_map.into_values().collect();
    json!({ "ok": true, "maps": maps, "total": total })
}

/// An error answer.
pub fn error(msg: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": msg.to_string() })
}

/// A request on its way to the control loop, with where the answer goes.
pub struct ApiCall {
    pub request: Request,
    pub reply: oneshot::Sender<Value>,
}

/// The listening socket; removed (and its task stopped) on drop, at the agent's stop.
pub struct ApiServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (root only) and serves requests by handing them to `calls`.
///
/// A socket already at `path` that answers belongs to another running agent: refused (this
/// agent then runs without an API; the caller decides). One that does not answer is a leftover
/// of a crashed run and is replaced. Anything else at `path` is not ours and is left alone.
pub fn spawn(path: &Path, calls: mpsc::Sender<ApiCall>) -> anyhow::Result<ApiServer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the API socket's directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use by another running agent (give this one its own `api-socket`)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale API socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    // Bound under a temporary name and made 0600 before it is renamed to where clients look:
    // never reachable with the umask's mode.
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("placing the API socket at {}", path.display()));
    }
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let calls = calls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, calls).await {
                            debug!("API connection: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    warn!("API socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(ApiServer {
        path: path.to_path_buf(),
        task,
    })
}

/// Whether a peer of these credentials may ask: root, or the user the agent runs as.
fn allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// One connection: a request line in, one answer out.
async fn serve(mut stream: UnixStream, calls: mpsc::Sender<ApiCall>) -> anyhow::Result<()> {
    let uid = stream.peer_cred().context("peer credentials")?.uid();
    let answer = if !allowed(uid) {
        error(format!("uid {uid} is not allowed (root only)"))
    } else {
        match tokio::time::timeout(TIMEOUT, read_request(&mut stream)).await {
            Err(_) => error("no request within 5 s"),
            Ok(Err(e)) => error(format!("{e:#}")),
            Ok(Ok(request)) => {
                let (reply, answered) = oneshot::channel();
                if calls.send(ApiCall { request, reply }).await.is_err() {
                    error("the agent is stopping")
                } else {
                    match tokio::time::timeout(TIMEOUT, answered).await {
                        Ok(Ok(v)) => v,
                        Ok(Err(_)) => error("the agent is stopping"),
                        Err(_) => error("the control plane did not answer within 5 s"),
                    }
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&answer).context("encoding the answer")?;
    out.push(b'\n');
    stream.write_all(&out).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Reads one request: up to a newline or the end of the stream, at most [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut UnixStream) -> anyhow::Result<Request> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.contains(&b'\n') {
            break;
        }
        if buf.len() > MAX_REQUEST {
            bail!("request longer than {MAX_REQUEST} bytes");
        }
    }
    parse_request(&buf)
}

/// A request line as a [`Request`]; the error says what was wrong.
pub fn parse_request(bytes: &[u8]) -> anyhow::Result<Request> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).context("bad request (expected e.g. {\"show\":\"dynamic-eid\"})")
}

/// Client: asks the agent listening on `path` and returns its answer (`ok: false` answers are
/// returned as errors).
pub fn request(path: &Path, req: &Request) -> anyhow::Result<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the agent at {} (is it running? are you root?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(TIMEOUT * 2))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .with_context(|| format!("reading the answer from {}", path.display()))?;
    let v: Value = serde_json::from_slice(&out).context("the agent's answer is not JSON")?;
    if v.get("ok") != Some(&Value::Bool(true)) {
        bail!(
            "the agent refused: {}",
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
        );
    }
    Ok(v)
}

/// `hh:mm:ss` (days as `Nd` in front), as the reference's `show` prints durations.
pub fn hms(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The table of `show dynamic-eid`, from the API's answer.
pub fn format_dynamic_eids(answer: &Value) -> anyhow::Result<String> {
    let rows: Vec<DynamicEidRow> = serde_json::from_value(
        answer
            .get("dynamic-eids")
            .cloned()
            .context("answer without dynamic-eids")?,
    )
    .context("unexpected dynamic-eids in the answer")?;
    let header = ["Map", "EID", "Interface", "Uptime", "Last packet", "Origin"];
    let mut table: Vec<[String; 6]> = vec![header.map(String::from)];
    for r in &rows {
        let eid = if r.instance_id == 0 {
            r.eid.to_string()
        } else {
            format!("[{}] {}", r.instance_id, r.eid)
        };
        let origin = match (r.origin, r.rlocs.as_slice()) {
            (o, []) => o.as_str().to_string(),
            (o, rlocs) => format!(
                "{} ({})",
                o.as_str(),
                rlocs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        table.push([
            r.map.clone(),
            eid,
            r.interface.clone().unwrap_or_else(|| "-".into()),
            hms(r.uptime_secs),
            r.last_packet_secs
                .map(|s| format!("{} ago", hms(s)))
                .unwrap_or_else(|| "-".into()),
            origin,
        ]);
    }
    let mut out = columns(&table);
    out.push_str(&format!("{} dynamic EID(s)\n", rows.len()));
    Ok(out)
}

/// The table of `show dynamic-eid --summary`.
pub fn format_summary(answer: &Value) -> anyhow::Result<String> {
    let maps: Vec<SummaryRow> =
        serde_json::from_value(answer.get("maps").cloned().context("answer without maps")?)?;
    let total: SummaryRow = serde_json::from_value(
        answer
            .get("total")
            .cloned()
            .context("answer without total")?,
    )?;
    let mut table: Vec<[String; 5]> =
        vec![["Map", "Local", "Site", "Away", "Total"].map(String::from)];
    for r in maps.iter().chain(std::iter::once(&total)) {
        table.push([
            r.map.clone(),
            r.local.to_string(),
            r.site.to_string(),
            r.away.to_string(),
            (r.local + r.site + r.away).to_string(),
        ]);
    }
    Ok(columns(&table))
}

/// Left-aligned columns, two spaces apart, no trailing blanks.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < N {
                line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(map: &str, eid: &str, origin: Origin) -> DynamicEidRow {
        DynamicEidRow {
            map: map.into(),
            instance_id: 0,
            eid: eid.parse().unwrap(),
            interface: (origin == Origin::Local).then(|| "vlan10".into()),
            uptime_secs: 3723,
            last_packet_secs: (origin == Origin::Local).then_some(2),
            origin,
            rlocs: if origin == Origin::Away {
                vec!["192.0.2.33".parse().unwrap()]
            } else {
                vec![]
            },
        }
    }

    fn view() -> MobilityView {
        MobilityView {
            eids: vec![
                row("Roamer-1", "198.51.100.9", Origin::Away),
                row("Roamer-1", "198.51.100.7", Origin::Local),
                row("Roamer-2", "2001:db8:1::7", Origin::Site),
            ],
        }
    }

    /// A node that detected a host answers `show dynamic-eid` with it, and its metrics count it.
    #[test]
    fn a_detected_host_is_shown_and_counted() {
        use crate::config::Config;
        use crate::config::lower::{Seeds, node_config};
        use crate::core::action::{DetectionKind, Event};
        let y = r#"
locators: { ipv4: 192.0.2.17 }
database-mappings:
  - { eid-prefix: 198.51.100.0/24, locators: [{ address: 192.0.2.17, priority: 1, weight: 100 }] }
map-servers: [{ address: 192.0.2.1, key: k }]
dynamic-eid-maps:
  - name: Roamer-1
    database-mappings: [{ eid-prefix: 198.51.100.128/25, locators: [{ address: 192.0.2.17, priority: 1, weight: 100 }] }]
    map-notify-group: 239.1.1.254
interfaces:
  - { name: vlan10, role: eid, mobility: Roamer-1 }
  - { name: eth0, role: rloc }
"#;
        let cfg = Config::from_yaml_str(y).unwrap();
        let mut nc = node_config(
            &cfg,
            Seeds {
                nonce_seed: 1.into(),
                map_server_nonce_seed: 2.into(),
                register_nonce_base: 1,
            },
        )
        .unwrap();
        nc.mobility
            .resolve_ifindexes(|n| (n == "vlan10").then_some(10))
            .unwrap();
        let t0 = Timestamp::from_secs(100);
        let mut node = Node::new(nc, t0);
        node.handle(
            t0,
            Event::DynamicEidDetected {
                ifindex: 10,
                vlan: None,
                instance_id: 0,
                eid: "198.51.100.130".parse().unwrap(),
                mac: [2, 0, 0, 0, 0, 1],
                kind: DetectionKind::Data,
            },
        );
        let now = Timestamp::from_secs(107);
        let v = answer(&node, now, &Request::DynamicEid);
        let rows: Vec<DynamicEidRow> = serde_json::from_value(v["dynamic-eids"].clone()).unwrap();
        assert_eq!(
            rows,
            vec![DynamicEidRow {
                map: "Roamer-1".into(),
                instance_id: 0,
                eid: "198.51.100.130".parse().unwrap(),
                interface: Some("vlan10".into()),
                uptime_secs: 7,
                last_packet_secs: Some(7),
                origin: Origin::Local,
                rlocs: vec![],
            }]
        );
        let v = answer(&node, now, &Request::DynamicEidSummary);
        assert_eq!(v["total"]["local"], 1, "{v}");
        let m = crate::shell::control::render_metrics(&node, now);
        assert!(
            m.contains("lisp_mobility_total{event=\"detected\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("lisp_dynamic_eids{origin=\"local\"} 1\n"), "{m}");
        assert!(
            m.contains("lisp_mobility_total{event=\"smr_sent\"} 0\n"),
            "{m}"
        );
    }

    #[test]
    fn requests_are_tagged_json() {
        assert_eq!(
            parse_request(b"{\"show\":\"dynamic-eid\"}\n").unwrap(),
            Request::DynamicEid
        );
        assert_eq!(
            parse_request(b"{\"show\":\"dynamic-eid-summary\"}").unwrap(),
            Request::DynamicEidSummary
        );
        assert_eq!(
            serde_json::to_string(&Request::DynamicEidSummary).unwrap(),
            "{\"show\":\"dynamic-eid-summary\"}"
        );
        for bad in [
            &b"{\"show\":\"nothing\"}"[..],
            b"",
            b"show dynamic-eid",
            b"{}",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dynamic_eids_round_trip_and_print_as_a_table() {
        let v = show_dynamic_eid(&view());
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let rows: Vec<DynamicEidRow> =
            serde_json::from_value(back["dynamic-eids"].clone()).unwrap();
        // Sorted by map, then address.
        assert_eq!(
            rows.iter().map(|r| r.eid.to_string()).collect::<Vec<_>>(),
            ["198.51.100.7", "198.51.100.9", "2001:db8:1::7"]
        );
        assert_eq!(back["dynamic-eids"][0]["last-packet-secs"], 2);
        assert_eq!(back["dynamic-eids"][1]["origin"], "away");
        assert_eq!(
            format_dynamic_eids(&back).unwrap(),
            "Map       EID            Interface  Uptime    Last packet   Origin\n\
             Roamer-1  198.51.100.7   vlan10     01:02:03  00:00:02 ago  local\n\
             Roamer-1  198.51.100.9   -          01:02:03  -             away (192.0.2.33)\n\
             Roamer-2  2001:db8:1::7  -          01:02:03  -             site\n\
             3 dynamic EID(s)\n"
        );
    }

    #[test]
    fn summary_counts_per_map_and_origin() {
        let v = show_dynamic_eid_summary(&view());
        assert_eq!(v["total"]["local"], 1);
        assert_eq!(v["total"]["away"], 1);
        assert_eq!(v["total"]["site"], 1);
        assert_eq!(
            format_summary(&v).unwrap(),
            "Map       Local  Site  Away  Total\n\
             Roamer-1  1      0     1     2\n\
             Roamer-2  0      1     0     1\n\
             total     1      1     1     3\n"
        );
    }

    #[test]
    fn durations_read_like_the_reference() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(59), "00:00:59");
        assert_eq!(hms(3600 + 61), "01:01:01");
        assert_eq!(hms(2 * 86_400 + 5), "2d00:00:05");
    }

    /// The server end to end on a socket in a temporary directory: mode 0600, answers what the
    /// control loop says, refuses garbage, refuses to take over a live socket, replaces a
    /// stale one, and removes itself on drop.
    #[tokio::test]
    async fn serves_requests_through_the_control_loop() {
        let dir = std::env::temp_dir().join(format!("lisp-api-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("api.sock");
        let (tx, mut rx) = mpsc::channel::<ApiCall>(4);
        let server = spawn(&path, tx.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The control loop's part.
        let lp = tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                let v = match call.request {
                    Request::DynamicEid => show_dynamic_eid(&view()),
                    Request::DynamicEidSummary => show_dynamic_eid_summary(&view()),
                };
                let _ = call.reply.send(v);
            }
        });
        let p = path.clone();
        let v = tokio::task::spawn_blocking(move || request(&p, &Request::DynamicEid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v["dynamic-eids"].as_array().unwrap().len(), 3);

        // Garbage gets an error answer, not a hang or a crash.
        let p = path.clone();
        let raw = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(b"{\"show\":\"everything\"}\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains("bad request"), "{v}");

        // A second agent does not steal a live socket.
        let err = spawn(&path, tx.clone()).err().unwrap();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");

        drop(server);
        assert!(!path.exists(), "socket removed at stop");
        // A leftover socket nobody listens on is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = spawn(&path, tx).unwrap();
        let p = path.clone();
        let v = tokio::task::spawn_blocking(move || request(&p, &Request::DynamicEidSummary))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v["total"]["local"], 1);
        drop(server);
        lp.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
