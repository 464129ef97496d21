//! AddAutopilotSession policy (issue: catalogue, rules, RateLimit caps and privacy flags, in
//! every protocol). Every refusal is checked in gRPC and in another protocol, with the status,
//! the message, and that the fake litd received nothing; approvals are checked by what litd
//! received.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::proto::litrpc::{
    rule_value::Value, AddAutopilotSessionRequest, ChannelPolicyBounds, FeatureConfig, Rate,
    RateLimit, RuleValue, RulesMap,
};
use prost::Message;

const ADD: &str = "/litrpc.Autopilot/AddAutopilotSession";
const REST_ADD: &str = "/v1/autopilot/sessions";

fn in_hours(h: u64) -> u64 {
    (SystemTime::now() + Duration::from_secs(h * 3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rate_limit(ri: u32, rh: u32, wi: u32, wh: u32) -> RuleValue {
    RuleValue {
        value: Some(Value::RateLimit(RateLimit {
            read_limit: Some(Rate {
                iterations: ri,
                num_hours: rh,
            }),
            write_limit: Some(Rate {
                iterations: wi,
                num_hours: wh,
            }),
        })),
    }
}

fn feature(rules: &[(&str, RuleValue)]) -> FeatureConfig {
    FeatureConfig {
        rules: Some(RulesMap {
            rules: rules
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }),
        config: b"{}".to_vec(),
    }
}

fn request(features: &[(&str, FeatureConfig)]) -> AddAutopilotSessionRequest {
    AddAutopilotSessionRequest {
        label: "policy-test".into(),
        expiry_timestamp_seconds: in_hours(24),
        mailbox_server_addr: "mailbox.example:443".into(),
        features: features
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// Sends `msg` as gRPC and returns (grpc-status, message).
async fn grpc(env: &Env, body: Bytes) -> Collected {
    send(
        &h2_client(&env.gate_cert),
        grpc_request(
            &env.gate_uri(ADD),
            grpc_frame_raw(&body),
            Some(&env.macaroon()),
        ),
    )
    .await
}

fn grpc_frame_raw(msg: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(msg.len() + 5);
    b.push(0);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    Bytes::from(b)
}

async fn rest(env: &Env, json: &serde_json::Value) -> Collected {
    let req = http::Request::post(env.gate_uri(REST_ADD))
        .header("Grpc-Metadata-Macaroon", env.macaroon())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap();
    send(&h1_client(&env.gate_cert), req).await
}

async fn grpc_web(env: &Env, msg: &[u8]) -> Collected {
    let req = http::Request::post(env.gate_uri(ADD))
        .header("content-type", "application/grpc-web+proto")
        .header("macaroon", env.macaroon())
        .body(Full::new(grpc_frame_raw(msg)))
        .unwrap();
    send(&h1_client(&env.gate_cert), req).await
}

fn to_json(req: &AddAutopilotSessionRequest) -> serde_json::Value {
    serde_json::to_value(req).unwrap()
}

/// Nothing that can write reached litd: at most litgate's authentication probe (an
/// AddAutopilotSession without features, which litd refuses before writing).
fn nothing_reached_litd(env: &Env) {
    assert_eq!(writable_adds(&env.litd), 0, "litd received a writable add");
    assert!(
        env.autopilot.registrations().is_empty(),
        "a session was registered"
    );
}

/// Each case: a request, the gRPC code, and a piece of the message.
fn refusal_cases() -> Vec<(
    &'static str,
    AddAutopilotSessionRequest,
    tonic::Code,
    &'static str,
)> {
    use tonic::Code::*;
    let ok_rl = rate_limit(10, 1, 1, 1);
    let mut cases = vec![
        (
            "empty features",
            request(&[]),
            InvalidArgument,
            "features: must include at least one feature",
        ),
        (
            "unknown feature",
            request(&[("AutoMagic", feature(&[]))]),
            FailedPrecondition,
            "AutoMagic is not a feature provided",
        ),
    ];
    let mut past = request(&[("HealthCheck", feature(&[]))]);
    past.expiry_timestamp_seconds = 1_000;
    cases.push((
        "expiry in the past",
        past,
        InvalidArgument,
        "expiry_timestamp_seconds: 1000 is not in the future",
    ));
    let mut far = request(&[("HealthCheck", feature(&[]))]);
    far.expiry_timestamp_seconds = in_hours(24 * 365);
    cases.push((
        "expiry too far",
        far,
        FailedPrecondition,
        "beyond [autopilot.rules] max_expiry",
    ));
    let mut gid = request(&[("HealthCheck", feature(&[]))]);
    gid.linked_group_id = vec![1, 2, 3];
    cases.push((
        "group id length",
        gid,
        InvalidArgument,
        "linked_group_id: must be empty or exactly 4 bytes, got 3",
    ));
    cases.push((
        "unknown rule",
        request(&[(
            "HealthCheck",
            feature(&[("off-chain-budget", ok_rl.clone())]),
        )]),
        InvalidArgument,
        "unknown rule off-chain-budget",
    ));
    let wrong = RuleValue {
        value: Some(Value::ChanPolicyBounds(ChannelPolicyBounds::default())),
    };
    cases.push((
        "wrong variant",
        request(&[("HealthCheck", feature(&[("rate-limit", wrong.clone())]))]),
        InvalidArgument,
        "incorrect RuleValue type",
    ));
    cases.push((
        "rule not listed",
        request(&[("HealthCheck", feature(&[("channel-policy-bounds", wrong)]))]),
        FailedPrecondition,
        "autopilot did not specify channel-policy-bounds as a rule for feature HealthCheck",
    ));
    cases.push((
        "above server max",
        request(&[(
            "HealthCheck",
            feature(&[("rate-limit", rate_limit(10, 1, 11, 1))]),
        )]),
        FailedPrecondition,
        "write limit is not between the min and max",
    ));
    cases.push((
        "NaN rate",
        request(&[(
            "HealthCheck",
            feature(&[("rate-limit", rate_limit(0, 0, 1, 1))]),
        )]),
        InvalidArgument,
        "read_limit.num_hours must be positive",
    ));
    cases.push((
        "zero hours",
        request(&[(
            "HealthCheck",
            feature(&[("rate-limit", rate_limit(10, 1, 1, 0))]),
        )]),
        InvalidArgument,
        "write_limit.num_hours must be positive",
    ));
    let missing = RuleValue {
        value: Some(Value::RateLimit(RateLimit {
            read_limit: Some(Rate {
                iterations: 10,
                num_hours: 1,
            }),
            write_limit: None,
        })),
    };
    cases.push((
        "missing write_limit",
        request(&[("HealthCheck", feature(&[("rate-limit", missing)]))]),
        InvalidArgument,
        "write_limit is missing",
    ));
    let mut session_rules = request(&[("HealthCheck", feature(&[]))]);
    session_rules.session_rules = Some(RulesMap {
        rules: HashMap::from([("rate-limit".to_string(), ok_rl.clone())]),
    });
    cases.push((
        "session_rules",
        session_rules,
        InvalidArgument,
        "session_rules: litd ignores top-level session rules",
    ));
    let mut both = request(&[("HealthCheck", feature(&[]))]);
    both.no_privacy_mapper = true;
    both.privacy_flags_set = true;
    cases.push((
        "flags without mapper",
        both,
        InvalidArgument,
        "privacy flags can only be set when the privacy mapper is enabled",
    ));
    let mut unknown_bits = request(&[("HealthCheck", feature(&[]))]);
    unknown_bits.privacy_flags_set = true;
    unknown_bits.privacy_flags = 1 << 9;
    cases.push((
        "unknown flag bits",
        unknown_bits,
        InvalidArgument,
        "privacy_flags: unknown privacy flag bit 9",
    ));
    let mut no_mapper = request(&[("HealthCheck", feature(&[]))]);
    no_mapper.no_privacy_mapper = true;
    cases.push((
        "no privacy mapper",
        no_mapper,
        FailedPrecondition,
        "allow_no_privacy_mapper = false",
    ));
    cases.push((
        "above the operator cap",
        request(&[("HealthCheck", feature(&[("rate-limit", rate_limit(500, 1, 1, 1))]))]),
        FailedPrecondition,
        "read limit 500 per 1h is above the operator's cap [autopilot.rules] rate_limit_read_max = 100 per 1h",
    ));
    cases.push((
        "denied flag",
        request(&[("AutoOpen", feature(&[]))]),
        FailedPrecondition,
        "features: AutoOpen needs ClearNetworkAddresses, which [privacy] deny_clear forbids",
    ));
    let mut extra_flags = request(&[("AutoFees", feature(&[]))]);
    extra_flags.privacy_flags_set = true;
    extra_flags.privacy_flags = 0x04 | 0x01;
    cases.push((
        "flags not a subset",
        extra_flags,
        FailedPrecondition,
        "privacy_flags: ClearPubkeys asks for less privacy than the requested features need (ClearChanIDs|ClearTimeStamps)",
    ));
    cases
}

const POLICY: &str =
    "[autopilot.rules]\nrate_limit_read_max = { iterations = 100, num_hours = 1 }\n\
                      [privacy]\ndeny_clear = [\"ClearNetworkAddresses\"]\n";

#[tokio::test]
async fn every_refusal_in_grpc_and_rest_reaches_nothing() {
    let env = Env::start_with(POLICY).await;
    for (name, req, code, text) in refusal_cases() {
        let r = grpc(&env, Bytes::from(req.encode_to_vec())).await;
        assert_eq!(
            r.grpc_status(),
            Some((code as i32).to_string()),
            "{name}: {r:?}"
        );
        let msg = r.grpc_message().unwrap();
        assert!(msg.contains(text), "{name}: {msg}");

        let r = rest(&env, &to_json(&req)).await;
        let json = r.json();
        assert_eq!(json["code"], code as i32, "{name} (REST): {json}");
        assert_eq!(
            r.status.as_u16(),
            litgate::error::http_status(code).as_u16(),
            "{name}"
        );
        assert!(
            json["message"].as_str().unwrap().contains(text),
            "{name} (REST): {json}"
        );
        assert_eq!(json["details"], serde_json::json!([]));
        nothing_reached_litd(&env);
    }
    assert!(env.gate.approvals().is_empty(), "nothing stored");
    env.stop().await;
}

#[tokio::test]
async fn refusals_in_grpc_web_and_bad_encodings() {
    let env = Env::start_with(POLICY).await;
    for (name, req, code, text) in refusal_cases().into_iter().take(4) {
        let r = grpc_web(&env, &req.encode_to_vec()).await;
        assert_eq!(
            r.grpc_status(),
            Some((code as i32).to_string()),
            "{name}: {r:?}"
        );
        assert!(r.grpc_message().unwrap().contains(text), "{name}");
    }
    // A compressed frame cannot be checked: refused, never forwarded unchecked.
    let mut framed =
        grpc_frame_raw(&request(&[("HealthCheck", feature(&[]))]).encode_to_vec()).to_vec();
    framed[0] = 1;
    let r = send(
        &h2_client(&env.gate_cert),
        grpc_request(
            &env.gate_uri(ADD),
            Bytes::from(framed),
            Some(&env.macaroon()),
        ),
    )
    .await;
    assert_eq!(r.grpc_status().as_deref(), Some("12"));
    assert!(r.grpc_message().unwrap().contains("compressed"));
    // Malformed protobuf and malformed JSON.
    let r = grpc(&env, Bytes::from_static(&[0x2a, 0x09, 0x01])).await;
    assert_eq!(r.grpc_status().as_deref(), Some("3"));
    assert!(
        r.grpc_message()
            .unwrap()
            .starts_with("malformed AddAutopilotSessionRequest"),
        "{r:?}"
    );
    let req = http::Request::post(env.gate_uri(REST_ADD))
        .header("Grpc-Metadata-Macaroon", env.macaroon())
        .body(Full::new(Bytes::from_static(b"{\"features\": ")))
        .unwrap();
    let r = send(&h1_client(&env.gate_cert), req).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    nothing_reached_litd(&env);
    env.stop().await;
}

fn received_request(env: &Env) -> (Bytes, AddAutopilotSessionRequest) {
    let rec = env.litd.received();
    let r = rec
        .iter()
        .rev()
        .find(|r| r.path == ADD)
        .expect("litd received the request");
    let payload = frames(r.body.clone()).remove(0).1;
    (
        payload.clone(),
        AddAutopilotSessionRequest::decode(payload).unwrap(),
    )
}

#[tokio::test]
async fn approved_grpc_request_is_completed_and_keeps_unknown_fields() {
    // The relay on (litd going around it), so the approval is recorded and stays.
    let env = Env::start_relay_bypassed(
        "[autopilot.rules]\nrate_limit_read_max = { iterations = 5, num_hours = 1 }\n",
    )
    .await;
    let req = request(&[
        ("AutoFees", feature(&[])),
        (
            "HealthCheck",
            feature(&[("rate-limit", rate_limit(2, 1, 1, 1))]),
        ),
    ]);
    let mut bytes = req.encode_to_vec();
    // A field from a newer client (number 99, varint 7) that prost does not know.
    bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
    let r = grpc(&env, Bytes::from(bytes)).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");

    let (payload, got) = received_request(&env);
    assert!(
        payload.windows(3).any(|w| w == [0x98, 0x06, 0x07]),
        "unknown field dropped"
    );
    assert!(got.privacy_flags_set);
    assert_eq!(
        got.privacy_flags,
        0x04 | 0x08,
        "union of the features' flags, explicit"
    );
    // AutoFees left rate-limit unset: the server default (read 10/h) capped to 5/h, explicit.
    let fees = got.features["AutoFees"].rules.as_ref().unwrap();
    assert_eq!(fees.rules["rate-limit"], rate_limit(5, 1, 1, 1));
    assert_eq!(
        got.features["AutoFees"].config, b"{}",
        "the caller's config survives the patch"
    );
    // HealthCheck's own value was within the caps: untouched.
    assert_eq!(
        got.features["HealthCheck"].rules.as_ref().unwrap().rules["rate-limit"],
        rate_limit(2, 1, 1, 1)
    );
    let rec = env.litd.received();
    assert_eq!(
        rec.iter()
            .rev()
            .find(|r| r.path == ADD)
            .unwrap()
            .macaroon
            .as_deref(),
        Some(env.macaroon().as_str())
    );

    let regs = env.autopilot.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].request.privacy_flags, 0x04 | 0x08);
    assert_eq!(env.gate.approvals().len(), 1);
    let approvals = env
        .gate
        .approvals()
        .approvals_for(&["AutoFees".into(), "HealthCheck".into()], 0);
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].1.features, ["AutoFees", "HealthCheck"]);
    assert_eq!(approvals[0].1.privacy_flags, 0x0c);
    env.stop().await;
}

/// The benchmarks' baseline (`benches/load.sh`, `--mode add-alias`): the fake litd's alias of
/// AddAutopilotSession is a path litgate does not know, so it is forwarded as a drop-in
/// would, byte for byte and without the policy, while the real path still gets the policy.
/// If this breaks, the benchmark's "add vs add-alias" stops measuring the policy.
#[tokio::test]
async fn bench_alias_passes_through_unchanged_and_the_real_path_keeps_the_policy() {
    use litgate::demo::litd::BENCH_ADD_ALIAS;
    let env = Env::start_bench_alias().await;
    let alias_call = |body: Bytes| {
        let client = h2_client(&env.gate_cert);
        let req = grpc_request(
            &env.gate_uri(BENCH_ADD_ALIAS),
            grpc_frame_raw(&body),
            Some(&env.macaroon()),
        );
        async move { send(&client, req).await }
    };
    let sent = Bytes::from(request(&[("HealthCheck", feature(&[]))]).encode_to_vec());

    // The alias: litd gets the caller's bytes and credential as sent; litd answers.
    let r = alias_call(sent.clone()).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
    let answer = litgate::proto::litrpc::AddAutopilotSessionResponse::decode(
        frames(r.body.clone()).remove(0).1,
    )
    .unwrap();
    assert_eq!(answer.session.unwrap().label, "policy-test");
    let rec = env.litd.received();
    let at_alias: Vec<_> = rec.iter().filter(|r| r.path == BENCH_ADD_ALIAS).collect();
    assert_eq!(at_alias.len(), 1, "{rec:?}");
    assert_eq!(
        at_alias[0].body,
        grpc_frame_raw(&sent),
        "forwarded unchanged"
    );
    assert_eq!(
        at_alias[0].macaroon.as_deref(),
        Some(env.macaroon().as_str())
    );
    assert_eq!(env.litd.count(ADD), 0, "no authentication probe, no policy");
    let approved = || async {
        let (_, text) = admin_get(&env.admin_uri("/metrics")).await;
        metric_labelled(
            &text,
            "litgate_autopilot_sessions_total",
            "outcome=\"approved\"",
        )
    };
    assert_eq!(approved().await, 0.0, "not decided");

    // The real path, same bytes: decided and rewritten (HealthCheck's rate-limit default and
    // the privacy flags written explicitly), the approval recorded.
    let r = grpc(&env, sent.clone()).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
    let (payload, got) = received_request(&env);
    assert_ne!(payload, sent, "the policy rewrote the request");
    assert!(got.privacy_flags_set);
    assert_eq!(approved().await, 1.0);

    // A request the policy refuses: refused by litgate on the real path, litd untouched;
    // through the alias it reaches litd, which refuses it in its own words.
    let unknown = Bytes::from(request(&[("NoSuchFeature", feature(&[]))]).encode_to_vec());
    let adds_before = writable_adds(&env.litd);
    let r = grpc(&env, unknown.clone()).await;
    assert_eq!(r.grpc_status().as_deref(), Some("9"), "{r:?}");
    assert!(r
        .grpc_message()
        .unwrap()
        .contains("NoSuchFeature is not a feature provided by the Autopilot server"));
    assert_eq!(writable_adds(&env.litd), adds_before);
    let r = alias_call(unknown).await;
    assert_eq!(r.grpc_status().as_deref(), Some("2"), "{r:?}");
    assert!(r
        .grpc_message()
        .unwrap()
        .contains("NoSuchFeature is not a features provided by the Autopilot server"));
    assert_eq!(env.litd.count(BENCH_ADD_ALIAS), 2);
    env.stop().await;
}

#[tokio::test]
async fn approved_rest_request_is_edited_in_place() {
    let env = Env::start().await;
    let mut json = to_json(&request(&[("HealthCheck", feature(&[]))]));
    json["a_future_field"] = serde_json::json!({"kept": true});
    let r = rest(&env, &json).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rec = env.litd.received();
    let got = rec
        .iter()
        .rev()
        .find(|r| r.path == REST_ADD)
        .expect("litd received it");
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["a_future_field"], serde_json::json!({"kept": true}));
    assert_eq!(body["privacy_flags"], "0");
    assert_eq!(body["privacy_flags_set"], true);
    assert_eq!(
        body["features"]["HealthCheck"]["rules"]["rules"]["rate-limit"]["rate_limit"]["read_limit"],
        serde_json::json!({"iterations": 10, "num_hours": 1})
    );
    assert_eq!(got.macaroon.as_deref(), Some(env.macaroon().as_str()));
    // The relay is off: nothing would ever read an approval, so none is recorded.
    assert!(env.gate.approvals().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn approved_grpc_web_text_request() {
    let env = Env::start().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let msg = request(&[("AutoFees", feature(&[]))]).encode_to_vec();
    let req = http::Request::post(env.gate_uri(ADD))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("macaroon", env.macaroon())
        .body(Full::new(Bytes::from(b64.encode(grpc_frame_raw(&msg)))))
        .unwrap();
    let r = send(&h1_client(&env.gate_cert), req).await;
    assert_eq!(r.status, 200);
    let rec = env.litd.received();
    let got = rec.iter().rev().find(|r| r.path == ADD).unwrap();
    let decoded = b64.decode(&got.body).unwrap();
    let sent =
        AddAutopilotSessionRequest::decode(frames(Bytes::from(decoded)).remove(0).1).unwrap();
    assert!(sent.privacy_flags_set);
    assert_eq!(sent.privacy_flags, 0x0c);
    assert_eq!(env.autopilot.registrations().len(), 1);
    env.stop().await;
}

/// The rule bounds are parsed when the catalogue is fetched: a refreshed catalogue's bounds
/// decide from the first call after the refresh, both ways (wider, then narrower).
#[tokio::test]
async fn a_refreshed_catalogue_replaces_the_rule_bounds() {
    let env = Env::start_opts(
        "catalogue_ttl = \"10m\"\n",
        "[autopilot.rules]\nrate_limit_read_max = { iterations = 100000, num_hours = 1 }\n",
    )
    .await;
    let body = |read: u32| {
        let health = feature(&[("rate-limit", rate_limit(read, 1, 1, 1))]);
        Bytes::from(request(&[("HealthCheck", health)]).encode_to_vec())
    };
    let with_read_max = |max: u32| {
        let mut cat = litgate::demo::mock_catalogue();
        let rule = cat
            .get_mut("HealthCheck")
            .and_then(|f| f.rules.get_mut("rate-limit"))
            .expect("the mock's HealthCheck has a rate-limit");
        rule.max_value = format!(
            r#"{{"write_limit":{{"iterations":10,"num_hours":1}},"read_limit":{{"iterations":{max},"num_hours":1}}}}"#
        )
        .into_bytes();
        cat
    };
    let out_of_bounds = |r: &Collected, max: u32| {
        assert_eq!(r.grpc_status().as_deref(), Some("9"), "{r:?}");
        let msg = r.grpc_message().unwrap();
        assert!(msg.contains("rule value for rate-limit not valid"), "{msg}");
        assert!(
            msg.contains(&format!(r#""iterations":{max},"num_hours":1}}}}"#)),
            "names the bound in force: {msg}"
        );
    };

    // The mock's read max is 1000/h.
    out_of_bounds(&grpc(&env, body(2000)).await, 1000);

    env.autopilot.set_catalogue(with_read_max(5000));
    env.clock.advance(Duration::from_secs(11 * 60));
    let r = grpc(&env, body(2000)).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
    out_of_bounds(&grpc(&env, body(6000)).await, 5000);

    env.autopilot.set_catalogue(with_read_max(500));
    env.clock.advance(Duration::from_secs(11 * 60));
    out_of_bounds(&grpc(&env, body(2000)).await, 500);
    assert_eq!(
        grpc(&env, body(400)).await.grpc_status().as_deref(),
        Some("0")
    );
    env.stop().await;
}

#[tokio::test]
async fn catalogue_is_served_stale_then_refused_past_max_stale() {
    let env = Env::start_opts(
        "catalogue_ttl = \"10m\"\ncatalogue_max_stale = \"1h\"\n",
        "",
    )
    .await;
    let body = Bytes::from(request(&[("HealthCheck", feature(&[]))]).encode_to_vec());
    assert_eq!(
        grpc(&env, body.clone()).await.grpc_status().as_deref(),
        Some("0")
    );
    let fetched = env.autopilot.count("ListFeatures");

    env.autopilot.pause().await;
    env.clock.advance(Duration::from_secs(30 * 60));
    env.litd.clear_received();
    // Past the TTL, the server down: the stale catalogue decides; litd is reached (and fails to
    // register with the server it cannot reach, which is litd's business).
    let r = grpc(&env, body.clone()).await;
    assert_eq!(
        writable_adds(&env.litd),
        1,
        "policy passed on the stale catalogue: {r:?}"
    );
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    assert!(
        metric(&metrics, "litgate_catalogue_stale_served_total") >= 1.0,
        "{metrics}"
    );

    env.clock.advance(Duration::from_secs(2 * 3600));
    env.litd.clear_received();
    let r = grpc(&env, body.clone()).await;
    assert_eq!(r.grpc_status().as_deref(), Some("14"), "{r:?}");
    // The caller learns what failed; the server's address and the catalogue's age go to the
    // log.
    let msg = r.grpc_message().unwrap();
    assert_eq!(msg, "the Autopilot server is unavailable");
    assert!(!msg.contains(&env.autopilot.addr().to_string()), "{msg}");
    assert_eq!(writable_adds(&env.litd), 0);

    env.autopilot.resume().await.unwrap();
    assert_eq!(grpc(&env, body).await.grpc_status().as_deref(), Some("0"));
    assert!(env.autopilot.count("ListFeatures") > fetched);
    env.stop().await;
}

#[tokio::test]
async fn linked_session_must_carry_the_flags_of_the_first() {
    let env = Env::start().await;
    let first = request(&[("AutoFees", feature(&[]))]);
    let r = grpc(&env, Bytes::from(first.encode_to_vec())).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");
    let session = env
        .litd
        .sessions()
        .into_iter()
        .find(|s| s.label == "policy-test")
        .unwrap();
    // litd refuses to link while the first session is active; revoke it through litgate.
    let mut revoke =
        litgate::proto::litrpc::autopilot_client::AutopilotClient::new(env.gate_channel().await);
    let mut rr = tonic::Request::new(litgate::proto::litrpc::RevokeAutopilotSessionRequest {
        local_public_key: session.local_public_key.clone(),
    });
    rr.metadata_mut()
        .insert("macaroon", env.macaroon().parse().unwrap());
    revoke.revoke_autopilot_session(rr).await.unwrap();

    env.litd.clear_received();
    let mut other_flags = request(&[("HealthCheck", feature(&[]))]);
    other_flags.linked_group_id = session.id.clone();
    let r = grpc(&env, Bytes::from(other_flags.encode_to_vec())).await;
    assert_eq!(r.grpc_status().as_deref(), Some("9"), "{r:?}");
    assert!(
        r.grpc_message()
            .unwrap()
            .contains("a linked session must carry the flags of session"),
        "{r:?}"
    );
    assert_eq!(writable_adds(&env.litd), 0);

    let mut same = request(&[("AutoFees", feature(&[]))]);
    same.linked_group_id = session.id.clone();
    let r = grpc(&env, Bytes::from(same.encode_to_vec())).await;
    assert_eq!(r.grpc_status().as_deref(), Some("0"), "{r:?}");

    let mut unknown = request(&[("AutoFees", feature(&[]))]);
    unknown.linked_group_id = vec![9, 9, 9, 9];
    let r = grpc(&env, Bytes::from(unknown.encode_to_vec())).await;
    assert_eq!(r.grpc_status().as_deref(), Some("9"));
    assert!(r
        .grpc_message()
        .unwrap()
        .contains("litd has no autopilot session 09090909"));
    env.stop().await;
}

#[tokio::test]
async fn corrupt_or_foreign_data_dir_is_refused_and_left_untouched() {
    let litd = litgate::demo::DemoLitd::start(litgate::demo::DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("conf"), b"this is not sled's config").unwrap();
    std::fs::write(db.join("db"), vec![0xAB; 4096]).unwrap();
    let cfg = litgate::config::Config::parse(&config_toml(dir.path(), &litd, "")).unwrap();
    // Foreign: files but no litgate marker.
    let before = snapshot(&db);
    let err = litgate::app::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains(&db.display().to_string()) && err.contains("not a litgate store"),
        "{err}"
    );
    assert!(snapshot(&db) == before, "the data directory was modified");
    // Corrupt: a litgate store whose sled files are garbage.
    std::fs::write(db.join("LITGATE_STORE"), "litgate store schema 1\n").unwrap();
    std::fs::create_dir_all(db.join("blobs")).unwrap();
    let before = snapshot(&db);
    let err = litgate::app::start(&cfg).await.unwrap_err().to_string();
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("corrupt") || err.contains("store"), "{err}");
    assert!(snapshot(&db) == before, "the data directory was modified");
    // Unknown schema.
    std::fs::write(db.join("LITGATE_STORE"), "litgate store schema 2\n").unwrap();
    let err = litgate::app::start(&cfg).await.unwrap_err().to_string();
    assert!(err.contains("schema version 2"), "{err}");
    litd.shutdown().await;
}

/// Names and contents of a directory's entries (subdirectories as empty).
fn snapshot(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn oversized_request_is_refused_before_litd() {
    // config_toml's [listen] table gets the limit (a table can appear only once).
    let env = Env::start().await;
    let litd = &env.litd;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(dir.path(), litd, "").replacen(
        "[listen]\n",
        "[listen]\nmax_message_bytes = 2048\n",
        1,
    );
    let cfg = litgate::config::Config::parse(&toml).unwrap();
    let gate = litgate::app::start(&cfg).await.unwrap();
    let cert = std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap();
    let mut req = request(&[("HealthCheck", feature(&[]))]);
    req.label = "x".repeat(4096);
    let r = send(
        &h2_client(&cert),
        grpc_request(
            &format!("https://{}{ADD}", gate.public_addr),
            grpc_frame_raw(&req.encode_to_vec()),
            Some(&env.macaroon()),
        ),
    )
    .await;
    assert_eq!(r.grpc_status().as_deref(), Some("8"), "{r:?}");
    assert!(
        r.grpc_message()
            .unwrap()
            .contains("larger than the 2048-byte limit"),
        "{r:?}"
    );
    nothing_reached_litd(&env);
    gate.shutdown().await;
    env.stop().await;
}
