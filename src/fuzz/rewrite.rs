//! The rewrite of an approved `AddAutopilotSession` request (`autopilot::rewrite`): the
//! protobuf patch appended to the caller's bytes, and the in-place edit of a REST caller's JSON.
//! Both take the caller's bytes as they came; what litd decodes from the result must be the
//! caller's request with the decision applied, and nothing litgate does not understand lost.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::{collection, prelude::*};
use prost::Message;
use serde_json::Value;

use super::{bytes, config, mutation, wire::json_object};
use crate::{
    autopilot::{policy::Decision, rewrite, rules::RATE_LIMIT},
    proto::litrpc::{
        rule_value, AddAutopilotSessionRequest, FeatureConfig, HistoryLimit, Rate, RateLimit,
        RuleValue, RulesMap,
    },
};

/// A `map<string, Message>` entry with its value as raw bytes (what is on the wire).
#[derive(Clone, PartialEq, prost::Message)]
struct RawEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The features map (field 5) as raw entries.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFeatures {
    #[prost(message, repeated, tag = "5")]
    features: Vec<RawEntry>,
}

/// Fields a newer client may send that litgate's protos do not have: varints and
/// length-delimited values under numbers past the known ones.
fn unknown_fields() -> impl Strategy<Value = Vec<u8>> {
    collection::vec(
        (
            11u32..5000,
            prop_oneof![any::<u64>().prop_map(Ok), bytes(12).prop_map(Err)],
        ),
        0..3,
    )
    .prop_map(|fields| {
        let mut out = Vec::new();
        for (tag, v) in fields {
            match v {
                Ok(n) => {
                    prost::encoding::encode_key(tag, prost::encoding::WireType::Varint, &mut out);
                    prost::encoding::encode_varint(n, &mut out);
                }
                Err(b) => prost::encoding::bytes::encode(tag, &b, &mut out),
            }
        }
        out
    })
}

fn rate() -> impl Strategy<Value = Option<Rate>> {
    proptest::option::of(
        (any::<u32>(), any::<u32>()).prop_map(|(iterations, num_hours)| Rate {
            iterations,
            num_hours,
        }),
    )
}

fn rate_limit() -> impl Strategy<Value = RuleValue> {
    (rate(), rate()).prop_map(|(read_limit, write_limit)| RuleValue {
        value: Some(rule_value::Value::RateLimit(RateLimit {
            read_limit,
            write_limit,
        })),
    })
}

fn rule_value() -> impl Strategy<Value = RuleValue> {
    prop_oneof![
        rate_limit(),
        (any::<u64>(), any::<u64>()).prop_map(|(start_time, duration)| RuleValue {
            value: Some(rule_value::Value::HistoryLimit(HistoryLimit {
                start_time,
                duration
            })),
        }),
        Just(RuleValue { value: None }),
    ]
}

fn feature_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("AutoFees".to_string()),
        Just("HealthCheck".to_string()),
        "[A-Za-z]{1,6}"
    ]
}

/// A caller's `FeatureConfig`, as bytes: its rules (a `rate-limit` among them or not), its
/// config, and fields litgate does not know.
fn feature_config() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::of(collection::hash_map(
            prop_oneof![Just(RATE_LIMIT.to_string()), "[a-z-]{1,8}"],
            rule_value(),
            0..3,
        )),
        bytes(8),
        unknown_fields(),
    )
        .prop_map(|(rules, config, unknown)| {
            let mut b = FeatureConfig {
                rules: rules.map(|rules| RulesMap { rules }),
                config,
            }
            .encode_to_vec();
            b.extend(unknown);
            b
        })
}

/// A caller's request as bytes: known fields, a features map (a key may repeat: the last
/// entry wins), and unknown fields before and after.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        "\\PC{0,8}",
        any::<u64>(),
        any::<bool>(),
        collection::vec((feature_name(), feature_config()), 0..4),
        unknown_fields(),
        unknown_fields(),
    )
        .prop_map(|(label, flags, set, features, before, after)| {
            let known = AddAutopilotSessionRequest {
                label,
                privacy_flags: flags % 4,
                privacy_flags_set: set,
                ..Default::default()
            };
            let features = RawFeatures {
                features: features
                    .into_iter()
                    .map(|(key, value)| RawEntry { key, value })
                    .collect(),
            };
            [
                before,
                known.encode_to_vec(),
                features.encode_to_vec(),
                after,
            ]
            .concat()
        })
}

fn decision() -> impl Strategy<Value = Decision> {
    (
        proptest::option::of(0u64..4),
        collection::btree_map(feature_name(), rate_limit(), 0..3),
    )
        .prop_map(|(write_flags, rate_limits)| Decision {
            write_flags,
            approved_flags: write_flags.unwrap_or(0),
            features: rate_limits.keys().cloned().collect(),
            rate_limits,
            privacy: write_flags.is_some(),
        })
}

/// Whether field 5 (features) appears under a wire type other than length-delimited before
/// the bytes stop being well-formed fields. protobuf-go (litd) refuses such a message; prost
/// decodes map fields without checking the wire type.
fn features_under_a_wrong_wire_type(orig: &[u8]) -> bool {
    use prost::encoding::{decode_key, skip_field, DecodeContext, WireType};
    let mut buf = orig;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        if tag == 5 && wire_type != WireType::LengthDelimited {
            return true;
        }
        if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            return false;
        }
    }
    false
}

/// Whether the decision changes anything for a caller whose request says `set`/`flags`.
fn changes(d: &Decision, set: bool, flags: u64) -> Option<u64> {
    d.write_flags.filter(|f| !(set && flags == *f))
}

/// What litd must decode from the rewritten bytes: the caller's request, flags written,
/// each capped feature's rules with its `rate-limit` entry replaced.
fn expected(req: &AddAutopilotSessionRequest, d: &Decision) -> AddAutopilotSessionRequest {
    let mut want = req.clone();
    if let Some(f) = changes(d, req.privacy_flags_set, req.privacy_flags) {
        want.privacy_flags = f;
        want.privacy_flags_set = true;
    }
    for (feature, value) in &d.rate_limits {
        want.features
            .entry(feature.clone())
            .or_default()
            .rules
            .get_or_insert_with(Default::default)
            .rules
            .insert(RATE_LIMIT.to_string(), value.clone());
    }
    want
}

proptest! {
    #![proptest_config(config())]

    /// The patch: the caller's bytes come first and untouched (unknown fields included), litd
    /// decodes exactly the request with the decision applied, and each replaced feature entry
    /// carries the caller's own `FeatureConfig` bytes first.
    #[test]
    fn the_patch_is_what_prost_decodes(orig in request(), d in decision()) {
        let orig = Bytes::from(orig);
        let req = AddAutopilotSessionRequest::decode(orig.clone()).unwrap();
        let out = rewrite::proto(&orig, &req, &d).unwrap();
        let Some(out) = out else {
            prop_assert!(changes(&d, req.privacy_flags_set, req.privacy_flags).is_none() && d.rate_limits.is_empty());
            return Ok(());
        };
        prop_assert!(out.starts_with(&orig));
        prop_assert_eq!(AddAutopilotSessionRequest::decode(out.clone()).unwrap(), expected(&req, &d));
        let last: HashMap<String, Vec<u8>> = RawFeatures::decode(orig.clone())
            .unwrap()
            .features
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        let patch = RawFeatures::decode(out.slice(orig.len()..)).unwrap();
        prop_assert_eq!(patch.features.len(), d.rate_limits.len());
        for e in patch.features {
            let caller = last.get(&e.key).map(Vec::as_slice).unwrap_or_default();
            prop_assert!(e.value.starts_with(caller), "the caller's FeatureConfig bytes come first");
        }
    }

    /// Any bytes, and any damage to a valid request: the rewrite never panics; when the
    /// caller's bytes are a valid request, the rewrite succeeds and is what prost decodes. (The
    /// one refusal of bytes prost decodes: features under a wrong wire type, see
    /// `regression_features_under_a_wrong_wire_type_are_refused`.)
    #[test]
    fn any_request_bytes_are_patched_or_refused(
        orig in prop_oneof![
            (request(), mutation()).prop_map(|(r, m)| m.apply(&r)),
            bytes(64),
        ],
        d in decision(),
    ) {
        let orig = Bytes::from(orig);
        match AddAutopilotSessionRequest::decode(orig.clone()) {
            Ok(req) => match rewrite::proto(&orig, &req, &d) {
                Ok(Some(out)) => {
                    prop_assert!(out.starts_with(&orig));
                    prop_assert_eq!(AddAutopilotSessionRequest::decode(out).unwrap(), expected(&req, &d));
                }
                Ok(None) => {}
                Err(e) => prop_assert!(features_under_a_wrong_wire_type(&orig), "{}", e),
            },
            Err(_) => {
                let _ = rewrite::proto(&orig, &AddAutopilotSessionRequest::default(), &d);
            }
        }
    }

    /// The JSON edit: keys litgate does not know stay as they were; flags are written under one
    /// spelling; each capped feature gets its `rate-limit` rule and keeps its other content.
    #[test]
    fn the_json_edit_keeps_what_it_does_not_own(
        mut obj in json_object(),
        features in proptest::option::of(prop_oneof![
            json_object().prop_map(Value::Object),
            collection::btree_map(feature_name(), json_object().prop_map(Value::Object), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            Just(Value::Null),
        ]),
        flags in proptest::option::of(prop_oneof![Just(("privacyFlags", "privacyFlagsSet")), Just(("privacy_flags", "privacy_flags_set"))]),
        set in any::<bool>(),
        existing in 0u64..4,
        d in decision(),
    ) {
        if let Some(f) = features {
            obj.insert("features".into(), f);
        }
        if let Some((f, s)) = flags {
            obj.insert(f.into(), Value::String(existing.to_string()));
            obj.insert(s.into(), Value::Bool(set));
        }
        let req = AddAutopilotSessionRequest {
            privacy_flags: existing,
            privacy_flags_set: set,
            ..Default::default()
        };
        let Some(out) = rewrite::json(obj.clone(), &req, &d).unwrap() else {
            prop_assert!(changes(&d, set, existing).is_none() && d.rate_limits.is_empty());
            return Ok(());
        };
        let flag_keys = ["privacyFlags", "privacyFlagsSet", "privacy_flags", "privacy_flags_set"];
        let written = changes(&d, set, existing);
        for (k, v) in &obj {
            let owned = (written.is_some() && flag_keys.contains(&k.as_str()))
                || (k == "features" && !d.rate_limits.is_empty());
            if !owned {
                prop_assert_eq!(out.get(k), Some(v), "key {} changed", k);
            }
        }
        if let Some(f) = written {
            prop_assert_eq!(&out["privacy_flags"], &Value::String(f.to_string()));
            prop_assert_eq!(&out["privacy_flags_set"], &Value::Bool(true));
            prop_assert!(!out.contains_key("privacyFlags") && !out.contains_key("privacyFlagsSet"));
        }
        if d.rate_limits.is_empty() {
            return Ok(());
        }
        let empty = serde_json::Map::new();
        let before = obj.get("features").and_then(Value::as_object).unwrap_or(&empty);
        let after = out["features"].as_object().unwrap();
        for (k, v) in before {
            if !d.rate_limits.contains_key(k) {
                prop_assert_eq!(after.get(k), Some(v));
            }
        }
        for (feature, value) in &d.rate_limits {
            let fc = after[feature].as_object().unwrap();
            let rules = fc["rules"].as_object().unwrap();
            let inner = rules["rules"].as_object().unwrap();
            prop_assert_eq!(&inner[RATE_LIMIT], &serde_json::to_value(value).unwrap());
            let old_fc = before.get(feature).and_then(Value::as_object).unwrap_or(&empty);
            for (k, v) in old_fc.iter().filter(|(k, _)| *k != "rules") {
                prop_assert_eq!(fc.get(k), Some(v));
            }
            let old_rules = old_fc.get("rules").and_then(Value::as_object).unwrap_or(&empty);
            for (k, v) in old_rules.iter().filter(|(k, _)| *k != "rules") {
                prop_assert_eq!(rules.get(k), Some(v));
            }
            let old_inner = old_rules.get("rules").and_then(Value::as_object).unwrap_or(&empty);
            for (k, v) in old_inner.iter().filter(|(k, _)| *k != RATE_LIMIT) {
                prop_assert_eq!(inner.get(k), Some(v));
            }
        }
    }
}

/// Found by `any_request_bytes_are_patched_or_refused` (50,000 cases): prost decodes a map field
/// without checking its wire type, so `features` sent as a varint (key `0x28`) decodes as a map
/// entry, while protobuf-go, litd's decoder, refuses the whole message. The rewrite reads the
/// features strictly and refuses it as malformed (the caller gets INVALID_ARGUMENT); when
/// nothing is to be written the bytes go to litd as they came, and litd refuses them.
#[test]
fn regression_features_under_a_wrong_wire_type_are_refused() {
    let orig = Bytes::from_static(&[0x28, 0x00]);
    let req = AddAutopilotSessionRequest::decode(orig.clone()).unwrap();
    assert_eq!(req.features.len(), 1, "prost reads the varint as an entry");
    assert!(features_under_a_wrong_wire_type(&orig));
    let limits = Decision {
        write_flags: None,
        approved_flags: 0,
        rate_limits: [("AutoFees".to_string(), RuleValue::default())].into(),
        features: vec!["AutoFees".into()],
        privacy: false,
    };
    assert!(matches!(
        rewrite::proto(&orig, &req, &limits),
        Err(rewrite::RewriteError::Malformed(_))
    ));
}
