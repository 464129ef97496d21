//! `[admin]`: where the admin listener listens. Serde only.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address.
    #[serde(with = "crate::values::addr")]
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9445)),
        }
    }
}
