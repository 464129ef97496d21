//! The session cache's metrics (names `litgate_cache_*`). Counts and sizes only: never a key,
//! a credential or a body.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use crate::telemetry::metrics::registered;

/// The cache's Prometheus metrics.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    /// Answers served fresh from the cache.
    pub hits: Counter,
    /// Cacheable calls that went to litd (or waited for a call that did).
    pub misses: Counter,
    /// Answers served stale because litd was unreachable.
    pub stale: Counter,
    /// Calls that could not use the cache (no credential, not the canonical request).
    pub bypasses: Counter,
    /// Entries that did not authenticate (tampered, truncated, foreign): each was a miss.
    pub undecryptable: Counter,
    /// Entries in the store.
    pub entries: Gauge,
    /// Bytes of those entries (keys and sealed values).
    pub bytes: Gauge,
    /// Bytes of answers held in clear while they are being sent (`cache.max_replay_bytes`).
    pub replay_bytes: Gauge,
    /// Calls passed through to litd because the replay budget could not hold their answer.
    pub replay_overflows: Counter,
    /// Hits that shared the plaintext of a replay of the same entry already under way.
    pub replay_shared: Counter,
}

impl CacheMetrics {
    /// Every cache metric, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        CacheMetrics {
            hits: registered(
                registry,
                "hits",
                "Session lists served fresh from the cache",
            ),
            misses: registered(
                registry,
                "misses",
                "Cacheable session lists that went to litd",
            ),
            stale: registered(
                registry,
                "stale",
                "Session lists served stale (marked) while litd was unreachable",
            ),
            bypasses: registered(
                registry,
                "bypasses",
                "Session lists that could not use the cache (no credential, non-canonical request)",
            ),
            undecryptable: registered(
                registry,
                "undecryptable",
                "Cache entries that failed authentication and were treated as misses",
            ),
            entries: registered(registry, "entries", "Entries in the session cache"),
            bytes: registered(
                registry,
                "bytes",
                "Bytes of the session cache's entries (keys and sealed values)",
            ),
            replay_bytes: registered(
                registry,
                "replay_bytes",
                "Bytes of session lists held in clear while being sent (bounded by cache.max_replay_bytes)",
            ),
            replay_overflows: registered(
                registry,
                "replay_overflows",
                "Session lists passed through to litd because cache.max_replay_bytes was spent",
            ),
            replay_shared: registered(
                registry,
                "replay_shared",
                "Cache hits that shared the clear answer of a send of the same entry under way",
            ),
        }
    }
}
