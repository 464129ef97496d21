//! The pooled client to litd and the raw passthrough. Owns `[upstream]`. Sits at the bottom of
//! the public stack: every request the router does not intercept comes here and is forwarded
//! as bytes. Bodies and trailers stream both ways; nothing is decoded or buffered. One TLS
//! connection (HTTP/2, litd's `tls.cert` pinned) carries many calls. This module must never
//! log request or response headers (they carry macaroons). WebSocket upgrades are carried on
//! a connection of their own ([`Upstream::tunnel`]).

pub(crate) mod config;
pub(crate) mod litd;
mod websocket;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{header, Uri};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use prometheus_client::{metrics::counter::Counter, registry::Registry};

use self::config::UpstreamConfig;
use crate::{
    body::{boxed, Body, BoxError, Request, Response, ResponseFuture},
    error::Error,
    headers::strip_hop_by_hop,
    telemetry::metrics::registered,
};

/// Counters the upstream client keeps (names `litgate_upstream_*`).
#[derive(Debug, Clone, Default)]
pub struct UpstreamMetrics {
    /// New transport connections (TCP, and TLS where used) opened to litd.
    pub connections: Counter,
    /// Calls that failed to reach litd or broke in transport.
    pub errors: Counter,
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
            errors: registered(
                registry,
                "errors",
                "Calls that could not reach litd or broke in transport",
            ),
        }
    }
}

type Connector = Counting<hyper_rustls::HttpsConnector<HttpConnector>>;

/// A connection to litd made outside the pool: TCP, or TLS over TCP.
type Transport = tokio_util::either::Either<
    tokio::net::TcpStream,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
>;

/// The pooled client to litd. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    label: Arc<str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The same pinned TLS config with ALPN `http/1.1` only: WebSocket upgrades.
    h1_tls: Option<Arc<rustls::ClientConfig>>,
    server_name: rustls::pki_types::ServerName<'static>,
    connect_timeout: Duration,
    metrics: UpstreamMetrics,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.label)
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
    /// Builds the client from `[upstream]`. Nothing is dialled until the first call.
    pub fn new(cfg: &UpstreamConfig, metrics: UpstreamMetrics) -> Result<Self, BuildError> {
        let authority: http::uri::Authority = cfg.addr.parse().map_err(|e| BuildError::Value {
            key: "addr",
            reason: format!("{e}"),
        })?;
        let server_name = rustls::pki_types::ServerName::try_from(cfg.server_name.clone())
            .map_err(|e| BuildError::Value {
                key: "server_name",
                reason: e.to_string(),
            })?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));

        let (tls, https) = if cfg.plaintext {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::pinned::trusting_nothing()?)
                .https_or_http()
                .enable_http2()
                .wrap_connector(http);
            (None, https)
        } else {
            let verifier =
                crate::tls::PinnedVerifier::new(cfg.tls_cert.clone(), "upstream.tls_cert")?;
            let tls = crate::tls::pinned::client_config(Arc::new(verifier))?;
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only()
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                    server_name.clone(),
                ))
                .enable_http2()
                .wrap_connector(http);
            (Some(tls), https)
        };
        let h1_tls = tls.as_ref().map(|t| {
            let mut t = t.clone();
            t.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(t)
        });
        let tls = tls.map(Arc::new);
        let connector = Counting {
            inner: https,
            count: metrics.connections.clone(),
            timeout: cfg.connect_timeout,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .http2_adaptive_window(true);
        // HTTP/2 only (ALPN h2 over TLS, prior knowledge on plaintext): litd serves every
        // protocol over h2, and knowing the version up front lets the pool make concurrent
        // first calls wait for one connection instead of each dialling its own.
        builder.http2_only(true);
        let client = builder.build(connector);
        Ok(Upstream {
            client,
            scheme: if cfg.plaintext {
                http::uri::Scheme::HTTP
            } else {
                http::uri::Scheme::HTTPS
            },
            authority,
            label: cfg.addr.as_str().into(),
            tls,
            h1_tls,
            server_name,
            connect_timeout: cfg.connect_timeout,
            metrics,
        })
    }

    /// litd's address as configured (for messages).
    pub fn addr(&self) -> &str {
        &self.label
    }

    /// Forwards one request to litd as bytes and returns litd's response as it streams.
    pub fn forward(
        &self,
        mut req: Request,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let uri = self.upstream_uri(req.uri());
        *req.uri_mut() = uri;
        // The pooled connection decides the wire version; HTTP/1.1 here lets hyper use either.
        *req.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(req.headers_mut());
        req.headers_mut().remove(header::HOST);
        let fut = self.client.request(req);
        let label = self.label.clone();
        let errors = self.metrics.errors.clone();
        async move {
            match fut.await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, boxed(body)))
                }
                Err(e) => {
                    errors.inc();
                    Err(Error::Upstream {
                        addr: label.to_string(),
                        reason: describe(&e),
                    })
                }
            }
        }
    }

    /// Opens a fresh connection and completes a TLS handshake (or TCP connect when plaintext),
    /// bypassing the pool: what `/ready` needs to know.
    pub async fn probe(&self) -> Result<(), Error> {
        self.dial(self.tls.as_ref()).await.map(drop)
    }

    /// A new transport connection to litd outside the pool, TLS with `tls` (pinned) unless
    /// plaintext, within `upstream.connect_timeout`.
    async fn dial(&self, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Transport, Error> {
        let fail = |reason: String| Error::Upstream {
            addr: self.label.to_string(),
            reason,
        };
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = self.authority.port_u16().unwrap_or(443);
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Transport::Left(tcp)),
                Some(tls) => tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(self.server_name.clone(), tcp)
                    .await
                    .map(Transport::Right)
                    .map_err(|e| fail(format!("TLS handshake failed: {e}"))),
            }
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.connect_timeout)))?
    }

    fn upstream_uri(&self, uri: &Uri) -> Uri {
        let pq = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
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

/// Counts the connections the inner connector opens and bounds each attempt (TCP connect and
/// TLS handshake together) by `upstream.connect_timeout`.
#[derive(Clone)]
pub struct Counting<C> {
    inner: C,
    count: Counter,
    timeout: Duration,
}

impl<C> tower::Service<Uri> for Counting<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.count.inc();
        let fut = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect and TLS handshake took longer than {timeout:?}"),
                )
                .into()),
            }
        })
    }
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
