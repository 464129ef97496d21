//! Everything about the Autopilot server: the client (one pooled channel), the feature
//! catalogue (sled-backed, TTL, served stale while the server is down), LiT's rule forms, and
//! the AddAutopilotSession policy with its handler on the public face. The relay face
//! (`autopilotserverrpc.Autopilot` for litd) builds on the same client and catalogue.

pub(crate) mod add_session;
pub mod approvals;
pub mod auth;
pub(crate) mod catalogue;
pub(crate) mod client;
pub(crate) mod config;
// Not wired into the policy yet; public so that it is compiled, tested and documented as the
// API it will be.
pub mod feature_config;
pub mod policy;
pub(crate) mod privacy;
pub(crate) mod relay;
pub(crate) mod rewrite;
pub(crate) mod rules;

pub use approvals::Approvals;
pub(crate) use catalogue::Catalogue;
pub use catalogue::FeatureSet;
pub(crate) use client::Autopilot;
