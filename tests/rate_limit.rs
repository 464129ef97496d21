//! Rate limits (`docs/design.md`, "Rate limits") through the real stack, against the fake litd: a
//! refusal is RESOURCE_EXHAUSTED with `retry-after` for gRPC and 429 with `Retry-After` and
//! grpc-gateway JSON for REST, it names the limit, and the refused call never reaches litd; a
//! stream counts once; forged credentials share their address's bucket; the state is visible
//! in the metrics.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::{
    demo::MacaroonBaker,
    proto::{
        litgatetest::{echo_client::EchoClient, EchoRequest},
        litrpc::{sessions_client::SessionsClient, AddSessionRequest, ListSessionsRequest},
    },
};
use tonic::{metadata::MetadataValue, Code};

const LIST_SESSIONS: &str = "/litrpc.Sessions/ListSessions";
/// ListSessions is answered from the session cache when it can be; these tests count what
/// reaches litd, so they turn the cache off.
const NO_CACHE: &str = "[cache]\nenabled = false\n";
const SERVER_STREAM: &str = "/litgatetest.Echo/ServerStream";

fn with_macaroon<T>(msg: T, mac: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("macaroon", MetadataValue::try_from(mac).unwrap());
    req
}

#[tokio::test]
async fn grpc_refusal_is_resource_exhausted_with_retry_after_before_litd() {
    let env = Env::start_with(&format!(
        "{NO_CACHE}[rate_limit]\nread = {{ iterations = 3, num_hours = 1 }}\n"
    ))
    .await;
    let mac = env.macaroon();
    let mut sessions = SessionsClient::new(env.gate_channel().await);

    // The first call is charged to the address (litd has not accepted the macaroon yet); its
    // OK moves the macaroon to a bucket of its own, charged for that first call too: exactly
    // `iterations` calls pass, as the limit says.
    for _ in 0..3 {
        sessions
            .list_sessions(with_macaroon(ListSessionsRequest {}, &mac))
            .await
            .expect("within the limit");
    }
    let status = sessions
        .list_sessions(with_macaroon(ListSessionsRequest {}, &mac))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded: read limit 3 per 1h for this credential"),
        "{}",
        status.message()
    );
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One read every 20 minutes.
    assert!((1..=1200).contains(&retry), "{retry}");
    assert_eq!(
        env.litd.count(LIST_SESSIONS),
        3,
        "three calls reached litd, the refused one did not"
    );
    env.stop().await;
}

#[tokio::test]
async fn rest_refusal_is_429_with_retry_after_and_gateway_json() {
    let env = Env::start_with(&format!(
        "{NO_CACHE}[rate_limit]\nread = {{ iterations = 2, num_hours = 1 }}\n"
    ))
    .await;
    let mac = env.macaroon();
    let client = h1_client(&env.gate_cert);
    let get = || {
        http::Request::get(env.gate_uri("/v1/sessions"))
            .header("Grpc-Metadata-Macaroon", mac.clone())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // One on the address (charged to the credential once litd accepts it), then one more.
    for _ in 0..2 {
        let ok = send(&client, get()).await;
        assert_eq!(ok.status, 200, "{ok:?}");
    }
    let refused = send(&client, get()).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    let json = refused.json();
    assert_eq!(json["code"], 8);
    assert_eq!(json["details"], serde_json::json!([]));
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("read limit 2 per 1h"), "{message}");
    assert_eq!(env.litd.count("/v1/sessions"), 2);

    // A REST write is counted against the write limit, not the exhausted read one.
    let add = http::Request::post(env.gate_uri("/v1/sessions"))
        .header("Grpc-Metadata-Macaroon", mac.clone())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let add = send(&client, add).await;
    assert_ne!(add.status, 429, "{add:?}");
    env.stop().await;
}

#[tokio::test]
async fn a_server_stream_counts_once_when_it_opens() {
    // Echo is not in the method table, so it is a write, as in litd.
    let env = Env::start_with("[rate_limit]\nwrite = { iterations = 2, num_hours = 1 }\n").await;
    let mut echo = EchoClient::new(env.gate_channel().await);
    for _ in 0..2 {
        let mut stream = echo
            .server_stream(EchoRequest {
                message: "m".into(),
                count: 25,
                fail_code: 0,
                delay_ms: 0,
            })
            .await
            .expect("stream opens")
            .into_inner();
        let mut n = 0;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 25, "every message of an admitted stream arrives");
    }
    let status = echo
        .server_stream(EchoRequest {
            message: "m".into(),
            count: 25,
            fail_code: 0,
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("write limit 2 per 1h for this address"),
        "{}",
        status.message()
    );
    assert_eq!(env.litd.count(SERVER_STREAM), 2);
    env.stop().await;
}

#[tokio::test]
async fn forged_macaroons_share_the_address_bucket_and_stay_out_of_the_state() {
    let env = Env::start_with(&format!(
        "{NO_CACHE}[rate_limit]\nread = {{ iterations = 3, num_hours = 1 }}\n\
         [[rate_limit.method]]\npath = \"/litrpc.Sessions/AddSession\"\n\
         limit = {{ iterations = 0, num_hours = 1 }}\n",
    ))
    .await;
    let mut sessions = SessionsClient::new(env.gate_channel().await);
    let mut reached_litd_refused = 0;
    let mut refused_here = 0;
    for _ in 0..20 {
        // A well-formed macaroon from another root key: a new identifier every time.
        let forged = MacaroonBaker::new().bake_admin().to_hex();
        match sessions
            .list_sessions(with_macaroon(ListSessionsRequest {}, &forged))
            .await
        {
            Ok(_) => panic!("the fake litd accepted a forged macaroon"),
            Err(s) if s.code() == Code::ResourceExhausted => refused_here += 1,
            Err(_) => reached_litd_refused += 1,
        }
    }
    assert_eq!((reached_litd_refused, refused_here), (3, 17));
    assert_eq!(env.litd.count(LIST_SESSIONS), 3);

    // The genuine macaroon from the same address is not yet accepted: same exhausted bucket.
    let status = sessions
        .list_sessions(with_macaroon(ListSessionsRequest {}, &env.macaroon()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    // A blocked override refuses at once, with its own message.
    let status = sessions
        .add_session(with_macaroon(AddSessionRequest::default(), &env.macaroon()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("/litrpc.Sessions/AddSession calls are blocked"),
        "{}",
        status.message()
    );
    assert_eq!(env.litd.count("/litrpc.Sessions/AddSession"), 0);

    let (code, text) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "litgate_rate_limit_keys"), 1.0, "{text}");
    assert_eq!(metric(&text, "litgate_rate_limit_identities"), 0.0);
    let decisions = |class: &str, outcome: &str| {
        text.lines()
            .filter(|l| l.starts_with("litgate_rate_limit_decisions_total{"))
            .filter(|l| {
                l.contains(&format!("class=\"{class}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(decisions("read", "allowed"), 3.0, "{text}");
    assert_eq!(decisions("read", "refused"), 18.0);
    assert_eq!(decisions("write", "refused"), 1.0);
    assert!(
        !text.contains(&env.macaroon()),
        "a credential leaked into metrics"
    );
    env.stop().await;
}

#[tokio::test]
async fn grpc_web_ok_trailer_frame_accepts_the_credential() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let req = http::Request::post(env.gate_uri(LIST_SESSIONS))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("macaroon", mac)
        .body(Full::new(grpc_frame(&ListSessionsRequest {})))
        .unwrap();
    let resp = send(&h1_client(&env.gate_cert), req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let (_, text) = admin_get(&env.admin_uri("/metrics")).await;
    assert_eq!(
        metric(&text, "litgate_rate_limit_identities"),
        1.0,
        "{text}"
    );
    env.stop().await;
}
