//! The configuration file (`config/litgate.toml`): loading, the aggregate of every section, and
//! the checks that span sections. Sections map 1:1 to modules, and each module owns its
//! section's type and its checks in a `config` submodule that imports only the shared value
//! types (`values`): `[listen]` (server), `[upstream]`, `[autopilot]` with `[autopilot.relay]`
//! and `[autopilot.rules]`, `[privacy]` (autopilot::privacy), `[rate_limit]`
//! (layers::rate_limit), `[cache]`, `[store]`, `[admin]`, `[log]` (telemetry), `[runtime]`
//! (runtime). This file imports those submodules and nothing that runs. Unknown keys and bad
//! values are errors that name the key. The key names are a contract: add keys freely, rename
//! none.

use std::{fmt, net::SocketAddr, path::Path};

use serde::Deserialize;

pub use crate::{
    admin::config::AdminConfig,
    autopilot::{
        config::{AutopilotConfig, RelayConfig, RulesConfig},
        privacy::config::PrivacyConfig,
    },
    cache::config::CacheConfig,
    layers::rate_limit::config::{MethodLimit, RateLimitConfig},
    runtime::config::RuntimeConfig,
    server::config::ListenConfig,
    store::config::StoreConfig,
    telemetry::config::{Format as LogFormat, LogConfig},
    upstream::config::UpstreamConfig,
    values::Rate,
};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[listen]`: the public face.
    pub listen: ListenConfig,
    /// `[upstream]`: litd.
    pub upstream: UpstreamConfig,
    /// `[autopilot]`: the Autopilot server, the relay and rule caps.
    pub autopilot: AutopilotConfig,
    /// `[privacy]`: privacy-mapper flag policy.
    pub privacy: PrivacyConfig,
    /// `[rate_limit]`: per-caller limits.
    pub rate_limit: RateLimitConfig,
    /// `[cache]`: the session-list cache.
    pub cache: CacheConfig,
    /// `[store]`: the data directory.
    pub store: StoreConfig,
    /// `[admin]`: the admin listener.
    pub admin: AdminConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[runtime]`: the threads that serve.
    pub runtime: RuntimeConfig,
}

/// One configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `upstream.addr`; empty for file-level errors.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: String::new(),
                reason: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                key: toml_key(&e, text),
                reason: e.message().to_string(),
            }])
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every section, then what spans sections; collects every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = Vec::new();
        let mut err = |key: &str, reason: String| {
            errs.push(ConfigError {
                key: key.into(),
                reason,
            })
        };
        self.listen.validate(&mut err);
        self.upstream.validate(&mut err);
        self.log.validate(&mut err);
        self.autopilot.validate(&mut err);
        self.privacy.validate(&mut err);
        self.rate_limit.validate(&mut err);
        self.cache.validate(&mut err);
        self.store.validate(&mut err);
        self.runtime.validate(&mut err);
        self.cross_check(&mut err);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// What no single section can check: the relay's TLS needs the public face's certificate,
    /// and no two listeners may share an address.
    fn cross_check(&self, err: &mut dyn FnMut(&str, String)) {
        let relay = &self.autopilot.relay;
        if relay.tls && self.listen.plaintext {
            err(
                "autopilot.relay.tls",
                "needs the public face's certificate, but listen.plaintext = true".into(),
            );
        }
        let mut addrs: Vec<(&str, SocketAddr)> = vec![
            ("listen.addr", self.listen.addr),
            ("admin.addr", self.admin.addr),
        ];
        if let Some(a) = relay.addr {
            addrs.push(("autopilot.relay.addr", a));
        }
        for (i, (ka, a)) in addrs.iter().enumerate() {
            for (kb, b) in &addrs[i + 1..] {
                if a == b && a.port() != 0 {
                    err(kb, format!("same address as {ka} ({a})"));
                }
            }
        }
    }
}

/// The dotted key a TOML error is about, recovered from its span: the text of the line the
/// error points at, prefixed by the nearest table header above it.
fn toml_key(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = line.split('=').next().unwrap_or("").trim();
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, _) => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn empty_file_gives_the_contract_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.addr.to_string(), "0.0.0.0:8445");
        assert_eq!(c.upstream.addr, "127.0.0.1:8443");
        assert_eq!(
            c.autopilot.relay.addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 12010)))
        );
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.autopilot.catalogue_max_stale, Duration::from_secs(86400));
        assert_eq!(
            c.autopilot.rules.max_expiry,
            Duration::from_secs(2160 * 3600)
        );
        assert_eq!(
            c.rate_limit.write,
            Rate {
                iterations: 3600,
                num_hours: 1
            }
        );
        assert_eq!(c.admin.addr.to_string(), "127.0.0.1:9445");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[upstream]\naddress = \"x\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "upstream.address");
        assert!(e.0[0].reason.contains("unknown field `address`"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = Config::parse("[cache]\nttl = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "cache.ttl");
        assert!(e.0[0].reason.contains("invalid duration"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let e = Config::parse(
            "[privacy]\ndeny_clear = [\"ClearEverything\"]\n[rate_limit]\nread = { iterations = 1, num_hours = 0 }\n",
        )
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["privacy.deny_clear[0]", "rate_limit.read.num_hours"]);
    }
}
