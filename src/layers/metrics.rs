//! Metrics: Prometheus counters and a latency histogram per route, protocol and outcome, for
//! the public face and the relay face alike. Sits inside rescue so it sees litgate's own
//! refusals as errors with their gRPC code, and outside identity so every request is counted
//! once. Labels are bounded (route names from a path table, [`RouteLabel`], protocol names,
//! gRPC codes); never a path, peer or credential.

use std::{
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tower::{Layer, Service};

use crate::{
    body::{Request, Response, ResponseFuture},
    error::Error,
    grpc::{
        status::{self, Deferred, Outcome},
        Protocol,
    },
    telemetry::metrics::registered,
};

/// Names a request's route for the `route` label, from a table of paths (bounded).
pub type RouteLabel = fn(&http::Method, &str) -> &'static str;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Router route name.
    pub route: &'static str,
    /// Wire protocol.
    pub protocol: &'static str,
    /// gRPC status code (number as text), or `http_<status>` for REST/plain HTTP, or
    /// `cancelled` when the caller went away before the end.
    pub code: String,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Router route name.
    pub route: &'static str,
    /// Wire protocol.
    pub protocol: &'static str,
}

/// The request metric families.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = registered(
            registry,
            "requests",
            "Requests by route, protocol and outcome",
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~26 s: loopback passthrough to slow autopilot registrations.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 19,
            ))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to response head",
            latency.clone(),
        );
        RequestMetrics { requests, latency }
    }
}

/// Adds request metrics.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: RequestMetrics,
    route: RouteLabel,
}

impl MetricsLayer {
    /// A layer recording into `metrics`, naming routes with `route`.
    pub fn new(metrics: RequestMetrics, route: RouteLabel) -> Self {
        MetricsLayer { metrics, route }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
            route: self.route,
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    metrics: RequestMetrics,
    route: RouteLabel,
}

impl<S> Service<Request> for Metrics<S>
where
    S: Service<Request, Response = Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let route = (self.route)(req.method(), req.uri().path());
        let protocol = Protocol::of(&req);
        let metrics = self.metrics.clone();
        let requests = metrics.requests.clone();
        // Counted once, with the status the caller received; a grpc-websockets call litgate
        // terminates takes this over and reports the status of the call inside.
        let report = Deferred::new(move |o| {
            requests
                .get_or_create(&outcome(route, protocol, label(o)))
                .inc();
        });
        req.extensions_mut().insert(report.clone());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let labels = RouteLabels {
                route,
                protocol: protocol.as_str(),
            };
            metrics
                .latency
                .get_or_create(&labels)
                .observe(start.elapsed().as_secs_f64());
            let Some(report) = report.claim() else {
                return res;
            };
            match res {
                Err(e) => {
                    report.report(Outcome::Grpc(e.code()));
                    Err(e)
                }
                // The status the caller receives, wherever it lives in its protocol.
                Ok(resp) => Ok(status::watch(protocol, resp, move |o| report.report(o))),
            }
        })
    }
}

/// The `code` label of an outcome: the gRPC code number, `http_<status>`, or what went wrong.
fn label(o: Outcome) -> String {
    match o {
        Outcome::Grpc(code) => (code as i32).to_string(),
        Outcome::Http(s) => format!("http_{}", s.as_u16()),
        Outcome::NoStatus => "no_status".into(),
        Outcome::Broken => "stream_error".into(),
        Outcome::Cancelled => "cancelled".into(),
    }
}

fn outcome(route: &'static str, protocol: Protocol, code: String) -> OutcomeLabels {
    OutcomeLabels {
        route,
        protocol: protocol.as_str(),
        code,
    }
}
