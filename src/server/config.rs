//! `[listen]`: the public face's listener settings. Serde and validation only; the server
//! (`server::serve`) and the app read the values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::values::Report;

/// `[listen]`: the public face.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Listen address.
    #[serde(with = "crate::values::addr")]
    pub addr: SocketAddr,
    /// PEM certificate; empty: generated once into `store.data_dir`.
    pub tls_cert: PathBuf,
    /// PEM key; empty together with `tls_cert`.
    pub tls_key: PathBuf,
    /// Extra SANs for the generated certificate.
    pub tls_extra_names: Vec<String>,
    /// Serve h2c + HTTP/1.1 without TLS (loopback-only Pods).
    pub plaintext: bool,
    /// How long in-flight calls may run after SIGTERM before connections are closed.
    #[serde(with = "crate::values::duration")]
    pub drain_timeout: Duration,
    /// TLS handshakes slower than this are dropped.
    #[serde(with = "crate::values::duration")]
    pub handshake_timeout: Duration,
    /// Largest request body litgate reads for a method it inspects (bytes).
    pub max_message_bytes: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8445)),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_extra_names: Vec::new(),
            plaintext: false,
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

impl ListenConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        let (c, k) = (
            self.tls_cert.as_os_str().is_empty(),
            self.tls_key.as_os_str().is_empty(),
        );
        if c != k {
            err(
                if c {
                    "listen.tls_cert"
                } else {
                    "listen.tls_key"
                },
                "tls_cert and tls_key must be set together".into(),
            );
        }
        if self.plaintext && !c {
            err(
                "listen.tls_cert",
                "set together with listen.plaintext = true".into(),
            );
        }
        if self.max_message_bytes < 1024 {
            err("listen.max_message_bytes", "must be at least 1024".into());
        }
        if self.handshake_timeout.is_zero() {
            err(
                "listen.handshake_timeout",
                "must be greater than zero".into(),
            );
        }
    }
}
