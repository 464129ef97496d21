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

mod terminate;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower::Service;

use crate::{
    autopilot::add_session::AddSessionHandler,
    body::{Request, Response, ResponseFuture},
    cache::Cache,
    error::Error,
    grpc::{
        websocket::{self, Upgrade},
        Protocol,
    },
    methods::Route,
    upstream::Upstream,
};

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
            max_message_bytes: crate::server::config::ListenConfig::default().max_message_bytes,
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
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match Protocol::of(&req).upgrade() {
            Some(upgrade) => self.upgrade(upgrade, req),
            None => self.dispatch(req),
        }
    }
}

impl Router {
    /// Routes one call (not an upgrade) to its handler.
    fn dispatch(&self, req: Request) -> ResponseFuture {
        let route = Route::classify(req.method(), req.uri().path());
        let protocol = Protocol::of(&req);
        match route {
            Route::AddAutopilotSession => {
                let write: ResponseFuture = match &self.add_autopilot_session {
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
    fn upgrade(&self, upgrade: Upgrade, req: Request) -> ResponseFuture {
        let path = req.uri().path();
        if upgrade == Upgrade::GrpcWebSockets && Route::grpc(path).is_some() {
            // The grpc-web call inside gets exactly a grpc-web call's dispatch.
            let router = self.clone();
            let dispatch = move |inner: Request| router.dispatch(inner);
            let answer = terminate::terminate(req, self.max_message_bytes, dispatch);
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
    fn invalidating(&self, protocol: Protocol, write: ResponseFuture) -> ResponseFuture {
        match &self.cache {
            Some(cache) => {
                let cache = cache.clone();
                Box::pin(async move { cache.after_write(protocol, write.await).await })
            }
            None => write,
        }
    }
}
