//! Overload (`listen.max_in_flight`): when as many calls are in flight as litgate may serve,
//! a new one is refused at once with [`Error::Overloaded`] (gRPC `UNAVAILABLE`, HTTP 503, both
//! with `retry-after`) instead of queueing behind the others; calls already in flight go on.
//! It sits just inside the metrics layer, so a shed call is counted with its code and costs
//! nothing more (no credential parsing, no rate-limit bucket, no litd).
//!
//! A call is in flight from its request head until its response body is dropped, so a stream
//! counts for as long as it is open, and an upgraded connection (a WebSocket) for as long as
//! its tunnel runs ([`Upgrades::holding`]). It never waits, never buffers, and never sheds a
//! call it has let in.

use std::{
    future::{Future, Ready},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use futures_util::future::Either;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tower::{Layer, Service};

use crate::{
    body::{self, Request, Response},
    error::Error,
    server::Upgrades,
    telemetry::metrics::registered,
};

/// What a shed caller is told to wait before retrying: calls end all the time, so a second is
/// usually enough, and it spreads retries out.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The in-flight count and its limit, shared by every clone of the layer.
#[derive(Debug)]
struct Gate {
    max: usize,
    in_flight: AtomicUsize,
    gauge: Gauge,
    shed: Counter,
}

/// One admitted call's place in the count, released when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Gate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

impl Gate {
    fn admit(self: &Arc<Self>) -> Result<Slot, Error> {
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match before {
            Ok(_) => {
                self.gauge.inc();
                Ok(Slot(self.clone()))
            }
            Err(_) => {
                self.shed.inc();
                Err(Error::Overloaded {
                    retry_after: RETRY_AFTER,
                })
            }
        }
    }
}

/// Sheds calls beyond `listen.max_in_flight`.
#[derive(Debug, Clone)]
pub(crate) struct OverloadLayer {
    gate: Arc<Gate>,
}

impl OverloadLayer {
    /// At most `max` calls in flight; registers `in_flight` and `shed` in `registry`.
    pub(crate) fn registered(max: usize, registry: &mut Registry) -> OverloadLayer {
        OverloadLayer {
            gate: Arc::new(Gate {
                max,
                in_flight: AtomicUsize::new(0),
                gauge: registered(
                    registry,
                    "in_flight",
                    "Calls in flight (open streams count)",
                ),
                shed: registered(
                    registry,
                    "shed",
                    "Calls refused with UNAVAILABLE / 503 because listen.max_in_flight calls \
                     were in flight",
                ),
            }),
        }
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Overload<S> {
        Overload {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// See [`OverloadLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Overload<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Service<Request> for Overload<S>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    type Response = Response;
    type Error = Error;
    type Future = Either<Ready<Result<Response, Error>>, Admitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let slot = match self.gate.admit() {
            Ok(slot) => slot,
            Err(e) => return Either::Left(std::future::ready(Err(e))),
        };
        // An upgrade spawned for this call keeps the slot while its tunnel runs. Only an
        // HTTP/1.1 request can be upgraded, and only those carry the listener's set; the slot
        // is shared only then.
        let slot = match req.extensions().get::<Upgrades>() {
            Some(upgrades) => {
                let shared = Arc::new(slot);
                let held = upgrades.holding(shared.clone());
                req.extensions_mut().insert(held);
                Held::Shared { _slot: shared }
            }
            None => Held::Alone { _slot: slot },
        };
        Either::Right(Admitted {
            fut: self.inner.call(req),
            slot: Some(slot),
        })
    }
}

pin_project_lite::pin_project! {
    /// An admitted call's future, whose answer's body gets the slot (a shed call's is a ready
    /// refusal). A named type rather than a box, so that the stack's future is one
    /// allocation, not one per layer.
    pub(crate) struct Admitted<F> {
        #[pin]
        fut: F,
        slot: Option<Held<Slot>>,
    }
}

impl<F> Future for Admitted<F>
where
    F: Future<Output = Result<Response, Error>>,
{
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.fut.poll(cx))?;
        // The body keeps the slot until it is dropped (a stream: until it ends).
        let slot = this.slot.take();
        Poll::Ready(Ok(resp.map(|b| {
            body::observe(b, move |_| {
                let _held = &slot;
            })
        })))
    }
}

/// A call's in-flight slot, held by its answer's body (and by its upgrade, if it has one).
pub(crate) enum Held<S> {
    Alone { _slot: S },
    Shared { _slot: Arc<S> },
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn layer(max: usize) -> OverloadLayer {
        OverloadLayer::registered(max, &mut Registry::default())
    }

    fn ok() -> Result<Response, Error> {
        Ok(Response::new(body::full("answer")))
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_at_once_and_admitted_again_when_one_ends() {
        let layer = layer(2);
        let svc = layer.layer(tower::service_fn(|_req: Request| async { ok() }));
        let call = || svc.clone().oneshot(Request::new(body::empty()));
        let first = call().await.unwrap();
        let second = call().await.unwrap();
        match call().await {
            Err(Error::Overloaded { retry_after }) => assert_eq!(retry_after, RETRY_AFTER),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(layer.gate.shed.get(), 1);
        assert_eq!(layer.gate.gauge.get(), 2);
        // The in-flight ones finish normally.
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"answer");
        let third = call().await.expect("admitted once a call ended");
        drop((second, third));
        assert_eq!(layer.gate.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(layer.gate.gauge.get(), 0);
    }

    #[tokio::test]
    async fn an_upgrade_keeps_its_slot_while_its_tunnel_runs() {
        let layer = layer(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = Arc::new(std::sync::Mutex::new(Some(stopped)));
        let svc = layer.layer(tower::service_fn(move |req: Request| {
            if let Some(rx) = stopped.lock().unwrap().take() {
                Upgrades::of(&req).spawn(async move {
                    let _ = rx.await;
                });
            }
            async { ok() }
        }));
        // As the server hands an HTTP/1.1 request over: with its listener's upgrades.
        let mut req = Request::new(body::empty());
        req.extensions_mut().insert(Upgrades::default());
        let upgraded = svc.clone().oneshot(req).await;
        drop(upgraded);
        let refused = svc.clone().oneshot(Request::new(body::empty())).await;
        assert!(
            matches!(refused, Err(Error::Overloaded { .. })),
            "the tunnel holds the slot"
        );
        stop.send(()).unwrap();
        // The tunnel's task ends and releases the slot; poll until it has (bounded).
        for _ in 0..1000 {
            if layer.gate.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(svc.oneshot(Request::new(body::empty())).await.is_ok());
    }
}
