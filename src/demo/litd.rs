//! `DemoLitd`: a fake litd on one port, speaking what litd speaks on 8443: gRPC, grpc-web
//! (binary and text), grpc-websockets (every method, streams included, with the origin check
//! improbable's wrapper makes), REST (`/v1/...`, litd's grpc-gateway mapping) and a couple of
//! static UI files, over TLS (self-signed, ALPN h2 + http/1.1) or plaintext (h2c prior
//! knowledge + h1). A test-only plain WebSocket at [`WS_ECHO`] echoes messages and closes with
//! the code it is asked for.
//!
//! Services: `litrpc.Sessions`, `litrpc.Autopilot`, `litrpc.Status`, and the test-only
//! `litgatetest.Echo` (every streaming shape). Every litrpc method except
//! `Status/SubServerStatus` checks a real macaroon as litd does (errors with lnd's texts, code
//! Unknown). **Echo is deliberately open** (no macaroon), so stream tests need no credentials.
//! Autopilot calls go to a configured Autopilot server as litd makes them: a new connection per
//! call, `RegisterSession` during `AddAutopilotSession`, and a best-effort `RevokeSession` for
//! *every* revoked session type (litd's leak, reproduced on purpose).
//!
//! Every request that reaches the fake is recorded ([`DemoLitd::received`]) for tests, and the
//! fake can go down and come back ([`DemoLitd::pause`], [`DemoLitd::resume`]). A fake: in-memory
//! state, never in front of real traffic; macaroons and pairing secrets are never logged.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use rand::{Rng, RngCore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    metadata::{MetadataMap, MetadataValue},
    Code, Request, Response, Status,
};
use tower::Layer;

use super::{
    macaroons::MacaroonBaker,
    serve::{Body, Handler, Server},
};
use crate::{
    autopilot::{privacy, rules},
    grpc::websocket,
    macaroon::Macaroon,
    methods::ADD_AUTOPILOT_SESSION,
    proto::{
        autopilotserverrpc::{self as aps, autopilot_client::AutopilotClient},
        litgatetest::{
            echo_server::{Echo, EchoServer},
            EchoReply, EchoRequest,
        },
        litrpc::{
            autopilot_server::{Autopilot, AutopilotServer},
            sessions_server::{Sessions, SessionsServer},
            status_server::{Status as StatusSvc, StatusServer},
            AddAutopilotSessionRequest, AddAutopilotSessionResponse, AddSessionRequest,
            AddSessionResponse, Feature, ListAutopilotFeaturesRequest,
            ListAutopilotFeaturesResponse, ListAutopilotSessionsRequest,
            ListAutopilotSessionsResponse, ListSessionsRequest, ListSessionsResponse,
            MacaroonPermission, MacaroonRecipe, Permissions, RevokeAutopilotSessionRequest,
            RevokeAutopilotSessionResponse, RevokeSessionRequest, RevokeSessionResponse,
            RuleValues, RulesMap, Session, SessionState, SessionType, SubServerStatus,
            SubServerStatusReq, SubServerStatusResp,
        },
    },
};

/// Path prefix of the test-only Echo service (open, never buffered).
pub const ECHO_PREFIX: &str = "/litgatetest.Echo/";
/// Path of the test-only plain WebSocket: echoes every message; a text message
/// `close <code> <reason>` makes it close with that code and reason.
pub const WS_ECHO: &str = "/litgatetest/ws/echo";
/// The one whitelisted litrpc method.
pub const SUB_SERVER_STATUS: &str = "/litrpc.Status/SubServerStatus";
/// A second path for AddAutopilotSession, served only with [`DemoLitdConfig::bench_alias`]:
/// the same call under a name litgate does not intercept, so a benchmark can forward it
/// through litgate as a plain passthrough call (same request, same answer, same work here)
/// and compare it with the intercepted one. litd has no such path.
pub const BENCH_ADD_ALIAS: &str = "/litgatebench.Autopilot/AddAutopilotSession";

/// The litd version reported to the Autopilot server.
const LIT_VERSION: (u32, u32, u32) = (0, 17, 2);
/// The lnd version reported to the Autopilot server.
const LND_VERSION: (u32, u32, u32) = (0, 19, 0);
const DEFAULT_MAILBOX: &str = "mailbox.terminal.lightning.today:443";
const AUTOPILOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How litd reaches the Autopilot server (`autopilot.address`, `autopilot.tlspath`,
/// `autopilot.insecure`).
#[derive(Debug, Clone)]
pub struct AutopilotTarget {
    /// host:port of the server.
    pub addr: SocketAddr,
    /// The server's certificate to pin (TLS, server name `localhost`); `None`: plaintext.
    pub tls_cert_pem: Option<Vec<u8>>,
}

/// How to start a [`DemoLitd`].
#[derive(Debug, Clone, Default)]
pub struct DemoLitdConfig {
    /// Serve TLS with a fresh self-signed cert (SANs `localhost`, `127.0.0.1`); plaintext
    /// otherwise (litd's `--insecure-httplisten`).
    pub tls: bool,
    /// The Autopilot server; `None`: autopilot disabled (its feature calls are Unimplemented).
    pub autopilot: Option<AutopilotTarget>,
    /// Where to listen; `None`: 127.0.0.1 on a port the OS chooses.
    pub addr: Option<SocketAddr>,
    /// Also serve AddAutopilotSession (gRPC and grpc-web) at [`BENCH_ADD_ALIAS`], with the
    /// same macaroon check. For benchmarks only: `examples/fake_litd` sets it; the demo and
    /// the tests (but the one that guards the alias) leave it off, so nobody else sees it.
    pub bench_alias: bool,
}

/// One request as it reached the fake (recorded at the HTTP layer, before any check).
#[derive(Clone)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// URI path, without the query.
    pub path: String,
    /// `content-type`, empty when absent.
    pub content_type: String,
    /// The credential as sent: `macaroon` header (gRPC, grpc-web) or `Grpc-Metadata-Macaroon`
    /// (REST). Secret: never log it.
    pub macaroon: Option<String>,
    /// Whether an `authorization` header was present.
    pub authorization_present: bool,
    /// The whole request body as sent (gRPC and grpc-web: still framed; REST: the JSON); empty
    /// for Echo paths, whose streams are not buffered.
    pub body: Bytes,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("content_type", &self.content_type)
            .field("macaroon_present", &self.macaroon.is_some())
            .field("authorization_present", &self.authorization_present)
            .field("body_len", &self.body.len())
            .finish()
    }
}

struct Inner {
    baker: MacaroonBaker,
    // Replaceable, so a test can point litd at litgate's relay once it listens.
    autopilot: Mutex<Option<AutopilotTarget>>,
    sessions: Mutex<Vec<Session>>,
    /// Every session id ever used (never shrinks: a freed id staying taken only makes the
    /// uniqueness check stricter), so a new id is checked without a scan of every session:
    /// a long load run adds tens of thousands. Taken after `sessions`, never alone.
    taken_ids: Mutex<HashSet<Vec<u8>>>,
    received: Mutex<Vec<Received>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A running fake litd.
pub struct DemoLitd {
    server: Server,
    inner: Arc<Inner>,
    macaroon: Macaroon,
    cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for DemoLitd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoLitd")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl DemoLitd {
    /// Starts serving with three pre-seeded sessions (read-only, admin, revoked); listening when
    /// this returns. Must be called inside a tokio runtime.
    pub fn start(cfg: DemoLitdConfig) -> io::Result<Self> {
        let baker = MacaroonBaker::new();
        let macaroon = baker.bake_admin();
        let inner = Arc::new(Inner {
            baker,
            autopilot: Mutex::new(cfg.autopilot),
            sessions: Mutex::new(Vec::new()),
            taken_ids: Mutex::new(HashSet::new()),
            received: Mutex::new(Vec::new()),
        });
        inner.seed();
        let (tls, cert_pem) = if cfg.tls {
            super::self_signed_tls()?
        } else {
            (None, None)
        };
        let addr = cfg.addr.unwrap_or_else(super::loopback_any);
        let server = Server::start(
            "demo-litd",
            addr,
            tls,
            handler(inner.clone(), cfg.bench_alias),
        )?;
        Ok(Self {
            server,
            inner,
            macaroon,
            cert_pem,
        })
    }

    /// The bound address (stable across pause/resume).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Its self-signed `tls.cert` (PEM) when serving TLS.
    pub fn cert_pem(&self) -> Option<&[u8]> {
        self.cert_pem.as_deref()
    }

    /// The admin macaroon (`lit.macaroon`): read and write on every litd entity.
    pub fn macaroon(&self) -> &Macaroon {
        &self.macaroon
    }

    /// The admin macaroon as hex, as carried in `macaroon` metadata.
    pub fn macaroon_hex(&self) -> String {
        self.macaroon.to_hex()
    }

    /// A read-only macaroon from the same root key (read on every litd entity).
    pub fn readonly_macaroon(&self) -> Macaroon {
        self.inner.baker.bake_readonly()
    }

    /// Writes `tls.cert` (only when serving TLS) and `lit.macaroon` (binary, as litd writes it)
    /// into `dir`; returns their paths (the cert path is returned even when nothing was written
    /// there because the fake is plaintext).
    pub fn write_files(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join("tls.cert");
        if let Some(pem) = &self.cert_pem {
            std::fs::write(&cert, pem)?;
        }
        let mac = dir.join("lit.macaroon");
        std::fs::write(&mac, self.macaroon.encode())?;
        Ok((cert, mac))
    }

    /// Writes the admin macaroon as hex text to `path` (the form litgate's `upstream.macaroon`
    /// reads).
    pub fn write_macaroon_hex(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.macaroon_hex())
    }

    /// Every request that reached the fake, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// How many requests reached the fake with this exact path (a gRPC path such as
    /// `/litrpc.Sessions/ListSessions` or a REST path such as `/v1/sessions`).
    pub fn count(&self, path: &str) -> usize {
        lock(&self.inner.received)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear_received(&self) {
        lock(&self.inner.received).clear();
    }

    /// All sessions, ordered by `created_at`.
    pub fn sessions(&self) -> Vec<Session> {
        self.inner.list(|_| true)
    }

    /// Adds a session row as is (tests: a given state, type or group).
    pub fn insert_session(&self, session: Session) {
        let mut sessions = lock(&self.inner.sessions);
        lock(&self.inner.taken_ids).insert(session.id.clone());
        sessions.push(session);
    }

    /// Adds `n` read-only sessions in state created, expiring in a day, each with its own key
    /// (benches and memory measurements: a 1,000-session list is a ~200 KB answer).
    pub fn add_bulk_sessions(&self, n: usize) {
        let now = now_secs();
        let template = self.sessions()[0].clone();
        let mut sessions = lock(&self.inner.sessions);
        for i in 0..n {
            let mut s = template.clone();
            s.label = format!("bulk session {i}");
            s.local_public_key[1..5].copy_from_slice(&(i as u32).to_be_bytes());
            s.id = s.local_public_key[1..5].to_vec();
            s.group_id = s.id.clone();
            s.session_type = SessionType::TypeMacaroonReadonly as i32;
            s.session_state = SessionState::StateCreated as i32;
            s.expiry_timestamp_seconds = now + 86_400;
            s.created_at = now - 1000 + i as u64;
            lock(&self.inner.taken_ids).insert(s.id.clone());
            sessions.push(s);
        }
    }

    /// Points litd's autopilot client somewhere else (e.g. litgate's relay, once it listens),
    /// as restarting litd with another `--autopilot.address` would.
    pub fn set_autopilot(&self, target: Option<AutopilotTarget>) {
        *self
            .inner
            .autopilot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Closes the listener and aborts every open connection; state is kept.
    pub async fn pause(&self) {
        self.server.pause().await;
    }

    /// Serves again on the same address with the same state.
    pub async fn resume(&self) -> io::Result<()> {
        self.server.resume().await
    }

    /// Stops for good.
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP dispatch

enum Kind {
    GrpcWeb,
    Grpc,
    Rest,
    Static,
}

fn kind(content_type: &str, path: &str) -> Kind {
    if content_type.starts_with("application/grpc-web") {
        Kind::GrpcWeb
    } else if content_type.starts_with("application/grpc") {
        Kind::Grpc
    } else if path.starts_with("/v1/") {
        Kind::Rest
    } else {
        Kind::Static
    }
}

fn handler(inner: Arc<Inner>, bench_alias: bool) -> Handler {
    let svc = Services(inner.clone());
    let routes = tonic::service::Routes::new(SessionsServer::new(svc.clone()))
        .add_service(AutopilotServer::new(svc.clone()))
        .add_service(StatusServer::new(svc.clone()))
        .add_service(EchoServer::new(svc.clone()));
    let grpc_web = tonic_web::GrpcWebLayer::new().layer(routes.clone());
    Arc::new(move |req: http::Request<hyper::body::Incoming>| {
        let (svc, routes, grpc_web) = (svc.clone(), routes.clone(), grpc_web.clone());
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let headers = req.headers();
            let content_type =
                header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
            let macaroon = header_str(headers, "macaroon")
                .or_else(|| header_str(headers, "grpc-metadata-macaroon"));
            let mut record = Received {
                method: req.method().to_string(),
                path: path.clone(),
                content_type: content_type.clone(),
                macaroon,
                authorization_present: headers.contains_key(header::AUTHORIZATION),
                body: Bytes::new(),
            };
            if let Some(upgrade) = websocket::upgrade_of(headers) {
                if upgrade == websocket::Upgrade::GrpcWebSockets || path == WS_ECHO {
                    lock(&svc.0.received).push(record);
                    return accept_websocket(upgrade, routes, req);
                }
            }
            let kind = kind(&content_type, &path);
            if path.starts_with(ECHO_PREFIX) {
                // Streams flow through untouched: record the path only.
                lock(&svc.0.received).push(record);
                return call_grpc(kind, routes, grpc_web, req.map(Body::new)).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    tracing::debug!(error = %e, "demo litd: request body failed");
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "request body failed\n",
                    );
                }
            };
            record.body = bytes.clone();
            lock(&svc.0.received).push(record);
            match kind {
                Kind::Rest => rest(&svc, &parts.method, &path, &parts.headers, bytes).await,
                Kind::Static => static_file(&parts.method, &path),
                Kind::Grpc | Kind::GrpcWeb => {
                    let mut parts = parts;
                    if bench_alias && path == BENCH_ADD_ALIAS {
                        // Recorded under the alias above; served by the real method.
                        parts.uri = with_path(&parts.uri, ADD_AUTOPILOT_SESSION);
                    }
                    let req = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
                    let plain_grpc = matches!(kind, Kind::Grpc);
                    let resp = call_grpc(kind, routes, grpc_web, req).await;
                    let list =
                        path.ends_with("/ListSessions") || path.ends_with("/ListAutopilotSessions");
                    if plain_grpc && list {
                        with_demo_trailer(resp)
                    } else {
                        resp
                    }
                }
            }
        })
    })
}

/// `uri` with its path (and query) replaced by `path`.
fn with_path(uri: &http::Uri, path: &'static str) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(path));
    http::Uri::from_parts(parts).unwrap_or_else(|_| http::Uri::from_static(path))
}

async fn call_grpc(
    kind: Kind,
    routes: tonic::service::Routes,
    grpc_web: tonic_web::GrpcWebService<tonic::service::Routes>,
    req: http::Request<Body>,
) -> http::Response<Body> {
    use tower::ServiceExt;
    let res = match kind {
        Kind::GrpcWeb => {
            let mut req = req;
            // litd (improbable-eng grpcweb) answers a text request in text whatever `accept`
            // says; tonic-web follows `accept` only, so make it agree.
            let text = [
                "application/grpc-web-text",
                "application/grpc-web-text+proto",
            ];
            if let Some(ct) = req.headers().get(header::CONTENT_TYPE).cloned() {
                if ct.to_str().is_ok_and(|c| text.contains(&c)) {
                    req.headers_mut().insert(header::ACCEPT, ct);
                }
            }
            grpc_web.oneshot(req).await
        }
        Kind::Grpc => routes.oneshot(req).await,
        // Echo over REST or with no gRPC content type: not a thing litd serves.
        Kind::Rest | Kind::Static => {
            return plain(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n")
        }
    };
    match res {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Adds [`DEMO_TRAILER`] to the HTTP trailers of a gRPC answer.
fn with_demo_trailer(resp: http::Response<Body>) -> http::Response<Body> {
    resp.map(|b| {
        Body::new(b.map_frame(|f| match f.into_trailers() {
            Ok(mut t) => {
                t.insert(
                    DEMO_TRAILER.0,
                    http::HeaderValue::from_static(DEMO_TRAILER.1),
                );
                http_body::Frame::trailers(t)
            }
            Err(f) => f,
        }))
    })
}

// ---------------------------------------------------------------------------------------------
// WebSockets

/// Answers a WebSocket handshake and serves the connection once upgraded: a grpc-websockets
/// call as improbable's wrapper serves it, or the plain echo socket.
fn accept_websocket(
    upgrade: websocket::Upgrade,
    routes: tonic::service::Routes,
    mut req: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let answer = match upgrade {
        websocket::Upgrade::GrpcWebSockets => websocket::accept(req.method(), req.headers()),
        // The echo socket takes any origin and chooses no subprotocol.
        websocket::Upgrade::Plain => websocket::switching_protocols(req.method(), req.headers()),
    };
    let answer = match answer {
        Ok(a) => a,
        // improbable's wrapper answers a refused handshake with a bare 403.
        Err(websocket::HandshakeError::Origin) => {
            return plain(StatusCode::FORBIDDEN, "text/plain", "")
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let path = req.uri().path().to_string();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        match upgrade {
            websocket::Upgrade::GrpcWebSockets => serve_grpc_websocket(ws, routes, path).await,
            websocket::Upgrade::Plain => serve_ws_echo(ws).await,
        }
    });
    answer.map(|()| Body::empty())
}

type Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// One grpc-websockets call, as improbable's wrapper runs it: the header block becomes the
/// request's headers (grpc-web content type turned into gRPC's), the client's data messages
/// stream in as the body until the finish-send marker, and the answer streams back in
/// grpc-web framing.
async fn serve_grpc_websocket(ws: Ws, routes: tonic::service::Routes, path: String) {
    use futures_util::StreamExt as _;
    use tower::ServiceExt as _;
    let (mut sink, mut stream) = ws.split();
    let Ok(Some(mut headers)) = websocket::call::read_header_block(&mut stream).await else {
        return;
    };
    let ct = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Status>>(16);
    // Reads the client's messages into the body; after the finish-send marker it keeps reading
    // (and dropping) until the client closes, as improbable's reader does.
    let reader = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match websocket::call::next_inbound(&mut stream).await {
                Ok(websocket::call::Inbound::Data(d)) => {
                    if let Some(t) = &tx {
                        if t.send(Ok(http_body::Frame::data(d))).await.is_err() {
                            tx = None;
                        }
                    }
                }
                Ok(websocket::call::Inbound::FinishSend) => tx = None,
                Ok(websocket::call::Inbound::Closed) => return stream,
                Err(e) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(Err(Status::invalid_argument(e.to_string()))).await;
                    }
                    return stream;
                }
            }
        }
    });
    let resp = if ct.starts_with("application/grpc-web-text") {
        crate::grpc::reply::status_response(
            crate::grpc::Protocol::GrpcWeb,
            Code::Unimplemented,
            "grpc-web-text is not served over websockets",
            None,
        )
        .map(Body::new)
    } else {
        if let Ok(v) = ct
            .replacen("application/grpc-web", "application/grpc", 1)
            .parse()
        {
            headers.insert(header::CONTENT_TYPE, v);
        }
        headers.remove(header::CONTENT_LENGTH);
        let body = http_body_util::StreamBody::new(ReceiverStream::new(rx));
        let mut req = http::Request::new(Body::new(body));
        *req.method_mut() = Method::POST;
        *req.headers_mut() = headers;
        *req.uri_mut() = path.parse().unwrap_or_default();
        match routes.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    if websocket::answer::write_response(&mut sink, resp)
        .await
        .is_err()
    {
        return;
    }
    // The close handshake needs the reading half back: it sees the client's close frame.
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if sink
        .send(tokio_tungstenite::tungstenite::Message::Close(Some(normal)))
        .await
        .is_err()
    {
        return;
    }
    if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), reader).await {
        if let Ok(mut ws) = sink.reunite(stream) {
            let _ = tokio::io::AsyncWriteExt::shutdown(ws.get_mut()).await;
        }
    }
}

/// The plain echo socket: every data message back; `close <code> <reason>` closes with them.
async fn serve_ws_echo(mut ws: Ws) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};
    while let Some(Ok(msg)) = ws.next().await {
        let echo = match msg {
            Message::Text(t) if t.starts_with("close ") => {
                let mut parts = t["close ".len()..].splitn(2, ' ');
                let code: u16 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let frame = CloseFrame {
                    code: code.into(),
                    reason: parts.next().unwrap_or("").to_string().into(),
                };
                let _ = ws.close(Some(frame)).await;
                // Until the client's close frame (or its connection) ends the stream.
                while let Some(Ok(_)) = ws.next().await {}
                let _ = tokio::io::AsyncWriteExt::shutdown(ws.get_mut()).await;
                return;
            }
            Message::Text(_) | Message::Binary(_) => msg,
            _ => continue,
        };
        if ws.send(echo).await.is_err() {
            return;
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn plain(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

const INDEX_HTML: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Lightning Terminal (demo)</title>\
<script src=\"/app.js\"></script></head>\n<body><h1>Lightning Terminal</h1><p>This is litgate's demo litd. The real UI \
lives here in litd.</p></body></html>\n";
const APP_JS: &str = "// litgate demo litd: stands in for the Terminal UI bundle.\nconsole.log('Lightning Terminal demo UI');\n";

fn static_file(method: &Method, path: &str) -> http::Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match path {
        "/" | "/index.html" => plain(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => plain(StatusCode::OK, "application/javascript", APP_JS),
        _ => plain(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
    }
}

// ---------------------------------------------------------------------------------------------
// REST gateway (grpc-gateway v2 shapes)

fn rest_error(status: StatusCode, code: Code, message: &str) -> http::Response<Body> {
    plain(
        status,
        "application/json",
        crate::grpc::reply::gateway_error_json(code, message),
    )
}

fn rest_status(s: &Status) -> http::Response<Body> {
    rest_error(crate::error::http_status(s.code()), s.code(), s.message())
}

fn rest_reply<T: serde::Serialize>(res: Result<Response<T>, Status>) -> http::Response<Body> {
    match res {
        Ok(r) => match serde_json::to_vec(r.get_ref()) {
            Ok(json) => {
                let mut resp = plain(StatusCode::OK, "application/json", json);
                // grpc-gateway hands the gRPC server's header metadata on as
                // `Grpc-Metadata-<key>`, the gRPC content type among it.
                let h = resp.headers_mut();
                h.insert(
                    "grpc-metadata-content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                for kv in r.metadata().iter() {
                    if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                        if let (Ok(name), Ok(value)) = (
                            http::HeaderName::from_bytes(
                                format!("grpc-metadata-{}", k.as_str()).as_bytes(),
                            ),
                            http::HeaderValue::from_bytes(v.as_encoded_bytes()),
                        ) {
                            h.insert(name, value);
                        }
                    }
                }
                resp
            }
            Err(e) => rest_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                &e.to_string(),
            ),
        },
        Err(s) => rest_status(&s),
    }
}

/// A REST failure before the service is called (bad JSON, bad path parameter).
struct RestError(StatusCode, Code, String);

impl RestError {
    fn response(self) -> http::Response<Body> {
        rest_error(self.0, self.1, &self.2)
    }
}

fn rest_body<T: for<'de> serde::Deserialize<'de> + Default>(body: &[u8]) -> Result<T, RestError> {
    // grpc-gateway ignores io.EOF: an empty body is an empty message.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        RestError(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            e.to_string(),
        )
    })
}

/// Decodes a bytes path parameter: base64url (as the proto comments ask) or standard base64,
/// padded or not, after percent-decoding.
fn path_bytes(raw: &str) -> Result<Vec<u8>, RestError> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg)
        .decode(text.as_bytes())
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::STANDARD, cfg).decode(text.as_bytes()))
        .map_err(|e| {
            RestError(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("type mismatch, parameter: local_public_key, error: {e}"),
            )
        })
}

fn with_md<T>(md: &MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    *r.metadata_mut() = md.clone();
    r
}

const REST_PATHS: &[&str] = &[
    "/v1/sessions",
    "/v1/autopilot/features",
    "/v1/autopilot/sessions",
    "/v1/status",
];

async fn rest(
    svc: &Services,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> http::Response<Body> {
    // grpc-gateway turns `Grpc-Metadata-*` headers into metadata.
    let mut md = MetadataMap::new();
    if let Some(v) = header_str(headers, "grpc-metadata-macaroon").and_then(|v| v.parse().ok()) {
        md.insert("macaroon", v);
    }
    let path = path.trim_end_matches('/');
    match (method.clone(), path) {
        (Method::GET, "/v1/sessions") => {
            rest_reply(Sessions::list_sessions(svc, with_md(&md, ListSessionsRequest {})).await)
        }
        (Method::POST, "/v1/sessions") => match rest_body::<AddSessionRequest>(&body) {
            Ok(m) => rest_reply(Sessions::add_session(svc, with_md(&md, m)).await),
            Err(e) => e.response(),
        },
        (Method::GET, "/v1/autopilot/features") => rest_reply(
            Autopilot::list_autopilot_features(svc, with_md(&md, ListAutopilotFeaturesRequest {}))
                .await,
        ),
        (Method::GET, "/v1/autopilot/sessions") => rest_reply(
            Autopilot::list_autopilot_sessions(svc, with_md(&md, ListAutopilotSessionsRequest {}))
                .await,
        ),
        (Method::POST, "/v1/autopilot/sessions") => {
            match rest_body::<AddAutopilotSessionRequest>(&body) {
                Ok(m) => rest_reply(Autopilot::add_autopilot_session(svc, with_md(&md, m)).await),
                Err(e) => e.response(),
            }
        }
        (Method::GET, "/v1/status") => {
            rest_reply(StatusSvc::sub_server_status(svc, with_md(&md, SubServerStatusReq {})).await)
        }
        (Method::DELETE, p) if p.starts_with("/v1/autopilot/sessions/") => {
            match path_bytes(&p["/v1/autopilot/sessions/".len()..]) {
                Ok(k) => rest_reply(
                    Autopilot::revoke_autopilot_session(
                        svc,
                        with_md(
                            &md,
                            RevokeAutopilotSessionRequest {
                                local_public_key: k,
                            },
                        ),
                    )
                    .await,
                ),
                Err(e) => e.response(),
            }
        }
        (Method::DELETE, p) if p.starts_with("/v1/sessions/") => {
            match path_bytes(&p["/v1/sessions/".len()..]) {
                Ok(k) => rest_reply(
                    Sessions::revoke_session(
                        svc,
                        with_md(
                            &md,
                            RevokeSessionRequest {
                                local_public_key: k,
                            },
                        ),
                    )
                    .await,
                ),
                Err(e) => e.response(),
            }
        }
        (_, p)
            if REST_PATHS.contains(&p)
                || p.starts_with("/v1/sessions/")
                || p.starts_with("/v1/autopilot/sessions/") =>
        {
            rest_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                "Method Not Allowed",
            )
        }
        _ => rest_error(StatusCode::NOT_FOUND, Code::NotFound, "Not Found"),
    }
}

// ---------------------------------------------------------------------------------------------
// State

const WORDS: &[&str] = &[
    "abandon", "ability", "able", "about", "above", "absent", "absorb", "abstract", "absurd",
    "abuse", "access", "accident", "account", "accuse", "achieve", "acid", "acoustic", "acquire",
    "across", "act", "action", "actor", "actress", "actual", "adapt", "add", "addict", "address",
    "adjust", "admit", "adult", "advance", "advice", "aerobic", "affair", "afford", "afraid",
    "again", "age", "agent", "agree", "ahead", "aim", "air", "airport", "aisle", "alarm", "album",
    "alcohol", "alert", "alien", "all", "alley", "allow", "almost", "alone", "alpha", "already",
    "also", "alter", "always", "amateur", "amazing", "among",
];

fn state_name(state: i32) -> &'static str {
    match SessionState::try_from(state) {
        Ok(SessionState::StateCreated) => "Created",
        Ok(SessionState::StateInUse) => "InUse",
        Ok(SessionState::StateRevoked) => "Revoked",
        Ok(SessionState::StateExpired) => "Expired",
        Ok(SessionState::StateReserved) => "Reserved",
        Err(_) => "Unknown",
    }
}

struct NewSession<'a> {
    label: &'a str,
    typ: SessionType,
    state: SessionState,
    expiry: u64,
    mailbox: &'a str,
    dev_server: bool,
    created_at: u64,
}

impl Inner {
    fn autopilot_target(&self) -> Option<AutopilotTarget> {
        self.autopilot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new session with a fresh key, id, pairing secret and mnemonic; the caller holds the
    /// sessions lock (ids must stay unique).
    fn new_session(&self, n: NewSession<'_>) -> Session {
        let mut rng = rand::rng();
        let mut taken = lock(&self.taken_ids);
        let local_public_key = loop {
            let mut key = vec![if rng.random::<bool>() { 0x02 } else { 0x03 }; 1];
            let mut rest = [0u8; 32];
            rng.fill_bytes(&mut rest);
            key.extend_from_slice(&rest);
            if taken.insert(key[1..5].to_vec()) {
                break key;
            }
        };
        let mut pairing_secret = vec![0u8; 14];
        rng.fill_bytes(&mut pairing_secret);
        let mnemonic: Vec<&str> = (0..10)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect();
        let id = local_public_key[1..5].to_vec();
        Session {
            id: id.clone(),
            label: n.label.to_string(),
            session_state: n.state as i32,
            session_type: n.typ as i32,
            expiry_timestamp_seconds: n.expiry,
            mailbox_server_addr: n.mailbox.to_string(),
            dev_server: n.dev_server,
            pairing_secret,
            pairing_secret_mnemonic: mnemonic.join(" "),
            local_public_key,
            remote_public_key: Vec::new(),
            created_at: n.created_at,
            macaroon_recipe: None,
            account_id: String::new(),
            autopilot_feature_info: HashMap::new(),
            revoked_at: if n.state == SessionState::StateRevoked {
                n.created_at + 3600
            } else {
                0
            },
            group_id: id,
            feature_configs: HashMap::new(),
            privacy_flags: 0,
        }
    }

    fn seed(&self) {
        let now = now_secs();
        let mut sessions = lock(&self.sessions);
        for (i, (label, typ, state)) in [
            (
                "demo read-only",
                SessionType::TypeMacaroonReadonly,
                SessionState::StateCreated,
            ),
            (
                "demo admin",
                SessionType::TypeMacaroonAdmin,
                SessionState::StateCreated,
            ),
            (
                "demo revoked",
                SessionType::TypeMacaroonAdmin,
                SessionState::StateRevoked,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let s = self.new_session(NewSession {
                label,
                typ,
                state,
                expiry: now + 90 * 86_400,
                mailbox: DEFAULT_MAILBOX,
                dev_server: false,
                created_at: now - (3 - i as u64) * 86_400,
            });
            sessions.push(s);
        }
    }

    fn list(&self, keep: impl Fn(&Session) -> bool) -> Vec<Session> {
        let mut out: Vec<Session> = lock(&self.sessions)
            .iter()
            .filter(|s| keep(s))
            .cloned()
            .collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    fn authorize(&self, md: &MetadataMap, entity: &str, action: &str) -> Result<(), Status> {
        let values: Vec<_> = md.get_all("macaroon").iter().collect();
        let [value] = values.as_slice() else {
            return Err(Status::unknown(format!(
                "expected 1 macaroon, got {}",
                values.len()
            )));
        };
        let text = value
            .to_str()
            .map_err(|_| Status::unknown("unable to decode macaroon: not hex"))?;
        let mac = Macaroon::from_hex(text)
            .map_err(|e| Status::unknown(format!("unable to decode macaroon: {e}")))?;
        self.baker
            .verify(&mac, Some((entity, action)), SystemTime::now())
            .map_err(|e| Status::unknown(e.to_string()))
    }

    /// litd's RevokeSession after the macaroon check: shift to Revoked, then tell the Autopilot
    /// server, whatever the session type.
    async fn revoke(&self, key: &[u8], autopilot_only: bool) -> Result<(), Status> {
        check_pubkey(key)?;
        {
            let mut sessions = lock(&self.sessions);
            let s = sessions
                .iter_mut()
                .find(|s| s.local_public_key == key)
                .ok_or_else(|| Status::unknown("session not found"))?;
            if autopilot_only && s.session_type != SessionType::TypeAutopilot as i32 {
                return Err(Status::unknown("session not found"));
            }
            match SessionState::try_from(s.session_state) {
                Ok(SessionState::StateRevoked) => {}
                Ok(SessionState::StateCreated | SessionState::StateInUse) => {
                    s.session_state = SessionState::StateRevoked as i32;
                    s.revoked_at = now_secs();
                }
                _ => {
                    return Err(Status::unknown(format!(
                        "illegal session state transition from {} to Revoked",
                        state_name(s.session_state)
                    )))
                }
            }
        }
        let target = self.autopilot_target();
        if let Some(target) = &target {
            // Best effort, errors only logged: as litd, for every session type.
            let req = aps::RevokeSessionRequest {
                responder_pub_key: key.to_vec(),
            };
            match autopilot_client(target).await {
                Ok(mut c) => {
                    if let Err(e) = c.revoke_session(req).await {
                        tracing::warn!(error = %go_rpc_error(&e), "demo litd: autopilot RevokeSession failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %go_rpc_error(&e), "demo litd: autopilot unreachable for RevokeSession")
                }
            }
        }
        Ok(())
    }
}

fn check_pubkey(key: &[u8]) -> Result<(), Status> {
    if key.len() != 33 {
        return Err(Status::unknown(format!(
            "malformed public key: invalid length: {}",
            key.len()
        )));
    }
    if key[0] != 0x02 && key[0] != 0x03 {
        return Err(Status::unknown(format!(
            "invalid public key: unsupported format: {}",
            key[0]
        )));
    }
    Ok(())
}

/// grpc-go's error text, as litd prints a failed client call.
fn go_rpc_error(s: &Status) -> String {
    let name = crate::error::code_name(s.code());
    format!("rpc error: code = {name} desc = {}", s.message())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A new connection per call, as litd's autopilot client does.
async fn autopilot_client(
    t: &AutopilotTarget,
) -> Result<AutopilotClient<tonic::transport::Channel>, Status> {
    use tonic::transport::Endpoint;
    let unavailable = |e: tonic::transport::Error| {
        Status::unavailable(format!("connection error: {}", error_chain(&e)))
    };
    // With TLS the pinned connector does the handshake under an `http` URI.
    let ep = Endpoint::from_shared(format!("http://{}", t.addr))
        .map_err(unavailable)?
        .connect_timeout(AUTOPILOT_TIMEOUT)
        .timeout(AUTOPILOT_TIMEOUT);
    let channel = match &t.tls_cert_pem {
        // Go's credentials.NewClientTLSFromFile: the file's certificate is trusted as is,
        // including lnd-shaped self-signed CA certificates.
        Some(pem) => {
            let tls = crate::tls::pinned::pem_client_config(pem)
                .map_err(|e| Status::unavailable(format!("autopilot.tlspath: {e}")))?;
            crate::tls::pinned::tonic_channel(ep, tls)
        }
        None => ep.connect().await.map_err(unavailable)?,
    };
    Ok(AutopilotClient::new(channel))
}

async fn list_server_features(
    t: &AutopilotTarget,
) -> Result<HashMap<String, aps::Feature>, Status> {
    let resp = autopilot_client(t)
        .await?
        .list_features(aps::ListFeaturesRequest {})
        .await?;
    // litd keys its lookup by each feature's Name field.
    Ok(resp
        .into_inner()
        .features
        .into_values()
        .map(|f| (f.name.clone(), f))
        .collect())
}

/// litd's conversion of a server Feature for ListAutopilotFeatures.
fn convert_feature(f: &aps::Feature) -> Result<Feature, Status> {
    let mut requires_upgrade = privacy::flags::unknown_bit(f.privacy_flags).is_some();
    let mut out_rules = HashMap::new();
    for (name, r) in &f.rules {
        if !rules::is_known(name) {
            requires_upgrade = true;
            out_rules.insert(
                name.clone(),
                RuleValues {
                    known: false,
                    ..Default::default()
                },
            );
            continue;
        }
        let parse = |raw: &[u8]| {
            rules::from_json(name, raw)
                .map(Some)
                .map_err(|e| Status::unknown(e.to_string()))
        };
        out_rules.insert(
            name.clone(),
            RuleValues {
                known: true,
                defaults: parse(&r.default)?,
                min_value: parse(&r.min_value)?,
                max_value: parse(&r.max_value)?,
            },
        );
    }
    Ok(Feature {
        name: f.name.clone(),
        description: f.description.clone(),
        rules: out_rules,
        permissions_list: f
            .permissions_list
            .iter()
            .map(|p| Permissions {
                method: p.method.clone(),
                operations: p
                    .operations
                    .iter()
                    .map(|o| MacaroonPermission {
                        entity: o.entity.clone(),
                        action: o.action.clone(),
                    })
                    .collect(),
            })
            .collect(),
        requires_upgrade,
        default_config: String::from_utf8_lossy(&f.default_config).into_owned(),
        privacy_flags: f.privacy_flags,
    })
}

fn version((major, minor, patch): (u32, u32, u32)) -> aps::Version {
    aps::Version {
        major,
        minor,
        patch,
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC services

#[derive(Clone)]
struct Services(Arc<Inner>);

#[tonic::async_trait]
impl Sessions for Services {
    async fn add_session(
        &self,
        req: Request<AddSessionRequest>,
    ) -> Result<Response<AddSessionResponse>, Status> {
        self.0.authorize(req.metadata(), "sessions", "write")?;
        let r = req.into_inner();
        let typ = match SessionType::try_from(r.session_type) {
            Ok(t @ (SessionType::TypeMacaroonReadonly | SessionType::TypeMacaroonAdmin | SessionType::TypeMacaroonAccount)) => t,
            Ok(SessionType::TypeMacaroonCustom) => {
                if r.macaroon_custom_permissions.is_empty() {
                    return Err(Status::unknown(
                        "custom macaroon permissions must be specified for the custom macaroon session type",
                    ));
                }
                SessionType::TypeMacaroonCustom
            }
            _ => {
                return Err(Status::unknown(
                    "invalid session type, only admin, readonly, custom and account macaroon types supported in \
                     LiT. Autopilot sessions must be added using AddAutoPilotSession method",
                ))
            }
        };
        let now = now_secs();
        if r.expiry_timestamp_seconds <= now {
            return Err(Status::unknown("expiry must be in the future"));
        }
        let mut sessions = lock(&self.0.sessions);
        let mut s = self.0.new_session(NewSession {
            label: &r.label,
            typ,
            state: SessionState::StateCreated,
            expiry: r.expiry_timestamp_seconds,
            mailbox: &r.mailbox_server_addr,
            dev_server: r.dev_server,
            created_at: now,
        });
        match typ {
            SessionType::TypeMacaroonCustom => {
                s.macaroon_recipe = Some(MacaroonRecipe {
                    permissions: r.macaroon_custom_permissions,
                    caveats: Vec::new(),
                });
            }
            SessionType::TypeMacaroonAccount => {
                s.account_id = r.account_id.clone();
                s.macaroon_recipe = Some(MacaroonRecipe {
                    permissions: Vec::new(),
                    caveats: vec![format!("lnd-custom account {}", r.account_id)],
                });
            }
            _ => {}
        }
        sessions.push(s.clone());
        Ok(Response::new(AddSessionResponse { session: Some(s) }))
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        self.0.authorize(req.metadata(), "sessions", "read")?;
        Ok(with_demo_metadata(Response::new(ListSessionsResponse {
            sessions: self.0.list(|_| true),
        })))
    }

    async fn revoke_session(
        &self,
        req: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        self.0.authorize(req.metadata(), "sessions", "write")?;
        self.0
            .revoke(&req.into_inner().local_public_key, false)
            .await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }
}

#[tonic::async_trait]
impl Autopilot for Services {
    async fn list_autopilot_features(
        &self,
        req: Request<ListAutopilotFeaturesRequest>,
    ) -> Result<Response<ListAutopilotFeaturesResponse>, Status> {
        self.0.authorize(req.metadata(), "autopilot", "read")?;
        let target = self
            .0
            .autopilot_target()
            .ok_or_else(|| Status::unimplemented("autopilot is disabled"))?;
        let features = list_server_features(&target)
            .await?
            .iter()
            .map(|(name, f)| Ok((name.clone(), convert_feature(f)?)))
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(ListAutopilotFeaturesResponse { features }))
    }

    async fn add_autopilot_session(
        &self,
        req: Request<AddAutopilotSessionRequest>,
    ) -> Result<Response<AddAutopilotSessionResponse>, Status> {
        self.0.authorize(req.metadata(), "autopilot", "write")?;
        let session = add_autopilot_session(&self.0, req.into_inner()).await?;
        Ok(Response::new(AddAutopilotSessionResponse {
            session: Some(session),
        }))
    }

    async fn list_autopilot_sessions(
        &self,
        req: Request<ListAutopilotSessionsRequest>,
    ) -> Result<Response<ListAutopilotSessionsResponse>, Status> {
        self.0.authorize(req.metadata(), "autopilot", "read")?;
        let sessions = self
            .0
            .list(|s| s.session_type == SessionType::TypeAutopilot as i32);
        Ok(with_demo_metadata(Response::new(
            ListAutopilotSessionsResponse { sessions },
        )))
    }

    async fn revoke_autopilot_session(
        &self,
        req: Request<RevokeAutopilotSessionRequest>,
    ) -> Result<Response<RevokeAutopilotSessionResponse>, Status> {
        self.0.authorize(req.metadata(), "autopilot", "write")?;
        self.0
            .revoke(&req.into_inner().local_public_key, true)
            .await?;
        Ok(Response::new(RevokeAutopilotSessionResponse {}))
    }
}

/// Initial metadata the fake adds to its session lists (a real litd behind a load balancer or
/// a newer litd may add its own): litgate must hand every answer header on, cached or not.
pub const DEMO_METADATA: (&str, &str) = ("x-demo-litd", "sessions");
/// A trailer the fake adds to its session lists' gRPC answers, for the same reason.
pub const DEMO_TRAILER: (&str, &str) = ("x-demo-litd-trailer", "end");

fn with_demo_metadata<T>(mut r: Response<T>) -> Response<T> {
    r.metadata_mut()
        .insert(DEMO_METADATA.0, MetadataValue::from_static(DEMO_METADATA.1));
    r
}

fn unknown(msg: impl Into<String>) -> Status {
    Status::unknown(msg)
}

/// litd's AddAutopilotSession after the macaroon check (LiT's `session_rpcserver.go`),
/// without the privacy mapper's pseudonyms (values and configs are sent in clear).
async fn add_autopilot_session(
    inner: &Inner,
    r: AddAutopilotSessionRequest,
) -> Result<Session, Status> {
    // 1-3: features, expiry, privacy mode.
    if r.features.is_empty() {
        return Err(unknown("must include at least one feature"));
    }
    let now = now_secs();
    if r.expiry_timestamp_seconds <= now {
        return Err(unknown("expiry must be in the future"));
    }
    let privacy = !r.no_privacy_mapper;

    // 4: linked group: copied into 4 bytes without a length check, as litd does.
    let linked = if r.linked_group_id.is_empty() {
        None
    } else {
        let mut gid = [0u8; 4];
        let n = r.linked_group_id.len().min(4);
        gid[..n].copy_from_slice(&r.linked_group_id[..n]);
        let sessions = lock(&inner.sessions);
        let first = sessions
            .iter()
            .find(|s| s.id == gid)
            .ok_or_else(|| unknown("session not found"))?;
        if first.group_id != first.id {
            return Err(unknown(format!(
                "can not link to session {} since it is not the first in the session group {}",
                hex::encode(&first.id),
                hex::encode(&first.group_id)
            )));
        }
        Some((gid.to_vec(), first.local_public_key.clone()))
    };

    // 5: the feature list, live.
    let target = inner
        .autopilot_target()
        .ok_or_else(|| Status::unimplemented("autopilot is disabled"))?;
    let target = &target;
    let features = list_server_features(target).await?;
    let server_feature = |name: &str| {
        features.get(name).ok_or_else(|| {
            unknown(format!(
                "{name} is not a features provided by the Autopilot server"
            ))
        })
    };

    // 6: privacy flags.
    let flags = if r.privacy_flags_set {
        if !privacy {
            return Err(unknown(
                "privacy flags can only be set when the privacy mapper is enabled",
            ));
        }
        if let Some(bit) = privacy::flags::unknown_bit(r.privacy_flags) {
            return Err(unknown(format!(
                "error deserializing privacy flags ({}) from request: unknown privacy flag: {bit}",
                r.privacy_flags
            )));
        }
        r.privacy_flags
    } else {
        let mut union = 0;
        for name in r.features.keys() {
            let f = server_feature(name)?;
            if let Some(bit) = privacy::flags::unknown_bit(f.privacy_flags) {
                return Err(unknown(format!("unknown privacy flag: {bit}")));
            }
            union |= f.privacy_flags;
        }
        union
    };

    // 7: per-feature rules, defaults filled in.
    let requested: BTreeMap<&String, _> = r.features.iter().collect();
    let mut feature_rules: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut feature_info: HashMap<String, RulesMap> = HashMap::new();
    for (fname, cfg) in &requested {
        let f = server_feature(fname)?;
        let user_rules: BTreeMap<String, _> = cfg
            .rules
            .as_ref()
            .map(|m| m.rules.clone().into_iter().collect())
            .unwrap_or_default();
        for (rname, value) in &user_rules {
            rules::check_value(rname, value).map_err(|e| unknown(e.to_string()))?;
            let srule = f.rules.get(rname).ok_or_else(|| {
                unknown(format!(
                    "autopilot did not specify {rname} as a rule for feature {fname}"
                ))
            })?;
            let min =
                rules::from_json(rname, &srule.min_value).map_err(|e| unknown(e.to_string()))?;
            let max =
                rules::from_json(rname, &srule.max_value).map_err(|e| unknown(e.to_string()))?;
            if let Err(reason) = rules::check_sane(rname, value, &min, &max) {
                let show = |v| rules::to_json(rname, v).unwrap_or_default();
                return Err(unknown(format!(
                    "rule value for {rname} not valid for feature {fname}. Expected rule value between {} and {}. \
                     Got {}. {reason}",
                    show(&min),
                    show(&max),
                    show(value)
                )));
            }
        }
        let mut final_rules = HashMap::new();
        let mut json_rules = BTreeMap::new();
        let server_rules: BTreeMap<&String, &aps::Rule> = f.rules.iter().collect();
        for (rname, srule) in server_rules {
            if !rules::is_known(rname) {
                return Err(unknown(format!("unknown rule {rname}, please upgrade")));
            }
            let value = match user_rules.get(rname) {
                Some(v) => v.clone(),
                // Defaults are taken as the server gives them: not checked against min/max.
                None => {
                    rules::from_json(rname, &srule.default).map_err(|e| unknown(e.to_string()))?
                }
            };
            json_rules.insert(
                rname.clone(),
                rules::to_json(rname, &value).map_err(|e| unknown(e.to_string()))?,
            );
            final_rules.insert(rname.clone(), value);
        }
        feature_rules.insert((*fname).clone(), json_rules);
        feature_info.insert((*fname).clone(), RulesMap { rules: final_rules });
    }

    // The macaroon recipe: URI-only permissions, the rules caveat, the privacy marker.
    let uris: BTreeSet<&String> = requested
        .keys()
        .filter_map(|n| features.get(n.as_str()))
        .flat_map(|f| f.permissions_list.iter().map(|p| &p.method))
        .collect();
    let rules_json =
        serde_json::to_string(&feature_rules).map_err(|e| Status::internal(e.to_string()))?;
    let mut caveats = vec![format!(
        "lnd-custom lit-mac-fw rules:{{\"session_rules\":null,\"feature_rules\":{rules_json}}}"
    )];
    if privacy {
        caveats.push("lnd-custom privacy".to_string());
    }
    let recipe = MacaroonRecipe {
        permissions: uris
            .into_iter()
            .map(|u| MacaroonPermission {
                entity: "uri".into(),
                action: u.clone(),
            })
            .collect(),
        caveats,
    };

    // 9: the Reserved row, before any remote call.
    let session = {
        let mut sessions = lock(&inner.sessions);
        if let Some((gid, _)) = &linked {
            let group: Vec<&Session> = sessions.iter().filter(|s| &s.group_id == gid).collect();
            if group.is_empty() {
                return Err(unknown("unknown group"));
            }
            let terminal = [
                SessionState::StateRevoked as i32,
                SessionState::StateExpired as i32,
            ];
            if group.iter().any(|s| !terminal.contains(&s.session_state)) {
                return Err(unknown("group has active sessions"));
            }
        }
        let mut s = inner.new_session(NewSession {
            label: &r.label,
            typ: SessionType::TypeAutopilot,
            state: SessionState::StateReserved,
            expiry: r.expiry_timestamp_seconds,
            mailbox: &r.mailbox_server_addr,
            dev_server: r.dev_server,
            created_at: now,
        });
        if let Some((gid, _)) = &linked {
            s.group_id = gid.clone();
        }
        s.macaroon_recipe = Some(recipe);
        s.autopilot_feature_info = feature_info;
        s.feature_configs = r
            .features
            .iter()
            .map(|(n, c)| (n.clone(), String::from_utf8_lossy(&c.config).into_owned()))
            .collect();
        s.privacy_flags = if privacy { flags } else { 0 };
        sessions.push(s.clone());
        s
    };

    // 13: register at the Autopilot server.
    let (group_responder_key, group_responder_sig) = match &linked {
        Some((_, first_key)) => (first_key.clone(), fake_der_signature()),
        None => (Vec::new(), Vec::new()),
    };
    let reg = aps::RegisterSessionRequest {
        responder_pub_key: session.local_public_key.clone(),
        mailbox_addr: r.mailbox_server_addr.clone(),
        dev_server: r.dev_server,
        feature_configs: r
            .features
            .iter()
            .map(|(n, c)| (n.clone(), c.config.clone()))
            .collect(),
        lit_version: Some(version(LIT_VERSION)),
        lnd_version: Some(version(LND_VERSION)),
        group_responder_key,
        group_responder_sig,
        privacy_flags: flags,
    };
    let registered = match autopilot_client(target).await {
        Ok(mut c) => c.register_session(reg).await.map(Response::into_inner),
        Err(e) => Err(e),
    };
    let resp = match registered {
        Ok(resp) => resp,
        Err(e) => {
            if linked.is_some() {
                // PR #1174: a linked Reserved row would block the group; unlinked ones stay.
                lock(&inner.sessions).retain(|s| s.local_public_key != session.local_public_key);
            }
            return Err(unknown(format!(
                "error registering session with autopilot server: {}",
                go_rpc_error(&e)
            )));
        }
    };

    // 14-15: remote key, Reserved → Created.
    let mut sessions = lock(&inner.sessions);
    // From the end: it was pushed a moment ago.
    let s = sessions
        .iter_mut()
        .rev()
        .find(|s| s.local_public_key == session.local_public_key)
        .ok_or_else(|| Status::internal("session vanished"))?;
    s.remote_public_key = resp.initiator_pub_key;
    s.session_state = SessionState::StateCreated as i32;
    Ok(s.clone())
}

/// A DER-shaped 70-byte ECDSA signature (random r and s): the fake does not sign.
fn fake_der_signature() -> Vec<u8> {
    let mut sig = vec![0x30, 0x44, 0x02, 0x20];
    let mut part = [0u8; 32];
    rand::rng().fill_bytes(&mut part);
    part[0] &= 0x7f;
    sig.extend_from_slice(&part);
    sig.extend_from_slice(&[0x02, 0x20]);
    rand::rng().fill_bytes(&mut part);
    part[0] &= 0x7f;
    sig.extend_from_slice(&part);
    sig
}

#[tonic::async_trait]
impl StatusSvc for Services {
    async fn sub_server_status(
        &self,
        _: Request<SubServerStatusReq>,
    ) -> Result<Response<SubServerStatusResp>, Status> {
        let running = SubServerStatus {
            disabled: false,
            running: true,
            error: String::new(),
            custom_status: String::new(),
        };
        let sub_servers = [
            "lnd",
            "lit",
            "accounts",
            "faraday",
            "loop",
            "pool",
            "taproot-assets",
        ]
        .into_iter()
        .map(|n| (n.to_string(), running.clone()))
        .collect();
        Ok(Response::new(SubServerStatusResp { sub_servers }))
    }
}

fn echo_failure(code: i32) -> Status {
    Status::new(Code::from(code), "echo failure requested")
}

#[tonic::async_trait]
impl Echo for Services {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let r = req.into_inner();
        if r.fail_code != 0 {
            return Err(echo_failure(r.fail_code));
        }
        Ok(Response::new(EchoReply {
            message: r.message,
            index: 0,
        }))
    }

    type ServerStreamStream = ReceiverStream<Result<EchoReply, Status>>;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let r = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for index in 0..r.count {
                if index > 0 && r.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(r.delay_ms.into())).await;
                }
                if tx
                    .send(Ok(EchoReply {
                        message: r.message.clone(),
                        index,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if r.fail_code != 0 {
                let _ = tx.send(Err(echo_failure(r.fail_code))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn client_stream(
        &self,
        req: Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = req.into_inner();
        let mut messages = Vec::new();
        while let Some(m) = stream.message().await? {
            if m.fail_code != 0 {
                return Err(echo_failure(m.fail_code));
            }
            messages.push(m.message);
        }
        let index = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        Ok(Response::new(EchoReply {
            message: messages.join(","),
            index,
        }))
    }

    type BidiStream = ReceiverStream<Result<EchoReply, Status>>;

    async fn bidi(
        &self,
        req: Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut stream = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let item = match stream.message().await {
                    Ok(Some(m)) if m.fail_code != 0 => Err(echo_failure(m.fail_code)),
                    Ok(Some(m)) => Ok(EchoReply {
                        message: m.message,
                        index,
                    }),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
                index += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
