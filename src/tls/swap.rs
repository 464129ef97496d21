//! The public face's certificate as a swappable value: the rustls server config asks it for
//! the pair on every handshake, and a reload re-reads the files into it. A renewed certificate
//! reaches new handshakes; connections already established keep the session they negotiated.
//! It never touches a connection and never logs key material.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{certified_key, material, CertSource, TlsError};

/// The pair every new TLS handshake of the public face (and a TLS relay) is served.
pub struct SwappableCert {
    current: ArcSwap<CertifiedKey>,
}

impl SwappableCert {
    pub(super) fn new(current: CertifiedKey) -> Self {
        SwappableCert {
            current: ArcSwap::from_pointee(current),
        }
    }

    /// Reads `source` as at start (a generated pair is made again if it lacks a configured
    /// name), refusing a key that is not the certificate's. Blocking file I/O: call it off the
    /// async workers. Nothing is served from it until [`SwappableCert::set`].
    pub fn load(source: &CertSource) -> Result<Arc<CertifiedKey>, TlsError> {
        let (cert, key, _) = material(source)?;
        Ok(Arc::new(certified_key(&cert, &key)?))
    }

    /// Serves `pair` from the next handshake on.
    pub fn set(&self, pair: Arc<CertifiedKey>) {
        self.current.store(pair);
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl std::fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappableCert").finish_non_exhaustive()
    }
}
