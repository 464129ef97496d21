//! The router: the only place that maps paths to handlers. Every intercepted gRPC method is
//! named here together with its REST twin; everything else goes to the raw passthrough.
//! AddAutopilotSession goes to the autopilot policy in every protocol; the two session lists go
//! to the session cache, and every session write (including AddAutopilotSession) has its answer
//! passed through the cache, which invalidates itself before the caller sees a success. With
//! the cache off (`[cache] enabled = false`) lists and writes pass through untouched.
//!
//! WebSocket upgrades: a grpc-websockets call to an intercepted method is terminated here and
//! dispatched as the grpc-web call it carries (same policy, same cache); an upgrade that could
//! make litd's REST WebSocket proxy write sessions is refused (litgate cannot see inside it);
//! every other upgrade is tunnelled to litd as bytes.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Method;
use tower::Service;

use crate::{
    autopilot::add_session::AddSessionHandler,
    body::{Request, Response},
    cache::Cache,
    error::Error,
    grpc::{
        websocket::{self, Upgrade},
        Protocol,
    },
    upstream::Upstream,
};

/// `litrpc.Autopilot/AddAutopilotSession`: autopilot policy.
pub const ADD_AUTOPILOT_SESSION: &str = "/litrpc.Autopilot/AddAutopilotSession";
/// `litrpc.Sessions/ListSessions`: session cache.
pub const LIST_SESSIONS: &str = "/litrpc.Sessions/ListSessions";
/// `litrpc.Autopilot/ListAutopilotSessions`: session cache.
pub const LIST_AUTOPILOT_SESSIONS: &str = "/litrpc.Autopilot/ListAutopilotSessions";
/// `litrpc.Sessions/AddSession`: invalidates the cache.
pub const ADD_SESSION: &str = "/litrpc.Sessions/AddSession";
/// `litrpc.Sessions/RevokeSession`: invalidates the cache.
pub const REVOKE_SESSION: &str = "/litrpc.Sessions/RevokeSession";
/// `litrpc.Autopilot/RevokeAutopilotSession`: invalidates the cache.
pub const REVOKE_AUTOPILOT_SESSION: &str = "/litrpc.Autopilot/RevokeAutopilotSession";

/// REST twin of [`ADD_AUTOPILOT_SESSION`] (POST, body *).
pub const REST_AUTOPILOT_SESSIONS: &str = "/v1/autopilot/sessions";
/// REST twin of [`LIST_SESSIONS`] (GET) and [`ADD_SESSION`] (POST).
pub const REST_SESSIONS: &str = "/v1/sessions";

/// A route: an intercepted method, or the passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// AddAutopilotSession (gRPC, grpc-web, `POST /v1/autopilot/sessions`).
    AddAutopilotSession,
    /// ListSessions (`GET /v1/sessions`).
    ListSessions,
    /// ListAutopilotSessions (`GET /v1/autopilot/sessions`).
    ListAutopilotSessions,
    /// AddSession (`POST /v1/sessions`).
    AddSession,
    /// RevokeSession (`DELETE /v1/sessions/{local_public_key}`).
    RevokeSession,
    /// RevokeAutopilotSession (`DELETE /v1/autopilot/sessions/{local_public_key}`).
    RevokeAutopilotSession,
    /// Everything else: forwarded as bytes.
    Passthrough,
}

impl Route {
    /// The intercepted gRPC method at `path`, if it names one.
    pub fn grpc(path: &str) -> Option<Route> {
        match path {
            ADD_AUTOPILOT_SESSION => Some(Route::AddAutopilotSession),
            LIST_SESSIONS => Some(Route::ListSessions),
            LIST_AUTOPILOT_SESSIONS => Some(Route::ListAutopilotSessions),
            ADD_SESSION => Some(Route::AddSession),
            REVOKE_SESSION => Some(Route::RevokeSession),
            REVOKE_AUTOPILOT_SESSION => Some(Route::RevokeAutopilotSession),
            _ => None,
        }
    }

    /// Classifies a request by method and path, for gRPC, grpc-web and REST alike.
    pub fn classify(method: &Method, path: &str) -> Route {
        if let Some(route) = Route::grpc(path) {
            return route;
        }
        // REST twins (grpc-gateway ignores a trailing slash only by redirect; so do we not).
        let rest = path;
        match (method, rest) {
            (&Method::POST, REST_AUTOPILOT_SESSIONS) => Route::AddAutopilotSession,
            (&Method::GET, REST_AUTOPILOT_SESSIONS) => Route::ListAutopilotSessions,
            (&Method::GET, REST_SESSIONS) => Route::ListSessions,
            (&Method::POST, REST_SESSIONS) => Route::AddSession,
            (&Method::DELETE, p) if key_segment(p, "/v1/autopilot/sessions/") => {
                Route::RevokeAutopilotSession
            }
            (&Method::DELETE, p) if key_segment(p, "/v1/sessions/") => Route::RevokeSession,
            _ => Route::Passthrough,
        }
    }

    /// Whether the route writes sessions (its success invalidates the cache).
    pub fn writes_sessions(self) -> bool {
        matches!(
            self,
            Route::AddAutopilotSession
                | Route::AddSession
                | Route::RevokeSession
                | Route::RevokeAutopilotSession
        )
    }

    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::AddAutopilotSession => "AddAutopilotSession",
            Route::ListSessions => "ListSessions",
            Route::ListAutopilotSessions => "ListAutopilotSessions",
            Route::AddSession => "AddSession",
            Route::RevokeSession => "RevokeSession",
            Route::RevokeAutopilotSession => "RevokeAutopilotSession",
            Route::Passthrough => "passthrough",
        }
    }
}

fn key_segment(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|k| !k.is_empty() && !k.contains('/'))
}

/// Dispatches each request to its handler; the innermost service of the public stack.
#[derive(Clone, Debug)]
pub struct Router {
    passthrough: Upstream,
    add_autopilot_session: Option<Arc<AddSessionHandler>>,
    cache: Option<Cache>,
    max_message_bytes: usize,
}

impl Router {
    /// A router whose every route is the raw passthrough to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Router {
            passthrough: upstream,
            add_autopilot_session: None,
            cache: None,
            max_message_bytes: crate::server::ListenConfig::default().max_message_bytes,
        }
    }

    /// The most request bytes read from a terminated grpc-websockets call
    /// (`listen.max_message_bytes`).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Installs the session cache: it answers the list routes, and sees every session write's
    /// answer. `None` (the cache is off) leaves those routes to pass through.
    pub fn with_cache(mut self, cache: Option<Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// Installs the AddAutopilotSession policy handler (gRPC, grpc-web and REST).
    pub fn with_add_autopilot_session(mut self, handler: Arc<AddSessionHandler>) -> Self {
        self.add_autopilot_session = Some(handler);
        self
    }
}

impl Service<Request> for Router {
    type Response = Response;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match websocket::upgrade_of(req.headers()) {
            Some(upgrade) => self.upgrade(upgrade, req),
            None => self.dispatch(req),
        }
    }
}

impl Router {
    /// Routes one call (not an upgrade) to its handler.
    fn dispatch(&self, req: Request) -> RouteFuture {
        let route = Route::classify(req.method(), req.uri().path());
        let protocol = Protocol::of(&req);
        match route {
            Route::AddAutopilotSession => {
                let write: RouteFuture = match &self.add_autopilot_session {
                    Some(h) => {
                        let h = h.clone();
                        Box::pin(async move { h.handle(req).await })
                    }
                    None => Box::pin(self.passthrough.forward(req)),
                };
                self.invalidating(protocol, write)
            }
            Route::ListSessions | Route::ListAutopilotSessions => match &self.cache {
                Some(cache) => {
                    let cache = cache.clone();
                    Box::pin(async move { cache.list(route, req).await })
                }
                None => Box::pin(self.passthrough.forward(req)),
            },
            Route::AddSession | Route::RevokeSession | Route::RevokeAutopilotSession => {
                let write = Box::pin(self.passthrough.forward(req));
                self.invalidating(protocol, write)
            }
            Route::Passthrough => Box::pin(self.passthrough.forward(req)),
        }
    }

    /// Routes one WebSocket upgrade.
    fn upgrade(&self, upgrade: Upgrade, req: Request) -> RouteFuture {
        let path = req.uri().path();
        if upgrade == Upgrade::GrpcWebSockets && Route::grpc(path).is_some() {
            // The grpc-web call inside gets exactly a grpc-web call's dispatch.
            let router = self.clone();
            let dispatch = move |inner: Request| router.dispatch(inner);
            let answer = websocket::terminate(req, self.max_message_bytes, dispatch);
            return Box::pin(std::future::ready(answer));
        }
        let write = websocket::rest_methods(req.method(), req.uri())
            .iter()
            .map(|m| Route::classify(m, path))
            .find(|r| r.writes_sessions());
        if let Some(route) = write {
            return Box::pin(std::future::ready(Err(Error::client(
                tonic::Code::Unimplemented,
                format!(
                    "{} over a REST WebSocket is not supported by litgate: it could not apply \
                     its checks inside the stream; send it as a plain REST, gRPC, grpc-web or \
                     grpc-websockets call",
                    route.label()
                ),
            ))));
        }
        Box::pin(self.passthrough.tunnel(req))
    }

    /// Hands a session write's answer to the cache, which invalidates itself before the caller
    /// sees a success; without a cache the answer streams through as is.
    fn invalidating(&self, protocol: Protocol, write: RouteFuture) -> RouteFuture {
        match &self.cache {
            Some(cache) => {
                let cache = cache.clone();
                Box::pin(async move { cache.after_write(protocol, write.await).await })
            }
            None => write,
        }
    }
}

type RouteFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercepted_methods_and_their_rest_twins() {
        let cases = [
            (
                Method::POST,
                ADD_AUTOPILOT_SESSION,
                Route::AddAutopilotSession,
            ),
            (
                Method::POST,
                "/v1/autopilot/sessions",
                Route::AddAutopilotSession,
            ),
            (Method::POST, LIST_SESSIONS, Route::ListSessions),
            (Method::GET, "/v1/sessions", Route::ListSessions),
            (
                Method::GET,
                "/v1/autopilot/sessions",
                Route::ListAutopilotSessions,
            ),
            (Method::POST, "/v1/sessions", Route::AddSession),
            (Method::DELETE, "/v1/sessions/AqE", Route::RevokeSession),
            (
                Method::DELETE,
                "/v1/autopilot/sessions/AqE",
                Route::RevokeAutopilotSession,
            ),
            (
                Method::DELETE,
                "/v1/autopilot/sessions/",
                Route::Passthrough,
            ),
            (Method::GET, "/v1/autopilot/features", Route::Passthrough),
            (Method::POST, "/lnrpc.Lightning/GetInfo", Route::Passthrough),
        ];
        for (m, p, want) in cases {
            assert_eq!(Route::classify(&m, p), want, "{m} {p}");
        }
    }
}
