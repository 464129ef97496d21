//! The fakes on their own (no litgate in between): DemoLitd's macaroon checks, REST mapping,
//! grpc-web, autopilot flow against DemoAutopilot, streams, and pause/resume.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use litgate::{
    demo::{attenuate, DemoAutopilot, DemoAutopilotConfig, DemoLitd, DemoLitdConfig},
    macaroon::format_rfc3339,
    proto::{
        litgatetest::{echo_client::EchoClient, EchoRequest},
        litrpc::{
            autopilot_client::AutopilotClient, rule_value::Value, sessions_client::SessionsClient,
            status_client::StatusClient, AddAutopilotSessionRequest, AddSessionRequest,
            FeatureConfig, ListAutopilotFeaturesRequest, ListSessionsRequest, Rate, RateLimit,
            RevokeAutopilotSessionRequest, RevokeSessionRequest, RuleValue, RulesMap, SessionState,
            SessionType, SubServerStatusReq,
        },
    },
};
use tonic::{
    transport::{Channel, Endpoint},
    Code, Request,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A channel pinning the fake's lnd-shaped certificate, as litcli pins litd's `tls.cert`.
async fn channel(litd: &DemoLitd) -> Result<Channel, tonic::transport::Error> {
    let ep = Endpoint::from_shared(format!("http://127.0.0.1:{}", litd.addr().port()))?
        .connect_timeout(Duration::from_secs(2));
    let tls = litgate::tls::pinned::pem_client_config(litd.cert_pem().expect("TLS litd")).unwrap();
    Ok(litgate::tls::pinned::tonic_channel(ep, tls))
}

async fn plain_channel(litd: &DemoLitd) -> Channel {
    Endpoint::from_shared(format!("http://{}", litd.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_mac<T>(msg: T, hex: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("macaroon", hex.parse().unwrap());
    r
}

/// A HTTPS client (HTTP/1.1) that trusts exactly the fake's certificate.
fn https_client(
    cert_pem: &[u8],
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let cfg = litgate::tls::pinned::pem_client_config(cert_pem).unwrap();
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(conn)
}

async fn rest(
    litd: &DemoLitd,
    method: &str,
    path: &str,
    mac: Option<&str>,
    body: &str,
) -> (http::StatusCode, serde_json::Value) {
    let client = https_client(litd.cert_pem().unwrap());
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1:{}{path}", litd.addr().port()));
    if let Some(m) = mac {
        req = req.header("Grpc-Metadata-Macaroon", m);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn start_pair() -> (DemoAutopilot, DemoLitd) {
    let ap = DemoAutopilot::start(DemoAutopilotConfig::default()).unwrap();
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        autopilot: Some(ap.target()),
        addr: None,
        bench_alias: false,
    })
    .unwrap();
    (ap, litd)
}

fn features(names: &[&str]) -> HashMap<String, FeatureConfig> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                FeatureConfig {
                    rules: None,
                    config: b"{}".to_vec(),
                },
            )
        })
        .collect()
}

fn autopilot_request(names: &[&str]) -> AddAutopilotSessionRequest {
    AddAutopilotSessionRequest {
        label: "test".into(),
        expiry_timestamp_seconds: now() + 3600,
        mailbox_server_addr: "mailbox.example:443".into(),
        features: features(names),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_over_tls_needs_a_valid_macaroon() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let mut client = SessionsClient::new(channel(&litd).await.unwrap());

    let list = client
        .list_sessions(with_mac(ListSessionsRequest {}, &litd.macaroon_hex()))
        .await
        .unwrap();
    let sessions = list.into_inner().sessions;
    assert_eq!(sessions.len(), 3, "pre-seeded sessions");
    assert!(sessions
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));
    for s in &sessions {
        assert_eq!(s.local_public_key.len(), 33);
        assert_eq!(s.id, s.local_public_key[1..5]);
        assert_eq!(s.pairing_secret.len(), 14);
        assert_eq!(s.pairing_secret_mnemonic.split(' ').count(), 10);
    }

    let err = client
        .list_sessions(ListSessionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(err.message(), "expected 1 macaroon, got 0");

    let forged = litgate::demo::MacaroonBaker::new().bake_admin();
    let err = client
        .list_sessions(with_mac(ListSessionsRequest {}, &forged.to_hex()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert!(
        err.message().contains("signature mismatch"),
        "{}",
        err.message()
    );

    // The whitelisted method needs nothing.
    let mut status = StatusClient::new(channel(&litd).await.unwrap());
    let st = status
        .sub_server_status(SubServerStatusReq {})
        .await
        .unwrap()
        .into_inner();
    assert!(st.sub_servers["lit"].running);
}

#[tokio::test]
async fn attenuated_time_before_is_enforced() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let mut client = SessionsClient::new(channel(&litd).await.unwrap());
    let t = SystemTime::now();

    let past = attenuate(
        litd.macaroon(),
        &format!(
            "time-before {}",
            format_rfc3339(t - Duration::from_secs(60))
        ),
    );
    let err = client
        .list_sessions(with_mac(ListSessionsRequest {}, &past.to_hex()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert!(
        err.message().contains("time-before") && err.message().contains("expired"),
        "{}",
        err.message()
    );

    let future = attenuate(
        litd.macaroon(),
        &format!(
            "time-before {}",
            format_rfc3339(t + Duration::from_secs(600))
        ),
    );
    assert_eq!(future.identifier, litd.macaroon().identifier);
    client
        .list_sessions(with_mac(ListSessionsRequest {}, &future.to_hex()))
        .await
        .unwrap();

    // Read-only credentials cannot write.
    let ro = litd.readonly_macaroon().to_hex();
    client
        .list_sessions(with_mac(ListSessionsRequest {}, &ro))
        .await
        .unwrap();
    let req = AddSessionRequest {
        session_type: SessionType::TypeMacaroonAdmin as i32,
        expiry_timestamp_seconds: now() + 600,
        ..Default::default()
    };
    let err = client.add_session(with_mac(req, &ro)).await.unwrap_err();
    assert_eq!(err.message(), "permission denied");
}

#[tokio::test]
async fn rest_gateway_speaks_litd_json() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let mac = litd.macaroon_hex();

    let (status, json) = rest(&litd, "GET", "/v1/sessions", Some(&mac), "").await;
    assert_eq!(status, 200);
    let s0 = &json["sessions"][0];
    for key in [
        "pairing_secret",
        "local_public_key",
        "session_state",
        "expiry_timestamp_seconds",
        "revoked_at",
    ] {
        assert!(s0.get(key).is_some(), "missing snake_case key {key}: {s0}");
    }
    assert!(s0.get("pairingSecret").is_none());
    let secret = s0["pairing_secret"].as_str().unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(secret)
            .unwrap()
            .len(),
        14
    );
    assert!(s0["created_at"].is_string(), "64-bit ints are strings");
    assert_eq!(s0["session_state"], "STATE_CREATED");

    // The request was recorded with its credential.
    let rec = litd.received();
    let last = rec.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/v1/sessions")
    );
    assert_eq!(last.macaroon.as_deref(), Some(mac.as_str()));
    assert_eq!(litd.count("/v1/sessions"), 1);

    // Errors in grpc-gateway shape.
    let (status, json) = rest(&litd, "GET", "/v1/sessions", None, "").await;
    assert_eq!(status, 500);
    assert_eq!(
        json,
        serde_json::json!({"code": 2, "message": "expected 1 macaroon, got 0", "details": []})
    );
    let (status, json) = rest(&litd, "GET", "/v1/nothing", Some(&mac), "").await;
    assert_eq!(status, 404);
    assert_eq!(json["code"], 5);
    let (status, json) = rest(&litd, "POST", "/v1/sessions", Some(&mac), "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(json["code"], 3);

    // POST then DELETE with a base64url key.
    let body = serde_json::json!({
        "label": "rest", "session_type": "TYPE_MACAROON_READONLY",
        "expiry_timestamp_seconds": (now() + 600).to_string(), "mailbox_server_addr": "m:443"
    });
    let (status, json) = rest(&litd, "POST", "/v1/sessions", Some(&mac), &body.to_string()).await;
    assert_eq!(status, 200, "{json}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(json["session"]["local_public_key"].as_str().unwrap())
        .unwrap();
    let url_key = base64::engine::general_purpose::URL_SAFE.encode(&key);
    let (status, _) = rest(
        &litd,
        "DELETE",
        &format!("/v1/sessions/{url_key}"),
        Some(&mac),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let revoked = litd
        .sessions()
        .into_iter()
        .find(|s| s.local_public_key == key)
        .unwrap();
    assert_eq!(revoked.session_state, SessionState::StateRevoked as i32);

    let (status, json) = rest(&litd, "GET", "/v1/status", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(json["sub_servers"]["lnd"]["running"], true);
}

#[tokio::test]
async fn grpc_web_and_static_files_on_the_same_port() {
    let litd = DemoLitd::start(DemoLitdConfig::default()).unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // An empty ListSessionsRequest in one grpc-web frame.
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let req = http::Request::post(format!(
        "http://{}/litrpc.Sessions/ListSessions",
        litd.addr()
    ))
    .header("content-type", "application/grpc-web+proto")
    .header("macaroon", litd.macaroon_hex())
    .body(Full::new(frame))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    // Data frame then a trailers frame (flag 0x80) carrying grpc-status:0.
    assert_eq!(body[0], 0);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("grpc-status:0"), "{text}");
    assert_eq!(
        litd.received().last().unwrap().content_type,
        "application/grpc-web+proto"
    );

    let resp = client
        .request(
            http::Request::get(format!("http://{}/", litd.addr()))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("Lightning Terminal"));
}

#[tokio::test]
async fn add_autopilot_session_registers_at_the_autopilot() {
    let (ap, litd) = start_pair();
    let mut client = AutopilotClient::new(channel(&litd).await.unwrap());
    let mac = litd.macaroon_hex();

    let resp = client
        .add_autopilot_session(with_mac(autopilot_request(&["AutoOpen"]), &mac))
        .await
        .unwrap();
    let s = resp.into_inner().session.unwrap();
    assert_eq!(s.session_state, SessionState::StateCreated as i32);
    assert_eq!(s.session_type, SessionType::TypeAutopilot as i32);
    assert_eq!(s.remote_public_key, ap.initiator_key());
    assert_eq!(s.privacy_flags, 0x81, "union of AutoOpen's flags");
    let recipe = s.macaroon_recipe.unwrap();
    assert!(recipe.caveats[0].starts_with(
        "lnd-custom lit-mac-fw rules:{\"session_rules\":null,\"feature_rules\":{\"AutoOpen\":"
    ));
    assert_eq!(recipe.caveats[1], "lnd-custom privacy");
    assert!(recipe.permissions.iter().all(|p| p.entity == "uri"));
    assert!(recipe
        .permissions
        .iter()
        .any(|p| p.action == "/lnrpc.Lightning/OpenChannelSync"));
    // Defaults filled in for every rule the server lists.
    let info = &s.autopilot_feature_info["AutoOpen"].rules;
    assert_eq!(info.len(), 4);
    let Some(Value::RateLimit(rl)) = &info["rate-limit"].value else {
        panic!("rate-limit")
    };
    assert_eq!(
        rl.read_limit,
        Some(Rate {
            iterations: 10,
            num_hours: 1
        })
    );

    let regs = ap.registrations();
    assert_eq!(regs.len(), 1);
    let r = &regs[0].request;
    assert_eq!(r.responder_pub_key, s.local_public_key);
    assert_eq!(r.privacy_flags, 0x81);
    assert_eq!(r.mailbox_addr, "mailbox.example:443");
    assert_eq!(r.feature_configs["AutoOpen"], b"{}");
    assert_eq!(r.lit_version.unwrap().minor, 17);
    assert!(r.group_responder_key.is_empty());
    assert_eq!(ap.count("ListFeatures"), 1);

    // ListAutopilotFeatures converts the catalogue.
    let feats = client
        .list_autopilot_features(with_mac(ListAutopilotFeaturesRequest {}, &mac))
        .await
        .unwrap()
        .into_inner()
        .features;
    assert_eq!(feats.len(), 3);
    let hc = &feats["HealthCheck"];
    assert!(hc.rules["rate-limit"].known && !hc.requires_upgrade);
    let Some(Value::RateLimit(max)) = &hc.rules["rate-limit"].max_value.as_ref().unwrap().value
    else {
        panic!()
    };
    assert_eq!(
        max.read_limit,
        Some(Rate {
            iterations: 1000,
            num_hours: 1
        })
    );

    // RevokeAutopilotSession tells the server.
    client
        .revoke_autopilot_session(with_mac(
            RevokeAutopilotSessionRequest {
                local_public_key: s.local_public_key.clone(),
            },
            &mac,
        ))
        .await
        .unwrap();
    assert_eq!(ap.revocations(), vec![s.local_public_key.clone()]);
}

#[tokio::test]
async fn add_autopilot_session_refusals_follow_litd() {
    let (ap, litd) = start_pair();
    let mut client = AutopilotClient::new(channel(&litd).await.unwrap());
    let mac = litd.macaroon_hex();

    let err = client
        .add_autopilot_session(with_mac(autopilot_request(&[]), &mac))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "must include at least one feature")
    );

    let mut req = autopilot_request(&["HealthCheck"]);
    req.features.get_mut("HealthCheck").unwrap().rules = Some(RulesMap {
        rules: [(
            "rate-limit".to_string(),
            RuleValue {
                value: Some(Value::RateLimit(RateLimit {
                    read_limit: Some(Rate {
                        iterations: 2000,
                        num_hours: 1,
                    }),
                    write_limit: Some(Rate {
                        iterations: 1,
                        num_hours: 1,
                    }),
                })),
            },
        )]
        .into(),
    });
    let err = client
        .add_autopilot_session(with_mac(req, &mac))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .starts_with("rule value for rate-limit not valid for feature HealthCheck"),
        "{}",
        err.message()
    );
    assert!(
        err.message()
            .ends_with("read limit is not between the min and max"),
        "{}",
        err.message()
    );

    let err = client
        .add_autopilot_session(with_mac(autopilot_request(&["Nope"]), &mac))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "Nope is not a features provided by the Autopilot server"
    );

    let mut req = autopilot_request(&["HealthCheck"]);
    req.no_privacy_mapper = true;
    req.privacy_flags_set = true;
    let err = client
        .add_autopilot_session(with_mac(req, &mac))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "privacy flags can only be set when the privacy mapper is enabled"
    );

    assert_eq!(ap.count("RegisterSession"), 0);
    assert!(litd
        .sessions()
        .iter()
        .all(|s| s.session_type != SessionType::TypeAutopilot as i32));

    // A failed registration leaves the Reserved row behind, as litd does for unlinked sessions.
    ap.set_fail(
        "RegisterSession",
        Some(tonic::Status::unavailable("server down")),
    );
    let err = client
        .add_autopilot_session(with_mac(autopilot_request(&["HealthCheck"]), &mac))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "error registering session with autopilot server: rpc error: code = Unavailable desc = server down"
    );
    let reserved: Vec<_> = litd
        .sessions()
        .into_iter()
        .filter(|s| s.session_state == SessionState::StateReserved as i32)
        .collect();
    assert_eq!(reserved.len(), 1);
    assert_eq!(ap.count("RegisterSession"), 1);
    assert!(ap.registrations().is_empty());
}

#[tokio::test]
async fn revoking_any_session_announces_its_key_to_the_autopilot() {
    let (ap, litd) = start_pair();
    let mut client = SessionsClient::new(channel(&litd).await.unwrap());
    let admin = litd
        .sessions()
        .into_iter()
        .find(|s| s.label == "demo admin")
        .unwrap();
    assert_eq!(admin.session_type, SessionType::TypeMacaroonAdmin as i32);

    client
        .revoke_session(with_mac(
            RevokeSessionRequest {
                local_public_key: admin.local_public_key.clone(),
            },
            &litd.macaroon_hex(),
        ))
        .await
        .unwrap();
    // litd's leak: a non-autopilot key reaches the Autopilot server.
    assert_eq!(ap.revocations(), vec![admin.local_public_key.clone()]);
    let after = litd
        .sessions()
        .into_iter()
        .find(|s| s.id == admin.id)
        .unwrap();
    assert_eq!(after.session_state, SessionState::StateRevoked as i32);
    assert!(after.revoked_at > 0);

    // RevokeAutopilotSession refuses a non-autopilot session.
    let mut ap_client = AutopilotClient::new(channel(&litd).await.unwrap());
    let ro = litd
        .sessions()
        .into_iter()
        .find(|s| s.label == "demo read-only")
        .unwrap();
    let err = ap_client
        .revoke_autopilot_session(with_mac(
            RevokeAutopilotSessionRequest {
                local_public_key: ro.local_public_key,
            },
            &litd.macaroon_hex(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "session not found");
}

#[tokio::test]
async fn echo_streams_without_credentials() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let mut client = EchoClient::new(channel(&litd).await.unwrap());

    let req = EchoRequest {
        message: "hi".into(),
        count: 3,
        fail_code: Code::FailedPrecondition as i32,
        delay_ms: 1,
    };
    let mut stream = client.server_stream(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => got.push((m.message, m.index)),
            Ok(None) => break None,
            Err(s) => break Some(s),
        }
    };
    assert_eq!(
        got,
        vec![
            ("hi".to_string(), 0),
            ("hi".to_string(), 1),
            ("hi".to_string(), 2)
        ]
    );
    assert_eq!(end.unwrap().code(), Code::FailedPrecondition);

    let msgs = ["a", "b", "c"].map(|m| EchoRequest {
        message: m.into(),
        ..Default::default()
    });
    let reply = client
        .client_stream(tokio_stream::iter(msgs.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.message.as_str(), reply.index), ("a,b,c", 3));

    let mut bidi = client
        .bidi(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let mut echoed = Vec::new();
    while let Some(m) = bidi.message().await.unwrap() {
        echoed.push(m.message);
    }
    assert_eq!(echoed, ["a", "b", "c"]);

    // Echo paths are recorded without their bodies.
    let rec = litd.received();
    assert_eq!(litd.count("/litgatetest.Echo/ServerStream"), 1);
    assert!(rec.iter().all(|r| r.body.is_empty()));
}

#[tokio::test]
async fn pause_kills_connections_and_resume_serves_again() {
    let litd = DemoLitd::start(DemoLitdConfig::default()).unwrap();
    let mac = litd.macaroon_hex();
    let pooled = plain_channel(&litd).await;
    let mut client = SessionsClient::new(pooled.clone());
    client
        .list_sessions(with_mac(ListSessionsRequest {}, &mac))
        .await
        .unwrap();
    let before = litd.sessions();

    litd.pause().await;
    // The pooled connection was killed: the client sees it closed (Cancelled) or refused.
    let err = client
        .list_sessions(with_mac(ListSessionsRequest {}, &mac))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Cancelled),
        "{err}"
    );
    assert!(Endpoint::from_shared(format!("http://{}", litd.addr()))
        .unwrap()
        .connect()
        .await
        .is_err());

    litd.resume().await.unwrap();
    let mut fresh = SessionsClient::new(plain_channel(&litd).await);
    let after = fresh
        .list_sessions(with_mac(ListSessionsRequest {}, &mac))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(after, before, "same state after resume");
    // The pooled channel reconnects on its own (bounded retries, no sleeps for readiness).
    let mut ok = false;
    for _ in 0..50 {
        if client
            .list_sessions(with_mac(ListSessionsRequest {}, &mac))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "pooled channel never recovered");

    litd.shutdown().await;
    assert!(litd.resume().await.is_err());
}

#[tokio::test]
async fn autopilot_down_and_back_and_tls() {
    let ap = DemoAutopilot::start(DemoAutopilotConfig {
        tls: true,
        addr: None,
    })
    .unwrap();
    assert!(ap.cert_pem().is_some());
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        autopilot: Some(ap.target()),
        addr: None,
        bench_alias: false,
    })
    .unwrap();
    let mut client = AutopilotClient::new(channel(&litd).await.unwrap());
    let mac = litd.macaroon_hex();
    client
        .list_autopilot_features(with_mac(ListAutopilotFeaturesRequest {}, &mac))
        .await
        .unwrap();

    ap.pause().await;
    let err = client
        .list_autopilot_features(with_mac(ListAutopilotFeaturesRequest {}, &mac))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    ap.resume().await.unwrap();
    client
        .list_autopilot_features(with_mac(ListAutopilotFeaturesRequest {}, &mac))
        .await
        .unwrap();
    assert_eq!(
        ap.count("ListFeatures"),
        2,
        "the call made while down never arrived"
    );

    // A catalogue rule litd does not know marks the feature.
    let mut cat = ap.catalogue();
    let hc = cat.get_mut("HealthCheck").unwrap();
    hc.rules.insert(
        "send-to-self".into(),
        litgate::proto::autopilotserverrpc::Rule {
            name: "send-to-self".into(),
            ..Default::default()
        },
    );
    ap.set_catalogue(cat);
    let feats = client
        .list_autopilot_features(with_mac(ListAutopilotFeaturesRequest {}, &mac))
        .await
        .unwrap()
        .into_inner()
        .features;
    assert!(feats["HealthCheck"].requires_upgrade);
    assert!(!feats["HealthCheck"].rules["send-to-self"].known);
    let err = client
        .add_autopilot_session(with_mac(autopilot_request(&["HealthCheck"]), &mac))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "unknown rule send-to-self, please upgrade");
}

#[tokio::test]
async fn grpc_web_text_is_answered_in_text() {
    let litd = DemoLitd::start(DemoLitdConfig::default()).unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let req = http::Request::post(format!(
        "http://{}/litrpc.Status/SubServerStatus",
        litd.addr()
    ))
    .header("content-type", "application/grpc-web-text")
    .body(Full::new(Bytes::from(b64.encode([0u8, 0, 0, 0, 0]))))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("base64 text");
    // Each frame may be its own padded base64 chunk.
    let mut decoded = Vec::new();
    for chunk in text.split_inclusive('=').filter(|c| *c != "=") {
        decoded.extend(
            b64.decode(chunk.trim_start_matches('='))
                .unwrap_or_default(),
        );
    }
    assert!(
        String::from_utf8_lossy(&decoded).contains("grpc-status:0"),
        "{text}"
    );
}

#[tokio::test]
async fn linked_sessions_and_rest_autopilot() {
    let (ap, litd) = start_pair();
    let mac = litd.macaroon_hex();

    // Over REST: the JSON body as litcli/the UI send it (bytes as base64, u64 as strings).
    let body = serde_json::json!({
        "label": "first",
        "expiry_timestamp_seconds": (now() + 3600).to_string(),
        "mailbox_server_addr": "mailbox.example:443",
        "features": { "HealthCheck": { "config": "e30=" } }
    });
    let (status, json) = rest(
        &litd,
        "POST",
        "/v1/autopilot/sessions",
        Some(&mac),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["session"]["session_state"], "STATE_CREATED");
    assert_eq!(json["session"]["feature_configs"]["HealthCheck"], "{}");
    let first = litd
        .sessions()
        .into_iter()
        .find(|s| s.label == "first")
        .unwrap();
    assert_eq!(first.group_id, first.id);

    // Linking while the first session is still active is refused inside the "store".
    let mut client = AutopilotClient::new(channel(&litd).await.unwrap());
    let mut req = autopilot_request(&["HealthCheck"]);
    req.linked_group_id = first.id.clone();
    let err = client
        .add_autopilot_session(with_mac(req.clone(), &mac))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "group has active sessions");

    client
        .revoke_autopilot_session(with_mac(
            RevokeAutopilotSessionRequest {
                local_public_key: first.local_public_key.clone(),
            },
            &mac,
        ))
        .await
        .unwrap();
    let second = client
        .add_autopilot_session(with_mac(req, &mac))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(second.group_id, first.id);
    assert_ne!(second.id, first.id);
    let reg = ap.registrations().pop().unwrap().request;
    assert_eq!(reg.group_responder_key, first.local_public_key);
    assert_eq!(reg.group_responder_sig.len(), 70);

    // Linking to a session that is not first in its group.
    let mut req = autopilot_request(&["HealthCheck"]);
    req.linked_group_id = second.id.clone();
    let err = client
        .add_autopilot_session(with_mac(req, &mac))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("can not link to session"),
        "{}",
        err.message()
    );
}
