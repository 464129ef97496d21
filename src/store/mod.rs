//! The store: litgate's only persistent state, a sled database under `store.data_dir/db`.
//! This is the only module that imports `sled`; everything else uses the typed methods below.
//!
//! Layout (schema version [`SCHEMA_VERSION`]): named trees
//! - `meta`: `schema` → version (u32, big-endian); `cache_salt` → 32 random bytes, the HKDF
//!   salt of the session cache; `cache_generation` → u64 BE, bumped (durably) by every session
//!   write so that older cache entries are invalid;
//! - `catalogue`: `features` → the Autopilot server's `ListFeaturesResponse`, `terms` → its
//!   `TermsResponse`, each with when it was fetched ([`CatalogueRecord`]);
//! - `approvals_v2`: SHA-256 of the sorted feature names ‖ approved_at (u64 BE) ‖ id (u64 BE) →
//!   [`Approval`], the features and privacy flags that the AddAutopilotSession policy approved,
//!   for the relay to hold `RegisterSession` to (looked up by the features' prefix, never
//!   scanned whole); `approvals_by_time`: approved_at ‖ id → the primary key, so approvals past
//!   their age or over the count bound ([`ApprovalBounds`]) are dropped oldest first. (Schema 1
//!   stores may still hold the unbounded `approvals` tree of earlier builds: it is dropped.)
//! - `ledger`: responder public key (33 bytes) → [`LedgerEntry`], every registration that went
//!   through the relay;
//! - `cache`: the session cache (`crate::cache`): lookup id (32 bytes, HKDF of the caller's
//!   credential) ‖ route ‖ protocol ‖ variant digest → a sealed entry (clear header with
//!   generation and freshness bounds, then a ChaCha20-Poly1305 ciphertext). Opaque here: the
//!   store neither reads nor can read an entry.
//!
//! A directory that is corrupt, locked by another process, of an unknown schema, or not a
//! litgate store is refused with a message saying which and what to do; it is never deleted
//! or rewritten.

pub(crate) mod config;

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// The key layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema";
const CATALOGUE_KEY: &[u8] = b"features";
const TERMS_KEY: &[u8] = b"terms";
const CACHE_SALT_KEY: &[u8] = b"cache_salt";
const CACHE_GENERATION_KEY: &[u8] = b"cache_generation";

/// Why the store could not be opened or used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds sled's lock.
    #[error(
        "store {path} is locked by another process (is another litgate running with this \
         store.data_dir?); stop it or point store.data_dir elsewhere"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// sled found corrupt data.
    #[error(
        "store {path} is corrupt ({detail}); litgate left it untouched: move it aside to start \
         with an empty store (the catalogue is refetched; the registration ledger is lost)"
    )]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// sled's description.
        detail: String,
    },
    /// The database was written by a litgate with another key layout.
    #[error(
        "store {path} has schema version {found}, this litgate understands {SCHEMA_VERSION}; \
         run the litgate version that wrote it, or point store.data_dir elsewhere"
    )]
    UnknownSchema {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: String,
    },
    /// The directory holds something that is not a litgate store.
    #[error(
        "{path} is not a litgate store ({detail}); litgate left it untouched: point \
         store.data_dir at an empty or litgate-owned directory"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Any other I/O or sled failure.
    #[error("store {path}: {detail}")]
    Io {
        /// The database directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// The last fetched feature catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueRecord {
    /// When it was fetched from the Autopilot server.
    pub fetched_at: SystemTime,
    /// `autopilotserverrpc.ListFeaturesResponse`, encoded.
    pub response: Vec<u8>,
}

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
pub struct ApprovalBounds {
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

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    catalogue: sled::Tree,
    approvals: sled::Tree,
    approvals_by_time: sled::Tree,
    /// Entries in `approvals_by_time` (sled's `len` walks the tree).
    approval_count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ledger: sled::Tree,
    cache: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir/db`.
    ///
    /// Before sled touches anything, the directory must be empty or carry litgate's marker
    /// file with this schema version; otherwise it is refused unchanged.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("db");
        let marker = path.join(MARKER_FILE);
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Foreign {
                    path,
                    detail: "a file where the db directory should be".into(),
                })
            }
            Ok(_) => {
                let empty = std::fs::read_dir(&path)
                    .map_err(|e| StoreError::Io {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?
                    .next()
                    .is_none();
                if empty {
                    write_marker(&path, &marker)?;
                } else {
                    match std::fs::read_to_string(&marker) {
                        Ok(text) => {
                            let found = text
                                .trim()
                                .strip_prefix(MARKER_PREFIX)
                                .map(str::trim)
                                .unwrap_or("(unreadable)");
                            if found != SCHEMA_VERSION.to_string() {
                                return Err(StoreError::UnknownSchema {
                                    path,
                                    found: found.to_string(),
                                });
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(StoreError::Foreign {
                                path,
                                detail: format!("it has files but no {MARKER_FILE} marker"),
                            })
                        }
                        Err(e) => {
                            return Err(StoreError::Io {
                                path,
                                detail: e.to_string(),
                            })
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&path).map_err(|e| StoreError::Io {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                write_marker(&path, &marker)?;
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path,
                    detail: e.to_string(),
                })
            }
        }
        let db = open_sled(&path)?;
        let meta = db.open_tree("meta").map_err(|e| classify(&path, e))?;
        match meta.get(SCHEMA_KEY).map_err(|e| classify(&path, e))? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref()).ok().map(u32::from_be_bytes);
                if found != Some(SCHEMA_VERSION) {
                    let found = found
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(unreadable)".into());
                    return Err(StoreError::UnknownSchema { path, found });
                }
            }
            None => {
                // A fresh database has only sled's default tree and `meta`; anything else means
                // someone else's sled database.
                let others: Vec<_> = db
                    .tree_names()
                    .into_iter()
                    .filter(|n| n.as_ref() != b"__sled__default" && n.as_ref() != b"meta")
                    .collect();
                if !others.is_empty() || !db.is_empty() {
                    return Err(StoreError::UnknownSchema {
                        path,
                        found: "none (not written by litgate)".into(),
                    });
                }
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| classify(&path, e))?;
                meta.flush().map_err(|e| classify(&path, e))?;
            }
        }
        let catalogue = db.open_tree("catalogue").map_err(|e| classify(&path, e))?;
        // Earlier builds kept approvals unbounded under this name; they are minutes-lived.
        db.drop_tree("approvals").map_err(|e| classify(&path, e))?;
        let approvals = db
            .open_tree("approvals_v2")
            .map_err(|e| classify(&path, e))?;
        let approvals_by_time = db
            .open_tree("approvals_by_time")
            .map_err(|e| classify(&path, e))?;
        let approval_count =
            std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(approvals_by_time.len()));
        let ledger = db.open_tree("ledger").map_err(|e| classify(&path, e))?;
        let cache = db.open_tree("cache").map_err(|e| classify(&path, e))?;
        Ok(Store {
            path,
            db,
            catalogue,
            approvals,
            approvals_by_time,
            approval_count,
            ledger,
            cache,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored catalogue, if any. An unreadable record counts as none.
    pub fn catalogue(&self) -> Result<Option<CatalogueRecord>, StoreError> {
        self.timed(CATALOGUE_KEY)
    }

    /// Replaces the stored catalogue.
    pub fn put_catalogue(&self, rec: &CatalogueRecord) -> Result<(), StoreError> {
        self.put_timed(CATALOGUE_KEY, rec)
    }

    /// The stored `TermsResponse`, if any.
    pub fn terms(&self) -> Result<Option<CatalogueRecord>, StoreError> {
        self.timed(TERMS_KEY)
    }

    /// Replaces the stored `TermsResponse`.
    pub fn put_terms(&self, rec: &CatalogueRecord) -> Result<(), StoreError> {
        self.put_timed(TERMS_KEY, rec)
    }

    fn timed(&self, key: &[u8]) -> Result<Option<CatalogueRecord>, StoreError> {
        let Some(v) = self.catalogue.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        if v.len() < 8 {
            return Ok(None);
        }
        let (at, response) = v.split_at(8);
        let secs = u64::from_be_bytes(<[u8; 8]>::try_from(at).unwrap_or_default());
        Ok(Some(CatalogueRecord {
            fetched_at: UNIX_EPOCH + Duration::from_secs(secs),
            response: response.to_vec(),
        }))
    }

    fn put_timed(&self, key: &[u8], rec: &CatalogueRecord) -> Result<(), StoreError> {
        let secs = rec
            .fetched_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut v = Vec::with_capacity(8 + rec.response.len());
        v.extend_from_slice(&secs.to_be_bytes());
        v.extend_from_slice(&rec.response);
        self.catalogue.insert(key, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records an approval, then drops approvals older than `bounds.max_age` (measured from
    /// this one's `approved_at`) and the oldest beyond `bounds.max_count`; returns its id.
    pub fn record_approval(
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
            self.approval_count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let cutoff = a.approved_at.saturating_sub(bounds.max_age.as_secs());
        for kv in self.approvals_by_time.iter() {
            let (time_key, primary) = kv.map_err(|e| self.err(e))?;
            let at = time_key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let over = self
                .approval_count
                .load(std::sync::atomic::Ordering::Relaxed)
                > bounds.max_count;
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
        self.approval_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes an approval (consumed by a registration, or expired).
    pub fn remove_approval(&self, id: &ApprovalId) -> Result<(), StoreError> {
        self.approvals
            .remove(id.0.as_slice())
            .map_err(|e| self.err(e))?;
        if let Some(time_key) = id.0.get(32..) {
            let removed = self
                .approvals_by_time
                .remove(time_key)
                .map_err(|e| self.err(e))?;
            if removed.is_some() {
                self.approval_count
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The ledger entry for a responder key.
    pub fn ledger_get(&self, responder_key: &[u8]) -> Result<Option<LedgerEntry>, StoreError> {
        let Some(v) = self.ledger.get(responder_key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&v).ok())
    }

    /// Writes a ledger entry, durably (the ledger must survive a crash right after).
    pub fn ledger_put(&self, responder_key: &[u8], entry: &LedgerEntry) -> Result<(), StoreError> {
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

    /// Writes everything to disk (on shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// A cheap liveness check for `/ready`: a read of the schema key.
    pub fn check(&self) -> Result<(), StoreError> {
        self.db
            .open_tree("meta")
            .and_then(|m| m.get(SCHEMA_KEY))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The session cache's HKDF salt: 32 random bytes kept in `meta`, created on first use.
    pub fn cache_salt(&self) -> Result<[u8; 32], StoreError> {
        let meta = self.db.open_tree("meta").map_err(|e| self.err(e))?;
        if let Some(v) = meta.get(CACHE_SALT_KEY).map_err(|e| self.err(e))? {
            if let Ok(salt) = <[u8; 32]>::try_from(v.as_ref()) {
                return Ok(salt);
            }
        }
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        meta.insert(CACHE_SALT_KEY, &salt)
            .map_err(|e| self.err(e))?;
        meta.flush().map_err(|e| self.err(e))?;
        Ok(salt)
    }

    /// The session cache's generation (0 when never bumped).
    pub fn cache_generation(&self) -> Result<u64, StoreError> {
        let meta = self.db.open_tree("meta").map_err(|e| self.err(e))?;
        let v = meta.get(CACHE_GENERATION_KEY).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Moves the session cache's generation on; returns the new generation. Durable at sled's
    /// next periodic flush (the cache keeps the authoritative generation in memory).
    pub fn bump_cache_generation(&self) -> Result<u64, StoreError> {
        let meta = self.db.open_tree("meta").map_err(|e| self.err(e))?;
        let next = meta
            .update_and_fetch(CACHE_GENERATION_KEY, |old| {
                let n = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some(n.wrapping_add(1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.err(e))?;
        Ok(next
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// A session-cache entry.
    pub fn cache_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .cache
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    /// Writes a session-cache entry; returns the size (key + value) of the one it replaced.
    pub fn cache_put(&self, key: &[u8], value: &[u8]) -> Result<Option<usize>, StoreError> {
        let old = self.cache.insert(key, value).map_err(|e| self.err(e))?;
        Ok(old.map(|v| key.len() + v.len()))
    }

    /// Removes a session-cache entry; returns its size (key + value) if there was one.
    pub fn cache_remove(&self, key: &[u8]) -> Result<Option<usize>, StoreError> {
        let old = self.cache.remove(key).map_err(|e| self.err(e))?;
        Ok(old.map(|v| key.len() + v.len()))
    }

    /// Removes every session-cache entry whose key starts with `prefix`; returns how many and
    /// their total size.
    pub fn cache_remove_prefix(&self, prefix: &[u8]) -> Result<(usize, usize), StoreError> {
        let mut keys = Vec::new();
        for kv in self.cache.scan_prefix(prefix) {
            keys.push(kv.map_err(|e| self.err(e))?.0);
        }
        self.cache_remove_keys(keys)
    }

    /// Removes every session-cache entry for which `keep(key, value)` is false; returns how many
    /// and their total size.
    pub fn cache_retain(
        &self,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(usize, usize), StoreError> {
        let mut keys = Vec::new();
        for kv in self.cache.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if !keep(&k, &v) {
                keys.push(k);
            }
        }
        self.cache_remove_keys(keys)
    }

    fn cache_remove_keys(&self, keys: Vec<sled::IVec>) -> Result<(usize, usize), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for k in keys {
            if let Some(size) = self.cache_remove(&k)? {
                n += 1;
                bytes += size;
            }
        }
        Ok((n, bytes))
    }

    /// Removes every session-cache entry (not atomic: the generation is what invalidates).
    pub fn cache_clear(&self) -> Result<(), StoreError> {
        self.cache.clear().map_err(|e| self.err(e))
    }

    /// How many session-cache entries there are and their total size (key + value), by a scan.
    pub fn cache_usage(&self) -> Result<(usize, usize), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for kv in self.cache.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            n += 1;
            bytes += k.len() + v.len();
        }
        Ok((n, bytes))
    }

    fn err(&self, e: sled::Error) -> StoreError {
        classify(&self.path, e)
    }
}

/// Opens sled, waiting briefly for a lock that is being released: sled lets go of its file
/// lock when its background flusher stops, shortly after the previous handle in this process
/// was dropped (a restart in place). A lock held by another process stays and is reported.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| classify(path, e))
        {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

const MARKER_FILE: &str = "LITGATE_STORE";
const MARKER_PREFIX: &str = "litgate store schema";

fn write_marker(path: &Path, marker: &Path) -> Result<(), StoreError> {
    std::fs::write(marker, format!("{MARKER_PREFIX} {SCHEMA_VERSION}\n")).map_err(|e| {
        StoreError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

fn classify(path: &Path, e: sled::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path }
        }
        sled::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock => {
            StoreError::Locked { path }
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        sled::Error::Unsupported(s) => StoreError::Corrupt { path, detail: s },
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_and_approvals_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let rec = CatalogueRecord {
                fetched_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                response: vec![1, 2, 3],
            };
            s.put_catalogue(&rec).unwrap();
            let a = Approval {
                features: vec!["AutoFees".into()],
                privacy_flags: 4,
                privacy: true,
                linked_group_id: String::new(),
                approved_at: 1,
            };
            s.record_approval(&a, BOUNDS).unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.catalogue().unwrap().unwrap().response, vec![1, 2, 3]);
        let found = s.approvals_for(&["AutoFees".into()], 0).unwrap();
        assert_eq!(found[0].1.privacy_flags, 4);
        assert_eq!(s.approval_count(), 1);
    }

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

    #[test]
    fn second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another litgate"), "{err}");
    }

    #[test]
    fn unknown_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::write(
            dir.path().join("db").join(MARKER_FILE),
            "litgate store schema 99\n",
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownSchema { ref found, .. } if found == "99"),
            "{err}"
        );
        // The meta tree is checked too.
        std::fs::write(
            dir.path().join("db").join(MARKER_FILE),
            "litgate store schema 1\n",
        )
        .unwrap();
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &7u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownSchema { ref found, .. } if found == "7"),
            "{err}"
        );
    }

    #[test]
    fn foreign_sled_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.insert(b"someone", b"else").unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    }

    #[test]
    fn corrupt_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::write(
            dir.path().join("db/conf"),
            b"garbage that is not sled's config",
        )
        .unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. } | StoreError::Io { .. }),
            "{err}"
        );
    }

    #[test]
    fn foreign_directory_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/notes.txt"), b"mine").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["notes.txt"]);
    }
}
