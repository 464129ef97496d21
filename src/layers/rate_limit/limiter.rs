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
    buckets: Option<Keyed<C>>,
    allowed: Counter,
    refused: Counter,
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
            accepted: Accepted::new(cfg.max_identities),
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
    pub(super) fn accepted(&self, index: usize, identifier: &[u8]) {
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
pub(super) mod tests {
    use std::net::SocketAddr;

    use governor::clock::FakeRelativeClock;

    use super::{super::config::MethodLimit, *};
    use crate::{
        demo::{attenuate, MacaroonBaker},
        layers::identity::{Credential, CredentialKind},
        macaroon::Macaroon,
    };

    const GET_INFO: &str = "/lnrpc.Lightning/GetInfo";
    const ADD_INVOICE: &str = "/lnrpc.Lightning/AddInvoice";
    const ADD_AUTOPILOT: &str = "/litrpc.Autopilot/AddAutopilotSession";

    pub(in crate::layers::rate_limit) fn cfg(
        read: (u32, u32),
        write: (u32, u32),
    ) -> RateLimitConfig {
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

    pub(in crate::layers::rate_limit) fn limiter(
        cfg: &RateLimitConfig,
    ) -> (Arc<Limiter<FakeRelativeClock>>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(cfg, clock.clone()), clock)
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    pub(in crate::layers::rate_limit) fn caller(peer_addr: &str, mac: Option<&Macaroon>) -> Caller {
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
}
