//! Session cache: hit vs miss vs the same bytes served from memory, end to end (client → TLS →
//! litgate → TLS → fake litd), with 1,000 sessions upstream (a ~200 KB answer). A hit is a
//! ListSessions call answered from sled; a miss is the same call with a credential the cache has
//! not seen (a fresh attenuated copy), so it pays litd's answer, the freshness decode, sealing
//! and the sled write; **memory** is a plain hyper HTTP/2 server on the same certificate that
//! answers the hit's exact head, body and trailers from memory (the floor a hit is held to:
//! TLS, HTTP/2 and 200 KB on loopback, no litgate). Besides criterion's estimates, one summary
//! run interleaves the three call by call and prints median / p99 latency and sequential
//! throughput with the ratios hit/memory and miss/hit, and the bytes per cached entry (sled,
//! on disk and as counted by the cache).
//!
//! Group `aead`: opening one sealed 200 KB answer (with the copy out of sled the cache makes),
//! with RustCrypto's portable ChaCha20-Poly1305 (what the cache used before), ring's
//! ChaCha20-Poly1305 and ring's AES-256-GCM (what it uses now).
//!
//! Run: `cargo bench --bench cache` (add `-- --quick` for a short run).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, UNIX_EPOCH},
};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use litgate::{
    app::Running,
    config::Config,
    demo::{attenuate, DemoLitd, DemoLitdConfig},
    macaroon::Macaroon,
};

const LIST: &str = "/litrpc.Sessions/ListSessions";
const SESSIONS: usize = 1000;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Bench {
    _litd: DemoLitd,
    gate: Running,
    client: HttpClient,
    uri: String,
    /// The memory server's URI for the same path.
    memory_uri: String,
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
    litd.add_bulk_sessions(SESSIONS);
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
    // The hit's exact answer, served from memory on litgate's own certificate.
    let answer = {
        let req = http::Request::post(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("macaroon", &mac)
            .body(Full::new(frame()))
            .unwrap();
        let (head, body) = client.request(req).await.unwrap().into_parts();
        let c = body.collect().await.unwrap();
        (head.headers, c.trailers().cloned(), c.to_bytes())
    };
    let memory = memory_server(&dir.path().join("data"), answer).await;
    let memory_uri = format!("https://{memory}{LIST}");
    Bench {
        _litd: litd,
        gate,
        client,
        uri,
        memory_uri,
        base,
        mac,
        fresh: AtomicUsize::new(0),
        _dir: dir,
    }
}

/// A plain hyper HTTP/2 server (TLS with the certificate in `data_dir`, litgate's) that answers
/// every call with `answer` (head, trailers, body) from memory.
async fn memory_server(
    data_dir: &std::path::Path,
    answer: (http::HeaderMap, Option<http::HeaderMap>, Bytes),
) -> std::net::SocketAddr {
    let tls = litgate::tls::server_tls(&litgate::tls::CertSource::Generated {
        dir: data_dir.to_path_buf(),
        extra_names: vec![],
    })
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            // Read the request as a server must, then answer from memory.
                            let _ = req.into_body().collect().await;
                            let (headers, trailers, body) = &*answer;
                            let trailers = trailers.clone();
                            let body = Full::new(body.clone())
                                .with_trailers(async move { trailers.map(Ok) });
                            let mut resp = http::Response::new(body);
                            *resp.headers_mut() = headers.clone();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn frame() -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(0);
    b.put_u32(0);
    b.freeze()
}

impl Bench {
    async fn call(&self, mac: &str) -> usize {
        self.call_to(&self.uri, mac).await
    }

    /// The same call to the memory server.
    async fn memory(&self) -> usize {
        self.call_to(&self.memory_uri, &self.mac).await
    }

    async fn call_to(&self, uri: &str, mac: &str) -> usize {
        let req = http::Request::post(uri)
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
    aead(c);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = rt.block_on(setup());
    let body_len = rt.block_on(b.call(&b.mac)); // primes the hit entry
    assert_eq!(
        rt.block_on(b.memory()),
        body_len,
        "the memory server answers the same bytes"
    );

    let mut g = c.benchmark_group("list_sessions_1000");
    // criterion's async support is not enabled in this package: block on the runtime.
    g.bench_function("memory", |bench| bench.iter(|| rt.block_on(b.memory())));
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

    // One summary run: the three kinds of call interleaved (memory, hit, miss, memory, ...), so
    // that load from elsewhere on the machine falls on all three alike.
    rt.block_on(async {
        b.call(&b.mac).await;
        let n = 300;
        let (mut memory, mut hits, mut misses) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            b.memory().await;
            memory.push(t.elapsed());
            let t = Instant::now();
            b.call(&b.mac).await;
            hits.push(t.elapsed());
            let cred = b.fresh_credential();
            let t = Instant::now();
            b.call(&cred).await;
            misses.push(t.elapsed());
            b.gate.store().cache_remove_prefix(&[]).unwrap();
            // The hit's entry went with the sweep: put it back, untimed.
            b.call(&b.mac).await;
        }
        let stats = |v: &mut Vec<Duration>| {
            v.sort();
            let total: Duration = v.iter().sum();
            (
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.len() as f64 / total.as_secs_f64(),
            )
        };
        let (xm, xp, xt) = stats(&mut memory);
        let (hm, hp, ht) = stats(&mut hits);
        let (mm, mp, mt) = stats(&mut misses);
        println!("\nsummary: ListSessions with {SESSIONS} sessions, answer {body_len} bytes, {n} sequential calls each, interleaved");
        println!("  memory: median {xm:?}  p99 {xp:?}  throughput {xt:.0}/s");
        println!("  hit   : median {hm:?}  p99 {hp:?}  throughput {ht:.0}/s");
        println!("  miss  : median {mm:?}  p99 {mp:?}  throughput {mt:.0}/s");
        println!(
            "  hit/memory: median x{:.2}  p99 x{:.2}   miss/hit: median x{:.2}  p99 x{:.2}  throughput hit/miss x{:.2}",
            hm.as_secs_f64() / xm.as_secs_f64(),
            hp.as_secs_f64() / xp.as_secs_f64(),
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
             (over {count} entries); in memory litgate keeps only sealed values of entries that were hit (at most 8 MiB) \
             and clear ones only while they are being sent",
            bytes / count.max(1),
            disk_after.saturating_sub(disk_before) / count.max(1) as u64,
        );
    });
}

/// Opening one sealed ~200 KB answer, as a hit does (a copy out of sled's buffer, then the
/// decryption in place), with three AEADs.
fn aead(c: &mut Criterion) {
    use chacha20poly1305::{
        aead::{Aead, KeyInit, Payload},
        ChaCha20Poly1305,
    };
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

    const LEN: usize = 203_512;
    let plain = vec![0x5au8; LEN];
    let key = [7u8; 32];
    let nonce = [9u8; 12];
    let aad = [1u8; 75];
    let mut g = c.benchmark_group("aead_open_200k");

    // As the cache did before: a copy out of sled, decrypted into a new buffer.
    let rc = ChaCha20Poly1305::new(&key.into());
    let sealed = rc
        .encrypt(
            &nonce.into(),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap();
    g.bench_function("rustcrypto_chacha20poly1305", |bench| {
        bench.iter(|| {
            let buf = sealed.clone();
            rc.decrypt(
                &nonce.into(),
                Payload {
                    msg: &buf,
                    aad: &aad,
                },
            )
            .unwrap()
        })
    });

    for (name, alg) in [
        ("ring_chacha20poly1305", &CHACHA20_POLY1305),
        ("ring_aes256gcm", &AES_256_GCM),
    ] {
        let k = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
        let mut sealed = plain.clone();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut sealed,
        )
        .unwrap();
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let mut buf = sealed.clone();
                let n = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        &mut buf,
                    )
                    .unwrap()
                    .len();
                buf.truncate(n);
                buf
            })
        });
    }
    g.finish();
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

criterion_group!(benches, bench, aead);
criterion_main!(benches);
