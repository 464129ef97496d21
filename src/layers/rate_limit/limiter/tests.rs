//! The decision engine's tests, on governor's fake clock.

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

pub(in crate::layers::rate_limit) fn cfg(read: (u32, u32), write: (u32, u32)) -> RateLimitConfig {
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
        unknown: false,
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

#[test]
fn reconfigure_applies_new_limits_and_keeps_the_buckets_of_unchanged_ones() {
    let (l, _clock) = limiter(&cfg((2, 1), (3, 1)));
    let c = caller("192.0.2.1:5000", None);
    assert_eq!(allowed_n(&l, GET_INFO, &c), 2);
    assert_eq!(allowed_n(&l, ADD_INVOICE, &c), 3);

    // Reads raised to 5/h (a changed limit: fresh buckets, the full new burst); writes as
    // they were (the same buckets: still exhausted); GetInfo blocked by an override.
    let mut next = cfg((5, 1), (3, 1));
    l.reconfigure(&next);
    assert_eq!(allowed_n(&l, "/lnrpc.Lightning/ListPeers", &c), 5);
    assert_eq!(allowed_n(&l, ADD_INVOICE, &c), 0, "write buckets kept");

    next.method = vec![MethodLimit {
        path: GET_INFO.into(),
        limit: Rate {
            iterations: 0,
            num_hours: 1,
        },
        unknown: false,
    }];
    l.reconfigure(&next);
    let Err(Error::RateLimited { message, .. }) = grpc(&l, GET_INFO, &c) else {
        panic!("GetInfo admitted after it was blocked");
    };
    assert!(message.contains("calls are blocked"), "{message}");

    next.enabled = false;
    l.reconfigure(&next);
    assert!(grpc(&l, GET_INFO, &c).is_ok(), "limiting switched off");
}
