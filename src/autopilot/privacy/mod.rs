//! Privacy-mapper flags: what they are ([`flags`]) and the operator's `[privacy]` section
//! ([`config`]).

pub(crate) mod config;
pub mod flags;
