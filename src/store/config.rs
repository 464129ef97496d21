//! `[store]`: the data directory. Serde and validation only; the app opens the store there.

use std::path::PathBuf;

use serde::Deserialize;

use crate::values::Report;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory: generated TLS pair, sled database.
    pub data_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: "/var/lib/litgate".into(),
        }
    }
}

impl StoreConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if self.data_dir.as_os_str().is_empty() {
            err("store.data_dir", "must not be empty".into());
        }
    }
}
