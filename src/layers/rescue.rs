//! Rescue: the one place where litgate's errors become responses. Sits just inside the trace
//! layer so every refusal is logged once with its outcome. gRPC and grpc-web callers get a
//! trailers-only status with a clear message; REST callers get grpc-gateway's error JSON with
//! the matching HTTP status. It must never put request data (credentials) into a message.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

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
        Rescue { inner }
    }
}

/// See [`RescueLayer`].
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    inner: S,
}

impl<S> Service<Request> for Rescue<S>
where
    S: Service<Request, Response = Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner stack is always ready (no backpressure layers); an error here would have no
        // request to answer, so treat it as ready and let `call` report it.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let protocol = Protocol::of(&req);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp),
                Err(err) => {
                    err.log("request refused");
                    Ok(error_response(protocol, &err))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

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
