//! The raw passthrough (issue: litgate foundation): everything that works against litd works
//! through litgate unchanged — unary and streaming gRPC, grpc-web, REST, static files, litd's
//! own errors — and litd being down is reported promptly in the caller's protocol.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::proto::{
    litgatetest::{echo_client::EchoClient, EchoRequest},
    litrpc::{sessions_client::SessionsClient, ListSessionsRequest, ListSessionsResponse},
};
use prost::Message;
use tonic::{metadata::MetadataValue, Code};

const LIST_SESSIONS: &str = "/litrpc.Sessions/ListSessions";

#[tokio::test]
async fn unary_response_is_byte_identical_to_direct() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let req_body = grpc_frame(&ListSessionsRequest {});
    let via = send(
        &h2_client(&env.gate_cert),
        grpc_request(&env.gate_uri(LIST_SESSIONS), req_body.clone(), Some(&mac)),
    )
    .await;
    let direct = send(
        &h2_client(env.litd.cert_pem().unwrap()),
        grpc_request(&env.litd_uri(LIST_SESSIONS), req_body, Some(&mac)),
    )
    .await;
    assert_eq!(direct.grpc_status().as_deref(), Some("0"), "{direct:?}");
    assert_eq!(via.status, direct.status);
    assert_eq!(via.body, direct.body, "response bytes differ");
    assert_eq!(via.grpc_status(), direct.grpc_status());
    assert_eq!(
        via.headers.get("content-type"),
        direct.headers.get("content-type")
    );
    let resp = ListSessionsResponse::decode(frames(via.body.clone())[0].1.clone()).unwrap();
    assert!(!resp.sessions.is_empty());
    assert_eq!(resp.sessions[0].local_public_key.len(), 33);
    // The caller's macaroon reached litd unchanged.
    let rec = env.litd.received();
    let last = rec.iter().rev().find(|r| r.path == LIST_SESSIONS).unwrap();
    assert_eq!(last.macaroon.as_deref(), Some(mac.as_str()));
    env.stop().await;
}

#[tokio::test]
async fn server_stream_delivers_every_message_and_the_final_status() {
    let env = Env::start().await;
    let mut echo = EchoClient::new(env.gate_channel().await);
    let mut stream = echo
        .server_stream(EchoRequest {
            message: "m".into(),
            count: 25,
            fail_code: 0,
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        got.push(r.index);
    }
    assert_eq!(got, (0..25).collect::<Vec<_>>());

    // A stream that ends in an error status: messages first, then litd's status unchanged.
    let mut stream = echo
        .server_stream(EchoRequest {
            message: "m".into(),
            count: 3,
            fail_code: Code::Aborted as i32,
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("stream ended without the error status"),
            Err(s) => break s,
        }
    };
    assert_eq!(n, 3);
    assert_eq!(status.code(), Code::Aborted);
    env.stop().await;
}

#[tokio::test]
async fn client_and_bidi_streams() {
    let env = Env::start().await;
    let mut echo = EchoClient::new(env.gate_channel().await);
    let msgs = ["a", "b", "c", "d"].map(|m| EchoRequest {
        message: m.into(),
        ..Default::default()
    });
    let reply = echo
        .client_stream(tokio_stream::iter(msgs.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "a,b,c,d");
    assert_eq!(reply.index, 4);

    // Bidi: each reply arrives before the next request is sent (true streaming, no buffering).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = echo
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for m in msgs {
        let text = m.message.clone();
        tx.send(m).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("reply streams")
            .unwrap()
            .unwrap();
        assert_eq!(r.message, text);
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    env.stop().await;
}

#[tokio::test]
async fn rest_get_post_delete_with_the_macaroon_header() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let client = h1_client(&env.gate_cert);
    let get = |uri: String| {
        http::Request::get(uri)
            .header("Grpc-Metadata-Macaroon", mac.clone())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let list = send(&client, get(env.gate_uri("/v1/sessions"))).await;
    assert_eq!(list.status, 200, "{list:?}");
    let before = list.json()["sessions"].as_array().unwrap().len();

    let expiry = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = serde_json::json!({"label": "via-rest", "session_type": "TYPE_MACAROON_READONLY",
        "expiry_timestamp_seconds": expiry.to_string(), "mailbox_server_addr": "mailbox.example:443"});
    let add = send(
        &client,
        http::Request::post(env.gate_uri("/v1/sessions"))
            .header("Grpc-Metadata-Macaroon", mac.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(add.status, 200, "{add:?}");
    let session = &add.json()["session"];
    assert_eq!(session["label"], "via-rest");
    let key = session["local_public_key"].as_str().unwrap().to_string();

    let after = send(&client, get(env.gate_uri("/v1/sessions"))).await;
    assert_eq!(
        after.json()["sessions"].as_array().unwrap().len(),
        before + 1
    );

    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap();
    let url_key = base64::engine::general_purpose::URL_SAFE.encode(raw);
    let del = send(
        &client,
        http::Request::delete(env.gate_uri(&format!("/v1/sessions/{url_key}")))
            .header("Grpc-Metadata-Macaroon", mac.clone())
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(del.status, 200, "{del:?}");
    let revoked = env
        .litd
        .sessions()
        .into_iter()
        .find(|s| s.label == "via-rest")
        .unwrap();
    assert_eq!(
        revoked.session_state,
        litgate::proto::litrpc::SessionState::StateRevoked as i32
    );

    // Every REST call reached litd with the caller's header.
    let rec = env.litd.received();
    let rest: Vec<_> = rec
        .iter()
        .filter(|r| r.path.starts_with("/v1/sessions"))
        .collect();
    assert_eq!(rest.len(), 4);
    assert!(rest
        .iter()
        .all(|r| r.macaroon.as_deref() == Some(mac.as_str())));
    env.stop().await;
}

#[tokio::test]
async fn grpc_web_binary_and_text() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let client = h1_client(&env.gate_cert);
    let frame = grpc_frame(&ListSessionsRequest {});
    let req = http::Request::post(env.gate_uri(LIST_SESSIONS))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("macaroon", mac.clone())
        .body(Full::new(frame.clone()))
        .unwrap();
    let resp = send(&client, req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let fs = frames(resp.body.clone());
    assert_eq!(fs[0].0, 0);
    assert!(!ListSessionsResponse::decode(fs[0].1.clone())
        .unwrap()
        .sessions
        .is_empty());
    let trailer = fs
        .iter()
        .find(|(f, _)| f & 0x80 != 0)
        .expect("grpc-web trailer frame");
    assert!(String::from_utf8_lossy(&trailer.1).contains("grpc-status:0"));

    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let req = http::Request::post(env.gate_uri(LIST_SESSIONS))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("macaroon", mac)
        .body(Full::new(Bytes::from(b64.encode(&frame))))
        .unwrap();
    let resp = send(&client, req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    // grpc-web-text may base64 each frame separately: decode padded chunk by padded chunk.
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let mut decoded = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest
            .find('=')
            .map(|i| rest[i..].find(|c| c != '=').map_or(rest.len(), |j| i + j))
            .unwrap_or(rest.len());
        decoded.extend(
            b64.decode(&rest[..end])
                .unwrap_or_else(|e| panic!("{e}: {text}")),
        );
        rest = &rest[end..];
    }
    let fs = frames(Bytes::from(decoded));
    assert!(!ListSessionsResponse::decode(fs[0].1.clone())
        .unwrap()
        .sessions
        .is_empty());

    // Counted with the status the caller received: read from the grpc-web trailer frame
    // (binary and base64 text), not "no_status".
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    for protocol in ["grpc-web", "grpc-web-text"] {
        assert!(
            metrics.contains(&format!(
                "litgate_requests_total{{route=\"ListSessions\",protocol=\"{protocol}\",grpc_status=\"OK\",http_status=\"200\",outcome=\"ok\"}} 1"
            )),
            "{protocol}: {metrics}"
        );
    }
    assert!(!metrics.contains("no_status"), "{metrics}");
    env.stop().await;
}

#[tokio::test]
async fn litd_auth_errors_reach_the_caller_unchanged() {
    let env = Env::start().await;
    for mac in [None, Some("0201ab")] {
        let body = grpc_frame(&ListSessionsRequest {});
        let via = send(
            &h2_client(&env.gate_cert),
            grpc_request(&env.gate_uri(LIST_SESSIONS), body.clone(), mac),
        )
        .await;
        let direct = send(
            &h2_client(env.litd.cert_pem().unwrap()),
            grpc_request(&env.litd_uri(LIST_SESSIONS), body, mac),
        )
        .await;
        assert_ne!(direct.grpc_status().as_deref(), Some("0"));
        assert_eq!(via.grpc_status(), direct.grpc_status());
        assert_eq!(via.grpc_message(), direct.grpc_message());
        assert_eq!(via.body, direct.body);
    }
    // REST too: same status and JSON body.
    let get = |uri: String| {
        http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let via = send(
        &h1_client(&env.gate_cert),
        get(env.gate_uri("/v1/sessions")),
    )
    .await;
    let direct = send(
        &h1_client(env.litd.cert_pem().unwrap()),
        get(env.litd_uri("/v1/sessions")),
    )
    .await;
    assert_ne!(direct.status, 200);
    assert_eq!((via.status, via.body), (direct.status, direct.body));
    env.stop().await;
}

#[tokio::test]
async fn static_files_pass_through() {
    let env = Env::start().await;
    let get = |uri: String| {
        http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let via = send(&h1_client(&env.gate_cert), get(env.gate_uri("/"))).await;
    let direct = send(
        &h1_client(env.litd.cert_pem().unwrap()),
        get(env.litd_uri("/")),
    )
    .await;
    assert_eq!(via.status, 200);
    assert_eq!(via.body, direct.body);
    assert_eq!(
        via.headers.get("content-type"),
        direct.headers.get("content-type")
    );
    env.stop().await;
}

#[tokio::test]
async fn one_upstream_connection_serves_many_calls() {
    let env = Env::start().await;
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    let channel = env.gate_channel().await;
    let mut calls = Vec::new();
    for _ in 0..40 {
        let mut c = SessionsClient::new(channel.clone());
        let mac = mac.clone();
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(ListSessionsRequest {});
            req.metadata_mut().insert("macaroon", mac);
            c.list_sessions(req).await.map(|_| ())
        }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(
        metric(&metrics, "litgate_upstream_connections_total"),
        1.0,
        "{metrics}"
    );
    // The status came from the trailers, read as the bodies streamed: 40 OKs, none cancelled.
    assert!(
        metrics.contains(
            "litgate_requests_total{route=\"ListSessions\",protocol=\"grpc\",grpc_status=\"OK\",http_status=\"200\",outcome=\"ok\"} 40"
        ),
        "{metrics}"
    );
    env.stop().await;
}

/// Clients commonly end a request body with an empty DATA frame carrying END_STREAM. Passed on
/// as a DATA frame of its own, an HTTP/2 server counts it against its empty-frame flood guard
/// (h2's allows 100 per connection, then GOAWAY ENHANCE_YOUR_CALM), and the call in flight
/// fails. More calls than that, one after another, on one upstream connection, all succeed.
#[tokio::test]
async fn more_calls_than_an_empty_frame_guard_allows_share_one_upstream_connection() {
    let env = Env::start().await;
    let mut echo = EchoClient::new(env.gate_channel().await);
    for i in 0..250 {
        let reply = echo
            .unary(EchoRequest {
                message: format!("call {i}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        assert_eq!(reply.into_inner().message, format!("call {i}"));
    }
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(
        metric(&metrics, "litgate_upstream_connections_total"),
        1.0,
        "{metrics}"
    );
    env.stop().await;
}

#[tokio::test]
async fn litd_down_is_unavailable_promptly_and_recovery_works() {
    let (logs, _guard) = Logs::capture();
    // The session cache would answer ListSessions from a fresh entry while litd is down
    // (tests/cache.rs covers that); this test is about the passthrough.
    let env = Env::start_with("[cache]\nenabled = false\n").await;
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    let mut client = SessionsClient::new(env.gate_channel().await);
    let call = |client: &mut SessionsClient<tonic::transport::Channel>| {
        let mut req = tonic::Request::new(ListSessionsRequest {});
        req.metadata_mut().insert("macaroon", mac.clone());
        let mut c = client.clone();
        async move { c.list_sessions(req).await }
    };
    call(&mut client).await.unwrap();

    env.litd.pause().await;
    // Bounded, not timed: connect_timeout is 1s; a hang would trip the 10s guard.
    let err = tokio::time::timeout(Duration::from_secs(10), call(&mut client))
        .await
        .expect("answers promptly")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // The caller learns that litd is down, not where litd is nor what the OS said (that goes
    // to the log).
    assert_eq!(err.message(), "litd is unavailable");
    let addr = env.litd.addr().to_string();
    assert!(!err.message().contains(&addr) && !err.message().contains("os error"));

    // REST callers get 503 with grpc-gateway's error shape, and the same words.
    let rest = send(
        &h1_client(&env.gate_cert),
        http::Request::get(env.gate_uri("/v1/sessions"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(rest.status, 503);
    assert_eq!(rest.json()["code"], 14);
    assert_eq!(rest.json()["message"], "litd is unavailable");
    assert!(!String::from_utf8_lossy(&rest.body).contains(&addr));

    // The outage is logged once, however many calls meet it, and counted per attempt.
    const GONE: &str = "litd is unreachable";
    const BACK: &str = "litd is reachable again";
    for _ in 0..3 {
        assert!(call(&mut client).await.is_err());
    }
    assert_eq!(logs.count(GONE), 1, "{}", logs.text());
    assert_eq!(logs.count(BACK), 0, "{}", logs.text());
    let metrics = admin_get(&env.admin_uri("/metrics")).await.1;
    assert!(
        metric(&metrics, "litgate_upstream_connect_failures_total") >= 5.0,
        "{metrics}"
    );

    env.litd.resume().await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if call(&mut client).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a call after litd came back succeeds");
    assert_eq!(logs.count(BACK), 1, "{}", logs.text());
    assert_eq!(logs.count(GONE), 1, "{}", logs.text());
    env.stop().await;
}

#[tokio::test]
async fn ready_flips_with_litd_availability() {
    let env = Env::start().await;
    assert_eq!(admin_get(&env.admin_uri("/live")).await.0, 200);
    let (status, body) = admin_get(&env.admin_uri("/ready")).await;
    assert_eq!(status, 200, "{body}");
    env.litd.pause().await;
    let (status, body) = admin_get(&env.admin_uri("/ready")).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("upstream:") && body.contains(&env.litd.addr().to_string()),
        "{body}"
    );
    env.litd.resume().await.unwrap();
    let admin = env.admin_uri("/ready");
    assert!(
        eventually(50, Duration::from_millis(100), || async {
            admin_get(&admin).await.0 == 200
        })
        .await
    );
    env.stop().await;
}

#[tokio::test]
async fn plaintext_listener_serves_h2c_and_http1() {
    let litd = litgate::demo::DemoLitd::start(litgate::demo::DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), &litd, "").replacen(
        "[listen]\n",
        "[listen]\nplaintext = true\n",
        1,
    );
    let cfg = litgate::config::Config::parse(&toml).unwrap();
    let gate = litgate::app::start(&cfg).await.unwrap();
    assert!(gate.cert_path.is_none());
    // gRPC over h2c (prior knowledge).
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", gate.public_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reply = EchoClient::new(ch)
        .unary(EchoRequest {
            message: "h2c".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "h2c");
    // REST over plain HTTP/1.1.
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::get(format!("http://{}/v1/sessions", gate.public_addr))
        .header("Grpc-Metadata-Macaroon", litd.macaroon_hex())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    gate.shutdown().await;
    litd.shutdown().await;
}

/// As a native sidecar litgate starts before litd has written its tls.cert, and litd renews
/// its certificate: the pin is read when a connection needs it, and re-read when it changed.
#[tokio::test]
async fn pinned_cert_is_read_late_and_follows_renewal() {
    let litd = litgate::demo::DemoLitd::start(litgate::demo::DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), &litd, "");
    let cert_path = dir.path().join("litd-tls.cert");
    std::fs::remove_file(&cert_path).unwrap();
    let cfg = litgate::config::Config::parse(&toml).unwrap();
    let gate = litgate::app::start(&cfg)
        .await
        .expect("starts without litd's cert");
    let admin = format!("http://{}/ready", gate.admin_addr);
    let (status, body) = admin_get(&admin).await;
    assert_eq!(status, 503);
    assert!(body.contains("tls.cert"), "{body}");

    std::fs::write(&cert_path, litd.cert_pem().unwrap()).unwrap();
    let cert = std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap();
    let mut echo = EchoClient::new(channel(gate.public_addr, &cert).await);
    let ping = |m: &str| EchoRequest {
        message: m.into(),
        ..Default::default()
    };
    assert_eq!(
        echo.unary(ping("first"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "first"
    );

    // litd restarts with a renewed certificate on the same address.
    let addr = litd.addr();
    litd.shutdown().await;
    let renewed = litgate::demo::DemoLitd::start(litgate::demo::DemoLitdConfig {
        tls: true,
        addr: Some(addr),
        ..Default::default()
    })
    .unwrap();
    assert_ne!(renewed.cert_pem(), None);
    std::fs::write(&cert_path, renewed.cert_pem().unwrap()).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if echo.unary(ping("renewed")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "litgate follows litd's renewed certificate");
    gate.shutdown().await;
    renewed.shutdown().await;
}

/// The drain has a deadline: a call still running when it passes is cut, and shutdown returns.
#[tokio::test]
async fn shutdown_cuts_calls_still_running_at_the_drain_deadline() {
    let Bare {
        litd,
        gate,
        gate_cert,
        ..
    } = Bare::with_drain(Duration::from_millis(300)).await;
    let mut echo = EchoClient::new(channel(gate.public_addr, &gate_cert).await);
    // 100 replies 100 ms apart: far longer than the drain deadline.
    let mut stream = echo
        .server_stream(EchoRequest {
            message: "long".into(),
            count: 100,
            fail_code: 0,
            delay_ms: 100,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    // Bounded, not timed: a shutdown that waited for the stream would take 10 s.
    tokio::time::timeout(Duration::from_secs(5), gate.shutdown())
        .await
        .expect("shutdown returns after the deadline");
    let mut got = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            other => break other,
        }
    };
    assert!(got < 100, "the stream was cut");
    assert!(
        ended.is_err(),
        "a cut stream ends with an error, not a clean end: {ended:?}"
    );
    litd.shutdown().await;
}
