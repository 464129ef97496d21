//! The feature catalogue: the Autopilot server's `ListFeatures`, cached in the store with a
//! TTL (`autopilot.catalogue_ttl`) and refreshed in the background. While the server is
//! unreachable the last catalogue is used, with a warning and a counter, up to
//! `autopilot.catalogue_max_stale`; past that, callers get UNAVAILABLE naming the server.
//! Concurrent refreshes collapse into one call, and a caller's wait for the catalogue, the
//! refresh already under way included, is bounded by `autopilot.timeout` in total: a caller
//! that waited for a refresh that failed takes its outcome rather than trying again. Whether
//! the server is reachable is logged by the client, once per change; here only at debug.
//! Shared by the AddAutopilotSession policy and the relay (`Terms`/`ListFeatures` answers).
//! Each catalogue is held as a [`FeatureSet`]: the features as the server sent them plus their
//! rule bounds parsed once, when the catalogue is fetched or loaded from the store, so that no
//! call parses the server's JSON again.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, RwLock,
    },
    time::{Duration, SystemTime},
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use prost::Message;

use super::{client::Autopilot, rules};
use crate::{
    clock::SharedClock,
    error::Error,
    proto::{
        autopilotserverrpc::{Feature, ListFeaturesResponse, Rule, TermsResponse},
        litrpc::RuleValue,
    },
    store::{CatalogueRecord, Store},
    telemetry::metrics::registered,
};

/// One catalogue, shared by every call deciding with it.
pub type Features = Arc<FeatureSet>;

/// A catalogue: the server's features by name, each with its rules' values parsed. Built once
/// per fetched (or stored) catalogue and never changed; a refresh builds a new one.
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    features: HashMap<String, CatalogueFeature>,
}

/// A feature of the catalogue: as the server sent it, and what the policy needs of its rules.
#[derive(Debug, Clone)]
pub(crate) struct CatalogueFeature {
    /// The server's feature, as sent.
    pub(crate) feature: Feature,
    /// Its known rules' default and bounds, parsed, by rule name.
    pub(crate) rules: HashMap<String, RuleBounds>,
    /// The first (by name) of its rules this litd does not know, if any.
    pub(crate) unknown_rule: Option<String>,
}

/// A rule's values as the server sent them (LiT's JSON forms), each parsed once. A value that
/// does not parse keeps its error: the catalogue stays usable for the features and rules that
/// do, and a call needing the broken value is refused naming it.
#[derive(Debug, Clone)]
pub(crate) struct RuleBounds {
    /// `default`.
    pub(crate) default: Result<RuleValue, rules::RuleError>,
    /// `min_value`.
    pub(crate) min_value: Result<RuleValue, rules::RuleError>,
    /// `max_value`.
    pub(crate) max_value: Result<RuleValue, rules::RuleError>,
}

impl RuleBounds {
    fn parse(name: &str, rule: &Rule) -> Self {
        RuleBounds {
            default: rules::from_json(name, &rule.default),
            min_value: rules::from_json(name, &rule.min_value),
            max_value: rules::from_json(name, &rule.max_value),
        }
    }
}

impl FeatureSet {
    /// Parses every rule of every feature (a rule litd does not know is only noted).
    pub fn new(features: HashMap<String, Feature>) -> Self {
        let features = features
            .into_iter()
            .map(|(name, feature)| {
                let unknown_rule = feature
                    .rules
                    .keys()
                    .filter(|r| !rules::is_known(r))
                    .min()
                    .cloned();
                let rules = feature
                    .rules
                    .iter()
                    .filter(|(r, _)| rules::is_known(r))
                    .map(|(r, rule)| (r.clone(), RuleBounds::parse(r, rule)))
                    .collect();
                let entry = CatalogueFeature {
                    feature,
                    rules,
                    unknown_rule,
                };
                (name, entry)
            })
            .collect();
        FeatureSet { features }
    }

    /// The feature named `name`, with its parsed rules.
    pub(crate) fn get(&self, name: &str) -> Option<&CatalogueFeature> {
        self.features.get(name)
    }

    /// The features as the server sent them (the relay's `ListFeatures` answer).
    pub(crate) fn to_proto(&self) -> HashMap<String, Feature> {
        self.features
            .iter()
            .map(|(name, f)| (name.clone(), f.feature.clone()))
            .collect()
    }
}

impl From<HashMap<String, Feature>> for FeatureSet {
    fn from(features: HashMap<String, Feature>) -> Self {
        FeatureSet::new(features)
    }
}

/// Catalogue metrics.
#[derive(Debug, Clone)]
struct CatalogueMetrics {
    /// When the catalogue in use was fetched (Unix seconds); 0 until there is one.
    last_success_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    fetches: Counter,
    fetch_failures: Counter,
    stale_served: Counter,
}

/// The cached catalogue.
#[derive(Debug)]
pub struct Catalogue {
    client: Autopilot,
    store: Store,
    clock: SharedClock,
    ttl: Duration,
    max_stale: Duration,
    current: RwLock<Option<(SystemTime, Features)>>,
    refresh: tokio::sync::Mutex<()>,
    /// Fetches attempted so far, and why the last one failed (if it did).
    attempts: AtomicU64,
    last_failure: Mutex<Option<String>>,
    metrics: CatalogueMetrics,
}

impl Catalogue {
    /// A catalogue over `client`, seeded from the store.
    pub fn new(
        client: Autopilot,
        store: Store,
        clock: SharedClock,
        ttl: Duration,
        max_stale: Duration,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let metrics = CatalogueMetrics {
            last_success_timestamp_seconds: registered(
                registry,
                "last_success_timestamp_seconds",
                "When the feature catalogue in use was fetched from the Autopilot server \
                 (Unix time; 0: never)",
            ),
            fetches: registered(
                registry,
                "fetches",
                "Successful ListFeatures calls to the Autopilot server",
            ),
            fetch_failures: registered(
                registry,
                "fetch_failures",
                "Failed ListFeatures calls to the Autopilot server",
            ),
            stale_served: registered(
                registry,
                "stale_served",
                "Times a catalogue past its TTL was used because the server was unreachable",
            ),
        };
        let seeded = match store.catalogue() {
            Ok(Some(rec)) => ListFeaturesResponse::decode(rec.response.as_slice())
                .ok()
                .map(|r| (rec.fetched_at, Arc::new(FeatureSet::new(r.features)))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "stored catalogue unreadable; it will be refetched");
                None
            }
        };
        if let Some((at, _)) = &seeded {
            metrics
                .last_success_timestamp_seconds
                .set(unix_seconds(*at));
        }
        Arc::new(Catalogue {
            client,
            store,
            clock,
            ttl,
            max_stale,
            current: RwLock::new(seeded),
            refresh: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            metrics,
        })
    }

    /// The catalogue to decide with: fresh if possible, stale within `max_stale` if the
    /// server is unreachable, else UNAVAILABLE naming the server; within `autopilot.timeout`
    /// in all.
    pub async fn get(&self) -> Result<Features, Error> {
        if let Some(s) = self.fresh() {
            return Ok(s);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let fetched = tokio::time::timeout(self.client.timeout(), async {
            let _guard = self.refresh.lock().await;
            // Another caller may have refreshed while we waited, or failed to: its outcome is
            // ours too (one deadline, not one per attempt).
            if let Some(s) = self.fresh() {
                return Ok(s);
            }
            if self.attempts.load(Ordering::Acquire) != seen {
                let failure = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(reason) = failure {
                    return Err(Error::Autopilot {
                        addr: self.client.addr().to_string(),
                        reason,
                    });
                }
            }
            self.fetch().await
        })
        .await
        .unwrap_or_else(|_| Err(self.client.timed_out("waiting for the feature catalogue")));
        match fetched {
            Ok(s) => Ok(s),
            Err(err) => self.stale_or(err),
        }
    }

    /// `Terms` for the relay: the stored answer while fresh, else the server's; while the
    /// server is unreachable, the stored answer up to `max_stale`.
    pub async fn terms(&self) -> Result<TermsResponse, Error> {
        // Store calls run on the blocking pool: never on a runtime thread.
        let stored = self.store.off_worker(|s| s.terms()).await;
        let stored = stored.ok().flatten().and_then(|rec| {
            TermsResponse::decode(rec.response.as_slice())
                .ok()
                .map(|t| (rec.fetched_at, t))
        });
        if let Some((at, t)) = &stored {
            if self.age(*at) < self.ttl {
                return Ok(*t);
            }
        }
        match self.client.terms().await {
            Ok(t) => {
                let rec = CatalogueRecord {
                    fetched_at: self.clock.now(),
                    response: t.encode_to_vec(),
                };
                if let Err(e) = self.store.off_worker(move |s| s.put_terms(&rec)).await {
                    tracing::warn!(error = %e, "could not store the Autopilot server's terms");
                }
                Ok(t)
            }
            Err(e) => match stored {
                Some((at, t)) if self.age(at) <= self.max_stale => {
                    self.metrics.stale_served.inc();
                    tracing::debug!(error = %e, "Autopilot server unreachable; answering Terms from the store");
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    /// Refreshes now (background task); the cached catalogue stays if it fails (the client
    /// logs the server going down; a refusal by a reachable server is logged here).
    pub async fn refresh(&self) {
        let _guard = self.refresh.lock().await;
        if let Err(e) = self.fetch().await {
            if self.client.reachable() {
                tracing::warn!(error = %e, "feature catalogue refresh failed");
            } else {
                tracing::debug!(error = %e, "feature catalogue refresh failed");
            }
        }
    }

    /// Refreshes every TTL until the returned task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.refresh().await;
                tokio::time::sleep(me.ttl).await;
            }
        })
    }

    fn age(&self, fetched_at: SystemTime) -> Duration {
        self.clock
            .now()
            .duration_since(fetched_at)
            .unwrap_or_default()
    }

    fn fresh(&self) -> Option<Features> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        let (at, features) = cur.as_ref()?;
        (self.age(*at) < self.ttl).then(|| features.clone())
    }

    async fn fetch(&self) -> Result<Features, Error> {
        let result = self.client.list_features().await;
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = match &result {
            Err(Error::Autopilot { reason, .. }) => Some(reason.clone()),
            Err(other) => Some(other.to_string()),
            Ok(_) => None,
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.fetch_failures.inc();
                return Err(e);
            }
        };
        self.metrics.fetches.inc();
        let now = self.clock.now();
        let rec = CatalogueRecord {
            fetched_at: now,
            response: resp.encode_to_vec(),
        };
        if let Err(e) = self.store.off_worker(move |s| s.put_catalogue(&rec)).await {
            tracing::warn!(error = %e, "could not store the feature catalogue");
        }
        let features = Arc::new(FeatureSet::new(resp.features));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((now, features.clone()));
        self.metrics
            .last_success_timestamp_seconds
            .set(unix_seconds(now));
        Ok(features)
    }

    fn stale_or(&self, err: Error) -> Result<Features, Error> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        match cur.as_ref() {
            Some((at, features)) if self.age(*at) <= self.max_stale => {
                self.metrics.stale_served.inc();
                tracing::debug!(
                    age_s = self.age(*at).as_secs(),
                    error = %err,
                    "Autopilot server unreachable; using the stale feature catalogue"
                );
                Ok(features.clone())
            }
            Some((at, _)) => {
                let reason = match err {
                    Error::Autopilot { reason, .. } => reason,
                    other => other.to_string(),
                };
                Err(Error::Autopilot {
                    addr: self.client.addr().to_string(),
                    reason: format!(
                        "{reason}; the cached feature catalogue is {}s old, past autopilot.catalogue_max_stale",
                        self.age(*at).as_secs()
                    ),
                })
            }
            None => Err(err),
        }
    }
}

/// `t` as Unix seconds (0 before the epoch), for timestamp gauges.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
