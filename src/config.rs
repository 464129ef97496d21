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
    /// The file this configuration was loaded from (for the start-up log line); `None` when
    /// it was built in code or parsed from text. Not a key.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
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
        let mut cfg = Self::parse(&text)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text, reporting every problem: a syntax error stops the
    /// parse (one is reported, with the key it is on); then each value serde refuses is
    /// reported at its real key path (with the value echoed), taken out, and the rest parsed
    /// again, so that one bad value does not hide the next; then the checks serde cannot make
    /// run on what parsed, except on keys already reported.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![ConfigError {
                key: toml_key(&e, text),
                reason: e.message().to_string(),
            }])
        })?;
        let mut errs: Vec<ConfigError> = Vec::new();
        let cfg = loop {
            let value = toml::Value::Table(table.clone());
            match serde_path_to_error::deserialize::<_, Config>(value) {
                Ok(cfg) => break Some(cfg),
                Err(e) => {
                    let segments: Vec<_> = e.path().iter().cloned().collect();
                    let key = key_path(&segments);
                    let message = e.inner().message().to_string();
                    let reason = match value_at(&table, &segments) {
                        Some(v) if !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) => {
                            let shown = v.to_string();
                            // An unknown key is about the key, not its value.
                            if message.contains(shown.trim_matches('"'))
                                || message.starts_with("unknown field")
                            {
                                message
                            } else {
                                format!("{shown}: {message}")
                            }
                        }
                        _ => message,
                    };
                    // Taking out a value can leave its table without a required key: that
                    // is the error already reported, not another one.
                    let follows = errs.iter().any(|r| is_under(&r.key, &key));
                    if !follows {
                        errs.push(ConfigError { key, reason });
                    }
                    // Without the bad value, its key falls back to the default; stop if it
                    // cannot be taken out (or on a runaway file).
                    if !remove_at(&mut table, &segments) || errs.len() >= MAX_VALUE_ERRORS {
                        break None;
                    }
                }
            }
        };
        let reported: Vec<String> = errs.iter().map(|e| e.key.clone()).collect();
        if let Some(Err(ConfigErrors(more))) = cfg.as_ref().map(Config::validate) {
            errs.extend(
                more.into_iter()
                    .filter(|e| !reported.iter().any(|r| is_under(&e.key, r))),
            );
        }
        match cfg {
            Some(cfg) if errs.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors(errs)),
        }
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

/// Whether `key` is `parent` or a key inside it.
fn is_under(key: &str, parent: &str) -> bool {
    key.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// More value errors than this in one file stop the parse (each costs a re-parse).
const MAX_VALUE_ERRORS: usize = 100;

/// `privacy.deny_clear[0]` for the segments of a serde path.
fn key_path(segments: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            _ => {}
        }
    }
    key
}

/// The value at a serde path in the parsed file, if the path leads to one.
fn value_at<'a>(
    table: &'a toml::Table,
    segments: &[serde_path_to_error::Segment],
) -> Option<&'a toml::Value> {
    use serde_path_to_error::Segment;
    let (first, rest) = segments.split_first()?;
    let Segment::Map { key } = first else {
        return None;
    };
    let mut v = table.get(key)?;
    for s in rest {
        v = match (s, v) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get(key)?,
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get(*index)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Takes out the key a serde error is under: the last table key on its path (for an element
/// of an array, the whole array). Returns whether something was taken out.
fn remove_at(table: &mut toml::Table, segments: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some(last) = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
    else {
        return false;
    };
    let mut current = table;
    let mut i = 0;
    while i < last {
        let Segment::Map { key } = &segments[i] else {
            return false;
        };
        let Some(mut v) = current.get_mut(key) else {
            return false;
        };
        i += 1;
        while let (true, Segment::Seq { index }) = (i < last, &segments[i]) {
            let toml::Value::Array(a) = v else {
                return false;
            };
            let Some(next) = a.get_mut(*index) else {
                return false;
            };
            v = next;
            i += 1;
        }
        let toml::Value::Table(t) = v else {
            return false;
        };
        current = t;
    }
    match &segments[last] {
        Segment::Map { key } => current.remove(key).is_some(),
        _ => false,
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
    fn every_value_error_names_its_real_key_and_echoes_the_value() {
        let e = Config::parse(
            "[listen]\naddr = \"0.0.0.0\"\n[privacy]\ndeny_clear = [\"ClearPubkeys\", 42]\n\
             [cache]\nttl = \"5 parsecs\"\n[upstream]\naddress = \"x\"\n\
             [rate_limit]\nread = { iterations = 1, num_hours = 0 }\nwrite = { iterations = -1, num_hours = 1 }\n",
        )
        .unwrap_err();
        let mut got: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        got.sort();
        assert_eq!(got.len(), 6, "{e}");
        let want = [
            "cache.ttl: invalid duration \"5 parsecs\"",
            "listen.addr: \"0.0.0.0\": need ip:port",
            "privacy.deny_clear[1]: invalid type: integer `42`, expected a string",
            "rate_limit.read.num_hours: ",
            "rate_limit.write.iterations: invalid value: integer `-1`, expected u32",
            "upstream.address: unknown field `address`",
        ];
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g:?} should start with {w:?}\n{e}");
        }
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
