//! HSRP (RFC 2281; v2 for IPv4 and IPv6), sans-IO: the first-hop gateway every site presents
//! identically to moved hosts (same VIP, same virtual MAC), each site electing its own active
//! router. Wire format: `lisp_common::wire::hsrp`.
//!
//! * `config`: [`GroupConfig`] (one `hsrp <group>` block of an interface) and its validation.
//! * `group`: [`HsrpGroup`], the state machine of one group: `handle(now, event) -> actions`,
//!   `poll_timeout()`; the transition table is in its module docs.
//! * `counters`: [`Counters`], refusals by [`Refusal`] reason.
//! * `interface`: [`HsrpInterface`], the groups of one interface behind one receive path
//!   (parse once, dispatch by [`GroupKey`], count what is for no group).
//!
//! # Wiring it up (for the shell / `Node` integrator)
//! * One [`HsrpInterface`] per interface with `hsrp` groups, built from their
//!   [`GroupConfig`]s (validated; a group configured twice is refused). Hand it [`Event::Up`]
//!   when the interface is up, and [`Event::Down`] when it goes down or on stop (that sends
//!   the resigns and releases the VIPs).
//! * Receive UDP 1985 on 224.0.0.2 (v1) / 224.0.0.102 (v2) and UDP 2029 on ff02::66 (v2 IPv6)
//!   on the interface, with multicast loopback off, and pass each payload with its IP source
//!   to [`HsrpInterface::handle_datagram`].
//! * Call `handle(now, Event::Timer)` at [`HsrpInterface::poll_timeout`].
//! * Carry out the [`Action`]s (each tagged with its [`GroupKey`]) in order: `Send` (TTL 1,
//!   from `local_addr`; from the virtual MAC while active), `BecomeActive` (own VIP + virtual
//!   MAC, e.g. a macvlan, then gratuitous ARP / unsolicited NA), `StopActive` (release both),
//!   `StateChanged` (log + metric).
//! * `show hsrp` reads [`HsrpGroup::status`] of [`HsrpInterface::groups`]; `/metrics` reads
//!   [`HsrpGroup::counters`] and [`HsrpInterface::counters`].

mod config;
mod counters;
mod group;
mod interface;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, GroupConfig, Timers};
pub use counters::{Counters, Refusal};
pub use group::{Action, Event, HsrpGroup, Peer, Status};
pub use interface::{GroupKey, HsrpInterface, InterfaceConfigError, InterfaceCounters};
pub use lisp_common::wire::hsrp::{State, Version};
