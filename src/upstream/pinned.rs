//! Certificate pinning towards litd: the server must present exactly the certificate in
//! `upstream.tls_cert` (litd's self-signed `tls.cert`), or a chain that verifies to it when the
//! operator pins a CA instead. System roots are never consulted: litd's cert is self-signed.
//!
//! The file is read when a handshake needs it, not only at start: as a native sidecar litgate
//! starts before litd has written its `tls.cert`, and litd writes a new one when it renews its
//! certificate. A presented certificate that does not match makes the verifier re-read the file
//! once (if it changed) before refusing.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use super::BuildError;

#[derive(Debug)]
struct Loaded {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    modified: Option<SystemTime>,
}

/// Accepts the pinned certificate byte for byte, else delegates to WebPKI with the pinned
/// certificates as the only roots.
#[derive(Debug)]
pub struct PinnedVerifier {
    path: PathBuf,
    loaded: RwLock<Option<Arc<Loaded>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier pinning the certificates in `path`. A missing file is not an error yet (litd
    /// may not have written it); a file that exists but holds no certificate is.
    pub fn new(path: PathBuf) -> Result<Self, crate::tls::TlsError> {
        let v = PinnedVerifier {
            path,
            loaded: RwLock::new(None),
            provider: crate::tls::provider(),
        };
        match v.load() {
            Ok(l) => *v.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(l),
            Err(crate::tls::TlsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(path = %v.path.display(), "litd's tls.cert does not exist yet; it will be read at the first connection");
            }
            Err(e) => return Err(e),
        }
        Ok(v)
    }

    fn load(&self) -> Result<Arc<Loaded>, crate::tls::TlsError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let pinned = crate::tls::load_certs(&self.path)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &pinned {
            // A leaf that is not a CA cannot be a root; exact matching still covers it.
            let _ = roots.add(c.clone());
        }
        let webpki = if roots.is_empty() {
            None
        } else {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            )
            .build()
            .ok()
        };
        Ok(Arc::new(Loaded {
            pinned,
            webpki,
            modified,
        }))
    }

    /// The pinned set, loading it if it was missing, or reloading it if `stale` and the file
    /// changed on disk.
    fn current(&self, stale: bool) -> Result<Arc<Loaded>, rustls::Error> {
        let have = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reload = match &have {
            None => true,
            Some(l) => {
                stale
                    && std::fs::metadata(&self.path)
                        .and_then(|m| m.modified())
                        .ok()
                        != l.modified
            }
        };
        if !reload {
            if let Some(l) = have {
                return Ok(l);
            }
        }
        match self.load() {
            Ok(l) => {
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(l.clone());
                Ok(l)
            }
            Err(e) => match have {
                Some(l) => Ok(l),
                None => Err(rustls::Error::General(format!(
                    "cannot read the pinned upstream.tls_cert: {e}"
                ))),
            },
        }
    }

    fn check(
        l: &Loaded,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if l.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match &l.webpki {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map_err(|e| {
                    rustls::Error::General(format!(
                        "certificate does not match the pinned upstream.tls_cert ({e})"
                    ))
                }),
            None => Err(rustls::Error::General(
                "certificate does not match the pinned upstream.tls_cert".into(),
            )),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let l = self.current(false)?;
        match Self::check(&l, end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            Err(e) => {
                // litd may have renewed its certificate: re-read the file once if it changed.
                let fresh = self.current(true)?;
                if Arc::ptr_eq(&fresh, &l) {
                    return Err(e);
                }
                Self::check(&fresh, end_entity, intermediates, server_name, ocsp, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config whose server certificate check is `verifier`.
pub(super) fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, BuildError> {
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Value {
            key: "tls_cert",
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // ALPN (h2) is added by the hyper-rustls connector.
    Ok(cfg)
}

/// Refuses every certificate: the TLS config of a plaintext upstream, never used for a handshake.
#[derive(Debug)]
pub(super) struct NoTls(pub Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoTls {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "upstream.plaintext = true: no TLS towards litd".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no TLS".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no TLS".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
