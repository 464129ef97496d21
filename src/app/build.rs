//! The components litgate runs, built from the configuration: the upstream client, the
//! Autopilot client and catalogue, the public face's router (policy, cache) and limiter, the
//! relay and its reconciler. Each registers its metrics in the sub-registry it is handed.

use std::{path::Path, sync::Arc};

use prometheus_client::registry::Registry;

use super::StartError;
use crate::{
    autopilot::{
        add_session::AddSessionHandler,
        policy::Policy,
        relay::{Reconciler, Relay},
        Approvals, Autopilot, Catalogue,
    },
    cache::{Cache, CacheMetrics},
    clock::SharedClock,
    config::{Config, StoreConfig},
    layers::{
        metrics::RequestMetrics,
        overload::OverloadLayer,
        rate_limit::{Limiter, RateLimitLayer},
    },
    router::Router,
    server,
    store::Store,
    upstream::{Upstream, UpstreamMetrics},
};

/// What the public face serves.
pub(super) struct Public {
    pub(super) router: Router,
    pub(super) metrics: RequestMetrics,
    pub(super) rate_limit: RateLimitLayer,
    /// `listen.max_in_flight` (`litgate_overload_*`).
    pub(super) overload: OverloadLayer,
    /// The public face's connection caps and timeouts (`litgate_connections_*`).
    pub(super) conns: server::Connections,
}

/// Everything the listeners serve.
pub(super) struct Components {
    pub(super) upstream: Upstream,
    pub(super) catalogue: Arc<Catalogue>,
    pub(super) public: Public,
    /// The relay and its request metrics, when `[autopilot.relay] addr` is set.
    pub(super) relay: Option<(Relay, RequestMetrics)>,
    /// With the relay on and `[upstream] macaroon` set.
    pub(super) reconciler: Option<Reconciler>,
    /// What a config reload swaps (the certificate is added by `listen`).
    pub(super) live: crate::reload::Live,
}

/// Opens (or creates) the store in `store.data_dir`, off the async threads: opening may wait
/// for a lock a previous instance is releasing.
pub(super) async fn open_store(cfg: &StoreConfig) -> Result<Store, StartError> {
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
        path: dir.clone(),
        source,
    })?;
    tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| StartError::Config(format!("opening the store failed: {e}")))?
        .map_err(StartError::from)
}

impl Components {
    /// Builds every component from `cfg`, for `runtimes` runtimes (the upstream client keeps
    /// connections per runtime; everything else is shared, `approvals` between the public
    /// face's policy and the relay).
    pub(super) fn build(
        cfg: &Config,
        store: &Store,
        approvals: &Approvals,
        clock: &SharedClock,
        registry: &mut Registry,
        runtimes: usize,
    ) -> Result<Components, StartError> {
        let upstream = Upstream::new(
            &cfg.upstream,
            runtimes,
            UpstreamMetrics::register(registry.sub_registry_with_prefix("upstream")),
        )?;
        let autopilot = Autopilot::new(&cfg.autopilot)?;
        let catalogue = Catalogue::new(
            autopilot.clone(),
            store.clone(),
            clock.clone(),
            cfg.autopilot.catalogue_ttl,
            cfg.autopilot.catalogue_max_stale,
            registry.sub_registry_with_prefix("catalogue"),
        );
        let mut live = crate::reload::Live::default();
        let limiter = Limiter::registered(
            &cfg.rate_limit,
            registry.sub_registry_with_prefix("rate_limit"),
        );
        live.rate_limit = Some(limiter.clone());
        let public = Public {
            metrics: RequestMetrics::register(registry),
            rate_limit: RateLimitLayer::new(limiter),
            overload: OverloadLayer::registered(
                cfg.listen.max_in_flight,
                registry.sub_registry_with_prefix("overload"),
            ),
            router: router(
                cfg,
                store,
                clock,
                &upstream,
                add_session(cfg, approvals, clock, &upstream, &catalogue, registry),
                registry,
                &mut live,
            )?,
            conns: server::Connections::new(
                server::Limits::of(&cfg.listen),
                server::ConnMetrics::register(registry.sub_registry_with_prefix("connections")),
            ),
        };
        let relay = cfg.autopilot.relay.addr.map(|_| {
            let registry = registry.sub_registry_with_prefix("relay");
            let relay = Relay::new(
                autopilot.clone(),
                catalogue.clone(),
                store.clone(),
                approvals.clone(),
                clock.clone(),
                &cfg.privacy,
                registry,
            );
            live.relay_privacy = Some(relay.live_privacy());
            (relay, RequestMetrics::register(registry))
        });
        let reconciler = match read_macaroon(&cfg.upstream.macaroon)? {
            Some(macaroon) if relay.is_some() => Some(Reconciler {
                autopilot,
                upstream: upstream.clone(),
                store: store.clone(),
                clock: clock.clone(),
                macaroon,
                grace: cfg.autopilot.relay.reconcile_grace,
            }),
            _ => None,
        };
        Ok(Components {
            upstream,
            catalogue,
            public,
            relay,
            reconciler,
            live,
        })
    }
}

/// The AddAutopilotSession policy handler, recording into `approvals` when the relay is on
/// (the relay is their only reader); registers the `litgate_autopilot_*` metrics.
fn add_session(
    cfg: &Config,
    approvals: &Approvals,
    clock: &SharedClock,
    upstream: &Upstream,
    catalogue: &Arc<Catalogue>,
    registry: &mut Registry,
) -> AddSessionHandler {
    let metrics = registry.sub_registry_with_prefix("autopilot");
    approvals.register(metrics);
    AddSessionHandler::new(
        Policy::new(cfg.autopilot.rules.clone(), cfg.privacy.clone()),
        catalogue.clone(),
        upstream.clone(),
        cfg.autopilot
            .relay
            .addr
            .is_some()
            .then(|| approvals.clone()),
        clock.clone(),
        cfg.listen.max_message_bytes,
        metrics,
    )
}

/// The public face's router: AddAutopilotSession's policy, and the session cache unless it is
/// off (then the router passes lists and writes through untouched).
fn router(
    cfg: &Config,
    store: &Store,
    clock: &SharedClock,
    upstream: &Upstream,
    add_session: AddSessionHandler,
    registry: &mut Registry,
    live: &mut crate::reload::Live,
) -> Result<Router, StartError> {
    let cache = match cfg.cache.enabled {
        true => Some(Cache::new(
            &cfg.cache,
            store.clone(),
            clock.clone(),
            upstream.clone(),
            upstream.addr().to_string(),
            CacheMetrics::register(registry.sub_registry_with_prefix("cache")),
        )?),
        false => None,
    };
    live.policy = Some(add_session.live_policy());
    live.cache = cache.clone();
    Ok(Router::new(upstream.clone())
        .with_max_message_bytes(cfg.listen.max_message_bytes)
        .with_add_autopilot_session(Arc::new(add_session))
        .with_cache(cache))
}

/// Reads litgate's own macaroon (a file with the hex text, as `litcli` prints it, or the
/// binary macaroon litd writes) into a header value.
fn read_macaroon(path: &Path) -> Result<Option<http::HeaderValue>, StartError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let fail = |reason: String| StartError::Macaroon {
        path: path.to_path_buf(),
        reason,
    };
    let hex_text = crate::macaroon::read_file_hex(path).map_err(fail)?;
    http::HeaderValue::from_str(&hex_text)
        .map(Some)
        .map_err(|_| fail("not usable as a header".into()))
}
