//! The session cache's stored entries, read back from disk (`cache::entry`: the clear header and
//! the answer's plaintext), and the freshness bound read from litd's list answers
//! (`cache::freshness`). Bytes on disk are outside input too: a damaged or foreign value must be
//! a miss, never a panic or an allocation its size does not warrant.
//!
//! Compiled as a child of `src/cache/entry.rs`, whose plaintext reader is private to it.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use proptest::{collection, prelude::*};
use prost::Message;

use super::{decode_answer, open, seal, EntryHeader, HEADER_LEN};
use crate::{
    cache::{crypto::CredentialKeys, freshness::earliest_active_expiry},
    fuzz::{bytes, config, mutation, wire::header_map},
    grpc::{frame, header_block, status::Answer, web_text, Protocol},
    proto::litrpc::{ListSessionsResponse, Session},
};

/// Fewest bytes one header takes in the plaintext: name length (2), a one-byte name, value
/// length (4).
const MIN_HEADER_BYTES: usize = 7;

fn answer() -> impl Strategy<Value = Answer> {
    (
        100u16..1000,
        header_map(),
        bytes(64),
        proptest::option::of(header_map()),
    )
        .prop_map(|(status, headers, body, trailers)| Answer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(body),
            trailers,
        })
}

/// A session as litd lists it: any state (known or not), any expiry (0 is unset).
fn sessions() -> impl Strategy<Value = Vec<(i32, u64)>> {
    collection::vec(
        (
            prop_oneof![4 => 0i32..5, 1 => any::<i32>()],
            prop_oneof![1 => Just(0u64), 3 => any::<u64>()],
        ),
        0..6,
    )
}

/// The earliest set expiry of a created or in-use session.
fn model(sessions: &[(i32, u64)]) -> Option<u64> {
    sessions
        .iter()
        .filter(|(s, e)| (*s == 0 || *s == 1) && *e > 0)
        .map(|(_, e)| *e)
        .min()
}

/// A REST list answer as grpc-gateway may write it: either field name, states by name or by
/// number, 64-bit expiries as strings or numbers.
fn rest_json(sessions: &[(i32, u64)], style: &[(bool, bool, bool)]) -> Vec<u8> {
    const NAMES: [&str; 5] = [
        "STATE_CREATED",
        "STATE_IN_USE",
        "STATE_REVOKED",
        "STATE_EXPIRED",
        "STATE_RESERVED",
    ];
    let list: Vec<serde_json::Value> = sessions
        .iter()
        .enumerate()
        .map(|(i, (state, expiry))| {
            let (camel, state_name, expiry_string) = style.get(i).copied().unwrap_or_default();
            let state = match usize::try_from(*state).ok().and_then(|s| NAMES.get(s)) {
                Some(name) if state_name => serde_json::json!(name),
                _ => serde_json::json!(state),
            };
            let expiry = if expiry_string {
                serde_json::json!(expiry.to_string())
            } else {
                serde_json::json!(expiry)
            };
            let (s, e) = if camel {
                ("sessionState", "expiryTimestampSeconds")
            } else {
                ("session_state", "expiry_timestamp_seconds")
            };
            serde_json::json!({ s: state, e: expiry, "label": "x" })
        })
        .collect();
    serde_json::json!({ "sessions": list })
        .to_string()
        .into_bytes()
}

/// An answer's plaintext encoding, as the entry seals it.
fn encoded(stored_at: u64, a: &Answer) -> Vec<u8> {
    let mut out = Vec::new();
    super::encode_answer(&mut out, stored_at, a);
    out
}

/// `value` opened under `keys` for `key`, by a replay budget of its own: every open decrypts
/// (no plaintext shared with an earlier one), so damage to the value is always seen.
fn opened(keys: &CredentialKeys, key: &[u8], value: &[u8]) -> Option<Answer> {
    use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
    let replays = super::super::replay::Replays::new(
        usize::MAX,
        Gauge::default(),
        Counter::default(),
        Counter::default(),
    );
    open(keys, key, value, &replays).ok()
}

proptest! {
    #![proptest_config(config())]

    /// An answer stored and read back is the answer stored.
    #[test]
    fn stored_answers_round_trip(a in answer(), stored_at in any::<u64>()) {
        let plain = encoded(stored_at, &a);
        prop_assert_eq!(decode_answer(Bytes::from(plain)), Some(a));
    }

    /// Any plaintext, and any damage to a valid one, is an answer or a miss; an answer read
    /// is what its own encoding reads as, and holds no more headers than its bytes can.
    #[test]
    fn any_plaintext_is_an_answer_or_a_miss(
        input in prop_oneof![
            (answer(), mutation()).prop_map(|(a, m)| m.apply(&encoded(7, &a))),
            bytes(96),
        ],
    ) {
        if let Some(a) = decode_answer(Bytes::from(input.clone())) {
            let count = a.headers.len() + a.trailers.as_ref().map_or(0, HeaderMap::len);
            prop_assert!(count * MIN_HEADER_BYTES <= input.len());
            prop_assert_eq!(decode_answer(Bytes::from(encoded(7, &a))), Some(a));
        }
    }

    /// A stored value opens, under the key and credential that sealed it, as the answer
    /// sealed; any damage to it (header, nonce, ciphertext, length), another entry key or
    /// another credential is a miss.
    #[test]
    fn sealed_entries_open_only_as_sealed(
        a in answer(),
        damage in mutation(),
        key in bytes(16),
        other_key in bytes(16),
        fresh in any::<u64>(),
    ) {
        let keys = CredentialKeys::derive(b"salt", b"0201credential");
        let header = EntryHeader { generation: 1, fresh_until: fresh, hard_until: u64::MAX };
        let stored = seal(&keys, &key, &header, 5, &a);
        prop_assert_eq!(opened(&keys, &key, &stored), Some(a.clone()));
        let damaged = damage.apply(&stored);
        let expected = (damaged == stored).then(|| a.clone());
        prop_assert_eq!(opened(&keys, &key, &damaged), expected);
        if other_key != key {
            prop_assert_eq!(opened(&keys, &other_key, &stored), None);
        }
        let other = CredentialKeys::derive(b"salt", b"0201credentiak");
        prop_assert_eq!(opened(&other, &key, &stored), None);
        prop_assert_eq!(opened(&keys, &key, &stored[..stored.len().min(HEADER_LEN + 27)]), None);
    }

    /// The clear header reads back as written; any value too short or of another layout
    /// version is not an entry.
    #[test]
    fn entry_headers_round_trip(g in any::<u64>(), f in any::<u64>(), h in any::<u64>(), input in bytes(40)) {
        let header = EntryHeader { generation: g, fresh_until: f, hard_until: h };
        prop_assert_eq!(EntryHeader::parse(&header.encode()), Some(header));
        let parsed = EntryHeader::parse(&input);
        prop_assert_eq!(parsed.is_some(), input.len() >= HEADER_LEN && input[0] == 1);
    }

    /// The freshness bound is the same whichever protocol carried the list: gRPC, grpc-web
    /// (binary and text) and REST in any of grpc-gateway's spellings.
    #[test]
    fn freshness_agrees_across_protocols(
        sessions in sessions(),
        style in collection::vec(any::<(bool, bool, bool)>(), 6),
    ) {
        let expected = Some(model(&sessions));
        let msg = ListSessionsResponse {
            sessions: sessions
                .iter()
                .map(|&(session_state, expiry_timestamp_seconds)| Session {
                    session_state,
                    expiry_timestamp_seconds,
                    label: "x".into(),
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec();
        let grpc = frame::message(&msg);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let web = Bytes::from([grpc.to_vec(), header_block::frame(&trailers).to_vec()].concat());
        prop_assert_eq!(earliest_active_expiry(Protocol::Grpc, &grpc), expected);
        prop_assert_eq!(earliest_active_expiry(Protocol::GrpcWeb, &web), expected);
        prop_assert_eq!(earliest_active_expiry(Protocol::GrpcWebText, &web_text::encode(&web)), expected);
        let rest = Bytes::from(rest_json(&sessions, &style));
        prop_assert_eq!(earliest_active_expiry(Protocol::Rest, &rest), expected);
    }

    /// Any answer body, in any protocol, gives a bound or "cannot tell", never a panic.
    #[test]
    fn freshness_of_any_bytes(input in bytes(96), json in crate::fuzz::wire::json_object()) {
        for p in [Protocol::Grpc, Protocol::GrpcWeb, Protocol::GrpcWebText, Protocol::Rest, Protocol::Http] {
            let _ = earliest_active_expiry(p, &Bytes::from(input.clone()));
        }
        let body = Bytes::from(serde_json::Value::Object(json).to_string());
        let _ = earliest_active_expiry(Protocol::Rest, &body);
    }
}

/// A plaintext claiming 65,535 headers in a dozen bytes: a miss, without reserving room for
/// the claim (`HeaderMap::with_capacity` panics beyond 24,576, and allocates whatever it is
/// asked for below that).
#[test]
fn regression_header_count_claim_is_bounded_by_the_bytes() {
    let mut plain = vec![0u8; 8];
    plain.extend_from_slice(&200u16.to_be_bytes());
    plain.push(1);
    plain.extend_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(decode_answer(Bytes::from(plain)), None);
}

/// A plaintext that holds the 30,000 headers it claims: more than a `HeaderMap` can reserve
/// room for, so a miss (no answer litd sent can have that many).
#[test]
fn regression_more_headers_than_a_map_holds_is_a_miss() {
    let n: u16 = 30_000;
    let mut plain = vec![0u8; 8];
    plain.extend_from_slice(&200u16.to_be_bytes());
    plain.push(1);
    plain.extend_from_slice(&n.to_be_bytes());
    for i in 0..n {
        let name = format!("h{i}");
        plain.extend_from_slice(&(name.len() as u16).to_be_bytes());
        plain.extend_from_slice(name.as_bytes());
        plain.extend_from_slice(&0u32.to_be_bytes());
    }
    plain.extend_from_slice(&0u32.to_be_bytes());
    plain.push(0);
    assert_eq!(decode_answer(Bytes::from(plain)), None);
}
