//! The listener shared by the fakes: TCP on a fixed address, optional TLS (tokio-rustls, ALPN
//! from the rustls config), hyper-util's auto builder (HTTP/1.1 and HTTP/2, h2c by prior
//! knowledge when plaintext), and a handler per request. Every connection runs in its own task
//! that the server tracks, so [`Server::pause`] can close the listener **and** kill every open
//! connection (a client's pooled connection dies, as when litd goes down), and
//! [`Server::resume`] binds the same address again.
//!
//! Demo and test plumbing only; never in front of real traffic.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

/// The response body every fake uses.
pub type Body = tonic::body::Body;

/// A boxed response future.
pub type BoxFuture = Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>;

/// What a fake does with one request.
pub type Handler = Arc<dyn Fn(http::Request<hyper::body::Incoming>) -> BoxFuture + Send + Sync>;

type Conns = Arc<Mutex<HashMap<u64, JoinHandle<()>>>>;

struct Running {
    accept: JoinHandle<()>,
    conns: Conns,
}

impl Running {
    /// Stops accepting, then aborts every connection and waits until each task is gone (its
    /// socket closed).
    async fn stop(mut self) {
        self.accept.abort();
        // Cancelled is the expected outcome; the listener is dropped once this returns.
        let _ = (&mut self.accept).await;
        let handles: Vec<_> = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    }
}

/// A restartable server bound to one address.
pub struct Server {
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    running: tokio::sync::Mutex<Option<Running>>,
    shut: std::sync::atomic::AtomicBool,
    name: &'static str,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Rebinding after pause must work while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Server {
    /// Binds `addr` (port 0: the OS chooses) and starts serving. Listening when this returns.
    pub fn start(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> io::Result<Self> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let tls = tls.map(TlsAcceptor::from);
        let running = spawn(listener, tls.clone(), handler.clone(), name);
        tracing::debug!(server = name, %addr, tls = tls.is_some(), "demo server listening");
        Ok(Self {
            addr,
            tls,
            handler,
            running: tokio::sync::Mutex::new(Some(running)),
            shut: false.into(),
            name,
        })
    }

    /// The bound address (stable across pause/resume).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and aborts every open connection. Idempotent.
    pub async fn pause(&self) {
        let running = self.running.lock().await.take();
        if let Some(r) = running {
            r.stop().await;
            tracing::debug!(server = self.name, addr = %self.addr, "demo server paused");
        }
    }

    /// Binds the same address again and serves with the same handler (and so the same state).
    /// A no-op while running; an error after [`Server::shutdown`].
    pub async fn resume(&self) -> io::Result<()> {
        if self.shut.load(Ordering::SeqCst) {
            return Err(io::Error::other("server was shut down"));
        }
        let mut guard = self.running.lock().await;
        if guard.is_none() {
            let listener = bind(self.addr)?;
            *guard = Some(spawn(
                listener,
                self.tls.clone(),
                self.handler.clone(),
                self.name,
            ));
            tracing::debug!(server = self.name, addr = %self.addr, "demo server resumed");
        }
        Ok(())
    }

    /// Stops for good.
    pub async fn shutdown(&self) {
        self.shut.store(true, Ordering::SeqCst);
        self.pause().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping a JoinHandle does not stop its task; a dropped fake must not keep serving.
        self.accept.abort();
        for h in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            h.abort();
        }
    }
}

fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    name: &'static str,
) -> Running {
    let conns: Conns = Arc::default();
    let accept = tokio::spawn(accept_loop(listener, tls, handler, conns.clone(), name));
    Running { accept, conns }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    conns: Conns,
    name: &'static str,
) {
    let next_id = AtomicU64::new(0);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (tls, handler, conns2) = (tls.clone(), handler.clone(), conns.clone());
        // Insert under the lock before the task can remove itself.
        let mut map = conns.lock().unwrap_or_else(PoisonError::into_inner);
        let task = tokio::spawn(async move {
            serve_connection(stream, tls, handler, name, peer).await;
            conns2
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
        map.insert(id, task);
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    name: &'static str,
    peer: SocketAddr,
) {
    let svc = hyper::service::service_fn(move |req| {
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(s) => {
                builder
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await
            }
            Err(e) => {
                tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                return;
            }
        },
        None => {
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
    }
}
