//! The `approvals_v2` and `approvals_by_time` trees: the durable copy of what the
//! AddAutopilotSession policy approved. The live index is in memory
//! (`crate::autopilot::approvals`), which decides what is kept and writes its changes here in
//! batches, off the answer path; this module only stores and loads them.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// What the AddAutopilotSession policy approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The requested feature names, sorted.
    pub features: Vec<String>,
    /// The privacy flags written into the request.
    pub privacy_flags: u64,
    /// Whether the privacy mapper is on for the session.
    pub privacy: bool,
    /// Linked group id, hex, if any.
    pub linked_group_id: String,
    /// Unix seconds of the approval.
    pub approved_at: u64,
}

#[cfg(test)]
impl Approval {
    /// An approval of `features` with the privacy mapper on and `flags`, at unix second `at`.
    pub(crate) fn sample(features: &[&str], flags: u64, at: u64) -> Approval {
        Approval {
            features: features.iter().map(|f| f.to_string()).collect(),
            privacy_flags: flags,
            privacy: true,
            linked_group_id: String::new(),
            approved_at: at,
        }
    }
}

/// How long and how many approvals are kept. An approval is only useful for the seconds
/// between the public face's decision and litd's `RegisterSession`; these bounds keep a flood
/// of approved adds from growing memory or the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApprovalBounds {
    /// Older approvals are dropped.
    pub max_age: std::time::Duration,
    /// Beyond this many, the oldest are dropped.
    pub max_count: usize,
}

/// Names one approval: the features' prefix, when it was approved, and a sequence number that
/// is unique in the store. Ordered as its key is (prefix, then time, then sequence), so the
/// approvals of one feature set are adjacent and oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApprovalId {
    prefix: [u8; 32],
    at: u64,
    seq: u64,
}

/// Bytes of a stored approval's key: prefix ‖ approved_at (u64 BE) ‖ sequence (u64 BE).
const KEY_LEN: usize = 48;

impl ApprovalId {
    /// The id of approval number `seq` for `features` (sorted) at `at` (unix seconds).
    pub(crate) fn new(features: &[String], at: u64, seq: u64) -> Self {
        ApprovalId {
            prefix: approval_prefix(features),
            at,
            seq,
        }
    }

    /// The first id a feature set can have at or after `at`.
    pub(crate) fn first(features: &[String], at: u64) -> Self {
        Self::new(features, at, 0)
    }

    /// The last id a feature set can have.
    pub(crate) fn last_of(first: &ApprovalId) -> Self {
        ApprovalId {
            prefix: first.prefix,
            at: u64::MAX,
            seq: u64::MAX,
        }
    }

    /// Unix seconds of the approval.
    pub(crate) fn at(&self) -> u64 {
        self.at
    }

    /// The sequence number (unique in the store).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    fn key(&self) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k[..32].copy_from_slice(&self.prefix);
        k[32..40].copy_from_slice(&self.at.to_be_bytes());
        k[40..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    fn from_key(k: &[u8]) -> Option<Self> {
        let k: &[u8; KEY_LEN] = k.try_into().ok()?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&k[..32]);
        Some(ApprovalId {
            prefix,
            at: word(32),
            seq: word(40),
        })
    }
}

/// The approvals index prefix of a feature set: SHA-256 over the sorted names, each ended by a
/// NUL (names are not trusted to be free of any separator).
fn approval_prefix(features: &[String]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in features {
        h.update(f.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

impl Store {
    /// Writes approval changes: `Some` stores the approval under its id, `None` removes it
    /// (absent is fine). Waits on sled: call it off the async workers. Fails as a write probe
    /// does while a write fault is injected.
    pub(crate) fn write_approvals<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a ApprovalId, Option<&'a Approval>)>,
    ) -> Result<(), StoreError> {
        if let Some(kind) = self.injected_write_fault() {
            return Err(self.err(sled::Error::Io(std::io::Error::new(
                kind,
                "injected write failure",
            ))));
        }
        // Plain inserts, not `apply_batch`: a sled batch seals the log buffer and writes it out
        // at once, which costs a disk write per batch; these land in the buffer and reach the
        // disk with sled's periodic flush, as every other write does.
        for (id, change) in changes {
            let key = id.key();
            match change {
                Some(a) => {
                    let v = serde_json::to_vec(a).map_err(|e| StoreError::Io {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })?;
                    self.approvals
                        .insert(&key[..], v)
                        .map_err(|e| self.err(e))?;
                    self.approvals_by_time
                        .insert(&key[32..], &key[..])
                        .map_err(|e| self.err(e))?;
                }
                None => {
                    self.approvals.remove(&key[..]).map_err(|e| self.err(e))?;
                    self.approvals_by_time
                        .remove(&key[32..])
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(())
    }

    /// Every stored approval, in key order. Records that cannot be read (a key or value of
    /// another layout) are removed. Reads the whole tree: at start-up, off the async workers.
    pub(crate) fn load_approvals(&self) -> Result<Vec<(ApprovalId, Approval)>, StoreError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for kv in self.approvals.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            match (
                ApprovalId::from_key(&k),
                serde_json::from_slice::<Approval>(&v),
            ) {
                (Some(id), Ok(a)) if id == ApprovalId::new(&a.features, id.at, id.seq) => {
                    out.push((id, a))
                }
                _ => unreadable.push(k),
            }
        }
        for k in unreadable {
            self.approvals.remove(&k).map_err(|e| self.err(e))?;
            if let Some(time_key) = k.get(32..) {
                self.approvals_by_time
                    .remove(time_key)
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_approvals_load_back_and_removals_stick() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = Approval::sample(&["AutoFees"], 4, 100);
        let b = Approval::sample(&["AutoFees", "HealthCheck"], 5, 100);
        let ia = ApprovalId::new(&a.features, 100, 1);
        let ib = ApprovalId::new(&b.features, 100, 2);
        s.write_approvals([(&ia, Some(&a)), (&ib, Some(&b))])
            .unwrap();
        let mut loaded = s.load_approvals().unwrap();
        loaded.sort_by_key(|(id, _)| id.seq());
        assert_eq!(loaded, vec![(ia, a.clone()), (ib, b)]);
        // Removing twice, or an id never stored, is fine.
        let never = ApprovalId::new(&a.features, 7, 9);
        s.write_approvals([(&ib, None), (&ib, None), (&never, None)])
            .unwrap();
        assert_eq!(s.load_approvals().unwrap(), vec![(ia, a)]);
        assert_eq!(s.approvals.len(), 1);
        assert_eq!(s.approvals_by_time.len(), 1);
    }

    #[test]
    fn unreadable_records_are_dropped_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = Approval::sample(&["AutoFees"], 4, 100);
        let id = ApprovalId::new(&a.features, 100, 1);
        s.write_approvals([(&id, Some(&a))]).unwrap();
        s.approvals.insert(b"short key", b"{}".to_vec()).unwrap();
        // A record filed under another feature set's prefix is not believed.
        let wrong = ApprovalId::new(&["HealthCheck".to_string()], 100, 2);
        s.approvals
            .insert(&wrong.key()[..], serde_json::to_vec(&a).unwrap())
            .unwrap();
        assert_eq!(s.load_approvals().unwrap(), vec![(id, a)]);
        assert_eq!(s.approvals.len(), 1);
    }

    #[test]
    fn ids_order_as_their_keys() {
        let f = ["AutoFees".to_string()];
        let ids = [
            ApprovalId::new(&f, 1, 9),
            ApprovalId::new(&f, 2, 1),
            ApprovalId::new(&f, 2, 3),
        ];
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].key() < w[1].key());
        }
        for id in ids {
            assert_eq!(ApprovalId::from_key(&id.key()), Some(id));
            assert!(ApprovalId::first(&f, 0) <= id && id <= ApprovalId::last_of(&id));
        }
    }
}
