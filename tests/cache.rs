//! The session cache (issue 6), end to end against the fake litd: hits never reach litd, other
//! credentials and credential-less calls never get another caller's answer, every session write
//! through litgate invalidates, expiry/TTL/`time-before` bound freshness on the manual clock,
//! concurrent misses make one call, stale answers are served marked while litd is down (and not
//! past `max_stale`), nothing secret is in the sled files, tampering is a miss, and a SIGKILLed
//! process restarts on the same store and answers correctly.

mod common;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::{
    clock::Clock,
    demo::{attenuate, DemoLitd, DemoLitdConfig},
    proto::litrpc::{
        autopilot_client::AutopilotClient, sessions_client::SessionsClient,
        AddAutopilotSessionRequest, AddSessionRequest, FeatureConfig, ListSessionsRequest,
        ListSessionsResponse, RevokeAutopilotSessionRequest, RevokeSessionRequest, RulesMap,
        Session, SessionState, SessionType,
    },
};
use prost::Message;
use tonic::metadata::MetadataValue;

const LIST: &str = "/litrpc.Sessions/ListSessions";
const LIST_AP: &str = "/litrpc.Autopilot/ListAutopilotSessions";

async fn grpc_list(env: &Env, path: &str, mac: Option<&str>) -> Collected {
    send(
        &h2_client(&env.gate_cert),
        grpc_request(
            &env.gate_uri(path),
            grpc_frame(&ListSessionsRequest {}),
            mac,
        ),
    )
    .await
}

async fn direct_list(env: &Env, path: &str, mac: &str) -> Collected {
    let client = h2_client(env.litd.cert_pem().unwrap());
    send(
        &client,
        grpc_request(
            &env.litd_uri(path),
            grpc_frame(&ListSessionsRequest {}),
            Some(mac),
        ),
    )
    .await
}

fn rest_get(uri: String, mac: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .header("Grpc-Metadata-Macaroon", mac)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn web_list(uri: String, mac: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(uri)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("macaroon", mac)
        .body(Full::new(grpc_frame(&ListSessionsRequest {})))
        .unwrap()
}

fn sessions(c: &Collected) -> Vec<Session> {
    ListSessionsResponse::decode(frames(c.body.clone())[0].1.clone())
        .unwrap()
        .sessions
}

async fn metrics(env: &Env) -> String {
    admin_get(&env.admin_uri("/metrics")).await.1
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn with_mac<T>(msg: T, mac: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("macaroon", MetadataValue::try_from(mac).unwrap());
    r
}

#[tokio::test]
async fn hits_skip_litd_per_credential_protocol_and_route() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let first = grpc_list(&env, LIST, Some(&mac)).await;
    let second = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 1, "the second call was a hit");
    let direct = direct_list(&env, LIST, &mac).await;
    for c in [&first, &second] {
        assert_eq!(c.grpc_status().as_deref(), Some("0"));
        assert_eq!(c.body, direct.body, "a hit replays litd's bytes");
        assert_eq!(c.headers["content-type"], direct.headers["content-type"]);
        assert!(c.headers.get("litgate-cache").is_none());
    }

    // An attenuated copy shares the identifier, not the credential: its own miss, then its hit.
    let attenuated = attenuate(env.litd.macaroon(), "time-before 2099-01-01T00:00:00Z").to_hex();
    grpc_list(&env, LIST, Some(&attenuated)).await;
    assert_eq!(env.litd.count(LIST), 3);
    grpc_list(&env, LIST, Some(&attenuated)).await;
    assert_eq!(env.litd.count(LIST), 3);

    // No credential: every call reaches litd (which refuses it), none is served from the cache.
    for _ in 0..2 {
        let none = grpc_list(&env, LIST, None).await;
        assert_ne!(none.grpc_status().as_deref(), Some("0"));
    }
    assert_eq!(env.litd.count(LIST), 5);

    // A forged credential is refused by litd and never stored, so never served.
    let mut bad = mac.clone().into_bytes();
    let n = bad.len();
    bad[n - 1] = if bad[n - 1] == b'0' { b'1' } else { b'0' }; // the signature's last nibble
    let bad = String::from_utf8(bad).unwrap();
    for _ in 0..2 {
        assert_ne!(
            grpc_list(&env, LIST, Some(&bad))
                .await
                .grpc_status()
                .as_deref(),
            Some("0")
        );
    }
    assert_eq!(env.litd.count(LIST), 7);

    // REST and grpc-web are their own entries; each hits on its second call.
    let h1 = h1_client(&env.gate_cert);
    let a = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    let b = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    assert_eq!((a.status, &a.body), (b.status, &b.body));
    assert_eq!(b.headers["content-type"], "application/json");
    assert_eq!(env.litd.count("/v1/sessions"), 1);
    let a = send(&h1, web_list(env.gate_uri(LIST), &mac)).await;
    let b = send(&h1, web_list(env.gate_uri(LIST), &mac)).await;
    assert_eq!(a.body, b.body);
    assert!(
        String::from_utf8_lossy(&b.body).contains("grpc-status:0"),
        "the grpc-web trailer frame is replayed"
    );
    assert_eq!(env.litd.count(LIST), 8);

    // ListAutopilotSessions is its own route.
    grpc_list(&env, LIST_AP, Some(&mac)).await;
    grpc_list(&env, LIST_AP, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST_AP), 1);

    let m = metrics(&env).await;
    assert_eq!(metric(&m, "litgate_cache_hits_total"), 5.0, "{m}");
    assert_eq!(metric(&m, "litgate_cache_bypasses_total"), 2.0, "{m}");
    assert_eq!(metric(&m, "litgate_cache_entries"), 5.0, "{m}");
    assert!(metric(&m, "litgate_cache_bytes") > 0.0, "{m}");
    env.stop().await;
}

#[tokio::test]
async fn every_session_write_through_litgate_invalidates() {
    let env = Env::start_with("[cache]\nttl = \"1h\"\nmax_stale = \"2h\"\n").await;
    let mac = env.macaroon();
    let channel = env.gate_channel().await;
    let mut sessions_client = SessionsClient::new(channel.clone());
    let mut autopilot = AutopilotClient::new(channel);
    let lists = |env: &Env| env.litd.count(LIST);

    grpc_list(&env, LIST, Some(&mac)).await;
    // A write that does not go through litgate is not seen until the entry expires.
    let mut outside = env.litd.sessions()[0].clone();
    outside.label = "written around litgate".into();
    outside.local_public_key[5] ^= 0xff;
    env.litd.insert_session(outside);
    let cached = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 1);
    assert!(!sessions(&cached)
        .iter()
        .any(|s| s.label == "written around litgate"));

    // AddSession.
    let expiry = secs(SystemTime::now() + Duration::from_secs(3600));
    let added = sessions_client
        .add_session(with_mac(
            AddSessionRequest {
                label: "added".into(),
                session_type: SessionType::TypeMacaroonReadonly as i32,
                expiry_timestamp_seconds: expiry,
                mailbox_server_addr: "mailbox.example:443".into(),
                ..Default::default()
            },
            &mac,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let after = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 2, "AddSession invalidated");
    assert!(sessions(&after).iter().any(|s| s.label == "added"));
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 2);

    // RevokeSession.
    sessions_client
        .revoke_session(with_mac(
            RevokeSessionRequest {
                local_public_key: added.local_public_key.clone(),
            },
            &mac,
        ))
        .await
        .unwrap();
    let after = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 3, "RevokeSession invalidated");
    let revoked = sessions(&after)
        .into_iter()
        .find(|s| s.label == "added")
        .unwrap();
    assert_eq!(revoked.session_state, SessionState::StateRevoked as i32);

    // A write litd refuses invalidates nothing.
    let refused = sessions_client
        .revoke_session(with_mac(
            RevokeSessionRequest {
                local_public_key: vec![2; 33],
            },
            &mac,
        ))
        .await;
    assert!(refused.is_err());
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 3);

    // AddAutopilotSession (through the policy handler), in REST.
    let req = AddAutopilotSessionRequest {
        label: "autopilot".into(),
        expiry_timestamp_seconds: secs(SystemTime::now() + Duration::from_secs(24 * 3600)),
        mailbox_server_addr: "mailbox.example:443".into(),
        features: [(
            "HealthCheck".to_string(),
            FeatureConfig {
                rules: Some(RulesMap::default()),
                config: b"{}".to_vec(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let add = send(
        &h1_client(&env.gate_cert),
        http::Request::post(env.gate_uri("/v1/autopilot/sessions"))
            .header("Grpc-Metadata-Macaroon", mac.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&req).unwrap())))
            .unwrap(),
    )
    .await;
    assert_eq!(add.status, 200, "{add:?}");
    let after = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 4, "AddAutopilotSession invalidated");
    let ap = sessions(&after)
        .into_iter()
        .find(|s| s.label == "autopilot")
        .unwrap();

    // RevokeAutopilotSession.
    autopilot
        .revoke_autopilot_session(with_mac(
            RevokeAutopilotSessionRequest {
                local_public_key: ap.local_public_key,
            },
            &mac,
        ))
        .await
        .unwrap();
    let after = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(lists(&env), 5, "RevokeAutopilotSession invalidated");
    let ap = sessions(&after)
        .into_iter()
        .find(|s| s.label == "autopilot")
        .unwrap();
    assert_eq!(ap.session_state, SessionState::StateRevoked as i32);
    // Written to the store off the answer path, a few bumps at a time.
    let store = env.gate.store().clone();
    assert!(
        eventually(100, Duration::from_millis(20), || {
            let store = store.clone();
            async move { store.cache_generation().unwrap() >= 4 }
        })
        .await
    );
    env.stop().await;
}

#[tokio::test]
async fn session_expiry_ttl_and_time_before_bound_freshness() {
    // TTL (default 5s) on the manual clock.
    let env = Env::start().await;
    let mac = env.macaroon();
    grpc_list(&env, LIST, Some(&mac)).await;
    env.clock.advance(Duration::from_secs(4));
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 1);
    env.clock.advance(Duration::from_secs(2));
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 2, "past the TTL: a miss");
    env.stop().await;

    // A created session expiring in 60s bounds an entry that the TTL would keep for an hour.
    let env = Env::start_with("[cache]\nttl = \"1h\"\nmax_stale = \"2h\"\n").await;
    let mac = env.macaroon();
    let mut short = env.litd.sessions()[0].clone();
    short.label = "short".into();
    short.local_public_key[7] ^= 0xff;
    short.session_state = SessionState::StateCreated as i32;
    short.expiry_timestamp_seconds = secs(env.clock.now()) + 60;
    env.litd.insert_session(short);
    grpc_list(&env, LIST, Some(&mac)).await;
    env.clock.advance(Duration::from_secs(30));
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 1, "before the expiry: a hit");
    env.clock.advance(Duration::from_secs(31));
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 2, "past the session's expiry: a miss");
    // litd still lists it as created (its timer has not fired): such an answer is not cached.
    grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(env.litd.count(LIST), 3);

    // A credential's time-before caveat bounds its entries (litd, on real time, still accepts it).
    let until = litgate::macaroon::format_rfc3339(env.clock.now() + Duration::from_secs(20));
    let limited = attenuate(env.litd.macaroon(), &format!("time-before {until}")).to_hex();
    grpc_list(&env, LIST_AP, Some(&limited)).await;
    grpc_list(&env, LIST_AP, Some(&limited)).await;
    assert_eq!(env.litd.count(LIST_AP), 1);
    env.clock.advance(Duration::from_secs(21));
    grpc_list(&env, LIST_AP, Some(&limited)).await;
    assert_eq!(env.litd.count(LIST_AP), 2, "past time-before: a miss");
    env.stop().await;
}

/// A TCP relay that holds every chunk from litd for `delay`, so that concurrent misses overlap
/// for certain (the fake litd itself answers in microseconds).
async fn slow_relay(to: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut ri, &mut wo).await });
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = ro.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if wi.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_upstream_call() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let relay = slow_relay(litd.addr(), Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = litgate::config::Config::parse(&config_toml(dir.path(), &litd, "")).unwrap();
    // Through the slow relay.
    config.upstream.addr = relay.to_string();
    let gate = litgate::app::start(&config).await.unwrap();
    let cert = std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap();
    let client = h2_client(&cert);
    let uri = format!("https://{}{LIST}", gate.public_addr);
    let mac = litd.macaroon_hex();
    // Warm both connections (caller → litgate, litgate → litd) with a call the cache ignores.
    let warm = send(
        &client,
        grpc_request(&uri, grpc_frame(&ListSessionsRequest {}), None),
    )
    .await;
    assert_ne!(warm.grpc_status().as_deref(), Some("0"));

    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut calls = Vec::new();
    for _ in 0..50 {
        let (client, uri, mac, barrier) =
            (client.clone(), uri.clone(), mac.clone(), barrier.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            send(
                &client,
                grpc_request(&uri, grpc_frame(&ListSessionsRequest {}), Some(&mac)),
            )
            .await
        }));
    }
    let mut bodies = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
        bodies.push(r.body);
    }
    assert_eq!(
        litd.count(LIST),
        2,
        "the warm-up call, then one call for 50 concurrent misses"
    );
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    gate.shutdown().await;
    litd.shutdown().await;
}

#[tokio::test]
async fn stale_while_litd_is_down_marked_and_bounded_by_max_stale() {
    let env = Env::start_with("[cache]\nttl = \"5s\"\nmax_stale = \"1m\"\n").await;
    let mac = env.macaroon();
    let fresh = grpc_list(&env, LIST, Some(&mac)).await;
    let h1 = h1_client(&env.gate_cert);
    let fresh_rest = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    env.litd.pause().await;

    // Still fresh: a plain hit.
    let hit = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(hit.body, fresh.body);
    assert!(hit.headers.get("litgate-cache").is_none());

    // Stale: served, marked, in gRPC (initial metadata) and REST.
    env.clock.advance(Duration::from_secs(30));
    let stale = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(stale.grpc_status().as_deref(), Some("0"));
    assert_eq!(stale.headers["litgate-cache"], "stale");
    assert_eq!(stale.body, fresh.body);
    let mut tonic_call = SessionsClient::new(env.gate_channel().await);
    let resp = tonic_call
        .list_sessions(with_mac(ListSessionsRequest {}, &mac))
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("litgate-cache").unwrap(), "stale");
    let stale_rest = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    assert_eq!(
        (stale_rest.status, &stale_rest.body),
        (fresh_rest.status, &fresh_rest.body)
    );
    assert_eq!(stale_rest.headers["litgate-cache"], "stale");
    // Another credential has nothing to fall back on.
    let other = grpc_list(&env, LIST, Some(&env.litd.readonly_macaroon().to_hex())).await;
    assert_eq!(other.grpc_status().as_deref(), Some("14"));

    // Past ttl + max_stale: unavailable, as without a cache.
    env.clock.advance(Duration::from_secs(40));
    let gone = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(gone.grpc_status().as_deref(), Some("14"), "{gone:?}");
    let gone = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    assert_eq!(gone.status, 503);
    let m = metrics(&env).await;
    assert_eq!(metric(&m, "litgate_cache_stale_total"), 3.0, "{m}");
    env.litd.resume().await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn the_sled_files_hold_no_pairing_secret_or_credential_in_clear() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let h1 = h1_client(&env.gate_cert);
    grpc_list(&env, LIST, Some(&mac)).await;
    grpc_list(&env, LIST_AP, Some(&mac)).await;
    send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    send(&h1, web_list(env.gate_uri(LIST), &mac)).await;
    let text = http::Request::post(env.gate_uri(LIST))
        .header("content-type", "application/grpc-web-text")
        .header("macaroon", mac.clone())
        .body(Full::new(Bytes::from(
            base64::engine::general_purpose::STANDARD.encode(grpc_frame(&ListSessionsRequest {})),
        )))
        .unwrap();
    send(&h1, text).await;
    let store = env.gate.store();
    assert_eq!(
        store.cache_usage().unwrap().0,
        5,
        "every answer was stored (else this test proves nothing)"
    );
    store.flush().unwrap();

    let mut needles: Vec<(String, Vec<u8>)> =
        vec![("macaroon hex".into(), mac.clone().into_bytes())];
    needles.push(("macaroon bytes".into(), env.litd.macaroon().encode()));
    for s in env.litd.sessions() {
        let p = &s.pairing_secret;
        assert!(p.len() >= 8);
        let b64 = base64::engine::general_purpose::STANDARD;
        needles.push(("pairing secret".into(), p.clone()));
        needles.push(("pairing secret hex".into(), hex::encode(p).into_bytes()));
        needles.push((
            "pairing secret base64".into(),
            b64.encode(p).trim_end_matches('=').as_bytes().to_vec(),
        ));
        needles.push((
            "pairing secret base64url".into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(p)
                .into_bytes(),
        ));
        needles.push((
            "mnemonic".into(),
            s.pairing_secret_mnemonic.clone().into_bytes(),
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![env.dir.path().join("data/db")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                f.display()
            );
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn a_tampered_entry_is_a_miss_never_an_error() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let good = grpc_list(&env, LIST, Some(&mac)).await;
    let store = env.gate.store();
    let mut entries = Vec::new();
    store
        .cache_retain(|k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    let (key, mut value) = entries.pop().unwrap();
    let mid = value.len() / 2;
    value[mid] ^= 0x01;
    store.cache_put(&key, &value).unwrap();
    let again = grpc_list(&env, LIST, Some(&mac)).await;
    assert_eq!(again.grpc_status().as_deref(), Some("0"));
    assert_eq!(again.body, good.body);
    assert_eq!(env.litd.count(LIST), 2, "the tampered entry was a miss");
    // Garbage in place of an entry: the same.
    store.cache_put(&key, b"not an entry").unwrap();
    assert_eq!(grpc_list(&env, LIST, Some(&mac)).await.body, good.body);
    assert_eq!(env.litd.count(LIST), 3);
    let m = metrics(&env).await;
    assert_eq!(metric(&m, "litgate_cache_undecryptable_total"), 2.0, "{m}");
    env.stop().await;
}

#[tokio::test]
async fn disabled_cache_passes_everything_through() {
    let env = Env::start_with("[cache]\nenabled = false\n").await;
    let mac = env.macaroon();
    for _ in 0..3 {
        assert_eq!(
            grpc_list(&env, LIST, Some(&mac))
                .await
                .grpc_status()
                .as_deref(),
            Some("0")
        );
    }
    assert_eq!(env.litd.count(LIST), 3);
    let m = metrics(&env).await;
    assert!(!m.contains("litgate_cache_"), "{m}");
    assert_eq!(env.gate.store().cache_usage().unwrap().0, 0);
    env.stop().await;
}

#[tokio::test]
async fn sigkill_during_writes_then_restart_serves_correct_answers_or_misses() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::prepare(
        dir.path(),
        &litd,
        "[cache]\nttl = \"1h\"\nmax_stale = \"2h\"\nmax_entries = 10000\n",
    );
    // Credentials: the admin macaroon, the read-only one, and attenuated copies (each its own
    // entry, so every first call writes one).
    let base = litd.macaroon().clone();
    let mut creds = vec![litd.macaroon_hex(), litd.readonly_macaroon().to_hex()];
    creds.extend((0..2000).map(|i| {
        let t = format!(
            "2099-01-01T{:02}:{:02}:{:02}Z",
            i / 3600,
            (i / 60) % 60,
            i % 60
        );
        attenuate(&base, &format!("time-before {t}")).to_hex()
    }));
    let direct_client = h2_client(litd.cert_pem().unwrap());
    let direct_uri = format!("https://{}{LIST}", litd.addr());
    let expected = send(
        &direct_client,
        grpc_request(
            &direct_uri,
            grpc_frame(&ListSessionsRequest {}),
            Some(&creds[0]),
        ),
    )
    .await;
    assert_eq!(expected.grpc_status().as_deref(), Some("0"));
    let expected_rest = send(
        &h1_client(litd.cert_pem().unwrap()),
        rest_get(format!("https://{}/v1/sessions", litd.addr()), &creds[0]),
    )
    .await;
    let list = |gate: SocketAddr, mac: &str| {
        grpc_request(
            &format!("https://{gate}{LIST}"),
            grpc_frame(&ListSessionsRequest {}),
            Some(mac),
        )
    };
    let rest = |gate: SocketAddr, mac: &str| rest_get(format!("https://{gate}/v1/sessions"), mac);

    // Entries that are on disk whatever sled's flush timing: written, then a clean stop, which
    // flushes the store.
    let durable = 20;
    let first = bin.spawn("stderr-1.log").await;
    let cert = std::fs::read(dir.path().join("data/tls.cert")).unwrap();
    let (h2, h1) = (h2_client(&cert), h1_client(&cert));
    for mac in &creds[..durable] {
        send(&h2, list(first.public, mac)).await;
        send(&h1, rest(first.public, mac)).await;
    }
    let (_, m) = admin_get(&format!("http://{}/metrics", first.admin)).await;
    assert_eq!(
        metric(&m, "litgate_cache_entries"),
        (2 * durable) as f64,
        "every answer was stored (else this test proves nothing)"
    );
    stop_cleanly(first.child).await;

    // Hammer: 8 lanes walking the other credentials once each, in gRPC and REST; killed
    // (SIGKILL) while they are still writing new entries.
    let mut second = bin.spawn("stderr-2.log").await;
    let rest_creds = creds[durable..].to_vec();
    let total = 2 * rest_creds.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for lane in 0..8 {
        let (mine, done) = (rest_creds.clone(), done.clone());
        let (h2, h1, gate) = (h2_client(&cert), h1_client(&cert), second.public);
        lanes.push(tokio::spawn(async move {
            for mac in mine.iter().skip(lane).step_by(8) {
                for ok in [
                    h2.request(list(gate, mac)).await.is_ok(),
                    h1.request(rest(gate, mac)).await.is_ok(),
                ] {
                    if ok {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let busy = eventually(3000, Duration::from_millis(10), || async {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 600
    })
    .await;
    assert!(busy, "the hammer made progress");
    second.child.kill().unwrap(); // SIGKILL, mid-write.
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst) < total,
        "still writing new entries when killed"
    );
    second.child.wait().unwrap();
    for l in lanes {
        let _ = l.await;
    }

    // Restarted: every answer is litd's, from the cache or from litd; the durable entries are
    // served from the cache.
    let mut third = bin.spawn("stderr-3.log").await;
    for (i, mac) in creds.iter().enumerate().take(200) {
        let g = send(&h2, list(third.public, mac)).await;
        assert_eq!(
            g.grpc_status().as_deref(),
            Some("0"),
            "credential {i}: {g:?}"
        );
        assert_eq!(
            g.body, expected.body,
            "credential {i}: gRPC answer differs from litd's"
        );
        let r = send(&h1, rest(third.public, mac)).await;
        assert_eq!(
            (r.status, &r.body),
            (expected_rest.status, &expected_rest.body),
            "credential {i}: REST answer differs"
        );
    }
    let (_, m) = admin_get(&format!("http://{}/metrics", third.admin)).await;
    assert!(
        metric(&m, "litgate_cache_hits_total") >= (2 * durable) as f64,
        "entries written before the kill were served: {m}"
    );
    third.child.kill().unwrap();
    third.child.wait().unwrap();
    litd.shutdown().await;
}

/// Headers compared between a miss, a hit and litd's own answer: all but those every server
/// computes per answer (`date`, `content-length`) and hop-by-hop framing.
fn end_to_end(h: &http::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<_> = h
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "content-length" | "transfer-encoding"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_hit_replays_every_header_and_trailer_of_the_miss_in_every_protocol() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let b64 = base64::engine::general_purpose::STANDARD;
    let h1 = h1_client(&env.gate_cert);
    let litd_h1 = h1_client(env.litd.cert_pem().unwrap());
    let text = |uri: String| {
        http::Request::post(uri)
            .header("content-type", "application/grpc-web-text+proto")
            .header("accept", "application/grpc-web-text")
            .header("macaroon", mac.as_str())
            .body(Full::new(Bytes::from(
                b64.encode(grpc_frame(&ListSessionsRequest {})),
            )))
            .unwrap()
    };
    type Call<'a> = Box<dyn Fn(String) -> http::Request<Full<Bytes>> + 'a>;
    let doors: Vec<(&str, String, Call)> = vec![
        ("grpc-web", LIST.into(), Box::new(|u| web_list(u, &mac))),
        ("grpc-web-text", LIST.into(), Box::new(text)),
        (
            "rest",
            "/v1/sessions".into(),
            Box::new(|u| rest_get(u, &mac)),
        ),
    ];
    for (door, path, make) in doors {
        let miss = send(&h1, make(env.gate_uri(&path))).await;
        let hit = send(&h1, make(env.gate_uri(&path))).await;
        let direct = send(&litd_h1, make(env.litd_uri(&path))).await;
        assert_eq!(
            env.litd.count(&path),
            2,
            "{door}: one miss + the direct call"
        );
        env.litd.clear_received();
        assert_eq!(
            end_to_end(&miss.headers),
            end_to_end(&direct.headers),
            "{door}: miss"
        );
        assert_eq!(
            end_to_end(&hit.headers),
            end_to_end(&miss.headers),
            "{door}: hit"
        );
        assert_eq!(hit.body, miss.body, "{door}");
        assert_eq!(hit.trailers, miss.trailers, "{door}");
    }
    // REST: grpc-gateway's Grpc-Metadata-* headers, the content type among them.
    let rest = send(&h1, rest_get(env.gate_uri("/v1/sessions"), &mac)).await;
    assert_eq!(
        rest.headers["grpc-metadata-content-type"],
        "application/grpc"
    );
    assert_eq!(rest.headers["grpc-metadata-x-demo-litd"], "sessions");

    // gRPC: custom initial metadata and trailers.
    let miss = grpc_list(&env, LIST_AP, Some(&mac)).await;
    let hit = grpc_list(&env, LIST_AP, Some(&mac)).await;
    let direct = direct_list(&env, LIST_AP, &mac).await;
    assert_eq!(env.litd.count(LIST_AP), 2, "one miss + the direct call");
    for c in [&miss, &hit] {
        assert_eq!(end_to_end(&c.headers), end_to_end(&direct.headers));
        assert_eq!(c.headers["x-demo-litd"], "sessions");
        let t = c.trailers.as_ref().expect("trailers");
        assert_eq!(t["x-demo-litd-trailer"], "end");
        assert_eq!(end_to_end(t), end_to_end(direct.trailers.as_ref().unwrap()));
    }
    env.stop().await;
}
