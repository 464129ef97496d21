//! The `ledger` tree: every registration that went through the relay, by responder key, with
//! what it showed the Autopilot server (the flags, and the paths of the node identifiers in each
//! feature config: never their values). Entries written by an older litgate lack the newer
//! fields and read with their defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::autopilot::privacy::flags;

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
    /// What the Autopilot server can see in clear through this session, in words: the kinds of
    /// data the flags clear (every kind without the privacy mapper), then any identifier a
    /// config showed it beyond those (a trusted feature's, or one the relay only warned
    /// about). Derived from the fields above whenever an entry is read ([`LedgerEntry::disclosed`]).
    #[serde(default)]
    pub server_sees: Vec<String>,
}

impl LedgerEntry {
    /// What the server can see in clear, from the flags, the mapper and the configs.
    pub fn disclosed(&self) -> Vec<String> {
        let mut out: Vec<String> = flags::seen_in_clear(self.privacy_flags, self.privacy_mapper)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for (feature, sent) in &self.configs {
            let mut kinds: Vec<&str> = sent
                .in_clear
                .iter()
                .filter(|p| p.why == NOT_REPLACED)
                .map(|p| p.kind.as_str())
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            for kind in kinds {
                out.push(format!("{kind} in the {feature} config"));
            }
            if sent.uninspected.is_some() {
                out.push(format!("the {feature} config as written (not inspected)"));
            }
        }
        out
    }

    /// One line per feature config: where its identifiers were, in clear or as pseudonyms
    /// (for `litgate registrations`).
    pub fn config_lines(&self) -> Vec<String> {
        let listed = |paths: &[SentPath]| {
            paths
                .iter()
                .map(|p| match p.why.as_str() {
                    "" => format!("{} ({})", p.path, p.kind),
                    why => format!("{} ({}, {why})", p.path, p.kind),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.configs
            .iter()
            .map(|(feature, sent)| {
                let mut line =
                    format!("{} {feature} config, {} bytes", self.session_id, sent.bytes);
                if sent.trusted {
                    line.push_str(", trusted");
                }
                if let Some(why) = &sent.uninspected {
                    line.push_str(&format!(": sent as written, not inspected ({why})"));
                    return line;
                }
                if sent.in_clear.is_empty() && sent.pseudonyms.is_empty() {
                    line.push_str(": no node identifiers");
                }
                if !sent.in_clear.is_empty() {
                    line.push_str(&format!(": in clear {}", listed(&sent.in_clear)));
                }
                if !sent.pseudonyms.is_empty() {
                    line.push_str(&format!("; pseudonyms {}", listed(&sent.pseudonyms)));
                }
                if sent.unlisted > 0 {
                    line.push_str(&format!("; {} more not listed", sent.unlisted));
                }
                line
            })
            .collect()
    }

    /// An entry as stored, its derived field brought up to date (older entries lack it).
    fn read(bytes: &[u8]) -> Option<LedgerEntry> {
        let mut e: LedgerEntry = serde_json::from_slice(bytes).ok()?;
        e.server_sees = e.disclosed();
        Some(e)
    }
}

/// [`SentPath::why`] for an identifier litd did not replace although the flags keep its kind
/// private.
pub const NOT_REPLACED: &str = "not replaced by litd";

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
        Ok(LedgerEntry::read(&v))
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
            out.extend(LedgerEntry::read(&v));
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

    fn entry(flags: u64, mapper: Option<bool>) -> LedgerEntry {
        LedgerEntry {
            responder_key: "02aa".into(),
            session_id: "aabbccdd".into(),
            group_id: "aabbccdd".into(),
            features: vec!["AutoFees".into()],
            privacy_flags: flags,
            lit_version: "0.17.2".into(),
            lnd_version: "0.19.0".into(),
            registered_at: 1,
            initiator_key: "03bb".into(),
            last_activation: None,
            last_activation_outcome: None,
            revoked_at: None,
            revoked_by: None,
            privacy_mapper: mapper,
            configs: BTreeMap::new(),
            server_sees: Vec::new(),
        }
    }

    fn at(path: &str, kind: &str, why: &str) -> SentPath {
        SentPath {
            path: path.into(),
            kind: kind.into(),
            why: why.into(),
        }
    }

    #[test]
    fn what_the_server_sees_comes_from_flags_mapper_and_leaks() {
        assert_eq!(
            entry(0x0c, Some(true)).disclosed(),
            ["channel IDs", "timestamps"]
        );
        assert!(entry(0, Some(true)).disclosed().is_empty());
        assert_eq!(entry(0, Some(false)).disclosed().len(), flags::CLEARS.len());

        let mut e = entry(0x04, None);
        e.configs.insert(
            "AutoFees".into(),
            ConfigSent {
                in_clear: vec![
                    at("$.chan", "channel_point", "ClearChanIDs"),
                    at("$.a.peer", "pubkey", NOT_REPLACED),
                    at("$.b.peer", "pubkey", NOT_REPLACED),
                ],
                ..Default::default()
            },
        );
        e.configs.insert(
            "Other".into(),
            ConfigSent {
                uninspected: Some("not an object".into()),
                trusted: true,
                ..Default::default()
            },
        );
        assert_eq!(
            e.disclosed(),
            [
                "channel IDs",
                "pubkey in the AutoFees config",
                "the Other config as written (not inspected)"
            ]
        );
        assert_eq!(
            e.config_lines(),
            [
                "aabbccdd AutoFees config, 0 bytes: in clear $.chan (channel_point, \
                 ClearChanIDs), $.a.peer (pubkey, not replaced by litd), $.b.peer (pubkey, not \
                 replaced by litd)",
                "aabbccdd Other config, 0 bytes, trusted: sent as written, not inspected (not an \
                 object)"
            ]
        );
    }

    #[test]
    fn an_old_entry_read_from_the_tree_says_what_its_flags_showed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut old = serde_json::to_value(entry(0x0c, None)).unwrap();
        let fields = old.as_object_mut().unwrap();
        for newer in ["privacy_mapper", "configs", "server_sees"] {
            fields.remove(newer);
        }
        store
            .ledger
            .insert(b"k", serde_json::to_vec(&old).unwrap())
            .unwrap();
        let read = store.ledger_get(b"k").unwrap().unwrap();
        assert_eq!(read.server_sees, ["channel IDs", "timestamps"]);
        assert_eq!(store.ledger().unwrap(), [read]);
    }
}
