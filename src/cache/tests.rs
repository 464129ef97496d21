//! Unit tests of the session cache against a scripted `tower::service_fn` upstream.

use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use prost::Message;

use super::*;
use crate::{
    clock::{Clock, ManualClock},
    grpc::{frame, web_text},
    proto::litrpc::{ListSessionsResponse, Session},
};

impl Cache {
    fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }
}

const MAC: &str = "0201036c6e640206034944454e5400000620a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";

/// What the scripted upstream does on its next call.
#[derive(Clone)]
enum Step {
    Ok(Vec<Session>),
    Refuse,
    Down,
}

struct Script {
    steps: Mutex<Vec<Step>>,
    calls: AtomicUsize,
    delay: Duration,
}

fn session(secret: &[u8], state: i32, expiry: u64) -> Session {
    Session {
        label: "s".into(),
        session_state: state,
        expiry_timestamp_seconds: expiry,
        pairing_secret: secret.to_vec(),
        ..Default::default()
    }
}

fn grpc_ok(sessions: Vec<Session>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("x-litd-extra", HeaderValue::from_static("kept when stored"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    replay(
        Answer {
            status: StatusCode::OK,
            headers,
            body: frame::message(&ListSessionsResponse { sessions }.encode_to_vec()),
            trailers: Some(trailers),
        },
        false,
    )
}

fn grpc_refused() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("2"));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("verification failed: signature mismatch"),
    );
    replay(
        Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::new(),
            trailers: None,
        },
        false,
    )
}

fn scripted(
    script: Arc<Script>,
) -> impl tower::Service<Request, Response = Response, Error = Error, Future: Send> + Clone + Send + Sync
{
    tower::service_fn(move |_req: Request| {
        let script = script.clone();
        async move {
            script.calls.fetch_add(1, Ordering::SeqCst);
            if !script.delay.is_zero() {
                tokio::time::sleep(script.delay).await;
            }
            let step = {
                let mut steps = script.steps.lock().unwrap();
                if steps.len() > 1 {
                    steps.remove(0)
                } else {
                    steps[0].clone()
                }
            };
            match step {
                Step::Ok(s) => Ok(grpc_ok(s)),
                Step::Refuse => Ok(grpc_refused()),
                Step::Down => Err(Error::Upstream {
                    addr: "litd".into(),
                    reason: "connection refused".into(),
                }),
            }
        }
    })
}

struct Harness {
    cache: Cache,
    script: Arc<Script>,
    clock: ManualClock,
    store: Store,
    _dir: tempfile::TempDir,
}

/// The default cache in front of a fake litd whose next answer lists one session, at once.
fn one_session() -> Harness {
    harness(
        CacheConfig::default(),
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::ZERO,
    )
}

fn harness(cfg: CacheConfig, steps: Vec<Step>, delay: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clock = ManualClock::new();
    let script = Arc::new(Script {
        steps: Mutex::new(steps),
        calls: AtomicUsize::new(0),
        delay,
    });
    let cache = Cache::new(
        &cfg,
        store.clone(),
        Arc::new(clock.clone()),
        scripted(script.clone()),
        "litd",
        CacheMetrics::default(),
    )
    .unwrap();
    Harness {
        cache,
        script,
        clock,
        store,
        _dir: dir,
    }
}

impl Harness {
    /// Every entry in the store, as (key, sealed value).
    fn stored(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries = Vec::new();
        self.store
            .cache_retain(|k, v| {
                entries.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        entries
    }

    fn calls(&self) -> usize {
        self.script.calls.load(Ordering::SeqCst)
    }

    fn set(&self, steps: Vec<Step>) {
        *self.script.steps.lock().unwrap() = steps;
    }

    async fn list_with(
        &self,
        mac: Option<&str>,
        body: Bytes,
    ) -> Result<(HeaderMap, Bytes, Option<HeaderMap>), Error> {
        let mut b = http::Request::post(crate::methods::LIST_SESSIONS)
            .header("content-type", "application/grpc");
        if let Some(m) = mac {
            b = b.header("macaroon", m);
        }
        let resp = self
            .cache
            .list(Route::ListSessions, b.body(body::full(body)).unwrap())
            .await?;
        let (parts, body) = resp.into_parts();
        let c = body.collect().await.unwrap();
        let trailers = c.trailers().cloned();
        Ok((parts.headers, c.to_bytes(), trailers))
    }

    async fn list(&self) -> Result<(HeaderMap, Bytes, Option<HeaderMap>), Error> {
        self.list_with(Some(MAC), frame::message(b"")).await
    }
}

fn far() -> u64 {
    ms(SystemTime::now()) / 1000 + 86_400
}

#[tokio::test]
async fn a_hit_replays_bytes_and_trailers_without_calling_upstream() {
    let h = harness(
        CacheConfig::default(),
        vec![Step::Ok(vec![session(b"secret-one", 0, far())])],
        Duration::ZERO,
    );
    let (head1, body1, trailers1) = h.list().await.unwrap();
    let (head2, body2, trailers2) = h.list().await.unwrap();
    assert_eq!(h.calls(), 1);
    assert_eq!(body1, body2);
    assert_eq!(trailers1.unwrap()["grpc-status"], "0");
    assert_eq!(trailers2.unwrap()["grpc-status"], "0");
    assert_eq!(head2[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(
        head1, head2,
        "the leader's answer and a hit carry the same headers"
    );
    assert_eq!(
        head2["x-litd-extra"], "kept when stored",
        "custom metadata replayed"
    );
    assert!(head2.get(STALE_HEADER).is_none());
    let m = h.cache.metrics();
    assert_eq!((m.hits.get(), m.misses.get(), m.entries.get()), (1, 1, 1));
    assert!(m.bytes.get() > body1.len() as i64);
}

#[tokio::test]
async fn single_flight_fifty_concurrent_misses_make_one_call() {
    let h = harness(
        CacheConfig::default(),
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::from_millis(200),
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, barrier) = (h.cache.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let req = list_request(MAC);
            let resp = cache.list(Route::ListSessions, req).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    assert_eq!(h.calls(), 1, "one upstream call for 50 concurrent misses");
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(
        h.cache.inner.inflight.lock().unwrap().is_empty(),
        "the in-flight map cleans itself up"
    );
}

#[tokio::test]
async fn a_leader_whose_caller_hangs_up_still_serves_the_followers() {
    let h = harness(
        CacheConfig::default(),
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::from_millis(100),
    );
    let first = tokio::spawn({
        let cache = h.cache.clone();
        async move {
            let req = list_request(MAC);
            cache.list(Route::ListSessions, req).await.map(|_| ())
        }
    });
    // Let the first caller become the leader, then drop it.
    while h.calls() == 0 {
        tokio::task::yield_now().await;
    }
    first.abort();
    assert!(h.list().await.is_ok());
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn ttl_then_stale_while_down_then_nothing_past_max_stale() {
    let cfg = CacheConfig {
        ttl: Duration::from_secs(5),
        max_stale: Duration::from_secs(60),
        ..CacheConfig::default()
    };
    let h = harness(
        cfg,
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::ZERO,
    );
    let (_, fresh, _) = h.list().await.unwrap();
    h.set(vec![Step::Down]);
    // Fresh: served while down, unmarked, no call.
    let (head, _, _) = h.list().await.unwrap();
    assert!(head.get(STALE_HEADER).is_none());
    assert_eq!(h.calls(), 1);
    // Past the TTL: litd is tried, then the stale entry is served, marked.
    h.clock.advance(Duration::from_secs(6));
    let (head, body, trailers) = h.list().await.unwrap();
    assert_eq!(h.calls(), 2);
    assert_eq!(head[STALE_HEADER], "stale");
    assert_eq!(body, fresh);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(h.cache.metrics().stale.get(), 1);
    // Past max_stale: unavailable.
    h.clock.advance(Duration::from_secs(60));
    let err = h.list().await.unwrap_err();
    assert!(matches!(err, Error::Upstream { .. }), "{err}");
    assert_eq!(h.cache.metrics().entries.get(), 0);
}

#[tokio::test]
async fn a_reloaded_ttl_applies_to_answers_stored_from_then_on() {
    let cfg = CacheConfig {
        ttl: Duration::from_secs(5),
        ..CacheConfig::default()
    };
    let h = harness(
        cfg.clone(),
        vec![
            Step::Ok(vec![session(b"s", 0, far())]),
            Step::Ok(vec![session(b"s", 0, far())]),
        ],
        Duration::ZERO,
    );
    h.cache.set_freshness(&CacheConfig {
        ttl: Duration::from_secs(60),
        max_stale: Duration::from_secs(600),
        ..cfg
    });
    h.list().await.unwrap();
    assert_eq!(h.calls(), 1);
    // Past the old 5 s, within the new 60 s: still fresh, no call.
    h.clock.advance(Duration::from_secs(30));
    h.list().await.unwrap();
    assert_eq!(h.calls(), 1);
    h.clock.advance(Duration::from_secs(31));
    h.list().await.unwrap();
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn a_refusal_drops_the_credentials_entries_so_nothing_stale_follows() {
    let h = one_session();
    h.list().await.unwrap();
    // Another protocol's entry for the same credential goes too.
    let web = request(
        crate::methods::LIST_SESSIONS,
        "application/grpc-web+proto",
        MAC,
    );
    h.cache.list(Route::ListSessions, web).await.unwrap();
    assert_eq!(h.cache.metrics().entries.get(), 2);
    h.clock.advance(Duration::from_secs(6));
    h.set(vec![Step::Refuse]);
    let (head, _, _) = h.list().await.unwrap();
    assert_eq!(
        head["grpc-status"], "2",
        "litd's refusal reaches the caller unchanged"
    );
    assert_eq!(h.cache.metrics().entries.get(), 0);
    assert_eq!(h.store.cache_usage().unwrap().0, 0);
    h.set(vec![Step::Down]);
    assert!(matches!(h.list().await, Err(Error::Upstream { .. })));
    assert_eq!(h.cache.metrics().stale.get(), 0);
}

#[tokio::test]
async fn freshness_is_bounded_by_session_expiry_and_time_before() {
    let now = ms(SystemTime::now()) / 1000;
    let cfg = CacheConfig {
        ttl: Duration::from_secs(3600),
        max_stale: Duration::from_secs(7200),
        ..CacheConfig::default()
    };
    // A revoked session expiring sooner does not count; the created one at +60s does.
    let h = harness(
        cfg.clone(),
        vec![Step::Ok(vec![
            session(b"a", 2, now + 10),
            session(b"b", 0, now + 60),
        ])],
        Duration::ZERO,
    );
    h.list().await.unwrap();
    h.clock.advance(Duration::from_secs(30));
    h.list().await.unwrap();
    assert_eq!(h.calls(), 1, "a hit before the earliest active expiry");
    h.clock.advance(Duration::from_secs(31));
    h.list().await.unwrap();
    assert_eq!(h.calls(), 2, "past the session's expiry: a miss");

    // time-before: fresh until the caveat, never served (even stale) past it.
    let h = harness(
        cfg,
        vec![Step::Ok(vec![session(b"a", 0, far())])],
        Duration::ZERO,
    );
    let base = crate::macaroon::Macaroon::from_hex(MAC).unwrap();
    let until = crate::macaroon::format_rfc3339(h.clock.now() + Duration::from_secs(20));
    let mac = crate::demo::attenuate(&base, &format!("time-before {until}")).to_hex();
    h.list_with(Some(&mac), frame::message(b"")).await.unwrap();
    h.list_with(Some(&mac), frame::message(b"")).await.unwrap();
    assert_eq!(h.calls(), 1);
    h.clock.advance(Duration::from_secs(21));
    h.set(vec![Step::Down]);
    assert!(matches!(
        h.list_with(Some(&mac), frame::message(b"")).await,
        Err(Error::Upstream { .. })
    ));
    assert_eq!(h.cache.metrics().stale.get(), 0);
}

#[tokio::test]
async fn no_credential_or_a_non_canonical_request_bypasses() {
    let h = one_session();
    h.list_with(None, frame::message(b"")).await.unwrap();
    h.list_with(None, frame::message(b"")).await.unwrap();
    // Unknown fields in the request: litd judges it, the cache stays out.
    h.list_with(Some(MAC), frame::message(&[0x08, 0x01]))
        .await
        .unwrap();
    h.list_with(Some(MAC), frame::message(&[0x08, 0x01]))
        .await
        .unwrap();
    assert_eq!(h.calls(), 4);
    let m = h.cache.metrics();
    assert_eq!((m.bypasses.get(), m.hits.get(), m.entries.get()), (4, 0, 0));
}

#[tokio::test]
async fn a_tampered_entry_is_a_counted_miss() {
    let h = one_session();
    let (_, good, _) = h.list().await.unwrap();
    let (k, mut v) = h.stored().pop().unwrap();
    let last = v.len() - 1;
    v[last] ^= 0x40;
    h.store.cache_put(&k, &v).unwrap();
    let (_, body, _) = h.list().await.unwrap();
    assert_eq!(body, good);
    assert_eq!(h.calls(), 2);
    assert_eq!(h.cache.metrics().undecryptable.get(), 1);
    // The header is authenticated too: extending freshness is detected.
    let (k, mut v) = h.stored().pop().unwrap();
    v[9..17].copy_from_slice(&u64::MAX.to_be_bytes());
    h.store.cache_put(&k, &v).unwrap();
    h.list().await.unwrap();
    assert_eq!((h.calls(), h.cache.metrics().undecryptable.get()), (3, 2));
}

#[tokio::test]
async fn a_hit_comes_from_memory_and_memory_follows_every_removal() {
    let h = one_session();
    let (_, first, _) = h.list().await.unwrap();
    // The first hit reads the store and keeps what it opened in memory.
    h.list().await.unwrap();
    // The store's copy removed behind the cache's back: the copy in memory answers.
    for (k, _) in h.stored() {
        h.store.cache_remove(&k).unwrap();
    }
    let (_, hit, _) = h.list().await.unwrap();
    assert_eq!((hit, h.calls()), (first, 1), "a hit without the store");
    // litd refusing the same credential on the other list drops the copy in memory too.
    h.set(vec![Step::Refuse]);
    let autopilot = request(
        crate::methods::LIST_AUTOPILOT_SESSIONS,
        "application/grpc",
        MAC,
    );
    h.cache
        .list(Route::ListAutopilotSessions, autopilot)
        .await
        .unwrap();
    h.set(vec![Step::Ok(vec![session(b"s", 0, far())])]);
    h.list().await.unwrap();
    assert_eq!(h.calls(), 3, "after the refusal, a miss");
    h.list().await.unwrap();
    // So does a session write.
    h.cache.invalidate();
    h.list().await.unwrap();
    assert_eq!(h.calls(), 4, "after the write, a miss");
    h.list().await.unwrap();
    assert_eq!(h.calls(), 4, "then hits");
    // And an entry past its freshness is the store's to judge, not served from memory.
    h.clock.advance(Duration::from_secs(3600));
    h.list().await.unwrap();
    assert_eq!(h.calls(), 5, "past freshness, a miss");
}

#[tokio::test]
async fn a_write_during_a_miss_keeps_that_answer_out_of_the_cache() {
    let h = harness(
        CacheConfig::default(),
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::from_millis(100),
    );
    let cache = h.cache.clone();
    let miss = tokio::spawn(async move {
        let req = list_request(MAC);
        cache.list(Route::ListSessions, req).await.map(|_| ())
    });
    while h.calls() == 0 {
        tokio::task::yield_now().await;
    }
    h.cache.invalidate();
    miss.await.unwrap().unwrap();
    assert_eq!(
        h.store.cache_usage().unwrap().0,
        0,
        "an answer older than the write is not stored"
    );
    h.list().await.unwrap();
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn writes_invalidate_unless_litd_refused_them() {
    let h = one_session();
    h.list().await.unwrap();
    h.cache
        .after_write(Protocol::Grpc, Ok(grpc_refused()))
        .await
        .unwrap();
    h.list().await.unwrap();
    assert_eq!(h.calls(), 1, "a refused write invalidates nothing");
    let before = h.store.cache_generation().unwrap();
    let resp = h
        .cache
        .after_write(Protocol::Grpc, Ok(grpc_ok(vec![])))
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(
        collected.trailers().unwrap()["grpc-status"],
        "0",
        "the write's answer is replayed whole"
    );
    // The next list misses at once (the generation moved on in memory) ...
    h.list().await.unwrap();
    assert_eq!(h.calls(), 2);
    // ... and the bump reaches the store off the answer path.
    let mut persisted = false;
    for _ in 0..200 {
        if h.store.cache_generation().unwrap() == before + 1 {
            persisted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(persisted, "the generation bump is persisted");
    // A policy refusal (an error, nothing reached litd) invalidates nothing.
    assert!(h
        .cache
        .after_write(Protocol::Grpc, Err(Error::refused("no")))
        .await
        .is_err());
    h.list().await.unwrap();
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn a_full_cache_sweeps_then_serves_without_storing() {
    let cfg = CacheConfig {
        max_entries: 1,
        ..CacheConfig::default()
    };
    let h = harness(
        cfg,
        vec![Step::Ok(vec![session(b"s", 0, far())])],
        Duration::ZERO,
    );
    h.list().await.unwrap();
    let other = crate::demo::attenuate(
        &crate::macaroon::Macaroon::from_hex(MAC).unwrap(),
        "time-before 2999-01-01T00:00:00Z",
    )
    .to_hex();
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    assert_eq!(
        h.calls(),
        3,
        "another credential misses, and is not stored while full"
    );
    assert_eq!(h.cache.metrics().entries.get(), 1);
    // Once the first entry can no longer be served, it is swept to make room.
    h.clock.advance(Duration::from_secs(400));
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    assert_eq!(h.calls(), 4);
    // Full, with a stale entry still servable: its refresh replaces it (no room needed).
    h.clock.advance(Duration::from_secs(6));
    for _ in 0..2 {
        h.list_with(Some(&other), frame::message(b""))
            .await
            .unwrap();
    }
    assert_eq!(h.calls(), 5, "the refresh was stored and then hit");
    assert_eq!(h.cache.metrics().entries.get(), 1);
}

#[test]
fn verdicts_need_http_200_and_an_ok_status() {
    let msg = ListSessionsResponse {
        sessions: vec![session(b"x", 0, 700)],
    }
    .encode_to_vec();
    let trailer = frame::encode(frame::TRAILERS, b"grpc-status:0\r\ngrpc-message:\r\n");
    let web = Bytes::from([frame::message(&msg), trailer].concat());
    let text = web_text::encode(&web);
    let cap = |protocol, status: u16, body: Bytes| {
        verdict(
            protocol,
            &Answer {
                status: StatusCode::from_u16(status).unwrap(),
                headers: HeaderMap::new(),
                body,
                trailers: None,
            },
        )
    };
    assert_eq!(cap(Protocol::GrpcWeb, 200, web.clone()), Verdict::Ok);
    assert_eq!(cap(Protocol::GrpcWebText, 200, text), Verdict::Ok);
    let bad = Bytes::from([&[0x80u8, 0, 0, 0, 14][..], b"grpc-status:16"].concat());
    assert_eq!(cap(Protocol::GrpcWeb, 200, bad), Verdict::NotOk);
    assert_eq!(cap(Protocol::Grpc, 200, Bytes::new()), Verdict::Unknown);
    assert_eq!(cap(Protocol::Rest, 200, Bytes::new()), Verdict::Ok);
    assert_eq!(cap(Protocol::Rest, 401, Bytes::new()), Verdict::NotOk);
}

fn list_request(mac: &str) -> Request {
    request(crate::methods::LIST_SESSIONS, "application/grpc", mac)
}

/// An empty list request to `path` in `content_type`, with `mac`.
fn request(path: &str, content_type: &str, mac: &str) -> Request {
    http::Request::post(path)
        .header("content-type", content_type)
        .header("macaroon", mac)
        .body(body::full(frame::message(b"")))
        .unwrap()
}

fn other_credential(i: u64) -> String {
    let t = crate::macaroon::format_rfc3339(UNIX_EPOCH + Duration::from_secs(32_503_680_000 + i));
    crate::demo::attenuate(
        &crate::macaroon::Macaroon::from_hex(MAC).unwrap(),
        &format!("time-before {t}"),
    )
    .to_hex()
}

/// Sessions whose answer is `n` × ~1 KiB.
fn bulky(n: usize) -> Vec<Session> {
    (0..n)
        .map(|i| session(&[i as u8; 1000], 0, far()))
        .collect()
}

#[tokio::test]
async fn stalled_hits_share_one_plaintext_and_the_budget_passes_the_rest_through() {
    let sessions = bulky(20);
    let answer = frame::message(
        &ListSessionsResponse {
            sessions: sessions.clone(),
        }
        .encode_to_vec(),
    )
    .len();
    // Room for one answer in clear, not two.
    let budget = answer * 3 / 2;
    let h = harness(
        CacheConfig {
            max_replay_bytes: budget,
            max_entry_bytes: answer * 2,
            ..CacheConfig::default()
        },
        vec![Step::Ok(sessions)],
        Duration::ZERO,
    );
    let m = h.cache.metrics().clone();
    h.list().await.unwrap();
    assert_eq!(
        (h.calls(), m.replay_bytes.get()),
        (1, 0),
        "read whole: released"
    );

    // Ten callers that never read: one plaintext between them.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let resp = h
            .cache
            .list(Route::ListSessions, list_request(MAC))
            .await
            .unwrap();
        stalled.push(resp);
    }
    assert_eq!(h.calls(), 1, "all ten were hits");
    let held = m.replay_bytes.get() as usize;
    assert!(
        held > answer && held < answer + 200,
        "one copy held: {held}"
    );
    assert_eq!(m.replay_shared.get(), 9);

    // Another credential's miss: its answer would go beyond the budget, so it is stored but
    // the caller is passed through to litd, whose answer streams.
    let other = other_credential(1);
    let (_, body, trailers) = h
        .list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    assert_eq!(body.len(), answer);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(h.calls(), 3, "the miss, then the pass-through");
    assert_eq!(m.entries.get(), 2);
    // Its hit cannot be opened within the budget either: passed through.
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    assert_eq!(h.calls(), 4);
    assert_eq!(m.replay_overflows.get(), 2);
    assert!(m.replay_bytes.get() as usize <= budget);

    // A stalled caller that reads at last gets every byte.
    let first = stalled.pop().unwrap().into_body().collect().await.unwrap();
    assert_eq!(first.to_bytes().len(), answer);
    // When the last of them hangs up, the plaintext goes and the budget is free again.
    drop(stalled);
    assert_eq!(m.replay_bytes.get(), 0);
    h.list_with(Some(&other), frame::message(b""))
        .await
        .unwrap();
    assert_eq!(h.calls(), 4, "a hit again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_never_go_beyond_max_entries_or_max_bytes() {
    let sessions = bulky(200);
    for (max_entries, max_bytes) in [(3, usize::MAX / 2), (usize::MAX / 2, 5 * 210_000)] {
        let h = harness(
            CacheConfig {
                max_entries,
                max_bytes,
                ..CacheConfig::default()
            },
            vec![Step::Ok(sessions.clone())],
            Duration::from_millis(50),
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (cache, barrier) = (h.cache.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let resp = cache
                    .list(Route::ListSessions, list_request(&other_credential(i)))
                    .await
                    .unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap() > 200_000);
        }
        let (entries, bytes) = h.store.cache_usage().unwrap();
        let m = h.cache.metrics();
        assert!(
            entries <= max_entries.min(5) && bytes <= max_bytes,
            "{entries} entries, {bytes} bytes: beyond max_entries {max_entries} / max_bytes {max_bytes}"
        );
        assert!(entries >= 1);
        assert_eq!(
            (m.entries.get() as usize, m.bytes.get() as usize),
            (entries, bytes),
            "the gauges are exact"
        );
    }
}

#[tokio::test]
async fn an_oversized_list_request_names_the_limit_that_applied() {
    let h = one_session();
    let big = frame::message(&vec![0u8; 70 * 1024]);
    let e = h.list_with(Some(MAC), big).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let msg = e.to_string();
    assert!(msg.contains("65536-byte limit"), "{msg}");
    assert!(msg.contains("session list request"), "{msg}");
    assert!(!msg.contains("listen.max_message_bytes"), "{msg}");
    assert_eq!(h.calls(), 0);
}

/// A write's answer as litd streams it: head, one message, then `end`.
fn streamed_answer(
    content_type: &'static str,
    body: Vec<Bytes>,
    end: Option<Result<HeaderMap, ()>>,
) -> Response {
    let mut frames: Vec<Result<http_body::Frame<Bytes>, crate::body::BoxError>> = body
        .into_iter()
        .map(|b| Ok(http_body::Frame::data(b)))
        .collect();
    match end {
        Some(Ok(t)) => frames.push(Ok(http_body::Frame::trailers(t))),
        Some(Err(())) => frames.push(Err("litd went away".into())),
        None => {}
    }
    let mut resp = Response::new(body::boxed(http_body_util::StreamBody::new(
        futures_util::stream::iter(frames),
    )));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn grpc_status(code: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static(code));
    t
}

#[tokio::test]
async fn a_write_invalidates_before_its_status_is_handed_on() {
    let h = harness(CacheConfig::default(), vec![], Duration::ZERO);
    let generation = || h.cache.inner.generation.load(Ordering::SeqCst);
    let start = generation();
    let resp = h
        .cache
        .after_write(
            Protocol::Grpc,
            Ok(streamed_answer(
                "application/grpc",
                vec![frame::message(b"session")],
                Some(Ok(grpc_status("0"))),
            )),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let data = body.frame().await.unwrap().unwrap();
    assert!(data.is_data());
    assert_eq!(generation(), start, "no status yet");
    let trailers = body.frame().await.unwrap().unwrap();
    assert_eq!(trailers.trailers_ref().unwrap()["grpc-status"], "0");
    assert_eq!(
        generation(),
        start + 1,
        "invalidated before the caller got the OK"
    );

    // grpc-web: the status is the trailer frame at the end of the body.
    let web = |status: &str| {
        let block = format!("grpc-status:{status}\r\n");
        vec![
            frame::message(b"session"),
            frame::encode(frame::TRAILERS, block.as_bytes()),
        ]
    };
    let resp = h
        .cache
        .after_write(
            Protocol::GrpcWeb,
            Ok(streamed_answer(
                "application/grpc-web+proto",
                web("0"),
                None,
            )),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let _ = body.frame().await.unwrap().unwrap();
    assert_eq!(generation(), start + 1);
    let _ = body.frame().await.unwrap().unwrap();
    assert_eq!(
        generation(),
        start + 2,
        "invalidated with the trailer frame"
    );
    let refused = h
        .cache
        .after_write(
            Protocol::GrpcWeb,
            Ok(streamed_answer(
                "application/grpc-web+proto",
                web("7"),
                None,
            )),
        )
        .await
        .unwrap();
    refused.into_body().collect().await.unwrap();
    assert_eq!(
        generation(),
        start + 2,
        "litd refused it: nothing invalidated"
    );
}

#[tokio::test]
async fn a_write_whose_answer_breaks_or_is_dropped_invalidates() {
    let h = harness(CacheConfig::default(), vec![], Duration::ZERO);
    let generation = || h.cache.inner.generation.load(Ordering::SeqCst);
    let start = generation();
    let write = |end| {
        h.cache.after_write(
            Protocol::Grpc,
            Ok(streamed_answer(
                "application/grpc",
                vec![frame::message(b"session")],
                end,
            )),
        )
    };
    // Broken mid-answer.
    let resp = write(Some(Err(()))).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(generation(), start + 1);
    // litgate's own UNAVAILABLE for an answer broken off (`upstream::answer`).
    let whole = write(Some(Ok(grpc_status("14"))))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await;
    whole.unwrap();
    assert_eq!(generation(), start + 2);
    // Ended without any status.
    let whole = write(None).await.unwrap().into_body().collect().await;
    whole.unwrap();
    assert_eq!(generation(), start + 3);
    // The caller went away before the status.
    drop(write(Some(Ok(grpc_status("0")))).await.unwrap());
    assert_eq!(generation(), start + 4);
    // An HTTP error: litd did not take it.
    let resp = h
        .cache
        .after_write(
            Protocol::Rest,
            Ok({
                let mut r = Response::new(body::full("{}"));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }),
        )
        .await
        .unwrap();
    drop(resp);
    assert_eq!(generation(), start + 4, "the 404 invalidated nothing");
}
