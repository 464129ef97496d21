//! The AddAutopilotSession policy's own CPU work on a warm catalogue (issue: policy): decoding
//! the request, the request checks, and the decision against LiT's mock catalogue (rule bounds,
//! caps, privacy flags). The end-to-end comparison with a plain passthrough of the same call
//! is in `benches/load.sh`.
//!
//! `cargo bench --bench policy` (add `-- --quick` for a short run).

use std::{
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{criterion_group, criterion_main, Criterion};
use litgate::{
    autopilot::{policy::Policy, FeatureSet},
    config::{PrivacyConfig, RulesConfig},
    demo::mock_catalogue,
    proto::litrpc::{
        rule_value::Value, AddAutopilotSessionRequest, FeatureConfig, Rate, RateLimit, RuleValue,
        RulesMap,
    },
};
use prost::Message;

fn request() -> Vec<u8> {
    let rl = RuleValue {
        value: Some(Value::RateLimit(RateLimit {
            read_limit: Some(Rate {
                iterations: 10,
                num_hours: 1,
            }),
            write_limit: Some(Rate {
                iterations: 1,
                num_hours: 1,
            }),
        })),
    };
    let features = [
        (
            "AutoFees".to_string(),
            FeatureConfig {
                rules: None,
                config: b"{}".to_vec(),
            },
        ),
        (
            "HealthCheck".to_string(),
            FeatureConfig {
                rules: Some(RulesMap {
                    rules: [("rate-limit".to_string(), rl)].into(),
                }),
                config: b"{}".to_vec(),
            },
        ),
    ];
    AddAutopilotSessionRequest {
        label: "bench".into(),
        expiry_timestamp_seconds: (SystemTime::now() + Duration::from_secs(86400))
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        mailbox_server_addr: "mailbox.terminal.lightning.today:443".into(),
        features: features.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let policy = Policy::new(RulesConfig::default(), PrivacyConfig::default());
    // Parsed once, as litgate does when it fetches the catalogue.
    let catalogue = FeatureSet::new(mock_catalogue());
    let bytes = request();
    c.bench_function(
        "policy: decode + check + decide (2 features, warm catalogue)",
        |b| {
            b.iter(|| {
                let req = AddAutopilotSessionRequest::decode(black_box(bytes.as_slice()))
                    .expect("valid request");
                policy
                    .check_request(&req, SystemTime::now())
                    .expect("approved");
                black_box(policy.decide(&req, &catalogue, None).expect("approved"))
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
