//! The store: litgate's only persistent state, a sled database under `store.data_dir/db`.
//! This is the only module that imports `sled`; everything else uses the typed methods below.
//!
//! Layout (schema version [`SCHEMA_VERSION`]): named trees
//! - `meta`: `schema` → version (u32, big-endian); `cache_salt` → 32 random bytes, the HKDF
//!   salt of the session cache; `cache_generation` → u64 BE, raised after session writes
//!   (shortly after, a few at a time) so that older cache entries are invalid; `ready_probe` → u64 BE, the time of the
//!   last write `/ready` made to find out whether the disk takes writes;
//! - `catalogue`: `features` → the Autopilot server's `ListFeaturesResponse`, `terms` → its
//!   `TermsResponse`, each with when it was fetched (`CatalogueRecord`);
//! - `approvals_v2`: SHA-256 of the sorted feature names ‖ approved_at (u64 BE) ‖ id (u64 BE) →
//!   [`Approval`], the features and privacy flags that the AddAutopilotSession policy approved,
//!   for the relay to hold `RegisterSession` to; `approvals_by_time`: approved_at ‖ id → the
//!   primary key. The durable copy of the in-memory approvals index
//!   (`crate::autopilot::approvals`): that index enforces the bounds (`ApprovalBounds`) and is
//!   what the relay reads; it writes its changes here in the background and reads the trees
//!   whole only at start-up.
//!   (Schema 1 stores may still hold the unbounded `approvals` tree of earlier builds: it is
//!   dropped.)
//! - `ledger`: responder public key (33 bytes) → [`LedgerEntry`], every registration that went
//!   through the relay;
//! - `cache`: the session cache (`crate::cache`): lookup id (32 bytes, HKDF of the caller's
//!   credential) ‖ route ‖ protocol ‖ variant digest → a sealed entry (clear header with
//!   generation and freshness bounds, then an AES-256-GCM ciphertext). Opaque here: the
//!   store neither reads nor can read an entry.
//!
//! While open, litgate holds an exclusive lock on `store.data_dir/db.lock` (a second litgate
//! on the same directory is refused as locked). A directory that is corrupt, locked by another
//! process, of an unknown schema, or not a litgate store is refused with a message saying which
//! and what to do; it is never deleted or rewritten.

pub(crate) mod config;

mod approvals;
mod cache;
mod catalogue;
mod error;
mod ledger;
mod open;

use std::path::{Path, PathBuf};

pub(crate) use self::{approvals::ApprovalBounds, catalogue::CatalogueRecord, open::Inspected};
pub use self::{
    approvals::{Approval, ApprovalId},
    error::StoreError,
    ledger::{ConfigSent, LedgerEntry, SentPath, NOT_REPLACED},
};

/// The `meta` key the readiness probe writes (the time of its last write, unix ms).
const WRITE_PROBE_KEY: &[u8] = b"ready_probe";

/// The key layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    /// litgate's lock on the directory, released with the last handle.
    _lock: std::sync::Arc<std::fs::File>,
    db: sled::Db,
    catalogue: sled::Tree,
    approvals: sled::Tree,
    approvals_by_time: sled::Tree,
    ledger: sled::Tree,
    cache: sled::Tree,
    /// A failure every write probe and approvals write reports instead of its own result
    /// (tests: a full or read-only disk, which cannot be made here without privileges).
    write_fault: std::sync::Arc<std::sync::Mutex<Option<std::io::ErrorKind>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the blocking pool, for calls that wait on the disk (ledger writes, which
    /// flush; the approvals' load at start-up; the flush at shutdown): never on an async
    /// worker.
    pub(crate) async fn off_worker<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::Io {
                path: self.path.clone(),
                detail: format!("the blocking store task failed: {e}"),
            })?
    }

    /// Writes everything to disk (on shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// A real write for `/ready`: a small value into `meta`, then a flush to disk, which is
    /// where a full or read-only disk shows (sled writes to memory first). Waits on the disk:
    /// call it off the async workers, and not often.
    pub(crate) fn probe_write(&self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let written = self
            .db
            .open_tree("meta")
            .and_then(|m| m.insert(WRITE_PROBE_KEY, &now.to_be_bytes()))
            .and_then(|_| self.db.flush())
            .map(|_| ());
        match self.injected_write_fault() {
            Some(kind) => Err(sled::Error::Io(std::io::Error::new(
                kind,
                "injected write failure",
            ))),
            None => written,
        }
        .map_err(|e| self.err(e))
    }

    /// Makes every write probe and approvals write fail with `kind` (`None`: their own result
    /// again), as a full (`StorageFull`) or read-only (`ReadOnlyFilesystem`) disk would: for
    /// tests of `/ready` and of the approvals' background writes.
    #[doc(hidden)]
    pub fn inject_write_fault(&self, kind: Option<std::io::ErrorKind>) {
        *self
            .write_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kind;
    }

    /// The failure injected by [`Store::inject_write_fault`], if any.
    fn injected_write_fault(&self) -> Option<std::io::ErrorKind> {
        *self
            .write_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn err(&self, e: sled::Error) -> StoreError {
        error::classify(&self.path, e)
    }
}
