//! Sealed entries that were hit, also kept in memory: the next hit on one of them is served
//! from the runtime thread (checked and opened exactly as one read from the store), without a
//! trip to the blocking pool and sled. A value is kept only as a lookup read it from the store
//! and opened it, byte for byte, so nothing here is readable without the caller's credential
//! and nothing here was not first read back from the store. Bounded by bytes ([`HOT_BYTES`]
//! at most); the oldest kept entry goes first. The store stays the truth: every write or
//! removal the cache makes there drops the copy here, and a value kept here that no longer
//! passes the lookup's checks sends the lookup to the store.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

/// The most bytes of sealed values kept in memory (bounded further by `cache.max_bytes`).
pub(super) const HOT_BYTES: usize = 8 * 1024 * 1024;

/// Sealed values by key, bounded by bytes, oldest out first.
pub(super) struct Hot {
    budget: usize,
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    values: HashMap<Vec<u8>, (u64, Arc<[u8]>)>,
    /// Keys in the order they were kept, with the stamp they were kept under (a key kept
    /// again, or removed, leaves a stale pair behind that eviction skips).
    order: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    stamp: u64,
}

impl Kept {
    fn take(&mut self, key: &[u8]) {
        if let Some((_, v)) = self.values.remove(key) {
            self.bytes -= key.len() + v.len();
        }
    }
}

impl Hot {
    /// An empty tier holding at most `budget` bytes (keys and values).
    pub(super) fn new(budget: usize) -> Self {
        Hot {
            budget,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sealed value kept for `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.lock().values.get(key).map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `key` (replacing what was kept), dropping the oldest entries to stay
    /// within the budget; a value larger than the whole budget is not kept.
    pub(super) fn put(&self, key: &[u8], value: &[u8]) {
        let size = key.len() + value.len();
        if size > self.budget {
            self.lock().take(key);
            return;
        }
        // Copied before the lock: lookups on the runtimes never wait for the copy.
        let value: Arc<[u8]> = Arc::from(value);
        let mut k = self.lock();
        k.take(key);
        while k.bytes + size > self.budget {
            let Some((old, stamp)) = k.order.pop_front() else {
                break;
            };
            if k.values.get(&old).is_some_and(|(s, _)| *s == stamp) {
                k.take(&old);
            }
        }
        k.stamp += 1;
        let stamp = k.stamp;
        k.values.insert(key.to_vec(), (stamp, value));
        k.order.push_back((key.to_vec(), stamp));
        k.bytes += size;
        // Stale pairs are dropped once they outnumber the live ones.
        if k.order.len() > 2 * k.values.len() + 16 {
            let Kept { values, order, .. } = &mut *k;
            order.retain(|(key, stamp)| values.get(key).is_some_and(|(s, _)| s == stamp));
        }
    }

    /// Forgets `key`.
    pub(super) fn remove(&self, key: &[u8]) {
        self.lock().take(key);
    }

    /// Forgets every key that starts with `prefix` (one credential's entries).
    pub(super) fn remove_prefix(&self, prefix: &[u8]) {
        let mut k = self.lock();
        let gone: Vec<Vec<u8>> = k
            .values
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in gone {
            k.take(&key);
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&self) {
        let mut k = self.lock();
        k.values.clear();
        k.order.clear();
        k.bytes = 0;
    }

    /// Bytes kept (keys and values).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Vec<u8> {
        vec![7u8; n]
    }

    #[test]
    fn the_oldest_go_first_and_the_budget_holds() {
        let hot = Hot::new(100);
        hot.put(b"a", &value(39));
        hot.put(b"b", &value(39));
        assert_eq!(hot.bytes(), 80);
        hot.put(b"c", &value(39));
        assert!(hot.get(b"a").is_none(), "the oldest went");
        assert!(hot.get(b"b").is_some() && hot.get(b"c").is_some());
        assert_eq!(hot.bytes(), 80);
        // Kept again: now the newest, so `c` goes before it.
        hot.put(b"b", &value(39));
        hot.put(b"d", &value(39));
        assert!(hot.get(b"c").is_none());
        assert!(hot.get(b"b").is_some() && hot.get(b"d").is_some());
        assert!(hot.bytes() <= 100);
    }

    #[test]
    fn a_value_over_the_budget_is_not_kept_and_replaces_nothing_stale() {
        let hot = Hot::new(100);
        hot.put(b"a", &value(10));
        hot.put(b"a", &value(200));
        assert!(
            hot.get(b"a").is_none(),
            "the old value is not served for the new one"
        );
        assert_eq!(hot.bytes(), 0);
    }

    #[test]
    fn removals_by_key_prefix_and_all() {
        let hot = Hot::new(1000);
        hot.put(b"c1/list", &value(10));
        hot.put(b"c1/auto", &value(10));
        hot.put(b"c2/list", &value(10));
        hot.remove_prefix(b"c1/");
        assert!(hot.get(b"c1/list").is_none() && hot.get(b"c1/auto").is_none());
        assert!(hot.get(b"c2/list").is_some());
        hot.remove(b"c2/list");
        assert_eq!(hot.bytes(), 0);
        hot.put(b"c3", &value(10));
        hot.clear();
        assert!(hot.get(b"c3").is_none());
        assert_eq!(hot.bytes(), 0);
    }

    #[test]
    fn churn_on_one_key_keeps_the_order_queue_bounded() {
        let hot = Hot::new(1000);
        for _ in 0..10_000 {
            hot.put(b"k", &value(10));
        }
        let kept = hot.lock();
        assert!(kept.order.len() <= 2 * kept.values.len() + 17);
        drop(kept);
        assert_eq!(hot.bytes(), 11);
    }
}
