//! Writing the policy's decision into an approved AddAutopilotSession request without losing
//! what litgate does not understand. The caller's bytes are never re-encoded:
//!
//! - protobuf: a patch is **appended** to the caller's message (protobuf merge: the last value
//!   of a scalar wins, messages merge, and a map entry with the same key replaces the earlier
//!   one), so unknown fields a newer client sent reach litd untouched. The patch is encoded by
//!   prost from the structs below; the features map is read with its values kept as raw bytes,
//!   so a replaced entry carries the caller's `FeatureConfig` bytes with the rule appended;
//! - REST JSON: the caller's object is edited in place; unknown keys stay.
//!
//! Pure: no I/O; the handler (`add_session.rs`) calls it.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;

use super::{policy::Decision, rules::RATE_LIMIT};
use crate::proto::litrpc::{AddAutopilotSessionRequest, FeatureConfig, RulesMap};

/// Why a request could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The caller's protobuf does not decode as the features map.
    #[error("{0}")]
    Malformed(#[from] prost::DecodeError),
    /// A rule value has no JSON form.
    #[error("encoding a rule value as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One entry of a `map<string, Message>` with its value kept as the bytes on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct RawEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// `AddAutopilotSessionRequest.features` (field 5) as raw entries; every other field is skipped
/// when decoding.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFeatures {
    #[prost(message, repeated, tag = "5")]
    features: Vec<RawEntry>,
}

/// What is appended to the caller's `AddAutopilotSessionRequest`: replaced `features` entries,
/// and the privacy flags written explicitly (present even when 0).
#[derive(Clone, PartialEq, prost::Message)]
struct Patch {
    #[prost(message, repeated, tag = "5")]
    features: Vec<RawEntry>,
    #[prost(uint64, optional, tag = "9")]
    privacy_flags: Option<u64>,
    #[prost(bool, optional, tag = "10")]
    privacy_flags_set: Option<bool>,
}

/// The flags to write: the decision's, unless the caller already set exactly those.
fn flags_to_write(msg: &AddAutopilotSessionRequest, d: &Decision) -> Option<u64> {
    d.write_flags
        .filter(|f| !(msg.privacy_flags_set && msg.privacy_flags == *f))
}

/// The caller's protobuf bytes with the decision appended; `None` when nothing changes.
pub fn proto(
    orig: &Bytes,
    msg: &AddAutopilotSessionRequest,
    d: &Decision,
) -> Result<Option<Bytes>, RewriteError> {
    let flags = flags_to_write(msg, d);
    if flags.is_none() && d.rate_limits.is_empty() {
        return Ok(None);
    }
    let mut patch = Patch {
        features: Vec::new(),
        privacy_flags: flags,
        privacy_flags_set: flags.map(|_| true),
    };
    if !d.rate_limits.is_empty() {
        // The last entry per key is the one every decoder keeps.
        let originals: HashMap<String, Bytes> = RawFeatures::decode(orig.clone())?
            .features
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        for (feature, value) in &d.rate_limits {
            // The caller's FeatureConfig with the rule appended: messages merge, and inside
            // RulesMap the `rate-limit` entry replaces any earlier one.
            let mut v = originals
                .get(feature)
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let rule = FeatureConfig {
                rules: Some(RulesMap {
                    rules: HashMap::from([(RATE_LIMIT.to_string(), value.clone())]),
                }),
                config: Vec::new(),
            };
            v.extend_from_slice(&rule.encode_to_vec());
            patch.features.push(RawEntry {
                key: feature.clone(),
                value: Bytes::from(v),
            });
        }
    }
    let mut out = orig.to_vec();
    out.extend_from_slice(&patch.encode_to_vec());
    Ok(Some(Bytes::from(out)))
}

/// The caller's JSON object edited in place; `None` when nothing changes.
pub fn json(
    mut obj: serde_json::Map<String, serde_json::Value>,
    msg: &AddAutopilotSessionRequest,
    d: &Decision,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, RewriteError> {
    use serde_json::Value;
    let flags = flags_to_write(msg, d);
    if flags.is_none() && d.rate_limits.is_empty() {
        return Ok(None);
    }
    if let Some(f) = flags {
        // protojson accepts both names; keeping both would be a duplicate field.
        obj.remove("privacyFlags");
        obj.remove("privacyFlagsSet");
        obj.insert("privacy_flags".into(), Value::String(f.to_string()));
        obj.insert("privacy_flags_set".into(), Value::Bool(true));
    }
    for (feature, value) in &d.rate_limits {
        let rule = serde_json::to_value(value)?;
        let features = object_at(&mut obj, "features");
        let fc = object_at(features, feature);
        let rules = object_at(fc, "rules");
        let inner = object_at(rules, "rules");
        inner.insert(RATE_LIMIT.into(), rule);
    }
    Ok(Some(obj))
}

/// The object under `key`, created (or replacing a JSON null) if absent.
fn object_at<'a>(
    obj: &'a mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, serde_json::Value> {
    let slot = obj
        .entry(key.to_string())
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !slot.is_object() {
        *slot = serde_json::Value::Object(Default::default());
    }
    match slot {
        serde_json::Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!("slot is an object"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::proto::litrpc::{rule_value::Value, Rate, RateLimit, RuleValue};

    fn rate_limit(reads: u32) -> RuleValue {
        let rate = |iterations| {
            Some(Rate {
                iterations,
                num_hours: 1,
            })
        };
        RuleValue {
            value: Some(Value::RateLimit(RateLimit {
                read_limit: rate(reads),
                write_limit: rate(1),
            })),
        }
    }

    fn decision(flags: Option<u64>, limits: &[(&str, RuleValue)]) -> Decision {
        Decision {
            write_flags: flags,
            approved_flags: flags.unwrap_or(0),
            rate_limits: limits
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            features: limits.iter().map(|(k, _)| k.to_string()).collect(),
            privacy: flags.is_some(),
        }
    }

    /// A request as a newer client might send it: a field litgate does not know (number 99)
    /// at the top level and inside the feature's config.
    fn with_unknown_fields() -> (AddAutopilotSessionRequest, Bytes) {
        let mut req = AddAutopilotSessionRequest::default();
        req.features.insert(
            "AutoFees".into(),
            FeatureConfig {
                rules: None,
                config: b"{}".to_vec(),
            },
        );
        let mut bytes = req.encode_to_vec();
        // Field 99, length-delimited, "new!".
        bytes.extend_from_slice(&[0x9a, 0x06, 4, b'n', b'e', b'w', b'!']);
        (req, Bytes::from(bytes))
    }

    #[test]
    fn the_patch_merges_and_unknown_fields_survive() {
        let (req, bytes) = with_unknown_fields();
        let d = decision(Some(0), &[("AutoFees", rate_limit(10))]);
        let out = proto(&bytes, &req, &d).unwrap().unwrap();
        assert!(
            out.starts_with(&bytes),
            "the caller's bytes come first, untouched"
        );
        let decoded = AddAutopilotSessionRequest::decode(out.clone()).unwrap();
        assert!(decoded.privacy_flags_set);
        assert_eq!(decoded.privacy_flags, 0, "flags written even when 0");
        let fc = &decoded.features["AutoFees"];
        assert_eq!(fc.config, b"{}", "the caller's FeatureConfig merged");
        assert_eq!(fc.rules.as_ref().unwrap().rules[RATE_LIMIT], rate_limit(10));
        let keys: HashSet<String> = RawFeatures::decode(out)
            .unwrap()
            .features
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, HashSet::from(["AutoFees".to_string()]));
    }

    #[test]
    fn the_last_entry_per_key_is_the_one_patched() {
        let (req, bytes) = with_unknown_fields();
        let later = FeatureConfig {
            rules: None,
            config: b"{\"later\":1}".to_vec(),
        };
        let mut twice = bytes.to_vec();
        twice.extend_from_slice(
            &RawFeatures {
                features: vec![RawEntry {
                    key: "AutoFees".into(),
                    value: Bytes::from(later.encode_to_vec()),
                }],
            }
            .encode_to_vec(),
        );
        let out = proto(
            &Bytes::from(twice),
            &req,
            &decision(None, &[("AutoFees", rate_limit(5))]),
        )
        .unwrap()
        .unwrap();
        let decoded = AddAutopilotSessionRequest::decode(out).unwrap();
        assert_eq!(decoded.features["AutoFees"].config, b"{\"later\":1}");
        assert!(!decoded.privacy_flags_set, "no mapper: no flags written");
    }

    #[test]
    fn nothing_to_change_and_malformed_input() {
        let (mut req, bytes) = with_unknown_fields();
        req.privacy_flags_set = true;
        req.privacy_flags = 4;
        assert!(proto(&bytes, &req, &decision(Some(4), &[]))
            .unwrap()
            .is_none());
        let truncated = Bytes::from_static(&[0x2a, 0x05, 0x01]);
        assert!(matches!(
            proto(&truncated, &req, &decision(None, &[("A", rate_limit(1))])),
            Err(RewriteError::Malformed(_))
        ));
    }
}
