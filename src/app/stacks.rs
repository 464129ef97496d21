//! The tower stacks of the two faces, outermost first. Both have the same outer shape: one
//! span per request (trace), the one place errors become responses (rescue), metrics inside
//! rescue so refusals count with their code.

use tower::ServiceBuilder;

use crate::{
    autopilot::relay::Relay,
    layers::{
        identity::IdentityLayer,
        metrics::{MetricsLayer, RequestMetrics},
        overload::OverloadLayer,
        rate_limit::RateLimitLayer,
        rescue::RescueLayer,
        trace::TraceLayer,
    },
    methods,
    router::Router,
    server::Served,
};

/// The public face's service: every layer (`docs/design.md`, "The public face"), outermost
/// first.
pub(crate) fn public_stack(
    router: Router,
    metrics: RequestMetrics,
    overload: OverloadLayer,
    rate_limit: RateLimitLayer,
) -> impl Served {
    ServiceBuilder::new()
        // Outermost: one span covers the whole request, refusals included.
        .layer(TraceLayer)
        // The single place where litgate's errors become responses in the caller's protocol.
        .layer(RescueLayer)
        // Inside rescue, so refusals are counted with their gRPC code rather than as OK.
        .layer(MetricsLayer::new(metrics, methods::public_route_label))
        // Before any work (even reading the credential): a shed call costs nothing more, and
        // is still counted by metrics with its code.
        .layer(overload)
        // Before the rate limiter and the router, which both read `Caller`.
        .layer(IdentityLayer)
        // After identity (keys by `Caller`), before the router: a refused call never reaches litd.
        .layer(rate_limit)
        // The only place that maps paths to handlers; the rest is raw passthrough.
        .service(router)
}

/// The relay face's service (litd's `autopilot.address`): trace, rescue and metrics as on the
/// public face, then the relay (`autopilotserverrpc.Autopilot`).
pub(crate) fn relay_stack(relay: Relay, metrics: RequestMetrics) -> impl Served {
    ServiceBuilder::new()
        .layer(TraceLayer)
        .layer(RescueLayer)
        .layer(MetricsLayer::new(metrics, methods::relay_route_label))
        .service(relay.service())
}
