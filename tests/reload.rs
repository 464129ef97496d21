//! Configuration reload in process (`Running::reloader`, what SIGHUP calls): a new operator cap
//! and a renewed public certificate swapped under a stream of calls with none failing; a bad
//! config refused whole, counted, the old one kept.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use common::*;
use litgate::{
    proto::{
        litgatetest::{echo_client::EchoClient, EchoRequest},
        litrpc::{
            rule_value::Value, AddAutopilotSessionRequest, FeatureConfig, Rate, RateLimit,
            RuleValue, RulesMap,
        },
    },
    reload::ReloadError,
};

/// An AddAutopilotSession asking for a HealthCheck read rate of `read` per hour.
fn add_request(read: u32) -> Bytes {
    let expiry = (SystemTime::now() + Duration::from_secs(24 * 3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rate = RuleValue {
        value: Some(Value::RateLimit(RateLimit {
            read_limit: Some(Rate {
                iterations: read,
                num_hours: 1,
            }),
            write_limit: Some(Rate {
                iterations: 1,
                num_hours: 1,
            }),
        })),
    };
    let req = AddAutopilotSessionRequest {
        label: "reload-test".into(),
        expiry_timestamp_seconds: expiry,
        mailbox_server_addr: "mailbox.example:443".into(),
        features: [(
            "HealthCheck".to_string(),
            FeatureConfig {
                rules: Some(RulesMap {
                    rules: [("rate-limit".to_string(), rate)].into_iter().collect(),
                }),
                config: b"{}".to_vec(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    grpc_frame(&req)
}

/// Sends an AddAutopilotSession over a new connection pinning `cert`.
async fn add(env: &Env, cert: &[u8], read: u32) -> Collected {
    send(
        &h2_client(cert),
        grpc_request(
            &env.gate_uri(ADD_AUTOPILOT),
            add_request(read),
            Some(&env.macaroon()),
        ),
    )
    .await
}

/// A certificate/key pair for `localhost`, as PEM.
fn pair() -> (String, String) {
    let p = litgate::tls::generate_lnd_style(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    (p.cert_pem, p.key_pem)
}

/// Calls Echo in a loop on one connection until `stop`, counting calls and failures.
fn call_loop(
    mut echo: EchoClient<tonic::transport::Channel>,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let r = echo
                .unary(EchoRequest {
                    message: "load".into(),
                    count: 1,
                    fail_code: 0,
                    delay_ms: 0,
                })
                .await;
            if r.is_err() {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            calls.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[tokio::test]
async fn cap_and_certificate_swap_under_load_without_a_failed_call() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("pub.cert"), dir.path().join("pub.key"));
    let (old_cert, old_key) = pair();
    std::fs::write(&cert, &old_cert).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    let files = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let extra = |read: u32| {
        format!(
            "[autopilot.rules]\nrate_limit_read_max = {{ iterations = {read}, num_hours = 1 }}\n"
        )
    };
    let env = Env::start_from_file(&files, &extra(5)).await;
    assert_eq!(env.gate_cert, old_cert.as_bytes());

    // Under the start's cap (5/h) a HealthCheck read rate of 4/h is approved.
    let before = add(&env, old_cert.as_bytes(), 4).await;
    assert_eq!(before.grpc_status().as_deref(), Some("0"), "{before:?}");

    let (stop, calls, failures) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let existing = EchoClient::new(env.gate_channel().await);
    let load = call_loop(existing, stop.clone(), calls.clone(), failures.clone());
    assert!(
        eventually(200, Duration::from_millis(10), || async {
            calls.load(Ordering::SeqCst) >= 5
        })
        .await,
        "the load loop runs"
    );

    assert!(
        tls_connect(env.gate.public_addr, old_cert.as_bytes(), &[b"h2"])
            .await
            .is_ok(),
        "the start's certificate is served"
    );

    // Renew the certificate in place and lower the cap to 3/h, then reload.
    let (new_cert, new_key) = pair();
    std::fs::write(&cert, &new_cert).unwrap();
    std::fs::write(&key, &new_key).unwrap();
    env.rewrite_config(&files, &extra(3));
    let reloaded = env.gate.reloader().reload().await.expect("reload accepted");
    assert!(
        reloaded.changed.contains(&"autopilot.rules"),
        "{reloaded:?}"
    );
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");

    let at_reload = calls.load(Ordering::SeqCst);
    assert!(
        eventually(200, Duration::from_millis(10), || async {
            calls.load(Ordering::SeqCst) >= at_reload + 5
        })
        .await,
        "calls on the connection opened before the reload go on"
    );

    // The next AddAutopilotSession is held to the new cap, over a connection that sees the
    // new certificate.
    let after = add(&env, new_cert.as_bytes(), 4).await;
    assert_ne!(after.grpc_status().as_deref(), Some("0"), "{after:?}");
    let message = after.grpc_message().unwrap_or_default();
    assert!(
        message.contains("rate_limit_read_max = 3 per 1h"),
        "{message}"
    );
    assert_eq!(
        add(&env, new_cert.as_bytes(), 3)
            .await
            .grpc_status()
            .as_deref(),
        Some("0")
    );
    // A new connection pinning the old certificate no longer gets it.
    assert!(
        tls_connect(env.gate.public_addr, old_cert.as_bytes(), &[b"h2"])
            .await
            .is_err(),
        "new handshakes are served the renewed certificate"
    );

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no call failed");

    let (_, text) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"ok\""),
        1.0
    );
    assert!(
        metric(
            &text,
            "litgate_config_last_reload_success_timestamp_seconds"
        ) > 0.0
    );
    env.stop().await;
}

#[tokio::test]
async fn a_bad_config_is_refused_whole_counted_and_the_old_one_kept() {
    let extra = |read: &str| {
        format!(
            "[autopilot.rules]\nrate_limit_read_max = {{ iterations = {read}, num_hours = 1 }}\n"
        )
    };
    let env = Env::start_from_file("", &extra("5")).await;
    // A lower cap is valid, the log level is not: nothing of the file applies.
    env.rewrite_config("", &format!("{}\n[log]\nlevel = \"warning\"\n", extra("3")));
    let err = env.gate.reloader().reload().await.expect_err("refused");
    let ReloadError::Invalid(errors) = err else {
        panic!("not a config error: {err}")
    };
    assert!(errors.0.iter().any(|e| e.key == "log.level"), "{errors:?}");
    // The old cap (5/h) still holds: 4/h is approved.
    let ok = add(&env, &env.gate_cert, 4).await;
    assert_eq!(ok.grpc_status().as_deref(), Some("0"), "{ok:?}");

    let (_, text) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"failed\""),
        1.0
    );
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"ok\""),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "litgate_config_last_reload_success_timestamp_seconds"
        ),
        0.0
    );
    env.stop().await;
}
