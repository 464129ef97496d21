//! Feature configs and what the Autopilot server learns (issue 14). On the public face, a config
//! that would show the server a node identifier the session's flags keep private is refused
//! before litd in every protocol (gRPC, grpc-web binary and text, REST, grpc-websockets), with
//! the feature, the path and the kind named, while the same value in a top-level list of
//! strings (which litd replaces with a pseudonym) is accepted. At the relay, a leaking
//! `RegisterSession` never reaches the server, whoever sends it. The ledger, `/registrations`
//! and `litgate registrations` say what each registration showed the server.

mod common;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::proto::{
    autopilotserverrpc::RegisterSessionRequest,
    litrpc::{autopilot_client::AutopilotClient, AddAutopilotSessionRequest},
};
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
    autopilot_add("config-test", &[(feature, config)])
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
            message.starts_with(
                "features.AutoFees.config: $.chan: a channel ID written as a JSON number"
            ),
            "{door:?}: {message}"
        );
    }
    // litd saw at most litgate's authentication probe; nothing was registered or approved.
    assert_eq!(writable_adds(&env.litd), 0, "a writable add reached litd");
    assert!(env.autopilot.registrations().is_empty());
    assert_eq!(env.gate.approvals().len(), 0);
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

fn registration(key: u8, config: &str) -> RegisterSessionRequest {
    let mut responder_pub_key = vec![0x02];
    responder_pub_key.extend_from_slice(&[key; 32]);
    RegisterSessionRequest {
        responder_pub_key,
        mailbox_addr: "mailbox.example:443".into(),
        feature_configs: [("AutoFees".to_string(), config.as_bytes().to_vec())].into(),
        // AutoFees' own flags: ClearChanIDs | ClearTimeStamps.
        privacy_flags: 0x0c,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_leaking_registration_sent_to_the_relay_never_reaches_the_server() {
    let env = Env::start_relay("").await;
    let mut relay = relay_client(&env).await;
    let err = relay
        .register_session(registration(1, &leaking()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        format!("litgate refused the registration: {REFUSED}")
    );
    let err = relay
        .register_session(registration(2, r#"{"a":{"chan":812345678901234567}}"#))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("features.AutoFees.config: $.a.chan: a channel ID written as a JSON number"),
        "{err:?}"
    );
    assert_eq!(
        env.autopilot.count("RegisterSession"),
        0,
        "the server saw it"
    );
    assert!(env.gate.store().ledger().unwrap().is_empty());
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    for reason in ["config_reveals_identifier", "config_numeric_channel_id"] {
        let line = format!(
            "litgate_relay_config_checks_total{{outcome=\"refused\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }

    // The same pubkey in a top-level list of strings (where litd puts a pseudonym) is relayed.
    relay
        .register_session(registration(3, &listed()))
        .await
        .unwrap();
    assert_eq!(env.autopilot.registrations().len(), 1);
    let ledger = env.gate.store().ledger().unwrap();
    let sent = &ledger[0].configs["AutoFees"];
    assert_eq!(sent.pseudonyms.len(), 1);
    assert_eq!(sent.pseudonyms[0].path, "$.peers[0]");
    assert!(sent.in_clear.is_empty());
    env.stop().await;
}

#[tokio::test]
async fn a_client_going_around_the_public_face_is_stopped_at_the_relay() {
    let env = Env::start_relay("").await;
    // Straight to litd: litd accepts the config and registers it through the relay.
    let mut direct = AutopilotClient::new(env.litd_channel().await);
    let err = direct
        .add_autopilot_session(with_macaroon(&env, request("AutoFees", &leaking())))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("error registering session with autopilot server"),
        "{err:?}"
    );
    assert!(
        err.message()
            .contains("features.AutoFees.config: $.targets[0].peer: a node pubkey"),
        "{err:?}"
    );
    assert_eq!(env.autopilot.count("RegisterSession"), 0);
    assert!(env.gate.store().ledger().unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn a_trusted_feature_passes_both_faces_and_is_recorded() {
    let env = Env::start_relay("[privacy]\nskip_config_inspection = [\"AutoFees\"]\n").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    client
        .add_autopilot_session(with_macaroon(&env, request("AutoFees", &leaking())))
        .await
        .expect("a trusted feature's config is not inspected");
    // Another feature is still held to its flags.
    let err = client
        .add_autopilot_session(with_macaroon(&env, request("HealthCheck", &leaking())))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("features.HealthCheck.config: "),
        "{err:?}"
    );
    let entry = &env.gate.store().ledger().unwrap()[0];
    assert_eq!(entry.privacy_mapper, Some(true));
    let sent = &entry.configs["AutoFees"];
    assert!(sent.trusted);
    assert_eq!(sent.in_clear[0].path, "$.targets[0].peer");
    env.stop().await;
}

const CP: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3:1";

#[tokio::test]
async fn one_command_says_what_the_server_knows() {
    let env = Env::start_relay("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    // AutoFees' flags clear channel IDs: a scalar channel point is allowed and sent in clear;
    // the pubkey sits where litd puts a pseudonym.
    let config = format!(r#"{{"peers":["{PK}"],"chan":"{CP}","max_fee_ppm":500}}"#);
    let session = client
        .add_autopilot_session(with_macaroon(&env, request("AutoFees", &config)))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();

    let (status, body) = admin_get(&env.admin_uri("/registrations")).await;
    assert_eq!(status, 200);
    assert!(!body.contains(PK) && !body.contains(&CP[..64]), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reg = &json["registrations"][0];
    assert_eq!(reg["session_id"], hex::encode(&session.id));
    assert_eq!(
        reg["server_sees"],
        serde_json::json!(["channel IDs", "timestamps"])
    );
    assert_eq!(reg["privacy_mapper"], true);
    let sent = &reg["configs"]["AutoFees"];
    assert_eq!(sent["bytes"], config.len());
    assert_eq!(
        sent["in_clear"],
        serde_json::json!([{"path": "$.chan", "kind": "channel_point", "why": "ClearChanIDs"}])
    );
    assert_eq!(
        sent["pseudonyms"],
        serde_json::json!([{"path": "$.peers[0]", "kind": "pubkey"}])
    );

    let text = registrations_command(&env).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("SERVER SEES IN CLEAR"), "{text}");
    assert!(lines[1].ends_with("channel IDs, timestamps"), "{text}");
    let id = hex::encode(&session.id);
    assert!(
        lines.contains(
            &format!(
                "{id} AutoFees config, {} bytes: in clear $.chan (channel_point, ClearChanIDs); \
             pseudonyms $.peers[0] (pubkey)",
                config.len()
            )
            .as_str()
        ),
        "{text}"
    );
    assert!(!text.contains(PK) && !text.contains(&CP[..64]), "{text}");
    env.stop().await;
}

#[tokio::test]
async fn a_warn_only_relay_forwards_counts_and_records_the_leak() {
    let env = Env::start_relay("[privacy]\nrelay_config_check = \"warn\"\n").await;
    let mut relay = relay_client(&env).await;
    relay
        .register_session(registration(1, &leaking()))
        .await
        .expect("warn-only: forwarded");
    assert_eq!(env.autopilot.registrations().len(), 1);
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    let line = "litgate_relay_config_checks_total{outcome=\"warned\",reason=\"config_reveals_identifier\"} 1";
    assert!(metrics.contains(line), "{line}\n{metrics}");
    let entry = &env.gate.store().ledger().unwrap()[0];
    // Not approved by the public face: the mapper is not known, the flags are AutoFees' own.
    assert_eq!(entry.privacy_mapper, None);
    assert_eq!(
        entry.server_sees,
        ["channel IDs", "timestamps", "pubkey in the AutoFees config"]
    );
    assert_eq!(
        entry.configs["AutoFees"].in_clear[0].path,
        "$.targets[0].peer"
    );
    env.stop().await;
}
