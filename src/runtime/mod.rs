//! The threads litgate serves on: `[runtime] threads` single-threaded tokio runtimes, one per
//! OS thread. A multi-threaded runtime hands every wake-up of a call (hyper's per-stream tasks,
//! h2's stream handles) to a parked worker on another core: futex calls and context switches
//! on every request. A runtime per thread keeps a call, its tasks and its connection to litd on
//! one thread. Each runtime serves its own public listener on the shared port and has its own
//! HTTP/2 connections to litd (`upstream::pool`); everything else (store, cache, limiter,
//! catalogue, Autopilot client, metrics) is shared between them.
//!
//! The first runtime runs on the thread that starts litgate and also serves the admin and
//! relay listeners and the background tasks: they carry little traffic, and a runtime of their
//! own would only add a thread and cross-thread wake-ups. Nothing may block a runtime: disk
//! work goes through the store's blocking pool (`Store::off_worker`), each runtime having its
//! own. This module never builds components itself; `app` does.
//!
//! TLS handshakes are the exception: they run on the runtime that accepted the connection.
//! A full TLS 1.3 handshake (ECDSA P-256) costs litgate about a third of a millisecond of CPU
//! (`openssl s_time -new` against a release build: 3,198 handshakes, 1.08 s of CPU). Moving it
//! to the blocking pool would need an async TLS stream rebuilt from a finished rustls
//! connection, which tokio-rustls does not offer; a hand-written one is not worth that risk.
//! Handshakes are bounded instead (`[listen] handshake_timeout`, the connection limits).

pub(crate) mod config;

use std::{future::Future, sync::Arc};

use tokio::sync::oneshot;

use crate::{
    app::{self, Running, StartError},
    clock::SystemClock,
    config::Config,
};

/// A single-threaded runtime with I/O and timers.
fn new_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Starts litgate on `cfg.runtime.threads` runtimes: the caller's (which must be a runtime
/// that litgate's first thread runs, as [`run`] makes it) and new ones on threads of their own.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    let others = (1..cfg.runtime.threads())
        .map(|_| new_runtime())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Config(format!("runtime.threads: cannot start a runtime: {e}")))?;
    app::launch(cfg, Arc::new(SystemClock), others).await
}

/// Runs `f` on this thread's first runtime: a single-threaded one, like the others.
pub fn block_on<F: Future>(f: F) -> std::io::Result<F::Output> {
    crate::upstream::pool::set_lane(0);
    Ok(new_runtime()?.block_on(f))
}

/// Runs `serve()` on `rt` on a thread of its own, as lane `lane` of the upstream connections.
/// The receiver fires once `serve` has returned (its listener drained).
pub(crate) fn spawn_worker<F, Fut>(
    lane: usize,
    rt: tokio::runtime::Runtime,
    serve: F,
) -> std::io::Result<oneshot::Receiver<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("litgate-rt{lane}"))
        .spawn(move || {
            crate::upstream::pool::set_lane(lane);
            rt.block_on(serve());
            let _ = done.send(());
            // Whatever is left on this runtime (connections to litd, idle tasks) is dropped;
            // blocking work still running gets a moment to finish.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        })?;
    Ok(finished)
}
