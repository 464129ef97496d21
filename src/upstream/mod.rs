//! The client to litd and the raw passthrough. Owns `[upstream]`. Sits at the bottom of the
//! public stack: every request the router does not intercept comes here and is forwarded as
//! bytes. Bodies and trailers stream both ways; nothing is decoded or buffered beyond what a
//! retry needs ([`replay`]). Calls go out on HTTP/2 connections held directly, one set per
//! runtime ([`pool`]), TLS with litd's `tls.cert` pinned, each call sent and read from the
//! caller's own task ([`stream`]). A call litd provably never saw is
//! retried once on another connection; any other failure to reach litd is `UNAVAILABLE`, also
//! when it breaks an answer mid-way ([`answer`]). This module must never log request or
//! response headers (they carry macaroons). WebSocket upgrades are carried on a connection of
//! their own ([`Upstream::tunnel`]).

mod answer;
pub(crate) mod config;
pub(crate) mod litd;
pub(crate) mod pool;
mod replay;
mod stream;
mod websocket;

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{header, Uri};
use http_body::Body as _;
use prometheus_client::{metrics::counter::Counter, registry::Registry};

pub(crate) use self::stream::{Pipe, RecvBody, Toward};
use self::{answer::Answer, config::UpstreamConfig, pool::Lanes, replay::never_reached};
use crate::{
    body::{boxed, Request, Response, ResponseFuture},
    error::Error,
    grpc::Protocol,
    headers::strip_hop_by_hop,
    telemetry::metrics::registered,
};

/// Counters the upstream client keeps (names `litgate_upstream_*`).
#[derive(Debug, Clone, Default)]
pub struct UpstreamMetrics {
    /// New transport connections (TCP, and TLS where used) opened to litd.
    pub connections: Counter,
    /// Connection attempts to litd that failed (TCP, TLS or the deadline), the `/ready` probe's
    /// included; `connections` counts only the ones that were established.
    pub connect_failures: Counter,
    /// Calls that failed to reach litd or broke in transport.
    pub errors: Counter,
    /// Calls retried because litd provably never saw the first attempt.
    pub retries: Counter,
}

impl UpstreamMetrics {
    /// The counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        UpstreamMetrics {
            connections: registered(
                registry,
                "connections",
                "Transport connections opened to litd (one serves many calls)",
            ),
            connect_failures: registered(
                registry,
                "connect_failures",
                "Connection attempts to litd that failed (TCP connect, TLS handshake or deadline)",
            ),
            errors: registered(
                registry,
                "errors",
                "Calls that could not reach litd or broke in transport",
            ),
            retries: registered(
                registry,
                "retries",
                "Calls sent again because litd refused or never saw the first attempt",
            ),
        }
    }
}

/// A connection to litd: TCP, or TLS over TCP.
type Transport = tokio_util::either::Either<
    tokio::net::TcpStream,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
>;

/// The client to litd. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Lanes,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    label: Arc<str>,
    /// Pinned TLS with ALPN `h2` (calls), unless plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The same pinned TLS config with ALPN `http/1.1` only: WebSocket upgrades.
    h1_tls: Option<Arc<rustls::ClientConfig>>,
    server_name: rustls::pki_types::ServerName<'static>,
    connect_timeout: Duration,
    metrics: UpstreamMetrics,
    /// Whether the last connection attempt failed: an outage is logged once when it begins
    /// and once when it ends, not once per call.
    down: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.inner.label)
            .finish_non_exhaustive()
    }
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// litd's certificate could not be loaded.
    #[error("upstream.tls_cert: {0}")]
    Cert(#[from] crate::tls::TlsError),
    /// A config value does not form a URI.
    #[error("upstream.{key}: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Upstream {
    /// Builds the client from `[upstream]` for `runtimes` runtimes (each gets connections of
    /// its own). Nothing is dialled until the first call.
    pub fn new(
        cfg: &UpstreamConfig,
        runtimes: usize,
        metrics: UpstreamMetrics,
    ) -> Result<Self, BuildError> {
        let authority: http::uri::Authority = cfg.addr.parse().map_err(|e| BuildError::Value {
            key: "addr",
            reason: format!("{e}"),
        })?;
        let server_name = rustls::pki_types::ServerName::try_from(cfg.server_name.clone())
            .map_err(|e| BuildError::Value {
                key: "server_name",
                reason: e.to_string(),
            })?;
        let tls = if cfg.plaintext {
            None
        } else {
            let verifier =
                crate::tls::PinnedVerifier::new(cfg.tls_cert.clone(), "upstream.tls_cert")?;
            Some(crate::tls::pinned::client_config(Arc::new(verifier))?)
        };
        let with_alpn = |proto: &[u8]| {
            tls.as_ref().map(|t| {
                let mut t = t.clone();
                t.alpn_protocols = vec![proto.to_vec()];
                Arc::new(t)
            })
        };
        Ok(Upstream {
            inner: Arc::new(Inner {
                lanes: Lanes::new(runtimes),
                scheme: if cfg.plaintext {
                    http::uri::Scheme::HTTP
                } else {
                    http::uri::Scheme::HTTPS
                },
                authority,
                label: cfg.addr.as_str().into(),
                tls: with_alpn(b"h2"),
                h1_tls: with_alpn(b"http/1.1"),
                server_name,
                connect_timeout: cfg.connect_timeout,
                metrics,
                down: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// litd's address as configured (for messages).
    pub fn addr(&self) -> &str {
        &self.inner.label
    }

    /// Forwards one request to litd as bytes and returns litd's response as it streams.
    pub fn forward(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let up = self.clone();
        let protocol = Protocol::of(&req);
        let (mut parts, body) = req.into_parts();
        parts.uri = self.upstream_uri(&parts.uri);
        parts.version = http::Version::HTTP_2;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        async move {
            let inner = &up.inner;
            // The head again for a second attempt; the body is kept as it is read.
            let head = (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            );
            let (kept, body) = match body.is_end_stream() {
                true => (None, crate::body::empty()),
                false => {
                    let (kept, first) = replay::keep(body);
                    (Some(kept), boxed(first))
                }
            };
            let mut req = Request::from_parts(parts, body);
            let mut retried_from = None;
            loop {
                // A held connection is taken without an await; dialling (a TLS handshake's
                // future is a few KB) is boxed, so that every call's future stays small.
                let conn = match inner.lanes.pick(retried_from) {
                    Some(conn) => conn,
                    None => Box::pin(inner.lanes.get(retried_from, || up.connect()))
                        .await
                        .inspect_err(|_| {
                            inner.metrics.errors.inc();
                        })?,
                };
                let (send, slot) = conn.take();
                let failed = match stream::call(send, req).await {
                    Ok(resp) => {
                        if let Some(kept) = &kept {
                            kept.seal();
                        }
                        // No hop-by-hop fields to drop: h2 refuses an answer that carries
                        // any (RFC 9113 §8.2.2); litgate's HTTP/2 server strips every answer
                        // it sends all the same.
                        let (parts, body) = resp.into_parts();
                        let errors = inner.metrics.errors.clone();
                        let body = Answer::new(body, slot, protocol, errors);
                        return Ok(Response::from_parts(parts, boxed(body)));
                    }
                    Err(e) => e,
                };
                drop(slot);
                let again = match &kept {
                    _ if retried_from.is_some() || !never_reached(&failed) => None,
                    None => Some(crate::body::empty()),
                    Some(kept) => kept.again().map(boxed),
                };
                let Some(body) = again else {
                    inner.metrics.errors.inc();
                    return Err(up.unavailable(describe(failed.error())));
                };
                inner.metrics.retries.inc();
                let reason = describe(failed.error());
                tracing::debug!(error = %reason, "litd never saw the call; sending it again");
                let mut r = Request::new(body);
                *r.method_mut() = head.0.clone();
                *r.uri_mut() = head.1.clone();
                *r.version_mut() = http::Version::HTTP_2;
                *r.headers_mut() = head.2.clone();
                req = r;
                retried_from = Some(conn.id);
            }
        }
    }

    /// A new HTTP/2 connection to litd, its task on this runtime.
    async fn connect(&self) -> Result<pool::Sender, Error> {
        let io = self.dial(self.inner.tls.as_ref()).await?;
        self.inner.metrics.connections.inc();
        pool::handshake(io)
            .await
            .map_err(|e| self.unavailable(describe(&e)))
    }

    /// litd unavailable, for `reason`.
    fn unavailable(&self, reason: String) -> Error {
        Error::Upstream {
            addr: self.inner.label.to_string(),
            reason,
        }
    }

    /// Opens a fresh connection and completes a TLS handshake (or TCP connect when plaintext),
    /// apart from the calls' connections: what `/ready` needs to know.
    pub async fn probe(&self) -> Result<(), Error> {
        self.dial(self.inner.tls.as_ref()).await.map(drop)
    }

    /// A new transport connection to litd, TLS with `tls` (pinned) unless
    /// plaintext, within `upstream.connect_timeout`.
    async fn dial(&self, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Transport, Error> {
        let fail = |reason: String| Error::Upstream {
            addr: self.inner.label.to_string(),
            reason,
        };
        let host = self
            .inner
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = self.inner.authority.port_u16().unwrap_or(443);
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Transport::Left(tcp)),
                Some(tls) => tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(self.inner.server_name.clone(), tcp)
                    .await
                    .map(Transport::Right)
                    .map_err(|e| fail(format!("TLS handshake failed: {e}"))),
            }
        };
        let result = tokio::time::timeout(self.inner.connect_timeout, attempt)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.inner.connect_timeout)))
            .and_then(|r| r);
        self.saw(&result);
        result
    }

    /// Records what a connection attempt found: failures are counted, and a change between
    /// reachable and unreachable is logged (warn when litd goes away, info when it is back).
    fn saw<T>(&self, result: &Result<T, Error>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => {
                if self.inner.down.swap(false, Ordering::AcqRel) {
                    tracing::info!(litd = %self.inner.label, "litd is reachable again");
                }
            }
            Err(e) => {
                self.inner.metrics.connect_failures.inc();
                if !self.inner.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        litd = %self.inner.label,
                        error = %e,
                        "litd is unreachable: calls get UNAVAILABLE until it is back"
                    );
                }
            }
        }
    }

    fn upstream_uri(&self, uri: &Uri) -> Uri {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.inner.scheme.clone());
        parts.authority = Some(self.inner.authority.clone());
        parts.path_and_query = Some(pq);
        // Scheme, authority and path are all present, so this cannot fail.
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }
}

impl tower::Service<Request> for Upstream {
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(self.forward(req))
    }
}

/// The error and its causes on one line, e.g. `client error (Connect): tcp connect error:
/// Connection refused (os error 111)`; a timeout anywhere in the chain (the connect deadline,
/// the OS's own) names the key that bounds it.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = crate::error::chain(e);
    if timed_out(e) {
        s.push_str(" (upstream.connect_timeout)");
    }
    s
}

/// Whether `e` or any of its causes is an I/O timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_anywhere_in_the_chain_name_the_key() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let slow = Outer(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ));
        assert_eq!(
            describe(&slow),
            "client error (Connect): deadline has elapsed (upstream.connect_timeout)"
        );
        let refused = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(
            describe(&refused),
            "client error (Connect): Connection refused"
        );
    }
}
