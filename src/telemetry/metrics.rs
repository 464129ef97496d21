//! How litgate's metrics are registered: every component gets a sub-registry of litgate's
//! (`litgate_<component>_`) and creates each of its metrics through [`registered`], so a metric
//! and its registration are one expression.

use prometheus_client::registry::{Metric, Registry};

/// A new metric of type `M`, registered in `registry` as `name` with `help`. The handle shares
/// its value with what `/metrics` reports.
pub(crate) fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}
