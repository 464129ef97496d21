//! `/ready`'s store check: whether the store takes writes, found by writing. A read says
//! nothing about a full or read-only disk (sled serves reads from memory and writes to memory
//! first), so the check writes a small value and flushes it ([`Store::probe_write`]), on the
//! blocking pool, at most once per [`PROBE_EVERY`] however often `/ready` is asked; between
//! probes it reports the last result. A change between working and failing is logged once,
//! when it happens, not on every `/ready`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::Check;
use crate::{clock::SharedClock, store::Store};

/// Least time between two write probes.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The last probe: when, and what it found.
struct Last {
    at: SystemTime,
    result: Result<(), String>,
}

/// The readiness check for `store`, on `clock`.
pub(crate) fn check(store: Store, clock: SharedClock) -> Check {
    let last: Arc<tokio::sync::Mutex<Option<Last>>> = Arc::default();
    Arc::new(move || {
        let (store, clock, last) = (store.clone(), clock.clone(), last.clone());
        Box::pin(async move {
            // One probe at a time; callers meanwhile wait for its result.
            let mut last = last.lock().await;
            let now = clock.now();
            if let Some(l) = last.as_ref() {
                let age = now.duration_since(l.at).unwrap_or_default();
                if age < PROBE_EVERY {
                    return l.result.clone();
                }
            }
            let probe = store.clone();
            let result = tokio::task::spawn_blocking(move || probe.probe_write())
                .await
                .map_err(|e| format!("the store's write probe did not finish: {e}"))
                .and_then(|r| r.map_err(|e| format!("cannot write: {e}")));
            let was_ok = last.as_ref().is_none_or(|l| l.result.is_ok());
            match (&result, was_ok) {
                (Err(e), true) => {
                    tracing::error!(error = %e, "store: writes fail; /ready reports not ready")
                }
                (Ok(()), false) => tracing::info!("store: writes work again"),
                _ => {}
            }
            *last = Some(Last {
                at: now,
                result: result.clone(),
            });
            result
        })
    })
}
