//! The listeners and the public face's TLS: every address bound before anything is served,
//! each failure naming its config key.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::net::TcpListener;

use super::StartError;
use crate::config::Config;

/// The bound listeners, each with the address it got (port 0 picks one).
pub(super) struct Listeners {
    /// One per runtime, all on one address (`SO_REUSEPORT` when more than one): the first is
    /// served by the runtime that starts litgate, the others by runtimes of their own.
    pub(super) public: (Vec<std::net::TcpListener>, SocketAddr),
    pub(super) admin: (TcpListener, SocketAddr),
    pub(super) relay: Option<(TcpListener, SocketAddr)>,
}

impl Listeners {
    /// Binds `[listen] addr` `runtimes` times, `[admin] addr` and, when `relay` is on,
    /// `[autopilot.relay] addr`.
    pub(super) async fn bind(
        cfg: &Config,
        relay: bool,
        runtimes: usize,
    ) -> Result<Listeners, StartError> {
        Ok(Listeners {
            public: bind_shared("listen.addr", cfg.listen.addr, runtimes)?,
            admin: bind("admin.addr", cfg.admin.addr).await?,
            relay: match cfg.autopilot.relay.addr.filter(|_| relay) {
                Some(addr) => Some(bind("autopilot.relay.addr", addr).await?),
                None => None,
            },
        })
    }
}

async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// `count` listeners on `addr` (port 0: the first one's port), each to be registered with its
/// own runtime. With more than one they share the port through `SO_REUSEPORT` and the kernel
/// spreads new connections over them; a single listener does not set it, so a second process
/// cannot join the port unnoticed.
fn bind_shared(
    key: &'static str,
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { key, addr, source };
    let first = socket(addr, count > 1).map_err(fail)?;
    let local = first.local_addr().map_err(fail)?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(socket(local, true).map_err(fail)?);
    }
    Ok((all, local))
}

/// A non-blocking listening socket as tokio binds one (`SO_REUSEADDR`, backlog 1024).
fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The public face's TLS (also the relay's with `[autopilot.relay] tls`).
pub(super) struct PublicTls {
    /// `None` with `[listen] plaintext`.
    pub(super) config: Option<Arc<rustls::ServerConfig>>,
    /// The certificate clients pin.
    pub(super) cert_path: Option<PathBuf>,
    /// Whether this start generated it.
    pub(super) generated: bool,
    /// The pair served, for a reload to swap.
    pub(super) cert: Option<Arc<crate::tls::swap::SwappableCert>>,
}

/// Loads (or generates, once) the public face's certificate: file reads, key generation and
/// the fsync of a new pair run on the blocking pool, not on the runtime that starts litgate.
pub(super) async fn public_tls(cfg: &Config) -> Result<PublicTls, StartError> {
    if cfg.listen.plaintext {
        return Ok(PublicTls {
            config: None,
            cert_path: None,
            generated: false,
            cert: None,
        });
    }
    let source = crate::tls::CertSource::of(&cfg.listen, &cfg.store.data_dir);
    let t = tokio::task::spawn_blocking(move || crate::tls::server_tls(&source))
        .await
        .map_err(|e| {
            StartError::Config(format!("listen: loading the certificate failed: {e}"))
        })??;
    Ok(PublicTls {
        config: Some(t.config),
        cert_path: Some(t.cert_path),
        generated: t.generated,
        cert: Some(t.cert),
    })
}
