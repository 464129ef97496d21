//! The rate limiter on the hot path (issue 5): the cost of one decision with 1 key and with
//! 100k keys held, for an address bucket and for an accepted macaroon's bucket; and unary
//! calls end to end (client -> litgate -> fake litd over TLS) with the layer on and off, in
//! one run, so their ratio is the layer's whole cost.
//!
//! `cargo bench --bench rate_limit` (add `-- --quick` for a short run).

use std::{hint::black_box, net::SocketAddr, path::Path};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use litgate::{
    app,
    config::{Config, Rate, RateLimitConfig},
    demo::{DemoLitd, DemoLitdConfig},
    layers::{
        identity::{Caller, Credential, CredentialKind},
        rate_limit::Limiter,
    },
    proto::litgatetest::{echo_client::EchoClient, EchoRequest},
};

const GET_INFO: &str = "/lnrpc.Lightning/GetInfo";

/// Limits high enough that no decision in the bench is a refusal.
fn roomy() -> RateLimitConfig {
    let rate = Rate {
        iterations: u32::MAX,
        num_hours: 1,
    };
    RateLimitConfig {
        read: rate,
        write: rate,
        ..Default::default()
    }
}

fn peer(i: u32) -> Caller {
    Caller {
        peer: Some(SocketAddr::from((
            std::net::Ipv4Addr::from(0x0a00_0000 + i),
            443,
        ))),
        credential: None,
    }
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    for keys in [1u32, 100_000] {
        let limiter = Limiter::new(&roomy());
        let callers: Vec<Caller> = (0..keys).map(peer).collect();
        for caller in &callers {
            limiter.check(&Method::POST, GET_INFO, Some(caller)).ok();
        }
        assert_eq!(limiter.keys(), keys as usize);
        let mut i = 0;
        g.bench_function(format!("address/{keys}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % callers.len();
                black_box(
                    limiter
                        .check(&Method::POST, GET_INFO, Some(&callers[i]))
                        .is_ok(),
                )
            })
        });

        // An accepted macaroon among `keys` address buckets.
        let mac = litgate::demo::MacaroonBaker::new().bake_admin();
        limiter.accept(&mac.identifier);
        let caller = Caller {
            peer: Some(([192, 0, 2, 1], 443).into()),
            credential: Some(Credential {
                kind: CredentialKind::Macaroon,
                raw: Bytes::from(mac.to_hex()),
                macaroon: Some(mac),
            }),
        };
        g.bench_function(format!("identity/{keys}_keys"), |b| {
            b.iter(|| {
                black_box(
                    limiter
                        .check(&Method::POST, GET_INFO, Some(&caller))
                        .is_ok(),
                )
            })
        });
        // A REST path, which goes through the REST table first.
        g.bench_function(format!("rest/{keys}_keys"), |b| {
            b.iter(|| {
                black_box(
                    limiter
                        .check(&Method::GET, "/v1/graph/node/02ab", Some(&caller))
                        .is_ok(),
                )
            })
        });
    }
    g.finish();
}

fn gate_config(dir: &Path, litd: &DemoLitd, enabled: bool) -> Config {
    let cert = dir.join("litd-tls.cert");
    std::fs::write(&cert, litd.cert_pem().expect("demo litd runs TLS")).expect("temp dir");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\naddr = \"{}\"\ntls_cert = \"{}\"\n\
         [autopilot.relay]\naddr = \"\"\n[store]\ndata_dir = \"{}\"\n\
         [admin]\naddr = \"127.0.0.1:0\"\n[cache]\nenabled = false\n\
         [rate_limit]\nenabled = {enabled}\nwrite = {{ iterations = 4000000000, num_hours = 1 }}\n",
        litd.addr(),
        cert.display(),
        dir.join(format!("data-{enabled}")).display(),
    );
    Config::parse(&text).expect("bench config is valid")
}

async fn echo_client(gate: &app::Running) -> EchoClient<tonic::transport::Channel> {
    let pem = std::fs::read(gate.cert_path.as_ref().expect("TLS")).expect("gate cert");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", gate.public_addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connects");
    EchoClient::new(channel)
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let litd = rt.block_on(async {
        DemoLitd::start(DemoLitdConfig {
            tls: true,
            ..Default::default()
        })
        .expect("demo litd")
    });
    let mut clients = Vec::new();
    let mut gates = Vec::new();
    for enabled in [false, true] {
        let cfg = gate_config(dir.path(), &litd, enabled);
        let gate = rt.block_on(app::start(&cfg)).expect("litgate starts");
        clients.push(rt.block_on(echo_client(&gate)));
        gates.push(gate);
    }
    let call = |client: &EchoClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        rt.block_on(async move {
            client
                .unary(EchoRequest {
                    message: "x".into(),
                    ..Default::default()
                })
                .await
                .expect("echo")
        })
    };

    let mut g = c.benchmark_group("unary_end_to_end");
    for (label, client) in ["layer_off", "layer_on"].into_iter().zip(&clients) {
        g.bench_function(label, |b| b.iter(|| call(client)));
    }
    g.finish();

    // The machine's noise drifts between the two criterion runs above; alternating short
    // batches in one loop gives the fairer ratio.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        for (i, client) in clients.iter().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..100 {
                call(client);
            }
            let per_call = start.elapsed() / 100;
            if i == 0 {
                off.push(per_call)
            } else {
                on.push(per_call)
            }
        }
    }
    off.sort();
    on.sort();
    let (off, on) = (off[off.len() / 2], on[on.len() / 2]);
    println!(
        "unary_end_to_end interleaved medians: layer_off {off:?}, layer_on {on:?}, \
         ratio on/off {:.3}",
        on.as_secs_f64() / off.as_secs_f64()
    );

    rt.block_on(async {
        for gate in gates {
            gate.shutdown().await;
        }
        litd.shutdown().await;
    });
}

criterion_group!(benches, decisions, end_to_end);
criterion_main!(benches);
