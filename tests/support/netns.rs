//! A small network-namespace topology builder for tests, the lab and the bench.
//!
//! Everything it creates lives in namespaces whose names start with one prefix, and a [`Topology`]
//! deletes all of them (after stopping the processes it started, by pid) when dropped — also when
//! a test panics. It drives `ip` and `nsenter` rather than netlink directly: the commands are what
//! an operator would type, so a failing step can be replayed by hand.
//!
//! Commands run with `nsenter --net=/run/netns/NAME`, not `ip netns exec`: the latter remounts
//! /sys, which hides /sys/fs/bpf from the agent (see the XDP notes).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The scratch directory of a test topology with this prefix (logs, captures, configs).
pub fn workdir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lisp-e2e-{}", prefix.trim_end_matches('-')))
}

/// A prefix unique to this process and call: `{tag}{pid}n{counter}-`.
pub fn unique_prefix(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}n{n}-", std::process::id())
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Whether this process may create namespaces and load XDP programs.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Names of the existing network namespaces (from /run/netns).
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes every namespace whose name starts with `prefix`, first killing the processes still
/// running in it (only those: their net namespace is that one). Used by `lab --down`.
pub fn delete_netns_with_prefix(prefix: &str) -> Result<usize> {
    let mut n = 0;
    for name in list_netns().into_iter().filter(|n| n.starts_with(prefix)) {
        for pid in pids_in_netns(&name) {
            kill_pid(pid, Duration::from_secs(3));
        }
        run(Command::new("ip").args(["netns", "del", &name]))?;
        n += 1;
    }
    Ok(n)
}

/// Processes whose network namespace is the named one (compared by inode).
fn pids_in_netns(name: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                && m.ino() == target.ino()
                && m.dev() == target.dev()
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// SIGTERM, then SIGKILL after `grace`. Reaping is left to whoever owns the child handle.
fn kill_pid(pid: i32, grace: Duration) {
    // SAFETY: plain syscalls on a pid we started (or found in a namespace we own).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Runs `f` on a thread that has entered the named network namespace: sockets it opens and
/// netlink/bpf calls it makes act in that namespace. Only that thread moves; the caller stays.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| -> Result<R> {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on an fd we own; it affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in netns {ns} panicked"))?
    })
}

/// A background process started in a namespace.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Whether it is still running (reaps it if not).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The namespaces and processes of one topology; all removed on drop.
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    /// Where logs and captures go (kept after drop for post-mortem reading).
    pub workdir: PathBuf,
    /// Skip cleanup (lab --keep).
    pub keep: bool,
}

impl Topology {
    /// A new topology whose namespace names start with `prefix` and whose files go in `workdir`.
    pub fn new(prefix: &str, workdir: &Path) -> Result<Self> {
        if !is_root() {
            bail!("network-namespace topologies need root (CAP_NET_ADMIN, CAP_BPF)");
        }
        std::fs::create_dir_all(workdir)?;
        Ok(Topology {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            procs: Vec::new(),
            workdir: workdir.to_path_buf(),
            keep: false,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Full name of the namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Creates namespace `short` with loopback up; returns its full name.
    pub fn add_ns(&mut self, short: &str) -> Result<String> {
        let name = self.ns(short);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        self.ip(short, &["link", "set", "lo", "up"])?;
        // IPv6 addresses come up at once (no duplicate address detection in a closed lab).
        self.sysctl(short, "net.ipv6.conf.all.accept_dad", "0")?;
        self.sysctl(short, "net.ipv6.conf.default.accept_dad", "0")?;
        Ok(name)
    }

    /// `ip -n NS args...`
    pub fn ip(&self, short: &str, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").arg("-n").arg(self.ns(short)).args(args))
    }

    pub fn sysctl(&self, short: &str, key: &str, value: &str) -> Result<()> {
        self.exec(short, &["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Turns the namespace into a router: IPv4 and IPv6 forwarding (bpf_fib_lookup also refuses
    /// to work without them).
    pub fn router(&self, short: &str) -> Result<()> {
        self.sysctl(short, "net.ipv4.ip_forward", "1")?;
        self.sysctl(short, "net.ipv6.conf.all.forwarding", "1")
    }

    /// A veth pair `a_if`@`a` — `b_if`@`b` with fixed MACs and MTU, both up.
    #[allow(clippy::too_many_arguments)]
    pub fn veth(
        &self,
        a: &str,
        a_if: &str,
        a_mac: &str,
        b: &str,
        b_if: &str,
        b_mac: &str,
        mtu: u32,
    ) -> Result<()> {
        let mtu = mtu.to_string();
        self.ip(
            a,
            &[
                "link",
                "add",
                a_if,
                "address",
                a_mac,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "address",
                b_mac,
                "mtu",
                &mtu,
                "netns",
                &self.ns(b),
            ],
        )?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Adds an address (`a.b.c.d/len` or IPv6 `x::y/len`; IPv6 without DAD).
    pub fn addr(&self, short: &str, ifname: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(short, &args)?;
        Ok(())
    }

    /// `ip route add PREFIX via GW` (family from the prefix).
    pub fn route(&self, short: &str, prefix: &str, via: &str) -> Result<()> {
        self.ip(short, &["route", "add", prefix, "via", via])?;
        Ok(())
    }

    /// A permanent neighbour entry: XDP's fib lookup needs a resolved neighbour, and nothing in
    /// a lab that only forwards in XDP would otherwise make the kernel resolve it.
    pub fn neigh(&self, short: &str, ifname: &str, ip: &str, mac: &str) -> Result<()> {
        self.ip(
            short,
            &[
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ],
        )?;
        Ok(())
    }

    pub fn ifindex(&self, short: &str, ifname: &str) -> Result<u32> {
        // nsenter keeps the caller's /sys, so ask the kernel from inside the namespace.
        let ifname = ifname.to_string();
        in_netns(&self.ns(short), move || {
            let c = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: valid NUL-terminated string.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if idx == 0 {
                bail!("no interface {ifname}");
            }
            Ok(idx)
        })
    }

    /// Runs a command in the namespace and waits for it; fails if it exits non-zero.
    pub fn exec(&self, short: &str, args: &[&str]) -> Result<Output> {
        run(&mut self.command(short, args))
    }

    /// A command that will run in the namespace (not started).
    pub fn command(&self, short: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(short)))
            .arg("--")
            .args(args);
        c
    }

    /// Starts a background process in the namespace, its output going to `workdir/NAME.log`.
    /// It is killed (by pid) when the topology is dropped, or by [`Topology::stop`].
    pub fn spawn(&mut self, short: &str, name: &str, args: &[&str]) -> Result<usize> {
        let log = self.workdir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = self
            .command(short, args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {args:?} in {short}"))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(self.procs.len() - 1)
    }

    pub fn proc(&mut self, handle: usize) -> &mut Proc {
        &mut self.procs[handle]
    }

    /// Stops a process started by [`Topology::spawn`]: SIGTERM (it may clean up, e.g. detach XDP),
    /// SIGKILL after 5 s. Returns its exit status.
    pub fn stop(&mut self, handle: usize) -> Option<std::process::ExitStatus> {
        let p = &mut self.procs[handle];
        if let Ok(Some(st)) = p.child.try_wait() {
            return Some(st);
        }
        // nsenter execs the command, so the child's pid is the process itself. Poll with
        // try_wait: an exited child stays in /proc as a zombie until it is reaped.
        let pid = p.child.id() as i32;
        // SAFETY: signalling a child we started and have not reaped (its pid cannot be reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        p.child.wait().ok()
    }

    /// Waits until `cond` holds or `timeout` passes; an error from `cond` ends the wait at once.
    pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every process and deletes every namespace now.
    pub fn teardown(&mut self) {
        for i in 0..self.procs.len() {
            self.stop(i);
        }
        self.procs.clear();
        for ns in self.namespaces.drain(..) {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.teardown();
    }
}
