//! `[upstream]`: litd's address, its pinned certificate and litgate's own credential. Serde and
//! validation only; the upstream client reads the values.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::values::{host_port, Report};

/// `[upstream]`: litd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// litd's `--httpslisten` address, `host:port`.
    pub addr: String,
    /// litd's `tls.cert`, pinned.
    pub tls_cert: PathBuf,
    /// Name for SNI and certificate checks.
    pub server_name: String,
    /// Plaintext h2c towards litd's `--insecure-httplisten`.
    pub plaintext: bool,
    /// litgate's own credential for its lookups (hex file); empty: none.
    pub macaroon: PathBuf,
    /// TCP connect + TLS handshake deadline.
    #[serde(with = "crate::values::duration")]
    pub connect_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8443".into(),
            tls_cert: "/home/lit/.lit/tls.cert".into(),
            server_name: "localhost".into(),
            plaintext: false,
            macaroon: PathBuf::new(),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl UpstreamConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if host_port(&self.addr).is_none() {
            err("upstream.addr", format!("{:?} is not host:port", self.addr));
        }
        if !self.plaintext && self.tls_cert.as_os_str().is_empty() {
            err(
                "upstream.tls_cert",
                "required unless upstream.plaintext = true (litd's tls.cert is pinned)".into(),
            );
        }
        if !self.plaintext
            && rustls::pki_types::ServerName::try_from(self.server_name.as_str()).is_err()
        {
            err(
                "upstream.server_name",
                format!("{:?} is not a DNS name or IP address", self.server_name),
            );
        }
        if self.connect_timeout.is_zero() {
            err(
                "upstream.connect_timeout",
                "must be greater than zero".into(),
            );
        }
    }
}
