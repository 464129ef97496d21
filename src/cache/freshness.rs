//! How long a list answer stays true: the earliest expiry of a session litd will move on by
//! itself (created or in use), read from the protobuf answer (only the two fields it needs) or
//! from grpc-gateway's protojson.

use bytes::Bytes;

use crate::grpc::{codec, Protocol};

/// The fields of `Session` that bound freshness; prost skips the rest (pairing secrets
/// included) without copying them out.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionFreshness {
    #[prost(int32, tag = "2")]
    session_state: i32,
    #[prost(uint64, tag = "4")]
    expiry_timestamp_seconds: u64,
}

/// `ListSessionsResponse` and `ListAutopilotSessionsResponse` (same shape: field 1, sessions).
#[derive(Clone, PartialEq, prost::Message)]
struct ListFreshness {
    #[prost(message, repeated, tag = "1")]
    sessions: Vec<SessionFreshness>,
}

/// Created (0) and InUse (1): the states litd will move on by itself at expiry.
fn is_active(state: i32) -> bool {
    state == 0 || state == 1
}

/// The earliest `expiry_timestamp_seconds` of a created/in-use session in an OK answer:
/// `Some(None)` when there is none, `None` when the answer cannot be decoded (then it is not
/// stored: litgate cannot tell how long it stays true).
pub(super) fn earliest_active_expiry(protocol: Protocol, body: &Bytes) -> Option<Option<u64>> {
    use prost::Message;
    let expiries: Vec<u64> = match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => {
            // Compressed, or not one message: not something litgate can vouch for.
            let msg = codec::answer_message(protocol, body)?;
            ListFreshness::decode(msg)
                .ok()?
                .sessions
                .into_iter()
                .filter(|s| is_active(s.session_state))
                .map(|s| s.expiry_timestamp_seconds)
                .collect()
        }
        Protocol::Rest => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            let sessions = match v.get("sessions") {
                None | Some(serde_json::Value::Null) => return Some(None),
                Some(serde_json::Value::Array(a)) => a,
                Some(_) => return None,
            };
            let mut out = Vec::new();
            for s in sessions {
                let field = |a: &str, b: &str| s.get(a).or_else(|| s.get(b));
                let state = match field("session_state", "sessionState") {
                    None => 0,
                    Some(serde_json::Value::Number(n)) => {
                        n.as_i64().and_then(|n| i32::try_from(n).ok())?
                    }
                    Some(serde_json::Value::String(name)) => match name.as_str() {
                        "STATE_CREATED" => 0,
                        "STATE_IN_USE" => 1,
                        "STATE_REVOKED" => 2,
                        "STATE_EXPIRED" => 3,
                        "STATE_RESERVED" => 4,
                        _ => return None,
                    },
                    Some(_) => return None,
                };
                if !is_active(state) {
                    continue;
                }
                let expiry = match field("expiry_timestamp_seconds", "expiryTimestampSeconds") {
                    None => 0,
                    Some(serde_json::Value::String(t)) => t.parse().ok()?,
                    Some(serde_json::Value::Number(n)) => n.as_u64()?,
                    Some(_) => return None,
                };
                out.push(expiry);
            }
            out
        }
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => return None,
    };
    // An expiry of 0 is "unset", not 1970.
    Some(expiries.into_iter().filter(|e| *e > 0).min())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::{
        grpc::{frame, web_text},
        proto::litrpc::{ListSessionsResponse, Session},
    };

    fn session(state: i32, expiry: u64) -> Session {
        Session {
            session_state: state,
            expiry_timestamp_seconds: expiry,
            ..Default::default()
        }
    }

    #[test]
    fn rest_and_grpc_family_freshness() {
        let json = br#"{"sessions":[
            {"session_state":"STATE_REVOKED","expiry_timestamp_seconds":"100"},
            {"session_state":"STATE_CREATED","expiry_timestamp_seconds":"500"},
            {"sessionState":"STATE_IN_USE","expiryTimestampSeconds":"300"}]}"#;
        assert_eq!(
            earliest_active_expiry(Protocol::Rest, &Bytes::from_static(json)),
            Some(Some(300))
        );
        assert_eq!(
            earliest_active_expiry(Protocol::Rest, &Bytes::from_static(b"{\"sessions\":[]}")),
            Some(None)
        );
        assert_eq!(
            earliest_active_expiry(Protocol::Rest, &Bytes::from_static(b"not json")),
            None
        );

        let msg = ListSessionsResponse {
            sessions: vec![session(0, 700), session(3, 10)],
        }
        .encode_to_vec();
        let trailer = frame::encode(frame::TRAILERS, b"grpc-status:0\r\ngrpc-message:\r\n");
        let web = Bytes::from([frame::message(&msg), trailer].concat());
        assert_eq!(
            earliest_active_expiry(Protocol::GrpcWeb, &web),
            Some(Some(700))
        );
        let text = web_text::encode(&web);
        assert_eq!(
            earliest_active_expiry(Protocol::GrpcWebText, &text),
            Some(Some(700))
        );
        // A compressed frame is not decoded, so not stored.
        let mut gz = frame::message(&msg).to_vec();
        gz[0] = 1;
        assert_eq!(
            earliest_active_expiry(Protocol::Grpc, &Bytes::from(gz)),
            None
        );
    }
}
