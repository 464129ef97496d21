//! Configuration reload (SIGHUP): re-reads the config file with the loader `run` started
//! with, and either refuses it whole (every error logged, the running config kept) or swaps in
//! what can change while serving. It owns the decision and the outcome (log line, metrics); each
//! swapped value belongs to its module and is read there once per call, lock-free: the policy
//! (`[autopilot.rules]`, `[privacy]`), the relay's privacy rules, the rate limits, the cache's
//! freshness, the log filter and the public face's certificate. It never touches a connection: calls in flight
//! finish under the values they started with, and existing TLS sessions keep their certificate.
//! Keys that only apply at start are named in the log as needing a restart.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::UNIX_EPOCH,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    autopilot::{policy::LivePolicy, policy::Policy, relay::LivePrivacy},
    cache::Cache,
    clock::SharedClock,
    config::{Config, ConfigErrors},
    layers::rate_limit::Limiter,
    telemetry::metrics::registered,
    tls::{swap::SwappableCert, CertSource, TlsError},
};

/// Why a reload was refused; the running configuration is kept whole.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The operator's file does not load or validate (every error, one per entry).
    #[error("the configuration is invalid: {0}")]
    Invalid(ConfigErrors),
    /// The operator's certificate or key files are unusable.
    #[error("listen TLS: {0}")]
    Tls(#[from] TlsError),
    /// litgate's own fault: the reload task did not finish.
    #[error("the reload did not finish: {0}")]
    Internal(String),
}

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The reloadable keys whose value changed, now in force; `listen.tls_reread` whenever
    /// the certificate files were read again (they may hold a renewed pair under the same
    /// names).
    pub changed: Vec<&'static str>,
    /// Keys whose value changed but that only apply at start: still the old value.
    pub needs_restart: Vec<&'static str>,
}

/// The values a reload swaps, each owned by its module; `None` where that part is off.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// The public face's AddAutopilotSession policy.
    pub(crate) policy: Option<LivePolicy>,
    /// The relay's `[privacy]` rules, with the relay on.
    pub(crate) relay_privacy: Option<LivePrivacy>,
    /// The session cache, when on.
    pub(crate) cache: Option<Cache>,
    /// The public face's rate limiter.
    pub(crate) rate_limit: Option<Arc<Limiter>>,
    /// The public face's certificate, unless plaintext.
    pub(crate) tls: Option<Arc<SwappableCert>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Reloads the configuration of a running litgate.
#[derive(Debug)]
pub struct Reloader {
    /// The config in force. Locked only inside a reload, which runs on the blocking pool.
    current: Mutex<Config>,
    live: Live,
    clock: SharedClock,
    reloads: Family<OutcomeLabels, Counter>,
    last_success: Gauge,
}

impl Reloader {
    /// A reloader of `current` (what start used), registering `litgate_config_*`.
    pub(crate) fn new(
        current: Config,
        live: Live,
        clock: SharedClock,
        registry: &mut Registry,
    ) -> Self {
        Reloader {
            current: Mutex::new(current),
            live,
            clock,
            reloads: registered(
                registry,
                "reloads",
                "Configuration reloads (SIGHUP), by outcome (ok, failed)",
            ),
            last_success: registered(
                registry,
                "last_reload_success_timestamp_seconds",
                "When the configuration was last reloaded successfully (Unix seconds; 0: never)",
            ),
        }
    }

    /// Re-reads the file the running config came from, off the async workers, and applies it;
    /// logs and counts the outcome either way.
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let this = self.clone();
        let outcome = tokio::task::spawn_blocking(move || this.reload_blocking())
            .await
            .unwrap_or_else(|e| Err(ReloadError::Internal(e.to_string())));
        match &outcome {
            Ok(r) => {
                self.count("ok");
                let now = self
                    .clock
                    .now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.last_success
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                tracing::info!(
                    changed = %list(&r.changed),
                    needs_restart = %list(&r.needs_restart),
                    "config reloaded"
                );
                if !r.needs_restart.is_empty() {
                    tracing::warn!(
                        keys = %list(&r.needs_restart),
                        "changed keys that only apply at start keep their old value: they need a restart"
                    );
                }
            }
            Err(ReloadError::Invalid(errors)) => {
                self.count("failed");
                for e in &errors.0 {
                    tracing::error!(key = %e.key, reason = %e.reason, "config reload refused");
                }
                tracing::error!("config reload refused: keeping the running configuration");
            }
            Err(e) => {
                self.count("failed");
                tracing::error!(error = %e, "config reload refused: keeping the running configuration");
            }
        }
        outcome
    }

    fn count(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Loads, validates and reads every new file first; swaps only when all of it is good.
    fn reload_blocking(&self) -> Result<Reloaded, ReloadError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| ReloadError::Internal("an earlier reload panicked".into()))?;
        let path = current
            .source
            .clone()
            .ok_or_else(|| ReloadError::Internal("the configuration came from no file".into()))?;
        let new = Config::load(&path).map_err(ReloadError::Invalid)?;
        let pair = match &self.live.tls {
            Some(_) => Some(SwappableCert::load(&CertSource::of(
                &new.listen,
                &new.store.data_dir,
            ))?),
            None => None,
        };

        let mut reloaded = diff(&current, &new);
        // The certificate files are re-read whether or not their names changed: that is how a
        // renewed certificate reaches new handshakes.
        if pair.is_some() && !reloaded.changed.contains(&"listen.tls_cert") {
            reloaded.changed.push("listen.tls_reread");
        }
        if let Some(policy) = &self.live.policy {
            policy.set(Policy::new(
                new.autopilot.rules.clone(),
                new.privacy.clone(),
            ));
        }
        if let Some(relay) = &self.live.relay_privacy {
            relay.set(&new.privacy);
        }
        if let Some(limiter) = &self.live.rate_limit {
            limiter.reconfigure(&new.rate_limit);
        }
        if let Some(cache) = &self.live.cache {
            cache.set_freshness(&new.cache);
        }
        if let (Some(tls), Some(pair)) = (&self.live.tls, pair) {
            tls.set(pair);
        }
        crate::telemetry::reload_filter(&new.log);

        // What is not swapped stays as started: keep the old values so the next reload
        // compares against what actually runs.
        *current = applied(&current, new);
        Ok(reloaded)
    }
}

/// Compares one key (or group) of two configs by its `Debug` form (config types hold paths,
/// numbers and names; no secrets).
fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The keys that differ between the running and the new config: those a reload applies, and
/// those that need a restart.
fn diff(old: &Config, new: &Config) -> Reloaded {
    let mut r = Reloaded::default();
    let mut limits_old = old.rate_limit.clone();
    (limits_old.max_identities, limits_old.sweep_every) =
        (new.rate_limit.max_identities, new.rate_limit.sweep_every);
    let live: [(&'static str, bool); 8] = [
        ("rate_limit", differs(&limits_old, &new.rate_limit)),
        (
            "autopilot.rules",
            differs(&old.autopilot.rules, &new.autopilot.rules),
        ),
        ("privacy", differs(&old.privacy, &new.privacy)),
        ("cache.ttl", old.cache.ttl != new.cache.ttl),
        (
            "cache.max_stale",
            old.cache.max_stale != new.cache.max_stale,
        ),
        ("log.level", old.log.level != new.log.level),
        ("log.access", old.log.access != new.log.access),
        (
            "listen.tls_cert",
            old.listen.tls_cert != new.listen.tls_cert
                || old.listen.tls_key != new.listen.tls_key
                || old.listen.tls_extra_names != new.listen.tls_extra_names,
        ),
    ];
    r.changed = live.iter().filter(|(_, d)| *d).map(|(k, _)| *k).collect();
    let mut listen_old = old.listen.clone();
    let mut listen_new = new.listen.clone();
    for l in [&mut listen_old, &mut listen_new] {
        l.tls_cert = PathBuf::new();
        l.tls_key = PathBuf::new();
        l.tls_extra_names.clear();
    }
    let mut autopilot_old = old.autopilot.clone();
    autopilot_old.rules = new.autopilot.rules.clone();
    let mut cache_old = old.cache.clone();
    (cache_old.ttl, cache_old.max_stale) = (new.cache.ttl, new.cache.max_stale);
    let restart: [(&'static str, bool); 9] = [
        ("listen", differs(&listen_old, &listen_new)),
        ("upstream", differs(&old.upstream, &new.upstream)),
        ("autopilot", differs(&autopilot_old, &new.autopilot)),
        (
            "rate_limit.max_identities",
            old.rate_limit.max_identities != new.rate_limit.max_identities,
        ),
        (
            "rate_limit.sweep_every",
            old.rate_limit.sweep_every != new.rate_limit.sweep_every,
        ),
        ("cache", differs(&cache_old, &new.cache)),
        ("store", differs(&old.store, &new.store)),
        ("admin", differs(&old.admin, &new.admin)),
        ("log.format", differs(&old.log.format, &new.log.format)),
    ];
    r.needs_restart = restart
        .iter()
        .filter(|(_, d)| *d)
        .map(|(k, _)| *k)
        .collect();
    r
}

/// The config now running: the new values of what was swapped, the old ones of the rest.
fn applied(old: &Config, new: Config) -> Config {
    let mut running = old.clone();
    running.autopilot.rules = new.autopilot.rules;
    running.privacy = new.privacy;
    let (max_identities, sweep_every) = (old.rate_limit.max_identities, old.rate_limit.sweep_every);
    running.rate_limit = new.rate_limit;
    (
        running.rate_limit.max_identities,
        running.rate_limit.sweep_every,
    ) = (max_identities, sweep_every);
    (running.cache.ttl, running.cache.max_stale) = (new.cache.ttl, new.cache.max_stale);
    (running.log.level, running.log.access) = (new.log.level, new.log.access);
    running.listen.tls_cert = new.listen.tls_cert;
    running.listen.tls_key = new.listen.tls_key;
    running.listen.tls_extra_names = new.listen.tls_extra_names;
    running
}

fn list(keys: &[&'static str]) -> String {
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(",")
    }
}

/// The signals `run` answers: SIGHUP reloads, SIGTERM and SIGINT stop. Installed before the
/// listeners are announced, so a signal sent as soon as litgate says it is up never finds the
/// default action (which would end the process at once, without its clean stop).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (inside the runtime). A handler that cannot be installed is
    /// logged; that signal then keeps its default action.
    pub fn install() -> Signals {
        Self::with_reload(true)
    }

    /// Only the stop signals, for a process with nothing to reload (the demo): SIGHUP keeps its
    /// default action, so closing the terminal still ends it.
    pub fn stop_only() -> Signals {
        Self::with_reload(false)
    }

    fn with_reload(reload: bool) -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, signal = name, "cannot handle signal");
                    None
                }
            };
            Signals {
                hup: reload
                    .then(|| install(SignalKind::hangup(), "SIGHUP"))
                    .flatten(),
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
            Signals {}
        }
    }

    /// Returns on SIGTERM or SIGINT.
    pub async fn stopped(&mut self) {
        #[cfg(unix)]
        stop(&mut self.term, &mut self.int).await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Reloads with `reloader` on each SIGHUP (telling the service manager `RELOADING=1`, then
    /// `READY=1` whatever the outcome: litgate serves either way), and returns on SIGTERM or
    /// SIGINT.
    pub async fn serve_until_stopped(&mut self, reloader: &Arc<Reloader>) {
        loop {
            #[cfg(unix)]
            {
                tokio::select! {
                    _ = next(&mut self.hup) => {}
                    _ = stop(&mut self.term, &mut self.int) => return,
                }
            }
            #[cfg(not(unix))]
            {
                self.stopped().await;
                return;
            }
            #[cfg(unix)]
            {
                tracing::info!("SIGHUP: reloading the configuration");
                crate::notify::reloading();
                let _ = reloader.reload().await;
                crate::notify::ready();
            }
        }
    }
}

/// SIGTERM or SIGINT (each through its handler, when it is installed).
#[cfg(unix)]
async fn stop(
    term: &mut Option<tokio::signal::unix::Signal>,
    int: &mut Option<tokio::signal::unix::Signal>,
) {
    tokio::select! {
        _ = next(term) => {}
        _ = next(int) => {}
    }
}

/// The next delivery of `signal`; never, when its handler could not be installed.
#[cfg(unix)]
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
