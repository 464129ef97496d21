//! One deadline for the Autopilot server (issue 12 item 3): against a server that accepts TCP
//! and never answers, AddAutopilotSession, every relay call and the catalogue refresh end within
//! `[autopilot] timeout` with UNAVAILABLE naming that timeout, with plaintext and with a pinned
//! lnd-shaped certificate; the server going down and coming back is logged once each, however
//! many calls fail meanwhile; and once it answers again, calls succeed (the silent connection
//! is not kept). Outcomes only: the test-level bound is far above the timeout, and no elapsed
//! time is asserted.

mod common;

use std::time::Duration;

use common::*;
use litgate::proto::{
    autopilotserverrpc::{
        ActivateSessionRequest, ListFeaturesRequest, RegisterSessionRequest, TermsRequest,
    },
    litrpc::{autopilot_client::AutopilotClient, AddAutopilotSessionRequest},
};
use tonic::{metadata::MetadataValue, Code};

/// litgate's `[autopilot] timeout` in these tests.
const TIMEOUT: Duration = Duration::from_millis(300);
/// The test's own bound on each call: far above the timeout, so only a hang trips it.
const BOUND: Duration = Duration::from_secs(30);

const GONE: &str = "Autopilot server unreachable";
const BACK: &str = "Autopilot server reachable again";

fn add_request() -> tonic::Request<AddAutopilotSessionRequest> {
    tonic::Request::new(autopilot_add("deadline", &[("HealthCheck", "{}")]))
}

/// `call`'s error, which must come well within [`BOUND`].
async fn fails<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> tonic::Status {
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer at all (hung)"))
        .expect_err(what)
}

fn names_the_timeout(what: &str, s: &tonic::Status) {
    assert_eq!(s.code(), Code::Unavailable, "{what}: {s:?}");
    // The caller learns what failed, never where: the public face says the server is
    // unavailable; the relay (whose caller is litd) may name the deadline that ran out, which
    // lands in litd's log for the operator. Neither carries an address or an OS error.
    let m = s.message();
    assert!(
        m == "the Autopilot server is unavailable" || m.contains("autopilot.timeout (300ms)"),
        "{what}: {s:?}"
    );
    assert!(
        !m.contains("127.0.0.1") && !m.contains("os error"),
        "{what}: {s:?}"
    );
}

/// Every call towards a silent server, through both faces: each fails with UNAVAILABLE naming
/// the timeout.
async fn every_call_ends_within_the_timeout(env: &Env) {
    let mut public = AutopilotClient::new(env.gate_channel().await);
    let mut req = add_request();
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    req.metadata_mut().insert("macaroon", mac);
    let s = fails("AddAutopilotSession", public.add_autopilot_session(req)).await;
    names_the_timeout("AddAutopilotSession", &s);
    assert_eq!(
        writable_adds(&env.litd),
        0,
        "nothing that could write reached litd"
    );

    let mut relay = relay_client(env).await;
    let s = fails("Terms", relay.terms(TermsRequest {})).await;
    names_the_timeout("Terms", &s);
    let s = fails("ListFeatures", relay.list_features(ListFeaturesRequest {})).await;
    names_the_timeout("ListFeatures", &s);
    for (what, s) in registration_calls(env).await {
        names_the_timeout(what, &s);
    }
}

/// The relay calls that pass the server's own status through to litd (RegisterSession,
/// ActivateSession), each of which must fail: what each was, and its status.
async fn registration_calls(env: &Env) -> [(&'static str, tonic::Status); 2] {
    let mut relay = relay_client(env).await;
    let register = fails(
        "RegisterSession",
        relay.register_session(RegisterSessionRequest {
            responder_pub_key: vec![2; 33],
            ..Default::default()
        }),
    )
    .await;
    let activate = fails(
        "ActivateSession",
        relay.activate_session(ActivateSessionRequest {
            responder_pub_key: vec![2; 33],
        }),
    )
    .await;
    [("RegisterSession", register), ("ActivateSession", activate)]
}

#[tokio::test]
async fn a_silent_plaintext_server_is_answered_within_the_timeout_and_logged_once_each_way() {
    let (logs, _guard) = Logs::capture();
    let silent = BlackHole::start().await;
    let env = Env::start_relay_with("", |c| {
        c.autopilot.server = silent.addr.to_string();
        c.autopilot.timeout = TIMEOUT;
    })
    .await;
    every_call_ends_within_the_timeout(&env).await;
    // Again: still bounded, and still one line for the server going away (the startup
    // refresh, five calls above and these five all failed).
    every_call_ends_within_the_timeout(&env).await;
    assert_eq!(logs.count(GONE), 1, "{}", logs.text());
    assert_eq!(logs.count(BACK), 0);
    assert!(
        logs.text().contains("autopilot.timeout (300ms)"),
        "the log names the deadline: {}",
        logs.text()
    );

    // The server answers again: the next call dials afresh instead of waiting on the silent
    // connection, succeeds, and that is logged once.
    silent.forward_to(Some(env.autopilot.addr()));
    let mut relay = relay_client(&env).await;
    let mut answered = false;
    for _ in 0..3 {
        let call = tokio::time::timeout(BOUND, relay.terms(TermsRequest {}))
            .await
            .expect("bounded");
        if call.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the server answers again: {}", logs.text());
    relay.terms(TermsRequest {}).await.unwrap();
    let mut public = AutopilotClient::new(env.gate_channel().await);
    let mut req = add_request();
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    req.metadata_mut().insert("macaroon", mac);
    public.add_autopilot_session(req).await.unwrap();
    assert_eq!(logs.count(BACK), 1, "{}", logs.text());
    assert_eq!(logs.count(GONE), 1, "{}", logs.text());
    env.stop().await;
}

#[tokio::test]
async fn a_silent_tls_server_is_answered_within_the_timeout() {
    let (logs, _guard) = Logs::capture();
    let silent = BlackHole::start().await;
    // The pinned certificate is a real lnd-shaped one (the fake Autopilot server's); the
    // address is the silent listener, so the TLS handshake never gets an answer.
    let env = Env::start_pinned_autopilot(|c| {
        c.autopilot.server = silent.addr.to_string();
        c.autopilot.timeout = TIMEOUT;
    })
    .await;
    every_call_ends_within_the_timeout(&env).await;
    assert_eq!(logs.count(GONE), 1, "{}", logs.text());
    env.stop().await;
}

/// A server that takes every connection and closes it at once: the channel fails before any
/// answer (not a timeout). The relay's calls that pass the server's own status through
/// (RegisterSession, ActivateSession) give litd UNAVAILABLE for it, never the transport's
/// `Unknown: transport error`, which the server did not send.
#[tokio::test]
async fn a_server_that_closes_every_connection_is_unavailable_not_unknown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slammer = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let env = Env::start_relay_with("", |c| {
        c.autopilot.server = addr.to_string();
        c.autopilot.timeout = Duration::from_secs(10);
    })
    .await;
    for (what, s) in registration_calls(&env).await {
        assert_eq!(s.code(), Code::Unavailable, "{what}: {s:?}");
        assert_eq!(
            s.message(),
            "the Autopilot server is unavailable",
            "{what}: {s:?}"
        );
    }
    slammer.abort();
    env.stop().await;
}
