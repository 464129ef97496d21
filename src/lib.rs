#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! litgate: an autopilot registration proxy sidecar for Lightning Terminal (litd).
//!
//! ```text
//!  clients: litcli, Terminal UI, apps, scripts    (gRPC, grpc-web(-websockets), REST; TLS)
//!    |
//!    v
//!  public face :8445                     server/ (TLS, ALPN h2 + http/1.1), app::public_stack
//!    trace > rescue > metrics > overload > identity > rate limit > router  layers/, router/
//!      router: AddAutopilotSession ........ autopilot/add_session.rs (auth, policy, rewrite)
//!              ListSessions, ListAutopilotSessions ......... cache/ (sled, per credential)
//!              AddSession, Revoke*Session ........... invalidate the cache, pass through
//!              anything else ....................... raw passthrough, upstream/
//!              WebSocket upgrades ..... grpc-websockets to the methods above: terminated and
//!                                       dispatched as grpc-web (router/terminate.rs); REST
//!                                       WebSockets to session writes: refused; the rest:
//!                                       tunnelled on an HTTP/1.1 connection of their own
//!    |
//!    v  HTTPS, litd's tls.cert pinned, one pooled HTTP/2 connection
//!  litd 127.0.0.1:8443
//!    |  litd's autopilot client (autopilot.address = the relay)
//!    v
//!  relay face :12010          app::relay_stack, autopilot/relay/ (ledger, reconciliation)
//!    |  one pooled channel                autopilot/client.rs
//!    v
//!  Autopilot server
//!
//!  admin face :9445   /live /ready /metrics /registrations                           admin/
//! ```
//!
//! A request enters through `server::serve`, gets a span (`layers::trace`), is counted
//! (`layers::metrics`), is shed when too many calls are in flight (`layers::overload`), has
//! its caller read (`layers::identity`) and limited (`layers::rate_limit`), and is
//! dispatched by `router::Router`; anything not intercepted
//! is forwarded as bytes by `upstream::Upstream`, bodies and trailers streaming both ways;
//! WebSockets are tunnelled as bytes (`upstream::Upstream::tunnel`) unless they carry a call
//! to an intercepted method. Everything about the gRPC wire (frames, header blocks, where a
//! status lives, litgate's own statuses) is in `grpc`. Errors become responses in one place
//! per face (`layers::rescue`, the relay's `Relay::finish`). Persistent state lives behind
//! `store::Store`, the only user of sled. The design and its reasons: `docs/design.md`.

// The library's API: what the binary, the integration tests, the benches and the examples
// use. Everything else is crate-private, so the compiler reports what nothing uses.
pub mod admin;
pub mod app;
pub mod autopilot;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod init;
pub mod layers;
pub mod macaroon;
pub mod notify;
pub mod proto;
pub mod reload;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod version;

pub(crate) mod body;
pub(crate) mod cache;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod methods;
pub(crate) mod router;
pub(crate) mod server;
pub(crate) mod upstream;
pub(crate) mod values;

// Property-based fuzz tests of every decoder of outside bytes (test builds only).
#[cfg(test)]
mod fuzz;
