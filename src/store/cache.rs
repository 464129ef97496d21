//! The session cache's state: its HKDF salt and generation in `meta`, and the `cache` tree of
//! sealed entries, opaque here (the store neither reads nor can read an entry).

use super::{Store, StoreError};

/// A stored session-cache entry: sled's own reference-counted buffer, read without a copy.
#[derive(Debug, Clone)]
pub(crate) struct CacheValue(sled::IVec);

impl std::ops::Deref for CacheValue {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

const CACHE_SALT_KEY: &[u8] = b"cache_salt";
const CACHE_GENERATION_KEY: &[u8] = b"cache_generation";

impl Store {
    /// The session cache's HKDF salt: 32 random bytes kept in `meta`, created (and flushed)
    /// when the store first opens.
    pub(crate) fn cache_salt(&self) -> Result<[u8; 32], StoreError> {
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

    /// Raises the session cache's generation to `generation` (never lowers it). Durable at
    /// sled's next periodic flush (the cache keeps the authoritative generation in memory).
    pub(crate) fn raise_cache_generation(&self, generation: u64) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta").map_err(|e| self.err(e))?;
        meta.fetch_and_update(CACHE_GENERATION_KEY, |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(old.max(generation).to_be_bytes().to_vec())
        })
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// A session-cache entry, as sled holds it (not copied).
    pub(crate) fn cache_get(&self, key: &[u8]) -> Result<Option<CacheValue>, StoreError> {
        Ok(self
            .cache
            .get(key)
            .map_err(|e| self.err(e))?
            .map(CacheValue))
    }

    /// Writes a session-cache entry; returns the size (key + value) of the one it replaced.
    pub fn cache_put(&self, key: &[u8], value: &[u8]) -> Result<Option<usize>, StoreError> {
        let old = self.cache.insert(key, value).map_err(|e| self.err(e))?;
        Ok(old.map(|v| key.len() + v.len()))
    }

    /// Removes a session-cache entry; returns its size (key + value) if there was one.
    pub(crate) fn cache_remove(&self, key: &[u8]) -> Result<Option<usize>, StoreError> {
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
}
