//! Everything about the Autopilot server: the client (one pooled channel), the feature
//! catalogue (sled-backed, TTL, served stale while the server is down), LiT's rule forms, and
//! the AddAutopilotSession policy with its handler on the public face. The relay face
//! (`autopilotserverrpc.Autopilot` for litd) builds on the same client and catalogue.

pub mod add_session;
pub mod auth;
pub mod catalogue;
pub mod client;
pub(crate) mod config;
pub mod feature_config;
pub mod policy;
pub mod privacy;
pub mod relay;
mod rewrite;
pub mod rules;

pub use catalogue::{Catalogue, Snapshot};
pub use client::Autopilot;
