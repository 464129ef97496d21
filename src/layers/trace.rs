//! Trace: one span per request (method path, protocol, peer) and one event when the response
//! head is ready (HTTP status, gRPC status if already known, latency). Outermost, so its span
//! covers everything below, refusals included. It never records header values: `macaroon`,
//! `grpc-metadata-macaroon` and `authorization` carry credentials.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::{instrument::Instrumented, Instrument};

use crate::{
    body::{Request, Response},
    grpc::{status, Protocol},
    server::ConnectInfo,
};

/// Adds the per-request span.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// See [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Service<Request> for Trace<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let protocol = Protocol::detect_request(&req);
        // Detected once here; the layers below read it back with `Protocol::of`.
        req.extensions_mut().insert(protocol);
        let peer = req.extensions().get::<ConnectInfo>().map(|c| c.peer);
        // The path only: query strings of REST calls may carry values we should not log.
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            protocol = protocol.as_str(),
            peer = peer.map(tracing::field::display),
        );
        // The clock is read only for the debug line that reports the latency.
        let start = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        TraceFuture {
            fut: fut.instrument(span),
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Trace`]'s future: the inner one, polled (and dropped) inside the request's span. A
    /// named type rather than a box, so that the stack's future is one allocation, not one per
    /// layer.
    pub struct TraceFuture<F> {
        #[pin]
        fut: Instrumented<F>,
        start: Option<Instant>,
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let res = ready!(this.fut.as_mut().poll(cx));
        if let (Ok(resp), Some(start)) = (&res, this.start) {
            let _enter = this.fut.span().enter();
            // Known at the head only for a trailers-only answer.
            let grpc_status = status::head_code(resp.headers()).map(|c| c as i32);
            tracing::debug!(
                status = resp.status().as_u16(),
                grpc_status,
                latency_us = start.elapsed().as_micros() as u64,
                "response"
            );
        }
        Poll::Ready(res)
    }
}
