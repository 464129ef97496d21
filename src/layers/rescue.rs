//! Rescue: the one place where litgate's errors become responses. Sits just inside the trace
//! layer so every refusal is logged once (at `debug` unless litgate itself is at fault:
//! [`Error::log`]) with its causes. gRPC and grpc-web callers get a trailers-only status with a
//! clear message; REST callers get grpc-gateway's error JSON with the matching HTTP status. It
//! must never put request data (credentials) into a message, nor an internal address or OS
//! error ([`Error::public_message`]).

use std::{
    convert::Infallible,
    future::{Future, Ready},
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures_util::future::Either;
use tower::{Layer, Service};

use crate::{
    body::{Request, Response},
    error::Error,
    grpc::{reply::error_response, Protocol},
};

/// Wraps a service whose errors are [`Error`] into one that never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            not_ready: None,
        }
    }
}

/// See [`RescueLayer`].
#[derive(Debug)]
pub struct Rescue<S> {
    inner: S,
    /// The inner service's readiness failure, answered to the next call without calling it.
    not_ready: Option<Error>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it owes no call an answer.
        Rescue {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S> Service<Request> for Rescue<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Rescued<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // This service never fails, so an inner readiness error is kept for the call it was
        // polled for, which answers it without calling the inner service (tower's contract:
        // only a service that reported ready is called).
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e);
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let protocol = Protocol::of(&req);
        if let Some(err) = self.not_ready.take() {
            err.log("request refused");
            return Either::Left(std::future::ready(Ok(error_response(protocol, &err))));
        }
        Either::Right(Rescued {
            fut: self.inner.call(req),
            protocol,
        })
    }
}

pin_project_lite::pin_project! {
    /// A called inner service's future, its error turned into the caller's answer (a
    /// readiness failure's answer is ready at once). A named type rather than a box, so that
    /// the stack's future is one allocation, not one per layer.
    pub struct Rescued<F> {
        #[pin]
        fut: F,
        protocol: Protocol,
    }
}

impl<F> Future for Rescued<F>
where
    F: Future<Output = Result<Response, Error>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.fut.poll(cx)) {
            Ok(resp) => resp,
            Err(err) => {
                err.log("request refused");
                error_response(*this.protocol, &err)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::body;

    /// A service whose readiness fails, counting the calls it gets.
    #[derive(Clone)]
    struct NeverReady(Arc<AtomicUsize>);

    impl Service<Request> for NeverReady {
        type Response = Response;
        type Error = Error;
        type Future = std::future::Ready<Result<Response, Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Err(Error::Upstream {
                addr: "127.0.0.1:8443".into(),
                reason: "connection pool closed".into(),
            }))
        }

        fn call(&mut self, _req: Request) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(body::empty())))
        }
    }

    #[tokio::test]
    async fn a_readiness_error_is_answered_without_calling_the_unready_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RescueLayer.layer(NeverReady(calls.clone()));
        let req = http::Request::builder()
            .uri("/lnrpc.Lightning/GetInfo")
            .header("content-type", "application/grpc")
            .body(body::empty())
            .unwrap();
        let r = svc.oneshot(req).await.unwrap();
        let status = tonic::Status::from_header_map(r.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "litd is unavailable");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "never called unready");
    }

    #[tokio::test]
    async fn errors_become_protocol_responses() {
        let svc = RescueLayer.layer(tower::service_fn(|_req: Request| async {
            Err::<Response, _>(Error::invalid(
                "features: must include at least one feature",
            ))
        }));
        let grpc = http::Request::builder()
            .uri("/litrpc.Autopilot/AddAutopilotSession")
            .header("content-type", "application/grpc")
            .body(body::empty())
            .unwrap();
        let r = svc.clone().oneshot(grpc).await.unwrap();
        let status = tonic::Status::from_header_map(r.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "features: must include at least one feature"
        );

        let rest = http::Request::builder()
            .method("POST")
            .uri("/v1/autopilot/sessions")
            .body(body::empty())
            .unwrap();
        let r = svc.oneshot(rest).await.unwrap();
        assert_eq!(r.status(), 400);
        let json: serde_json::Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 3, "message": "features: must include at least one feature", "details": []})
        );
    }
}
