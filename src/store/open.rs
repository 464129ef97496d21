//! Opening the store: the directory must be empty or carry litgate's marker with this schema
//! version, and sled's `meta` tree must agree; anything else is refused untouched.

use std::{
    fs::{File, TryLockError},
    io,
    path::Path,
    time::{Duration, Instant},
};

use super::{error::classify, Store, StoreError, SCHEMA_VERSION};

pub(super) const SCHEMA_KEY: &[u8] = b"schema";

impl Store {
    /// Opens (or creates) the store in `data_dir/db`.
    ///
    /// Before sled touches anything, the directory must be empty or carry litgate's marker
    /// file with this schema version; otherwise it is refused unchanged.
    pub(crate) fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("db");
        match dir_state(&path)? {
            DirState::Missing => {
                std::fs::create_dir_all(&path).map_err(|e| StoreError::Io {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                write_marker(&path, &path.join(MARKER_FILE))?;
            }
            DirState::Empty => write_marker(&path, &path.join(MARKER_FILE))?,
            DirState::Ours => {}
        }
        let lock = lock(data_dir, &path)?;
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
        let ledger = db.open_tree("ledger").map_err(|e| classify(&path, e))?;
        let cache = db.open_tree("cache").map_err(|e| classify(&path, e))?;
        let store = Store {
            path,
            _lock: std::sync::Arc::new(lock),
            db,
            catalogue,
            approvals,
            approvals_by_time,
            ledger,
            cache,
            write_fault: Default::default(),
        };
        // Created (and flushed) here, where opening already waits on the disk, so that later
        // reads of it never do.
        store.cache_salt()?;
        Ok(store)
    }
}

/// What [`Store::inspect`] found in a `store.data_dir` that litgate could use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inspected {
    /// No database yet (or an empty directory): litgate would create one.
    New,
    /// A litgate store of this schema, not in use.
    Ours,
    /// A litgate store of this schema that a running litgate holds (its lock is taken).
    InUse,
}

impl Store {
    /// Looks at `data_dir/db` the way [`Store::open`] would, without creating, writing or
    /// opening anything: a file where the directory should be, files without litgate's marker
    /// or a marker of another schema are refused as `open` refuses them; litgate's lock is
    /// tried (never waited for) to tell whether a running litgate holds the store. sled itself
    /// is not opened, so its own checks (corruption, its `meta` tree) are not made.
    pub(crate) fn inspect(data_dir: &Path) -> Result<Inspected, StoreError> {
        let path = data_dir.join("db");
        let io = |e: io::Error| StoreError::Io {
            path: path.clone(),
            detail: e.to_string(),
        };
        if !matches!(dir_state(&path)?, DirState::Ours) {
            return Ok(Inspected::New);
        }
        let lock = match File::open(data_dir.join(LOCK_FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Inspected::Ours),
            Err(e) => return Err(io(e)),
        };
        match lock.try_lock_shared() {
            Ok(()) => Ok(Inspected::Ours),
            Err(TryLockError::WouldBlock) => Ok(Inspected::InUse),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

/// What `data_dir/db` holds, as far as opening it is concerned.
enum DirState {
    /// Nothing there yet.
    Missing,
    /// An empty directory.
    Empty,
    /// litgate's marker with this schema version.
    Ours,
}

/// Looks at the database directory `path` without changing it: a file where the directory
/// should be, files without litgate's marker, or a marker of another schema are refused.
fn dir_state(path: &Path) -> Result<DirState, StoreError> {
    let io = |e: io::Error| StoreError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                detail: "a file where the db directory should be".into(),
            })
        }
        Ok(_) => {}
    }
    if std::fs::read_dir(path).map_err(io)?.next().is_none() {
        return Ok(DirState::Empty);
    }
    let found = match std::fs::read_to_string(path.join(MARKER_FILE)) {
        Ok(text) => text
            .trim()
            .strip_prefix(MARKER_PREFIX)
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "(unreadable)".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                detail: format!("it has files but no {MARKER_FILE} marker"),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if found != SCHEMA_VERSION.to_string() {
        return Err(StoreError::UnknownSchema {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(DirState::Ours)
}

/// How long opening waits for a lock a previous instance in this process is releasing (a
/// restart in place); a lock held by another process stays and is reported.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes litgate's own exclusive lock (`db.lock` beside the database directory, which stays
/// exactly as sled and litgate's marker left it), held for as long as the store is open, so a
/// second litgate on the same `store.data_dir` is refused as [`StoreError::Locked`] before
/// sled is touched.
fn lock(data_dir: &Path, path: &Path) -> Result<File, StoreError> {
    let io = |e: io::Error| StoreError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(LOCK_FILE))
        .map_err(io)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// Opens sled. Holding litgate's lock, the only holder of sled's own file lock can be a
/// previous instance in this process whose background flusher has not stopped yet (sled lets
/// go shortly after its last handle is dropped), so an I/O failure to open is retried until
/// [`LOCK_WAIT`] has passed.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.map_err(|e| classify(path, e)),
        }
    }
}

const MARKER_FILE: &str = "LITGATE_STORE";
const LOCK_FILE: &str = "db.lock";
const MARKER_PREFIX: &str = "litgate store schema";

fn write_marker(path: &Path, marker: &Path) -> Result<(), StoreError> {
    std::fs::write(marker, format!("{MARKER_PREFIX} {SCHEMA_VERSION}\n")).map_err(|e| {
        StoreError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::store::{Approval, ApprovalId, CatalogueRecord};

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
            let id = ApprovalId::new(&a.features, 1, 1);
            s.write_approvals([(&id, Some(&a))]).unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.catalogue().unwrap().unwrap().response, vec![1, 2, 3]);
        let found = s.load_approvals().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.privacy_flags, 4);
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
            // sled lets go of its lock shortly after the store above was dropped: open_sled
            // waits for that, bounded.
            let db = open_sled(&dir.path().join("db")).unwrap();
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
    fn inspect_tells_new_ours_in_use_and_foreign_apart_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Store::inspect(dir.path()).unwrap(), Inspected::New);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        {
            let _open = Store::open(dir.path()).unwrap();
            assert_eq!(Store::inspect(dir.path()).unwrap(), Inspected::InUse);
        }
        // The lock goes with the store; inspect never waits for it.
        let deadline = Instant::now() + LOCK_WAIT;
        while Store::inspect(dir.path()).unwrap() == Inspected::InUse {
            assert!(Instant::now() < deadline, "the lock outlived the store");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(Store::inspect(dir.path()).unwrap(), Inspected::Ours);
        std::fs::write(
            dir.path().join("db").join(MARKER_FILE),
            "litgate store schema 99\n",
        )
        .unwrap();
        assert!(matches!(
            Store::inspect(dir.path()),
            Err(StoreError::UnknownSchema { ref found, .. }) if found == "99"
        ));
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join("db")).unwrap();
        std::fs::write(other.path().join("db/notes.txt"), b"mine").unwrap();
        assert!(matches!(
            Store::inspect(other.path()),
            Err(StoreError::Foreign { .. })
        ));
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
