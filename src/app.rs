//! Builds litgate from its configuration: the public stack, the upstream client, the admin
//! endpoints, and the listeners; and stops them in order. Runtime objects are built here from
//! config and do not carry the config around.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::ServiceBuilder;

use crate::{
    admin::{self, Admin},
    autopilot::{
        add_session::AddSessionHandler,
        policy::Policy,
        relay::{ReconcileReport, Reconciler, Relay},
        Autopilot, Catalogue,
    },
    body::{Request, Response},
    cache::Cache,
    clock::{SharedClock, SystemClock},
    config::{Config, ListenConfig},
    layers::{
        identity::IdentityLayer,
        metrics::{MetricsLayer, RequestMetrics},
        rate_limit::{Limiter, RateLimitLayer},
        rescue::RescueLayer,
        trace::TraceLayer,
    },
    router::Router,
    server,
    store::Store,
    upstream::{Upstream, UpstreamMetrics},
};

/// Why litgate could not start. Each names the config key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material for the public face.
    #[error("listen TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The upstream client.
    #[error("{0}")]
    Upstream(#[from] crate::upstream::BuildError),
    /// A listener could not be bound.
    #[error("{key} = {addr}: cannot listen: {source}")]
    Bind {
        /// The config key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened (corrupt, locked, foreign, unknown schema).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The Autopilot server client could not be built.
    #[error("{0}")]
    Autopilot(#[from] crate::autopilot::client::ClientError),
    /// A config value that validation let through but start cannot use.
    #[error("{0}")]
    Config(String),
    /// `[upstream] macaroon` could not be read.
    #[error("upstream.macaroon {path}: {reason}")]
    Macaroon {
        /// The file.
        path: PathBuf,
        /// Why (never the file's content).
        reason: String,
    },
    /// The data directory is unusable.
    #[error("store.data_dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The public face's service: every layer of `design.md` §1, outermost first.
pub fn public_stack(
    router: Router,
    metrics: RequestMetrics,
    rate_limit: RateLimitLayer,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        // Outermost: one span covers the whole request, refusals included.
        .layer(TraceLayer)
        // The single place where litgate's errors become responses in the caller's protocol.
        .layer(RescueLayer)
        // Inside rescue, so refusals are counted with their gRPC code rather than as OK.
        .layer(MetricsLayer::new(metrics))
        // Before the rate limiter and the router, which both read `Caller`.
        .layer(IdentityLayer)
        // After identity (keys by `Caller`), before the router: a refused call never reaches litd.
        .layer(rate_limit)
        // The only place that maps paths to handlers; the rest is raw passthrough.
        .service(router)
}

/// A started litgate.
#[derive(Debug)]
pub struct Running {
    /// Where the public face listens.
    pub public_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// The public face's certificate (to pin), unless plaintext.
    pub cert_path: Option<PathBuf>,
    /// True when this start generated that certificate.
    pub cert_generated: bool,
    /// Where the relay listens (litd's `autopilot.address`), if on.
    pub relay_addr: Option<SocketAddr>,
    reconciler: Option<Reconciler>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    store: Store,
}

impl Running {
    /// Stops accepting, drains in-flight calls (up to `[listen] drain_timeout`) and returns
    /// when every listener has stopped.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.background {
            t.abort();
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "flushing the store at shutdown failed");
        }
    }

    /// Runs one reconciliation pass now (tests; the background task runs them on schedule).
    /// `None` when reconciliation is off.
    pub async fn reconcile_now(&self) -> Option<Result<ReconcileReport, crate::error::Error>> {
        match &self.reconciler {
            Some(r) => Some(r.run_once().await),
            None => None,
        }
    }

    /// The open store (tests inspect what was recorded).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Builds everything from `cfg` and starts the listeners, on the system clock.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    start_with_clock(cfg, Arc::new(SystemClock)).await
}

/// Same as [`start`], with an injected clock (tests move time instead of sleeping).
pub async fn start_with_clock(cfg: &Config, clock: SharedClock) -> Result<Running, StartError> {
    let data_dir = cfg.store.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    // Off the async threads: opening may wait for a lock a previous instance is releasing.
    let dir = data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| StartError::Config(format!("opening the store failed: {e}")))??;

    // Every metric is `litgate_<component>_<name>`: each component registers its own in the
    // sub-registry it is handed.
    let mut registry = Registry::with_prefix("litgate");
    let request_metrics = RequestMetrics::register(&mut registry);
    let rate_limiter = Limiter::registered(
        &cfg.rate_limit,
        registry.sub_registry_with_prefix("rate_limit"),
    );
    let upstream = Upstream::new(
        &cfg.upstream,
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
    let add_session = AddSessionHandler::new(
        Policy::new(cfg.autopilot.rules.clone(), cfg.privacy.clone()),
        catalogue.clone(),
        upstream.clone(),
        store.clone(),
        clock.clone(),
        cfg.listen.max_message_bytes,
        registry.sub_registry_with_prefix("autopilot"),
    );
    // The session cache (off: the router passes lists and writes through untouched).
    let cache = match cfg.cache.enabled {
        true => {
            let label = upstream.addr().to_string();
            Some(Cache::new(
                &cfg.cache,
                store.clone(),
                clock.clone(),
                upstream.clone(),
                label,
                registry.sub_registry_with_prefix("cache"),
            )?)
        }
        false => None,
    };
    let router = Router::new(upstream.clone())
        .with_max_message_bytes(cfg.listen.max_message_bytes)
        .with_add_autopilot_session(Arc::new(add_session))
        .with_cache(cache);
    let relay_cfg = &cfg.autopilot.relay;
    let relay = relay_cfg.addr.is_some().then(|| {
        Relay::new(
            autopilot.clone(),
            catalogue.clone(),
            store.clone(),
            clock.clone(),
            &cfg.privacy.deny_clear,
            registry.sub_registry_with_prefix("relay"),
        )
    });
    let reconciler = match read_macaroon(&cfg.upstream.macaroon)? {
        Some(mac) if relay.is_some() => Some(Reconciler::new(
            autopilot.clone(),
            upstream.clone(),
            store.clone(),
            clock.clone(),
            mac,
            relay_cfg.reconcile_grace,
        )),
        _ => None,
    };
    let registry = Arc::new(registry);

    let (tls, cert_path, cert_generated) = if cfg.listen.plaintext {
        (None, None, false)
    } else {
        let t = crate::tls::server_tls(&cert_source(&cfg.listen, &data_dir))?;
        (Some(t.config), Some(t.cert_path), t.generated)
    };

    let public = TcpListener::bind(cfg.listen.addr)
        .await
        .map_err(|source| StartError::Bind {
            key: "listen.addr",
            addr: cfg.listen.addr,
            source,
        })?;
    let admin_listener =
        TcpListener::bind(cfg.admin.addr)
            .await
            .map_err(|source| StartError::Bind {
                key: "admin.addr",
                addr: cfg.admin.addr,
                source,
            })?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        key: "listen.addr",
        addr: cfg.listen.addr,
        source,
    })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            key: "admin.addr",
            addr: cfg.admin.addr,
            source,
        })?;

    let relay_listener = match (&relay, relay_cfg.addr) {
        (Some(_), Some(addr)) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    key: "autopilot.relay.addr",
                    addr,
                    source,
                })?;
            let local = l.local_addr().map_err(|source| StartError::Bind {
                key: "autopilot.relay.addr",
                addr,
                source,
            })?;
            Some((l, local))
        }
        _ => None,
    };
    let relay_addr = relay_listener.as_ref().map(|(_, a)| *a);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let mut background = vec![catalogue.spawn_refresher()];
    if let Some(r) = &reconciler {
        background.push(r.clone().spawn(relay_cfg.reconcile_every));
    }
    if let (Some(relay), Some((listener, _))) = (relay, relay_listener) {
        let relay_tls = if relay_cfg.tls { tls.clone() } else { None };
        let svc = relay.service();
        let relay_svc = tower::service_fn(move |req: Request| {
            let svc = svc.clone();
            async move {
                let resp = tower::ServiceExt::oneshot(svc, req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(crate::body::boxed))
            }
        });
        tasks.push(tokio::spawn(server::serve(
            listener,
            relay_tls,
            cfg.listen.handshake_timeout,
            relay_svc,
            stopped(shutdown_rx.clone()),
            cfg.listen.drain_timeout,
        )));
    }
    let stack = public_stack(router, request_metrics, RateLimitLayer::new(rate_limiter));
    let drain = cfg.listen.drain_timeout;
    tasks.push(tokio::spawn(server::serve(
        public,
        tls,
        cfg.listen.handshake_timeout,
        stack,
        stopped(shutdown_rx.clone()),
        drain,
    )));

    let checks: Vec<(&'static str, admin::Check)> = vec![
        ("store", store_check(store.clone())),
        ("upstream", Admin::upstream_check(upstream)),
    ];
    let mut notes = Vec::new();
    if relay_addr.is_some() && reconciler.is_none() {
        notes.push(
            "reconcile: off (no [upstream] macaroon: orphaned registrations are not revoked)"
                .to_string(),
        );
    }
    let admin = Admin::new(registry, checks)
        .with_notes(notes)
        .with_registrations(store.clone());
    let admin_svc = tower::service_fn(move |req: Request| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    });
    tasks.push(tokio::spawn(server::serve(
        admin_listener,
        None,
        cfg.listen.handshake_timeout,
        admin_svc,
        stopped(shutdown_rx),
        Duration::from_secs(1),
    )));

    tracing::info!(%public_addr, %admin_addr, relay = ?relay_addr, upstream = %cfg.upstream.addr, "litgate listening");
    Ok(Running {
        public_addr,
        admin_addr,
        relay_addr,
        reconciler,
        cert_path,
        cert_generated,
        shutdown: shutdown_tx,
        tasks,
        background,
        store,
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // Resolves on `true`, or when the sender is gone (the app was dropped).
    let _ = rx.wait_for(|v| *v).await;
}

/// Reads litgate's own macaroon (a file with the hex text, as `litcli` prints it, or the
/// binary macaroon litd writes) into a header value.
fn read_macaroon(path: &std::path::Path) -> Result<Option<http::HeaderValue>, StartError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let fail = |reason: String| StartError::Macaroon {
        path: path.to_path_buf(),
        reason,
    };
    let raw = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8(raw.clone())
        .ok()
        .map(|t| t.trim().to_string());
    let hex_text = match text {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()) => t,
        _ => hex::encode(&raw),
    };
    if crate::macaroon::Macaroon::from_hex(&hex_text).is_err() {
        return Err(fail(
            "not a macaroon (expected hex text or litd's binary .macaroon file)".into(),
        ));
    }
    http::HeaderValue::from_str(&hex_text)
        .map(Some)
        .map_err(|_| fail("not usable as a header".into()))
}

/// Where the public face's certificate comes from: the configured files, or one generated
/// into the data directory.
fn cert_source(listen: &ListenConfig, data_dir: &std::path::Path) -> crate::tls::CertSource {
    if listen.tls_cert.as_os_str().is_empty() {
        crate::tls::CertSource::Generated {
            dir: data_dir.to_path_buf(),
            extra_names: listen.tls_extra_names.clone(),
        }
    } else {
        crate::tls::CertSource::Files {
            cert: listen.tls_cert.clone(),
            key: listen.tls_key.clone(),
        }
    }
}

/// Ready while the store answers a read.
fn store_check(store: Store) -> admin::Check {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.check().map_err(|e| e.to_string()) })
    })
}
