//! VM mobility: dynamic EIDs detected on mobility interfaces, registered, shared with the site
//! over its map-notify-group, and followed when they move (see
//! `/work/shared/notes/reference-design.md`, the NX-OS model).

pub mod config;

pub use config::{
    DynamicEidMapConfig, DynamicPrefix, MobilityConfig, MobilityInterface, MobilityMode, Trunk,
};
