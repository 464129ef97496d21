//! The inspector's tests: the corpus (`corpus.rs`), each config with the findings expected
//! from `inspect` and the decision expected from `check`, run through one checker; then
//! property tests against an independent transcription of litd's obfuscator rules.

use proptest::{collection, prelude::*};
use serde_json::Value;

use super::{corpus::*, *};

fn check_refusal(name: &str, why: &Why, got: &ConfigRefusal) {
    match (why, got) {
        (Why::Malformed, ConfigRefusal::Malformed { .. }) => {}
        (Why::NotAnObject(t, text), ConfigRefusal::NotAnObject { found }) => {
            assert_eq!(t, found, "{name}");
            assert_eq!(got.to_string(), *text, "{name}: litd's own text");
        }
        (Why::TooDeep(prefix), ConfigRefusal::TooDeep { path }) => {
            assert!(path.to_string().starts_with(prefix), "{name}: {path}");
            assert_eq!(path.segments().len(), MAX_DEPTH, "{name}");
        }
        (Why::Duplicate(p), ConfigRefusal::DuplicateKey { path })
        | (Why::Mixed(p), ConfigRefusal::MixedList { path })
        | (Why::Number(p), ConfigRefusal::NumericChannelId { path, .. }) => {
            assert_eq!(path.to_string(), *p, "{name}")
        }
        (
            Why::Revealed(p, k, s),
            ConfigRefusal::Revealed {
                path, kind, shape, ..
            },
        ) => {
            assert_eq!(
                (path.to_string().as_str(), kind, shape),
                (*p, k, s),
                "{name}"
            );
            let text = got.to_string();
            assert!(text.contains(&k.to_string()), "{name}: kind named: {text}");
            assert!(
                text.contains(k.clear_flag_name()),
                "{name}: flag named: {text}"
            );
            assert!(
                text.contains("top-level list of strings"),
                "{name}: fix: {text}"
            );
        }
        _ => panic!("{name}: expected another refusal, got {got:?}"),
    }
    assert_eq!(got.reason(), why.reason(), "{name}: metric label");
    let text = got.to_string();
    if let Some(p) = why.path() {
        assert!(text.contains(p), "{name}: path named: {text}");
    }
    for secret in SECRETS {
        assert!(!text.contains(secret), "{name}: value in message: {text}");
    }
}

fn check_findings(name: &str, expected: &Found, got: &[Finding]) {
    match expected {
        Found::List(list) => {
            let got: Vec<(String, Kind, Shape, Fate)> = got
                .iter()
                .map(|f| (f.path.to_string(), f.kind, f.shape, f.fate))
                .collect();
            let want: Vec<(String, Kind, Shape, Fate)> = list
                .iter()
                .map(|(p, k, s, f)| (p.to_string(), *k, *s, *f))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        Found::Many(n, kind, shape, fate) => {
            assert_eq!(got.len(), *n, "{name}");
            assert!(
                got.iter()
                    .all(|f| (f.kind, f.shape, f.fate) == (*kind, *shape, *fate)),
                "{name}"
            );
        }
    }
}

#[test]
fn corpus_findings_and_decisions() {
    let cases = corpus();
    assert!(cases.len() >= 40);
    for c in &cases {
        let name = c.name;
        let inspected = inspect(&c.config, c.privacy);
        let decided = check_feature(FEATURE, &c.config, c.privacy);
        // The one-call form agrees with the two-step form.
        assert_eq!(
            decided.as_ref().map_err(|e| &e.reason),
            inspected
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|i| i.check())
                .as_ref(),
            "{name}"
        );
        match &c.outcome {
            Unparsed(why) => {
                let err = inspected.expect_err(name);
                check_refusal(name, why, &err);
            }
            Accept => {
                let inspection = inspected.unwrap_or_else(|e| panic!("{name}: {e}"));
                check_findings(name, &c.found, inspection.findings());
                let disclosure = decided.unwrap_or_else(|e| panic!("{name}: {e}"));
                let in_clear: Vec<&Finding> = inspection
                    .findings()
                    .iter()
                    .filter(|f| f.fate.in_clear())
                    .collect();
                assert_eq!(
                    disclosure.in_clear.iter().collect::<Vec<_>>(),
                    in_clear,
                    "{name}"
                );
                assert_eq!(
                    disclosure.replaced.len() + disclosure.in_clear.len(),
                    inspection.findings().len(),
                    "{name}"
                );
                let mut kinds: Vec<Kind> = in_clear.iter().map(|f| f.kind).collect();
                kinds.sort();
                kinds.dedup();
                assert_eq!(disclosure.kinds_in_clear, kinds, "{name}");
                continue;
            }
            Refused(why) => {
                let inspection = inspected.unwrap_or_else(|e| panic!("{name}: {e}"));
                check_findings(name, &c.found, inspection.findings());
                check_refusal(name, why, &inspection.check().expect_err(name));
            }
        }
        let err = decided.expect_err(name);
        assert_eq!(err.feature, FEATURE, "{name}");
        assert!(
            err.to_string()
                .starts_with("features.peer-watcher.config: "),
            "{name}"
        );
    }
}

#[test]
fn refusals_count_the_values_after_the_first() {
    let config = expand(r#"{"a":"@PK@","b":{"c":"@CP@"},"d":@CID@}"#);
    let err = check_feature(FEATURE, &config, FULL).unwrap_err();
    assert!(
        matches!(err.reason, ConfigRefusal::Revealed { others: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().ends_with("(2 more such values follow)"),
        "{err}"
    );
}

#[test]
fn disclosure_lists_what_the_server_sees() {
    let config = expand(r#"{"peers":["@PK@"],"peer":"@PK3@","chans":["@CP@"],"s":"@SCID@"}"#);
    let d = check_feature(FEATURE, &config, BOTH_CLEAR).unwrap();
    assert!(d.replaced.is_empty());
    assert_eq!(d.kinds_in_clear, vec![Pubkey, ChannelPoint, ShortChannelId]);

    let config = expand(r#"{"peers":["@PK@"],"chans":["@CP@"],"who":"@PK3@"}"#);
    let d = check_feature(FEATURE, &config, PUBKEYS_CLEAR).unwrap();
    let replaced: Vec<String> = d.replaced.iter().map(ToString::to_string).collect();
    assert_eq!(replaced, ["$.chans[0]"]);
    let clear: Vec<String> = d.in_clear.iter().map(|f| f.path.to_string()).collect();
    assert_eq!(clear, ["$.peers[0]", "$.who"]);
    assert_eq!(d.kinds_in_clear, vec![Pubkey]);
}

#[test]
fn flag_bits_follow_litds_numbering() {
    assert_eq!(Pubkey.clear_flag(), CLEAR_PUBKEYS_BIT);
    for kind in [ChannelPoint, ChannelId, ShortChannelId] {
        assert_eq!(kind.clear_flag(), CLEAR_CHAN_IDS_BIT);
        assert_eq!(kind.clear_flag_name(), "ClearChanIDs");
    }
    assert_eq!(Pubkey.clear_flag_name(), "ClearPubkeys");
}

// --- properties ---

/// litd's obfuscator rules, transcribed independently from its Go source for the oracle.
fn litd_oracle(s: &str) -> Option<Kind> {
    let v = s.trim_matches(char::is_whitespace);
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() == 2 && parts[1].parse::<i64>().is_ok() && parts[0].len() == 64 {
        return Some(ChannelPoint);
    }
    if v.len() == 66 && hex::decode(v).is_ok() {
        return Some(Pubkey);
    }
    if v.parse::<i64>().is_ok() && (13..=20).contains(&v.len()) {
        return Some(ChannelId);
    }
    None
}

/// Strings near and on litd's rules, plus anything printable.
fn config_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t\n\u{a0}\u{2003}]{0,2}(02|03)[0-9a-fA-F]{64}[ \t\n]{0,2}",
        "[0-9a-fA-F]{65,67}",
        "[0-9a-f]{64}:[+-]?[0-9]{1,12}",
        ".{64}:[0-9]{1,3}(:[0-9])?",
        "[ ]?[+-]?[0-9]{11,21}[ ]?",
        "[0-9]{1,9}x[0-9]{1,9}x[0-9]{1,6}",
        "[a-z]{0,3}[@/:]?(02|03)[0-9a-f]{64}[@/:]?[a-z]{0,3}",
        "\\PC{0,40}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        config_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            collection::btree_map(config_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn privacy() -> impl Strategy<Value = Privacy> {
    prop_oneof![
        Just(Privacy::NoMapper),
        (0u64..256).prop_map(|flags| Privacy::Mapper { flags }),
        any::<u64>().prop_map(|flags| Privacy::Mapper { flags }),
    ]
}

fn strings_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_in(v, out)
        }),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in collection::vec(any::<u8>(), 0..300), p in privacy()) {
        let _ = check_feature(FEATURE, &bytes, p);
    }

    #[test]
    fn never_panics_on_json(value in json_value(), p in privacy()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = check_feature(FEATURE, &bytes, p);
    }

    /// Every string litd's rules would rewrite in a top-level list of strings is reported as
    /// replaced, unless the flags clear its kind; no other string in such a list is.
    #[test]
    fn litd_rewrites_are_reported_replaced(
        lists in collection::btree_map("[a-z]{1,8}", collection::vec(config_string(), 1..6), 1..4),
        flags in 0u64..256,
    ) {
        let object: serde_json::Map<String, Value> = lists
            .iter()
            .map(|(k, items)| (k.clone(), Value::from(items.clone())))
            .collect();
        let bytes = serde_json::to_vec(&object).unwrap();
        let inspection = inspect(&bytes, Privacy::Mapper { flags }).unwrap();
        for (key, items) in &lists {
            for (i, s) in items.iter().enumerate() {
                let at: Vec<&Finding> = inspection
                    .findings()
                    .iter()
                    .filter(|f| matches!(
                        f.path.segments(),
                        [Segment::Key { name, .. }, Segment::Index(j)] if **name == **key && *j == i
                    ))
                    .collect();
                let replaced = at.iter().any(|f| f.fate == Fate::Replaced);
                match litd_oracle(s) {
                    Some(kind) if flags & kind.clear_flag() == 0 => {
                        prop_assert!(replaced, "{s:?} not replaced: {at:?}");
                        prop_assert_eq!(at.len(), 1);
                        prop_assert_eq!((at[0].kind, at[0].shape), (kind, Shape::Whole));
                    }
                    Some(kind) => {
                        prop_assert_eq!(at.len(), 1);
                        prop_assert_eq!((at[0].kind, at[0].fate), (kind, Fate::ClearByFlag));
                    }
                    None => prop_assert!(!replaced, "{s:?} replaced: {at:?}"),
                }
            }
        }
    }

    /// Refusals and paths never carry a value litd's rules would take for an identifier.
    #[test]
    fn messages_never_hold_identifiers(value in json_value(), p in privacy()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let mut texts: Vec<String> = Vec::new();
        match check_feature(FEATURE, &bytes, p) {
            Err(e) => texts.push(e.to_string()),
            Ok(d) => {
                texts.extend(d.in_clear.iter().map(|f| f.path.to_string()));
                texts.extend(d.replaced.iter().map(ToString::to_string));
            }
        }
        let mut strings = Vec::new();
        strings_in(&value, &mut strings);
        for s in strings.iter().filter(|s| litd_oracle(s).is_some()) {
            for text in &texts {
                prop_assert!(!text.contains(s.trim()), "{s:?} in {text}");
            }
        }
    }
}
