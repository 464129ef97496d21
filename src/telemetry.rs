//! Logging set-up (`[log]`): `tracing` to stderr as text or JSON. Credentials never reach a log
//! line: no layer records header values, and credential types redact their `Debug`.

use serde::Deserialize;
use tracing_subscriber::{fmt, EnvFilter};

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
pub struct Config {
    /// A `tracing` filter: `info`, `debug`, `litgate=debug,hyper=info`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: Format,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: Format::Text,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self, err: &mut impl FnMut(&str, String)) {
        if let Err(e) = EnvFilter::try_new(&self.level) {
            err(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.level),
            );
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`. Calling it twice is
/// harmless (the second call is ignored), so tests and the demo can share it.
pub fn init(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}
