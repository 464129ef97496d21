//! Rate limit (`design.md` §4): per-caller limits in LiT's RateLimit shape
//! (`{ iterations, num_hours }`), separately for reads and writes ([`crate::methods`]), with
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
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use governor::{
    clock::{Clock, DefaultClock, Reference},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
    Quota,
};
use http::Method;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::ConstGauge},
    registry::Registry,
};
use tower::{Layer, Service};

pub(crate) mod config;

use self::config::RateLimitConfig;
use crate::{
    body::{Request, Response},
    error::Error,
    grpc::{status, Protocol},
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
    buckets: Option<Keyed<C>>,
    allowed: Counter,
    refused: Counter,
}

/// Labels of one rate-limit decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The method's class, `read` or `write`.
    pub class: &'static str,
    /// The limit applied: `read`, `write`, or an overridden method path (from config, so
    /// bounded).
    pub limit: String,
    /// `allowed` or `refused`.
    pub outcome: &'static str,
}

/// Macaroon identifiers litd has accepted, bounded; the oldest acceptance is evicted first.
#[derive(Debug, Default)]
struct Identities {
    cap: usize,
    set: HashSet<Bytes>,
    order: VecDeque<Bytes>,
}

impl Identities {
    fn get(&self, id: &[u8]) -> Option<Bytes> {
        self.set.get(id).cloned()
    }

    fn insert(&mut self, id: &[u8]) {
        if self.cap == 0 || self.set.contains(id) {
            return;
        }
        while self.set.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.set.remove(&old);
                }
                None => break,
            }
        }
        // A copy: the request's buffer also holds the signature, which must not outlive it.
        let id = Bytes::copy_from_slice(id);
        self.set.insert(id.clone());
        self.order.push_back(id);
    }
}

/// Shared handle to the accepted set, held by response bodies until their trailers arrive.
#[derive(Debug, Clone)]
struct Accepted(Arc<RwLock<Identities>>);

impl Accepted {
    fn get(&self, id: &[u8]) -> Option<Bytes> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
    }

    fn insert(&self, id: &[u8]) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .set
            .len()
    }
}

/// The decision engine shared by every clone of the layer: limits, buckets, the accepted set.
/// Generic over the clock so tests drive it with `governor`'s fake clock.
pub struct Limiter<C: Clock = DefaultClock> {
    enabled: bool,
    /// `[0]` read, `[1]` write, then one per override.
    limits: Vec<Limit<C>>,
    overrides: HashMap<String, usize>,
    accepted: Accepted,
    prefix_v4: u8,
    prefix_v6: u8,
    clock: C,
    start: C::Instant,
    sweep_every: u64,
    next_sweep: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("enabled", &self.enabled)
            .field("limits", &self.limits.len())
            .finish_non_exhaustive()
    }
}

/// What [`Limiter::check`] lets through: the identifier to record if litd accepts the call,
/// and the limit the call was counted against.
#[derive(Debug, Default)]
pub struct Admitted {
    observe: Option<Bytes>,
    limit: usize,
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

    fn build(
        cfg: &RateLimitConfig,
        clock: C,
        decisions: Family<DecisionLabels, Counter>,
    ) -> Arc<Self> {
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
            Limit {
                allowed: counter("allowed"),
                refused: counter("refused"),
                buckets: quota(rate).map(|q| {
                    governor::RateLimiter::new(q, DashMapStateStore::default(), clock.clone())
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
        let start = clock.now();
        Arc::new(Limiter {
            enabled: cfg.enabled,
            limits,
            overrides,
            accepted: Accepted(Arc::new(RwLock::new(Identities {
                cap: cfg.max_identities,
                ..Default::default()
            }))),
            prefix_v4: cfg.peer_prefix_v4.min(32),
            prefix_v6: cfg.peer_prefix_v6.min(128),
            sweep_every: nanos(cfg.sweep_every).max(1),
            next_sweep: AtomicU64::new(nanos(cfg.sweep_every)),
            start,
            clock,
        })
    }

    /// Decides one request: `Ok` lets it through (counted against its limit), `Err` is the
    /// refusal to answer with. Reads only the method, the path and the [`Caller`] extension.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        caller: Option<&Caller>,
    ) -> Result<Admitted, Error> {
        if !self.enabled {
            return Ok(Admitted::default());
        }
        self.maybe_sweep();
        let (grpc, class) = methods::classify(method, path);
        let index = match grpc.and_then(|g| self.overrides.get(g)) {
            Some(&i) => i,
            None => match class {
                Class::Read => 0,
                Class::Write => 1,
            },
        };
        let limit = &self.limits[index];

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
                self.peer_key(caller)
            }
            None => self.peer_key(caller),
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
    fn accepted(&self, index: usize, identifier: &[u8]) {
        self.accept(identifier);
        let (Some(id), Some(buckets)) = (
            self.accepted.get(identifier),
            self.limits.get(index).and_then(|l| l.buckets.as_ref()),
        ) else {
            return;
        };
        let _ = buckets.check_key(&Key::Identity(id));
    }

    /// Drops every key whose bucket has refilled (indistinguishable from a new key) and
    /// releases the memory. Runs from [`check`](Self::check) every `sweep_every`.
    pub fn sweep(&self) {
        for l in &self.limits {
            if let Some(b) = &l.buckets {
                b.retain_recent();
                b.shrink_to_fit();
            }
        }
    }

    /// Limiter keys held now, over every limit.
    pub fn keys(&self) -> usize {
        self.limits
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

impl Limiter<DefaultClock> {
    /// A limiter on the real clock whose decisions are counted in `registry`
    /// (`litgate_rate_limit_decisions_total{class, limit, outcome}`), with the key and
    /// identity counts read at each scrape (`litgate_rate_limit_keys`,
    /// `litgate_rate_limit_identities`).
    pub fn registered(cfg: &RateLimitConfig, registry: &mut Registry) -> Arc<Self> {
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "litgate_rate_limit_decisions",
            "Rate-limit decisions on the public face by method class, limit and outcome",
            decisions.clone(),
        );
        let limiter = Self::build(cfg, DefaultClock::default(), decisions);
        registry.register_collector(Box::new(StateCollector(limiter.clone())));
        limiter
    }
}

/// Reports the limiter's state sizes at scrape time.
#[derive(Debug)]
struct StateCollector(Arc<Limiter<DefaultClock>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "litgate_rate_limit_keys",
                "Rate-limit buckets held (accepted identities and peer address prefixes)",
                self.0.keys(),
            ),
            (
                "litgate_rate_limit_identities",
                "Macaroon identifiers remembered as accepted by litd",
                self.0.identities(),
            ),
        ];
        for (name, help, n) in gauges {
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        Ok(())
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
    pub fn new(limiter: Arc<Limiter<C>>) -> Self {
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
    type Future = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

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
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
        let Some(id) = admitted.observe else {
            return Box::pin(self.inner.call(req));
        };
        let protocol = Protocol::of(&req);
        let limiter = self.limiter.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(observe(resp, protocol, limiter, admitted.limit, id))
        })
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
    use std::net::SocketAddr;

    use governor::clock::FakeRelativeClock;
    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::{config::MethodLimit, *};
    use crate::{
        body::BoxError,
        demo::{attenuate, MacaroonBaker},
        layers::identity::{Credential, CredentialKind},
        macaroon::Macaroon,
    };

    const GET_INFO: &str = "/lnrpc.Lightning/GetInfo";
    const ADD_INVOICE: &str = "/lnrpc.Lightning/AddInvoice";
    const ADD_AUTOPILOT: &str = "/litrpc.Autopilot/AddAutopilotSession";

    fn cfg(read: (u32, u32), write: (u32, u32)) -> RateLimitConfig {
        RateLimitConfig {
            read: Rate {
                iterations: read.0,
                num_hours: read.1,
            },
            write: Rate {
                iterations: write.0,
                num_hours: write.1,
            },
            ..RateLimitConfig::default()
        }
    }

    fn limiter(cfg: &RateLimitConfig) -> (Arc<Limiter<FakeRelativeClock>>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(cfg, clock.clone()), clock)
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn caller(peer_addr: &str, mac: Option<&Macaroon>) -> Caller {
        Caller {
            peer: peer(peer_addr),
            credential: mac.map(|m| Credential {
                kind: CredentialKind::Macaroon,
                raw: Bytes::from(m.to_hex()),
                macaroon: Some(m.clone()),
            }),
        }
    }

    fn grpc(l: &Limiter<FakeRelativeClock>, path: &str, c: &Caller) -> Result<Admitted, Error> {
        l.check(&Method::POST, path, Some(c))
    }

    fn allowed_n(l: &Limiter<FakeRelativeClock>, path: &str, c: &Caller) -> usize {
        (0..1000).take_while(|_| grpc(l, path, c).is_ok()).count()
    }

    #[test]
    fn the_n_plus_first_read_is_refused_with_a_named_limit() {
        let (l, _clock) = limiter(&cfg((3, 1), (100, 1)));
        let c = caller("192.0.2.1:5000", None);
        for _ in 0..3 {
            grpc(&l, GET_INFO, &c).unwrap();
        }
        let Err(Error::RateLimited {
            message,
            retry_after,
        }) = grpc(&l, GET_INFO, &c)
        else {
            panic!("4th read admitted");
        };
        // One read every 20 minutes refills the bucket.
        assert_eq!(retry_after, Duration::from_secs(1200));
        assert_eq!(
            message,
            "rate limit exceeded: read limit 3 per 1h for this address; retry after 1200s"
        );
    }

    #[test]
    fn writes_are_counted_separately_from_reads() {
        let (l, _clock) = limiter(&cfg((2, 1), (3, 1)));
        let c = caller("192.0.2.1:5000", None);
        assert_eq!(allowed_n(&l, GET_INFO, &c), 2);
        assert_eq!(allowed_n(&l, ADD_INVOICE, &c), 3);
        // Unknown methods are writes: the write bucket is empty for them too.
        assert!(grpc(&l, "/x.Y/Unknown", &c).is_err());
        // REST: GET /v1/getinfo is the read twin of GetInfo; POST /v1/invoices a write.
        assert!(l.check(&Method::GET, "/v1/getinfo", Some(&c)).is_err());
        assert!(l.check(&Method::POST, "/v1/invoices", Some(&c)).is_err());
    }

    #[test]
    fn the_bucket_refills_over_the_period() {
        let (l, clock) = limiter(&cfg((4, 2), (1, 1)));
        let c = caller("192.0.2.1:5000", None);
        assert_eq!(allowed_n(&l, GET_INFO, &c), 4);
        // 2h / 4 = 30 min per call.
        clock.advance(Duration::from_secs(29 * 60));
        assert!(grpc(&l, GET_INFO, &c).is_err());
        clock.advance(Duration::from_secs(60));
        assert_eq!(allowed_n(&l, GET_INFO, &c), 1);
        // After a whole window idle, the whole burst is back, and never more.
        clock.advance(Duration::from_secs(2 * 3600));
        assert_eq!(allowed_n(&l, GET_INFO, &c), 4);
    }

    #[test]
    fn gcra_admits_at_most_two_iterations_minus_one_per_window() {
        // The exact bound (README): in any half-open window of num_hours, GCRA admits at most
        // 2 * iterations - 1 calls (a full burst at the start, then one per refill); litd's
        // sliding log admits at most iterations. Closed windows add one: 2 * iterations.
        let (l, clock) = limiter(&cfg((10, 1), (1, 1)));
        let c = caller("192.0.2.1:5000", None);
        let mut times = Vec::new();
        for s in (0..4 * 3600).step_by(30) {
            if grpc(&l, GET_INFO, &c).is_ok() {
                times.push(s);
            }
            clock.advance(Duration::from_secs(30));
        }
        let most = |closed: bool| {
            times
                .iter()
                .map(|&t| {
                    times
                        .iter()
                        .filter(|&&u| u >= t && (u < t + 3600 || (closed && u == t + 3600)))
                        .count()
                })
                .max()
                .unwrap()
        };
        assert_eq!(most(false), 19);
        assert_eq!(most(true), 20);
        // Then the configured rate: a burst of 10, then one every 6 minutes (39 in 4 h).
        assert_eq!(times.len(), 10 + 39);
    }

    #[test]
    fn method_overrides_win_with_their_own_bucket() {
        let mut c = cfg((100, 1), (100, 1));
        c.method.push(MethodLimit {
            path: ADD_AUTOPILOT.into(),
            limit: Rate {
                iterations: 2,
                num_hours: 1,
            },
        });
        let (l, _clock) = limiter(&c);
        let who = caller("192.0.2.1:5000", None);
        assert_eq!(allowed_n(&l, ADD_AUTOPILOT, &who), 2);
        // The REST twin is the same method, so the same bucket.
        let Err(Error::RateLimited { message, .. }) =
            l.check(&Method::POST, "/v1/autopilot/sessions", Some(&who))
        else {
            panic!("REST twin escaped the override");
        };
        assert!(
            message.contains("/litrpc.Autopilot/AddAutopilotSession limit 2 per 1h"),
            "{message}"
        );
        // Other writes still use the write limit.
        grpc(&l, ADD_INVOICE, &who).unwrap();
    }

    #[test]
    fn zero_iterations_blocks_the_class() {
        let (l, _clock) = limiter(&cfg((5, 1), (0, 1)));
        let c = caller("192.0.2.1:5000", None);
        grpc(&l, GET_INFO, &c).unwrap();
        let Err(Error::RateLimited { message, .. }) = grpc(&l, ADD_INVOICE, &c) else {
            panic!("blocked write admitted");
        };
        assert!(message.contains("write calls are blocked"), "{message}");
    }

    #[test]
    fn accepted_macaroon_and_its_attenuated_copies_share_one_bucket() {
        let (l, _clock) = limiter(&cfg((4, 1), (4, 1)));
        let mac = MacaroonBaker::new().bake_admin();
        let copy = attenuate(&mac, "time-before 2099-01-01T00:00:00Z");
        assert_ne!(mac.signature, copy.signature);

        // Not yet accepted: counted against the address, and marked for observation.
        let first = grpc(&l, GET_INFO, &caller("192.0.2.1:5000", Some(&mac))).unwrap();
        assert!(first.observe.is_some());
        l.accept(&mac.identifier);
        assert_eq!(l.identities(), 1);

        // From two different addresses, the original and the copy drain one bucket.
        let a = caller("192.0.2.1:5000", Some(&mac));
        let b = caller("198.51.100.7:6000", Some(&copy));
        assert!(grpc(&l, GET_INFO, &a).unwrap().observe.is_none());
        grpc(&l, GET_INFO, &b).unwrap();
        grpc(&l, GET_INFO, &a).unwrap();
        grpc(&l, GET_INFO, &b).unwrap();
        let Err(Error::RateLimited { message, .. }) = grpc(&l, GET_INFO, &a) else {
            panic!("5th read on one identity admitted");
        };
        assert!(
            message.ends_with("for this credential; retry after 900s"),
            "{message}"
        );
        // The address bucket of `a` still has room (it paid only for the first call).
        assert_eq!(allowed_n(&l, GET_INFO, &caller("192.0.2.1:5000", None)), 3);
    }

    #[test]
    fn forged_macaroons_from_one_address_share_one_bucket_and_add_no_keys() {
        let (l, _clock) = limiter(&cfg((5, 1), (5, 1)));
        let mut admitted = 0;
        for i in 0..10_000u32 {
            // A distinct identifier each time, never accepted by litd.
            let forged = Macaroon {
                location: None,
                identifier: Bytes::from(format!("forged-{i}")),
                caveats: Vec::new(),
                signature: Bytes::from_static(&[0; 32]),
            };
            if grpc(
                &l,
                GET_INFO,
                &caller("[2001:db8:1:2:3::9]:443", Some(&forged)),
            )
            .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(l.keys(), 1);
        assert_eq!(l.identities(), 0);
        // Same /64, another host: same bucket. Another /64: its own.
        assert!(grpc(&l, GET_INFO, &caller("[2001:db8:1:2:ffff::1]:1", None)).is_err());
        assert!(grpc(&l, GET_INFO, &caller("[2001:db8:1:3::1]:1", None)).is_ok());
    }

    #[test]
    fn only_methods_that_verify_macaroons_can_prove_a_credential() {
        let (l, _clock) = limiter(&cfg((5, 1), (5, 1)));
        let forged = Macaroon {
            location: None,
            identifier: Bytes::from_static(b"forged"),
            caveats: Vec::new(),
            signature: Bytes::from_static(&[0; 32]),
        };
        let c = caller("192.0.2.1:5000", Some(&forged));
        // litd answers SubServerStatus (whitelisted) and unknown methods without looking at
        // the macaroon: an OK there proves nothing.
        assert!(grpc(&l, "/litrpc.Status/SubServerStatus", &c)
            .unwrap()
            .observe
            .is_none());
        assert!(grpc(&l, "/litgatetest.Echo/Unary", &c)
            .unwrap()
            .observe
            .is_none());
        assert!(grpc(&l, GET_INFO, &c).unwrap().observe.is_some());
    }

    #[test]
    fn idle_keys_are_swept_and_identities_are_bounded() {
        let mut c = cfg((2, 1), (2, 1));
        c.max_identities = 3;
        c.sweep_every = Duration::from_secs(60);
        let (l, clock) = limiter(&c);
        for i in 0..50u8 {
            grpc(&l, GET_INFO, &caller(&format!("10.0.0.{i}:1"), None)).unwrap();
        }
        assert_eq!(l.keys(), 50);
        for i in 0..10u8 {
            l.accept(&[i; 8]);
        }
        assert_eq!(l.identities(), 3);
        // The oldest were evicted, the newest kept.
        assert!(l.accepted.get(&[9; 8]).is_some());
        assert!(l.accepted.get(&[0; 8]).is_none());

        // After a full window every bucket is full again; the next check sweeps them.
        clock.advance(Duration::from_secs(3600 + 60));
        grpc(&l, GET_INFO, &caller("10.0.1.1:1", None)).unwrap();
        assert_eq!(l.keys(), 1);
    }

    #[test]
    fn ipv4_mapped_peers_and_prefixes() {
        let mut c = cfg((1, 1), (1, 1));
        c.peer_prefix_v4 = 24;
        let (l, _clock) = limiter(&c);
        grpc(&l, GET_INFO, &caller("[::ffff:192.0.2.1]:1", None)).unwrap();
        // Same /24, written as plain IPv4: same bucket.
        assert!(grpc(&l, GET_INFO, &caller("192.0.2.200:1", None)).is_err());
        grpc(&l, GET_INFO, &caller("192.0.3.1:1", None)).unwrap();
    }

    #[test]
    fn disabled_admits_everything() {
        let mut c = cfg((0, 1), (0, 1));
        c.enabled = false;
        let (l, _clock) = limiter(&c);
        for _ in 0..10 {
            grpc(&l, ADD_INVOICE, &caller("192.0.2.1:1", None)).unwrap();
        }
        assert_eq!(l.keys(), 0);
    }

    // --- the layer: refusal before the inner service, and acceptance from responses ---

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
