//! What litd's connection failures do to callers (issue 12 item 5, upstream side): a call litd
//! provably never saw (its stream refused, or above the last stream a GOAWAY names) is sent
//! again on a fresh connection and succeeds, its request body intact; a call litd did see and
//! then lost, or an answer cut mid-way (litd killed), ends `UNAVAILABLE` in the caller's
//! protocol, never `INTERNAL`.
//!
//! The refusing and going-away litd is a small HTTP/2 server written here (the demo litd,
//! a tonic server, cannot be made to refuse a stream or name a last stream).

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use common::*;
use http_body_util::{BodyExt, Full};
use litgate::{
    app::{self, Running},
    config::Config,
    demo::{DemoAutopilot, DemoAutopilotConfig},
    proto::litgatetest::{echo_client::EchoClient, EchoRequest},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::Code;

const UNARY: &str = "/litgatetest.Echo/Unary";

/// What the fake litd does to calls.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Refuses the first stream of the first connection (`REFUSED_STREAM`), echoes the rest.
    RefuseFirst,
    /// Answers the first connection's first call with a GOAWAY whose last stream is 0 (the
    /// call was never processed), echoes on later connections.
    GoAwayFirst,
    /// Reads every call's body, then resets the stream (`INTERNAL_ERROR`): litd saw the call.
    ResetAfterReading,
    /// Reads every call's body, answers with a head only when the body says `head`, then
    /// holds the stream open and records how the caller's side ended it (`reset CANCEL`).
    Hold,
}

/// A fake litd speaking plain HTTP/2 (h2c), recording the bodies of the calls it read.
struct FaultyLitd {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(usize, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyLitd {
    async fn start(fault: Fault) -> FaultyLitd {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(usize, Bytes)>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            for n in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                conns.push(tokio::spawn(async move {
                    if n == 0 && fault == Fault::GoAwayFirst {
                        go_away_on_first_headers(tcp).await;
                    } else {
                        serve_h2(tcp, n, fault, record).await;
                    }
                }));
            }
        });
        FaultyLitd { addr, seen, task }
    }

    fn seen(&self) -> Vec<(usize, Bytes)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultyLitd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_h2(
    tcp: tokio::net::TcpStream,
    conn: usize,
    fault: Fault,
    seen: Arc<Mutex<Vec<(usize, Bytes)>>>,
) {
    let Ok(mut h2) = h2::server::handshake(tcp).await else {
        return;
    };
    let mut stream_no = 0;
    while let Some(Ok((req, mut respond))) = h2.accept().await {
        stream_no += 1;
        if fault == Fault::RefuseFirst && conn == 0 && stream_no == 1 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut body = req.into_body();
            let mut got = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            let got = got.freeze();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((conn, got.clone()));
            if fault == Fault::ResetAfterReading {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            if fault == Fault::Hold {
                let ended = hold(respond, got.windows(4).any(|w| w == b"head")).await;
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((conn, Bytes::from(ended)));
                return;
            }
            // The request frame echoed: an EchoRequest's `message` is field 1, as EchoReply's.
            let head = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(head, false) else {
                return;
            };
            let _ = send.send_data(got, false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let _ = send.send_trailers(trailers);
        });
    }
}

/// Speaks just enough HTTP/2 by hand to answer the first HEADERS frame with
/// `GOAWAY(last_stream_id = 0, NO_ERROR)`: litd going away before it processed the call.
/// Holds a call open (after an answer head and one message if `head`) until the caller's side
/// resets it; says how it ended.
async fn hold(mut respond: h2::server::SendResponse<Bytes>, head: bool) -> String {
    let reason = if head {
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(mut send) = respond.send_response(head, false) else {
            return "head not sent".into();
        };
        let _ = send.send_data(Bytes::from_static(b"\0\0\0\0\0"), false);
        std::future::poll_fn(|cx| send.poll_reset(cx)).await
    } else {
        std::future::poll_fn(|cx| respond.poll_reset(cx)).await
    };
    match reason {
        Ok(reason) => format!("reset {reason:?}"),
        Err(e) => format!("error {e}"),
    }
}

async fn go_away_on_first_headers(mut tcp: tokio::net::TcpStream) {
    let mut preface = [0u8; 24];
    if tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    // An empty SETTINGS frame: the server's preface.
    let _ = tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        match (head[3], head[4]) {
            // The client's SETTINGS: acknowledged.
            (4, 0) => {
                let _ = tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
            }
            // HEADERS: going away, having processed nothing.
            (1, _) => {
                let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let _ = tcp.write_all(&goaway).await;
                // Held open until litgate closes it.
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest).await;
                return;
            }
            _ => {}
        }
    }
}

/// litgate (in-process, TLS on its public face) in front of a plaintext litd at `upstream`,
/// its catalogue refresh pointed at a demo Autopilot server.
async fn gate_in_front_of(upstream: SocketAddr) -> (Running, Vec<u8>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let autopilot = DemoAutopilot::start(DemoAutopilotConfig::default()).expect("starts");
    let toml = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
addr = "{upstream}"
plaintext = true
connect_timeout = "1s"
[autopilot]
server = "{autopilot}"
plaintext = true
[autopilot.relay]
addr = ""
[cache]
enabled = false
[store]
data_dir = "{data}"
[admin]
addr = "127.0.0.1:0"
"#,
        data = dir.path().join("data").display(),
        autopilot = autopilot.addr(),
    );
    let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let gate = app::start(&config).await.expect("litgate starts");
    let cert = std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap();
    (gate, cert, Guard(dir, autopilot))
}

/// What a test keeps until it ends: the data directory and the Autopilot server.
#[allow(dead_code)]
struct Guard(tempfile::TempDir, DemoAutopilot);

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        count: 0,
        fail_code: 0,
        delay_ms: 0,
    }
}

async fn retries_counted(gate: &Running) -> f64 {
    let (_, metrics) = admin_get(&format!("http://{}/metrics", gate.admin_addr)).await;
    metric(&metrics, "litgate_upstream_retries_total")
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_on_a_fresh_connection() {
    let litd = FaultyLitd::start(Fault::RefuseFirst).await;
    let (gate, cert, _dir) = gate_in_front_of(litd.addr).await;
    let mut echo = EchoClient::new(channel(gate.public_addr, &cert).await);
    let reply = tokio::time::timeout(Duration::from_secs(10), echo.unary(request("again")))
        .await
        .expect("answers")
        .expect("the retry succeeds")
        .into_inner();
    assert_eq!(reply.message, "again");
    // litd read the call once, whole, on the second connection.
    let seen = litd.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, 1, "sent again on a fresh connection");
    assert_eq!(seen[0].1, grpc_frame(&request("again")));
    assert_eq!(retries_counted(&gate).await, 1.0);
    gate.shutdown().await;
}

#[tokio::test]
async fn a_call_above_the_goaway_last_stream_is_sent_again() {
    let litd = FaultyLitd::start(Fault::GoAwayFirst).await;
    let (gate, cert, _dir) = gate_in_front_of(litd.addr).await;
    let mut echo = EchoClient::new(channel(gate.public_addr, &cert).await);
    let reply = tokio::time::timeout(Duration::from_secs(10), echo.unary(request("moved")))
        .await
        .expect("answers")
        .expect("the retry succeeds")
        .into_inner();
    assert_eq!(reply.message, "moved");
    let seen = litd.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0], (1, grpc_frame(&request("moved"))));
    assert_eq!(retries_counted(&gate).await, 1.0);
    gate.shutdown().await;
}

#[tokio::test]
async fn a_call_litd_saw_and_lost_is_unavailable_and_not_sent_again() {
    let litd = FaultyLitd::start(Fault::ResetAfterReading).await;
    let (gate, cert, _dir) = gate_in_front_of(litd.addr).await;
    let mut echo = EchoClient::new(channel(gate.public_addr, &cert).await);
    let status = tokio::time::timeout(Duration::from_secs(10), echo.unary(request("once")))
        .await
        .expect("answers")
        .expect_err("litd reset the call");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(litd.seen().len(), 1, "never sent twice");
    assert_eq!(retries_counted(&gate).await, 0.0);

    // grpc-web callers get the same status, in their protocol.
    let resp = send(
        &h1_client(&cert),
        http::Request::post(format!(
            "https://localhost:{}{UNARY}",
            gate.public_addr.port()
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(grpc_frame(&request("web"))))
        .unwrap(),
    )
    .await;
    // A trailers-only answer: HTTP 200 with the status in the head, as grpc-web carries it.
    assert_eq!(resp.headers["grpc-status"], "14", "{resp:?}");
    assert_eq!(litd.seen().len(), 2);
    gate.shutdown().await;
}

/// Reads `body` until its first DATA frame (saying so on `got_first`), then the rest.
async fn first_then_rest(
    mut body: hyper::body::Incoming,
    got_first: tokio::sync::oneshot::Sender<()>,
) -> (
    Bytes,
    Result<http_body_util::Collected<Bytes>, hyper::Error>,
) {
    let first = loop {
        let frame = body
            .frame()
            .await
            .expect("a first frame")
            .expect("readable");
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    let _ = got_first.send(());
    (first, body.collect().await)
}

/// grpc-web-text as litgate and litd write it: padded base64 pieces, one after another.
fn decode_text(text: &str) -> Bytes {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .find('=')
            .map(|i| rest[i..].find(|c| c != '=').map_or(rest.len(), |j| i + j))
            .unwrap_or(rest.len());
        out.extend(
            b64.decode(&rest[..end])
                .unwrap_or_else(|e| panic!("{e}: {text}")),
        );
        rest = &rest[end..];
    }
    Bytes::from(out)
}

#[tokio::test]
async fn litd_killed_mid_stream_ends_the_call_unavailable_in_every_grpc_protocol() {
    let env = Env::start().await;
    let slow_stream = EchoRequest {
        message: "m".into(),
        count: 10_000,
        fail_code: 0,
        delay_ms: 20,
    };

    // gRPC: the messages so far, then UNAVAILABLE (not a reset read as INTERNAL).
    let mut echo = EchoClient::new(env.gate_channel().await);
    let mut stream = echo
        .server_stream(slow_stream.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().index, 0);
    env.litd.pause().await;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    env.litd.resume().await.unwrap();

    // grpc-web (binary, then text): the answer ends with a trailer frame saying 14.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let client = h1_client(&env.gate_cert);
    for text in [false, true] {
        let frame = grpc_frame(&slow_stream);
        let (ctype, body) = match text {
            false => ("application/grpc-web+proto", frame),
            true => ("application/grpc-web-text", Bytes::from(b64.encode(&frame))),
        };
        let req = http::Request::post(env.gate_uri("/litgatetest.Echo/ServerStream"))
            .header("content-type", ctype)
            .header("x-grpc-web", "1")
            .body(Full::new(body))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("answers")
            .expect("a head");
        assert_eq!(resp.status(), 200);
        let (got_first, first_read) = tokio::sync::oneshot::channel();
        let reading = tokio::spawn(first_then_rest(resp.into_body(), got_first));
        tokio::time::timeout(Duration::from_secs(10), first_read)
            .await
            .expect("a first message")
            .unwrap();
        env.litd.pause().await;
        let (first, rest) = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("the answer ends")
            .unwrap();
        let rest = rest
            .expect("ends with a frame, not a broken body")
            .to_bytes();
        let mut all = BytesMut::from(&first[..]);
        all.extend_from_slice(&rest);
        let all = match text {
            false => all.freeze(),
            true => decode_text(std::str::from_utf8(&all).unwrap()),
        };
        let fs = frames(all);
        let (flags, trailer) = fs.last().expect("frames").clone();
        assert_eq!(flags & 0x80, 0x80, "ends with a trailer frame ({text})");
        let trailer = trailer_block(&trailer);
        assert_eq!(trailer["grpc-status"], "14", "{trailer:?}");
        assert!(fs.len() >= 2, "messages came before the trailer");
        env.litd.resume().await.unwrap();
    }
    env.stop().await;
}

#[tokio::test]
async fn callers_that_stop_reading_do_not_starve_the_others() {
    let env = Env::start().await;
    // Three callers, each on a connection of its own, start streams of large messages and
    // never read them: whatever they hold of litgate's connection to litd, they keep.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut echo = EchoClient::new(env.gate_channel().await);
        let stream = echo
            .server_stream(EchoRequest {
                message: "x".repeat(64 * 1024),
                count: 1_000,
                fail_code: 0,
                delay_ms: 0,
            })
            .await
            .expect("the stream starts")
            .into_inner();
        stalled.push((echo, stream));
    }
    // A fourth caller's calls keep being answered, in bounded time each (a generous bound: a
    // starved connection never answers at all).
    let mut echo = EchoClient::new(env.gate_channel().await);
    for i in 0..50 {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            echo.unary(request(&format!("call {i}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("call {i} starved"))
        .expect("answered");
        assert_eq!(reply.into_inner().message, format!("call {i}"));
        // The stalled streams got litd's data meanwhile: litd streams as fast as windows allow.
        tokio::task::yield_now().await;
    }
    // Also a call with a large answer of its own (it needs flow-control credit, not just a
    // stream): a 1 MiB stream read whole.
    let mut big = echo
        .server_stream(EchoRequest {
            message: "y".repeat(64 * 1024),
            count: 16,
            fail_code: 0,
            delay_ms: 0,
        })
        .await
        .expect("starts")
        .into_inner();
    let mut n = 0;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), big.message())
        .await
        .expect("not starved")
        .expect("readable")
    {
        assert_eq!(m.message.len(), 64 * 1024);
        n += 1;
    }
    assert_eq!(n, 16);
    drop(stalled);
    env.stop().await;
}

/// A caller that gives up on a call (RST_STREAM) has litd's stream cancelled too, whether it
/// gives up waiting for the answer's head or in the middle of the answer: litd stops working
/// for nobody. Over HTTP/2 directly (the grpc-web and REST doors end calls by closing).
#[tokio::test]
async fn a_call_the_caller_resets_is_cancelled_at_litd() {
    let litd = FaultyLitd::start(Fault::Hold).await;
    let (gate, cert, _guard) = gate_in_front_of(litd.addr).await;
    let tls = tls_connect(gate.public_addr, &cert, &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let call = |message: &'static str| {
        let mut client = client.clone();
        async move {
            client = client.ready().await.unwrap();
            let head = http::Request::post(format!("https://localhost{UNARY}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (answer, mut send) = client.send_request(head, false).unwrap();
            send.send_data(grpc_frame(&request(message)), true).unwrap();
            (answer, send)
        }
    };
    let litd = &litd;
    let until_seen = |n: usize| async move {
        for _ in 0..200 {
            if litd.seen().len() >= n {
                return litd.seen();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("litd saw {:?}", litd.seen());
    };
    // Before the answer's head: litd has the call and answers nothing yet.
    let (answer, mut send) = call("waiting").await;
    until_seen(1).await;
    send.send_reset(h2::Reason::CANCEL);
    drop(answer);
    let seen = until_seen(2).await;
    assert_eq!(seen[1].1, Bytes::from("reset CANCEL"), "{seen:?}");
    // In the middle of the answer: its head and first message are in.
    let (answer, mut send) = call("head").await;
    let resp = answer.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(body.data().await.unwrap().unwrap().len(), 5);
    send.send_reset(h2::Reason::CANCEL);
    drop(body);
    let seen = until_seen(4).await;
    assert_eq!(seen[3].1, Bytes::from("reset CANCEL"), "{seen:?}");
    gate.shutdown().await;
}
