//! HSRP (RFC 2281; v2 for IPv4 and IPv6), sans-IO: the first-hop gateway every site presents
//! identically to moved hosts (same VIP, same virtual MAC), each site electing its own active
//! router. Wire format: `lisp_common::wire::hsrp`.
//!
//! * `config`: [`GroupConfig`] (one `hsrp <group>` block of an interface) and its validation.
//! * `group`: [`HsrpGroup`], the state machine of one group: `handle(now, event) -> actions`,
//!   `poll_timeout()`; the transition table is in its module docs.
//! * `counters`: [`Counters`], refusals by [`Refusal`] reason.
//!
//! # Wiring it up (for the shell / `Node` integrator)
//! * One `HsrpGroup` per (interface, version, family, group). Create it with
//!   [`HsrpGroup::new`] (validated config) and hand it [`Event::Up`] when the interface is up
//!   (and [`Event::Down`] when it goes down, or on stop: that sends the resign and releases the
//!   VIP).
//! * Receive UDP 1985 on 224.0.0.2 (v1) / 224.0.0.102 (v2) and UDP 2029 on ff02::66 (v2 IPv6)
//!   on the interface, with multicast loopback off. Parse once with
//!   `lisp_common::wire::hsrp::Message::parse` and give the message to the group whose
//!   `config().group` equals [`Message::group`](lisp_common::wire::hsrp::Message::group) (and
//!   version) as [`Event::Received`], with the datagram's IP source; a datagram that does not
//!   parse, or for no configured group, is the shell's to count (or give it to
//!   [`HsrpGroup::handle_datagram`] of a one-group interface, which counts it).
//! * Call `handle(now, Event::Timer)` at [`HsrpGroup::poll_timeout`].
//! * Carry out the [`Action`]s in order: `Send` (TTL 1, from `local_addr`; from the virtual MAC
//!   while active), `BecomeActive` (own VIP + virtual MAC, e.g. a macvlan, then gratuitous ARP
//!   / unsolicited NA), `StopActive` (release both), `StateChanged` (log + metric).
//! * `show hsrp` reads [`HsrpGroup::status`]; `/metrics` reads [`HsrpGroup::counters`].

mod config;
mod counters;
mod group;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, GroupConfig, Timers};
pub use counters::{Counters, Refusal};
pub use group::{Action, Event, HsrpGroup, Peer, Status};
pub use lisp_common::wire::hsrp::{State, Version};
