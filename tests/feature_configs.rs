//! Feature configs and what the Autopilot server learns (issue 14). On the public face, a config
//! that would show the server a node identifier the session's flags keep private is refused
//! before litd in every protocol (gRPC, grpc-web binary and text, REST, grpc-websockets), with
//! the feature, the path and the kind named, while the same value in a top-level list of
//! strings (which litd replaces with a pseudonym) is accepted. At the relay, a leaking
//! `RegisterSession` never reaches the server, whoever sends it. The ledger, `/registrations`
//! and `litgate registrations` say what each registration showed the server.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::proto::litrpc::{AddAutopilotSessionRequest, FeatureConfig};
use prost::Message;
use tonic::Code;

const PK: &str = "024a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a";

/// A pubkey inside an object inside a list: litd sends it as written.
fn leaking() -> String {
    format!(r#"{{"targets":[{{"peer":"{PK}"}}],"max_fee_ppm":500}}"#)
}

/// The same pubkey in a top-level list of strings: litd replaces it.
fn listed() -> String {
    format!(r#"{{"peers":["{PK}"],"max_fee_ppm":500}}"#)
}

/// The words the public face refuses [`leaking`] with, for AutoFees (whose flags clear channel
/// IDs and timestamps, not pubkeys).
const REFUSED: &str = "features.AutoFees.config: $.targets[0].peer: a node pubkey outside a \
                       top-level list of strings, which litd sends to the Autopilot server in \
                       clear; litd only replaces strings in a top-level list of strings: move it \
                       into one, or ask for privacy flag ClearPubkeys if the feature needs the \
                       real value and the operator's policy allows it";

fn request(feature: &str, config: &str) -> AddAutopilotSessionRequest {
    AddAutopilotSessionRequest {
        label: "config-test".into(),
        expiry_timestamp_seconds: (SystemTime::now() + Duration::from_secs(86_400))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        mailbox_server_addr: "mailbox.example:443".into(),
        features: [(
            feature.to_string(),
            FeatureConfig {
                rules: None,
                config: config.as_bytes().to_vec(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// Every door to AddAutopilotSession on the public face.
#[derive(Debug, Clone, Copy)]
enum Door {
    Grpc,
    GrpcWeb,
    GrpcWebText,
    Rest,
    WebSocket,
}

const DOORS: [Door; 5] = [
    Door::Grpc,
    Door::GrpcWeb,
    Door::GrpcWebText,
    Door::Rest,
    Door::WebSocket,
];

/// The status of a grpc-web answer: trailers-only in the head, else the trailer frame.
fn web_status(headers: &http::HeaderMap, body: Bytes) -> (Code, String) {
    let from = |h: &http::HeaderMap| {
        let code: i32 = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = h
            .get("grpc-message")
            .map(|m| {
                percent_encoding::percent_decode_str(m.to_str().unwrap())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Some((Code::from(code), message))
    };
    if let Some(s) = from(headers) {
        return s;
    }
    let (_, block) = frames(body)
        .into_iter()
        .find(|(flag, _)| flag & 0x80 != 0)
        .expect("a trailer frame");
    from(&trailer_block(&block)).expect("grpc-status in the trailer frame")
}

/// Calls AddAutopilotSession through `door` with the test's macaroon; the status the caller
/// got (REST: grpc-gateway's code and message, also checked against the HTTP status).
async fn add(env: &Env, door: Door, req: &AddAutopilotSessionRequest) -> (Code, String) {
    let msg = req.encode_to_vec();
    let mac = env.macaroon();
    let b64 = base64::engine::general_purpose::STANDARD;
    match door {
        Door::Grpc => {
            let r = send(
                &h2_client(&env.gate_cert),
                grpc_request(
                    &env.gate_uri(ADD_AUTOPILOT),
                    Bytes::from(grpc_frame_bytes(&msg)),
                    Some(&mac),
                ),
            )
            .await;
            let code: i32 = r.grpc_status().expect("grpc-status").parse().unwrap();
            (Code::from(code), r.grpc_message().unwrap_or_default())
        }
        Door::GrpcWeb | Door::GrpcWebText => {
            let text = matches!(door, Door::GrpcWebText);
            let (ct, body) = if text {
                (
                    "application/grpc-web-text",
                    Bytes::from(b64.encode(grpc_frame_bytes(&msg))),
                )
            } else {
                ("application/grpc-web+proto", grpc_frame_bytes(&msg).into())
            };
            let http = http::Request::post(env.gate_uri(ADD_AUTOPILOT))
                .header("content-type", ct)
                .header("accept", ct)
                .header("x-grpc-web", "1")
                .header("macaroon", &mac)
                .body(Full::new(body))
                .unwrap();
            let r = send(&h1_client(&env.gate_cert), http).await;
            let body = if text {
                decode_web_text(&r.body)
            } else {
                r.body.clone()
            };
            web_status(&r.headers, body)
        }
        Door::Rest => {
            let json = serde_json::to_value(req).unwrap();
            let http = http::Request::post(env.gate_uri(REST_ADD_AUTOPILOT))
                .header("Grpc-Metadata-Macaroon", &mac)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(json.to_string())))
                .unwrap();
            let r = send(&h1_client(&env.gate_cert), http).await;
            if r.status == 200 {
                return (Code::Ok, String::new());
            }
            let json = r.json();
            let code = Code::from(json["code"].as_i64().unwrap() as i32);
            assert_eq!(r.status, litgate::error::http_status(code), "{json}");
            (code, json["message"].as_str().unwrap().to_owned())
        }
        Door::WebSocket => {
            let mut metadata = http::HeaderMap::new();
            metadata.insert("macaroon", mac.parse().unwrap());
            let status = litgate::demo::ws_client::call(
                env.gate.public_addr,
                Some(&env.gate_cert),
                ADD_AUTOPILOT,
                &metadata,
                &msg,
                |_| {},
            )
            .await
            .expect("the call completes");
            (status.code, status.message)
        }
    }
}

/// A grpc-web-text answer: base64 pieces, each padded on its own (a server encodes frames
/// as they go), so a `=` may end a piece in the middle of the body.
fn decode_web_text(body: &[u8]) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&c| c == b'=')
            .map_or(rest.len(), |i| {
                i + rest[i..].iter().take_while(|&&c| c == b'=').count()
            });
        out.extend(b64.decode(&rest[..end]).expect("base64 answer"));
        rest = &rest[end..];
    }
    Bytes::from(out)
}

fn grpc_frame_bytes(msg: &[u8]) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

#[tokio::test]
async fn a_leaking_config_is_refused_in_every_protocol_and_reaches_nothing() {
    let env = Env::start().await;
    let req = request("AutoFees", &leaking());
    for door in DOORS {
        let (code, message) = add(&env, door, &req).await;
        assert_eq!(code, Code::FailedPrecondition, "{door:?}: {message}");
        assert_eq!(message, REFUSED, "{door:?}");
        assert!(!message.contains(PK), "{door:?}: the value is never echoed");
    }
    // A channel ID as a JSON number: refused whatever the flags (litd would mangle it too).
    let number = request("AutoFees", r#"{"chan":812345678901234567}"#);
    for door in DOORS {
        let (code, message) = add(&env, door, &number).await;
        assert_eq!(code, Code::InvalidArgument, "{door:?}: {message}");
        assert!(
            message.starts_with("features.AutoFees.config: $.chan: a channel ID written as a JSON number"),
            "{door:?}: {message}"
        );
    }
    // litd saw at most litgate's authentication probe; nothing was registered or approved.
    assert_eq!(writable_adds(&env.litd), 0, "a writable add reached litd");
    assert!(env.autopilot.registrations().is_empty());
    assert_eq!(env.gate.store().approval_count(), 0);
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    for (reason, n) in [
        ("config_reveals_identifier", 5),
        ("config_numeric_channel_id", 5),
    ] {
        let line = format!(
            "litgate_autopilot_sessions_total{{outcome=\"refused\",reason=\"{reason}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    env.stop().await;
}

#[tokio::test]
async fn the_same_value_in_a_top_level_list_is_accepted_in_every_protocol() {
    let env = Env::start().await;
    let req = request("AutoFees", &listed());
    for (i, door) in DOORS.into_iter().enumerate() {
        let (code, message) = add(&env, door, &req).await;
        assert_eq!(code, Code::Ok, "{door:?}: {message}");
        assert_eq!(writable_adds(&env.litd), i + 1, "{door:?} reached litd");
    }
    // litd got the caller's config bytes unchanged, and registered them.
    for got in adds_received(&env.litd)
        .iter()
        .filter(|r| !r.features.is_empty())
    {
        assert_eq!(got.features["AutoFees"].config, listed().as_bytes());
    }
    let regs = env.autopilot.registrations();
    assert_eq!(regs.len(), DOORS.len());
    assert!(regs
        .iter()
        .all(|r| r.request.feature_configs["AutoFees"] == listed().as_bytes()));
    env.stop().await;
}
