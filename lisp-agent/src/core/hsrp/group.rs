//! The state machine of one HSRP group on one interface (RFC 2281 §5.3-§5.6): the election of
//! an active and a standby router by priority then address, the active / standby / hello timers,
//! preemption by coup, resignation, and learning the VIP and timers from the active router.
//!
//! How RFC 2281's event table maps onto this code (events a..l, actions A..J):
//!
//! | event | learn | listen | speak | standby | active |
//! |---|---|---|---|---|---|
//! | a interface up | | | | | (initial → listen, or learn without a VIP; A B) |
//! | b interface down | → initial | → initial | → initial | → initial | resign, → initial |
//! | c active timer | | → speak | forget the active | → active | |
//! | d standby timer | | → speak | → standby (→ active if no active is known) | | forget the standby |
//! | e hello timer | | | hello | hello | hello |
//! | f hello, higher, speak | | B | B, → listen | B, → listen | |
//! | g hello, higher, active | A E, → listen | A E | A E | A E | A B, → speak |
//! | h hello, lower, active | A E, → listen | A E, preempt? | A E, preempt? | A E, preempt? | coup |
//! | i resign from the active | | → speak | forget the active | → active | |
//! | j coup, higher | A | A | A | A | A B, → speak |
//! | k hello, higher, standby | B | B | B, → listen | B, → listen | B |
//! | l hello, lower, standby | B | B, → speak | → standby | | B |
//!
//! "higher" compares (priority, interface address). A = (re)start the active timer with the
//! sender's hold time, B = the same for the standby timer, E = learn VIP and timers. "preempt?":
//! with `preempt` configured, a coup and → active once the preemption delay since interface up
//! has passed (a timer otherwise). Entering speak (re)starts the standby timer: a router speaks
//! for one hold time (the election) before it claims standby, which is what the tcpdump
//! captures show Cisco routers doing (election: speak at 0 s, standby at 10 s; failover: the
//! listener speaks when the active timer expires and is standby 10 s later). Entering speak,
//! standby or active sends a hello at once and starts the hello timer. A coup from a router that does not
//! outrank us is refused (counted), in every state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::hsrp::{self, Message, OpCode, State, Version, v1, v2};

use super::config::{ConfigError, GroupConfig, Timers};
use super::counters::{Counters, Refusal};
use crate::core::time::{Timestamp, earliest};

/// What happens to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The interface is up and the group is configured on it (RFC event a).
    Up,
    /// The interface went down or the group is removed / the agent stops (event b).
    Down,
    /// [`HsrpGroup::poll_timeout`] has come.
    Timer,
    /// A parsed HSRP message from `src` (the IP source address of the datagram).
    Received { src: IpAddr, message: Message },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `payload` over UDP from the group's `local_addr` (source port = `to`'s port) to the
    /// multicast group `to` on the group's interface: IPv4 TTL 1 (RFC 2281 §5; the Cisco
    /// captures), IPv6 hop limit 255 (as in the v2 IPv6 capture). The active router sends from
    /// the virtual MAC (the Cisco and scapy captures do), the others from their own.
    Send { to: SocketAddr, payload: Vec<u8> },
    /// This router is now the active gateway: own `vip` with `mac` on the interface (answer ARP
    /// / ND for it from that MAC only) and announce it (gratuitous ARP / unsolicited NA).
    BecomeActive { vip: IpAddr, mac: [u8; 6] },
    /// No longer active: release `vip` and `mac` (stop answering for them).
    StopActive { vip: IpAddr, mac: [u8; 6] },
    /// For logs and metrics.
    StateChanged { from: State, to: State },
}

/// Another router of the group, as its last hello described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub priority: u32,
}

/// What `show hsrp` prints for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: Version,
    pub group: u16,
    pub state: State,
    /// This router's address when it is active.
    pub active: Option<IpAddr>,
    /// This router's address when it is standby.
    pub standby: Option<IpAddr>,
    pub priority: u8,
    pub preempt: Option<Duration>,
    /// Configured or learned.
    pub vip: Option<IpAddr>,
    pub mac: [u8; 6],
    pub timers: Timers,
    /// The timers in use were learned from the active router.
    pub timers_learned: bool,
}

/// A hello / coup / resign of our version, group and authentication, in common units.
#[derive(Debug, Clone, Copy)]
struct Heard {
    op: OpCode,
    state: State,
    priority: u32,
    hello: Duration,
    hold: Duration,
    vip: Option<IpAddr>,
}

/// One HSRP group on one interface. See the module docs for the transitions.
#[derive(Debug)]
pub struct HsrpGroup {
    cfg: GroupConfig,
    state: State,
    /// Configured, or learned from the active router.
    vip: Option<IpAddr>,
    timers: Timers,
    timers_learned: bool,
    active: Option<Peer>,
    standby: Option<Peer>,
    active_timer: Option<Timestamp>,
    standby_timer: Option<Timestamp>,
    hello_timer: Option<Timestamp>,
    /// A preemption waiting for its delay.
    preempt_timer: Option<Timestamp>,
    up_since: Option<Timestamp>,
    counters: Counters,
}

/// Byte comparison whose time does not depend on where the bytes differ.
fn ct_eq(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HsrpGroup {
    /// A group in state initial; nothing happens until [`Event::Up`].
    pub fn new(cfg: GroupConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(HsrpGroup {
            state: State::Initial,
            vip: cfg.vip,
            timers: cfg.timers.unwrap_or_default(),
            timers_learned: false,
            active: None,
            standby: None,
            active_timer: None,
            standby_timer: None,
            hello_timer: None,
            preempt_timer: None,
            up_since: None,
            counters: Counters::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The active router we hear (`None` while we are active ourselves).
    pub fn active_router(&self) -> Option<Peer> {
        self.active
    }

    /// The standby router we hear (`None` while we are standby ourselves).
    pub fn standby_router(&self) -> Option<Peer> {
        self.standby
    }

    pub fn status(&self) -> Status {
        let me = self.cfg.local_addr;
        Status {
            version: self.cfg.version,
            group: self.cfg.group,
            state: self.state,
            active: if self.state == State::Active {
                Some(me)
            } else {
                self.active.map(|p| p.addr)
            },
            standby: if self.state == State::Standby {
                Some(me)
            } else {
                self.standby.map(|p| p.addr)
            },
            priority: self.cfg.priority,
            preempt: self.cfg.preempt,
            vip: self.vip,
            mac: self.cfg.virtual_mac(),
            timers: self.timers,
            timers_learned: self.timers_learned,
        }
    }

    /// When to call `handle(now, Event::Timer)` next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [self.active_timer, self.standby_timer, self.preempt_timer]
            .into_iter()
            .fold(self.hello_timer, earliest)
    }

    /// Parse a UDP payload received on port 1985 / 2029 and handle it; a malformed one is
    /// counted and changes nothing.
    pub fn handle_datagram(&mut self, now: Timestamp, src: IpAddr, payload: &[u8]) -> Vec<Action> {
        match Message::parse(payload) {
            Ok(message) => self.handle(now, Event::Received { src, message }),
            Err(_) => {
                self.counters.refuse(Refusal::Malformed);
                Vec::new()
            }
        }
    }

    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Up => self.up(now, &mut out),
            Event::Down => self.down(now, &mut out),
            Event::Timer => self.timers_due(now, &mut out),
            Event::Received { src, message } => self.received(now, src, message, &mut out),
        }
        out
    }

    fn up(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if self.state != State::Initial {
            return;
        }
        self.up_since = Some(now);
        // RFC action A B: listen for one hold time for who is there before speaking.
        self.active_timer = Some(now + self.timers.hold);
        self.standby_timer = Some(now + self.timers.hold);
        let to = if self.vip.is_some() {
            State::Listen
        } else {
            State::Learn
        };
        self.set_state(now, to, out);
    }

    fn down(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if self.state == State::Initial {
            return;
        }
        if self.state == State::Active {
            self.send(OpCode::Resign, out);
        }
        self.set_state(now, State::Initial, out);
        // Forget everything learned: the next up starts from the configuration.
        self.vip = self.cfg.vip;
        self.timers = self.cfg.timers.unwrap_or_default();
        self.timers_learned = false;
        self.active = None;
        self.standby = None;
        self.active_timer = None;
        self.standby_timer = None;
        self.hello_timer = None;
        self.preempt_timer = None;
        self.up_since = None;
    }

    fn timers_due(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        // Several timers may be due at once; each one handled may start or stop others.
        loop {
            let due = |t: Option<Timestamp>| t.filter(|t| *t <= now);
            if due(self.hello_timer).is_some() {
                self.hello_timer = Some(now + self.timers.hello);
                self.send(OpCode::Hello, out);
            } else if due(self.active_timer).is_some() {
                // Event c: the active router is gone.
                self.active_timer = None;
                self.active = None;
                match self.state {
                    State::Listen => self.set_state(now, State::Speak, out),
                    State::Standby => self.set_state(now, State::Active, out),
                    _ => {}
                }
            } else if due(self.standby_timer).is_some() {
                // Event d: no standby router (or none better than us) was heard.
                self.standby_timer = None;
                self.standby = None;
                match self.state {
                    State::Listen => self.set_state(now, State::Speak, out),
                    State::Speak => {
                        self.set_state(now, State::Standby, out);
                        if self.active.is_none() && self.active_timer.is_none() {
                            self.set_state(now, State::Active, out);
                        }
                    }
                    _ => {}
                }
            } else if due(self.preempt_timer).is_some() {
                self.preempt_timer = None;
                let lower_active = self
                    .active
                    .is_some_and(|a| !self.outranks(a.priority, a.addr));
                if lower_active && self.may_preempt() {
                    self.coup(now, out);
                }
            } else {
                break;
            }
        }
    }

    /// Checks in the order of the cheapest refusal; each refusal is counted once.
    fn received(&mut self, now: Timestamp, src: IpAddr, m: Message, out: &mut Vec<Action>) {
        if self.state == State::Initial {
            return self.counters.refuse(Refusal::Down);
        }
        if src == self.cfg.local_addr {
            return self.counters.refuse(Refusal::Looped);
        }
        let h = match self.heard(src, m) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(why) => return self.counters.refuse(why),
        };
        let higher = self.outranks(h.priority, src);
        let peer = Peer {
            addr: src,
            priority: h.priority,
        };
        match h.op {
            OpCode::Hello => {
                self.counters.hellos_received += 1;
                self.on_hello(now, peer, higher, h, out);
            }
            OpCode::Coup => {
                if !higher {
                    return self.counters.refuse(Refusal::LowerCoup);
                }
                self.counters.coups_received += 1;
                // Event j: the sender takes over as active.
                self.active = Some(peer);
                self.active_timer = Some(now + h.hold);
                self.preempt_timer = None;
                if self.state == State::Active {
                    // No resign: the coup already made the sender active, and the Cisco
                    // router in the tcpdump coup capture sends none either.
                    self.set_state(now, State::Speak, out);
                }
            }
            OpCode::Resign => {
                self.counters.resigns_received += 1;
                // Event i, only from the router we know as active.
                if self.active.map(|a| a.addr) == Some(src) {
                    self.active = None;
                    self.active_timer = None;
                    self.preempt_timer = None;
                    match self.state {
                        State::Standby => self.set_state(now, State::Active, out),
                        State::Listen => self.set_state(now, State::Speak, out),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Our version / family / group / authentication, in common units; `Ok(None)` for a
    /// message that takes no part in the election (a v1 advertisement).
    fn heard(&mut self, src: IpAddr, m: Message) -> Result<Option<Heard>, Refusal> {
        let cfg = &self.cfg;
        if src.is_ipv6() != cfg.ipv6 {
            return Err(Refusal::OtherVersion);
        }
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let (group, auth_ok, h) = match m {
            Message::V1Advertise(_) => {
                self.counters.advertisements_received += 1;
                return Ok(None);
            }
            Message::V1(r) => {
                if cfg.version != Version::V1 {
                    return Err(Refusal::OtherVersion);
                }
                let h = Heard {
                    op: r.op,
                    state: r.state,
                    priority: u32::from(r.priority),
                    hello: Duration::from_secs(u64::from(r.hellotime)),
                    hold: Duration::from_secs(u64::from(r.holdtime)),
                    vip: Some(IpAddr::V4(r.vip)).filter(|v| !v.is_unspecified()),
                };
                (u16::from(r.group), ct_eq(&r.auth, &cfg.auth), h)
            }
            Message::V2(r) => {
                let g = r.group_state;
                if cfg.version != Version::V2 || g.vip.is_ipv6() != cfg.ipv6 {
                    return Err(Refusal::OtherVersion);
                }
                let auth_ok = match r.auth {
                    v2::Auth::Text(a) => ct_eq(&a, &cfg.auth),
                    // We always authenticate (default "cisco"); MD5 is not supported.
                    v2::Auth::None | v2::Auth::Md5 => false,
                };
                let h = Heard {
                    op: g.op,
                    state: g.state,
                    priority: g.priority,
                    hello: ms(g.hellotime_ms),
                    hold: ms(g.holdtime_ms),
                    vip: Some(g.vip).filter(|v| !v.is_unspecified()),
                };
                (g.group, auth_ok, h)
            }
        };
        if group != cfg.group {
            return Err(Refusal::OtherGroup);
        }
        if !auth_ok {
            return Err(Refusal::Auth);
        }
        if h.hold.is_zero() || h.hello >= h.hold {
            return Err(Refusal::BadTimers);
        }
        Ok(Some(h))
    }

    fn on_hello(
        &mut self,
        now: Timestamp,
        peer: Peer,
        higher: bool,
        h: Heard,
        out: &mut Vec<Action>,
    ) {
        match (h.state, self.state) {
            (State::Active, State::Active) => {
                if higher {
                    // Event g while active: a better active router exists.
                    self.active = Some(peer);
                    self.active_timer = Some(now + h.hold);
                    self.standby_timer = Some(now + self.timers.hold);
                    self.set_state(now, State::Speak, out);
                } else {
                    // Event h while active: assert ourselves.
                    self.send(OpCode::Coup, out);
                }
            }
            (State::Active, _) => {
                if self.standby.is_some_and(|s| s.addr == peer.addr) {
                    // The standby took over; its standby timer keeps running, so that the
                    // free standby role is contended for when it expires.
                    self.standby = None;
                }
                self.active = Some(peer);
                self.active_timer = Some(now + h.hold);
                self.learn(&h);
                if self.state == State::Learn && self.vip.is_some() {
                    self.set_state(now, State::Listen, out);
                }
                if higher {
                    self.preempt_timer = None;
                } else if self.may_preempt() {
                    self.preempt(now, out);
                }
            }
            (State::Standby, State::Standby) if higher => {
                // Event k: a better standby; it keeps the role.
                self.standby = Some(peer);
                self.standby_timer = Some(now + h.hold);
                self.set_state(now, State::Listen, out);
            }
            // Event l: the lower one yields when it hears our hellos.
            (State::Standby, State::Standby) => {}
            (State::Speak, State::Standby) if higher => {
                // Event f while standby: a better candidate; let it have the role (Cisco's
                // standby goes silent on the first speak hello of a higher router).
                self.standby_timer = Some(now + h.hold);
                self.set_state(now, State::Listen, out);
            }
            (State::Standby, mine) => {
                self.standby = Some(peer);
                self.standby_timer = Some(now + h.hold);
                match (higher, mine) {
                    (true, State::Speak) => self.set_state(now, State::Listen, out),
                    (false, State::Listen) => self.set_state(now, State::Speak, out),
                    (false, State::Speak) => self.set_state(now, State::Standby, out),
                    _ => {}
                }
            }
            (State::Speak, State::Listen) if higher => {
                // Event f: a better candidate is campaigning for standby; wait for it.
                self.standby_timer = Some(now + h.hold);
            }
            (State::Speak, State::Speak) if higher => {
                self.standby_timer = Some(now + h.hold);
                self.set_state(now, State::Listen, out);
            }
            // Hellos from lower speakers, and from routers in states that do not send hellos.
            _ => {}
        }
    }

    /// RFC action E: the VIP (if not configured) and the timers (if not configured), never
    /// while active (RFC 2281 §5.1).
    fn learn(&mut self, h: &Heard) {
        if self.state == State::Active {
            return;
        }
        match (self.cfg.vip, h.vip) {
            (None, Some(v)) => self.vip = Some(v),
            (Some(c), Some(v)) if c != v => self.counters.vip_mismatch += 1,
            _ => {}
        }
        if self.cfg.timers.is_none() {
            self.timers = Timers {
                hello: h.hello,
                hold: h.hold,
            };
            self.timers_learned = true;
        }
    }

    fn may_preempt(&self) -> bool {
        self.cfg.preempt.is_some()
            && self.vip.is_some()
            && matches!(self.state, State::Listen | State::Speak | State::Standby)
    }

    /// Coup now, or when the delay since interface up has passed.
    fn preempt(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let delay = self.cfg.preempt.unwrap_or_default();
        let allowed = self.up_since.unwrap_or(now) + delay;
        if now >= allowed {
            self.coup(now, out);
        } else {
            self.preempt_timer = Some(allowed);
        }
    }

    fn coup(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        // The coup carries the state we take it from (the tcpdump coup capture: "listen").
        self.send(OpCode::Coup, out);
        self.set_state(now, State::Active, out);
    }

    fn outranks(&self, priority: u32, addr: IpAddr) -> bool {
        (priority, addr) > (u32::from(self.cfg.priority), self.cfg.local_addr)
    }

    fn set_state(&mut self, now: Timestamp, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.counters.state_changes += 1;
        let mac = self.cfg.virtual_mac();
        if from == State::Active
            && let Some(vip) = self.vip
        {
            out.push(Action::StopActive { vip, mac });
        }
        out.push(Action::StateChanged { from, to });
        match to {
            State::Active => {
                self.counters.became_active += 1;
                self.active = None;
                self.active_timer = None;
                self.preempt_timer = None;
                if let Some(vip) = self.vip {
                    out.push(Action::BecomeActive { vip, mac });
                }
            }
            State::Standby => {
                self.standby = None;
                self.standby_timer = None;
            }
            State::Speak => {
                // The election: speak for one hold time before claiming standby (RFC action
                // B on entering speak; Cisco in the failover and coup captures).
                self.standby_timer = Some(now + self.timers.hold);
            }
            _ => {}
        }
        if matches!(to, State::Speak | State::Standby | State::Active) {
            self.send(OpCode::Hello, out);
            self.hello_timer = Some(now + self.timers.hello);
        } else {
            self.hello_timer = None;
        }
    }

    fn send(&mut self, op: OpCode, out: &mut Vec<Action>) {
        let cfg = &self.cfg;
        let (msg, to) = match cfg.version {
            Version::V1 => {
                let secs = |d: Duration| d.as_secs().min(255) as u8;
                let vip = match self.vip {
                    Some(IpAddr::V4(a)) => a,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                let m = Message::V1(v1::Repr {
                    op,
                    state: self.state,
                    hellotime: secs(self.timers.hello),
                    holdtime: secs(self.timers.hold),
                    priority: cfg.priority,
                    group: cfg.group as u8,
                    auth: cfg.auth,
                    vip,
                });
                (m, SocketAddr::new(hsrp::V1_MULTICAST.into(), hsrp::PORT))
            }
            Version::V2 => {
                let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                let unspecified = if cfg.ipv6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                };
                let m = Message::V2(v2::Repr {
                    group_state: v2::GroupState {
                        op,
                        state: self.state,
                        group: cfg.group,
                        identifier: cfg.local_mac,
                        priority: u32::from(cfg.priority),
                        hellotime_ms: ms(self.timers.hello),
                        holdtime_ms: ms(self.timers.hold),
                        vip: self.vip.unwrap_or(unspecified),
                    },
                    auth: v2::Auth::Text(cfg.auth),
                });
                let to = if cfg.ipv6 {
                    SocketAddr::new(hsrp::V2_MULTICAST_V6.into(), hsrp::PORT_V6)
                } else {
                    SocketAddr::new(hsrp::V2_MULTICAST_V4.into(), hsrp::PORT)
                };
                (m, to)
            }
        };
        let mut payload = vec![0u8; msg.buffer_len()];
        // Cannot fail: the configuration was validated (group range) and the buffer is sized.
        if msg.emit(&mut payload).is_err() {
            return;
        }
        match op {
            OpCode::Hello => self.counters.hellos_sent += 1,
            OpCode::Coup => self.counters.coups_sent += 1,
            OpCode::Resign => self.counters.resigns_sent += 1,
        }
        out.push(Action::Send { to, payload });
    }
}
