//! Session cache: hit vs miss, end to end (client → TLS → litgate → TLS → fake litd), with
//! 1,000 sessions upstream. A hit is a ListSessions call answered from sled; a miss is the same
//! call with a credential the cache has not seen (a fresh attenuated copy), so it pays litd's
//! answer, the freshness decode, sealing and the sled write. Besides criterion's estimates, one
//! summary run prints median / p99 latency and sequential throughput for both, as ratios, and the
//! bytes per cached entry (sled, on disk and as counted by the cache).
//!
//! Run: `cargo bench --bench cache` (add `-- --quick` for a short run).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use litgate::{
    app::Running,
    config::Config,
    demo::{attenuate, DemoLitd, DemoLitdConfig},
    macaroon::Macaroon,
    proto::litrpc::{Session, SessionState, SessionType},
};

const LIST: &str = "/litrpc.Sessions/ListSessions";
const SESSIONS: usize = 1000;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Bench {
    _litd: DemoLitd,
    gate: Running,
    client: HttpClient,
    uri: String,
    base: Macaroon,
    mac: String,
    fresh: AtomicUsize,
    _dir: tempfile::TempDir,
}

fn h2_client(cert_pem: &[u8]) -> HttpClient {
    let tls = litgate::tls::pinned::pem_client_config(cert_pem).unwrap();
    // Nagle off and an adaptive window, as litgate's own upstream client: otherwise a 200 KB
    // answer stalls on delayed ACKs and every call measures ~40 ms of TCP, not litgate.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_adaptive_window(true)
        .build(https)
}

async fn setup() -> Bench {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let template = litd.sessions()[0].clone();
    for i in 0..SESSIONS {
        let mut s: Session = template.clone();
        s.label = format!("bench session {i}");
        s.local_public_key[1..5].copy_from_slice(&(i as u32).to_be_bytes());
        s.id = s.local_public_key[1..5].to_vec();
        s.group_id = s.id.clone();
        s.session_type = SessionType::TypeMacaroonReadonly as i32;
        s.session_state = SessionState::StateCreated as i32;
        s.expiry_timestamp_seconds = now + 86_400;
        s.created_at = now - 1000 + i as u64;
        litd.insert_session(s);
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("litd-tls.cert");
    std::fs::write(&cert, litd.cert_pem().unwrap()).unwrap();
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\naddr = \"{}\"\ntls_cert = \"{}\"\n\
         [autopilot.relay]\naddr = \"\"\n[rate_limit]\nenabled = false\n\
         [cache]\nttl = \"1h\"\nmax_stale = \"2h\"\n[store]\ndata_dir = \"{}\"\n[admin]\naddr = \"127.0.0.1:0\"\n",
        litd.addr(),
        cert.display(),
        dir.path().join("data").display()
    );
    let cfg = Config::parse(&toml).unwrap();
    let gate = litgate::app::start(&cfg).await.unwrap();
    let client = h2_client(&std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap());
    let uri = format!("https://{}{LIST}", gate.public_addr);
    let base = litd.macaroon().clone();
    let mac = litd.macaroon_hex();
    Bench {
        _litd: litd,
        gate,
        client,
        uri,
        base,
        mac,
        fresh: AtomicUsize::new(0),
        _dir: dir,
    }
}

fn frame() -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(0);
    b.put_u32(0);
    b.freeze()
}

impl Bench {
    async fn call(&self, mac: &str) -> usize {
        let req = http::Request::post(&self.uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("macaroon", mac)
            .body(Full::new(frame()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let c = resp.into_body().collect().await.unwrap();
        let status = c
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(status.as_deref(), Some(&b"0"[..]));
        c.to_bytes().len()
    }

    /// A credential the cache has never seen (an attenuated copy with its own `time-before`):
    /// a miss.
    fn fresh_credential(&self) -> String {
        let i = self.fresh.fetch_add(1, Ordering::Relaxed) as u64;
        // 2099-01-01T00:00:00Z plus i seconds: a valid, distinct caveat each time.
        let t =
            litgate::macaroon::format_rfc3339(UNIX_EPOCH + Duration::from_secs(4_070_908_800 + i));
        attenuate(&self.base, &format!("time-before {t}")).to_hex()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = rt.block_on(setup());
    let body_len = rt.block_on(b.call(&b.mac)); // primes the hit entry

    let mut g = c.benchmark_group("list_sessions_1000");
    // criterion's async support is not enabled in this package: block on the runtime.
    g.bench_function("hit", |bench| bench.iter(|| rt.block_on(b.call(&b.mac))));
    g.bench_function("miss", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cred = b.fresh_credential();
                    let t = Instant::now();
                    b.call(&cred).await;
                    total += t.elapsed();
                    // Untimed: keep sled from growing by one answer-sized entry per iteration.
                    b.gate.store().cache_remove_prefix(&[]).unwrap();
                }
                total
            })
        })
    });
    g.finish();

    // One summary run: the same calls, timed one by one.
    rt.block_on(async {
        b.call(&b.mac).await;
        let n = 300;
        let mut hits = Vec::with_capacity(n);
        let t0 = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            b.call(&b.mac).await;
            hits.push(t.elapsed());
        }
        let hit_wall = t0.elapsed();
        let mut misses = Vec::with_capacity(n);
        let mut miss_wall = Duration::ZERO;
        for _ in 0..n {
            let cred = b.fresh_credential();
            let t = Instant::now();
            b.call(&cred).await;
            let e = t.elapsed();
            misses.push(e);
            miss_wall += e;
            b.gate.store().cache_remove_prefix(&[]).unwrap();
        }
        hits.sort();
        misses.sort();
        let (hm, hp) = (percentile(&hits, 0.5), percentile(&hits, 0.99));
        let (mm, mp) = (percentile(&misses, 0.5), percentile(&misses, 0.99));
        let (ht, mt) = (n as f64 / hit_wall.as_secs_f64(), n as f64 / miss_wall.as_secs_f64());
        println!("\nsummary: ListSessions with {SESSIONS} sessions, answer {body_len} bytes, {n} sequential calls each");
        println!("  hit : median {hm:?}  p99 {hp:?}  throughput {ht:.0}/s");
        println!("  miss: median {mm:?}  p99 {mp:?}  throughput {mt:.0}/s");
        println!(
            "  miss/hit: median x{:.2}  p99 x{:.2}  throughput hit/miss x{:.2}",
            mm.as_secs_f64() / hm.as_secs_f64(),
            mp.as_secs_f64() / hp.as_secs_f64(),
            ht / mt
        );

        // Bytes per entry: the cache's own count (key + sealed value), and sled's files on disk.
        let store = b.gate.store();
        store.cache_remove_prefix(&[]).unwrap();
        store.flush().unwrap();
        let disk_before = dir_size(store.path());
        let entries = 50;
        for _ in 0..entries {
            b.call(&b.fresh_credential()).await;
        }
        let (count, bytes) = store.cache_usage().unwrap();
        store.flush().unwrap();
        let disk_after = dir_size(store.path());
        println!(
            "  per entry: {} bytes counted (key + sealed value; answer {body_len} bytes), {} bytes of sled files on disk \
             (over {count} entries); litgate keeps no entry in its own memory (sled's page cache holds at most the sealed value)",
            bytes / count.max(1),
            disk_after.saturating_sub(disk_before) / count.max(1) as u64,
        );
    });
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

criterion_group!(benches, bench);
criterion_main!(benches);
