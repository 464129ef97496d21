//! Logging set-up (`[log]`): `tracing` to stderr as text or JSON. Credentials never reach a log
//! line: no layer records header values, and credential types redact their `Debug`.

pub(crate) mod config;
pub(crate) mod metrics;

use tracing_subscriber::{fmt, EnvFilter};

use self::config::{Format, LogConfig};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`. Calling it twice is
/// harmless (the second call is ignored), so tests and the demo can share it.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}
