//! Bounded replays and truthful health (issue 12 items 2 and 7), end to end: session-list hits
//! to clients that never read share one plaintext per entry, the memory they hold stays within
//! `cache.max_replay_bytes` (read from the cache's own accounting in `/metrics`), a call beyond
//! that budget is passed through to litd and still gets the whole answer, and the budget is free
//! again once the stalled callers hang up; `/ready` reports a store that cannot write.

mod common;

use std::time::Duration;

use common::*;
use litgate::{demo::attenuate, proto::litrpc::ListSessionsRequest};

const LIST: &str = "/litrpc.Sessions/ListSessions";
/// Sessions litd holds: a ~200 KB answer.
const SESSIONS: usize = 1000;
/// Callers that never read.
const STALLED: usize = 20;

async fn metrics(env: &Env) -> String {
    admin_get(&env.admin_uri("/metrics")).await.1
}

async fn list(env: &Env, mac: &str) -> Collected {
    send(
        &h2_client(&env.gate_cert),
        grpc_request(
            &env.gate_uri(LIST),
            grpc_frame(&ListSessionsRequest {}),
            Some(mac),
        ),
    )
    .await
}

async fn replay_bytes_drop_to_zero(env: &Env) -> bool {
    eventually(100, Duration::from_millis(50), || async {
        metric(&metrics(env).await, "litgate_cache_replay_bytes") == 0.0
    })
    .await
}

#[tokio::test]
async fn stalled_hits_share_one_plaintext_within_the_budget_and_the_rest_pass_through() {
    // Room for one ~200 KB answer in clear, not two.
    let env = Env::start_with(
        "[cache]\nmax_entry_bytes = 300000\nmax_bytes = 10000000\nmax_replay_bytes = 300000\n",
    )
    .await;
    env.litd.add_bulk_sessions(SESSIONS);
    let mac = env.macaroon();

    let first = list(&env, &mac).await;
    assert_eq!(first.grpc_status().as_deref(), Some("0"));
    let answer = first.body.len();
    assert!(answer > 150_000 && answer <= 300_000, "{answer}");
    assert_eq!(env.litd.count(LIST), 1);
    assert!(
        replay_bytes_drop_to_zero(&env).await,
        "read whole: released"
    );

    // Hits to callers that never read: one plaintext between all of them.
    let mut held = Vec::new();
    for _ in 0..STALLED {
        let (head, keep) =
            stalled_call(&env, LIST, &mac, grpc_frame(&ListSessionsRequest {})).await;
        assert_eq!(head.status, 200);
        held.push(keep);
    }
    assert_eq!(env.litd.count(LIST), 1, "all were hits");
    let m = metrics(&env).await;
    let in_clear = metric(&m, "litgate_cache_replay_bytes") as usize;
    assert!(
        in_clear >= answer && in_clear < answer + 1024,
        "one copy in clear, not {STALLED}: {in_clear} bytes for a {answer}-byte answer"
    );
    assert_eq!(
        metric(&m, "litgate_cache_replay_shared_total") as usize,
        STALLED - 1
    );

    // Another credential: its answer cannot be held in clear beside the stalled one, so the
    // call goes to litd and the answer streams from there, whole.
    let other = attenuate(env.litd.macaroon(), "time-before 2099-01-01T00:00:00Z").to_hex();
    for round in 0..2 {
        let r = list(&env, &other).await;
        assert_eq!(r.grpc_status().as_deref(), Some("0"), "round {round}");
        assert_eq!(r.body, first.body, "round {round}: the same answer");
    }
    let m = metrics(&env).await;
    assert!(
        metric(&m, "litgate_cache_replay_bytes") as usize <= 300_000,
        "{m}"
    );
    assert_eq!(
        metric(&m, "litgate_cache_replay_overflows_total"),
        2.0,
        "{m}"
    );
    // The miss (stored, not replayable), its pass-through, then the hit's pass-through.
    assert_eq!(env.litd.count(LIST), 4);

    // The stalled callers hang up: the plaintext goes, and hits are served from memory again.
    drop(held);
    assert!(replay_bytes_drop_to_zero(&env).await, "released on hang-up");
    let r = list(&env, &other).await;
    assert_eq!(r.body, first.body);
    assert_eq!(env.litd.count(LIST), 4, "a hit again");
    env.stop().await;
}

#[tokio::test]
async fn ready_reports_a_store_that_cannot_write() {
    let env = Env::start().await;
    env.gate
        .store()
        .inject_write_fault(Some(std::io::ErrorKind::StorageFull));
    let (status, body) = admin_get(&env.admin_uri("/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("store:") && body.contains("cannot write"),
        "{body}"
    );
    env.gate.store().inject_write_fault(None);
    // Probes are rate-limited on litgate's clock (the test's manual clock).
    env.clock.advance(Duration::from_secs(10));
    let (status, body) = admin_get(&env.admin_uri("/ready")).await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;
}
