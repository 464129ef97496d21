//! The rate limiter's metrics, registered in the registry the app gives it (prefixed
//! `litgate_rate_limit_`): decisions counted as they are made (`decisions_total{class, limit,
//! outcome}`), and the state sizes read at each scrape (`keys`, `identities`).

use std::sync::Arc;

use governor::clock::DefaultClock;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::ConstGauge},
    registry::Registry,
};

use crate::telemetry::metrics::registered;

use super::{
    config::RateLimitConfig,
    limiter::{DecisionLabels, Limiter},
};

impl Limiter<DefaultClock> {
    /// A limiter on the real clock, its metrics registered in `registry`.
    pub(crate) fn registered(cfg: &RateLimitConfig, registry: &mut Registry) -> Arc<Self> {
        let decisions: Family<DecisionLabels, Counter> = registered(
            registry,
            "decisions",
            "Rate-limit decisions on the public face by method class, limit and outcome",
        );
        let limiter = Self::build(cfg, DefaultClock::default(), decisions);
        registry.register_collector(Box::new(StateCollector(limiter.clone())));
        limiter
    }
}

/// Reports the limiter's state sizes at scrape time.
#[derive(Debug)]
struct StateCollector(Arc<Limiter<DefaultClock>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "keys",
                "Rate-limit buckets held (accepted identities and peer address prefixes)",
                self.0.keys(),
            ),
            (
                "identities",
                "Macaroon identifiers remembered as accepted by litd",
                self.0.identities(),
            ),
        ];
        for (name, help, n) in gauges {
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        Ok(())
    }
}
