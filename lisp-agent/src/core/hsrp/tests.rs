//! The HSRP state machine under a simulated clock: several routers of one group on a virtual
//! segment (every datagram a router sends reaches every other live router at the same instant,
//! unless the test's loss function drops it), driven by their own `poll_timeout`s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::hsrp::{self, DEFAULT_AUTH, Message, OpCode, State, Version, v1, v2};
use proptest::prelude::*;

use super::*;
use crate::core::time::Timestamp;

const VIP: &str = "192.0.2.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn ms(m: u64) -> Timestamp {
    Timestamp::from_millis(m)
}

/// A v1 group 1 router at 192.0.2.`host` with the VIP configured.
fn v1_cfg(host: u8, priority: u8) -> GroupConfig {
    let mut c = GroupConfig::new(
        Version::V1,
        1,
        ip(&format!("192.0.2.{host}")),
        [2, 0, 0, 0, 0, host],
    );
    c.vip = Some(ip(VIP));
    c.priority = priority;
    c
}

type Loss = Box<dyn FnMut(Timestamp, usize, usize, &Message) -> bool>;

struct Router {
    g: HsrpGroup,
    alive: bool,
    /// Every action with the time it was returned.
    log: Vec<(Timestamp, Action)>,
}

struct Segment {
    routers: Vec<Router>,
    now: Timestamp,
    loss: Loss,
    /// (time, from, to, message) of every datagram delivered.
    delivered: Vec<(Timestamp, usize, usize, Message)>,
    /// Largest number of routers in state active at the end of any instant.
    max_active: usize,
}

impl Segment {
    fn new(cfgs: Vec<GroupConfig>) -> Self {
        Segment {
            routers: cfgs
                .into_iter()
                .map(|c| Router {
                    g: HsrpGroup::new(c).unwrap(),
                    alive: true,
                    log: Vec::new(),
                })
                .collect(),
            now: Timestamp::ZERO,
            loss: Box::new(|_, _, _, _| false),
            delivered: Vec::new(),
            max_active: 0,
        }
    }

    fn addr(&self, i: usize) -> IpAddr {
        self.routers[i].g.config().local_addr
    }

    /// Record router `i`'s actions and deliver what it sends, and what that causes.
    fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        let mut queue = vec![(i, actions)];
        while let Some((from, actions)) = queue.pop() {
            for a in actions {
                self.routers[from].log.push((self.now, a.clone()));
                let Action::Send { payload, .. } = a else {
                    continue;
                };
                let msg = Message::parse(&payload).expect("we send what we parse");
                let src = self.addr(from);
                for to in 0..self.routers.len() {
                    if to == from
                        || !self.routers[to].alive
                        || (self.loss)(self.now, from, to, &msg)
                    {
                        continue;
                    }
                    self.delivered.push((self.now, from, to, msg));
                    let now = self.now;
                    let acts = self.routers[to].g.handle_datagram(now, src, &payload);
                    queue.push((to, acts));
                }
            }
        }
    }

    fn event(&mut self, i: usize, ev: Event) {
        let acts = self.routers[i].g.handle(self.now, ev);
        self.carry_out(i, acts);
        self.note_active();
    }

    /// Inject a datagram from an outsider at `src` to router `i`; returns its actions.
    fn inject(&mut self, i: usize, src: &str, payload: &[u8]) -> Vec<Action> {
        let now = self.now;
        let acts = self.routers[i].g.handle_datagram(now, ip(src), payload);
        self.carry_out(i, acts.clone());
        self.note_active();
        acts
    }

    /// Also checks, for every router, that the VIP is owned exactly while it is active: every
    /// `BecomeActive` is matched by one `StopActive` on leaving.
    fn note_active(&mut self) {
        for (i, r) in self.routers.iter().enumerate() {
            let owned = r.log.iter().fold(0i32, |n, (_, a)| match a {
                Action::BecomeActive { .. } => n + 1,
                Action::StopActive { .. } => n - 1,
                _ => n,
            });
            assert_eq!(
                owned,
                i32::from(r.g.state() == State::Active),
                "router {i}: {:?}",
                r.log
            );
        }
        let n = self
            .routers
            .iter()
            .filter(|r| r.alive && r.g.state() == State::Active)
            .count();
        self.max_active = self.max_active.max(n);
    }

    /// Advance the clock to `t`, firing every router's timers on time.
    fn run_until(&mut self, t: Timestamp) {
        loop {
            let next = self
                .routers
                .iter()
                .filter(|r| r.alive)
                .filter_map(|r| r.g.poll_timeout())
                .min();
            match next {
                Some(n) if n <= t => {
                    self.now = n.max(self.now);
                    for i in 0..self.routers.len() {
                        let due = self.routers[i].alive
                            && self.routers[i]
                                .g
                                .poll_timeout()
                                .is_some_and(|d| d <= self.now);
                        if due {
                            let acts = self.routers[i].g.handle(self.now, Event::Timer);
                            self.carry_out(i, acts);
                        }
                    }
                    self.note_active();
                }
                _ => break,
            }
        }
        self.now = t;
    }

    fn up_all(&mut self) {
        for i in 0..self.routers.len() {
            self.event(i, Event::Up);
        }
    }

    /// A crash: no resign, no more hellos.
    fn kill(&mut self, i: usize) {
        self.routers[i].alive = false;
    }

    fn state(&self, i: usize) -> State {
        self.routers[i].g.state()
    }

    fn states(&self) -> Vec<State> {
        self.routers.iter().map(|r| r.g.state()).collect()
    }

    /// Times router `i` entered `state`.
    fn entered(&self, i: usize, state: State) -> Vec<Timestamp> {
        self.routers[i]
            .log
            .iter()
            .filter(|(_, a)| matches!(a, Action::StateChanged { to, .. } if *to == state))
            .map(|(t, _)| *t)
            .collect()
    }

    fn became_active(&self, i: usize) -> Vec<(Timestamp, IpAddr, [u8; 6])> {
        self.routers[i]
            .log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::BecomeActive { vip, mac } => Some((*t, *vip, *mac)),
                _ => None,
            })
            .collect()
    }

    /// The last hello router `from` got through to router `to`.
    fn last_delivered(&self, from: usize, to: usize) -> Timestamp {
        self.delivered
            .iter()
            .filter(|(_, f, t, _)| (*f, *t) == (from, to))
            .map(|(t, ..)| *t)
            .max()
            .unwrap()
    }

    /// The messages router `i` sent.
    fn sent(&self, i: usize) -> Vec<(Timestamp, SocketAddr, Message)> {
        self.routers[i]
            .log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Send { to, payload } => Some((*t, *to, Message::parse(payload).unwrap())),
                _ => None,
            })
            .collect()
    }
}

/// A v2 hello from an active router of group 1 (priority 255, default timers and auth) for `vip`.
fn v2_active_hello(vip: IpAddr) -> Vec<u8> {
    let m = Message::V2(v2::Repr {
        group_state: v2::GroupState {
            op: OpCode::Hello,
            state: State::Active,
            group: 1,
            identifier: [2, 0, 0, 0, 0, 9],
            priority: 255,
            hellotime_ms: 3000,
            holdtime_ms: 10000,
            vip,
        },
        auth: v2::Auth::Text(DEFAULT_AUTH),
    });
    let mut b = vec![0; m.buffer_len()];
    m.emit(&mut b).unwrap();
    b
}

fn v1_hello(op: OpCode, state: State, priority: u8, group: u8, auth: [u8; 8]) -> Vec<u8> {
    let m = Message::V1(v1::Repr {
        op,
        state,
        hellotime: 3,
        holdtime: 10,
        priority,
        group,
        auth,
        vip: VIP.parse().unwrap(),
    });
    let mut b = vec![0; m.buffer_len()];
    m.emit(&mut b).unwrap();
    b
}

/// Two routers come up together: each listens one hold time, speaks one hold time, and the
/// higher priority one becomes active; the other takes standby after its own speak period.
#[test]
fn election_by_priority() {
    let mut s = Segment::new(vec![v1_cfg(2, 110), v1_cfg(3, 100)]);
    s.up_all();
    assert_eq!(s.states(), [State::Listen, State::Listen]);
    s.run_until(secs(120));
    assert_eq!(s.states(), [State::Active, State::Standby]);
    assert_eq!(s.entered(0, State::Speak), [secs(10)]);
    assert_eq!(s.entered(0, State::Active), [secs(20)]);
    // B heard A's higher standby hello at 20 s (hold 10 s), then spoke for one hold time.
    assert_eq!(s.entered(1, State::Speak), [secs(10), secs(30)]);
    assert_eq!(s.entered(1, State::Standby), [secs(40)]);
    assert_eq!(
        s.became_active(0),
        [(secs(20), ip(VIP), [0, 0, 0x0c, 0x07, 0xac, 1])]
    );
    assert!(s.became_active(1).is_empty());
    assert_eq!(s.max_active, 1);
    // The active router sends one hello every 3 s.
    let hellos = |i| {
        s.sent(i)
            .iter()
            .filter(|(t, to, m)| {
                *t > secs(60)
                    && *t <= secs(120)
                    && *to == SocketAddr::new(hsrp::V1_MULTICAST.into(), 1985)
                    && matches!(m, Message::V1(r) if r.op == OpCode::Hello)
            })
            .count()
    };
    assert_eq!(hellos(0), 20);
    assert_eq!(hellos(1), 20);
    for r in &s.routers {
        assert_eq!(r.g.counters().refused_total(), 0);
    }
    let st = s.routers[1].g.status();
    assert_eq!(
        (st.active, st.standby, st.vip),
        (Some(ip("192.0.2.2")), Some(ip("192.0.2.3")), Some(ip(VIP)))
    );
}

#[test]
fn equal_priorities_higher_address_wins() {
    let mut s = Segment::new(vec![v1_cfg(2, 100), v1_cfg(3, 100), v1_cfg(9, 100)]);
    s.up_all();
    s.run_until(secs(200));
    assert_eq!(s.states(), [State::Listen, State::Standby, State::Active]);
    assert_eq!(s.max_active, 1);
}

/// The active router crashes: the standby takes over exactly one hold time after the last
/// hello it heard, which is within one hold time of the crash.
#[test]
fn standby_takes_over_within_hold_time() {
    let mut s = Segment::new(vec![v1_cfg(2, 110), v1_cfg(3, 100), v1_cfg(4, 90)]);
    s.up_all();
    s.run_until(secs(100));
    assert_eq!(s.states(), [State::Active, State::Standby, State::Listen]);
    let crash = ms(100_500);
    s.run_until(crash);
    s.kill(0);
    s.run_until(secs(200));
    let last = s.last_delivered(0, 1);
    let took_over = s.became_active(1);
    assert_eq!(took_over.len(), 1);
    assert_eq!(took_over[0].0, last + Duration::from_secs(10));
    assert!(took_over[0].0 <= crash + Duration::from_secs(10));
    // The listener moves up to standby: after the old standby's last standby hello expired,
    // it speaks for one hold time.
    assert_eq!(s.state(1), State::Active);
    assert_eq!(s.state(2), State::Standby);
    assert_eq!(s.max_active, 1);
}

/// A graceful stop: resign, and the standby is active at the same instant.
#[test]
fn resign_hands_over_at_once() {
    let mut s = Segment::new(vec![v1_cfg(2, 110), v1_cfg(3, 100)]);
    s.up_all();
    s.run_until(ms(60_500));
    s.event(0, Event::Down);
    let log: Vec<&Action> = s.routers[0]
        .log
        .iter()
        .filter(|(t, _)| *t == ms(60_500))
        .map(|(_, a)| a)
        .collect();
    let mac = [0, 0, 0x0c, 0x07, 0xac, 1];
    assert!(matches!(log[0], Action::Send { payload, .. }
            if matches!(Message::parse(payload), Ok(Message::V1(r)) if r.op == OpCode::Resign && r.state == State::Active)));
    assert_eq!(log[1], &Action::StopActive { vip: ip(VIP), mac });
    assert_eq!(
        log[2],
        &Action::StateChanged {
            from: State::Active,
            to: State::Initial
        }
    );
    assert_eq!(log.len(), 3);
    assert_eq!(s.state(1), State::Active);
    assert_eq!(s.became_active(1), [(ms(60_500), ip(VIP), mac)]);
    // Down is final until Up: no timers, nothing sent, hellos refused.
    assert_eq!(s.routers[0].g.poll_timeout(), None);
    let n = s.routers[0].log.len();
    s.run_until(secs(100));
    assert_eq!(s.routers[0].log.len(), n);
    assert!(s.routers[0].g.counters().refused(Refusal::Down) > 0);
    // Back up: listens again, and without preemption stays out of the active role.
    s.event(0, Event::Up);
    s.run_until(secs(200));
    assert_eq!(s.states(), [State::Standby, State::Active]);
}

/// Router B is active alone; a higher-priority A comes up at 30 s.
fn late_higher_router(preempt: Option<Duration>) -> Segment {
    let mut a = v1_cfg(2, 110);
    a.preempt = preempt;
    let mut s = Segment::new(vec![a, v1_cfg(3, 100)]);
    s.event(1, Event::Up);
    s.run_until(secs(30));
    assert_eq!(s.state(1), State::Active);
    s.event(0, Event::Up);
    s
}

#[test]
fn no_preemption_without_preempt() {
    let mut s = late_higher_router(None);
    s.run_until(secs(300));
    assert_eq!(s.states(), [State::Standby, State::Active]);
    assert!(s.became_active(0).is_empty());
    assert_eq!(s.routers[0].g.counters().coups_sent, 0);
}

#[test]
fn preemption_by_coup() {
    let mut s = late_higher_router(Some(Duration::ZERO));
    s.run_until(secs(300));
    assert_eq!(s.states(), [State::Active, State::Standby]);
    // B's first hello after A came up (B active since 20 s: hellos at 20 + 3k s) → coup.
    assert_eq!(s.became_active(0).len(), 1);
    assert_eq!(s.became_active(0)[0].0, secs(32));
    let coups: Vec<_> = s
        .sent(0)
        .into_iter()
        .filter(|(_, _, m)| matches!(m, Message::V1(r) if r.op == OpCode::Coup))
        .collect();
    assert_eq!(coups.len(), 1);
    // Sent from listen, as the Cisco router in the tcpdump coup capture does.
    assert!(matches!(coups[0].2, Message::V1(r) if r.state == State::Listen && r.priority == 110));
    // B released the VIP at the same instant (without a resign, like Cisco after a coup).
    assert_eq!(s.routers[1].g.counters().resigns_sent, 0);
    assert!(s.routers[1].log.contains(&(
        secs(32),
        Action::StopActive {
            vip: ip(VIP),
            mac: [0, 0, 0x0c, 0x07, 0xac, 1]
        }
    )));
    // (B's first standby was on its way to active at 20 s.)
    assert_eq!(s.entered(1, State::Standby), [secs(20), secs(42)]);
    assert_eq!(s.max_active, 1);
}

#[test]
fn preemption_waits_for_its_delay() {
    let mut s = late_higher_router(Some(Duration::from_secs(15)));
    s.run_until(secs(300));
    assert_eq!(s.states(), [State::Active, State::Standby]);
    // Up at 30 s + 15 s; meanwhile A went listen → speak at 40 s.
    assert_eq!(s.became_active(0).len(), 1);
    assert_eq!(s.became_active(0)[0].0, secs(45));
    assert_eq!(s.entered(0, State::Speak), [secs(40)]);
    assert_eq!(s.max_active, 1);
}

/// Lost hellos: gaps shorter than the hold time change nothing; the first gap of a hold time
/// makes the standby active exactly then.
#[test]
fn lost_hellos_fail_over_only_after_hold_time() {
    let mut s = Segment::new(vec![v1_cfg(2, 110), v1_cfg(3, 100)]);
    let mut n = 0u32;
    s.loss = Box::new(move |now, from, _, _| {
        if from != 0 || now < secs(60) {
            return false;
        }
        if now >= secs(600) {
            return true;
        }
        // Two of every three hellos lost: 9 s gaps, under the 10 s hold time.
        n += 1;
        !n.is_multiple_of(3)
    });
    s.up_all();
    s.run_until(ms(599_999));
    assert_eq!(s.states(), [State::Active, State::Standby]);
    s.run_until(secs(700));
    let last = s.last_delivered(0, 1);
    assert!(last < secs(600) && last > secs(590), "{last:?}");
    assert_eq!(
        s.became_active(1),
        [(
            last + Duration::from_secs(10),
            ip(VIP),
            [0, 0, 0x0c, 0x07, 0xac, 1]
        )]
    );
    // One-way loss: A still hears B's active hellos and answers each with a coup, which
    // never arrives; both stay active until the link heals (what real routers do too).
    assert_eq!(s.states(), [State::Active, State::Active]);
    let coups_after_split = s
        .sent(0)
        .iter()
        .filter(|(t, _, m)| *t >= secs(600) && matches!(m, Message::V1(r) if r.op == OpCode::Coup))
        .count();
    // B's active hellos from its takeover to 700 s, every 3 s.
    let b_active_hellos = s
        .sent(1)
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::V1(r) if r.op == OpCode::Hello && r.state == State::Active))
        .count();
    assert_eq!(coups_after_split, b_active_hellos);
    // Exactly every third of A's hellos between 60 s and 600 s (62 s, 65 s, ... 599 s: 180)
    // got through, 9 s apart.
    let through: Vec<Timestamp> = s
        .delivered
        .iter()
        .filter(|(t, f, _, _)| *f == 0 && *t >= secs(60) && *t < secs(600))
        .map(|(t, ..)| *t)
        .collect();
    assert_eq!(through.len(), 60);
    assert!(
        through
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(9))
    );
    // The link heals: B hears the higher active router and steps back to speak, then standby.
    s.loss = Box::new(|_, _, _, _| false);
    s.run_until(secs(800));
    assert_eq!(s.states(), [State::Active, State::Standby]);
    assert_eq!(
        s.entered(1, State::Speak).len(),
        3,
        "{:?}",
        s.entered(1, State::Speak)
    );
}

#[test]
fn coup_and_resign_between_two() {
    // A active; a higher outsider coups: A releases the VIP and speaks (no resign: the coup
    // made the outsider active already); the outsider resigns: A, now the only one, becomes
    // active again after its speak period.
    let mut s = Segment::new(vec![v1_cfg(2, 110)]);
    s.up_all();
    s.run_until(secs(30));
    assert_eq!(s.state(0), State::Active);
    let acts = s.inject(
        0,
        "192.0.2.50",
        &v1_hello(OpCode::Coup, State::Speak, 200, 1, DEFAULT_AUTH),
    );
    let mac = [0, 0, 0x0c, 0x07, 0xac, 1];
    assert_eq!(acts[0], Action::StopActive { vip: ip(VIP), mac });
    assert_eq!(
        acts[1],
        Action::StateChanged {
            from: State::Active,
            to: State::Speak
        }
    );
    assert!(matches!(&acts[2], Action::Send { payload, .. }
        if matches!(Message::parse(payload), Ok(Message::V1(r)) if r.op == OpCode::Hello && r.state == State::Speak)));
    assert_eq!(acts.len(), 3);
    assert_eq!(s.routers[0].g.counters().resigns_sent, 0);
    assert_eq!(s.state(0), State::Speak);
    assert_eq!(
        s.routers[0].g.active_router(),
        Some(Peer {
            addr: ip("192.0.2.50"),
            priority: 200
        })
    );
    s.inject(
        0,
        "192.0.2.50",
        &v1_hello(OpCode::Resign, State::Active, 200, 1, DEFAULT_AUTH),
    );
    assert_eq!(s.routers[0].g.active_router(), None);
    // Speak since 30 s: standby at 40 s, and with no active known, active at once.
    s.run_until(secs(60));
    assert_eq!(s.entered(0, State::Active), [secs(20), secs(40)]);
    assert_eq!(s.routers[0].g.counters().coups_received, 1);
    assert_eq!(s.routers[0].g.counters().resigns_received, 1);
}

/// Nothing that is malformed, unauthenticated, for another group or version, looped, or a coup
/// from below changes the active router's state or makes it send anything; each is counted.
/// The same hello, correct, does dethrone it (so each refused one would have).
#[test]
fn bad_input_is_refused_and_counted() {
    let mut s = Segment::new(vec![v1_cfg(2, 110)]);
    s.up_all();
    s.run_until(ms(30_500));
    assert_eq!(s.state(0), State::Active);
    let before = s.routers[0].g.counters().clone();
    let good = v1_hello(OpCode::Hello, State::Active, 255, 1, DEFAULT_AUTH);
    let mut bad_timers = good.clone();
    bad_timers[4] = 0;
    let v2_msg = v2_active_hello(ip(VIP));
    let cases: Vec<(&str, Vec<u8>, Refusal)> = vec![
        ("192.0.2.9", good[..19].to_vec(), Refusal::Malformed),
        (
            "192.0.2.9",
            vec![0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Refusal::Malformed,
        ),
        (
            "192.0.2.9",
            v1_hello(OpCode::Hello, State::Active, 255, 1, *b"secret\0\0"),
            Refusal::Auth,
        ),
        (
            "192.0.2.9",
            v1_hello(OpCode::Hello, State::Active, 255, 2, DEFAULT_AUTH),
            Refusal::OtherGroup,
        ),
        ("192.0.2.9", v2_msg, Refusal::OtherVersion),
        ("2001:db8::9", good.clone(), Refusal::OtherVersion),
        ("192.0.2.2", good.clone(), Refusal::Looped),
        ("192.0.2.9", bad_timers, Refusal::BadTimers),
        (
            "192.0.2.9",
            v1_hello(OpCode::Coup, State::Listen, 50, 1, DEFAULT_AUTH),
            Refusal::LowerCoup,
        ),
        (
            // Equal priority, lower address: not higher either.
            "192.0.2.1",
            v1_hello(OpCode::Coup, State::Listen, 110, 1, DEFAULT_AUTH),
            Refusal::LowerCoup,
        ),
    ];
    for (src, payload, why) in &cases {
        let n = s.routers[0].g.counters().refused(*why);
        let acts = s.inject(0, src, payload);
        assert_eq!(acts, [], "{why:?}");
        assert_eq!(s.state(0), State::Active, "{why:?}");
        assert_eq!(s.routers[0].g.counters().refused(*why), n + 1, "{why:?}");
    }
    // A v1 advertisement is counted, not refused, and changes nothing.
    let adv = [0, 3, 0, 1, 0, 14, 2, 0, 0, 0, 0, 1, 0x6f, 0, 0, 0];
    assert_eq!(s.inject(0, "192.0.2.9", &adv), []);
    let after = s.routers[0].g.counters();
    assert_eq!(after.advertisements_received, 1);
    assert_eq!(after.refused_total(), cases.len() as u64);
    assert_eq!(after.hellos_received, before.hellos_received);
    assert_eq!(after.state_changes, before.state_changes);
    // The timers are unchanged too: the next hello is still due on the 3 s grid.
    assert_eq!(s.routers[0].g.poll_timeout(), Some(secs(32)));
    // The control: the same hello, well-formed and authenticated, from a higher router.
    s.inject(0, "192.0.2.9", &good);
    assert_eq!(s.state(0), State::Speak);
}

#[test]
fn wrong_auth_between_routers_means_two_actives() {
    // Each side refuses the other's hellos: both become active, as with real routers whose
    // keys differ; the refusals are counted, so `show` and metrics explain it.
    let mut b = v1_cfg(3, 100);
    b.auth = GroupConfig::auth_from_str("other").unwrap();
    let mut s = Segment::new(vec![v1_cfg(2, 110), b]);
    s.up_all();
    s.run_until(secs(60));
    assert_eq!(s.states(), [State::Active, State::Active]);
    assert!(s.routers[0].g.counters().refused(Refusal::Auth) > 0);
    assert!(s.routers[1].g.counters().refused(Refusal::Auth) > 0);
}

/// A router without VIP and timers learns both from the active router's hellos, sends them in
/// its own, and uses them when it takes over.
#[test]
fn learns_vip_and_timers_from_the_active_router() {
    let mut b = v1_cfg(3, 200);
    b.timers = Some(Timers {
        hello: Duration::from_secs(1),
        hold: Duration::from_secs(4),
    });
    let mut a = v1_cfg(2, 100);
    a.vip = None;
    let mut s = Segment::new(vec![a, b]);
    s.event(1, Event::Up);
    s.run_until(secs(10));
    assert_eq!(s.entered(1, State::Active), [secs(8)]);
    s.event(0, Event::Up);
    assert_eq!(s.state(0), State::Learn);
    s.run_until(ms(10_500));
    assert_eq!(s.state(0), State::Learn);
    s.run_until(secs(11));
    assert_eq!(s.state(0), State::Listen);
    let st = s.routers[0].g.status();
    assert_eq!(st.vip, Some(ip(VIP)));
    assert!(st.timers_learned);
    assert_eq!(st.timers.hold, Duration::from_secs(4));
    s.run_until(ms(30_500));
    assert_eq!(s.state(0), State::Standby);
    // Its hellos carry the learned values.
    let (_, _, m) = s.sent(0).pop().unwrap();
    assert!(
        matches!(m, Message::V1(r) if r.hellotime == 1 && r.holdtime == 4 && r.vip.to_string() == VIP)
    );
    s.kill(1);
    s.run_until(secs(60));
    let last = s.last_delivered(1, 0);
    assert_eq!(
        s.became_active(0),
        [(
            last + Duration::from_secs(4),
            ip(VIP),
            [0, 0, 0x0c, 0x07, 0xac, 1]
        )]
    );
    // Stays on the learned timers while active (RFC 2281: an active router does not learn).
    assert_eq!(s.routers[0].g.status().timers.hello, Duration::from_secs(1));
    // Down forgets what was learned.
    s.event(0, Event::Down);
    assert_eq!(s.routers[0].g.status().vip, None);
    assert!(!s.routers[0].g.status().timers_learned);
}

fn v2_cfg(host: u16, priority: u8, ipv6: bool) -> GroupConfig {
    let (local, vip) = if ipv6 {
        (ip(&format!("fe80::{host}")), ip("2001:db8::1"))
    } else {
        (ip(&format!("192.0.2.{host}")), ip(VIP))
    };
    let mut c = GroupConfig::new(Version::V2, 1000, local, [2, 0, 0, 0, 0, host as u8]);
    c.vip = Some(vip);
    c.priority = priority;
    c.timers = Some(Timers {
        hello: Duration::from_millis(100),
        hold: Duration::from_millis(300),
    });
    c
}

#[test]
fn v2_millisecond_timers_ipv4_and_ipv6() {
    for ipv6 in [false, true] {
        let mut s = Segment::new(vec![v2_cfg(2, 110, ipv6), v2_cfg(3, 100, ipv6)]);
        s.up_all();
        s.run_until(secs(3));
        assert_eq!(s.states(), [State::Active, State::Standby]);
        assert_eq!(s.entered(0, State::Active), [ms(600)]);
        let mac = if ipv6 {
            [0, 5, 0x73, 0xa0, 0x03, 0xe8]
        } else {
            [0, 0, 0x0c, 0x9f, 0xf3, 0xe8]
        };
        let vip = s.routers[0].g.config().vip.unwrap();
        assert_eq!(s.became_active(0), [(ms(600), vip, mac)]);
        let (_, to, m) = s.sent(0).pop().unwrap();
        let dst = if ipv6 {
            SocketAddr::new(hsrp::V2_MULTICAST_V6.into(), 2029)
        } else {
            SocketAddr::new(hsrp::V2_MULTICAST_V4.into(), 1985)
        };
        assert_eq!(to, dst);
        let Message::V2(r) = m else { panic!("{m:?}") };
        assert_eq!(
            (
                r.group_state.state,
                r.group_state.group,
                r.group_state.hellotime_ms,
                r.group_state.holdtime_ms
            ),
            (State::Active, 1000, 100, 300)
        );
        assert_eq!(r.group_state.identifier, [2, 0, 0, 0, 0, 2]);
        assert_eq!(r.auth, v2::Auth::Text(DEFAULT_AUTH));
        s.kill(0);
        s.run_until(secs(4));
        let last = s.last_delivered(0, 1);
        assert_eq!(
            s.became_active(1),
            [(last + Duration::from_millis(300), vip, mac)]
        );
        assert!(last + Duration::from_millis(300) <= ms(3300));
        // A v1 hello for the same group number is another protocol to a v2 group.
        let v1 = v1_hello(OpCode::Hello, State::Active, 255, 232, DEFAULT_AUTH);
        let src = if ipv6 { "fe80::9" } else { "192.0.2.9" };
        assert_eq!(s.inject(1, src, &v1), []);
        assert_eq!(s.routers[1].g.counters().refused(Refusal::OtherVersion), 1);
    }
}

#[test]
fn configured_virtual_mac() {
    let mut a = v1_cfg(2, 110);
    a.mac = Some([0x00, 0x00, 0x0e, 0x1d, 0x01, 0x0c]);
    let mut s = Segment::new(vec![a]);
    s.up_all();
    s.run_until(secs(30));
    assert_eq!(
        s.became_active(0),
        [(secs(20), ip(VIP), [0x00, 0x00, 0x0e, 0x1d, 0x01, 0x0c])]
    );
    assert_eq!(
        s.routers[0].g.status().mac,
        [0x00, 0x00, 0x0e, 0x1d, 0x01, 0x0c]
    );
}

#[test]
fn config_is_validated() {
    let base = v1_cfg(2, 100);
    let check = |f: &dyn Fn(&mut GroupConfig)| {
        let mut c = base.clone();
        f(&mut c);
        HsrpGroup::new(c).err()
    };
    assert_eq!(check(&|_| {}), None);
    assert_eq!(
        check(&|c| c.group = 256),
        Some(ConfigError::GroupOutOfRange {
            group: 256,
            max: 255
        })
    );
    assert_eq!(check(&|c| c.ipv6 = true), Some(ConfigError::Ipv6NeedsV2));
    assert_eq!(
        check(&|c| c.vip = Some(ip("2001:db8::1"))),
        Some(ConfigError::VipFamily(ip("2001:db8::1")))
    );
    assert_eq!(
        check(&|c| c.vip = Some(ip("224.0.0.2"))),
        Some(ConfigError::VipUnusable(ip("224.0.0.2")))
    );
    assert_eq!(
        check(&|c| c.mac = Some([1, 0, 0x5e, 0, 0, 1])),
        Some(ConfigError::MacUnusable([1, 0, 0x5e, 0, 0, 1]))
    );
    let t = |h, d| {
        Some(Timers {
            hello: Duration::from_millis(h),
            hold: Duration::from_millis(d),
        })
    };
    assert!(matches!(
        check(&|c| c.timers = t(3000, 3000)),
        Some(ConfigError::TimersOrder { .. })
    ));
    assert!(matches!(
        check(&|c| c.timers = t(0, 3000)),
        Some(ConfigError::TimersOrder { .. })
    ));
    assert_eq!(
        check(&|c| c.timers = t(500, 3000)),
        Some(ConfigError::V1Timer(Duration::from_millis(500)))
    );
    assert_eq!(
        check(&|c| c.timers = t(1000, 256_000)),
        Some(ConfigError::V1Timer(Duration::from_secs(256)))
    );
    let v2 = v2_cfg(2, 100, true);
    assert!(HsrpGroup::new(v2.clone()).is_ok());
    let mut bad = v2.clone();
    bad.group = 4096;
    assert_eq!(
        HsrpGroup::new(bad).err(),
        Some(ConfigError::GroupOutOfRange {
            group: 4096,
            max: 4095
        })
    );
    let mut bad = v2;
    bad.local_addr = ip("192.0.2.2");
    assert_eq!(
        HsrpGroup::new(bad).err(),
        Some(ConfigError::LocalAddrFamily(ip("192.0.2.2")))
    );
    assert_eq!(
        GroupConfig::auth_from_str("123456789"),
        Err(ConfigError::AuthTooLong(9))
    );
    assert_eq!(GroupConfig::auth_from_str("cisco"), Ok(DEFAULT_AUTH));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any number of routers with any priorities (duplicates included), coming up at any
    /// times, all preempting: once settled, the best (priority, address) is active, the
    /// second best standby, the others listen, and nothing changes any more. Never two
    /// actives at the end of an instant.
    #[test]
    fn preempting_routers_converge_to_the_best_two(
        routers in proptest::collection::vec((any::<u8>(), 0u64..30_000), 2..6),
    ) {
        let cfgs: Vec<GroupConfig> = routers
            .iter()
            .enumerate()
            .map(|(i, (prio, _))| {
                let mut c = v1_cfg(10 + i as u8, *prio);
                c.preempt = Some(Duration::ZERO);
                c
            })
            .collect();
        let mut s = Segment::new(cfgs);
        let mut ups: Vec<(u64, usize)> = routers.iter().enumerate().map(|(i, (_, t))| (*t, i)).collect();
        ups.sort();
        for (t, i) in ups {
            s.run_until(ms(t));
            s.event(i, Event::Up);
        }
        s.run_until(secs(200));
        let mut rank: Vec<usize> = (0..routers.len()).collect();
        rank.sort_by_key(|&i| std::cmp::Reverse((routers[i].0, s.addr(i))));
        let settled = s.states();
        prop_assert_eq!(settled[rank[0]], State::Active, "{:?}", settled);
        prop_assert_eq!(settled[rank[1]], State::Standby, "{:?}", settled);
        for &i in &rank[2..] {
            prop_assert_eq!(settled[i], State::Listen, "{:?}", settled);
        }
        let changes: Vec<u64> = s.routers.iter().map(|r| r.g.counters().state_changes).collect();
        s.run_until(secs(400));
        let later: Vec<u64> = s.routers.iter().map(|r| r.g.counters().state_changes).collect();
        prop_assert_eq!(changes, later);
        prop_assert_eq!(s.max_active, 1);
    }
}

// ---- replay of real Cisco captures ---------------------------------------------------------

/// (time since the first frame, IPv4 source, UDP payload) of every UDP 1985 datagram of a
/// classic little-endian pcap of Ethernet frames under testdata/captures.
fn capture(rel: &str) -> Vec<(Duration, IpAddr, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures")
        .join(rel);
    let d = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let le32 = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    assert_eq!((le32(0), le32(20)), (0xa1b2_c3d4, 1), "LE pcap of Ethernet");
    let mut out = Vec::new();
    let mut first = None;
    let mut o = 24;
    while o + 16 <= d.len() {
        let t =
            Duration::from_secs(u64::from(le32(o))) + Duration::from_micros(u64::from(le32(o + 4)));
        let cap = le32(o + 8) as usize;
        let f = &d[o + 16..o + 16 + cap];
        o += 16 + cap;
        let first = *first.get_or_insert(t);
        // Ethernet / IPv4 / UDP 1985.
        if f[12..14] != [8, 0] || f[23] != 17 {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let udp = &ip[ihl..];
        if udp[2..4] != 1985u16.to_be_bytes() {
            continue;
        }
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let src = IpAddr::from([ip[12], ip[13], ip[14], ip[15]]);
        out.push((t - first, src, udp[8..len].to_vec()));
    }
    out
}

/// What a passive router (priority 1, no preemption) at 192.168.0.250 makes of a capture of
/// Cisco routers in group 1: (time, active, standby) after every datagram, its own state
/// changes, and its counters.
/// (time, active, standby) as a group saw them.
type View = Vec<(Duration, Option<IpAddr>, Option<IpAddr>)>;

fn observe(rel: &str) -> (View, HsrpGroup) {
    let mut cfg = GroupConfig::new(Version::V1, 1, ip("192.168.0.250"), [2, 0, 0, 0, 0, 250]);
    cfg.vip = Some(ip("192.168.0.1"));
    cfg.priority = 1;
    let mut g = HsrpGroup::new(cfg).unwrap();
    let t0 = secs(1000);
    g.handle(t0, Event::Up);
    let mut view = Vec::new();
    for (t, src, payload) in capture(rel) {
        let now = t0 + t;
        while let Some(due) = g.poll_timeout().filter(|d| *d <= now) {
            let acts = g.handle(due, Event::Timer);
            assert!(
                !acts
                    .iter()
                    .any(|a| matches!(a, Action::BecomeActive { .. })),
                "{acts:?}"
            );
        }
        let acts = g.handle_datagram(now, src, &payload);
        assert!(
            !acts
                .iter()
                .any(|a| matches!(a, Action::BecomeActive { .. })),
            "{acts:?}"
        );
        let st = g.status();
        view.push((t, st.active, st.standby));
    }
    (view, g)
}

/// Where the view of `addr` as active (`which` = 1) or standby (2) first became `addr`.
fn first_seen(view: &View, which: usize, addr: &str) -> Option<Duration> {
    view.iter()
        .find(|(_, a, s)| [*a, *s][which - 1] == Some(ip(addr)))
        .map(|(t, ..)| *t)
}

#[test]
fn replay_cisco_coup_capture() {
    let (view, g) = observe("tcpdump/HSRP_coup.pcap");
    // .30 active and .20 standby until .10 (priority 200) coups at 21.03 s; then .10 active,
    // and .30, speaking since the coup, is standby 10 s later (the old standby .20 went
    // silent when .30 spoke).
    assert_eq!(view[0].1, Some(ip("192.168.0.30")));
    assert_eq!(view[1].2, Some(ip("192.168.0.20")));
    let coup = first_seen(&view, 1, "192.168.0.10").unwrap();
    assert_eq!(coup, Duration::from_micros(21_033_899));
    assert!(
        view.iter()
            .filter(|(t, ..)| *t < coup)
            .all(|(_, a, _)| *a == Some(ip("192.168.0.30")))
    );
    assert!(
        view.iter()
            .filter(|(t, ..)| *t >= coup)
            .all(|(_, a, _)| *a == Some(ip("192.168.0.10")))
    );
    assert_eq!(view.last().unwrap().2, Some(ip("192.168.0.30")));
    let c = g.counters();
    assert_eq!(c.refused_total(), 0, "{c:?}");
    assert_eq!((c.coups_received, c.resigns_received), (1, 0));
    assert_eq!(c.advertisements_received, 9);
    assert_eq!(g.state(), State::Listen);
}

#[test]
fn replay_cisco_election_capture() {
    let (view, g) = observe("tcpdump/HSRP_election.pcap");
    // Three routers speak from 0 s; .10 (200) is standby at 10.0 s and active at 10.5 s;
    // .30 beats .20 (equal priority, higher address) and is standby at 30.0 s.
    assert_eq!(
        first_seen(&view, 2, "192.168.0.10"),
        Some(Duration::from_micros(10_004_742))
    );
    assert_eq!(
        first_seen(&view, 1, "192.168.0.10"),
        Some(Duration::from_micros(10_500_748))
    );
    assert_eq!(
        first_seen(&view, 2, "192.168.0.30"),
        Some(Duration::from_micros(30_037_844))
    );
    assert_eq!(first_seen(&view, 2, "192.168.0.20"), None);
    let last = view.last().unwrap();
    assert_eq!(
        (last.1, last.2),
        (Some(ip("192.168.0.10")), Some(ip("192.168.0.30")))
    );
    assert_eq!(g.counters().refused_total(), 0);
    assert_eq!(g.state(), State::Listen);
}

#[test]
fn replay_cisco_failover_capture() {
    let (view, g) = observe("tcpdump/HSRP_failover.pcap");
    // .10 active until its last hello at 10.27 s; .30, standby, takes over one hold time
    // later (20.27 s), and .20, speaking since then, is standby at 30.26 s.
    assert_eq!(view[0].1, Some(ip("192.168.0.10")));
    let takeover = first_seen(&view, 1, "192.168.0.30").unwrap();
    let last_10 = view
        .iter()
        .zip(capture("tcpdump/HSRP_failover.pcap"))
        .filter(|(_, (_, src, _))| *src == ip("192.168.0.10"))
        .map(|((t, ..), _)| *t)
        .max()
        .unwrap();
    let hold = Duration::from_secs(10);
    assert!(
        takeover > last_10 + hold - Duration::from_millis(100),
        "{takeover:?}"
    );
    assert!(
        takeover < last_10 + hold + Duration::from_millis(100),
        "{takeover:?}"
    );
    assert_eq!(
        first_seen(&view, 2, "192.168.0.20"),
        Some(Duration::from_micros(30_257_427))
    );
    let last = view.last().unwrap();
    assert_eq!(
        (last.1, last.2),
        (Some(ip("192.168.0.30")), Some(ip("192.168.0.20")))
    );
    assert_eq!(g.counters().refused_total(), 0);
}

/// Our state machine in the place of a real router: in the failover capture, .20 (priority
/// 100) listens while .10 is active and .30 standby. Fed everything the others send, our model
/// of .20 must send what the real .20 sent — the same hellos, in the same states, at the same
/// times give or take Cisco's timer jitter (100 ms): speak when .10's hold time runs out,
/// hellos every 3 s, standby one hold time later.
#[test]
fn shadow_cisco_router_in_failover_capture() {
    let frames = capture("tcpdump/HSRP_failover.pcap");
    let me = ip("192.168.0.20");
    let mut cfg = GroupConfig::new(Version::V1, 1, me, [2, 0, 0, 0, 0, 20]);
    cfg.vip = Some(ip("192.168.0.1"));
    let mut g = HsrpGroup::new(cfg).unwrap();
    let t0 = secs(1000);
    g.handle(t0, Event::Up);
    let mut sent: Vec<(Duration, State)> = Vec::new();
    let mut record = |now: Timestamp, acts: Vec<Action>| {
        for a in acts {
            if let Action::Send { payload, .. } = a {
                let Ok(Message::V1(r)) = Message::parse(&payload) else {
                    panic!()
                };
                assert_eq!(r.op, OpCode::Hello);
                sent.push((now - t0, r.state));
            }
        }
    };
    for (t, src, payload) in frames.iter().filter(|(_, src, _)| *src != me) {
        let now = t0 + *t;
        while let Some(due) = g.poll_timeout().filter(|d| *d <= now) {
            record(due, g.handle(due, Event::Timer));
        }
        record(now, g.handle_datagram(now, *src, payload));
    }
    let end = t0 + frames.last().unwrap().0;
    while let Some(due) = g.poll_timeout().filter(|d| *d <= end) {
        record(due, g.handle(due, Event::Timer));
    }
    let real: Vec<(Duration, State)> = frames
        .iter()
        .filter(|(_, src, _)| *src == me)
        .filter_map(|(t, _, p)| match Message::parse(p) {
            Ok(Message::V1(r)) => Some((*t, r.state)),
            _ => None,
        })
        .collect();
    assert_eq!(real.len(), 10, "{real:?}");
    assert_eq!(sent.len(), real.len(), "ours {sent:?}\nreal {real:?}");
    for (ours, theirs) in sent.iter().zip(&real) {
        assert_eq!(ours.1, theirs.1, "ours {sent:?}\nreal {real:?}");
        let dt = ours.0.abs_diff(theirs.0);
        assert!(
            dt <= Duration::from_millis(100),
            "ours {sent:?}\nreal {real:?}"
        );
    }
    assert_eq!(g.state(), State::Standby);
}

/// Our model in the place of the coup capture's standby router .20 (priority 100). It is
/// brought to standby before the capture starts with synthetic hellos of the active .30; then,
/// fed the capture: standby hellos every 3 s like the real .20 (7 of them), until .30 — ousted
/// by .10's coup and speaking at 21.05 s — outranks it (equal priority, higher address): from
/// then on silent in listen, as the real .20 is.
#[test]
fn shadow_cisco_standby_in_coup_capture() {
    let frames = capture("tcpdump/HSRP_coup.pcap");
    let me = ip("192.168.0.20");
    let mut cfg = GroupConfig::new(Version::V1, 1, me, [2, 0, 0, 0, 0, 20]);
    cfg.vip = Some(ip("192.168.0.1"));
    let mut g = HsrpGroup::new(cfg).unwrap();
    let t0 = secs(1000);
    // Phase chosen so that our hellos fall near the real .20's (1.0 s + 3k s): the count
    // over the capture is then comparable.
    let start = secs(969);
    let mut sent: Vec<(Timestamp, State)> = Vec::new();
    fn feed(
        g: &mut HsrpGroup,
        sent: &mut Vec<(Timestamp, State)>,
        now: Timestamp,
        src: IpAddr,
        payload: &[u8],
    ) {
        while let Some(due) = g.poll_timeout().filter(|d| *d <= now) {
            for a in g.handle(due, Event::Timer) {
                if let Action::Send { payload, .. } = a {
                    let Ok(Message::V1(r)) = Message::parse(&payload) else {
                        panic!()
                    };
                    sent.push((due, r.state));
                }
            }
        }
        let acts = g.handle_datagram(now, src, payload);
        assert!(
            acts.iter().all(|a| !matches!(a, Action::Send { .. })),
            "{acts:?}"
        );
    }
    g.handle(start, Event::Up);
    let active_30 = &frames[0];
    assert_eq!(active_30.1, ip("192.168.0.30"));
    for k in 0..10 {
        feed(
            &mut g,
            &mut sent,
            start + Duration::from_secs(3 * k),
            active_30.1,
            &active_30.2,
        );
    }
    assert_eq!(g.state(), State::Standby);
    for (t, src, payload) in frames.iter().filter(|(_, src, _)| *src != me) {
        feed(&mut g, &mut sent, t0 + *t, *src, payload);
    }
    let ours: Vec<(Duration, State)> = sent
        .iter()
        .filter(|(t, _)| *t >= t0)
        .map(|(t, s)| (*t - t0, *s))
        .collect();
    let real: Vec<(Duration, State)> = frames
        .iter()
        .filter(|(_, src, _)| *src == me)
        .filter_map(|(t, _, p)| match Message::parse(p) {
            Ok(Message::V1(r)) => Some((*t, r.state)),
            _ => None,
        })
        .collect();
    let speak_30 = Duration::from_micros(21_045_272);
    for hellos in [&ours, &real] {
        assert_eq!(hellos.len(), 7, "ours {ours:?}\nreal {real:?}");
        assert!(
            hellos
                .iter()
                .all(|(t, s)| *s == State::Standby && *t < speak_30)
        );
    }
    assert_eq!(g.state(), State::Listen);
    assert_eq!(g.status().standby, Some(ip("192.168.0.30")));
}

/// The scapy-written v2 hellos (IPv4 and IPv6, group 1, priority 110, active, "cisco"), fed to a
/// listening v2 group that configured neither VIP nor timers: accepted, and the VIP and the
/// millisecond timers are learned from them.
#[test]
fn v2_captures_are_understood() {
    for (rel, local, src, vip) in [
        (
            "scapy/hsrpv2-ipv4.pcap",
            "192.0.2.9",
            "192.0.2.2",
            "192.0.2.254",
        ),
        (
            "scapy/hsrpv2-ipv6.pcap",
            "fe80::9",
            "fe80::2",
            "2001:db8:ff::fe",
        ),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/captures")
            .join(rel);
        let frame = std::fs::read(&path).unwrap();
        // One frame; its UDP payload is the last 52 bytes (group state 42 + text auth 10).
        let payload = &frame[frame.len() - 52..];
        let mut g = HsrpGroup::new(GroupConfig::new(
            Version::V2,
            1,
            ip(local),
            [2, 0, 0, 0, 0, 9],
        ))
        .unwrap();
        g.handle(secs(1), Event::Up);
        assert_eq!(g.state(), State::Learn);
        let acts = g.handle_datagram(secs(2), ip(src), payload);
        assert_eq!(g.counters().refused_total(), 0, "{rel}");
        assert_eq!(g.counters().hellos_received, 1, "{rel}");
        assert_eq!(
            acts,
            [Action::StateChanged {
                from: State::Learn,
                to: State::Listen
            }]
        );
        let st = g.status();
        assert_eq!(st.active, Some(ip(src)));
        assert_eq!(st.vip, Some(ip(vip)));
        assert_eq!(
            (st.timers.hello, st.timers.hold, st.timers_learned),
            (
                Duration::from_millis(3000),
                Duration::from_millis(10000),
                true
            )
        );
        assert_eq!(
            g.active_router(),
            Some(Peer {
                addr: ip(src),
                priority: 110
            })
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever arrives, in whatever state: no panic, and every datagram is counted exactly
    /// once (accepted by kind, an advertisement, or refused by reason).
    #[test]
    fn every_datagram_is_counted_once(
        inputs in proptest::collection::vec(
            (0usize..4, any::<u8>(), proptest::collection::vec((0usize..20, any::<u8>()), 0..3), 0u64..40_000),
            1..40,
        ),
    ) {
        let mut s = Segment::new(vec![v1_cfg(2, 110), v1_cfg(3, 100)]);
        s.up_all();
        let mut n = 0u64;
        let mut at = 0u64;
        for (kind, prio, flips, dt) in inputs {
            at += dt;
            s.run_until(ms(at));
            let mut b = match kind {
                0 => v1_hello(OpCode::Hello, State::Active, prio, 1, DEFAULT_AUTH),
                1 => v1_hello(OpCode::Coup, State::Speak, prio, 1, DEFAULT_AUTH),
                2 => v1_hello(OpCode::Resign, State::Active, prio, 1, DEFAULT_AUTH),
                _ => vec![0, 3, 0, 1, 0, 14, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            };
            for (i, v) in flips {
                let l = b.len();
                b[i % l] = v;
            }
            s.inject(0, "192.0.2.77", &b);
            n += 1;
        }
        let c = s.routers[0].g.counters();
        let counted = c.hellos_received + c.coups_received + c.resigns_received
            + c.advertisements_received + c.refused_total();
        // Router 0 also counts what router 1 sent it.
        let from_b = s.delivered.iter().filter(|(_, f, t, _)| (*f, *t) == (1, 0)).count() as u64;
        prop_assert_eq!(counted, n + from_b);
    }
}

// ---- several groups on one interface ---------------------------------------------------------

/// Two routers, each with a v1 group 1 and a v2 group 2 on the same interface, with opposite
/// priorities (load sharing): each group elects on its own, datagrams reach only their group,
/// and what is for no group is counted on the interface.
#[test]
fn interface_dispatches_to_its_groups() {
    let iface = |host: u8, p1: u8, p2: u8| {
        let mut g1 = v1_cfg(host, p1);
        g1.preempt = Some(Duration::ZERO);
        let mut g2 = GroupConfig::new(
            Version::V2,
            2,
            ip(&format!("192.0.2.{host}")),
            [2, 0, 0, 0, 0, host],
        );
        g2.vip = Some(ip("192.0.2.254"));
        g2.priority = p2;
        g2.preempt = Some(Duration::ZERO);
        HsrpInterface::new(vec![g1, g2]).unwrap()
    };
    let mut routers = [iface(2, 110, 90), iface(3, 90, 110)];
    let addrs = [ip("192.0.2.2"), ip("192.0.2.3")];
    let mut now = Timestamp::ZERO;
    let mut logs: [Vec<(GroupKey, Action)>; 2] = [Vec::new(), Vec::new()];
    let mut queue: Vec<(usize, Vec<(GroupKey, Action)>)> = Vec::new();
    for (i, r) in routers.iter_mut().enumerate() {
        queue.push((i, r.handle(now, Event::Up)));
    }
    loop {
        while let Some((from, acts)) = queue.pop() {
            for (key, a) in acts {
                if let Action::Send { payload, .. } = &a {
                    let to = 1 - from;
                    queue.push((to, routers[to].handle_datagram(now, addrs[from], payload)));
                }
                logs[from].push((key, a));
            }
        }
        let Some(next) = routers.iter().filter_map(HsrpInterface::poll_timeout).min() else {
            break;
        };
        if next > secs(100) {
            break;
        }
        now = next;
        for (i, r) in routers.iter_mut().enumerate() {
            queue.push((i, r.handle(now, Event::Timer)));
        }
    }
    let k1 = GroupKey {
        version: Version::V1,
        ipv6: false,
        group: 1,
    };
    let k2 = GroupKey {
        version: Version::V2,
        ipv6: false,
        group: 2,
    };
    let state = |i: usize, k| routers[i].group(k).unwrap().state();
    assert_eq!(
        (state(0, k1), state(0, k2)),
        (State::Active, State::Standby)
    );
    assert_eq!(
        (state(1, k1), state(1, k2)),
        (State::Standby, State::Active)
    );
    // Each BecomeActive is tagged with its group and carries that group's VIP and MAC.
    let became: Vec<&(GroupKey, Action)> = logs[1]
        .iter()
        .filter(|(_, a)| matches!(a, Action::BecomeActive { .. }))
        .collect();
    assert_eq!(
        became,
        [&(
            k2,
            Action::BecomeActive {
                vip: ip("192.0.2.254"),
                mac: [0, 0, 0x0c, 0x9f, 0xf0, 2]
            }
        )]
    );
    for r in &routers {
        assert_eq!(r.counters(), &InterfaceCounters::default());
        for g in r.groups() {
            assert_eq!(g.counters().refused_total(), 0);
        }
    }
    // For no group here: group 7, a v2 IPv6 group 1, garbage, an advertisement.
    let r = &mut routers[0];
    let none = r.handle_datagram(
        now,
        ip("192.0.2.9"),
        &v1_hello(OpCode::Hello, State::Active, 255, 7, DEFAULT_AUTH),
    );
    assert_eq!(none, []);
    let v6 = v2_active_hello(ip("2001:db8::1"));
    assert_eq!(r.handle_datagram(now, ip("fe80::9"), &v6), []);
    assert_eq!(r.handle_datagram(now, ip("192.0.2.9"), &[0, 0, 0]), []);
    let adv = [0, 3, 0, 1, 0, 14, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(r.handle_datagram(now, ip("192.0.2.9"), &adv), []);
    assert_eq!(
        r.counters(),
        &InterfaceCounters {
            malformed: 1,
            no_group: 2,
            advertisements: 1
        }
    );
    for g in r.groups() {
        assert_eq!(g.counters().refused_total(), 0);
    }
}

#[test]
fn interface_refuses_duplicate_and_bad_groups() {
    assert_eq!(
        HsrpInterface::new(vec![v1_cfg(2, 100), v1_cfg(2, 110)]).err(),
        Some(InterfaceConfigError::Duplicate(GroupKey {
            version: Version::V1,
            ipv6: false,
            group: 1
        }))
    );
    let mut bad = v1_cfg(2, 100);
    bad.vip = Some(ip("0.0.0.0"));
    assert!(matches!(
        HsrpInterface::new(vec![bad]).err(),
        Some(InterfaceConfigError::Group(_, ConfigError::VipUnusable(_)))
    ));
    // The same group number in v1 and v2 are different groups.
    let mut v2 = v1_cfg(2, 100);
    v2.version = Version::V2;
    assert!(HsrpInterface::new(vec![v1_cfg(2, 100), v2]).is_ok());
}

/// A hello announcing another VIP than the configured one: counted, the configured VIP stays;
/// the hello still counts for the election (as on Cisco, which only logs it).
#[test]
fn vip_mismatch_is_counted_not_learned() {
    let mut s = Segment::new(vec![v1_cfg(2, 100)]);
    s.up_all();
    let mut other = v1_hello(OpCode::Hello, State::Active, 200, 1, DEFAULT_AUTH);
    other[16..20].copy_from_slice(&[192, 0, 2, 99]);
    s.inject(0, "192.0.2.50", &other);
    let g = &s.routers[0].g;
    assert_eq!(g.counters().vip_mismatch, 1);
    assert_eq!(g.counters().refused_total(), 0);
    assert_eq!(g.status().vip, Some(ip(VIP)));
    assert_eq!(g.status().active, Some(ip("192.0.2.50")));
}
