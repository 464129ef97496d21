//! The policy's decisions on feature configs, against a catalogue snapshot (LiT's mock
//! catalogue, as the demo Autopilot server serves it, plus one feature that may ask for every
//! flag): the inspector's whole corpus through `Policy::decide`, then how the flags the policy
//! approves (defaults, explicit flags, no mapper) and `[privacy] skip_config_inspection` change
//! the answer.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tonic::Code;

use super::*;
use crate::{
    autopilot::feature_config::{
        corpus::{self, Outcome, CID, PK, SECRETS, TXID},
        Privacy as P,
    },
    proto::{autopilotserverrpc::Feature, litrpc::FeatureConfig},
};

/// A feature of the snapshot that may ask for every flag, so each corpus case can carry its
/// own flags.
const ANY_FLAGS: &str = corpus::FEATURE;

fn catalogue() -> HashMap<String, Feature> {
    let mut c = crate::demo::mock_catalogue();
    c.insert(
        ANY_FLAGS.into(),
        Feature {
            name: ANY_FLAGS.into(),
            privacy_flags: privacy::flags::KNOWN,
            ..Default::default()
        },
    );
    c
}

fn policy(privacy: PrivacyConfig) -> Policy {
    Policy::new(
        RulesConfig::default(),
        PrivacyConfig {
            allow_no_privacy_mapper: true,
            ..privacy
        },
    )
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A request for `features` (name, config), expiring in a day, with `flags` explicit when
/// given.
fn request(features: &[(&str, &[u8])], flags: Option<u64>) -> AddAutopilotSessionRequest {
    AddAutopilotSessionRequest {
        expiry_timestamp_seconds: 1_800_000_000 + 86_400,
        features: features
            .iter()
            .map(|(name, config)| {
                let config = FeatureConfig {
                    rules: None,
                    config: config.to_vec(),
                };
                (name.to_string(), config)
            })
            .collect(),
        privacy_flags: flags.unwrap_or(0),
        privacy_flags_set: flags.is_some(),
        ..Default::default()
    }
}

fn decide(p: &Policy, req: &AddAutopilotSessionRequest) -> Result<Decision, Refusal> {
    p.check_request(req, now())?;
    p.decide(req, &FeatureSet::new(catalogue()), None)
}

/// The refusal's label, code and message, for a refused request.
fn refused(p: &Policy, req: &AddAutopilotSessionRequest) -> (&'static str, Code, String) {
    let r = decide(p, req).expect_err("refused");
    (r.reason, r.error.code(), r.error.to_string())
}

#[test]
fn the_corpus_decides_the_public_face() {
    let p = policy(PrivacyConfig::default());
    let cases = corpus::corpus();
    assert!(cases.len() >= 40);
    for c in &cases {
        let name = c.name;
        let mut req = request(&[(ANY_FLAGS, &c.config)], None);
        match c.privacy {
            P::Mapper { flags } => {
                req.privacy_flags = flags;
                req.privacy_flags_set = true;
            }
            P::NoMapper => req.no_privacy_mapper = true,
        }
        match (&c.outcome, decide(&p, &req)) {
            (Outcome::Accept, Ok(d)) => {
                assert_eq!(d.privacy, c.privacy != P::NoMapper, "{name}");
                if let P::Mapper { flags } = c.privacy {
                    assert_eq!(d.write_flags, Some(flags), "{name}");
                }
            }
            (Outcome::Unparsed(why) | Outcome::Refused(why), Err(r)) => {
                let text = r.error.to_string();
                assert_eq!(r.reason, why.reason(), "{name}: {text}");
                let code = match why {
                    corpus::Why::Revealed(..) => Code::FailedPrecondition,
                    _ => Code::InvalidArgument,
                };
                assert_eq!(r.error.code(), code, "{name}");
                assert_eq!(r.error.kind(), "client", "{name}: the caller's fault");
                assert!(
                    text.starts_with(&format!("features.{ANY_FLAGS}.config: ")),
                    "{name}: {text}"
                );
                if let Some(path) = why.path() {
                    assert!(text.contains(path), "{name}: path named: {text}");
                }
                for secret in SECRETS {
                    assert!(!text.contains(secret), "{name}: value in message: {text}");
                }
            }
            (_, got) => panic!("{name}: unexpected decision {got:?}"),
        }
    }
}

fn pk_config(key: &str) -> Vec<u8> {
    format!(r#"{{"{key}":"{PK}"}}"#).into_bytes()
}

fn chan_point_config() -> Vec<u8> {
    format!(r#"{{"chan":"{TXID}:1"}}"#).into_bytes()
}

#[test]
fn configs_are_held_to_the_flags_the_policy_approves() {
    let p = policy(PrivacyConfig::default());
    let peer = pk_config("peer");
    let chan = chan_point_config();
    let peers = format!(r#"{{"peers":["{PK}"]}}"#).into_bytes();

    // Default flags: the features' union. AutoFees needs ClearChanIDs, not ClearPubkeys.
    assert!(decide(&p, &request(&[("AutoFees", &chan)], None)).is_ok());
    let (reason, code, text) = refused(&p, &request(&[("AutoFees", &peer)], None));
    assert_eq!(
        (reason, code),
        ("config_reveals_identifier", Code::FailedPrecondition)
    );
    assert!(
        text.starts_with(
            "features.AutoFees.config: $.peer: a node pubkey outside a top-level list of strings"
        ),
        "{text}"
    );
    assert!(
        text.contains("move it into one, or ask for privacy flag ClearPubkeys"),
        "{text}"
    );
    // The same value in a top-level list of strings: litd replaces it.
    assert!(decide(&p, &request(&[("AutoFees", &peers)], None)).is_ok());
    // A feature needing ClearPubkeys brings it into the union, for every feature's config.
    let both = request(&[("AutoFees", &peer), ("AutoOpen", b"{}")], None);
    assert_eq!(decide(&p, &both).unwrap().approved_flags, 0x8d);

    // Explicit flags narrower than the features': the config is held to them.
    let (_, _, text) = refused(&p, &request(&[("AutoFees", &chan)], Some(0x08)));
    assert!(
        text.starts_with("features.AutoFees.config: $.chan: a channel point"),
        "{text}"
    );
    assert!(text.contains("ClearChanIDs"), "{text}");

    // No privacy mapper (allowed here): everything is sent in clear, nothing is refused.
    let mut no_mapper = request(&[("HealthCheck", &peer)], None);
    no_mapper.no_privacy_mapper = true;
    assert!(!decide(&p, &no_mapper).unwrap().privacy);

    // A channel ID as a JSON number is refused whatever the flags.
    let number = format!(r#"{{"chan":{CID}}}"#).into_bytes();
    let (reason, code, text) = refused(&p, &request(&[("AutoFees", &number)], None));
    assert_eq!(
        (reason, code),
        ("config_numeric_channel_id", Code::InvalidArgument)
    );
    assert!(
        text.starts_with("features.AutoFees.config: $.chan: "),
        "{text}"
    );
}

#[test]
fn the_first_feature_by_name_is_named_and_every_config_is_read() {
    let p = policy(PrivacyConfig::default());
    let peer = pk_config("peer");
    let other = pk_config("who");
    let req = request(&[("HealthCheck", &peer), ("AutoFees", &other)], None);
    let (_, _, text) = refused(&p, &req);
    assert!(
        text.starts_with("features.AutoFees.config: $.who: "),
        "{text}"
    );
    // A clean first feature does not hide a leaking second one.
    let req = request(&[("AutoFees", b"{}"), ("HealthCheck", &peer)], None);
    let (_, _, text) = refused(&p, &req);
    assert!(
        text.starts_with("features.HealthCheck.config: $.peer: "),
        "{text}"
    );
}

#[test]
fn skipped_features_are_trusted_with_their_config() {
    let p = policy(PrivacyConfig {
        skip_config_inspection: vec!["AutoFees".into()],
        ..Default::default()
    });
    let peer = pk_config("peer");
    assert!(decide(&p, &request(&[("AutoFees", &peer)], None)).is_ok());
    assert!(decide(&p, &request(&[("AutoFees", b"[1]")], None)).is_ok());
    // Only that feature: another one's config is still held to the flags.
    let req = request(&[("AutoFees", &peer), ("HealthCheck", &peer)], None);
    let (_, _, text) = refused(&p, &req);
    assert!(text.starts_with("features.HealthCheck.config: "), "{text}");
}

#[test]
fn config_checks_come_after_the_flag_checks() {
    // A request refused for its flags is refused for them, whatever its config holds.
    let p = policy(PrivacyConfig {
        deny_clear: vec!["ClearNetworkAddresses".into()],
        ..Default::default()
    });
    let (reason, _, _) = refused(&p, &request(&[("AutoOpen", &pk_config("x"))], None));
    assert_eq!(reason, "denied_flag");
}

/// A HealthCheck/AutoFees/AutoOpen request with an explicit rate-limit on `feature`.
fn with_rate_limit(
    feature: &str,
    read: (u32, u32),
    write: (u32, u32),
) -> AddAutopilotSessionRequest {
    let mut req = request(&[(feature, b"{}")], None);
    let rate = |(iterations, num_hours)| {
        Some(Rate {
            iterations,
            num_hours,
        })
    };
    let value = RuleValue {
        value: Some(Value::RateLimit(RateLimit {
            read_limit: rate(read),
            write_limit: rate(write),
        })),
    };
    if let Some(fc) = req.features.get_mut(feature) {
        fc.rules = Some(crate::proto::litrpc::RulesMap {
            rules: HashMap::from([(RATE_LIMIT.to_string(), value)]),
        });
    }
    req
}

/// Bounds parsed once per catalogue decide as the server's JSON does when parsed for the call
/// (the oracle below parses the raw catalogue itself, as the policy used to on every call).
#[test]
fn parsed_bounds_decide_as_the_raw_catalogue_says() {
    let p = Policy::new(
        RulesConfig {
            rate_limit_read_max: crate::values::Rate {
                iterations: 1_000_000,
                num_hours: 1,
            },
            rate_limit_write_max: crate::values::Rate {
                iterations: 1_000_000,
                num_hours: 1,
            },
            ..Default::default()
        },
        PrivacyConfig {
            allow_no_privacy_mapper: true,
            ..Default::default()
        },
    );
    let raw = catalogue();
    let parsed = FeatureSet::new(raw.clone());
    let reads = [
        (1, 1),
        (1, 2),
        (10, 1),
        (1000, 1),
        (1001, 1),
        (2000, 2),
        (2001, 2),
    ];
    let writes = [(0, 1), (1, 1), (10, 1), (11, 1), (21, 2)];
    let (mut inside, mut outside) = (0, 0);
    for (name, feature) in &raw {
        let Some(rule) = feature.rules.get(RATE_LIMIT) else {
            continue;
        };
        let min = rules::from_json(RATE_LIMIT, &rule.min_value).unwrap();
        let max = rules::from_json(RATE_LIMIT, &rule.max_value).unwrap();
        for read in reads {
            for write in writes {
                let req = with_rate_limit(name, read, write);
                if p.check_request(&req, now()).is_err() {
                    continue;
                }
                let value = &req.features[name].rules.as_ref().unwrap().rules[RATE_LIMIT];
                let got = p.decide(&req, &parsed, None);
                match rules::check_sane(RATE_LIMIT, value, &min, &max) {
                    Ok(()) => {
                        inside += 1;
                        let d = got.unwrap_or_else(|r| panic!("{name} {read:?} {write:?}: {r:?}"));
                        assert!(!d.rate_limits.contains_key(name), "explicit: not rewritten");
                    }
                    Err(reason) => {
                        outside += 1;
                        let r = got.expect_err("out of bounds");
                        assert_eq!(r.reason, "rule_out_of_bounds", "{name} {read:?} {write:?}");
                        let text = r.error.to_string();
                        assert!(text.contains(&reason), "{text}");
                        let between = format!(
                            "Expected rule value between {} and {}.",
                            rules::to_json(RATE_LIMIT, &min).unwrap(),
                            rules::to_json(RATE_LIMIT, &max).unwrap()
                        );
                        assert!(text.contains(&between), "{text}");
                    }
                }
            }
        }
    }
    assert!(
        inside >= 10 && outside >= 10,
        "{inside} inside, {outside} outside"
    );
}

/// A value the server sent unreadable does not spoil the catalogue: only a call that needs it
/// is refused, naming it, as when every call parsed the bounds.
#[test]
fn an_unreadable_bound_refuses_only_the_calls_needing_it() {
    let p = policy(PrivacyConfig::default());
    let mut raw = catalogue();
    if let Some(rule) = raw
        .get_mut("HealthCheck")
        .and_then(|f| f.rules.get_mut(RATE_LIMIT))
    {
        rule.max_value = b"{not json".to_vec();
    }
    let parsed = FeatureSet::new(raw);
    let decide = |req: &AddAutopilotSessionRequest| {
        p.check_request(req, now()).unwrap();
        p.decide(req, &parsed, None)
    };
    assert!(decide(&request(&[("AutoFees", b"{}")], None)).is_ok());
    for req in [
        request(&[("HealthCheck", b"{}")], None),
        with_rate_limit("HealthCheck", (1, 1), (1, 1)),
    ] {
        let r = decide(&req).expect_err("needs the unreadable max");
        assert_eq!(
            (r.reason, r.error.code()),
            ("bad_catalogue", Code::Unavailable)
        );
        assert!(
            r.error
                .to_string()
                .contains("max_value for rate-limit of feature HealthCheck is unreadable"),
            "{}",
            r.error
        );
    }
}

/// The default rate-limit, parsed once, is still capped per policy: a cap below the server's
/// minimum refuses, a cap within its bounds is written.
#[test]
fn parsed_defaults_are_capped_by_the_policy_in_force() {
    let caps = |read: u32| RulesConfig {
        rate_limit_read_max: crate::values::Rate {
            iterations: read,
            num_hours: 1,
        },
        ..Default::default()
    };
    let parsed = FeatureSet::new(catalogue());
    let req = request(&[("HealthCheck", b"{}")], None);
    let low = Policy::new(caps(0), PrivacyConfig::default());
    let r = low
        .decide(&req, &parsed, None)
        .expect_err("cap below the min");
    assert_eq!(r.reason, "cap_below_server_min");
    let five = Policy::new(caps(5), PrivacyConfig::default());
    let d = five.decide(&req, &parsed, None).unwrap();
    let Some(Value::RateLimit(rl)) = &d.rate_limits["HealthCheck"].value else {
        panic!("a rate-limit: {d:?}");
    };
    assert_eq!(
        rl.read_limit,
        Some(Rate {
            iterations: 5,
            num_hours: 1
        })
    );
}
