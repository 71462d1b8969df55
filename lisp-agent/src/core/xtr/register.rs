//! Registration (RFC 9301 §8.2): a Map-Register of every database-mapping to every map-server,
//! each map-server on its own schedule (a redundant pair works independently).
//!
//! Per map-server: send with the M bit (want-map-notify); without a valid Map-Notify (one of our
//! outstanding nonces and an HMAC that verifies with that map-server's key) retransmit after
//! 1 s, doubling up to 60 s — but never slower than the registration interval, so that a
//! map-server that comes back is re-registered within one interval. After a valid Map-Notify
//! the next Map-Register is due one interval after the round started. Every send takes a new,
//! larger nonce (map-servers use it against replays).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lisp_common::wire::control::auth::{self, Auth};
use lisp_common::wire::control::{MapNotify, MapRegister, Message};

use super::{Reject, Xtr};
use crate::core::action::{Action, CONTROL_PORT};
use crate::core::time::Timestamp;

/// First retransmission of an unanswered Map-Register.
pub const RETRANSMIT_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retransmissions (RFC 9301 §8.2: capped at one minute).
pub const RETRANSMIT_MAX: Duration = Duration::from_secs(60);
/// Nonces of earlier sends of the same round that are still accepted (a Map-Notify may answer a
/// retransmission or the one before it).
const OUTSTANDING: usize = 8;
/// Unsolicited Map-Notifies remembered (map-server, nonce) to recognise retransmissions: a
/// map-server gives up after a handful of tries over some seconds, so the last 256 cover every
/// retransmission unless hundreds of notifies arrive meanwhile.
pub(super) const NOTIFY_SEEN: usize = 256;
/// A registration without a valid Map-Notify for this many intervals is shown as expired (the
/// map-server drops it after 3 × 60 s).
const EXPIRY_INTERVALS: u32 = 3;

/// Per map-server state.
#[derive(Clone, Debug)]
pub(super) struct Registration {
    pub(super) next_send: Timestamp,
    /// Nonces sent since the last accepted Map-Notify, oldest first.
    outstanding: Vec<u64>,
    /// The nonces of the round last answered: a second Map-Notify for one of them (answering a
    /// retransmission) is a duplicate, not an unsolicited notify to acknowledge.
    answered: Vec<u64>,
    /// Wait before the next retransmission.
    backoff: Duration,
    round_start: Timestamp,
    last_notify: Option<Timestamp>,
    sends: u64,
    notifies: u64,
    /// Map-Notifies from this map-server refused (bad HMAC).
    bad_auth: u64,
}

impl Registration {
    pub(super) fn new(now: Timestamp) -> Self {
        Registration {
            next_send: now,
            outstanding: Vec::new(),
            answered: Vec::new(),
            backoff: RETRANSMIT_INITIAL,
            round_start: now,
            last_notify: None,
            sends: 0,
            notifies: 0,
            bad_auth: 0,
        }
    }
}

/// Where the registration with one map-server stands (metrics and log lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationState {
    /// No valid Map-Notify yet.
    Registering,
    /// A valid Map-Notify within the last three intervals.
    Registered,
    /// Was registered, but no valid Map-Notify for three intervals.
    Expired,
}

/// Registration status towards one map-server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationStatus {
    pub map_server: IpAddr,
    pub state: RegistrationState,
    pub last_notify: Option<Timestamp>,
    pub next_send: Timestamp,
    pub map_registers_sent: u64,
    pub map_notifies_accepted: u64,
    pub map_notifies_bad_auth: u64,
    /// Sends in the current round without a Map-Notify.
    pub unanswered: usize,
}

impl Xtr {
    /// Registration status for every configured map-server, in config order.
    pub fn registrations(&self, now: Timestamp) -> Vec<RegistrationStatus> {
        let limit = self.cfg.register_interval * EXPIRY_INTERVALS;
        self.cfg
            .map_servers
            .iter()
            .zip(&self.registrations)
            .map(|(ms, r)| RegistrationStatus {
                map_server: ms.address,
                state: match r.last_notify {
                    None => RegistrationState::Registering,
                    Some(t) if now - t <= limit => RegistrationState::Registered,
                    Some(_) => RegistrationState::Expired,
                },
                last_notify: r.last_notify,
                next_send: r.next_send,
                map_registers_sent: r.sends,
                map_notifies_accepted: r.notifies,
                map_notifies_bad_auth: r.bad_auth,
                unanswered: r.outstanding.len(),
            })
            .collect()
    }

    /// The longest retransmission wait: 60 s, or the interval if that is shorter.
    fn backoff_cap(&self) -> Duration {
        RETRANSMIT_MAX
            .min(self.cfg.register_interval)
            .max(RETRANSMIT_INITIAL)
    }

    pub(super) fn register_due(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        for i in 0..self.registrations.len() {
            if self.registrations[i].next_send > now {
                continue;
            }
            let nonce = self.next_register_nonce;
            self.next_register_nonce = self.next_register_nonce.wrapping_add(1).max(1);
            let Some(payload) = self.build_register(i, nonce) else {
                // Cannot happen with a validated config (sizes fit); retry later rather than spin.
                self.registrations[i].next_send = now + self.cfg.register_interval;
                continue;
            };
            let cap = self.backoff_cap();
            let r = &mut self.registrations[i];
            if r.outstanding.is_empty() {
                // A new round (periodic refresh or the very first one).
                r.round_start = now;
                r.backoff = RETRANSMIT_INITIAL.min(cap);
            }
            if r.outstanding.len() == OUTSTANDING {
                r.outstanding.remove(0);
            }
            r.outstanding.push(nonce);
            r.sends += 1;
            r.next_send = now + r.backoff;
            r.backoff = (r.backoff * 2).min(cap);
            self.counters.sent_map_register += 1;
            let ms = self.cfg.map_servers[i].address;
            out.push(Action::Send {
                // The map-server sends its Map-Notify to, and records, the source address.
                from: self.local_locator_like(&ms),
                to: SocketAddr::new(ms, CONTROL_PORT),
                payload,
            });
        }
    }

    fn build_register(&self, ms: usize, nonce: u64) -> Option<Vec<u8>> {
        let peer = &self.cfg.map_servers[ms];
        let records = self
            .cfg
            .database_mappings
            .iter()
            .filter_map(|m| m.to_record(self.cfg.record_ttl_min, None))
            .collect();
        let reg = MapRegister {
            proxy_reply: peer.proxy_reply,
            want_map_notify: true,
            nonce,
            auth: Auth::zeroed(peer.algorithm),
            records,
            xtr: self.cfg.xtr_id,
            ..MapRegister::default()
        };
        auth::emit_signed(&Message::MapRegister(reg), &peer.key).ok()
    }

    pub(super) fn on_map_notify(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        bytes: &[u8],
        n: &MapNotify,
        out: &mut Vec<Action>,
    ) {
        let owner = self
            .registrations
            .iter()
            .position(|r| r.outstanding.contains(&n.nonce));
        let Some(i) = owner else {
            if self
                .registrations
                .iter()
                .any(|r| r.answered.contains(&n.nonce))
            {
                self.counters.reject(Reject::NotifyDuplicate);
            } else {
                self.unsolicited_notify(now, from, bytes, n, out);
            }
            return;
        };
        if auth::verify(bytes, &self.cfg.map_servers[i].key).is_err() {
            self.registrations[i].bad_auth += 1;
            self.counters.reject(Reject::NotifyBadAuth);
            return;
        }
        self.counters.rx_map_notify += 1;
        let interval = self.cfg.register_interval;
        let r = &mut self.registrations[i];
        r.answered = std::mem::take(&mut r.outstanding);
        r.last_notify = Some(now);
        r.notifies += 1;
        r.backoff = RETRANSMIT_INITIAL;
        // Refresh one interval after the round began, but not in the past.
        r.next_send = (r.round_start + interval).max(now);
    }

    /// A Map-Notify we did not ask for (RFC 9301 §5.7: e.g. after an EID moved; RFC 9437: a
    /// publication): if it comes from a configured map-server and verifies with its key, its
    /// records update the map-cache (`notify`), and it is acknowledged with a Map-Notify-Ack
    /// (same body, type 5) so that the map-server stops retransmitting. Anything else is
    /// dropped.
    fn unsolicited_notify(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        bytes: &[u8],
        n: &MapNotify,
        out: &mut Vec<Action>,
    ) {
        let key = self
            .cfg
            .map_servers
            .iter()
            .find(|ms| ms.address == from.ip())
            .map(|ms| ms.key.clone());
        let Some(key) = key else {
            self.counters.reject(Reject::NotifyUnknownNonce);
            return;
        };
        if auth::verify(bytes, &key).is_err() {
            self.counters.reject(Reject::NotifyBadAuth);
            return;
        }
        let Some(alg) = n.auth.algorithm() else {
            self.counters.reject(Reject::NotifyBadAuth);
            return;
        };
        // A map-server retransmits until it hears our ack; a retransmission of a notify we have
        // applied (our ack was lost) is acknowledged again but not applied again: by now a
        // later notify may have changed the same mapping, which the old records would undo.
        let seen = (from.ip(), n.nonce);
        if self.notify_seen.contains(&seen) {
            self.counters.rx_map_notify_repeated += 1;
        } else {
            if !self.apply_notify_records(now, n, out) {
                return;
            }
            if self.notify_seen.len() == NOTIFY_SEEN {
                self.notify_seen.pop_front();
            }
            self.notify_seen.push_back(seen);
        }
        let mut ack = n.clone();
        ack.auth = Auth {
            key_id: n.auth.key_id,
            ..Auth::zeroed(alg)
        };
        ack.auth.data = vec![0; n.auth.data.len()];
        let Ok(payload) = auth::emit_signed(&Message::MapNotifyAck(ack), &key) else {
            self.counters.reject(Reject::Malformed);
            return;
        };
        self.counters.rx_map_notify += 1;
        self.counters.sent_map_notify_ack += 1;
        out.push(Action::Send {
            from: self.local_locator_like(&from.ip()),
            to: SocketAddr::new(from.ip(), CONTROL_PORT),
            payload,
        });
    }
}
