//! Certificate pinning towards litd: the server must present exactly the certificate in
//! `upstream.tls_cert` (litd's self-signed `tls.cert`), or a chain that verifies to it when the
//! operator pins a CA instead. System roots are never consulted: litd's cert is self-signed.

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use super::BuildError;

/// Accepts the pinned certificate byte for byte, else delegates to WebPKI with the pinned
/// certificates as the only roots.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier for `pinned` (at least one certificate).
    pub fn new(pinned: Vec<CertificateDer<'static>>) -> Self {
        let provider = crate::tls::provider();
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
        PinnedVerifier {
            pinned,
            webpki,
            provider,
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
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
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

/// A client config pinning `certs`.
pub(super) fn client_config(
    certs: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, BuildError> {
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Value {
            key: "tls_cert",
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(certs)))
        .with_no_client_auth();
    // ALPN (h2, http/1.1) is added by the hyper-rustls connector.
    Ok(cfg)
}
