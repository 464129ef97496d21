//! Certificate pinning, for every peer litgate pins (litd's `tls.cert`, a self-signed Autopilot
//! server's certificate): the server must present exactly a pinned certificate, whatever its
//! extensions, or a chain that verifies to it when the operator pins a CA instead. lnd and litd
//! write self-signed certificates with `CA:TRUE` and `keyCertSign` (so they can sign
//! themselves); WebPKI refuses such a certificate as the end entity (`CaUsedAsEndEntity`), so
//! the byte-for-byte match comes first and WebPKI is only the fallback for a pinned CA. System
//! roots are never consulted.
//!
//! A pinned file is read when a handshake needs it, not only at start: as a native sidecar
//! litgate starts before litd has written its `tls.cert`, and litd writes a new one when it
//! renews its certificate. A presented certificate that does not match makes the verifier
//! re-read the file once (if it changed) before refusing.

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

use super::TlsError;

#[derive(Debug)]
struct Loaded {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    modified: Option<SystemTime>,
}

impl Loaded {
    fn new(
        pinned: Vec<CertificateDer<'static>>,
        modified: Option<SystemTime>,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Self {
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
                provider.clone(),
            )
            .build()
            .ok()
        };
        Loaded {
            pinned,
            webpki,
            modified,
        }
    }
}

/// Accepts a pinned certificate byte for byte, else delegates to WebPKI with the pinned
/// certificates as the only roots.
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    /// The pinned file; `None` for a fixed set given as PEM.
    path: Option<PathBuf>,
    /// What the pinned file is called in messages (`upstream.tls_cert`).
    key: &'static str,
    loaded: RwLock<Option<Arc<Loaded>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier pinning the certificates in `path` (the config key `key` names it in
    /// messages). A missing file is not an error yet (litd may not have written it); a file
    /// that exists but holds no certificate is.
    pub(crate) fn new(path: PathBuf, key: &'static str) -> Result<Self, TlsError> {
        let v = PinnedVerifier {
            path: Some(path),
            key,
            loaded: RwLock::new(None),
            provider: super::provider(),
        };
        match v.load() {
            Ok(l) => *v.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(l),
            Err(TlsError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), key, "the pinned certificate does not exist yet; it will be read at the first connection");
            }
            Err(e) => return Err(e),
        }
        Ok(v)
    }

    /// A verifier pinning the certificates in `pem`, fixed for its lifetime.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let certs = super::parse_certs(pem).map_err(TlsError::Setup)?;
        let provider = super::provider();
        let loaded = Loaded::new(certs, None, &provider);
        Ok(PinnedVerifier {
            path: None,
            key: "pinned certificate",
            loaded: RwLock::new(Some(Arc::new(loaded))),
            provider,
        })
    }

    fn load(&self) -> Result<Arc<Loaded>, TlsError> {
        let Some(path) = &self.path else {
            return Err(TlsError::Setup("no pinned file".into()));
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let pinned = super::load_certs(path)?;
        Ok(Arc::new(Loaded::new(pinned, modified, &self.provider)))
    }

    /// The pinned set, loading it if it was missing, or reloading it if `stale` and the file
    /// changed on disk.
    fn current(&self, stale: bool) -> Result<Arc<Loaded>, rustls::Error> {
        let have = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let reload = match (&have, &self.path) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(l), Some(path)) => {
                stale && std::fs::metadata(path).and_then(|m| m.modified()).ok() != l.modified
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
                    "cannot read the pinned {}: {e}",
                    self.key
                ))),
            },
        }
    }

    fn check(
        &self,
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
                        "certificate does not match the pinned {} ({e})",
                        self.key
                    ))
                }),
            None => Err(rustls::Error::General(format!(
                "certificate does not match the pinned {}",
                self.key
            ))),
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
        match self.check(&l, end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            Err(e) => {
                // litd may have renewed its certificate: re-read the file once if it changed.
                let fresh = self.current(true)?;
                if Arc::ptr_eq(&fresh, &l) {
                    return Err(e);
                }
                self.check(&fresh, end_entity, intermediates, server_name, ocsp, now)
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

/// A client config whose server certificate check is `verifier` (ALPN is left to the caller:
/// the hyper-rustls connectors add it).
pub(crate) fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, TlsError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// A client config pinning exactly the certificates in `pem` (tests, the demo fakes).
pub fn pem_client_config(pem: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    client_config(Arc::new(PinnedVerifier::from_pem(pem)?))
}

/// A lazily connecting tonic channel to `endpoint` over TLS with `tls` (ALPN h2 added here):
/// what tonic's own `ClientTlsConfig` cannot do, a custom certificate verifier.
///
/// `endpoint` is given as `http://host:port`: the TLS is this connector's, and tonic refuses an
/// `https` URI whose TLS it does not do itself.
pub fn tonic_channel(
    endpoint: tonic::transport::Endpoint,
    tls: rustls::ClientConfig,
) -> tonic::transport::Channel {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    // Every connection of this channel is TLS, whatever scheme tonic hands the connector.
    let always_tls = tower::ServiceBuilder::new()
        .map_request(|uri: http::Uri| {
            let mut parts = uri.into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTPS);
            http::Uri::from_parts(parts)
                .unwrap_or_else(|_| http::Uri::from_static("https://invalid"))
        })
        .service(https);
    endpoint.connect_with_connector_lazy(always_tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(
        v: &dyn ServerCertVerifier,
        pem: &str,
        name: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = super::super::parse_certs(pem.as_bytes()).unwrap().remove(0);
        v.verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn an_lnd_shaped_cert_is_accepted_as_pinned_where_webpki_refuses_it() {
        let lnd = super::super::generate_lnd_style(&["localhost".into()]).unwrap();
        // WebPKI with the certificate as its only root refuses it as an end entity: the shape
        // that broke `[autopilot] tls_cert`.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(super::super::parse_certs(lnd.cert_pem.as_bytes()).unwrap()[0].clone())
            .unwrap();
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            super::super::provider(),
        )
        .build()
        .unwrap();
        let err = verify(webpki.as_ref(), &lnd.cert_pem, "localhost").unwrap_err();
        assert!(format!("{err:?}").contains("CaUsedAsEndEntity"), "{err:?}");

        let pinned = PinnedVerifier::from_pem(lnd.cert_pem.as_bytes()).unwrap();
        verify(&pinned, &lnd.cert_pem, "localhost").expect("exact pin accepted");
        // Whatever name the client dialled: the pin is the certificate itself.
        verify(&pinned, &lnd.cert_pem, "127.0.0.1").expect("exact pin accepted by IP too");

        let other = super::super::generate_lnd_style(&["localhost".into()]).unwrap();
        let err = verify(&pinned, &other.cert_pem, "localhost").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
