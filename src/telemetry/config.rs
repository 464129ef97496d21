//! `[log]`: the log filter, the line format and the access log. Serde and validation only.

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
    /// A level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or `tracing` directives
    /// (`info,litgate=debug,hyper=warn`).
    pub level: String,
    /// `text` or `json`.
    pub format: Format,
    /// One line per call at `info` (target `litgate::access`), whatever `level` says.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: Format::Text,
            access: false,
        }
    }
}

/// The levels a filter may name.
pub(crate) const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if let Err(e) = check_filter(&self.level) {
            err("log.level", e);
        }
    }
}

/// Checks a filter (`[log] level`, `RUST_LOG`): `tracing` directives in which a bare word must
/// be a level. `tracing` itself reads a bare word as a target to log at `trace`, so `warning`
/// or a typo of a level would silence every line but that target's: refused, naming the
/// valid forms.
pub(crate) fn check_filter(filter: &str) -> Result<(), String> {
    let valid = || {
        format!(
            "valid: a level ({}) or directives like \"info,litgate=debug,hyper=warn\"",
            LEVELS.join(", ")
        )
    };
    if filter.trim().is_empty() {
        return Err(format!("must not be empty; {}", valid()));
    }
    if let Err(e) = EnvFilter::builder().parse(filter) {
        return Err(format!("not a filter ({e}); {}", valid()));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            None => directive,
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!("{directive:?} names no level; {}", valid()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_word_must_be_a_level() {
        for ok in [
            "info",
            "WARN",
            "off",
            "info,litgate=debug",
            "litgate::access=off",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "warning",
            "inf",
            "litgate",
            "litgate=warning",
            "",
            "info,hyper",
        ] {
            let e = check_filter(bad).unwrap_err();
            assert!(
                e.contains("trace, debug, info, warn, error, off"),
                "{bad}: {e}"
            );
        }
    }
}
