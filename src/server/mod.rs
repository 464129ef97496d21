//! Listeners: TCP → rustls (ALPN `h2`, `http/1.1`) → hyper's auto connection (HTTP/1.1 and
//! HTTP/2 on one port, exactly as litd serves 8443) → a tower service. Owns `[listen]`.
//! Also serves plaintext (h2c with prior knowledge + HTTP/1.1) for loopback-only Pods. HTTP/1.1
//! connections may be upgraded (WebSockets): hyper hands an upgraded connection over and
//! forgets it, so upgraded connections run under [`Upgrades`], which the drain waits for like
//! any in-flight call. On shutdown it stops accepting, lets in-flight calls and upgraded
//! connections finish up to a deadline, closes what is left, then returns.

pub(crate) mod config;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Service, ServiceExt};

use crate::body::{boxed, Request, Response};

/// What a listener serves: a cloneable service of litgate's requests that never fails (errors
/// are responses by then).
pub(crate) trait Served:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Served for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The connection a request arrived on: a request extension set by the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo {
    /// The client's address.
    pub peer: SocketAddr,
}

/// The upgraded connections (WebSocket tunnels, terminated grpc-websockets calls) of one
/// listener: a request extension set by [`serve`]. They count as in flight for the drain, and
/// the ones still open at its deadline are closed.
#[derive(Debug, Clone, Default)]
pub struct Upgrades {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl Upgrades {
    /// Runs `conn` (the work of one upgraded connection) until it ends or the drain deadline
    /// cuts it (dropping it closes its sockets).
    pub fn spawn<F>(&self, conn: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cut.cancelled() => {}
                _ = conn => {}
            }
        });
    }

    /// The listener's `Upgrades` a request carries; a request that did not come through
    /// [`serve`] (unit tests) gets a set that nothing drains.
    pub fn of<B>(req: &http::Request<B>) -> Upgrades {
        req.extensions()
            .get::<Upgrades>()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every upgraded connection has ended; new ones may still start meanwhile.
    async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Closes every upgraded connection still open and waits until they are gone.
    async fn cut(&self) {
        self.cut.cancel();
        self.drained().await;
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake_timeout: Duration,
    service: impl Served,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let upgrades = Upgrades::default();
    // Connection tasks, so the ones still running at the drain deadline can be closed.
    let mut conns = tokio::task::JoinSet::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .adaptive_window(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set holds only live ones.
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let info = ConnectInfo { peer };
        let svc = service.clone();
        let upgrades = upgrades.clone();
        let hyper_svc =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(boxed);
                req.extensions_mut().insert(info);
                req.extensions_mut().insert(upgrades.clone());
                svc.clone().oneshot(req)
            });
        let builder = builder.clone();
        match &acceptor {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), hyper_svc)
                    .into_owned();
                let watcher = graceful.watcher();
                conns.spawn(async move {
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %peer, "connection ended with error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                // The handshake runs in the connection's task so a slow client cannot stall
                // the accept loop; connections still handshaking at shutdown are just dropped.
                let watcher = graceful.watcher();
                conns.spawn(async move {
                    let tls =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), hyper_svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %peer, "connection ended with error");
                    }
                });
            }
        }
    }
    drop(listener);
    // Connections first: an upgrade still being answered is spawned before its connection
    // ends, so once they have all ended every upgraded connection is in the tracker.
    let drained = tokio::time::timeout(drain, async {
        graceful.shutdown().await;
        upgrades.drained().await;
    })
    .await
    .is_ok();
    upgrades.cut().await;
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    if !drained {
        tracing::warn!(deadline = ?drain, "drain deadline passed; closed the remaining connections");
    }
}
