//! The `ledger` tree: every registration that went through the relay, by responder key.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One registration that went through the relay. Holds public keys and metadata only: no
/// pairing secret, no macaroon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The session's local public key (hex): `responder_pub_key`.
    pub responder_key: String,
    /// The session id litd derives from the key (hex of bytes 1..5).
    pub session_id: String,
    /// The group id (hex): the first session's id for linked sessions, else `session_id`.
    pub group_id: String,
    /// Feature names, sorted.
    pub features: Vec<String>,
    /// The privacy flags registered.
    pub privacy_flags: u64,
    /// litd's version, `major.minor.patch`.
    pub lit_version: String,
    /// lnd's version, `major.minor.patch`.
    pub lnd_version: String,
    /// Unix seconds of the registration.
    pub registered_at: u64,
    /// The server's initiator key (hex).
    pub initiator_key: String,
    /// Unix seconds of the last ActivateSession, if any.
    pub last_activation: Option<u64>,
    /// `ok` or the server's error for the last ActivateSession.
    pub last_activation_outcome: Option<String>,
    /// Unix seconds when revoked at the server (by litd or by reconciliation).
    pub revoked_at: Option<u64>,
    /// Who revoked: `litd` or `reconciliation`.
    pub revoked_by: Option<String>,
}

impl Store {
    /// The ledger entry for a responder key.
    pub(crate) fn ledger_get(
        &self,
        responder_key: &[u8],
    ) -> Result<Option<LedgerEntry>, StoreError> {
        let Some(v) = self.ledger.get(responder_key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&v).ok())
    }

    /// Writes a ledger entry, durably (the ledger must survive a crash right after).
    pub(crate) fn ledger_put(
        &self,
        responder_key: &[u8],
        entry: &LedgerEntry,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_vec(entry).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        self.ledger
            .insert(responder_key, v)
            .map_err(|e| self.err(e))?;
        self.ledger.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Every ledger entry, by responder key.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ledger.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }
}
