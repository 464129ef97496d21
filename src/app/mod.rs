//! Builds litgate from its configuration and runs it: the components (`build`), the tower
//! stacks of the public and relay faces (`stacks`), the listeners and TLS (`listen`), the
//! admin endpoints; and stops them in order. Runtime objects are built from config and do not
//! carry the config around.
//!
//! litgate serves on one or more single-threaded runtimes (`[runtime] threads`, see
//! `crate::runtime`). The runtime that starts litgate serves one public listener, the admin
//! and relay listeners and the background tasks (catalogue refresh, reconciliation); each
//! other runtime serves one more public listener on the same port, on a thread of its own.
//! Every component is shared between them; only the connections to litd are per runtime.
//! In-process starts ([`start`], the tests) serve on the caller's runtime alone.

mod build;
mod listen;
mod stacks;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::{sync::watch, task::JoinHandle};

pub(crate) use self::stacks::{public_stack, relay_stack};
use self::{build::Components, listen::Listeners};
pub use crate::autopilot::relay::ReconcileReport;
use crate::{
    admin::{self, Admin},
    autopilot::{policy::APPROVAL_BOUNDS, relay::Reconciler, Approvals},
    body::Request,
    clock::{SharedClock, SystemClock},
    config::Config,
    server,
    store::Store,
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
    reloader: Arc<crate::reload::Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// One per runtime on a thread of its own: fires when its listener has drained.
    workers: Vec<tokio::sync::oneshot::Receiver<()>>,
    store: Store,
    approvals: Approvals,
}

impl Running {
    /// Stops accepting, drains in-flight calls (up to `[listen] drain_timeout`) and returns
    /// when every listener has stopped.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for w in self.workers {
            // An error only means the thread is gone already.
            let _ = w.await;
        }
        for t in self.background {
            t.abort();
        }
        // The approvals the background writer has not written yet (it is stopped above).
        self.approvals.write_now().await;
        // fsync: on the blocking pool, not on an async worker.
        if let Err(e) = self.store.off_worker(Store::flush).await {
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

    /// Reloads the configuration (SIGHUP; tests call it directly).
    pub fn reloader(&self) -> Arc<crate::reload::Reloader> {
        self.reloader.clone()
    }

    /// The open store (tests inspect what was recorded).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The approvals index the policy records into and the relay reads (tests inspect it).
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }
}

/// Builds everything from `cfg` and starts the listeners, on the system clock.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    start_with_clock(cfg, Arc::new(SystemClock)).await
}

/// Same as [`start`], with an injected clock (tests move time instead of sleeping).
pub async fn start_with_clock(cfg: &Config, clock: SharedClock) -> Result<Running, StartError> {
    launch(cfg, clock, Vec::new()).await
}

/// Starts litgate on the caller's runtime and on each of `others` (single-threaded runtimes,
/// each then run on a thread of its own; see `crate::runtime`).
pub(crate) async fn launch(
    cfg: &Config,
    clock: SharedClock,
    others: Vec<tokio::runtime::Runtime>,
) -> Result<Running, StartError> {
    let runtimes = 1 + others.len();
    let store = build::open_store(&cfg.store).await?;
    let approvals = Approvals::load(store.clone(), APPROVAL_BOUNDS, unix_secs(&clock)).await?;
    // Every metric is `litgate_<component>_<name>`: each component registers its own in the
    // sub-registry it is handed.
    // The process metrics keep their conventional unprefixed names: on the root.
    let mut root = Registry::default();
    crate::telemetry::process::register(&mut root);
    let mut parts = Components::build(
        cfg,
        &store,
        &approvals,
        &clock,
        root.sub_registry_with_prefix("litgate"),
        runtimes,
    )?;
    let tls = listen::public_tls(cfg).await?;
    parts.live.tls = tls.cert.clone();
    let reloader = Arc::new(crate::reload::Reloader::new(
        cfg.clone(),
        parts.live,
        clock.clone(),
        root.sub_registry_with_prefix("litgate_config"),
    ));
    let listeners = Listeners::bind(cfg, parts.relay.is_some(), runtimes).await?;
    let (public_addr, admin_addr) = (listeners.public.1, listeners.admin.1);
    let relay_addr = listeners.relay.as_ref().map(|(_, a)| *a);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stopped = || stopped(shutdown_rx.clone());
    let listen = &cfg.listen;
    // The relay's and the admin's clients are litd and the operator's tools: the same
    // timeouts, their own counts, not in /metrics.
    let internal_conns =
        server::Connections::new(server::Limits::of(listen), server::ConnMetrics::default());
    let mut tasks = Vec::new();
    let mut background = vec![parts.catalogue.spawn_refresher(), approvals.spawn_writer()];
    if let Some(r) = &parts.reconciler {
        background.push(r.clone().spawn(cfg.autopilot.relay.reconcile_every));
    }
    if let (Some((relay, metrics)), Some((listener, _))) = (parts.relay, listeners.relay) {
        let relay_tls = if cfg.autopilot.relay.tls {
            tls.config.clone()
        } else {
            None
        };
        let svc = relay_stack(relay, metrics);
        tasks.push(tokio::spawn(server::serve(
            listener,
            relay_tls,
            internal_conns.clone(),
            svc,
            stopped(),
            listen.drain_timeout,
        )));
    }
    let public = parts.public;
    let stack = public_stack(
        public.router,
        public.metrics,
        public.overload,
        public.rate_limit,
    );
    let mut public_listeners = listeners.public.0;
    let bind_failed = |source| StartError::Bind {
        key: "listen.addr",
        addr: public_addr,
        source,
    };
    let first =
        tokio::net::TcpListener::from_std(public_listeners.remove(0)).map_err(bind_failed)?;
    let mut workers = Vec::new();
    for (lane, (rt, listener)) in (1..).zip(others.into_iter().zip(public_listeners)) {
        let (tls, stack, stopped) = (tls.config.clone(), stack.clone(), stopped());
        let (conns, drain) = (public.conns.clone(), listen.drain_timeout);
        let serve = move || async move {
            // Registered with the runtime that serves it, on its own thread.
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => server::serve(l, tls, conns, stack, stopped, drain).await,
                Err(e) => tracing::error!(error = %e, "a public listener could not be served"),
            }
        };
        workers.push(crate::runtime::spawn_worker(lane, rt, serve).map_err(|e| {
            StartError::Config(format!("runtime.threads: cannot start a thread: {e}"))
        })?);
    }
    tasks.push(tokio::spawn(server::serve(
        first,
        tls.config,
        public.conns,
        stack,
        stopped(),
        listen.drain_timeout,
    )));
    let admin = admin(
        Arc::new(root),
        &store,
        clock,
        parts.upstream,
        relay_addr.is_some() && parts.reconciler.is_none(),
    );
    let admin_svc = tower::service_fn(move |req: Request| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    });
    tasks.push(tokio::spawn(server::serve(
        listeners.admin.0,
        None,
        internal_conns,
        admin_svc,
        stopped(),
        Duration::from_secs(1),
    )));

    crate::telemetry::log_started(
        cfg.source.as_deref(),
        public_addr,
        admin_addr,
        relay_addr,
        &cfg.upstream.addr,
    );
    Ok(Running {
        public_addr,
        admin_addr,
        relay_addr,
        reconciler: parts.reconciler,
        reloader,
        cert_path: tls.cert_path,
        cert_generated: tls.generated,
        shutdown: shutdown_tx,
        tasks,
        background,
        workers,
        store,
        approvals,
    })
}

/// The clock's time in unix seconds (0 before 1970).
fn unix_secs(clock: &SharedClock) -> u64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // Resolves on `true`, or when the sender is gone (the app was dropped).
    let _ = rx.wait_for(|v| *v).await;
}

/// The admin endpoints: metrics, readiness (the store takes writes, litd answers a handshake), the
/// ledger; and a note when the relay runs without reconciliation.
fn admin(
    registry: Arc<Registry>,
    store: &Store,
    clock: SharedClock,
    upstream: crate::upstream::Upstream,
    reconcile_off: bool,
) -> Admin {
    let checks: Vec<(&'static str, admin::Check)> = vec![
        ("store", Admin::store_check(store.clone(), clock)),
        ("upstream", Admin::upstream_check(upstream)),
    ];
    let mut notes = Vec::new();
    if reconcile_off {
        notes.push(
            "reconcile: off (no [upstream] macaroon: orphaned registrations are not revoked)"
                .to_string(),
        );
    }
    Admin::new(registry, checks)
        .with_notes(notes)
        .with_registrations(store.clone())
}
