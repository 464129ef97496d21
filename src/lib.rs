#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! litgate: an autopilot registration proxy sidecar for Lightning Terminal (litd).
//!
//! ```text
//!  clients: litcli, Terminal UI, apps, scripts       (gRPC, grpc-web, REST; TLS; macaroon)
//!    |
//!    v
//!  litgate public face :8445                          server.rs (TLS, ALPN h2 + http/1.1)
//!    trace > rescue > metrics > identity > router     layers/, router.rs (app::public_stack)
//!      router: AddAutopilotSession, ListSessions, ListAutopilotSessions, session writes
//!              (named, passing through until their handlers land); everything else:
//!              raw passthrough                        upstream/
//!    |
//!    v  HTTPS, litd's tls.cert pinned, one pooled HTTP/2 connection
//!  litd 127.0.0.1:8443
//!
//!  litgate admin face :9445   /live  /ready  /metrics  admin.rs
//! ```
//!
//! A request enters through [`server::serve`], gets a span ([`layers::trace`]), is counted
//! ([`layers::metrics`]), has its caller read ([`layers::identity`]), and is dispatched by
//! [`router::Router`]; anything not intercepted is forwarded as bytes by
//! [`upstream::Upstream`], bodies and trailers streaming both ways. Errors become responses
//! in one place, [`layers::rescue`], in the caller's protocol ([`grpc`]).

pub mod admin;
pub mod app;
pub mod autopilot;
pub mod body;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod grpc;
pub mod layers;
pub mod macaroon;
pub mod methods;
pub mod proto;
pub mod router;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
