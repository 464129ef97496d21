//! `[cache]`: the session-list cache's bounds. Serde and validation only; the cache reads the
//! values.

use std::time::Duration;

use serde::Deserialize;

use crate::values::Report;

/// `[cache]`: the session-list cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether the cache is on; off, the router passes the list calls through untouched.
    pub enabled: bool,
    /// How long an answer is fresh (bounded further by session expiry and `time-before`).
    #[serde(with = "crate::values::duration")]
    pub ttl: Duration,
    /// How long past its freshness an answer may be served, marked stale, while litd is
    /// unreachable.
    #[serde(with = "crate::values::duration")]
    pub max_stale: Duration,
    /// Most entries kept (one per credential, route and encoding). When full, expired entries
    /// are swept; if it is still full, the new answer is served but not stored.
    pub max_entries: usize,
    /// Largest answer stored, in bytes; larger answers are served but not stored.
    pub max_entry_bytes: usize,
    /// Most bytes all entries may take together (keys and sealed values, as counted by
    /// `litgate_cache_bytes`). When an answer would go beyond it, expired entries are swept;
    /// if it still does not fit, it is served but not stored.
    pub max_bytes: usize,
    /// Most bytes of cached answers held in clear while they are being sent (one copy per
    /// entry, shared by every caller it is sent to, released when the last of them has it all
    /// or hangs up). A call that would go beyond it is passed through to litd instead.
    pub max_replay_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(300),
            max_entries: 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            max_bytes: 64 * 1024 * 1024,
            max_replay_bytes: 64 * 1024 * 1024,
        }
    }
}

impl CacheConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if self.ttl.is_zero() {
            err("cache.ttl", "must be greater than zero".into());
        }
        if self.max_stale < self.ttl {
            err("cache.max_stale", "must be at least cache.ttl".into());
        }
        if self.max_entries == 0 {
            err(
                "cache.max_entries",
                "must be positive (use enabled = false to turn the cache off)".into(),
            );
        }
        if self.max_entry_bytes == 0 {
            err("cache.max_entry_bytes", "must be positive".into());
        }
        if self.max_bytes < self.max_entry_bytes {
            err(
                "cache.max_bytes",
                format!(
                    "must be at least cache.max_entry_bytes ({}), or no entry of that size could be stored",
                    self.max_entry_bytes
                ),
            );
        }
        if self.max_replay_bytes < self.max_entry_bytes {
            err(
                "cache.max_replay_bytes",
                format!(
                    "must be at least cache.max_entry_bytes ({}), or a stored entry of that size could never be served",
                    self.max_entry_bytes
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn byte_bounds_below_one_entry_are_named() {
        let e = Config::parse(
            "[cache]\nmax_entry_bytes = 1000\nmax_bytes = 999\nmax_replay_bytes = 10\n",
        )
        .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["cache.max_bytes", "cache.max_replay_bytes"], "{e}");
        assert!(
            e.0[1].reason.contains("cache.max_entry_bytes (1000)"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_defaults_are_the_documented_ones() {
        let shipped = Config::parse(include_str!("../../config/litgate.toml"))
            .unwrap_or_else(|e| panic!("config/litgate.toml: {e}"));
        let defaults = Config::parse("").unwrap();
        for c in [&shipped.cache, &defaults.cache] {
            assert_eq!(c.max_entry_bytes, 4 << 20);
            assert_eq!(c.max_bytes, 64 << 20);
            assert_eq!(c.max_replay_bytes, 64 << 20);
        }
    }
}
