//! The configuration file (`config/litgate.toml`): loading, the sections that have no runtime
//! module of their own yet, and cross-checks. Sections map 1:1 to modules; each module that
//! exists owns its `Config` (`server::ListenConfig`, `upstream::Config`, `admin::Config`,
//! `telemetry::Config`, `layers::rate_limit::Config`, `cache::Config`). Unknown keys and bad
//! values are errors that name the key. The key names are a contract (`design.md` §7): add keys freely, rename
//! none.

use std::{fmt, path::Path, time::Duration};

use serde::Deserialize;

use crate::{admin, cache, layers::rate_limit, server, telemetry, upstream};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[listen]`: the public face.
    pub listen: server::ListenConfig,
    /// `[upstream]`: litd.
    pub upstream: upstream::Config,
    /// `[autopilot]`: the Autopilot server, the relay and rule caps.
    pub autopilot: AutopilotConfig,
    /// `[privacy]`: privacy-mapper flag policy.
    pub privacy: PrivacyConfig,
    /// `[rate_limit]`: per-caller limits.
    pub rate_limit: rate_limit::Config,
    /// `[cache]`: the session-list cache.
    pub cache: cache::Config,
    /// `[store]`: the data directory.
    pub store: StoreConfig,
    /// `[admin]`: the admin listener.
    pub admin: admin::Config,
    /// `[log]`: logging.
    pub log: telemetry::Config,
}

/// LiT's RateLimit shape: at most `iterations` calls per `num_hours` hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Calls allowed per window. 0 means blocked, where a section says so.
    pub iterations: u32,
    /// Window length in hours; must be positive.
    pub num_hours: u32,
}

/// `[autopilot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutopilotConfig {
    /// The Autopilot server, `host:port`.
    pub server: String,
    /// PEM cert to pin for a self-signed server; empty: system roots.
    pub tls_cert: std::path::PathBuf,
    /// Plaintext gRPC to the server (tests, loopback only).
    pub plaintext: bool,
    /// Per-call timeout towards the server.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a fetched feature catalogue is fresh.
    #[serde(with = "duration")]
    pub catalogue_ttl: Duration,
    /// How long a stale catalogue may be used while the server is unreachable.
    #[serde(with = "duration")]
    pub catalogue_max_stale: Duration,
    /// `[autopilot.relay]`.
    pub relay: RelayConfig,
    /// `[autopilot.rules]`.
    pub rules: RulesConfig,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        Self {
            server: "autopilot.lightning.finance:12010".into(),
            tls_cert: Default::default(),
            plaintext: false,
            timeout: Duration::from_secs(10),
            catalogue_ttl: Duration::from_secs(600),
            catalogue_max_stale: Duration::from_secs(24 * 3600),
            relay: RelayConfig::default(),
            rules: RulesConfig::default(),
        }
    }
}

/// `[autopilot.relay]`: litd's `autopilot.address` points here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Listen address; empty disables the relay.
    pub addr: String,
    /// How often the ledger is reconciled with litd's sessions.
    #[serde(with = "duration")]
    pub reconcile_every: Duration,
    /// Registrations younger than this are not reconciled (their AddAutopilotSession may still
    /// be running in litd).
    #[serde(with = "duration")]
    pub reconcile_grace: Duration,
    /// Serve the relay over TLS with the public face's certificate (litd's
    /// `--autopilot.tlspath`); false: plaintext (litd's `--autopilot.insecure`, loopback only).
    pub tls: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:12010".into(),
            reconcile_every: Duration::from_secs(600),
            reconcile_grace: Duration::from_secs(300),
            tls: false,
        }
    }
}

/// `[autopilot.rules]`: operator caps on AddAutopilotSession rule values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Highest read rate a session may be granted.
    pub rate_limit_read_max: Rate,
    /// Highest write rate a session may be granted.
    pub rate_limit_write_max: Rate,
    /// Longest session lifetime from now.
    #[serde(with = "duration")]
    pub max_expiry: Duration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            rate_limit_read_max: Rate {
                iterations: 1000,
                num_hours: 1,
            },
            rate_limit_write_max: Rate {
                iterations: 10,
                num_hours: 1,
            },
            max_expiry: Duration::from_secs(2160 * 3600),
        }
    }
}

/// `[privacy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Flag names no session may carry.
    pub deny_clear: Vec<String>,
    /// Whether `no_privacy_mapper = true` sessions are allowed.
    pub allow_no_privacy_mapper: bool,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory: generated TLS pair, sled database.
    pub data_dir: std::path::PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: "/var/lib/litgate".into(),
        }
    }
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

    /// Checks values and cross-constraints that serde cannot; collects every problem.
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

        if host_port(&self.autopilot.server).is_none() {
            err(
                "autopilot.server",
                format!("{:?} is not host:port", self.autopilot.server),
            );
        }
        if self.autopilot.plaintext && !self.autopilot.tls_cert.as_os_str().is_empty() {
            err(
                "autopilot.tls_cert",
                "set together with autopilot.plaintext = true".into(),
            );
        }
        nonzero(&mut err, "autopilot.timeout", self.autopilot.timeout);
        nonzero(
            &mut err,
            "autopilot.catalogue_ttl",
            self.autopilot.catalogue_ttl,
        );
        if self.autopilot.catalogue_max_stale < self.autopilot.catalogue_ttl {
            err(
                "autopilot.catalogue_max_stale",
                "must be at least autopilot.catalogue_ttl".into(),
            );
        }
        let relay = &self.autopilot.relay;
        if !relay.addr.is_empty() && relay.addr.parse::<std::net::SocketAddr>().is_err() {
            err(
                "autopilot.relay.addr",
                format!("{:?} is not an ip:port socket address", relay.addr),
            );
        }
        nonzero(
            &mut err,
            "autopilot.relay.reconcile_every",
            relay.reconcile_every,
        );
        let rules = &self.autopilot.rules;
        rate(
            &mut err,
            "autopilot.rules.rate_limit_read_max",
            rules.rate_limit_read_max,
            true,
        );
        rate(
            &mut err,
            "autopilot.rules.rate_limit_write_max",
            rules.rate_limit_write_max,
            true,
        );
        nonzero(&mut err, "autopilot.rules.max_expiry", rules.max_expiry);

        for (i, name) in self.privacy.deny_clear.iter().enumerate() {
            if !crate::autopilot::rules::PRIVACY_FLAG_NAMES.contains(&name.as_str()) {
                err(
                    &format!("privacy.deny_clear[{i}]"),
                    format!(
                        "unknown privacy flag {name:?}; known: {}",
                        crate::autopilot::rules::PRIVACY_FLAG_NAMES.join(", ")
                    ),
                );
            }
        }

        self.rate_limit.validate(&mut err);

        self.cache.validate(&mut err);
        if self.store.data_dir.as_os_str().is_empty() {
            err("store.data_dir", "must not be empty".into());
        }

        let mut addrs: Vec<(&str, std::net::SocketAddr)> = vec![
            ("listen.addr", self.listen.addr),
            ("admin.addr", self.admin.addr),
        ];
        if relay.tls && self.listen.plaintext {
            err(
                "autopilot.relay.tls",
                "needs the public face's certificate, but listen.plaintext = true".into(),
            );
        }
        if let Ok(a) = relay.addr.parse() {
            addrs.push(("autopilot.relay.addr", a));
        }
        for (i, (ka, a)) in addrs.iter().enumerate() {
            for (kb, b) in &addrs[i + 1..] {
                if a == b && a.port() != 0 {
                    err(kb, format!("same address as {ka} ({a})"));
                }
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }
}

fn nonzero(err: &mut impl FnMut(&str, String), key: &str, d: Duration) {
    if d.is_zero() {
        err(key, "must be greater than zero".into());
    }
}

fn rate(err: &mut impl FnMut(&str, String), key: &str, r: Rate, zero_iterations_ok: bool) {
    if r.num_hours == 0 {
        err(&format!("{key}.num_hours"), "must be positive".into());
    }
    if r.iterations == 0 && !zero_iterations_ok {
        err(&format!("{key}.iterations"), "must be positive".into());
    }
}

/// `host:port` with a numeric port; returns the parts.
pub fn host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
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

/// Serde helper for durations written as `"250ms"`, `"10s"`, `"24h"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserializes a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write a number and a unit, like \"250ms\", \"10s\", \"24h\""
            ))
        })
    }

    /// Serializes a duration string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_contract_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.addr.to_string(), "0.0.0.0:8445");
        assert_eq!(c.upstream.addr, "127.0.0.1:8443");
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
