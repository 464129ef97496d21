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

#[cfg(test)]
mod tests {
    use std::{
        io::ErrorKind,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::clock::ManualClock;

    /// Log lines emitted on this thread.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn count(&self, needle: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        }
    }

    #[tokio::test]
    async fn a_store_that_cannot_write_is_not_ready_and_is_logged_once_per_change() {
        let lines = Lines::default();
        let writer = lines.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = ManualClock::new();
        let check = check(store.clone(), Arc::new(clock.clone()));

        assert_eq!(check().await, Ok(()));
        // The disk fills up: not noticed until the next probe is due, then reported.
        store.inject_write_fault(Some(ErrorKind::StorageFull));
        assert_eq!(check().await, Ok(()), "probes are rate-limited");
        clock.advance(PROBE_EVERY);
        for _ in 0..3 {
            let err = check().await.unwrap_err();
            assert!(err.starts_with("cannot write"), "{err}");
            clock.advance(PROBE_EVERY);
        }
        store.inject_write_fault(Some(ErrorKind::ReadOnlyFilesystem));
        assert!(check().await.is_err());
        assert_eq!(lines.count("store: writes fail"), 1, "once per transition");
        assert_eq!(lines.count("writes work again"), 0);

        // Space again: ready, logged once.
        store.inject_write_fault(None);
        clock.advance(PROBE_EVERY);
        for _ in 0..3 {
            assert_eq!(check().await, Ok(()));
            clock.advance(PROBE_EVERY);
        }
        assert_eq!(lines.count("writes work again"), 1);
        assert_eq!(lines.count("store: writes fail"), 1);
    }
}
