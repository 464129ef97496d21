//! Single flight: concurrent misses for one key share one upstream call, made by a spawned
//! task so that a caller hanging up does not cancel it for the others. The entry is stored
//! before the key leaves the in-flight map, so a later miss finds it.

use std::sync::{Arc, PoisonError};

use tokio::sync::watch;

use super::{crypto::CredentialKeys, Accept, Cache, Lookup, Outcome};
use crate::{body::Request, grpc::Protocol};

/// Where the callers sharing one in-flight upstream call wait for its outcome.
pub(super) type Waiter = watch::Receiver<Option<Arc<Outcome>>>;

impl Cache {
    /// The outcome of the one upstream call for `key`: this caller's, or the one already in
    /// flight.
    pub(super) async fn fetch_shared(
        &self,
        key: Vec<u8>,
        keys: Arc<CredentialKeys>,
        protocol: Protocol,
        hard_until: u64,
        req: Request,
    ) -> Arc<Outcome> {
        let mut rx = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match map.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx.clone());
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        // An answer stored just before this task became the leader.
                        let outcome = match inner.lookup_off(&key, &keys, Accept::Fresh).await {
                            Lookup::Fresh(c) => Outcome::Answer(Arc::new(c)),
                            Lookup::OverBudget => Outcome::OverBudget,
                            Lookup::Stale(_) | Lookup::Absent => {
                                inner
                                    .fetch_and_store(&key, &keys, protocol, hard_until, req)
                                    .await
                            }
                        };
                        // Stored before the key leaves the map: a later miss finds the entry.
                        inner
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                        let _ = tx.send(Some(Arc::new(outcome)));
                    });
                    rx
                }
            }
        };
        let shared = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        shared.unwrap_or_else(|| {
            Arc::new(Outcome::Unreachable(
                "the upstream call for this list failed".into(),
            ))
        })
    }
}
