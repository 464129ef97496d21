//! WebSockets through litgate (issue 10): grpc-websockets (improbable's transport, which the
//! Terminal UI uses for every server stream) runs streams through litgate like litd runs them,
//! and is a fourth door to the intercepted methods with the same policy and cache as grpc-web;
//! plain WebSockets are tunnelled with their close codes; a REST WebSocket cannot reach a
//! session write; the rate limiter sees each upgrade once; shutdown cuts open tunnels at the
//! drain deadline.
//!
//! The client here is written from improbable's `websocket.ts` transport, independently of
//! litgate's framing code: header block first, `0x00`-prefixed data messages, the `0x01`
//! finish-send marker; the answer read as one grpc-web byte stream across messages.

mod common;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use litgate::{
    demo::litd::WS_ECHO,
    proto::{
        litgatetest::{EchoReply, EchoRequest},
        litrpc::{
            sessions_client::SessionsClient, AddAutopilotSessionRequest,
            AddAutopilotSessionResponse, AddSessionRequest, ListSessionsRequest,
            ListSessionsResponse, SessionType,
        },
    },
};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::{
    client_async,
    tungstenite::{self, client::IntoClientRequest, protocol::frame::coding::CloseCode, Message},
    WebSocketStream,
};
use tonic::metadata::MetadataValue;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

const ADD: &str = "/litrpc.Autopilot/AddAutopilotSession";
const LIST: &str = "/litrpc.Sessions/ListSessions";
const ADD_SESSION: &str = "/litrpc.Sessions/AddSession";
const SERVER_STREAM: &str = "/litgatetest.Echo/ServerStream";

/// TLS to `addr` trusting `cert_pem`, ALPN `http/1.1` only (WebSockets are HTTP/1.1).
async fn tls(addr: SocketAddr, cert_pem: &[u8]) -> TlsStream<TcpStream> {
    // Pinned exactly, as the UI's browser would be told to trust litd's lnd-shaped cert.
    let mut cfg = rustls_config(cert_pem);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Opens a WebSocket to `path` (with the query), as a browser on the same origin would: an
/// `Origin` naming the host it connects to. `grpc` offers subprotocol `grpc-websockets`.
async fn open(
    addr: SocketAddr,
    cert_pem: &[u8],
    path: &str,
    grpc: bool,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("wss://{addr}{path}").into_client_request().unwrap();
    let origin = origin.map_or_else(|| format!("https://{addr}"), str::to_string);
    req.headers_mut().insert("origin", origin.parse().unwrap());
    if grpc {
        req.headers_mut()
            .insert("sec-websocket-protocol", "grpc-websockets".parse().unwrap());
    }
    client_async(req, tls(addr, cert_pem).await)
        .await
        .map(|(ws, resp)| {
            if grpc {
                assert_eq!(resp.headers()["sec-websocket-protocol"], "grpc-websockets");
            }
            ws
        })
}

/// The HTTP answer of a refused handshake.
fn refused(e: tungstenite::Error) -> (http::StatusCode, http::HeaderMap, String) {
    match e {
        tungstenite::Error::Http(resp) => (
            resp.status(),
            resp.headers().clone(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP answer, got {other}"),
    }
}

/// One gRPC length-prefixed frame of raw message bytes.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// What came back on a grpc-websockets call.
#[derive(Debug)]
struct Answer {
    /// Every grpc-web frame, in order: (flag, payload).
    frames: Vec<(u8, Bytes)>,
    /// The server's close frame.
    close: Option<(CloseCode, String)>,
}

fn header_lines(block: &[u8]) -> Vec<(String, String)> {
    String::from_utf8(block.to_vec())
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("name: value");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

impl Answer {
    fn messages(&self) -> Vec<Bytes> {
        self.frames
            .iter()
            .filter(|(f, _)| *f == 0)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The last header frame (the trailers, or the only frame of a call without data).
    fn trailers(&self) -> Vec<(String, String)> {
        let (_, last) = self
            .frames
            .iter()
            .rev()
            .find(|(f, _)| f & 0x80 != 0)
            .expect("a trailer frame");
        header_lines(last)
    }

    fn trailer(&self, name: &str) -> Option<String> {
        self.trailers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn status(&self) -> String {
        self.trailer("grpc-status").expect("grpc-status")
    }

    fn message(&self) -> String {
        let m = self.trailer("grpc-message").unwrap_or_default();
        percent_encoding::percent_decode_str(&m)
            .decode_utf8_lossy()
            .into_owned()
    }
}

/// Sends the call as improbable's transport does and reads the answer to the close.
async fn call_on(mut ws: Ws, metadata: &[(&str, &str)], request: &[u8]) -> Answer {
    let mut block = String::from("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n");
    for (k, v) in metadata {
        block.push_str(&format!("{k}: {v}\r\n"));
    }
    ws.send(Message::Binary(Bytes::from(block))).await.unwrap();
    let mut data = vec![0u8];
    data.extend_from_slice(&frame(request));
    ws.send(Message::Binary(Bytes::from(data))).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[1])))
        .await
        .unwrap();
    read_answer(ws).await
}

async fn read_answer(mut ws: Ws) -> Answer {
    let mut bytes = BytesMut::new();
    let mut close = None;
    while let Some(m) = ws.next().await {
        match m.expect("the connection ends with a close frame") {
            Message::Binary(b) => bytes.extend_from_slice(&b),
            Message::Close(c) => {
                close = c.map(|c| (c.code, c.reason.to_string()));
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
    Answer {
        frames: frames(bytes.freeze()),
        close,
    }
}

async fn ws_call(
    addr: SocketAddr,
    cert_pem: &[u8],
    path: &str,
    metadata: &[(&str, &str)],
    request: &[u8],
) -> Answer {
    let ws = open(addr, cert_pem, path, true, None)
        .await
        .expect("the handshake succeeds");
    call_on(ws, metadata, request).await
}

async fn gate_ws(env: &Env, path: &str, metadata: &[(&str, &str)], request: &[u8]) -> Answer {
    ws_call(
        env.gate.public_addr,
        &env.gate_cert,
        path,
        metadata,
        request,
    )
    .await
}

fn in_hours(h: u64) -> u64 {
    (SystemTime::now() + Duration::from_secs(h * 3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn autopilot_request(features: &[&str]) -> AddAutopilotSessionRequest {
    let with_configs: Vec<(&str, &str)> = features.iter().map(|f| (*f, "{}")).collect();
    autopilot_add("ws", &with_configs)
}

/// The same call over grpc-web (HTTP/1.1, as the Terminal UI sends unary calls).
async fn grpc_web(env: &Env, path: &str, msg: &[u8]) -> Collected {
    let req = http::Request::post(env.gate_uri(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("macaroon", env.macaroon())
        .body(Full::new(Bytes::from(frame(msg))))
        .unwrap();
    send(&h1_client(&env.gate_cert), req).await
}

fn echo(count: u32, fail_code: i32) -> Vec<u8> {
    EchoRequest {
        message: "tick".into(),
        count,
        fail_code,
        delay_ms: 5,
    }
    .encode_to_vec()
}

#[tokio::test]
async fn server_stream_over_grpc_websockets_is_what_litd_sends() {
    let env = Env::start().await;
    for fail in [0, 9] {
        let through = gate_ws(&env, SERVER_STREAM, &[], &echo(5, fail)).await;
        let direct = ws_call(
            env.litd.addr(),
            env.litd.cert_pem().unwrap(),
            SERVER_STREAM,
            &[],
            &echo(5, fail),
        )
        .await;
        let replies: Vec<EchoReply> = through
            .messages()
            .into_iter()
            .map(|m| EchoReply::decode(m).unwrap())
            .collect();
        assert_eq!(
            replies.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4],
            "every message, in order"
        );
        assert!(replies.iter().all(|r| r.message == "tick"));
        assert_eq!(through.messages(), direct.messages());
        assert_eq!(through.frames[0].0, 0x80, "the header frame comes first");
        assert_eq!(through.status(), fail.to_string());
        assert_eq!(through.trailers(), direct.trailers(), "the same status");
        assert_eq!(through.close, direct.close);
        assert_eq!(through.close.as_ref().unwrap().0, CloseCode::Normal);
    }
    // Tunnelled, not terminated: litd saw the upgrades themselves.
    assert_eq!(env.litd.count(SERVER_STREAM), 4);
    env.stop().await;
}

const POLICY: &str = "[privacy]\ndeny_clear = [\"ClearNetworkAddresses\"]\n";

#[tokio::test]
async fn refused_add_autopilot_session_over_websocket_is_refused_as_over_grpc_web() {
    let env = Env::start_with(POLICY).await;
    let mac = env.macaroon();
    let mut fewer_flags = autopilot_request(&["AutoFees"]);
    fewer_flags.privacy_flags_set = true;
    fewer_flags.privacy_flags = 0x01;
    let cases = [
        ("flags below what the features need", fewer_flags),
        ("unknown feature", autopilot_request(&["AutoMagic"])),
        ("denied flag", autopilot_request(&["AutoOpen"])),
    ];
    for (name, req) in cases {
        let msg = req.encode_to_vec();
        let web = grpc_web(&env, ADD, &msg).await;
        let ws = gate_ws(&env, ADD, &[("macaroon", &mac)], &msg).await;
        assert_ne!(ws.status(), "0", "{name}: refused");
        assert_eq!(Some(ws.status()), web.grpc_status(), "{name}: same code");
        assert_eq!(
            Some(ws.message()),
            web.grpc_message(),
            "{name}: same message"
        );
        assert!(ws.messages().is_empty(), "{name}");
        assert_eq!(ws.close.as_ref().unwrap().0, CloseCode::Normal, "{name}");
    }
    // Neither the upgrade nor the call reached litd (the authentication probe aside, which
    // cannot write); nothing was registered or approved.
    assert_eq!(writable_adds(&env.litd), 0);
    assert!(
        env.litd.received().iter().all(|r| r.method == "POST"),
        "no upgrade reached litd"
    );
    assert!(env.autopilot.registrations().is_empty());
    assert_eq!(env.gate.approvals().len(), 0);
    env.stop().await;
}

#[tokio::test]
async fn malformed_grpc_websockets_calls_are_refused_with_a_status() {
    let env = Env::start().await;
    let gate = env.gate.public_addr;
    let mac = env.macaroon();
    let msg = autopilot_request(&["HealthCheck"]).encode_to_vec();

    // A control byte that is neither data nor finish-send.
    let mut ws = open(gate, &env.gate_cert, ADD, true, None).await.unwrap();
    ws.send(Message::Binary(Bytes::from(format!(
        "content-type: application/grpc-web+proto\r\nmacaroon: {mac}\r\n"
    ))))
    .await
    .unwrap();
    let mut bad = vec![7u8];
    bad.extend_from_slice(&frame(&msg));
    ws.send(Message::Binary(Bytes::from(bad))).await.unwrap();
    let a = read_answer(ws).await;
    assert_eq!(a.status(), "3");
    assert!(a.message().contains("unknown control byte 0x07"), "{a:?}");

    // A header block that is not `name: value` lines.
    let mut ws = open(gate, &env.gate_cert, ADD, true, None).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(
        b"content-type application/grpc-web\r\n",
    )))
    .await
    .unwrap();
    let a = read_answer(ws).await;
    assert_eq!(a.status(), "3");
    assert!(
        a.message().contains("malformed header block, line 1"),
        "{a:?}"
    );

    // A text message.
    let mut ws = open(gate, &env.gate_cert, ADD, true, None).await.unwrap();
    ws.send(Message::text(
        "content-type: application/grpc-web+proto\r\n",
    ))
    .await
    .unwrap();
    assert_eq!(read_answer(ws).await.status(), "3");

    // More than listen.max_message_bytes (4 MiB by default), in messages of 64 KiB: litgate
    // stops reading at the limit, answers, and drops the rest while it closes.
    let mut ws = open(gate, &env.gate_cert, ADD, true, None).await.unwrap();
    ws.send(Message::Binary(Bytes::from(format!(
        "content-type: application/grpc-web+proto\r\nmacaroon: {mac}\r\n"
    ))))
    .await
    .unwrap();
    for chunk in frame(&vec![b'x'; 5 * 1024 * 1024]).chunks(64 * 1024) {
        let mut m = vec![0u8];
        m.extend_from_slice(chunk);
        ws.send(Message::Binary(Bytes::from(m))).await.unwrap();
    }
    ws.send(Message::Binary(Bytes::from_static(&[1])))
        .await
        .unwrap();
    let a = read_answer(ws).await;
    assert_eq!(a.status(), "8");
    assert!(a.message().contains("listen.max_message_bytes"), "{a:?}");

    // A cross-origin handshake is refused, as litd refuses it.
    let e = open(
        gate,
        &env.gate_cert,
        ADD,
        true,
        Some("https://evil.example"),
    )
    .await
    .unwrap_err();
    let (status, headers, _) = refused(e);
    assert_eq!(status, 403);
    assert_eq!(headers["grpc-status"], "7");

    assert_eq!(env.litd.count(ADD), 0, "nothing reached litd");
    env.stop().await;
}

#[tokio::test]
async fn approved_add_autopilot_session_over_websocket_carries_explicit_flags() {
    // The relay on (litd going around it), so the approval is recorded and stays.
    let env = Env::start_relay_bypassed("").await;
    let mac = env.macaroon();
    let req = autopilot_request(&["AutoFees", "HealthCheck"]);
    let ws = gate_ws(&env, ADD, &[("macaroon", &mac)], &req.encode_to_vec()).await;
    assert_eq!(ws.status(), "0", "{ws:?}");
    let session = AddAutopilotSessionResponse::decode(ws.messages()[0].clone())
        .unwrap()
        .session
        .unwrap();
    assert_eq!(session.label, "ws");

    let rec = env.litd.received();
    // The last one: litgate's authentication probe (no features) came first.
    let got = rec
        .iter()
        .rfind(|r| r.path == ADD)
        .expect("litd received it");
    assert_eq!(got.method, "POST", "as a grpc-web call, not an upgrade");
    assert_eq!(got.content_type, "application/grpc-web+proto");
    assert_eq!(got.macaroon.as_deref(), Some(mac.as_str()));
    let sent = AddAutopilotSessionRequest::decode(frames(got.body.clone())[0].1.clone()).unwrap();
    assert!(sent.privacy_flags_set, "flags written explicitly");
    assert_eq!(sent.privacy_flags, 0x04 | 0x08, "the features' union");
    assert_eq!(env.autopilot.registrations().len(), 1);
    assert_eq!(env.gate.approvals().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn session_write_over_websocket_invalidates_the_cache() {
    let env = Env::start().await;
    let mac = env.macaroon();
    let mut sessions = SessionsClient::new(env.gate_channel().await);
    let list = |s: &mut SessionsClient<tonic::transport::Channel>| {
        let mut req = tonic::Request::new(ListSessionsRequest {});
        req.metadata_mut()
            .insert("macaroon", MetadataValue::try_from(mac.as_str()).unwrap());
        let mut s = s.clone();
        async move { s.list_sessions(req).await.unwrap().into_inner() }
    };
    let before = list(&mut sessions).await;
    list(&mut sessions).await;
    assert_eq!(env.litd.count(LIST), 1, "the second list was a cache hit");

    let add = AddSessionRequest {
        label: "over ws".into(),
        session_type: SessionType::TypeMacaroonReadonly as i32,
        expiry_timestamp_seconds: in_hours(24),
        mailbox_server_addr: "mailbox.example:443".into(),
        ..Default::default()
    };
    let ws = gate_ws(
        &env,
        ADD_SESSION,
        &[("macaroon", &mac)],
        &add.encode_to_vec(),
    )
    .await;
    assert_eq!(ws.status(), "0", "{ws:?}");
    assert_eq!(env.litd.count(ADD_SESSION), 1);

    let after = list(&mut sessions).await;
    assert_eq!(env.litd.count(LIST), 2, "the write invalidated the cache");
    assert_eq!(after.sessions.len(), before.sessions.len() + 1);
    assert!(after.sessions.iter().any(|s| s.label == "over ws"));

    // ListSessions over a websocket gets the answer too.
    let ws = gate_ws(&env, LIST, &[("macaroon", &mac)], &[]).await;
    assert_eq!(ws.status(), "0");
    let listed = ListSessionsResponse::decode(ws.messages()[0].clone()).unwrap();
    assert_eq!(listed.sessions.len(), after.sessions.len());
    env.stop().await;
}

#[tokio::test]
async fn plain_websocket_is_tunnelled_with_its_close_code() {
    let env = Env::start().await;
    let mut ws = open(env.gate.public_addr, &env.gate_cert, WS_ECHO, false, None)
        .await
        .expect("litd's 101 reaches the client");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::Binary(Bytes::from_static(b"\x00\x01\x02")))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"\x00\x01\x02"))
    );
    ws.send(Message::text("close 4001 bye")).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(c)) => {
            assert_eq!(c.code, CloseCode::from(4001));
            assert_eq!(c.reason.as_str(), "bye");
        }
        other => panic!("expected litd's close frame, got {other:?}"),
    }
    // The close handshake completes through the tunnel: litd closes, the stream ends.
    assert!(ws.next().await.is_none());
    drop(ws);
    assert_eq!(env.litd.count(WS_ECHO), 1);
    env.stop().await;
}

#[tokio::test]
async fn non_101_answers_pass_through_and_rest_websockets_cannot_write_sessions() {
    let env = Env::start().await;
    let gate = env.gate.public_addr;

    // litd answers this upgrade without switching: its answer reaches the client as it is.
    let e = open(gate, &env.gate_cert, "/no/such/socket", false, None)
        .await
        .unwrap_err();
    let (status, _, body) = refused(e);
    assert_eq!(status, 404);
    assert_eq!(body, "404 page not found\n");
    assert_eq!(env.litd.count("/no/such/socket"), 1);

    // litd's own grpc-websockets origin check sees the client's Host through the tunnel: a
    // cross-origin handshake gets litd's bare 403, a same-origin one works (first test).
    let e = open(
        gate,
        &env.gate_cert,
        SERVER_STREAM,
        true,
        Some("https://evil.example"),
    )
    .await
    .unwrap_err();
    let (status, headers, body) = refused(e);
    assert_eq!(status, 403);
    assert!(
        headers.get("grpc-status").is_none(),
        "litd's answer, not litgate's"
    );
    assert!(body.is_empty());

    // A REST WebSocket to a session write (lnd's proxy takes the method from `?method=`).
    for path in [
        "/v1/autopilot/sessions?method=POST",
        "/v1/sessions?method=P%4FST",
        "/v1/sessions/AqE?method=DELETE",
    ] {
        let e = open(gate, &env.gate_cert, path, false, None)
            .await
            .unwrap_err();
        let (status, _, body) = refused(e);
        assert_eq!(status, 501, "{path}");
        assert!(
            body.contains("over a REST WebSocket is not supported"),
            "{path}: {body}"
        );
    }
    assert_eq!(env.litd.count("/v1/autopilot/sessions"), 0);
    assert_eq!(env.litd.count("/v1/sessions"), 0);
    // A list may tunnel (the demo litd answers it without upgrading: no macaroon here).
    let e = open(gate, &env.gate_cert, "/v1/sessions", false, None)
        .await
        .unwrap_err();
    let (status, _, body) = refused(e);
    assert_eq!(status, 500);
    assert!(body.contains("expected 1 macaroon"), "{body}");
    assert_eq!(env.litd.count("/v1/sessions"), 1);

    // litd down: the usual UNAVAILABLE, without litd's address.
    env.litd.pause().await;
    let e = open(gate, &env.gate_cert, WS_ECHO, false, None)
        .await
        .unwrap_err();
    let (status, _, body) = refused(e);
    assert_eq!(status, 503);
    assert!(body.contains("litd is unavailable"), "{body}");
    assert!(!body.contains(&env.litd.addr().to_string()), "{body}");
    env.litd.resume().await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn rate_limit_sees_each_websocket_once_before_litd() {
    let env = Env::start_with(
        "[cache]\nenabled = false\n[rate_limit]\nread = { iterations = 1, num_hours = 1 }\n",
    )
    .await;
    let mac = env.macaroon();
    let ws = gate_ws(&env, LIST, &[("macaroon", &mac)], &[]).await;
    assert_eq!(ws.status(), "0", "the first websocket is within the limit");
    assert_eq!(env.litd.count(LIST), 1);

    let e = open(env.gate.public_addr, &env.gate_cert, LIST, true, None)
        .await
        .unwrap_err();
    let (status, headers, body) = refused(e);
    assert_eq!(status, 429);
    assert_eq!(headers["grpc-status"], "8");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body.contains("rate limit exceeded: read limit 1 per 1h"),
        "{body}"
    );
    assert_eq!(
        env.litd.count(LIST),
        1,
        "the refused websocket reached nothing"
    );
    env.stop().await;
}

/// An open WebSocket counts as in flight for the drain, and is cut at its deadline.
#[tokio::test]
async fn shutdown_with_an_open_tunnel_returns_within_the_drain_deadline() {
    let Bare {
        litd,
        gate,
        gate_cert,
        ..
    } = Bare::with_drain(Duration::from_millis(300)).await;
    let mut ws = open(gate.public_addr, &gate_cert, WS_ECHO, false, None)
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );

    // Bounded, not timed: a drain that waited for the socket would never end.
    tokio::time::timeout(Duration::from_secs(10), gate.shutdown())
        .await
        .expect("shutdown returns at the drain deadline");
    let after = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the tunnel was closed");
    assert!(
        !matches!(after, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "nothing more comes through a cut tunnel: {after:?}"
    );
    litd.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_add_over_grpc_websockets_gets_litds_answer_and_is_counted() {
    let env = Env::start_with(POLICY).await;
    let forged = litgate::demo::MacaroonBaker::new().bake_admin().to_hex();
    // A request the policy would refuse (a denied flag): without a credential litd accepts, the
    // caller learns nothing of the policy and gets litd's own answer.
    let msg = autopilot_request(&["AutoOpen"]).encode_to_vec();
    for metadata in [vec![], vec![("macaroon", forged.as_str())]] {
        env.litd.clear_received();
        let via = gate_ws(&env, ADD, &metadata, &msg).await;
        assert_eq!(writable_adds(&env.litd), 0, "only the probe reached litd");
        let direct = ws_call(
            env.litd.addr(),
            env.litd.cert_pem().unwrap(),
            ADD,
            &metadata,
            &msg,
        )
        .await;
        assert_ne!(direct.status(), "0");
        assert_eq!(
            (via.status(), via.message()),
            (direct.status(), direct.message()),
            "litd's answer, not the policy's"
        );
        assert!(!via.message().contains("ClearNetworkAddresses"));
    }

    // Counted with the status the caller received inside the WebSocket, not the 101.
    let mac = env.macaroon();
    let refused = gate_ws(&env, ADD, &[("macaroon", &mac)], &msg).await;
    assert_eq!(refused.status(), "9");
    let (_, metrics) = admin_get(&env.admin_uri("/metrics")).await;
    let line = |code: &str| {
        format!(
            "litgate_requests_total{{route=\"AddAutopilotSession\",protocol=\"grpc-websockets\",grpc_status=\"{code}\",http_status=\"101\",outcome=\"error\"}}"
        )
    };
    assert!(
        metrics.contains(&format!("{} 1", line("FailedPrecondition"))),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("{} 2", line("Unknown"))),
        "{metrics}"
    );
    assert!(
        !metrics.contains("grpc_status=\"\",http_status=\"101\""),
        "{metrics}"
    );
    env.stop().await;
}
