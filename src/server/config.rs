//! `[listen]`: the public face's listener settings. Serde and validation only; the server
//! (`server::serve`) and the app read the values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::values::{nonzero, Report};

/// Bounds of `listen.max_header_bytes`: HTTP/1.1 heads are limited by hyper's read buffer,
/// which cannot be smaller than 8 KiB; 256 KiB is far beyond any client litd serves.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 256 * 1024;

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
    /// After the TLS handshake (or the TCP accept, in plaintext), the HTTP/2 preface or the first
    /// HTTP/1.1 request head must arrive in full within this; every later HTTP/1.1 request head
    /// too, counted from the end of the previous answer (HTTP/1.1's keep-alive idle time).
    #[serde(with = "crate::values::duration")]
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed (GOAWAY).
    #[serde(with = "crate::values::duration")]
    pub idle_timeout: Duration,
    /// An HTTP/2 connection that sent nothing for this long is sent a PING (looked at once
    /// per interval, so after one to two intervals of silence)...
    #[serde(with = "crate::values::duration")]
    pub keepalive_interval: Duration,
    /// ...and closed when the PING is not answered within this.
    #[serde(with = "crate::values::duration")]
    pub keepalive_timeout: Duration,
    /// A response whose reader takes none of the data waiting for it for this long is reset
    /// (HTTP/2: RST_STREAM; HTTP/1.1: the connection is closed).
    #[serde(with = "crate::values::duration")]
    pub stalled_stream_timeout: Duration,
    /// Largest request head (HTTP/1.1: request line and headers; HTTP/2: the header list as
    /// HPACK counts it), in bytes; larger: 431.
    pub max_header_bytes: usize,
    /// Open connections at most; more are refused at once.
    pub max_connections: usize,
    /// Open connections at most from one peer (an IPv4 address, an IPv6 /64).
    pub max_connections_per_peer: usize,
    /// Calls in flight at most (streams and WebSockets count while open); more get UNAVAILABLE
    /// / HTTP 503 with `retry-after` at once.
    pub max_in_flight: usize,
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
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            stalled_stream_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            max_connections_per_peer: 256,
            max_in_flight: 1024,
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
        for (key, d) in [
            ("listen.handshake_timeout", self.handshake_timeout),
            ("listen.header_read_timeout", self.header_read_timeout),
            ("listen.idle_timeout", self.idle_timeout),
            ("listen.keepalive_interval", self.keepalive_interval),
            ("listen.keepalive_timeout", self.keepalive_timeout),
            ("listen.stalled_stream_timeout", self.stalled_stream_timeout),
        ] {
            nonzero(err, key, d);
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            err(
                "listen.max_header_bytes",
                format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
            );
        }
        for (key, n) in [
            ("listen.max_connections", self.max_connections),
            (
                "listen.max_connections_per_peer",
                self.max_connections_per_peer,
            ),
            ("listen.max_in_flight", self.max_in_flight),
        ] {
            if n == 0 {
                err(key, "must be at least 1".into());
            }
        }
    }
}
