//! Authentication before policy: a caller learns policy details only once litd has
//! authenticated its credential for AddAutopilotSession; everyone else gets exactly litd's own
//! answer; and nothing that could write reaches litd for a request the policy refuses. Checked
//! in gRPC, grpc-web (binary and text) and REST, against the same call made directly to litd.

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::{
    autopilot::auth::VERDICT_TTL,
    demo::MacaroonBaker,
    proto::litrpc::{AddAutopilotSessionRequest, FeatureConfig},
};
use prost::Message;

/// A request the policy refuses for a reason that names the catalogue: a feature the
/// Autopilot server does not offer.
fn refused_by_policy() -> AddAutopilotSessionRequest {
    autopilot_add("probe-me", &[("NoSuchFeature", "")])
}

#[derive(Clone, Copy, Debug)]
enum Door {
    Grpc,
    GrpcWeb,
    GrpcWebText,
    Rest,
}

const DOORS: [Door; 4] = [Door::Grpc, Door::GrpcWeb, Door::GrpcWebText, Door::Rest];

/// Sends `msg` through `door` to `base` (litgate or litd), with `mac` if any.
async fn call(
    door: Door,
    cert: &[u8],
    base: &str,
    msg: &AddAutopilotSessionRequest,
    mac: Option<&str>,
) -> Collected {
    let b64 = base64::engine::general_purpose::STANDARD;
    let frame = grpc_frame(msg);
    let (client, req) = match door {
        Door::Grpc => (
            h2_client(cert),
            grpc_request(&format!("{base}{ADD_AUTOPILOT}"), frame, mac),
        ),
        Door::GrpcWeb | Door::GrpcWebText => {
            let (ct, body) = match door {
                Door::GrpcWeb => ("application/grpc-web+proto", frame),
                _ => (
                    "application/grpc-web-text+proto",
                    Bytes::from(b64.encode(&frame)),
                ),
            };
            let mut b = http::Request::post(format!("{base}{ADD_AUTOPILOT}"))
                .header("content-type", ct)
                .header("x-grpc-web", "1");
            if let Some(m) = mac {
                b = b.header("macaroon", m);
            }
            (h1_client(cert), b.body(Full::new(body)).unwrap())
        }
        Door::Rest => {
            let mut b = http::Request::post(format!("{base}{REST_ADD_AUTOPILOT}"))
                .header("content-type", "application/json");
            if let Some(m) = mac {
                b = b.header("Grpc-Metadata-Macaroon", m);
            }
            let json = serde_json::to_string(msg).unwrap();
            (
                h1_client(cert),
                b.body(Full::new(Bytes::from(json))).unwrap(),
            )
        }
    };
    send(&client, req).await
}

/// The caller-visible parts of an answer: HTTP status, gRPC status and message (head,
/// trailers or grpc-web trailer frame), and the body for REST.
fn visible(door: Door, c: &Collected) -> (u16, Option<String>, Option<String>, Bytes) {
    match door {
        Door::Rest => (c.status.as_u16(), None, None, c.body.clone()),
        Door::Grpc => (
            c.status.as_u16(),
            c.grpc_status(),
            c.grpc_message(),
            c.body.clone(),
        ),
        Door::GrpcWeb | Door::GrpcWebText => {
            let body = match door {
                Door::GrpcWebText => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(&c.body)
                        .unwrap(),
                ),
                _ => c.body.clone(),
            };
            let mut status = c.grpc_status();
            let mut message = c.grpc_message();
            if status.is_none() {
                let block = frames(body.clone())
                    .into_iter()
                    .find(|(f, _)| f & 0x80 != 0)
                    .map(|(_, b)| trailer_block(&b))
                    .expect("trailer frame");
                let s = tonic::Status::from_header_map(&block).unwrap();
                status = Some((s.code() as i32).to_string());
                message = Some(s.message().to_string());
            }
            (c.status.as_u16(), status, message, Bytes::new())
        }
    }
}

#[tokio::test]
async fn unauthenticated_callers_get_litds_own_answer_in_every_protocol() {
    let env = Env::start().await;
    let litd_cert = env.litd.cert_pem().unwrap().to_vec();
    let gate = format!("https://{}", env.gate.public_addr);
    let direct = format!("https://{}", env.litd.addr());
    // No credential; a macaroon from another root key; a read-only macaroon (no autopilot:write).
    let forged = MacaroonBaker::new().bake_admin().to_hex();
    let readonly = env.litd.readonly_macaroon().to_hex();
    let msg = refused_by_policy();
    for door in DOORS {
        for mac in [None, Some(forged.as_str()), Some(readonly.as_str())] {
            env.litd.clear_received();
            let via = call(door, &env.gate_cert, &gate, &msg, mac).await;
            assert_eq!(adds_received(&env.litd).len(), 1, "{door:?}: one probe");
            assert_eq!(writable_adds(&env.litd), 0, "{door:?}: only the probe");
            let from_litd = call(door, &litd_cert, &direct, &msg, mac).await;
            let (v, d) = (visible(door, &via), visible(door, &from_litd));
            assert_ne!(d.1.as_deref(), Some("0"), "{door:?}: litd refused");
            assert_eq!(v, d, "{door:?} {mac:?}: litgate answered as litd does");
            let text = format!("{v:?}");
            assert!(
                !text.contains("NoSuchFeature") && !text.contains("catalogue"),
                "{door:?}: policy detail leaked: {text}"
            );
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn authenticated_callers_get_the_policy_and_the_verdict_is_remembered() {
    let env = Env::start().await;
    let gate = format!("https://{}", env.gate.public_addr);
    let mac = env.macaroon();
    let msg = refused_by_policy();
    for door in DOORS {
        let r = call(door, &env.gate_cert, &gate, &msg, Some(&mac)).await;
        let (_, status, message, body) = visible(door, &r);
        match door {
            Door::Rest => {
                assert_eq!(r.status, 400, "{r:?}");
                // grpc-gateway's shape, keys in its order.
                let text = String::from_utf8_lossy(&body);
                assert!(text.starts_with(r#"{"code":9,"message":""#), "{text}");
                assert!(text.ends_with(r#","details":[]}"#), "{text}");
                assert!(text.contains("NoSuchFeature"));
            }
            Door::Grpc => {
                assert_eq!(status.as_deref(), Some("9"), "{door:?}: {r:?}");
                let message = message.unwrap();
                assert!(message.contains("NoSuchFeature"));
                // Trailers-only, exactly as a tonic server writes the same status.
                let tonic_head = tonic::Status::failed_precondition(message).into_http::<()>();
                let mut ours = r.headers.clone();
                ours.remove("date");
                ours.remove("content-length");
                assert_eq!(&ours, tonic_head.headers());
            }
            _ => {
                assert_eq!(status.as_deref(), Some("9"), "{door:?}: {r:?}");
                assert!(message.unwrap().contains("NoSuchFeature"));
            }
        }
    }
    // One probe for the credential, whatever the protocol; nothing writable.
    let probes = adds_received(&env.litd);
    assert_eq!(probes.len(), 1, "the verdict is remembered across calls");
    assert_eq!(writable_adds(&env.litd), 0);

    // Past the verdict's lifetime litd is asked again.
    env.clock.advance(VERDICT_TTL + Duration::from_secs(1));
    let r = call(Door::Grpc, &env.gate_cert, &gate, &msg, Some(&mac)).await;
    assert_eq!(r.grpc_status().as_deref(), Some("9"));
    assert_eq!(adds_received(&env.litd).len(), 2);

    // An approved request goes to litd as approved, after the verdict.
    let mut ok = msg.clone();
    ok.features = [("HealthCheck".to_string(), FeatureConfig::default())].into();
    let r = call(Door::Grpc, &env.gate_cert, &gate, &ok, Some(&mac)).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
    assert_eq!(writable_adds(&env.litd), 1);
    let sent = adds_received(&env.litd).pop().unwrap();
    assert!(sent.privacy_flags_set, "flags written explicitly");
    assert_eq!(
        AddAutopilotSessionRequest::decode(grpc_frame(&sent).slice(5..))
            .unwrap()
            .label,
        "probe-me"
    );
    env.stop().await;
}
