//! The macaroon identifiers litd has accepted: a bounded set, oldest acceptance evicted first,
//! shared by every clone of the limiter and by the response bodies that are still waiting for
//! their status. It holds copies of identifiers only, never a signature.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, PoisonError, RwLock},
};

use bytes::Bytes;

/// Macaroon identifiers litd has accepted, bounded; the oldest acceptance is evicted first.
#[derive(Debug, Default)]
struct Identities {
    cap: usize,
    set: HashSet<Bytes>,
    order: VecDeque<Bytes>,
}

impl Identities {
    fn get(&self, id: &[u8]) -> Option<Bytes> {
        self.set.get(id).cloned()
    }

    fn insert(&mut self, id: &[u8]) {
        if self.cap == 0 || self.set.contains(id) {
            return;
        }
        while self.set.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.set.remove(&old);
                }
                None => break,
            }
        }
        // A copy: the request's buffer also holds the signature, which must not outlive it.
        let id = Bytes::copy_from_slice(id);
        self.set.insert(id.clone());
        self.order.push_back(id);
    }
}

/// Shared handle to the accepted set, held by response bodies until their trailers arrive.
#[derive(Debug, Clone)]
pub(super) struct Accepted(Arc<RwLock<Identities>>);

impl Accepted {
    /// An empty set holding at most `cap` identifiers.
    pub(super) fn new(cap: usize) -> Self {
        Accepted(Arc::new(RwLock::new(Identities {
            cap,
            ..Default::default()
        })))
    }

    pub(super) fn get(&self, id: &[u8]) -> Option<Bytes> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
    }

    pub(super) fn insert(&self, id: &[u8]) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    pub(super) fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .set
            .len()
    }
}
