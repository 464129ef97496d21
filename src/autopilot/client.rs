//! The client to the Autopilot server (`[autopilot]`): one lazily connected tonic channel,
//! shared by the catalogue, the policy and the relay, with TLS from the system roots, a pinned
//! certificate, or plaintext (tests, loopback), and a deadline on every call. litd dials a new
//! connection per call; litgate keeps one.
//!
//! A pinned certificate (`autopilot.tls_cert`, litd's `--autopilot.tlspath`) is matched byte
//! for byte by [`crate::tls::PinnedVerifier`], as Go's `credentials.NewClientTLSFromFile`
//! accepts it: a self-signed server certificate shaped as lnd makes them (`CA:TRUE`,
//! `keyCertSign`) is accepted as its own end entity, which WebPKI alone would refuse.

use std::{sync::Arc, time::Duration};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::config::AutopilotConfig;
use crate::{
    error::Error,
    proto::autopilotserverrpc::{
        autopilot_client::AutopilotClient, ListFeaturesRequest, ListFeaturesResponse, TermsRequest,
        TermsResponse,
    },
    values::host_port,
};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `autopilot.tls_cert` could not be read.
    #[error("autopilot.tls_cert {path}: {source}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address or TLS settings are unusable.
    #[error("autopilot.server {addr}: {reason}")]
    Endpoint {
        /// The configured address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A handle to the Autopilot server. Cheap to clone; clones share the channel.
#[derive(Clone, Debug)]
pub struct Autopilot {
    channel: Channel,
    addr: String,
}

impl Autopilot {
    /// Builds the client; nothing is dialled until the first call.
    pub fn new(cfg: &AutopilotConfig) -> Result<Self, ClientError> {
        let addr = cfg.server.clone();
        let bad = |reason: String| ClientError::Endpoint {
            addr: addr.clone(),
            reason,
        };
        let pinned = !cfg.plaintext && !cfg.tls_cert.as_os_str().is_empty();
        // A pinned channel does its own TLS under an `http` URI (see `tonic_channel`).
        let scheme = if cfg.plaintext || pinned {
            "http"
        } else {
            "https"
        };
        let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .timeout(cfg.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        let channel = if cfg.plaintext {
            ep.connect_lazy()
        } else if !pinned {
            let host = host_port(&addr)
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            let tls = ClientTlsConfig::new().domain_name(host).with_native_roots();
            ep.tls_config(tls)
                .map_err(|e| bad(e.to_string()))?
                .connect_lazy()
        } else {
            // The operator names the file: it must be there at start (unlike litd's own
            // tls.cert, which litd may not have written yet when litgate starts).
            std::fs::metadata(&cfg.tls_cert).map_err(|source| ClientError::Cert {
                path: cfg.tls_cert.display().to_string(),
                source,
            })?;
            let verifier =
                crate::tls::PinnedVerifier::new(cfg.tls_cert.clone(), "autopilot.tls_cert")
                    .map_err(|e| bad(e.to_string()))?;
            let tls = crate::tls::pinned::client_config(Arc::new(verifier))
                .map_err(|e| bad(e.to_string()))?;
            crate::tls::pinned::tonic_channel(ep, tls)
        };
        Ok(Autopilot { channel, addr })
    }

    /// The configured server address (for messages).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The generated client over the shared channel.
    pub fn client(&self) -> AutopilotClient<Channel> {
        AutopilotClient::new(self.channel.clone())
    }

    /// `Terms`.
    pub async fn terms(&self) -> Result<TermsResponse, Error> {
        self.client()
            .terms(TermsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.unavailable(&s))
    }

    /// `ListFeatures`.
    pub async fn list_features(&self) -> Result<ListFeaturesResponse, Error> {
        self.client()
            .list_features(ListFeaturesRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.unavailable(&s))
    }

    /// An UNAVAILABLE error naming the server, from a failed call: a transport failure (the
    /// status carries the transport error as its source) with its causes, a timeout as such,
    /// and the server's own status with its code.
    pub fn unavailable(&self, status: &tonic::Status) -> Error {
        let transport = std::error::Error::source(status);
        let reason = match (status.code(), transport) {
            (tonic::Code::Unavailable | tonic::Code::Unknown, Some(cause)) => {
                format!("{} ({})", status.message(), crate::error::chain(cause))
            }
            (tonic::Code::Cancelled | tonic::Code::DeadlineExceeded, _) => {
                format!("no answer in time ({})", status.message())
            }
            (code, _) => format!("{code:?}: {}", status.message()),
        };
        Error::Autopilot {
            addr: self.addr.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transport_failure_is_told_from_the_servers_own_status() {
        let cfg = AutopilotConfig {
            server: "autopilot.example:12010".into(),
            plaintext: true,
            ..Default::default()
        };
        // Nothing is dialled: the channel connects lazily.
        let client = Autopilot::new(&cfg).unwrap();
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let transport = tonic::Status::from_error(Box::new(refused));
        let e = client.unavailable(&transport).to_string();
        assert!(e.ends_with("(refused)"), "{e}");
        // The server's own UNAVAILABLE, even if its message says "transport".
        let own = tonic::Status::unavailable("transport maintenance");
        assert_eq!(
            client.unavailable(&own).to_string(),
            "Autopilot server autopilot.example:12010 is unavailable: Unavailable: transport maintenance"
        );
        let late = tonic::Status::deadline_exceeded("Timeout expired");
        assert!(client
            .unavailable(&late)
            .to_string()
            .ends_with("no answer in time (Timeout expired)"));
    }
}
