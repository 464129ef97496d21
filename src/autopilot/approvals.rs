//! The approvals index: what the AddAutopilotSession policy approved, held in memory for the
//! relay to hold litd's `RegisterSession` to, and written to the store in the background.
//!
//! One [`Approvals`] value per process is shared by the public face's handler (which records,
//! when the relay is on: the relay is the only reader) and the relay (which looks up and
//! consumes), so the relay finds an approval recorded a
//! moment earlier without waiting for the disk. The index keeps the bounds
//! ([`ApprovalBounds`]: age and count, oldest dropped first) and remembers each change for
//! the store; a background task writes the changes of the last [`WRITE_COALESCE`] in one trip
//! to the blocking pool, and the shutdown writes what is left. At start-up the stored
//! approvals are loaded (on the blocking pool), so an approval recorded before a restart is
//! still found. Nothing here touches sled on an async worker, and a failed write never fails
//! a call: it is logged and counted (`approval_write_failures`), and the approvals it carried
//! stay in memory for this process.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::{sync::Notify, task::JoinHandle};

use crate::store::{Approval, ApprovalBounds, ApprovalId, Store, StoreError};

/// How long the writer waits for more changes before it writes them: one blocking-pool trip
/// for every change of that time, and an approval the relay consumes within it never reaches
/// the disk at all. A crash loses at most the changes of this time plus sled's own flush
/// interval (half a second), which bounds what any write survives anyway; the approvals only
/// matter for the seconds until litd registers.
pub(crate) const WRITE_COALESCE: Duration = Duration::from_millis(100);

/// The approvals index. Cheap to clone; every clone is the same index.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("held", &self.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    bounds: ApprovalBounds,
    index: Mutex<Index>,
    /// Held while changes are taken and written, so that batches reach the store in order and
    /// the shutdown's write waits for one in flight.
    writing: Mutex<()>,
    /// Wakes the background writer when the first change of a batch is recorded.
    wanted: Arc<Notify>,
    write_failures: Counter,
}

#[derive(Default)]
struct Index {
    by_id: BTreeMap<ApprovalId, Arc<Approval>>,
    /// (approved_at, sequence) → id: oldest first, for the bounds.
    by_time: BTreeMap<(u64, u64), ApprovalId>,
    next_seq: u64,
    /// What the store has not seen yet: the latest state of each changed id (`None`: removed),
    /// in key order (sled writes neighbouring keys into the same pages).
    unwritten: BTreeMap<ApprovalId, Option<Arc<Approval>>>,
}

impl Index {
    fn insert(&mut self, id: ApprovalId, a: Approval) {
        let a = Arc::new(a);
        self.by_time.insert((id.at(), id.seq()), id);
        self.unwritten.insert(id, Some(a.clone()));
        self.by_id.insert(id, a);
    }

    fn remove(&mut self, id: &ApprovalId) -> bool {
        let held = self.by_id.remove(id).is_some();
        if held {
            self.by_time.remove(&(id.at(), id.seq()));
            // An approval the store has not seen yet needs no removal there (ids are never
            // reused); so the unwritten changes stay within about twice the count bound.
            if !matches!(self.unwritten.remove(id), Some(Some(_))) {
                self.unwritten.insert(*id, None);
            }
        }
        held
    }

    /// Drops approvals older than `cutoff` (unix seconds) and the oldest beyond `max_count`.
    fn enforce(&mut self, cutoff: u64, max_count: usize) {
        while let Some((&(at, _), &id)) = self.by_time.first_key_value() {
            if at >= cutoff && self.by_time.len() <= max_count {
                break;
            }
            self.remove(&id);
        }
    }
}

impl Approvals {
    /// Loads the stored approvals (on the blocking pool), drops those past `bounds` at
    /// `now_secs` (unix seconds), and returns the index holding the rest.
    pub(crate) async fn load(
        store: Store,
        bounds: ApprovalBounds,
        now_secs: u64,
    ) -> Result<Approvals, StoreError> {
        let loader = store.clone();
        let stored = store.off_worker(move |_| loader.load_approvals()).await?;
        let mut index = Index::default();
        for (id, a) in stored {
            index.next_seq = index.next_seq.max(id.seq().saturating_add(1));
            index.by_time.insert((id.at(), id.seq()), id);
            index.by_id.insert(id, Arc::new(a));
        }
        index.enforce(
            now_secs.saturating_sub(bounds.max_age.as_secs()),
            bounds.max_count,
        );
        let approvals = Approvals {
            inner: Arc::new(Inner {
                store,
                bounds,
                index: Mutex::new(index),
                writing: Mutex::new(()),
                wanted: Arc::new(Notify::new()),
                write_failures: Counter::default(),
            }),
        };
        // Removals made by the bounds above go with the first batch.
        approvals.inner.wanted.notify_one();
        Ok(approvals)
    }

    /// Registers the index's metrics.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "approval_write_failures",
            "Background writes of approvals to the store that failed (logged; the approvals stay in memory for this process)",
            self.inner.write_failures.clone(),
        );
    }

    /// Records an approval, then drops approvals older than the age bound (measured from this
    /// one's `approved_at`) and the oldest beyond the count bound; returns its id. In memory:
    /// the store gets it from the background writer.
    pub fn record(&self, a: Approval) -> ApprovalId {
        let inner = &self.inner;
        let mut index = inner.lock_index();
        let first_change = index.unwritten.is_empty();
        let id = ApprovalId::new(&a.features, a.approved_at, index.next_seq);
        index.next_seq += 1;
        let cutoff = a.approved_at.saturating_sub(inner.bounds.max_age.as_secs());
        index.insert(id, a);
        index.enforce(cutoff, inner.bounds.max_count);
        drop(index);
        if first_change {
            inner.wanted.notify_one();
        }
        id
    }

    /// The approvals recorded for exactly these (sorted) feature names at or after `since`
    /// (unix seconds), oldest first.
    pub fn approvals_for(&self, features: &[String], since: u64) -> Vec<(ApprovalId, Approval)> {
        let first = ApprovalId::first(features, since);
        let last = ApprovalId::last_of(&first);
        self.inner
            .lock_index()
            .by_id
            .range(first..=last)
            .filter(|(_, a)| a.features == features)
            .map(|(id, a)| (*id, Approval::clone(a)))
            .collect()
    }

    /// Removes an approval (consumed by a registration); false if it was not held.
    pub fn remove(&self, id: &ApprovalId) -> bool {
        let mut index = self.inner.lock_index();
        let first_change = index.unwritten.is_empty();
        let removed = index.remove(id);
        drop(index);
        if removed && first_change {
            self.inner.wanted.notify_one();
        }
        removed
    }

    /// How many approvals are held.
    pub fn len(&self) -> usize {
        self.inner.lock_index().by_id.len()
    }

    /// True when no approval is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the background writer (on the caller's runtime); it ends when it wakes to find
    /// the index gone, or when aborted (then [`Approvals::write_now`] writes the rest).
    pub(crate) fn spawn_writer(&self) -> JoinHandle<()> {
        tokio::spawn(write_in_background(
            Arc::downgrade(&self.inner),
            self.inner.wanted.clone(),
        ))
    }

    /// Writes every change not yet in the store, now, waiting for a write in flight first
    /// (shutdown). On the blocking pool.
    pub async fn write_now(&self) {
        let inner = self.inner.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || inner.write_unwritten()).await {
            tracing::warn!(error = %e, "approvals: the final write did not finish");
        }
    }
}

/// Writes the index's changes to the store, coalesced, until the index is gone.
async fn write_in_background(inner: Weak<Inner>, wanted: Arc<Notify>) {
    loop {
        // A wake-up stays stored when no one waits, so none is lost between rounds.
        wanted.notified().await;
        tokio::time::sleep(WRITE_COALESCE).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = tokio::task::spawn_blocking(move || inner.write_unwritten()).await {
            tracing::warn!(error = %e, "approvals: a background write did not finish");
        }
    }
}

impl Inner {
    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        // The index is consistent after every statement that can panic (none do).
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the unwritten changes and writes them (blocking: on the blocking pool).
    fn write_unwritten(&self) {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = std::mem::take(&mut self.lock_index().unwritten);
        if changes.is_empty() {
            return;
        }
        let written = self
            .store
            .write_approvals(changes.iter().map(|(id, a)| (id, a.as_deref())));
        if let Err(e) = written {
            // Not retried: the approvals are minutes-lived and still held in memory; only a
            // restart before they are used would miss them.
            self.write_failures.inc();
            tracing::error!(
                error = %e,
                changes = changes.len(),
                "approvals: could not write to the store; they are kept in memory only",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: ApprovalBounds = ApprovalBounds {
        max_age: Duration::from_secs(600),
        max_count: 1000,
    };

    fn names(features: &[&str]) -> Vec<String> {
        features.iter().map(|f| f.to_string()).collect()
    }

    async fn open(dir: &std::path::Path, now: u64) -> (Store, Approvals) {
        let store = Store::open(dir).unwrap();
        let approvals = Approvals::load(store.clone(), BOUNDS, now).await.unwrap();
        (store, approvals)
    }

    #[tokio::test]
    async fn a_recorded_approval_is_found_at_once_and_reaches_the_store_later() {
        let dir = tempfile::tempdir().unwrap();
        let (store, approvals) = open(dir.path(), 100).await;
        let id = approvals.record(Approval::sample(&["AutoFees"], 4, 100));
        approvals.record(Approval::sample(&["AutoFees", "HealthCheck"], 5, 100));
        // No writer runs: the store has nothing, the index has both.
        assert!(store.load_approvals().unwrap().is_empty());
        let fees = names(&["AutoFees"]);
        let found = approvals.approvals_for(&fees, 0);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.privacy_flags), (id, 4));
        assert!(approvals.approvals_for(&fees, 101).is_empty(), "since");
        assert!(approvals
            .approvals_for(&names(&["HealthCheck"]), 0)
            .is_empty());

        approvals.write_now().await;
        assert_eq!(store.load_approvals().unwrap().len(), 2);
        assert!(approvals.remove(&id));
        assert!(!approvals.remove(&id), "consumed once");
        approvals.write_now().await;
        let stored = store.load_approvals().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1.features, ["AutoFees", "HealthCheck"]);
    }

    #[tokio::test]
    async fn an_approval_consumed_before_the_write_never_reaches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, approvals) = open(dir.path(), 100).await;
        let id = approvals.record(Approval::sample(&["AutoFees"], 4, 100));
        assert!(approvals.remove(&id));
        assert!(approvals.inner.lock_index().unwritten.is_empty());
        // Even a failing store is not asked to write anything.
        store.inject_write_fault(Some(std::io::ErrorKind::StorageFull));
        approvals.write_now().await;
        assert_eq!(approvals.inner.write_failures.get(), 0);
        store.inject_write_fault(None);
        assert!(store.load_approvals().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_background_writer_writes_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let (store, approvals) = open(dir.path(), 100).await;
        let writer = approvals.spawn_writer();
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(approvals.record(Approval::sample(&["AutoFees"], i, 100)));
        }
        for id in &ids[..20] {
            approvals.remove(id);
        }
        let mut stored = 0;
        for _ in 0..400 {
            stored = store.load_approvals().unwrap().len();
            if stored == 30 && approvals.inner.lock_index().unwritten.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stored, 30);
        writer.abort();
    }

    #[tokio::test]
    async fn approvals_survive_a_restart_and_the_bounds_apply_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let kept = {
            let (store, approvals) = open(dir.path(), 100).await;
            approvals.record(Approval::sample(&["AutoFees"], 4, 100));
            let kept = approvals.record(Approval::sample(&["HealthCheck"], 0, 700));
            approvals.write_now().await;
            store.flush().unwrap();
            kept
        };
        // Ten minutes after the first: it is past the age bound, the second is not.
        let (store, approvals) = open(dir.path(), 701).await;
        assert_eq!(approvals.len(), 1);
        assert!(approvals.approvals_for(&names(&["AutoFees"]), 0).is_empty());
        let found = approvals.approvals_for(&names(&["HealthCheck"]), 0);
        assert_eq!(found[0].0, kept);
        // New ids never collide with loaded ones.
        let next = approvals.record(Approval::sample(&["HealthCheck"], 0, 700));
        assert!(next.seq() > kept.seq());
        // The removal made at load reaches the store too.
        approvals.write_now().await;
        assert_eq!(store.load_approvals().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_bounds_hold_in_memory_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, approvals) = open(dir.path(), 1_000).await;
        for i in 0..20_000u64 {
            // All within the age bound: only the count bound holds them in.
            let name = format!("F{}", i % 7);
            approvals.record(Approval::sample(&[name.as_str()], i, 1_000 + i / 1000));
        }
        assert_eq!(approvals.len(), BOUNDS.max_count);
        let kept = approvals.approvals_for(&names(&["F0"]), 0);
        assert!(
            kept.iter().all(|(_, a)| a.privacy_flags >= 19_000),
            "oldest dropped first"
        );
        {
            let index = approvals.inner.lock_index();
            assert_eq!(index.by_time.len(), BOUNDS.max_count);
            // Never written, then dropped: nothing for the store to do about them.
            assert_eq!(index.unwritten.len(), BOUNDS.max_count);
        }
        approvals.write_now().await;
        assert_eq!(store.load_approvals().unwrap().len(), BOUNDS.max_count);
        // A later approval past the age bound drops every earlier one, in the store as well.
        approvals.record(Approval::sample(&["F1"], 1, 1_020 + 601));
        assert_eq!(approvals.len(), 1);
        approvals.write_now().await;
        assert_eq!(store.load_approvals().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_write_is_counted_and_the_approval_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, approvals) = open(dir.path(), 100).await;
        let mut registry = Registry::default();
        approvals.register(&mut registry);
        store.inject_write_fault(Some(std::io::ErrorKind::StorageFull));
        approvals.record(Approval::sample(&["AutoFees"], 4, 100));
        approvals.write_now().await;
        assert_eq!(approvals.inner.write_failures.get(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("approval_write_failures_total 1"), "{text}");
        assert_eq!(approvals.approvals_for(&names(&["AutoFees"]), 0).len(), 1);
        assert!(store.load_approvals().unwrap().is_empty());
        // The disk back: later changes are written again.
        store.inject_write_fault(None);
        approvals.record(Approval::sample(&["HealthCheck"], 0, 100));
        approvals.write_now().await;
        assert_eq!(store.load_approvals().unwrap().len(), 1);
        assert_eq!(approvals.inner.write_failures.get(), 1);
    }
}
