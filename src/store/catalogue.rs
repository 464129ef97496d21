//! The `catalogue` tree: the Autopilot server's last `ListFeaturesResponse` and
//! `TermsResponse`, each with when it was fetched.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Store, StoreError};

const CATALOGUE_KEY: &[u8] = b"features";
const TERMS_KEY: &[u8] = b"terms";

/// The last fetched feature catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogueRecord {
    /// When it was fetched from the Autopilot server.
    pub fetched_at: SystemTime,
    /// `autopilotserverrpc.ListFeaturesResponse`, encoded.
    pub response: Vec<u8>,
}

impl Store {
    /// The stored catalogue, if any. An unreadable record counts as none.
    pub(crate) fn catalogue(&self) -> Result<Option<CatalogueRecord>, StoreError> {
        self.timed(CATALOGUE_KEY)
    }

    /// Replaces the stored catalogue.
    pub(crate) fn put_catalogue(&self, rec: &CatalogueRecord) -> Result<(), StoreError> {
        self.put_timed(CATALOGUE_KEY, rec)
    }

    /// The stored `TermsResponse`, if any.
    pub(crate) fn terms(&self) -> Result<Option<CatalogueRecord>, StoreError> {
        self.timed(TERMS_KEY)
    }

    /// Replaces the stored `TermsResponse`.
    pub(crate) fn put_terms(&self, rec: &CatalogueRecord) -> Result<(), StoreError> {
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
}
