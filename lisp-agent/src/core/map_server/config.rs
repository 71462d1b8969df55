//! The map-server's own typed configuration, lowered from the YAML `map-server:` section by
//! `crate::config::lower` or built directly by tests and benchmarks.

use std::fmt;
use std::time::Duration;

use lisp_common::wire::control::Eid;
use lisp_common::wire::control::auth::Algorithm;

use crate::core::nonce::NonceSeed;

/// Registrations expire this long after the last valid Map-Register (RFC 9301 §8.2: three
/// times the 60 s registration interval).
pub const DEFAULT_REGISTRATION_LIFETIME: Duration = Duration::from_secs(180);

/// An EID-prefix of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SitePrefix {
    /// The configured prefix (instance-id `None` = the default instance 0).
    pub eid: Eid,
    /// May ETRs of the site register prefixes inside this one (e.g. /32 dynamic EIDs)?
    pub accept_more_specifics: bool,
}

/// A site: the ETRs that know its key may register its EID-prefixes.
#[derive(Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub name: String,
    pub key: Vec<u8>,
    /// The only algorithm accepted from this site: refusing the other one prevents a downgrade
    /// from HMAC-SHA-256 to HMAC-SHA-1.
    pub algorithm: Algorithm,
    pub prefixes: Vec<SitePrefix>,
}

// The key never appears in logs.
impl fmt::Debug for SiteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteConfig")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// How Map-Registers are checked against replays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonceCheck {
    /// A refresh (same content as the registrant's live registration) is accepted whatever its
    /// nonce; a change must be fresh. Works with increasing (lisp-agent), random (OOR) and
    /// constant (lispers.net) nonces; see [`super::replay`].
    #[default]
    FreshChanges,
    /// Every Map-Register's nonce must be greater than the last one accepted from the same xTR-ID (I bit) or,
    /// without an xTR-ID, from the same ETR address, within the site (RFC 9301 §5.6 / §9).
    /// What lisp-agent's xTR sends; refuses OOR's and lispers.net's refreshes.
    Increasing,
    /// Only a nonce already seen among the last [`NO_REPEAT_WINDOW`] accepted ones from the same
    /// xTR-ID / ETR is refused. For peers that send random nonces (OOR 1.3 does: its captures
    /// show decreasing nonces from one ETR), which `Increasing` would reject half of the time.
    /// Refuses lispers.net's refreshes (constant nonce).
    NoRepeat,
}

/// How many recent nonces [`NonceCheck::NoRepeat`] remembers per xTR.
pub const NO_REPEAT_WINDOW: usize = 64;

/// Everything the map-server needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapServerConfig {
    pub sites: Vec<SiteConfig>,
    /// Lifetime of a registration without the T bit.
    pub registration_lifetime: Duration,
    pub nonce_check: NonceCheck,
    /// First retransmission of an unsolicited Map-Notify (RLOC change, pubsub) without a
    /// Map-Notify-Ack; doubled after every try.
    pub notify_retransmit: Duration,
    /// Sends of one unsolicited Map-Notify, first one included, before giving up.
    pub notify_max_sends: u32,
    /// A pubsub subscription lasts this long unless renewed by another Map-Request with N.
    pub subscription_lifetime: Duration,
    /// Bounds on the state a peer can make us hold; beyond them new entries are refused and
    /// counted.
    pub max_registrations: usize,
    /// Registrants (xTR-IDs / ETR addresses per site) whose replay history is kept; only
    /// authenticated Map-Registers create one.
    pub max_registrants: usize,
    pub max_subscriptions: usize,
    pub max_pending_notifies: usize,
    /// Seed of the nonces of unsolicited Map-Notifies (the shell passes a random value; the core
    /// has no entropy source of its own, so that tests are deterministic).
    pub nonce_seed: NonceSeed,
}

impl Default for MapServerConfig {
    fn default() -> Self {
        MapServerConfig {
            sites: Vec::new(),
            registration_lifetime: DEFAULT_REGISTRATION_LIFETIME,
            nonce_check: NonceCheck::default(),
            notify_retransmit: Duration::from_secs(1),
            notify_max_sends: 5,
            subscription_lifetime: Duration::from_secs(24 * 3600),
            max_registrations: 1_000_000,
            max_registrants: 4096,
            max_subscriptions: 100_000,
            max_pending_notifies: 100_000,
            nonce_seed: NonceSeed::from(0x6c69_7370_2d6d_7321),
        }
    }
}

/// A map-server configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapServerConfigError {
    #[error("site '{site}': prefix {prefix} is not a valid EID-prefix")]
    BadPrefix { site: String, prefix: String },
    #[error(
        "prefix {prefix} is configured in sites '{first}' and '{second}' (a prefix may be shared \
         only with accept-more-specifics in every site)"
    )]
    DuplicatePrefix {
        prefix: String,
        first: String,
        second: String,
    },
}

impl MapServerConfig {
    /// The same prefix in two sites would make the owner of a registration ambiguous.
    /// Except for a prefix every one of whose sites accepts more-specifics: a shared
    /// dynamic-EID prefix, whose hosts each site registers with its own key.
    pub fn check(&self) -> Result<(), MapServerConfigError> {
        let mut seen = std::collections::HashMap::new();
        for s in &self.sites {
            for p in &s.prefixes {
                let key = super::sites::Key::from(&p.eid);
                if let Some((first, first_ams)) =
                    seen.insert(key, (s.name.clone(), p.accept_more_specifics))
                    && first != s.name
                    && !(first_ams && p.accept_more_specifics)
                {
                    return Err(MapServerConfigError::DuplicatePrefix {
                        prefix: p.eid.to_string(),
                        first,
                        second: s.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
