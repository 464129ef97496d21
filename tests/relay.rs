//! The relay face (issue: registration relay): litd registers its autopilot sessions through
//! litgate; the ledger, the privacy policy at registration, withheld revocations, and
//! reconciliation of orphaned registrations.

mod common;

use std::time::Duration;

use common::*;
use litgate::proto::{
    autopilotserverrpc::{ActivateSessionRequest, RegisterSessionRequest},
    litrpc::{
        autopilot_client::AutopilotClient, sessions_client::SessionsClient,
        AddAutopilotSessionRequest, RevokeAutopilotSessionRequest, RevokeSessionRequest,
        SessionType,
    },
};
use tonic::Code;

fn add_request(feature: &str) -> AddAutopilotSessionRequest {
    autopilot_add("relay-test", &[(feature, "{}")])
}

#[tokio::test]
async fn add_session_goes_through_the_relay_into_the_ledger() {
    let env = Env::start_relay("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    let session = client
        .add_autopilot_session(with_macaroon(&env, add_request("AutoFees")))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();

    let regs = env.autopilot.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(
        regs[0].request.privacy_flags, 0x0c,
        "the flags the server received"
    );
    assert_eq!(regs[0].request.responder_pub_key, session.local_public_key);

    let ledger = env.gate.store().ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    let e = &ledger[0];
    assert_eq!(e.responder_key, hex::encode(&session.local_public_key));
    assert_eq!(e.session_id, hex::encode(&session.id));
    assert_eq!(e.group_id, hex::encode(&session.group_id));
    assert_eq!(e.features, ["AutoFees"]);
    assert_eq!(e.privacy_flags, 0x0c);
    assert_eq!(e.lit_version, "0.17.2");
    assert_eq!(e.initiator_key, hex::encode(env.autopilot.initiator_key()));
    assert!(e.revoked_at.is_none());

    // The admin view: JSON, no secrets.
    let (status, body) = admin_get(&env.admin_uri("/registrations")).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["registrations"][0]["session_id"],
        hex::encode(&session.id)
    );
    let secret_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&session.pairing_secret)
    };
    assert!(!body.contains(&hex::encode(&session.pairing_secret)) && !body.contains(&secret_b64));
    assert!(!body.contains(&env.macaroon()));

    // Revoking it goes to the server and marks the ledger.
    client
        .revoke_autopilot_session(with_macaroon(
            &env,
            RevokeAutopilotSessionRequest {
                local_public_key: session.local_public_key.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        env.autopilot.revocations(),
        vec![session.local_public_key.clone()]
    );
    let e = &env.gate.store().ledger().unwrap()[0];
    assert_eq!(e.revoked_by.as_deref(), Some("litd"));
    env.stop().await;
}

#[tokio::test]
async fn registration_with_a_denied_flag_never_reaches_the_server() {
    let env = Env::start_relay("[privacy]\ndeny_clear = [\"ClearNetworkAddresses\"]\n").await;
    // A client that bypasses the public face and talks to litd directly.
    let mut direct = AutopilotClient::new(env.litd_channel().await);
    let err = direct
        .add_autopilot_session(with_macaroon(&env, add_request("AutoOpen")))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("error registering session with autopilot server"),
        "{err:?}"
    );
    assert!(err.message().contains("ClearNetworkAddresses"), "{err:?}");
    assert!(env.autopilot.registrations().is_empty());
    assert_eq!(env.autopilot.count("RegisterSession"), 0);
    assert!(env.gate.store().ledger().unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn revocation_of_a_non_autopilot_session_never_reaches_the_server() {
    let env = Env::start_relay("").await;
    let victim = env
        .litd
        .sessions()
        .into_iter()
        .find(|s| s.session_type == SessionType::TypeMacaroonAdmin as i32)
        .unwrap();
    let mut sessions = SessionsClient::new(env.gate_channel().await);
    sessions
        .revoke_session(with_macaroon(
            &env,
            RevokeSessionRequest {
                local_public_key: victim.local_public_key.clone(),
            },
        ))
        .await
        .unwrap();
    // litd announced it (that is litd's leak); litgate answered and kept the key.
    assert!(
        env.autopilot.revocations().is_empty(),
        "a non-autopilot key reached the server"
    );
    assert_eq!(env.autopilot.count("RevokeSession"), 0);
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    assert!(
        metrics.contains(
            "litgate_relay_calls_total{method=\"RevokeSession\",outcome=\"answered_locally\"} 1"
        ),
        "{metrics}"
    );
    env.stop().await;
}

#[tokio::test]
async fn reconciliation_revokes_orphaned_registrations_only() {
    let env = Env::start_relay("").await;
    // A live session, registered through the relay by litd.
    let mut client = AutopilotClient::new(env.gate_channel().await);
    let live = client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    // An orphan: registered at the server (through the relay) but litd has no such session,
    // as when litd fails after registering.
    let mut orphan_key = vec![0x02];
    orphan_key.extend_from_slice(&[7u8; 32]);
    let mut relay = relay_client(&env).await;
    relay
        .register_session(RegisterSessionRequest {
            responder_pub_key: orphan_key.clone(),
            mailbox_addr: "mailbox.example:443".into(),
            feature_configs: [("HealthCheck".to_string(), b"{}".to_vec())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(env.autopilot.registrations().len(), 2);

    // Young registrations are left alone (their AddAutopilotSession may still be running).
    let report = env.gate.reconcile_now().await.unwrap().unwrap();
    assert_eq!((report.checked, report.revoked), (2, 0));
    env.clock.advance(Duration::from_secs(600));
    let report = env.gate.reconcile_now().await.unwrap().unwrap();
    assert_eq!((report.checked, report.revoked, report.failed), (2, 1, 0));
    assert_eq!(env.autopilot.revocations(), vec![orphan_key.clone()]);
    let ledger = env.gate.store().ledger().unwrap();
    let orphan = ledger
        .iter()
        .find(|e| e.responder_key == hex::encode(&orphan_key))
        .unwrap();
    assert_eq!(orphan.revoked_by.as_deref(), Some("reconciliation"));
    let kept = ledger
        .iter()
        .find(|e| e.responder_key == hex::encode(&live.local_public_key))
        .unwrap();
    assert!(kept.revoked_at.is_none());
    env.stop().await;
}

#[tokio::test]
async fn reconciliation_is_off_without_a_macaroon_and_ready_says_so() {
    let env = Env::start_relay_with("", |c| c.upstream.macaroon = Default::default()).await;
    assert!(env.gate.reconcile_now().await.is_none());
    let (status, body) = admin_get(&env.admin_uri("/ready")).await;
    assert_eq!(status, 200);
    assert!(body.contains("reconcile: off"), "{body}");
    env.stop().await;
}

#[tokio::test]
async fn server_down_gives_litd_unavailable_promptly() {
    let env = Env::start_relay("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    // One session while the server is up, so the catalogue is fresh.
    client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap();
    let mut relay = relay_client(&env).await;
    env.autopilot.pause().await;
    let call = relay.activate_session(ActivateSessionRequest {
        responder_pub_key: vec![2; 33],
    });
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("answers promptly")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // litd is told what failed, not where the server is nor what the OS said.
    assert!(
        !err.message().contains(&env.autopilot.addr().to_string()),
        "{err:?}"
    );
    assert!(!err.message().contains("os error"), "{err:?}");
    // litd's own registration fails cleanly: the policy passes on the fresh catalogue, litd
    // registers through the relay, and the relay's UNAVAILABLE reaches litd.
    let err = client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("error registering session with autopilot server"),
        "{err:?}"
    );
    assert_eq!(
        env.gate.store().ledger().unwrap().len(),
        1,
        "no ledger entry for a failed registration"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_ledger_survives_a_restart() {
    let env = Env::start_relay("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap();
    let before = env.gate.store().ledger().unwrap();
    assert_eq!(before.len(), 1);
    let env = env.restart_gate().await;
    assert_eq!(env.gate.store().ledger().unwrap(), before);
    let (_, body) = admin_get(&env.admin_uri("/registrations")).await;
    assert!(body.contains(&before[0].session_id));
    env.stop().await;
}

#[tokio::test]
async fn registrations_command_prints_the_ledger() {
    let env = Env::start_relay("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    let session = client
        .add_autopilot_session(with_macaroon(&env, add_request("AutoFees")))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let text = registrations_command(&env).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("SESSION") && lines[0].contains("FEATURES"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&hex::encode(&session.id))
            && lines[1].contains("ClearChanIDs|ClearTimeStamps"),
        "{text}"
    );
    env.stop().await;
}

#[tokio::test]
async fn litd_refusing_litgates_own_lookup_is_not_a_callers_fault() {
    // A macaroon litd never baked: litd refuses reconciliation's ListAutopilotSessions.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.macaroon");
    std::fs::write(
        &foreign,
        litgate::demo::MacaroonBaker::new().bake_admin().to_hex(),
    )
    .unwrap();
    let env = Env::start_pinned_autopilot(|c| c.upstream.macaroon = foreign.clone()).await;
    let err = env
        .gate
        .reconcile_now()
        .await
        .expect("reconciliation is on")
        .unwrap_err();
    assert!(
        matches!(err, litgate::error::Error::OwnCallRefused { .. }),
        "{err}"
    );
    assert_eq!(err.code(), Code::Internal, "not a caller's error code");
    assert!(
        err.to_string()
            .starts_with("litd refused litgate's own /litrpc.Autopilot/ListAutopilotSessions call"),
        "{err}"
    );

    // litd down: the call never reached it, and the error says so.
    env.litd.pause().await;
    let err = env.gate.reconcile_now().await.unwrap().unwrap_err();
    assert!(
        matches!(err, litgate::error::Error::Upstream { .. }),
        "{err}"
    );
    assert_eq!(err.code(), Code::Unavailable);
    env.litd.resume().await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn the_relay_holds_flags_to_the_public_faces_rules_in_its_words() {
    let env = Env::start_relay("[privacy]\ndeny_clear = [\"ClearNetworkAddresses\"]\n").await;
    let mut relay = relay_client(&env).await;
    let register = |flags: u64, feature: &str| RegisterSessionRequest {
        responder_pub_key: vec![2; 33],
        mailbox_addr: "mailbox.example:443".into(),
        feature_configs: [(feature.to_string(), b"{}".to_vec())].into(),
        privacy_flags: flags,
        ..Default::default()
    };
    // The same codes and words as AddAutopilotSession on the public face (tests/policy.rs).
    let cases = [
        (
            register(0x200, "AutoFees"),
            Code::InvalidArgument,
            "privacy_flags: unknown privacy flag bit 9",
        ),
        (
            register(0x01, "AutoFees"),
            Code::FailedPrecondition,
            "privacy_flags: ClearPubkeys asks for less privacy than the requested features need (ClearChanIDs|ClearTimeStamps)",
        ),
        (
            register(0x01, "AutoOpen"),
            Code::FailedPrecondition,
            "features: AutoOpen needs ClearNetworkAddresses, which [privacy] deny_clear forbids",
        ),
    ];
    for (req, code, words) in cases {
        let err = relay.register_session(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert_eq!(
            err.message(),
            format!("litgate refused the registration: {words}")
        );
    }
    assert_eq!(env.autopilot.count("RegisterSession"), 0);
    assert!(env.gate.store().ledger().unwrap().is_empty());
    // The relay face is counted as the public face is, by method and the status litd got.
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    for (code, n) in [("InvalidArgument", 1), ("FailedPrecondition", 2)] {
        let line = format!(
            "litgate_relay_requests_total{{route=\"RegisterSession\",protocol=\"grpc\",grpc_status=\"{code}\",http_status=\"200\",outcome=\"error\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    env.stop().await;
}

#[tokio::test]
async fn the_relay_holds_litd_to_an_approval_the_store_has_not_seen() {
    let env = Env::start_relay("").await;
    // Nothing reaches the store: the relay can only have found the approval in memory.
    env.gate
        .store()
        .inject_write_fault(Some(std::io::ErrorKind::StorageFull));
    let mut client = AutopilotClient::new(env.gate_channel().await);
    client
        .add_autopilot_session(with_macaroon(&env, add_request("AutoFees")))
        .await
        .unwrap();
    assert_eq!(env.autopilot.registrations().len(), 1);
    let ledger = env.gate.store().ledger().unwrap();
    assert_eq!(
        ledger[0].privacy_mapper,
        Some(true),
        "recorded from the public face's approval"
    );
    assert!(
        env.gate.approvals().is_empty(),
        "consumed by the registration"
    );
    env.gate.store().inject_write_fault(None);
    env.stop().await;
}

#[tokio::test]
async fn approvals_survive_a_clean_restart() {
    // litd registers with the server directly, around the relay: the approval stays.
    let env = Env::start_relay_bypassed("").await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap();
    let before = env
        .gate
        .approvals()
        .approvals_for(&["HealthCheck".into()], 0);
    assert_eq!(before.len(), 1);
    let env = env.restart_gate().await;
    assert_eq!(
        env.gate
            .approvals()
            .approvals_for(&["HealthCheck".into()], 0),
        before
    );
    env.stop().await;
}

#[tokio::test]
async fn a_failed_approval_write_is_counted_and_the_call_still_succeeds() {
    let env = Env::start_relay_bypassed("").await;
    env.gate
        .store()
        .inject_write_fault(Some(std::io::ErrorKind::StorageFull));
    let mut client = AutopilotClient::new(env.gate_channel().await);
    client
        .add_autopilot_session(with_macaroon(&env, add_request("HealthCheck")))
        .await
        .unwrap();
    assert_eq!(env.gate.approvals().len(), 1, "held in memory");
    let uri = env.admin_uri("/metrics");
    let counted = eventually(200, Duration::from_millis(10), || {
        let uri = uri.clone();
        async move {
            let (_, text) = admin_get(&uri).await;
            metric(&text, "litgate_autopilot_approval_write_failures_total") == 1.0
        }
    })
    .await;
    assert!(counted, "the failed background write is counted");
    env.gate.store().inject_write_fault(None);
    env.stop().await;
}
