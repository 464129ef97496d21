//! In-process fakes of litd and of the Autopilot server that speak the real wire protocol
//! (gRPC, grpc-web, grpc-websockets, REST; TLS or plaintext), used by `litgate demo` so a
//! newcomer sees litgate work with no node, and by every integration test of the project (hence
//! their introspection hooks: recorded requests, registrations, revocations, pause/resume).
//! They are fakes: nothing here is ever put in front of real traffic, and their state lives in
//! memory only.
//!
//! - [`litd`]: [`DemoLitd`], a fake litd on one port: `litrpc.Sessions`, `litrpc.Autopilot`,
//!   `litrpc.Status` and the test-only `litgatetest.Echo` (over gRPC, grpc-web and
//!   grpc-websockets), with litd's macaroon checks, litd's REST mapping and a few static UI
//!   files. It calls a [`DemoAutopilot`] as litd would.
//! - [`autopilot`]: [`DemoAutopilot`], a fake `autopilotserverrpc.Autopilot` with LiT's mock
//!   feature catalogue.
//! - [`macaroons`]: a real macaroon baker and verifier (root key, HMAC chain, caveats), so the
//!   fakes check real credentials and tests can attenuate them.
//! - [`serve`]: the restartable listener both fakes run on.
//! - [`run`]: `litgate demo`, the fakes with litgate in front.
//! - [`ws_client`]: a grpc-websockets client speaking as the Terminal UI does (the demo and the
//!   `grpc_websockets` example use it).

pub mod autopilot;
pub mod litd;
pub mod macaroons;
mod run;
pub mod serve;
pub mod ws_client;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

pub use autopilot::{mock_catalogue, DemoAutopilot, DemoAutopilotConfig, Registration};
pub use litd::{AutopilotTarget, DemoLitd, DemoLitdConfig, Received};
pub use macaroons::{attenuate, MacaroonBaker};
pub use run::run;

/// 127.0.0.1 on a port the OS chooses.
fn loopback_any() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

type TlsMaterial = (Option<Arc<rustls::ServerConfig>>, Option<Vec<u8>>);

/// A fresh self-signed certificate for `localhost` and `127.0.0.1` shaped exactly as litd's
/// `tls.cert` (lnd's generator: `CA:TRUE`, `keyCertSign`), as a rustls server config (ALPN h2,
/// http/1.1) and the certificate PEM for clients to pin.
fn self_signed_tls() -> io::Result<TlsMaterial> {
    let pair = crate::tls::generate_lnd_style(&["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(io::Error::other)?;
    let certs = crate::tls::parse_certs(pair.cert_pem.as_bytes()).map_err(io::Error::other)?;
    let key = crate::tls::parse_key(pair.key_pem.as_bytes()).map_err(io::Error::other)?;
    let config = crate::tls::server_config(certs, key).map_err(io::Error::other)?;
    Ok((Some(config), Some(pair.cert_pem.into_bytes())))
}
