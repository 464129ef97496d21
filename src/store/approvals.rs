//! The `approvals_v2` and `approvals_by_time` trees: what the AddAutopilotSession policy
//! approved, for the relay to hold `RegisterSession` to, found by the features' prefix and
//! dropped oldest first past their age or count bound.

use std::{sync::atomic::Ordering, time::Duration};

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

/// How long and how many approvals are kept. An approval is only useful for the seconds
/// between the public face's decision and litd's `RegisterSession`; these bounds keep a flood
/// of approved adds from growing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApprovalBounds {
    /// Older approvals are dropped.
    pub max_age: Duration,
    /// Beyond this many, the oldest are dropped.
    pub max_count: usize,
}

/// Names one stored approval (its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalId(Vec<u8>);

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
    /// Records an approval, then drops approvals older than `bounds.max_age` (measured from
    /// this one's `approved_at`) and the oldest beyond `bounds.max_count`; returns its id.
    pub(crate) fn record_approval(
        &self,
        a: &Approval,
        bounds: ApprovalBounds,
    ) -> Result<ApprovalId, StoreError> {
        let id = self.db.generate_id().map_err(|e| self.err(e))?;
        let v = serde_json::to_vec(a).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        let mut key = approval_prefix(&a.features).to_vec();
        key.extend_from_slice(&a.approved_at.to_be_bytes());
        key.extend_from_slice(&id.to_be_bytes());
        self.approvals
            .insert(key.as_slice(), v)
            .map_err(|e| self.err(e))?;
        let old = self
            .approvals_by_time
            .insert(&key[32..], key.as_slice())
            .map_err(|e| self.err(e))?;
        if old.is_none() {
            self.approval_count.fetch_add(1, Ordering::Relaxed);
        }
        let cutoff = a.approved_at.saturating_sub(bounds.max_age.as_secs());
        for kv in self.approvals_by_time.iter() {
            let (time_key, primary) = kv.map_err(|e| self.err(e))?;
            let at = time_key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let over = self.approval_count.load(Ordering::Relaxed) > bounds.max_count;
            if at >= cutoff && !over {
                break;
            }
            self.remove_approval(&ApprovalId(primary.to_vec()))?;
        }
        Ok(ApprovalId(key))
    }

    /// The approvals recorded for exactly these (sorted) feature names at or after
    /// `since` (unix seconds), oldest first. Unreadable records are skipped.
    pub fn approvals_for(
        &self,
        features: &[String],
        since: u64,
    ) -> Result<Vec<(ApprovalId, Approval)>, StoreError> {
        let mut out = Vec::new();
        let prefix = approval_prefix(features);
        let mut from = prefix.to_vec();
        from.extend_from_slice(&since.to_be_bytes());
        for kv in self.approvals.range(from..) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(a) = serde_json::from_slice::<Approval>(&v) {
                if a.features == features {
                    out.push((ApprovalId(k.to_vec()), a));
                }
            }
        }
        Ok(out)
    }

    /// How many approvals are held.
    pub fn approval_count(&self) -> usize {
        self.approval_count.load(Ordering::Relaxed)
    }

    /// Removes an approval (consumed by a registration, or expired).
    pub(crate) fn remove_approval(&self, id: &ApprovalId) -> Result<(), StoreError> {
        self.approvals
            .remove(id.0.as_slice())
            .map_err(|e| self.err(e))?;
        if let Some(time_key) = id.0.get(32..) {
            let removed = self
                .approvals_by_time
                .remove(time_key)
                .map_err(|e| self.err(e))?;
            if removed.is_some() {
                self.approval_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: ApprovalBounds = ApprovalBounds {
        max_age: Duration::from_secs(600),
        max_count: 1000,
    };

    fn approval(features: &[&str], flags: u64, at: u64) -> Approval {
        Approval {
            features: features.iter().map(|f| f.to_string()).collect(),
            privacy_flags: flags,
            privacy: true,
            linked_group_id: String::new(),
            approved_at: at,
        }
    }

    #[test]
    fn approvals_are_found_by_features_and_expire_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.record_approval(&approval(&["AutoFees"], 4, 100), BOUNDS)
            .unwrap();
        s.record_approval(&approval(&["AutoFees", "HealthCheck"], 5, 100), BOUNDS)
            .unwrap();
        let fees = ["AutoFees".to_string()];
        assert_eq!(s.approvals_for(&fees, 0).unwrap().len(), 1);
        assert_eq!(s.approvals_for(&fees, 101).unwrap().len(), 0, "since");
        // A later approval past the age bound drops both earlier ones.
        s.record_approval(&approval(&["HealthCheck"], 0, 100 + 601), BOUNDS)
            .unwrap();
        assert!(s.approvals_for(&fees, 0).unwrap().is_empty());
        assert_eq!(s.approval_count(), 1);
        let (id, _) = s
            .approvals_for(&["HealthCheck".to_string()], 0)
            .unwrap()
            .remove(0);
        s.remove_approval(&id).unwrap();
        assert_eq!(s.approval_count(), 0);
        assert!(s.approvals_by_time.is_empty() && s.approvals.is_empty());
    }

    #[test]
    fn a_hundred_thousand_approvals_leave_bounded_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 0..100_000u64 {
            // All within the age bound: only the count bound holds them in.
            let name = format!("F{}", i % 7);
            s.record_approval(&approval(&[name.as_str()], i, 1_000 + i / 1000), BOUNDS)
                .unwrap();
        }
        assert_eq!(s.approval_count(), BOUNDS.max_count);
        assert_eq!(s.approvals.len(), BOUNDS.max_count);
        assert_eq!(s.approvals_by_time.len(), BOUNDS.max_count);
        // The newest are the ones kept.
        let kept = s.approvals_for(&["F0".to_string()], 0).unwrap();
        assert!(
            kept.iter().all(|(_, a)| a.privacy_flags >= 99_000),
            "oldest dropped first"
        );
    }
}
