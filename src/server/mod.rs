//! Listeners: TCP → rustls (ALPN `h2`, `http/1.1`) → the HTTP version read from the first bytes
//! → litgate's HTTP/2 server on `h2` (`http2`) or hyper's HTTP/1.1 (both on one port, exactly
//! as litd serves 8443) → a tower service. Owns `[listen]`.
//! Also serves plaintext (h2c with prior knowledge + HTTP/1.1) for loopback-only Pods. HTTP/1.1
//! connections may be upgraded (WebSockets): hyper hands an upgraded connection over and
//! forgets it, so upgraded connections run under [`Upgrades`], which the drain waits for like
//! any in-flight call. On shutdown it stops accepting, lets in-flight calls and upgraded
//! connections finish up to a deadline, closes what is left, then returns.
//!
//! What a client may hold is bounded here: connections are admitted against global and
//! per-peer caps (`connections`), each connection's life against deadlines (`conn`), each
//! response against a reader that stopped reading (`stall`), and request heads against
//! `listen.max_header_bytes` on both HTTP versions. It must never wait on a client without a
//! deadline.

pub(crate) mod config;
mod conn;
mod connections;
mod http2;
mod stall;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

pub(crate) use self::{
    connections::{ConnMetrics, Connections, Limits},
    stall::Progress,
};
use crate::body::{Request, Response};

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
    /// Kept alive by every connection spawned through this copy (the overload layer's
    /// in-flight slot, so a WebSocket counts while it is open).
    hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Upgrades {
    /// Runs `conn` (the work of one upgraded connection) until it ends or the drain deadline
    /// cuts it (dropping it closes its sockets).
    pub fn spawn<F>(&self, conn: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut = self.cut.clone();
        let hold = self.hold.clone();
        self.tracker.spawn(async move {
            let _hold = hold;
            tokio::select! {
                _ = cut.cancelled() => {}
                _ = conn => {}
            }
        });
    }

    /// The same set, whose upgraded connections keep `hold` alive until they end.
    pub(crate) fn holding(&self, hold: Arc<dyn std::any::Any + Send + Sync>) -> Upgrades {
        Upgrades {
            hold: Some(hold),
            ..self.clone()
        }
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
/// Connections are admitted against `conns` (its caps, shared with every listener it is
/// cloned into) and held to its timeouts.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: Connections,
    service: impl Served,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let upgrades = Upgrades::default();
    let shared = Arc::new(conn::Listener {
        h1: http1(&conns),
        h2: http2::builder(conns.limits()),
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        upgrades: upgrades.clone(),
        conns: conns.clone(),
    });
    let tls = shared.tls.is_some();
    let draining = CancellationToken::new();
    // Connection tasks, so the drain can wait for them and close the ones still running at
    // its deadline.
    let mut tasks = tokio::task::JoinSet::new();
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
        while tasks.try_join_next().is_some() {}
        match conns.admit(peer) {
            Ok(permit) => {
                let conn =
                    shared
                        .clone()
                        .connection(service.clone(), tcp, peer, permit, draining.clone());
                tasks.spawn(conn);
            }
            Err(refused) => {
                tracing::debug!(%peer, ?refused, "connection refused");
                connections::refuse(tcp, tls);
            }
        }
    }
    drop(listener);
    // Connections first: an upgrade still being answered is spawned before its connection
    // ends, so once they have all ended every upgraded connection is in the tracker.
    draining.cancel();
    let drained = tokio::time::timeout(drain, async {
        while tasks.join_next().await.is_some() {}
        upgrades.drained().await;
    })
    .await
    .is_ok();
    upgrades.cut().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if !drained {
        tracing::warn!(deadline = ?drain, "drain deadline passed; closed the remaining connections");
    }
}

/// hyper's HTTP/1.1 settings for a listener's connections (HTTP/2's are in `http2`).
fn http1(conns: &Connections) -> hyper::server::conn::http1::Builder {
    let limits = conns.limits();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Also the keep-alive idle time: hyper starts it as soon as an answer is done.
        .header_read_timeout(limits.header_read_timeout)
        // The request head limit: a head that does not fit the read buffer is refused with
        // 431. It also caps what one read or one write of a body buffers, which TLS records
        // (16 KiB) cap already.
        .max_buf_size(limits.max_header_bytes);
    builder
}
