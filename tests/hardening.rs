//! Clients that stall, starve or exhaust the public face (issue 12): a reader that stops
//! reading, connections that never speak or sit idle, more connections than the caps allow,
//! oversized request heads on both HTTP versions, more calls than `listen.max_in_flight`.
//! Timeouts are set short so that the tests poll for the outcome with a generous bound; no
//! test asserts how long anything took.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use litgate::proto::litgatetest::{echo_client::EchoClient, EchoRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO_STREAM: &str = "/litgatetest.Echo/ServerStream";
const ECHO_UNARY: &str = "/litgatetest.Echo/Unary";

/// Bound on how long a test waits for something litgate must do after a short timeout.
const BOUND: Duration = Duration::from_secs(30);

/// Reads from `conn` until the server closes it (EOF or an error), or `BOUND` passes: true
/// when it was closed.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> bool {
    let read_all = async {
        let mut b = [0u8; 1024];
        loop {
            match conn.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, read_all).await.is_ok()
}

async fn metrics(env: &Env) -> String {
    admin_get(&env.admin_uri("/metrics")).await.1
}

fn echo(message: &str, count: u32) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        count,
        ..Default::default()
    }
}

/// An h2 connection to litgate whose stream windows are 64 KiB, as a reader that never
/// releases capacity leaves them.
async fn raw_h2(env: &Env) -> h2::client::SendRequest<Bytes> {
    let tls = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2"])
        .await
        .expect("TLS to litgate");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(1 << 30)
        .handshake::<_, Bytes>(tls)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn grpc_head(env: &Env, path: &str) -> http::Request<()> {
    http::Request::post(env.gate_uri(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn readers_that_stop_reading_are_reset_and_other_callers_keep_being_served() {
    let env =
        Env::start_editing(|c| c.listen.stalled_stream_timeout = Duration::from_millis(500)).await;
    // Three streams whose answers (16 MiB each) are never read past the first window.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut client = raw_h2(&env).await.ready().await.unwrap();
        let (resp, mut send) = client
            .send_request(grpc_head(&env, ECHO_STREAM), false)
            .unwrap();
        send.send_data(grpc_frame(&echo(&"x".repeat(65_536), 256)), true)
            .unwrap();
        let body = resp.await.expect("answer head").into_body();
        stalled.push((client, send, body));
    }
    // Another caller's calls go through meanwhile.
    let mut other = EchoClient::new(env.gate_channel().await);
    for i in 0..5 {
        let reply = tokio::time::timeout(BOUND, other.unary(echo(&format!("probe {i}"), 0)))
            .await
            .expect("another caller is answered within the bound");
        assert_eq!(
            reply
                .expect("another caller is served")
                .into_inner()
                .message,
            format!("probe {i}")
        );
    }
    // Each stalled stream is reset: taking what h2 already buffered (without releasing any
    // window) ends with an error, not with the answer's end.
    for (_client, _send, mut body) in stalled {
        let drained = tokio::time::timeout(BOUND, async {
            let mut got = 0usize;
            loop {
                match body.data().await {
                    Some(Ok(chunk)) => got += chunk.len(),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(got),
                }
            }
        })
        .await
        .expect("the stalled stream is reset within the bound");
        let err = drained.expect_err("reset, not completed");
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    }
    let text = metrics(&env).await;
    assert_eq!(
        metric(&text, "litgate_connections_stalled_streams_total"),
        3.0,
        "{text}"
    );
    // And litgate still serves.
    let reply = tokio::time::timeout(BOUND, other.unary(echo("after", 0)))
        .await
        .expect("answered within the bound")
        .expect("served after the resets");
    assert_eq!(reply.into_inner().message, "after");
    env.stop().await;
}

#[tokio::test]
async fn an_http1_reader_that_stops_reading_has_its_connection_closed() {
    let env =
        Env::start_editing(|c| c.listen.stalled_stream_timeout = Duration::from_millis(500)).await;
    // grpc-web over HTTP/1.1 (as the Terminal UI calls): a 16 MiB answer, never read.
    let mut conn = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"http/1.1"])
        .await
        .unwrap();
    let body = grpc_frame(&echo(&"x".repeat(65_536), 256));
    let head = format!(
        "POST {ECHO_STREAM} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    conn.flush().await.unwrap();
    // litgate gives up on the answer (counted) without the client reading a byte...
    let counted = eventually(300, Duration::from_millis(100), || async {
        metric(
            &metrics(&env).await,
            "litgate_connections_stalled_streams_total",
        ) == 1.0
    })
    .await;
    assert!(counted, "the stalled answer is given up within the bound");
    // ...and has closed the connection: reading what is buffered ends before the answer does.
    let mut got = 0usize;
    let ended = tokio::time::timeout(BOUND, async {
        let mut b = vec![0u8; 65_536];
        loop {
            match conn.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is closed");
    assert!(
        got < 16 * 1024 * 1024,
        "the answer was cut short ({got} bytes)"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_subscription_with_nothing_to_send_is_not_reset() {
    let env =
        Env::start_editing(|c| c.listen.stalled_stream_timeout = Duration::from_millis(200)).await;
    let mut echo_client = EchoClient::new(env.gate_channel().await);
    // Replies 2 s apart: ten stall timeouts with nothing waiting for the reader.
    let mut stream = echo_client
        .server_stream(EchoRequest {
            message: "tick".into(),
            count: 2,
            delay_ms: 2_000,
            ..Default::default()
        })
        .await
        .expect("stream opens")
        .into_inner();
    let mut got = 0;
    while let Some(reply) = stream.message().await.expect("not reset") {
        assert_eq!(reply.message, "tick");
        got += 1;
    }
    assert_eq!(got, 2);
    let text = metrics(&env).await;
    assert_eq!(
        metric(&text, "litgate_connections_stalled_streams_total"),
        0.0
    );
    env.stop().await;
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_by_the_greeting_timeout() {
    let env =
        Env::start_editing(|c| c.listen.header_read_timeout = Duration::from_millis(300)).await;
    // TLS, then nothing.
    let mut idle = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    // TLS, then 16 of the 24 bytes of the HTTP/2 preface.
    let mut half = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2"])
        .await
        .unwrap();
    half.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..16])
        .await
        .unwrap();
    half.flush().await.unwrap();
    // HTTP/1.1: half a request head.
    let mut half_h1 = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"http/1.1"])
        .await
        .unwrap();
    half_h1
        .write_all(b"GET /v1/getinfo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    half_h1.flush().await.unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "idle TLS connection closed"
    );
    assert!(closed_by_server(&mut half).await, "half preface closed");
    assert!(
        closed_by_server(&mut half_h1).await,
        "half HTTP/1.1 head closed"
    );
    let text = metrics(&env).await;
    assert!(
        metric_labelled(
            &text,
            "litgate_connections_closed_total",
            "reason=\"header_timeout\""
        ) >= 2.0,
        "{text}"
    );
    assert_eq!(env.litd.received().len(), 0, "nothing reached litd");
    env.stop().await;
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let env =
        Env::start_editing(|c| c.listen.header_read_timeout = Duration::from_millis(300)).await;
    let mut conn = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"http/1.1"])
        .await
        .unwrap();
    // One request on a keep-alive connection (a static file: no credential needed), then
    // nothing: after the answer, the next head must come within header_read_timeout.
    conn.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    conn.flush().await.unwrap();
    assert!(
        closed_by_server(&mut conn).await,
        "the idle keep-alive connection is closed"
    );
    assert_eq!(env.litd.count("/"), 1, "the request itself was served");
    env.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let env = Env::start_editing(|c| c.listen.idle_timeout = Duration::from_millis(300)).await;
    let tls = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    // One call, then nothing.
    let mut client = client.ready().await.unwrap();
    let (resp, mut send) = client
        .send_request(grpc_head(&env, ECHO_UNARY), false)
        .unwrap();
    send.send_data(grpc_frame(&echo("once", 0)), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    // litgate sends GOAWAY and closes: the client's connection task ends.
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the idle connection is closed within the bound")
        .unwrap()
        .ok();
    let text = metrics(&env).await;
    assert_eq!(
        metric_labelled(
            &text,
            "litgate_connections_closed_total",
            "reason=\"idle_timeout\""
        ),
        1.0,
        "{text}"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_http2_client_that_does_not_answer_pings_is_closed() {
    let env = Env::start_editing(|c| {
        c.listen.keepalive_interval = Duration::from_millis(200);
        c.listen.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut conn = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2"])
        .await
        .unwrap();
    // The whole preface (magic and an empty SETTINGS frame), then silence: litgate's PINGs go
    // unanswered.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    conn.flush().await.unwrap();
    assert!(
        closed_by_server(&mut conn).await,
        "closed after the unanswered PING"
    );
    let text = metrics(&env).await;
    assert_eq!(
        metric_labelled(
            &text,
            "litgate_connections_closed_total",
            "reason=\"keepalive_timeout\""
        ),
        1.0,
        "counted as a keepalive timeout: {text}"
    );
    assert_eq!(
        metric_labelled(
            &text,
            "litgate_connections_closed_total",
            "reason=\"header_timeout\""
        ),
        0.0,
        "greeted, so not the greeting timeout: {text}"
    );
    env.stop().await;
}

/// The other side of the keepalive: a client that answers litgate's PINGs keeps an idle
/// connection for many intervals, and calls on it go on working.
#[tokio::test]
async fn an_http2_client_that_answers_pings_keeps_its_idle_connection() {
    let env = Env::start_editing(|c| {
        c.listen.keepalive_interval = Duration::from_millis(100);
        c.listen.keepalive_timeout = Duration::from_millis(100);
    })
    .await;
    let tls = tls_connect(env.gate.public_addr, &env.gate_cert, &[b"h2"])
        .await
        .unwrap();
    // h2 answers PINGs by itself while its connection task runs.
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let call = |message: &'static str| {
        let client = client.clone();
        let head = grpc_head(&env, ECHO_UNARY);
        async move {
            let mut client = client.ready().await.unwrap();
            let (resp, mut send) = client.send_request(head, false).unwrap();
            send.send_data(grpc_frame(&echo(message, 0)), true).unwrap();
            let resp = resp.await.unwrap();
            let mut body = resp.into_body();
            while let Some(chunk) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.unwrap().len());
            }
            body.trailers().await.unwrap().expect("trailers")["grpc-status"].clone()
        }
    };
    assert_eq!(call("before").await, "0");
    // Fifteen intervals of silence: at least seven PINGs, each answered.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!conn.is_finished(), "the connection is still open");
    assert_eq!(call("after").await, "0");
    let text = metrics(&env).await;
    assert_eq!(
        metric(&text, "litgate_connections_open"),
        1.0,
        "the same connection: {text}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_connection_cap_refuses_the_next_one_and_admits_again_after_a_close() {
    let env = Env::start_editing(|c| c.listen.max_connections = 2).await;
    let addr = env.gate.public_addr;
    let first = tls_connect(addr, &env.gate_cert, &[b"h2"])
        .await
        .expect("first");
    let _second = tls_connect(addr, &env.gate_cert, &[b"h2"])
        .await
        .expect("second");
    // The third: a TLS alert, then the close; the handshake fails.
    let err = tls_connect(addr, &env.gate_cert, &[b"h2"])
        .await
        .expect_err("the third connection is refused");
    assert!(
        err.to_string().contains("InternalError") || err.to_string().contains("internal"),
        "the client sees a TLS internal_error alert: {err}"
    );
    let text = metrics(&env).await;
    assert_eq!(metric(&text, "litgate_connections_open"), 2.0, "{text}");
    assert_eq!(
        metric_labelled(
            &text,
            "litgate_connections_refused_total",
            "reason=\"max_connections\""
        ),
        1.0,
        "{text}"
    );
    // One closes: litgate notices (bounded poll) and admits a new one.
    drop(first);
    let admitted = eventually(300, Duration::from_millis(100), || async {
        let Ok(conn) = tls_connect(addr, &env.gate_cert, &[b"h2"]).await else {
            return false;
        };
        // Keep it open while speaking h2, to check that it is served.
        let Ok((client, h2conn)) = h2::client::handshake(conn).await else {
            return false;
        };
        tokio::spawn(h2conn);
        client.ready().await.is_ok()
    })
    .await;
    assert!(admitted, "a connection is admitted again after one closed");
    env.stop().await;
}

#[tokio::test]
async fn a_100_kb_http1_head_is_refused_with_431_and_nothing_reaches_litd() {
    let env = Env::start().await;
    let client = h1_client(&env.gate_cert);
    let req = http::Request::get(env.gate_uri("/v1/getinfo"))
        .header("x-big", "a".repeat(100_000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(&client, req).await;
    assert_eq!(
        resp.status,
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // A head at the limit's safe side goes through to litd.
    let req = http::Request::get(env.gate_uri("/v1/getinfo"))
        .header("x-small", "a".repeat(4_000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let ok = send(&h1_client(&env.gate_cert), req).await;
    assert_ne!(ok.status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        env.litd.received().len(),
        1,
        "only the small request reached litd"
    );
    env.stop().await;
}

/// An h2 gRPC request for the echo with an `x-big` header of `size` bytes.
fn with_big_header(env: &Env, size: usize) -> http::Request<Full<Bytes>> {
    let req = grpc_request(&env.gate_uri(ECHO_UNARY), grpc_frame(&echo("big", 0)), None);
    let (mut parts, body) = req.into_parts();
    parts
        .headers
        .insert("x-big", "a".repeat(size).parse().unwrap());
    http::Request::from_parts(parts, body)
}

#[tokio::test]
async fn oversized_http2_heads_are_refused_and_nothing_reaches_litd() {
    let env = Env::start().await;
    let client = h2_client(&env.gate_cert);
    // Over the limit (16 KiB): a 431 on that stream; the connection stays usable.
    let resp = client
        .request(with_big_header(&env, 20_000))
        .await
        .expect("an answer");
    assert_eq!(
        resp.status(),
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let ok = send(
        &client,
        grpc_request(&env.gate_uri(ECHO_UNARY), grpc_frame(&echo("ok", 0)), None),
    )
    .await;
    assert_eq!(ok.grpc_status().as_deref(), Some("0"));
    // 100 KB, over four times the limit: h2 treats it as abuse and closes the connection
    // (GOAWAY ENHANCE_YOUR_CALM).
    let err = h2_client(&env.gate_cert)
        .request(with_big_header(&env, 100_000))
        .await
        .expect_err("the connection is closed");
    let err = format!("{err:?}");
    assert!(err.contains("ENHANCE_YOUR_CALM"), "{err}");
    assert_eq!(
        env.litd.count(ECHO_UNARY),
        1,
        "only the small call reached litd"
    );
    assert_eq!(env.litd.received().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn calls_beyond_max_in_flight_are_shed_at_once_and_in_flight_ones_finish() {
    let env = Env::start_editing(|c| c.listen.max_in_flight = 2).await;
    let channel = env.gate_channel().await;
    // Two streams held open (replies 300 ms apart).
    let open = |i: u32| {
        let mut c = EchoClient::new(channel.clone());
        async move {
            c.server_stream(EchoRequest {
                message: format!("held {i}"),
                count: 3,
                delay_ms: 300,
                ..Default::default()
            })
            .await
            .expect("admitted")
            .into_inner()
        }
    };
    let mut held = vec![open(0).await, open(1).await];
    // gRPC: UNAVAILABLE with retry-after.
    let shed = EchoClient::new(channel.clone())
        .unary(echo("third", 0))
        .await
        .expect_err("shed");
    assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");
    assert_eq!(shed.metadata().get("retry-after").unwrap(), "1");
    // REST: 503 with Retry-After.
    let rest = send(
        &h1_client(&env.gate_cert),
        http::Request::get(env.gate_uri("/v1/getinfo"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(rest.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rest.headers.get("retry-after").unwrap(), "1");
    assert_eq!(env.litd.count(ECHO_UNARY), 0);
    assert_eq!(env.litd.count("/v1/getinfo"), 0);
    // The held streams finish normally.
    for stream in &mut held {
        let mut n = 0;
        while stream
            .message()
            .await
            .expect("in-flight call finishes")
            .is_some()
        {
            n += 1;
        }
        assert_eq!(n, 3);
    }
    drop(held);
    let text = metrics(&env).await;
    assert_eq!(metric(&text, "litgate_overload_shed_total"), 2.0, "{text}");
    // Once they ended, calls are admitted again (the count drops as the bodies are dropped).
    let served = eventually(300, Duration::from_millis(50), || {
        let mut c = EchoClient::new(channel.clone());
        async move { c.unary(echo("again", 0)).await.is_ok() }
    })
    .await;
    assert!(served);
    env.stop().await;
}

#[tokio::test]
async fn an_open_websocket_counts_as_in_flight_until_it_closes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let env = Env::start_editing(|c| c.listen.max_in_flight = 1).await;
    let addr = env.gate.public_addr;
    let mut req = format!("wss://{addr}{}", litgate::demo::litd::WS_ECHO)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("https://{addr}").parse().unwrap());
    let tls = tls_connect(addr, &env.gate_cert, &[b"http/1.1"])
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("the tunnel opens");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // The open tunnel holds the only slot.
    let shed = EchoClient::new(env.gate_channel().await)
        .unary(echo("while the tunnel is open", 0))
        .await
        .expect_err("shed");
    assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");
    // Closed: the slot is free again (bounded poll: the tunnel's task ends asynchronously).
    ws.close(None).await.unwrap();
    drop(ws);
    let served = eventually(300, Duration::from_millis(50), || async {
        EchoClient::new(env.gate_channel().await)
            .unary(echo("after", 0))
            .await
            .is_ok()
    })
    .await;
    assert!(served, "admitted once the tunnel closed");
    env.stop().await;
}
