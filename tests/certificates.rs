//! Certificates as lnd makes them: litd's `tls.cert` and a self-signed Autopilot server's
//! certificate are `CA:TRUE` with `keyCertSign`. Every pin litgate makes accepts exactly the
//! pinned certificate whatever its extensions (the demo fakes serve such certificates in every
//! test; this file checks the Autopilot pin end to end, through the public face and the relay).

mod common;

use common::*;
use litgate::proto::litrpc::{autopilot_client::AutopilotClient, AddAutopilotSessionRequest};
use tonic::metadata::MetadataValue;

fn add_request() -> AddAutopilotSessionRequest {
    autopilot_add("pinned", &[("AutoFees", "")])
}

#[tokio::test]
async fn a_self_signed_ca_shaped_autopilot_cert_is_accepted_by_the_pin() {
    let env = Env::start_pinned_autopilot(|_| {}).await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    let mut req = tonic::Request::new(add_request());
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    req.metadata_mut().insert("macaroon", mac);
    // The policy needs the catalogue (ListFeatures over the pinned TLS channel), and litd's
    // registration goes through the relay to the same server.
    let session = client
        .add_autopilot_session(req)
        .await
        .expect("catalogue fetched and registration relayed over the pinned channel")
        .into_inner()
        .session
        .unwrap();
    let regs = env.autopilot.registrations();
    assert_eq!(regs.len(), 1, "the server saw the registration");
    assert_eq!(regs[0].request.responder_pub_key, session.local_public_key);
    assert_eq!(env.gate.store().ledger().unwrap().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn another_certificate_is_refused_by_the_pin() {
    // Pin a different lnd-shaped certificate: the server's own one must then be refused, and
    // the add fails before litd is touched with UNAVAILABLE.
    let other = litgate::tls::generate_lnd_style(&["localhost".into()]).unwrap();
    let env = Env::start_pinned_autopilot(|c| {
        let p = c.store.data_dir.with_file_name("other.cert");
        std::fs::write(&p, other.cert_pem.as_bytes()).unwrap();
        c.autopilot.tls_cert = p;
    })
    .await;
    let mut client = AutopilotClient::new(env.gate_channel().await);
    let mut req = tonic::Request::new(add_request());
    let mac: MetadataValue<_> = env.macaroon().parse().unwrap();
    req.metadata_mut().insert("macaroon", mac);
    let err = client.add_autopilot_session(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    // The caller is told what failed; the server's address and the TLS detail are logged only.
    assert_eq!(err.message(), "the Autopilot server is unavailable");
    assert_eq!(
        writable_adds(&env.litd),
        0,
        "nothing that can write reached litd"
    );
    assert!(env.autopilot.registrations().is_empty());
    env.stop().await;
}
