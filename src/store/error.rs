//! Why the store could not be opened or used, each error saying what to do; and sled's errors
//! classified into them.

use std::path::{Path, PathBuf};

use super::SCHEMA_VERSION;

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

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::internal_from("the store failed", e)
    }
}

pub(super) fn classify(path: &Path, e: sled::Error) -> StoreError {
    let path = path.to_path_buf();
    match e {
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
