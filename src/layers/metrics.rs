//! Metrics: Prometheus counters and a latency histogram per route, protocol and outcome, for
//! the public face and the relay face alike, and the access log line of each call
//! ([`super::access`]), written with the same outcome. Sits inside rescue so it sees litgate's own
//! refusals as errors with their gRPC code (and counts them in `refusals_total` by whose fault
//! they were), and outside identity so every request is counted once. Labels are bounded
//! (route names from a path table, [`RouteLabel`], protocol names, gRPC code names, HTTP
//! statuses); never a path, peer or credential.
//!
//! `requests_total{route, protocol, grpc_status, http_status, outcome}`:
//! - `grpc_status`: the gRPC status the caller received, named as go-grpc-prometheus names it
//!   (`OK`, `InvalidArgument`, `Unavailable`, ...); empty for REST and plain HTTP, and for a
//!   gRPC call that ended without a status;
//! - `http_status`: the HTTP status of the response head (`200` for every gRPC answer, `101` for
//!   a WebSocket, `429`, `503`, ... for REST);
//! - `outcome`: `ok` (gRPC OK, or HTTP below 400), `error` (any other status), or how a call
//!   ended without a status: `cancelled` (the caller went away first), `no_status` (the body
//!   ended without one), `stream_error` (the body broke off).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, PoisonError, RwLock,
    },
    task::{ready, Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tower::{Layer, Service};

use super::access::Access;
use crate::{
    body::{Request, Response},
    error::{code_name, Error},
    grpc::{
        reply,
        status::{self, Deferred, Outcome},
        Protocol,
    },
    telemetry::metrics::registered,
};

/// Names a request's route for the `route` label, from a table of paths (bounded).
pub type RouteLabel = fn(&http::Method, &str) -> &'static str;

/// Labels of a finished request (see the module's documentation for their values).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Router route name.
    pub route: &'static str,
    /// Wire protocol.
    pub protocol: &'static str,
    /// The gRPC status's name, or empty.
    pub grpc_status: &'static str,
    /// The HTTP status of the response head.
    pub http_status: u16,
    /// `ok`, `error`, `cancelled`, `no_status` or `stream_error`.
    pub outcome: &'static str,
}

/// Labels of a refusal: a call litgate answered with its own error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Router route name.
    pub route: &'static str,
    /// Wire protocol.
    pub protocol: &'static str,
    /// Whose fault: `client`, `rate_limited`, `overloaded`, `upstream`, `autopilot`,
    /// `own_call_refused`, `internal`.
    pub kind: &'static str,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Router route name.
    pub route: &'static str,
    /// Wire protocol.
    pub protocol: &'static str,
}

/// The request metric families, behind one `Arc` (cloned per call).
#[derive(Clone)]
pub struct RequestMetrics(Arc<Families>);

struct Families {
    requests: Handles<OutcomeLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    latency: Handles<RouteLabels, Histogram, fn() -> Histogram>,
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
            "Requests by route, protocol, gRPC status, HTTP status and outcome",
        );
        let refusals = registered(
            registry,
            "refusals",
            "Calls litgate answered with its own error, by route, protocol and whose fault",
        );
        let latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
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
        RequestMetrics(Arc::new(Families {
            requests: Handles::new(requests),
            refusals,
            latency: Handles::new(latency),
        }))
    }
}

/// A family's metrics by label set, each looked up in the family once and then found with a
/// fast hash: the family hashes every lookup with SipHash, a few hundred instructions a call.
/// Label sets are bounded (see the module's docs), and a family never drops a metric, so a
/// handle held here always is the one the family exports.
struct Handles<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    found: RwLock<HashMap<L, M, foldhash::fast::RandomState>>,
}

impl<L, M, C> Handles<L, M, C>
where
    L: Clone + Eq + std::hash::Hash,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    fn new(family: Family<L, M, C>) -> Self {
        Handles {
            family,
            found: RwLock::default(),
        }
    }

    /// Runs `f` on the metric labelled `labels`.
    fn with(&self, labels: &L, f: impl FnOnce(&M)) {
        if let Some(m) = self
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            return f(m);
        }
        let m = self.family.get_or_create_owned(labels);
        f(&m);
        self.found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(labels.clone(), m);
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
{
    type Response = Response;
    type Error = Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let route = (self.route)(req.method(), req.uri().path());
        let protocol = Protocol::of(&req);
        let count = Count {
            metrics: self.metrics.clone(),
            route,
            protocol,
            access: Access::begin(&req),
        };
        let report = if protocol.upgrade().is_some() {
            // It may be a grpc-websockets call that litgate terminates (only an upgrade can be
            // one: HTTP/1.1; HTTP/2 has no `upgrade` header): the terminator takes the report
            // over and reports the status of the call inside, after the `101` went out.
            let head = Arc::new(AtomicU16::new(0));
            let head_status = head.clone();
            let report =
                Deferred::new(move |o| count.count(head_status.load(Ordering::Acquire), o));
            req.extensions_mut().insert(report.clone());
            Report::Deferred { head, report }
        } else {
            Report::Direct(count)
        };
        let start = Instant::now();
        MetricsFuture {
            fut: self.inner.call(req),
            call: Some(Call {
                metrics: self.metrics.clone(),
                route,
                protocol,
                start,
                report,
            }),
        }
    }
}

/// One call's count: its labels' parts and its access log line, counted once with the HTTP
/// status of the head the caller got and the outcome.
struct Count {
    metrics: RequestMetrics,
    route: &'static str,
    protocol: Protocol,
    access: Option<Access>,
}

impl Count {
    fn count(self, http_status: u16, o: Outcome) {
        let labels = labels(self.route, self.protocol, http_status, o);
        self.metrics.0.requests.with(&labels, |c| {
            c.inc();
        });
        if let Some(access) = self.access {
            access.finish(&labels);
        }
    }
}

/// What [`MetricsFuture`] needs once the answer's head is known.
struct Call {
    metrics: RequestMetrics,
    route: &'static str,
    protocol: Protocol,
    start: Instant,
    report: Report,
}

pin_project_lite::pin_project! {
    /// [`Metrics`]'s future: the inner call's, measured and counted as its answer's head
    /// comes. A named type rather than a box, so that the stack's future is one allocation,
    /// not one per layer.
    pub struct MetricsFuture<F> {
        #[pin]
        fut: F,
        call: Option<Call>,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response, Error>>,
{
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.fut.poll(cx));
        let call = this.call.take().expect("polled after completion");
        Poll::Ready(call.answered(res))
    }
}

impl Call {
    /// Records the latency to the head, and counts the call: at once if the head says how it
    /// ended, else as its status streams past.
    fn answered(self, res: Result<Response, Error>) -> Result<Response, Error> {
        let Call {
            metrics,
            route,
            protocol,
            start,
            report,
        } = self;
        let labels = RouteLabels {
            route,
            protocol: protocol.as_str(),
        };
        let elapsed = start.elapsed().as_secs_f64();
        metrics.0.latency.with(&labels, |h| h.observe(elapsed));
        let status = match &res {
            Ok(resp) => resp.status(),
            // What rescue will answer.
            Err(e) => reply::http_status_for(protocol, e.code()),
        };
        if let Err(e) = &res {
            metrics
                .0
                .refusals
                .get_or_create(&RefusalLabels {
                    route,
                    protocol: protocol.as_str(),
                    kind: e.kind(),
                })
                .inc();
        }
        let finish = match report {
            Report::Direct(count) => Finish::Direct(count, status.as_u16()),
            Report::Deferred { head, report } => {
                head.store(status.as_u16(), Ordering::Release);
                match report.claim() {
                    Some(claimed) => Finish::Claimed(claimed),
                    None => return res,
                }
            }
        };
        match res {
            Err(e) => {
                // As rescue answers it: a gRPC status (a refused grpc-websockets handshake
                // carries one in its head too), or for REST and plain HTTP the HTTP status.
                let grpc = protocol.is_grpc_family() || protocol == Protocol::GrpcWebSocket;
                finish.report(match grpc {
                    true => Outcome::Grpc(e.code()),
                    false => Outcome::Http(status),
                });
                Err(e)
            }
            // The status the caller receives, wherever it lives in its protocol.
            Ok(resp) => Ok(status::watch(protocol, resp, move |o| finish.report(o))),
        }
    }
}

/// How a call gets counted: directly once its answer's head is known, or through a report
/// that a grpc-websockets terminator may take over ([`Deferred`]; it needs the head's status
/// shared, as it reports later).
enum Report {
    Direct(Count),
    Deferred {
        head: Arc<AtomicU16>,
        report: Deferred,
    },
}

/// A call's count, ready to take its outcome: the direct count with the head's HTTP status, or
/// the deferred report this layer kept.
enum Finish {
    Direct(Count, u16),
    Claimed(status::Claimed),
}

impl Finish {
    fn report(self, o: Outcome) {
        match self {
            Finish::Direct(count, http_status) => count.count(http_status, o),
            Finish::Claimed(claimed) => claimed.report(o),
        }
    }
}

/// The labels of a finished call: its gRPC status (for REST the HTTP status says it all), its
/// head's HTTP status, and the outcome.
fn labels(route: &'static str, protocol: Protocol, http_status: u16, o: Outcome) -> OutcomeLabels {
    let (grpc_status, outcome) = match o {
        Outcome::Grpc(code) => (
            code_name(code),
            if code == tonic::Code::Ok {
                "ok"
            } else {
                "error"
            },
        ),
        Outcome::Http(s) => ("", if s.as_u16() < 400 { "ok" } else { "error" }),
        Outcome::NoStatus => ("", "no_status"),
        Outcome::Broken => ("", "stream_error"),
        Outcome::Cancelled => ("", "cancelled"),
    };
    let http_status = match o {
        Outcome::Http(s) => s.as_u16(),
        _ => http_status,
    };
    OutcomeLabels {
        route,
        protocol: protocol.as_str(),
        grpc_status,
        http_status,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{body, layers::rescue::RescueLayer};

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test]
    async fn statuses_are_split_and_refusals_counted_by_fault() {
        let mut registry = Registry::with_prefix("litgate");
        let metrics = RequestMetrics::register(&mut registry);
        let svc = tower::ServiceBuilder::new()
            .layer(RescueLayer)
            .layer(MetricsLayer::new(metrics, |_, _| "passthrough"))
            .service(tower::service_fn(|req: Request| async move {
                if req.uri().path() == "/ok" {
                    return Ok(Response::new(body::empty()));
                }
                Err(Error::RateLimited {
                    message: "slow down".into(),
                    retry_after: Duration::from_secs(1),
                })
            }));
        let call = |path: &str, ct: Option<&str>| {
            let mut b = http::Request::builder().uri(path);
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            let req = b.body(body::empty()).unwrap();
            let svc = svc.clone();
            async move {
                let resp = svc.oneshot(req).await.unwrap();
                resp.into_body().collect().await.unwrap();
            }
        };
        call("/v1/sessions", None).await;
        call("/lnrpc.Lightning/GetInfo", Some("application/grpc")).await;
        call("/ok", None).await;
        let out = text(&registry);
        for line in [
            r#"litgate_requests_total{route="passthrough",protocol="rest",grpc_status="",http_status="429",outcome="error"} 1"#,
            r#"litgate_requests_total{route="passthrough",protocol="grpc",grpc_status="ResourceExhausted",http_status="200",outcome="error"} 1"#,
            r#"litgate_requests_total{route="passthrough",protocol="http",grpc_status="",http_status="200",outcome="ok"} 1"#,
            r#"litgate_refusals_total{route="passthrough",protocol="rest",kind="rate_limited"} 1"#,
            r#"litgate_refusals_total{route="passthrough",protocol="grpc",kind="rate_limited"} 1"#,
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
    }

    #[test]
    fn calls_without_a_status_say_how_they_ended() {
        let l = labels("r", Protocol::Grpc, 200, Outcome::Cancelled);
        assert_eq!(
            (l.grpc_status, l.http_status, l.outcome),
            ("", 200, "cancelled")
        );
        let l = labels("r", Protocol::Grpc, 200, Outcome::Broken);
        assert_eq!(l.outcome, "stream_error");
        let l = labels("r", Protocol::GrpcWeb, 200, Outcome::NoStatus);
        assert_eq!(l.outcome, "no_status");
    }
}
