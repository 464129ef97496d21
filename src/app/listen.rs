//! The listeners and the public face's TLS: every address bound before anything is served,
//! each failure naming its config key.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::net::TcpListener;

use super::StartError;
use crate::config::Config;

/// The bound listeners, each with the address it got (port 0 picks one).
pub(super) struct Listeners {
    pub(super) public: (TcpListener, SocketAddr),
    pub(super) admin: (TcpListener, SocketAddr),
    pub(super) relay: Option<(TcpListener, SocketAddr)>,
}

impl Listeners {
    /// Binds `[listen] addr`, `[admin] addr` and, when `relay` is on, `[autopilot.relay] addr`.
    pub(super) async fn bind(cfg: &Config, relay: bool) -> Result<Listeners, StartError> {
        Ok(Listeners {
            public: bind("listen.addr", cfg.listen.addr).await?,
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

/// Loads (or generates, once) the public face's certificate.
pub(super) fn public_tls(cfg: &Config) -> Result<PublicTls, StartError> {
    if cfg.listen.plaintext {
        return Ok(PublicTls {
            config: None,
            cert_path: None,
            generated: false,
            cert: None,
        });
    }
    let t = crate::tls::server_tls(&crate::tls::CertSource::of(
        &cfg.listen,
        &cfg.store.data_dir,
    ))?;
    Ok(PublicTls {
        config: Some(t.config),
        cert_path: Some(t.cert_path),
        generated: t.generated,
        cert: Some(t.cert),
    })
}
