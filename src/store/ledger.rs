//! The `ledger` tree: every registration that went through the relay, by responder key, with
//! what it showed the Autopilot server (the flags, and the paths of the node identifiers in each
//! feature config: never their values). Entries written by an older litgate lack the newer
//! fields and read with their defaults.

use std::collections::BTreeMap;

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
    /// Whether the session has litd's privacy mapper, as the public face approved it; `None`
    /// when litgate did not approve the session (it was created around the public face, and
    /// `RegisterSession` does not say) or the entry predates this field.
    #[serde(default)]
    pub privacy_mapper: Option<bool>,
    /// Per feature name, what its config showed the Autopilot server.
    #[serde(default)]
    pub configs: BTreeMap<String, ConfigSent>,
}

/// What one feature config in a registration showed the Autopilot server: where its node
/// identifiers are and whether the server got them in clear. Paths only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSent {
    /// The config's size in bytes, as sent.
    pub bytes: usize,
    /// Identifiers the server sees as they are.
    #[serde(default)]
    pub in_clear: Vec<SentPath>,
    /// Identifiers litd replaced with pseudonyms before sending.
    #[serde(default)]
    pub pseudonyms: Vec<SentPath>,
    /// Identifiers found beyond the ones listed (lists are bounded).
    #[serde(default)]
    pub unlisted: usize,
    /// The feature is in `[privacy] skip_config_inspection`: recorded, never refused.
    #[serde(default)]
    pub trusted: bool,
    /// Why the config could not be inspected, when it was sent anyway (a trusted feature, or
    /// the relay's check only warns): the server saw it as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninspected: Option<String>,
}

/// Where one identifier sits in a feature config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentPath {
    /// JSONPath-style, e.g. `$.targets[0].peer` (a key that is itself an identifier is shown
    /// by position).
    pub path: String,
    /// `pubkey`, `channel_point`, `channel_id` or `short_channel_id`.
    pub kind: String,
    /// Why it is in clear (the flag that clears it, `no privacy mapper`, or `not replaced by
    /// litd`); empty for a pseudonym.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_written_before_the_privacy_fields_still_read() {
        let old = r#"{"responder_key":"02aa","session_id":"aabbccdd","group_id":"aabbccdd",
            "features":["AutoFees"],"privacy_flags":12,"lit_version":"0.17.2",
            "lnd_version":"0.19.0","registered_at":1,"initiator_key":"03bb",
            "last_activation":null,"last_activation_outcome":null,"revoked_at":null,
            "revoked_by":null}"#;
        let e: LedgerEntry = serde_json::from_str(old).unwrap();
        assert_eq!(e.privacy_flags, 12);
        assert_eq!(e.privacy_mapper, None);
        assert!(e.configs.is_empty());
        // And a new entry round-trips.
        let mut e = e;
        e.privacy_mapper = Some(true);
        e.configs.insert(
            "AutoFees".into(),
            ConfigSent {
                bytes: 80,
                in_clear: vec![SentPath {
                    path: "$.chan".into(),
                    kind: "channel_point".into(),
                    why: "ClearChanIDs".into(),
                }],
                pseudonyms: vec![SentPath {
                    path: "$.peers[0]".into(),
                    kind: "pubkey".into(),
                    why: String::new(),
                }],
                ..Default::default()
            },
        );
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("uninspected"), "{json}");
        assert_eq!(serde_json::from_str::<LedgerEntry>(&json).unwrap(), e);
    }
}
