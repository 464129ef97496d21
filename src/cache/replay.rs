//! The memory that answers being replayed hold, bounded (`cache.max_replay_bytes`). A cached
//! answer is a secret in clear from the moment it is opened (or read from litd) until the last
//! byte of it has left litgate, and a caller that stops reading keeps it that long. So:
//!
//! - **One plaintext per entry while it is replayed.** Concurrent hits of one entry share the
//!   buffer the first of them opened (the entry's key, clear header, nonce and tag must match,
//!   so a rewritten entry is opened afresh); it is zeroed and released when the last replay of it
//!   ends, wherever its bytes are at that moment (the response body, the HTTP/2 send queue).
//! - **A global budget.** Every such buffer, and every answer from litd replayed to the callers
//!   who waited for it, is charged to the budget for as long as any of its bytes are alive.
//!   A call that would go beyond it is not answered from the cache: it is passed through to
//!   litd, whose answer streams under HTTP/2 flow control and costs no cache memory.
//!
//! Nothing here reads, logs or counts the bytes themselves: only their number.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
};

use bytes::Bytes;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use zeroize::{Zeroize, Zeroizing};

/// The replay budget and the plaintexts being replayed.
#[derive(Debug)]
pub(super) struct Replays {
    max_bytes: usize,
    used: AtomicUsize,
    live: Mutex<HashMap<Vec<u8>, Live>>,
    bytes_gauge: Gauge,
    overflows: Counter,
    shared: Counter,
}

/// The plaintext being replayed for one cache key, and which sealed value it came from.
#[derive(Debug)]
struct Live {
    sealed_by: Vec<u8>,
    plain: Weak<Plain>,
}

/// Bytes charged to the budget, released when dropped.
#[derive(Debug)]
pub(super) struct Charge {
    replays: Arc<Replays>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.replays.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.replays.bytes_gauge.dec_by(self.bytes as i64);
    }
}

/// An opened entry's plaintext, zeroed when the last reference to it goes.
#[derive(Debug)]
struct Plain {
    bytes: Zeroizing<Vec<u8>>,
    key: Vec<u8>,
    charge: Charge,
}

impl Drop for Plain {
    fn drop(&mut self) {
        // Forget this buffer in the live map, unless a newer one has replaced it there.
        let me: *const Plain = self;
        let mut live = self
            .charge
            .replays
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if live
            .get(&self.key)
            .is_some_and(|l| std::ptr::eq(l.plain.as_ptr(), me))
        {
            live.remove(&self.key);
        }
    }
}

/// A `Bytes` owner over a shared plaintext.
struct SharedPlain(Arc<Plain>);

impl AsRef<[u8]> for SharedPlain {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes.as_slice()
    }
}

/// A `Bytes` owner over an answer read from litd, charged while it lives and zeroed after
/// when nothing else holds it.
struct ChargedAnswer {
    bytes: Bytes,
    _charge: Charge,
}

impl AsRef<[u8]> for ChargedAnswer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for ChargedAnswer {
    fn drop(&mut self) {
        if let Ok(mut only) = std::mem::take(&mut self.bytes).try_into_mut() {
            only.as_mut().zeroize();
        }
    }
}

impl Replays {
    /// A budget of `max_bytes`, reporting into `bytes_gauge` (bytes held now), `overflows`
    /// (calls passed through because the budget was spent) and `shared` (hits that joined a
    /// replay of the same entry instead of opening it again).
    pub(super) fn new(
        max_bytes: usize,
        bytes_gauge: Gauge,
        overflows: Counter,
        shared: Counter,
    ) -> Arc<Self> {
        Arc::new(Replays {
            max_bytes,
            used: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            bytes_gauge,
            overflows,
            shared,
        })
    }

    /// Charges `bytes` to the budget, or `None` (counted) when they do not fit.
    pub(super) fn charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.max_bytes)
            })
            .is_ok();
        if !fits {
            self.overflows.inc();
            return None;
        }
        self.bytes_gauge.inc_by(bytes as i64);
        Some(Charge {
            replays: self.clone(),
            bytes,
        })
    }

    /// Whether nothing more fits (a miss would read an answer it could not replay).
    pub(super) fn spent(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.max_bytes
    }

    /// The plaintext being replayed for `key`, if it was opened from the sealed value that
    /// `sealed_by` names (its header, nonce and tag).
    pub(super) fn shared(&self, key: &[u8], sealed_by: &[u8]) -> Option<Bytes> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let l = live.get(key).filter(|l| l.sealed_by == sealed_by)?;
        let plain = l.plain.upgrade()?;
        drop(live);
        self.shared.inc();
        Some(Bytes::from_owner(SharedPlain(plain)))
    }

    /// Makes `plain` (opened from the value `sealed_by` names, under `charge`) the plaintext
    /// later hits of `key` share while it lives.
    pub(super) fn publish(
        &self,
        key: &[u8],
        sealed_by: &[u8],
        plain: Zeroizing<Vec<u8>>,
        charge: Charge,
    ) -> Bytes {
        let plain = Arc::new(Plain {
            bytes: plain,
            key: key.to_vec(),
            charge,
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key.to_vec(),
                Live {
                    sealed_by: sealed_by.to_vec(),
                    plain: Arc::downgrade(&plain),
                },
            );
        Bytes::from_owner(SharedPlain(plain))
    }

    /// `body` (an answer read from litd), charged to the budget while any of it lives; `None`
    /// (counted) when it does not fit.
    pub(super) fn charged(self: &Arc<Self>, body: Bytes) -> Option<Bytes> {
        let charge = self.charge(body.len())?;
        Some(Bytes::from_owner(ChargedAnswer {
            bytes: body,
            _charge: charge,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replays(max: usize) -> Arc<Replays> {
        Replays::new(
            max,
            Gauge::default(),
            Counter::default(),
            Counter::default(),
        )
    }

    #[test]
    fn charges_are_released_when_the_last_slice_goes() {
        let r = replays(100);
        let c = r.charge(60).unwrap();
        assert!(r.charge(41).is_none(), "60 + 41 is over 100");
        assert_eq!(r.overflows.get(), 1);
        let shared = r.publish(b"k", b"v1", Zeroizing::new(vec![7u8; 60]), c);
        let slice = shared.slice(10..20);
        drop(shared);
        assert_eq!(r.bytes_gauge.get(), 60, "a slice keeps the buffer charged");
        let again = r.shared(b"k", b"v1").unwrap();
        assert_eq!(r.bytes_gauge.get(), 60, "sharing costs nothing more");
        assert!(
            r.shared(b"k", b"v2").is_none(),
            "another sealed value is opened afresh"
        );
        assert!(r.shared(b"other", b"v1").is_none());
        drop((slice, again));
        assert_eq!(r.bytes_gauge.get(), 0);
        assert_eq!(r.used.load(Ordering::Acquire), 0);
        assert!(r.shared(b"k", b"v1").is_none());
        assert!(
            r.live.lock().unwrap().is_empty(),
            "a dead buffer leaves the map"
        );
        assert!(r.charge(100).is_some());
    }

    #[test]
    fn an_answer_from_litd_is_charged_while_it_lives() {
        let r = replays(10);
        let body = r.charged(Bytes::from(vec![1u8; 8])).unwrap();
        assert!(r.charged(Bytes::from(vec![1u8; 8])).is_none());
        assert_eq!(r.used.load(Ordering::Acquire), 8);
        assert!(!r.spent());
        let half = body.slice(..4);
        drop(body);
        assert_eq!(r.bytes_gauge.get(), 8);
        drop(half);
        assert_eq!(r.bytes_gauge.get(), 0);
    }
}
