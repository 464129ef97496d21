//! `[log]`: the log level filter and line format. Serde and validation only.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::values::Report;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `litgate=debug,hyper=info`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: Format,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: Format::Text,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if let Err(e) = EnvFilter::try_new(&self.level) {
            err(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.level),
            );
        }
    }
}
