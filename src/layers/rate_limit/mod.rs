//! Rate limit (`docs/design.md`, "Rate limits"): per-caller limits in LiT's RateLimit shape
//! (`{ iterations, num_hours }`), separately for reads and writes (`crate::methods`), with
//! per-method overrides, enforced by `governor`'s keyed GCRA limiters. It sits after identity
//! (it reads [`Caller`]) and before the router, so a refused call never reaches litd; every
//! request is checked once, when it opens (a stream counts once, however many messages it
//! carries). A refusal is [`Error::RateLimited`], which the rescue layer writes as gRPC
//! `RESOURCE_EXHAUSTED` with `retry-after`, or HTTP 429 with `Retry-After` for REST.
//!
//! Who is a caller: a credential that litd has **accepted** (an OK response was seen for it on a
//! method where litd verifies macaroons) is limited by its macaroon identifier, so attenuated
//! copies share one bucket. Anything else (no credential, a credential that does not parse,
//! `authorization: Basic`, a macaroon not yet accepted) shares one bucket per peer address
//! prefix (IPv4 /32, IPv6 /64 by default). Forged credentials therefore cost their sender's
//! address bucket and create no state of their own. State is bounded: the accepted set holds
//! at most `max_identities` identifiers (oldest evicted first), and limiter keys whose bucket
//! is full again are dropped every `sweep_every`; both counts are metrics.
//!
//! It must never log, count or label by credential bytes, and never buffer a body: acceptance
//! is read from the response head, or from the trailers as the body streams past.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::Either;
use governor::clock::{Clock, DefaultClock};
use tower::{Layer, Service};

pub(crate) mod config;
mod identities;
mod limiter;
mod metrics;

pub use self::limiter::{Admitted, Limiter};
use crate::{
    body::{Request, Response, ResponseFuture},
    error::Error,
    grpc::{status, Protocol},
    layers::identity::Caller,
};

/// Applies [`Limiter`] to every request.
#[derive(Debug)]
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    limiter: Arc<Limiter<C>>,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// A layer deciding with `limiter`.
    pub(crate) fn new(limiter: Arc<Limiter<C>>) -> Self {
        Self { limiter }
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> RateLimit<S, C> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimit<S, C: Clock = DefaultClock> {
    inner: S,
    limiter: Arc<Limiter<C>>,
}

impl<S: Clone, C: Clock> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

impl<S, C> Service<Request> for RateLimit<S, C>
where
    S: Service<Request, Response = Response, Error = Error>,
    S::Future: Send + 'static,
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    type Response = Response;
    type Error = Error;
    /// The inner future itself for the common call (nothing to watch), so that the stack's
    /// future gains no allocation here.
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // A WebSocket to litd's REST proxy calls the method its `method` parameter names.
        let method = crate::grpc::websocket::effective_method(&req);
        let admitted =
            match self
                .limiter
                .check(&method, req.uri().path(), req.extensions().get::<Caller>())
            {
                Ok(a) => a,
                Err(e) => return Either::Right(Box::pin(std::future::ready(Err(e)))),
            };
        let Some(id) = admitted.observe else {
            return Either::Left(self.inner.call(req));
        };
        let protocol = Protocol::of(&req);
        let limiter = self.limiter.clone();
        let fut = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let resp = fut.await?;
            Ok(observe(resp, protocol, limiter, admitted.limit, id))
        }))
    }
}

/// Reads litd's verdict on the call that can prove a credential (HTTP status for REST, the gRPC
/// status wherever it lives for the gRPC family) and, on OK, records the identifier as accepted
/// and charges that call to the identity's own bucket, so the credential's first call counts
/// where its later calls do (`iterations` calls pass, not `iterations + 1`).
fn observe<C>(
    resp: Response,
    protocol: Protocol,
    limiter: Arc<Limiter<C>>,
    index: usize,
    id: Bytes,
) -> Response
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    status::watch(protocol, resp, move |outcome| {
        if outcome.is_ok() {
            limiter.accepted(index, &id);
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::{
        limiter::tests::{caller, cfg, limiter},
        *,
    };
    use crate::{body::BoxError, demo::MacaroonBaker};

    const GET_INFO: &str = "/lnrpc.Lightning/GetInfo";

    fn request(path: &str, content_type: &str, c: Caller) -> Request {
        let mut req = http::Request::post(path)
            .header("content-type", content_type)
            .body(crate::body::empty())
            .unwrap();
        req.extensions_mut().insert(c);
        req
    }

    fn grpc_ok_with_trailers() -> Response {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ]));
        Response::new(crate::body::boxed(body))
    }

    #[tokio::test]
    async fn refused_requests_never_reach_the_inner_service_and_ok_trailers_accept() {
        let (l, _clock) = limiter(&cfg((2, 1), (2, 1)));
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let svc = RateLimitLayer::new(l.clone()).layer(tower::service_fn(move |_req: Request| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Error>(grpc_ok_with_trailers()) }
        }));
        let mac = MacaroonBaker::new().bake_admin();
        let c = caller("192.0.2.1:1", Some(&mac));

        let resp = svc
            .clone()
            .oneshot(request(GET_INFO, "application/grpc", c.clone()))
            .await
            .unwrap();
        // Acceptance waits for the trailers.
        assert_eq!(l.identities(), 0);
        resp.into_body().collect().await.unwrap();
        assert_eq!(l.identities(), 1);

        // Now keyed by identity, whose bucket was charged for the accepting call: one more
        // read passes (iterations = 2 in all), then refused without calling inner.
        svc.clone()
            .oneshot(request(GET_INFO, "application/grpc", c.clone()))
            .await
            .unwrap();
        let err = svc
            .clone()
            .oneshot(request(GET_INFO, "application/grpc", c))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn error_status_and_grpc_web_trailer_frames_are_read() {
        let (l, _clock) = limiter(&cfg((100, 1), (100, 1)));
        let mac = MacaroonBaker::new().bake_admin();
        let c = caller("192.0.2.1:1", Some(&mac));

        // Trailers-only error: not accepted.
        let svc = RateLimitLayer::new(l.clone()).layer(tower::service_fn(|_req: Request| async {
            let mut r = Response::new(crate::body::empty());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("2"));
            Ok::<_, Error>(r)
        }));
        svc.oneshot(request(GET_INFO, "application/grpc", c.clone()))
            .await
            .unwrap();
        assert_eq!(l.identities(), 0);

        // grpc-web: a message frame, then a trailer frame split across chunks.
        let svc = RateLimitLayer::new(l.clone()).layer(tower::service_fn(|_req: Request| async {
            let trailer = b"grpc-status: 0\r\ngrpc-message: \r\n";
            let mut all = vec![0u8, 0, 0, 0, 3, 1, 2, 3, 0x80, 0, 0, 0, trailer.len() as u8];
            all.extend_from_slice(trailer);
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> = all
                .chunks(4)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            Ok::<_, Error>(Response::new(crate::body::boxed(body)))
        }));
        let resp = svc
            .oneshot(request(GET_INFO, "application/grpc-web+proto", c))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 8 + 5 + 32, "body passes through unchanged");
        assert_eq!(l.identities(), 1);
    }
}
