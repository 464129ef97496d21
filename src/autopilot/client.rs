//! The client to the Autopilot server (`[autopilot]`): one lazily connected tonic channel,
//! shared by the catalogue, the policy and the relay, with TLS from the system roots, a pinned
//! certificate, or plaintext (tests, loopback). litd dials a new connection per call; litgate
//! keeps one.
//!
//! **One deadline.** Every call, through [`Autopilot::client`] or the typed calls here, is
//! answered or fails within `autopilot.timeout` in total: waiting for a connection (TCP
//! connect, TLS handshake), sending, and the answer's head. A call that runs out of time fails
//! with UNAVAILABLE naming the timeout, and the channel is replaced, so that the next call
//! dials afresh instead of queueing behind a connection that went silent.
//!
//! **Logged once per change.** Whether the server is reachable is decided by each call's
//! outcome (an answer, even the server's own error, means reachable; a transport failure or a
//! timeout means not), and logged only when it changes: a warning when it goes down, a line
//! when it is back. Callers log what the failure means for them at debug level.
//!
//! A pinned certificate (`autopilot.tls_cert`, litd's `--autopilot.tlspath`) is matched byte
//! for byte by [`crate::tls::PinnedVerifier`], as Go's `credentials.NewClientTLSFromFile`
//! accepts it: a self-signed server certificate shaped as lnd makes them (`CA:TRUE`,
//! `keyCertSign`) is accepted as its own end entity, which WebPKI alone would refuse.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tower::{Service, ServiceExt};

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
#[derive(Clone)]
pub struct Autopilot {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Autopilot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autopilot")
            .field("addr", &self.shared.addr)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// What every clone and every call shares.
struct Shared {
    addr: String,
    timeout: Duration,
    /// The channel calls go out on, and how many times it was replaced (after a call ran out
    /// of time).
    channel: Mutex<(u64, Channel)>,
    /// Builds a fresh channel (nothing is dialled until a call).
    dial: Box<dyn Fn() -> Channel + Send + Sync>,
    /// Whether the last call reached the server.
    up: AtomicBool,
}

/// The calls' transport: the shared channel under one deadline, watching reachability. What
/// [`Autopilot::client`] returns a generated client over.
#[derive(Clone)]
pub struct Deadline {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

/// The body tonic's channel sends and answers with.
type Body = tonic::body::Body;

impl Service<http::Request<Body>> for Deadline {
    type Response = http::Response<Body>;
    type Error = tonic::Status;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, tonic::Status>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is waited for inside the call, under its deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let (dialled, channel) = shared
            .channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + shared.timeout;
            let call = channel.oneshot(req);
            let result = match tokio::time::timeout_at(deadline, call).await {
                // The answer's body (the message and trailers) is bounded by the same deadline.
                Ok(Ok(resp)) => Ok(resp.map(|body| {
                    Body::new(DeadlineBody {
                        body,
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                        shared: shared.clone(),
                    })
                })),
                // The channel gave up connecting at the same deadline (its connect timeout is
                // `autopilot.timeout` too): the timeout, whichever timer fired first.
                Ok(Err(_)) if tokio::time::Instant::now() >= deadline => {
                    shared.redial(dialled);
                    Err(shared.timed_out())
                }
                // The channel's own failure (connect, TLS, a lost connection): the server was
                // not reached, so its callers (litd, through the relay) get UNAVAILABLE, never
                // a status the server did not send. The cause stays the source, for the log.
                Ok(Err(e)) => {
                    let mut status = tonic::Status::unavailable(UNREACHABLE);
                    status.set_source(Arc::from(Box::new(e) as crate::body::BoxError));
                    Err(status)
                }
                Err(_) => {
                    shared.redial(dialled);
                    Err(shared.timed_out())
                }
            };
            shared.observe(&result);
            result
        })
    }
}

/// An answer's body, cut off with the timeout status when the call's deadline passes before
/// it ends (a server that sends the head and then goes silent).
struct DeadlineBody {
    body: Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    shared: Arc<Shared>,
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let status = self.shared.timed_out();
                self.shared.observe_failure(&status);
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The message of a call that did not reach the server (the public face says the same).
const UNREACHABLE: &str = "the Autopilot server is unavailable";

/// A call that ran out of `autopilot.timeout` (the source of the UNAVAILABLE status it
/// becomes, which marks it as litgate's failure to reach the server).
#[derive(Debug, thiserror::Error)]
#[error("no answer within autopilot.timeout ({timeout}): connect, TLS handshake and call together")]
pub struct TimedOut {
    timeout: String,
}

impl TimedOut {
    fn new(timeout: Duration) -> Self {
        TimedOut {
            timeout: humantime::format_duration(timeout).to_string(),
        }
    }
}

impl Shared {
    fn timed_out(&self) -> tonic::Status {
        let cause = TimedOut::new(self.timeout);
        let mut status = tonic::Status::unavailable(cause.to_string());
        status.set_source(Arc::new(cause));
        status
    }

    /// Replaces the channel a call went out on (its number `dialled`) unless another call
    /// already did: the next call dials afresh. The old one closes when its last call ends.
    fn redial(&self, dialled: u64) {
        let mut current = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 == dialled {
            *current = (dialled + 1, (self.dial)());
        }
    }

    /// Notes whether a call reached the server, logging a change.
    fn observe(&self, result: &Result<http::Response<Body>, tonic::Status>) {
        match result {
            Ok(_) => {
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!(server = %self.addr, "Autopilot server reachable again");
                }
            }
            Err(status) => self.observe_failure(status),
        }
    }

    /// Notes a call that did not reach the server, logging a change.
    fn observe_failure(&self, status: &tonic::Status) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                server = %self.addr,
                reason = %reason(status),
                "Autopilot server unreachable; logged again only once it is back"
            );
        }
    }
}

impl Autopilot {
    /// Builds the client; nothing is dialled until the first call.
    pub fn new(cfg: &AutopilotConfig) -> Result<Self, ClientError> {
        let addr = cfg.server.clone();
        let dial = dialer(cfg)?;
        let channel = dial();
        Ok(Autopilot {
            shared: Arc::new(Shared {
                addr,
                timeout: cfg.timeout,
                channel: Mutex::new((0, channel)),
                dial,
                up: AtomicBool::new(true),
            }),
        })
    }

    /// `autopilot.timeout`: the most any call waits for the server, in total.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether the last call reached the server (true before any call): its failures are
    /// logged by this client only when that changes.
    pub(crate) fn reachable(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// The configured server address (for messages).
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// The generated client over the shared channel, every call under `autopilot.timeout`.
    pub fn client(&self) -> AutopilotClient<Deadline> {
        AutopilotClient::new(Deadline {
            shared: self.shared.clone(),
        })
    }

    /// The error for a wait on the server that ran out of `autopilot.timeout` (`what` waited).
    pub fn timed_out(&self, what: &str) -> Error {
        Error::Autopilot {
            addr: self.shared.addr.clone(),
            reason: format!("{what}: {}", TimedOut::new(self.shared.timeout)),
        }
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
        Error::Autopilot {
            addr: self.shared.addr.clone(),
            reason: reason(status),
        }
    }
}

/// Why a call failed, in words: a transport failure with its causes, litgate's deadline or
/// the server's own status with its code.
fn reason(status: &tonic::Status) -> String {
    let source = std::error::Error::source(status);
    if let Some(t) = source.and_then(|s| s.downcast_ref::<TimedOut>()) {
        return t.to_string();
    }
    match (status.code(), source) {
        (tonic::Code::Unavailable | tonic::Code::Unknown, Some(cause)) => {
            format!("{} ({})", status.message(), crate::error::chain(cause))
        }
        (tonic::Code::Cancelled | tonic::Code::DeadlineExceeded, _) => {
            format!("no answer in time ({})", status.message())
        }
        (code, _) => format!("{code:?}: {}", status.message()),
    }
}

/// What builds the channel for `cfg`: plaintext, system roots or a pinned certificate, the
/// connection attempt (TCP and TLS) bounded by `autopilot.timeout`.
fn dialer(cfg: &AutopilotConfig) -> Result<Box<dyn Fn() -> Channel + Send + Sync>, ClientError> {
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
        .connect_timeout(cfg.timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(false);
    if cfg.plaintext {
        return Ok(Box::new(move || ep.connect_lazy()));
    }
    if !pinned {
        let host = host_port(&addr)
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let tls = ClientTlsConfig::new().domain_name(host).with_native_roots();
        let ep = ep.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        return Ok(Box::new(move || ep.connect_lazy()));
    }
    // The operator names the file: it must be there at start (unlike litd's own tls.cert,
    // which litd may not have written yet when litgate starts).
    std::fs::metadata(&cfg.tls_cert).map_err(|source| ClientError::Cert {
        path: cfg.tls_cert.display().to_string(),
        source,
    })?;
    let verifier = crate::tls::PinnedVerifier::new(cfg.tls_cert.clone(), "autopilot.tls_cert")
        .map_err(|e| bad(e.to_string()))?;
    let tls =
        crate::tls::pinned::client_config(Arc::new(verifier)).map_err(|e| bad(e.to_string()))?;
    Ok(Box::new(move || {
        crate::tls::pinned::tonic_channel(ep.clone(), tls.clone())
    }))
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
