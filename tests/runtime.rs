//! `litgate run` on more than one thread (`[runtime] threads`): every runtime serves the public
//! port (each its own `SO_REUSEPORT` listener and its own connections to litd), every protocol
//! works whichever runtime a connection lands on, and SIGTERM drains them all.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::{
    demo::{ws_client, DemoAutopilot, DemoAutopilotConfig, DemoLitd, DemoLitdConfig},
    proto::{
        litgatetest::{echo_client::EchoClient, EchoRequest},
        litrpc::{sessions_client::SessionsClient, ListSessionsRequest},
    },
};
use tonic::metadata::MetadataValue;

/// Connections opened per protocol: with two listeners on the port, the kernel puts each on
/// either by a hash of its addresses, so among this many both runtimes get some (all on one
/// would be a chance of 2^-16); a runtime that did not serve would leave its calls hanging.
const CONNECTIONS: usize = 16;

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn two_threads_serve_grpc_rest_and_websockets_and_drain_on_sigterm() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .expect("demo litd starts");
    // The catalogue refresh talks to this one, never to the default Autopilot server.
    let autopilot = DemoAutopilot::start(DemoAutopilotConfig::default()).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::prepare(
        dir.path(),
        &litd,
        &format!(
            "[runtime]\nthreads = 2\n[cache]\nenabled = false\n\
             [autopilot]\nserver = \"{}\"\nplaintext = true\n",
            autopilot.addr()
        ),
    );
    let Spawned {
        mut child, public, ..
    } = bin.spawn("stderr.log").await;
    let cert = std::fs::read(dir.path().join("data/tls.cert")).unwrap();
    // The thread names itself as it starts: polled, bounded.
    let pid = child.id();
    let named = eventually(200, Duration::from_millis(20), || async move {
        thread_names(pid).iter().any(|n| n == "litgate-rt1")
    })
    .await;
    assert!(named, "a second runtime thread: {:?}", thread_names(pid));
    let bounded = Duration::from_secs(10);
    let mac: MetadataValue<_> = litd.macaroon_hex().parse().unwrap();

    // gRPC, each call on a connection of its own.
    for i in 0..CONNECTIONS {
        let mut sessions = SessionsClient::new(channel(public, &cert).await);
        let mut req = tonic::Request::new(ListSessionsRequest {});
        req.metadata_mut().insert("macaroon", mac.clone());
        tokio::time::timeout(bounded, sessions.list_sessions(req))
            .await
            .unwrap_or_else(|_| panic!("gRPC call {i} hung"))
            .expect("gRPC call answered");
    }

    // REST over HTTP/1.1, a fresh client (so a fresh connection) each time.
    for i in 0..CONNECTIONS {
        let rest = tokio::time::timeout(
            bounded,
            send(
                &h1_client(&cert),
                http::Request::get(format!("https://{public}/v1/sessions"))
                    .header("grpc-metadata-macaroon", litd.macaroon_hex())
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("REST call {i} hung"));
        assert_eq!(rest.status, 200, "{rest:?}");
        assert!(rest.json()["sessions"].is_array(), "{rest:?}");
    }

    // grpc-websockets, as the Terminal UI calls.
    let mut metadata = http::HeaderMap::new();
    metadata.insert("macaroon", litd.macaroon_hex().parse().unwrap());
    for i in 0..CONNECTIONS {
        let mut messages = 0;
        let status = tokio::time::timeout(
            bounded,
            ws_client::call(
                public,
                Some(&cert),
                "/litrpc.Sessions/ListSessions",
                &metadata,
                &prost::Message::encode_to_vec(&ListSessionsRequest {}),
                |_| messages += 1,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("grpc-websockets call {i} hung"))
        .expect("grpc-websockets call completes");
        assert_eq!(status.code, tonic::Code::Ok, "{status:?}");
        assert_eq!(messages, 1);
    }

    // Streams in flight on connections over both runtimes finish when litgate is told to
    // stop, and then the process exits cleanly.
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut echo = EchoClient::new(channel(public, &cert).await);
        let mut s = echo
            .server_stream(EchoRequest {
                message: "drain".into(),
                count: 4,
                fail_code: 0,
                delay_ms: 100,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.message().await.unwrap().unwrap().index, 0);
        streams.push((echo, s));
    }
    sigterm(&child);
    for (_, mut s) in streams {
        let mut got = 1;
        while let Some(r) = tokio::time::timeout(bounded, s.message())
            .await
            .expect("the stream goes on")
            .expect("the in-flight stream finishes cleanly")
        {
            assert_eq!(r.index, got);
            got += 1;
        }
        assert_eq!(got, 4);
    }
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("litgate did not exit after draining")
    });
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
    litd.shutdown().await;
    autopilot.shutdown().await;
}
