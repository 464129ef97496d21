//! The rate limiter's decision engine: one `governor` keyed GCRA limiter per limit (reads,
//! writes, each per-method override), keyed by an accepted macaroon identifier or by the peer's
//! address prefix, with the accepted set ([`super::identities`]) and the sweep that keeps the
//! key count bounded. Pure decisions: no I/O, no bodies; the layer (`mod.rs`) asks it.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use governor::{
    clock::{Clock, DefaultClock, Reference},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
    Quota,
};
use http::Method;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use super::{config::RateLimitConfig, identities::Accepted};
use crate::{
    error::Error,
    layers::identity::Caller,
    methods::{self, Class},
    values::Rate,
};

/// Whom a bucket belongs to. Never printed: an identifier names a credential.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A macaroon identifier litd has accepted.
    Identity(Bytes),
    /// A peer address masked to its configured prefix (unspecified when unknown).
    Peer(IpAddr),
}

type Keyed<C> =
    governor::RateLimiter<Key, DashMapStateStore<Key>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One limit: its configured rate, its buckets (none when blocked) and its counters.
struct Limit<C: Clock> {
    /// `read`, `write`, or the overridden method path: for messages and metric labels.
    name: String,
    rate: Rate,
    /// Shared with the next set of limits when a reload keeps this limit's rate.
    buckets: Option<Arc<Keyed<C>>>,
    allowed: Counter,
    refused: Counter,
}

/// What `[rate_limit]` sets and a reload swaps whole: whether limiting is on, the limits with
/// their buckets, which methods have their own, how peer addresses are grouped.
struct Limits<C: Clock> {
    enabled: bool,
    /// `[0]` read, `[1]` write, then one per override.
    limits: Vec<Limit<C>>,
    overrides: HashMap<String, usize>,
    prefix_v4: u8,
    prefix_v6: u8,
}

/// Labels of one rate-limit decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    /// The method's class, `read` or `write`.
    pub class: &'static str,
    /// The limit applied: `read`, `write`, or an overridden method path (from config, so
    /// bounded).
    pub limit: String,
    /// `allowed` or `refused`.
    pub outcome: &'static str,
}

/// The decision engine shared by every clone of the layer: limits, buckets, the accepted set.
/// Generic over the clock so tests drive it with `governor`'s fake clock.
pub struct Limiter<C: Clock = DefaultClock> {
    /// Read once per call; swapped by [`Limiter::reconfigure`].
    limits: ArcSwap<Limits<C>>,
    decisions: Family<DecisionLabels, Counter>,
    accepted: Accepted,
    clock: C,
    start: C::Instant,
    sweep_every: u64,
    next_sweep: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limits = self.limits.load();
        f.debug_struct("Limiter")
            .field("enabled", &limits.enabled)
            .field("limits", &limits.limits.len())
            .finish_non_exhaustive()
    }
}

/// What [`Limiter::check`] lets through: the identifier to record if litd accepts the call,
/// and the limit the call was counted against.
#[derive(Debug, Default)]
pub struct Admitted {
    pub(super) observe: Option<Bytes>,
    pub(super) limit: usize,
}

impl Limiter<DefaultClock> {
    /// A limiter on the real clock.
    pub fn new(cfg: &RateLimitConfig) -> Arc<Self> {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter on `clock` (tests pass `governor::clock::FakeRelativeClock`). `cfg` must have
    /// passed validation; a `num_hours = 0` that did not is treated as blocked.
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> Arc<Self> {
        let decisions = Family::<DecisionLabels, Counter>::default();
        Self::build(cfg, clock, decisions)
    }

    pub(super) fn build(
        cfg: &RateLimitConfig,
        clock: C,
        decisions: Family<DecisionLabels, Counter>,
    ) -> Arc<Self> {
        let limits = Limits::of(cfg, &clock, &decisions, None);
        let start = clock.now();
        Arc::new(Limiter {
            limits: ArcSwap::from_pointee(limits),
            decisions,
            accepted: Accepted::new(cfg.max_identities),
            sweep_every: nanos(cfg.sweep_every).max(1),
            next_sweep: AtomicU64::new(nanos(cfg.sweep_every)),
            start,
            clock,
        })
    }

    /// Applies a reloaded `[rate_limit]` (validated) to calls from now on: `enabled`, the
    /// class and method limits and the peer prefixes. A limit whose name and rate are
    /// unchanged keeps its buckets (callers keep what they have used); a new or changed limit
    /// starts with empty buckets, so every caller gets its full burst under the new rate.
    /// `max_identities` and `sweep_every` apply at start only.
    pub fn reconfigure(&self, cfg: &RateLimitConfig) {
        let old = self.limits.load_full();
        let new = Limits::of(cfg, &self.clock, &self.decisions, Some(&old));
        self.limits.store(Arc::new(new));
    }

    /// Decides one request: `Ok` lets it through (counted against its limit), `Err` is the
    /// refusal to answer with. Reads only the method, the path and the [`Caller`] extension.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        caller: Option<&Caller>,
    ) -> Result<Admitted, Error> {
        let limits = self.limits.load();
        if !limits.enabled {
            return Ok(Admitted::default());
        }
        self.maybe_sweep();
        let (grpc, class) = methods::classify(method, path);
        let index = match grpc.and_then(|g| limits.overrides.get(g)) {
            Some(&i) => i,
            None => match class {
                Class::Read => 0,
                Class::Write => 1,
            },
        };
        let limit = &limits.limits[index];

        let identifier = caller
            .and_then(|c| c.credential.as_ref())
            .and_then(|c| c.identifier());
        let mut observe = None;
        let key = match identifier.map(|id| (id, self.accepted.get(id))) {
            Some((_, Some(stored))) => Key::Identity(stored),
            Some((id, None)) => {
                // Only a method where litd verifies the macaroon can prove it genuine.
                if grpc.is_some_and(methods::verifies_macaroon) {
                    observe = Some(id.clone());
                }
                limits.peer_key(caller)
            }
            None => limits.peer_key(caller),
        };
        let who = match key {
            Key::Identity(_) => "credential",
            Key::Peer(_) => "address",
        };

        let Some(buckets) = &limit.buckets else {
            limit.refused.inc();
            return Err(Error::RateLimited {
                message: format!(
                    "rate limit: {} calls are blocked (iterations = 0 per {}h)",
                    limit.name, limit.rate.num_hours
                ),
                retry_after: Duration::from_secs(u64::from(limit.rate.num_hours) * 3600),
            });
        };
        match buckets.check_key(&key) {
            Ok(()) => {
                limit.allowed.inc();
                Ok(Admitted {
                    observe,
                    limit: index,
                })
            }
            Err(not_until) => {
                limit.refused.inc();
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(Error::RateLimited {
                    message: format!(
                        "rate limit exceeded: {} limit {} per {}h for this {who}; retry after {}s",
                        limit.name,
                        limit.rate.iterations,
                        limit.rate.num_hours,
                        secs.max(1)
                    ),
                    retry_after: wait,
                })
            }
        }
    }

    /// Records that litd accepted the credential with this identifier.
    pub fn accept(&self, identifier: &[u8]) {
        self.accepted.insert(identifier);
    }

    /// Records that litd accepted the credential with this identifier on a call counted
    /// against limit `index` (in its address bucket): the call is charged to the identity's
    /// own bucket too, as it would have been had the identity been known.
    /// (After a reload, the limit at `index` in the new set: at worst another limit is
    /// charged one call.)
    pub(super) fn accepted(&self, index: usize, identifier: &[u8]) {
        self.accept(identifier);
        let limits = self.limits.load();
        let (Some(id), Some(buckets)) = (
            self.accepted.get(identifier),
            limits.limits.get(index).and_then(|l| l.buckets.as_ref()),
        ) else {
            return;
        };
        let _ = buckets.check_key(&Key::Identity(id));
    }

    /// Drops every key whose bucket has refilled (indistinguishable from a new key) and
    /// releases the memory. Runs from [`check`](Self::check) every `sweep_every`.
    pub fn sweep(&self) {
        for l in &self.limits.load().limits {
            if let Some(b) = &l.buckets {
                b.retain_recent();
                b.shrink_to_fit();
            }
        }
    }

    /// Limiter keys held now, over every limit.
    pub fn keys(&self) -> usize {
        self.limits
            .load()
            .limits
            .iter()
            .filter_map(|l| l.buckets.as_ref())
            .map(|b| b.len())
            .sum()
    }

    /// Macaroon identifiers remembered as accepted.
    pub fn identities(&self) -> usize {
        self.accepted.len()
    }

    fn maybe_sweep(&self) {
        let now = self.clock.now().duration_since(self.start).as_u64();
        let due = self.next_sweep.load(Ordering::Relaxed);
        // One caller wins the exchange and sweeps; the others go on.
        if now >= due
            && self
                .next_sweep
                .compare_exchange(
                    due,
                    now + self.sweep_every,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep();
        }
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// The limits of `cfg`; with `old`, an unchanged limit keeps its buckets.
    fn of(
        cfg: &RateLimitConfig,
        clock: &C,
        decisions: &Family<DecisionLabels, Counter>,
        old: Option<&Limits<C>>,
    ) -> Self {
        let limit = |name: String, class: Class, rate: Rate| {
            let counter = |outcome| {
                decisions
                    .get_or_create(&DecisionLabels {
                        class: class.as_str(),
                        limit: name.clone(),
                        outcome,
                    })
                    .clone()
            };
            let kept = old
                .and_then(|o| o.limits.iter().find(|l| l.name == name && l.rate == rate))
                .and_then(|l| l.buckets.clone());
            Limit {
                allowed: counter("allowed"),
                refused: counter("refused"),
                buckets: kept.or_else(|| {
                    quota(rate).map(|q| {
                        Arc::new(governor::RateLimiter::new(
                            q,
                            DashMapStateStore::default(),
                            clock.clone(),
                        ))
                    })
                }),
                name,
                rate,
            }
        };
        let mut limits = vec![
            limit("read".into(), Class::Read, cfg.read),
            limit("write".into(), Class::Write, cfg.write),
        ];
        let mut overrides = HashMap::new();
        for m in &cfg.method {
            overrides.insert(m.path.clone(), limits.len());
            limits.push(limit(m.path.clone(), methods::grpc_class(&m.path), m.limit));
        }
        Limits {
            enabled: cfg.enabled,
            limits,
            overrides,
            prefix_v4: cfg.peer_prefix_v4.min(32),
            prefix_v6: cfg.peer_prefix_v6.min(128),
        }
    }

    fn peer_key(&self, caller: Option<&Caller>) -> Key {
        let ip = caller
            .and_then(|c| c.peer)
            .map(|p| p.ip().to_canonical())
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        Key::Peer(match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_v4))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_v6))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// GCRA quota for LiT's shape: a burst of `iterations`, one more every
/// `num_hours * 3600 / iterations` seconds. `None` when blocked.
fn quota(rate: Rate) -> Option<Quota> {
    let burst = NonZeroU32::new(rate.iterations)?;
    let window = Duration::from_secs(u64::from(rate.num_hours) * 3600);
    Quota::with_period(window / rate.iterations).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
pub(super) mod tests;
