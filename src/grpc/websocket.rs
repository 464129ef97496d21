//! WebSockets on the public face: which upgrade a request asks for, and grpc-websockets, the
//! transport of improbable's grpc-web wrapper that litd runs with websockets on and that the
//! Terminal UI uses for every server stream. Used by the router (which terminates grpc-websockets
//! calls to intercepted methods, so they get the same policy as grpc-web) and by the demo litd
//! (which serves grpc-websockets for every method, as litd does). WebSocket frames themselves
//! are `tokio-tungstenite`'s; this module owns what rides inside them:
//!
//! - client → server: the first binary message is a header block (`name: value\r\n` lines:
//!   content type, `x-grpc-web`, the caller's metadata such as `macaroon`); every later binary
//!   message starts with a control byte: `0x00` and a slice of the gRPC-framed request stream,
//!   or the single byte `0x01` when the client has finished sending;
//! - server → client: grpc-web's framing as a byte stream across binary messages: a header
//!   frame (`0x80`, length, the response headers as `name: value\r\n` lines), the data frames
//!   as gRPC frames them, a trailer frame in the same shape as the header frame (`grpc-status`,
//!   `grpc-message`), then a normal close. A call with no data gets one such frame holding
//!   headers and status together.
//!
//! It must never put header values into an error or a log: the header block carries macaroons.

use std::{future::Future, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use tokio_tungstenite::{
    tungstenite::{
        self,
        error::CapacityError,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};

use super::{error_response, Protocol};
use crate::{
    body::{self, BoxError, Request, Response},
    error::Error,
    layers::identity::Caller,
    server::{ConnectInfo, Upgrades},
};

/// The WebSocket subprotocol improbable's transport offers and its wrapper accepts.
pub const SUBPROTOCOL: &str = "grpc-websockets";

/// Control byte of a client message carrying request bytes.
const DATA: u8 = 0x00;
/// The whole of the client message that says it has finished sending.
const FINISH_SEND: u8 = 0x01;
/// Flag of a header or trailer frame in grpc-web's framing.
const HEADER_FLAG: u8 = 0x80;
/// How long a finished call waits for the client's close frame before dropping the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The WebSocket upgrade a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// Subprotocol `grpc-websockets`: a gRPC call in improbable's framing.
    GrpcWebSockets,
    /// Any other WebSocket (lnd's REST streams, the UI's own).
    Plain,
}

/// Whether a comma-separated header holds `token` (case-insensitive), in any of its values.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The WebSocket upgrade `headers` ask for (`Upgrade: websocket` with `Connection: upgrade`),
/// if any; grpc-websockets when `Sec-WebSocket-Protocol` offers it.
pub fn upgrade_of(headers: &HeaderMap) -> Option<Upgrade> {
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return None;
    }
    Some(
        if has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
            Upgrade::GrpcWebSockets
        } else {
            Upgrade::Plain
        },
    )
}

/// The HTTP methods a WebSocket upgrade can make litd's REST proxy call: the upgrade's own
/// method, and every `method` query parameter (lnd's WebSocket proxy takes the first, as
/// Go's `url.Values.Get` reads it; browsers can only open WebSockets with GET). Over-inclusive
/// on purpose: the router refuses an upgrade if any of these reaches a session write.
pub fn rest_methods(method: &Method, uri: &http::Uri) -> Vec<Method> {
    let mut out = vec![method.clone()];
    for value in query_values(uri, "method") {
        for v in [value.clone(), value.to_ascii_uppercase()] {
            if let Ok(m) = Method::from_bytes(v.as_bytes()) {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// The method litd's REST WebSocket proxy calls for this request: the first `method` query
/// parameter of a WebSocket upgrade, else the request's own method. The rate limiter classes
/// the call by it.
pub fn effective_method(req: &Request) -> Method {
    if upgrade_of(req.headers()).is_none() {
        return req.method().clone();
    }
    query_values(req.uri(), "method")
        .into_iter()
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or_else(|| req.method().clone())
}

/// Every value of `key` in the query, decoded as Go's `url.ParseQuery` does (`+` is a space,
/// percent escapes; a pair with `;` or a bad escape is skipped).
fn query_values(uri: &http::Uri, key: &str) -> Vec<String> {
    let Some(q) = uri.query() else {
        return Vec::new();
    };
    let decode = |s: &str| {
        let b = s.as_bytes();
        let bad_escape = b.iter().enumerate().any(|(i, &c)| {
            c == b'%'
                && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if bad_escape {
            return None;
        }
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    q.split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Why a WebSocket handshake was refused (the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// RFC 6455 handshakes are GET requests.
    #[error("a WebSocket handshake must be a GET request, not {0}")]
    NotGet(Method),
    /// Only version 13 exists.
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    /// No key to answer.
    #[error("Sec-WebSocket-Key is missing")]
    MissingKey,
    /// improbable's wrapper refuses cross-origin WebSockets, and so does litgate.
    #[error("the Origin header does not name the host this WebSocket was opened on")]
    Origin,
}

/// The `101 Switching Protocols` answer to a grpc-websockets handshake, after the checks
/// improbable's wrapper makes (its default origin check: the `Origin` URL's host must equal
/// the `Host` the request was sent to).
pub fn accept(method: &Method, headers: &HeaderMap) -> Result<http::Response<()>, HandshakeError> {
    let mut resp = switching_protocols(method, headers)?;
    if !same_origin(headers) {
        return Err(HandshakeError::Origin);
    }
    resp.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

/// The `101 Switching Protocols` answer to any WebSocket handshake (RFC 6455 §4.2), with no
/// subprotocol chosen.
pub fn switching_protocols(
    method: &Method,
    headers: &HeaderMap,
) -> Result<http::Response<()>, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::NotGet(method.clone()));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = http::Response::new(());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(resp)
}

/// improbable's default WebSocket origin check: `Origin` parses as an absolute URL whose host
/// (with port) is exactly the request's `Host`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (origin, host) else {
        return false;
    };
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme(), uri.authority()) {
        (Some(_), Some(a)) => a.as_str().rsplit('@').next() == Some(host),
        _ => false,
    }
}

/// What was wrong with what a grpc-websockets client sent.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A text message where improbable's transport sends binary ones.
    #[error("grpc-websockets: a text message where binary messages are expected")]
    Text,
    /// A data message whose first byte is neither `0x00` nor the finish-send marker.
    #[error(
        "grpc-websockets: unknown control byte {0:#04x} (0x00 starts data, 0x01 alone finishes sending)"
    )]
    ControlByte(u8),
    /// The header block is not `name: value` lines.
    #[error("grpc-websockets: malformed header block, line {line}: {reason}")]
    HeaderBlock {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it (never the value).
        reason: &'static str,
    },
    /// More request bytes than litgate reads for one call.
    #[error("grpc-websockets: the request is larger than the {limit}-byte limit (listen.max_message_bytes)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The connection broke or broke the WebSocket protocol.
    #[error("grpc-websockets: {0}")]
    Transport(#[source] tungstenite::Error),
}

impl FrameError {
    /// The gRPC status code the caller gets for it.
    pub fn code(&self) -> tonic::Code {
        match self {
            FrameError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            _ => tonic::Code::InvalidArgument,
        }
    }

    fn from_ws(e: tungstenite::Error, limit: usize) -> FrameError {
        match e {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                FrameError::TooLarge { limit }
            }
            e => FrameError::Transport(e),
        }
    }
}

/// Parses a header block as Go's `textproto` reads it: `name: value` lines ending in CRLF (or
/// LF), values trimmed, names case-insensitive; continuation lines and blank lines inside the
/// block are refused rather than guessed at.
pub fn parse_header_block(block: &[u8]) -> Result<HeaderMap, FrameError> {
    let mut out = HeaderMap::new();
    let body = block
        .strip_suffix(b"\r\n")
        .or_else(|| block.strip_suffix(b"\n"))
        .unwrap_or(block);
    if body.is_empty() {
        return Ok(out);
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let bad = |reason| FrameError::HeaderBlock { line, reason };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return Err(bad("blank line inside the block"));
        }
        if raw[0] == b' ' || raw[0] == b'\t' {
            return Err(bad("continuation lines are not accepted"));
        }
        let colon = raw
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("no colon"))?;
        let name = HeaderName::from_bytes(&raw[..colon].to_ascii_lowercase())
            .map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(raw[colon + 1..].trim_ascii())
            .map_err(|_| bad("invalid header value"))?;
        out.append(name, value);
    }
    Ok(out)
}

/// Encodes headers as a header block (`name: value\r\n` lines), as improbable's client sends
/// them and as header and trailer frames carry them.
pub fn header_block(headers: &HeaderMap) -> Bytes {
    let mut b = BytesMut::new();
    for (name, value) in headers {
        b.put_slice(name.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(value.as_bytes());
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

/// A header (or trailer) frame: `0x80`, the block's length, the block.
pub fn header_frame(headers: &HeaderMap) -> Bytes {
    let block = header_block(headers);
    let mut b = BytesMut::with_capacity(5 + block.len());
    b.put_u8(HEADER_FLAG);
    b.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    b.put_slice(&block);
    b.freeze()
}

/// A client message carrying request bytes (`0x00` + `chunk`).
pub fn data_message(chunk: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + chunk.len());
    b.put_u8(DATA);
    b.put_slice(chunk);
    Message::Binary(b.freeze())
}

/// The client message that says the client has finished sending.
pub fn finish_send_message() -> Message {
    Message::Binary(Bytes::from_static(&[FINISH_SEND]))
}

/// What a client message meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Request bytes (a slice of the gRPC-framed stream).
    Data(Bytes),
    /// The finish-send marker: the request stream is complete.
    FinishSend,
    /// The client closed (or its connection ended) first.
    Closed,
}

/// The next binary message; `Ok(None)` once the client has closed. Pings and pongs are
/// skipped (tungstenite answers pings itself); a text message is an error.
async fn next_binary<S>(ws: &mut S) -> Result<Option<Bytes>, FrameError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            None
            | Some(Ok(Message::Close(_)))
            | Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Text(_))) => return Err(FrameError::Text),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => return Err(FrameError::Transport(e)),
        }
    }
}

/// Reads the next meaningful client message; empty messages are skipped (as improbable's
/// reader skips them).
pub async fn next_inbound<S>(ws: &mut S) -> Result<Inbound, FrameError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let Some(b) = next_binary(ws).await? else {
            return Ok(Inbound::Closed);
        };
        match b.first() {
            None => continue,
            Some(&DATA) => return Ok(Inbound::Data(b.slice(1..))),
            Some(&FINISH_SEND) if b.len() == 1 => return Ok(Inbound::FinishSend),
            Some(&other) => return Err(FrameError::ControlByte(other)),
        }
    }
}

/// Reads the header block, the client's first message. `Ok(None)`: it closed first.
pub async fn read_header_block<S>(ws: &mut S) -> Result<Option<HeaderMap>, FrameError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    match next_binary(ws).await? {
        Some(block) => parse_header_block(&block).map(Some),
        None => Ok(None),
    }
}

/// Reads one whole call: the header block, then request bytes up to the finish-send marker,
/// at most `limit` of them. `Ok(None)`: the client closed before it finished sending.
pub async fn read_call<S>(
    ws: &mut S,
    limit: usize,
) -> Result<Option<(HeaderMap, Bytes)>, FrameError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let too_large = |e| match e {
        FrameError::Transport(e) => FrameError::from_ws(e, limit),
        e => e,
    };
    let Some(headers) = read_header_block(ws).await.map_err(too_large)? else {
        return Ok(None);
    };
    let mut body = BytesMut::new();
    loop {
        match next_inbound(ws).await.map_err(too_large)? {
            Inbound::Data(d) => {
                if body.len() + d.len() > limit {
                    return Err(FrameError::TooLarge { limit });
                }
                body.put_slice(&d);
            }
            Inbound::FinishSend => return Ok(Some((headers, body.freeze()))),
            Inbound::Closed => return Ok(None),
        }
    }
}

/// Splits a grpc-web response stream into whole frames (flag, the frame with its prefix).
#[derive(Default)]
struct Frames {
    buf: BytesMut,
}

impl Frames {
    fn push(&mut self, data: &Bytes) {
        self.buf.put_slice(data);
    }

    fn next(&mut self) -> Option<(u8, Bytes)> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return None;
        }
        let frame = self.buf.split_to(5 + len).freeze();
        Some((frame[0], frame))
    }
}

/// Response headers as the header frame carries them: without the ones that describe the
/// HTTP message rather than the call.
fn call_headers(mut headers: HeaderMap) -> HeaderMap {
    crate::upstream::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

/// A status as trailers.
fn status_trailers(code: tonic::Code, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    super::insert_status(&mut t, code, message);
    t
}

/// The status of an answer that ended without trailers: its own (a trailers-only answer), or
/// one derived from its HTTP status as gRPC clients derive it.
fn status_of_head(status: StatusCode, head: &HeaderMap) -> HeaderMap {
    if head.contains_key("grpc-status") {
        return HeaderMap::new();
    }
    use tonic::Code;
    let code = match status.as_u16() {
        200 => return status_trailers(Code::Unknown, "the answer ended without a gRPC status"),
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    status_trailers(
        code,
        &format!("HTTP {} without a gRPC status", status.as_u16()),
    )
}

/// Writes a gRPC or grpc-web answer back as improbable's wrapper does: the header frame when
/// the first data frame is ready, every data frame, then the trailer frame; an answer without
/// data gets one frame with its headers and its status. HTTP trailers (gRPC) and a trailer
/// frame in the body (grpc-web) are both understood. The caller closes the WebSocket after.
pub async fn write_response<Si, B>(
    ws: &mut Si,
    resp: http::Response<B>,
) -> Result<(), tungstenite::Error>
where
    Si: Sink<Message, Error = tungstenite::Error> + Unpin,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let mut head = Some(call_headers(parts.headers));
    let mut frames = Frames::default();
    let mut body = std::pin::pin!(body);
    let trailers = 'body: loop {
        let frame = match body.frame().await {
            None => break None,
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "grpc-websockets: the answer broke off");
                break Some(status_trailers(
                    tonic::Code::Unavailable,
                    "the answer broke off before its status",
                ));
            }
            Some(Ok(f)) => f,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(f) => match f.into_trailers() {
                Ok(t) => break Some(t),
                Err(_) => continue,
            },
        };
        frames.push(&data);
        while let Some((flag, frame)) = frames.next() {
            if flag & HEADER_FLAG != 0 {
                // grpc-web's trailer frame: the status, in the same shape as ours.
                let t = parse_header_block(&frame[5..]).unwrap_or_else(|_| {
                    status_trailers(
                        tonic::Code::Internal,
                        "the answer's trailers were malformed",
                    )
                });
                break 'body Some(t);
            }
            if let Some(h) = head.take() {
                ws.send(Message::Binary(header_frame(&h))).await?;
            }
            ws.send(Message::Binary(frame)).await?;
        }
    };
    let last = match (head, trailers) {
        // Headers already sent: the trailers alone.
        (None, Some(t)) => t,
        (None, None) => status_trailers(
            tonic::Code::Unknown,
            "the answer ended without a gRPC status",
        ),
        // No data: one frame with the headers and the status, as improbable writes it.
        (Some(mut h), t) => {
            let t = t.unwrap_or_else(|| status_of_head(parts.status, &h));
            for (name, value) in &t {
                h.insert(name, value.clone());
            }
            h
        }
    };
    ws.send(Message::Binary(header_frame(&last))).await
}

/// Closes normally: sends the close frame, waits (bounded) for the client's, then shuts the
/// connection down (TLS `close_notify`), so the client sees a completed close rather than a
/// dropped connection.
pub async fn close<IO>(ws: &mut WebSocketStream<IO>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.send(Message::Close(Some(normal))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(ws.get_mut()).await;
}

/// Accepts a grpc-websockets call to an intercepted method and serves it as the grpc-web call
/// it carries: answers `101`, and once the connection is upgraded reads the header block and
/// the request (at most `limit` bytes), builds the grpc-web request (POST, same path, the
/// header block's metadata as headers, `ConnectInfo`, `Caller` and `Protocol::GrpcWeb` set as
/// the stack sets them), hands it to `dispatch`, and writes the answer back. Malformed frames
/// and oversized requests are answered with a status in the trailer frame; `dispatch` is not
/// called for them. The connection counts as in flight for the drain ([`Upgrades`]).
pub fn terminate<D, F>(mut req: Request, limit: usize, dispatch: D) -> Result<Response, Error>
where
    D: FnOnce(Request) -> F + Send + 'static,
    F: Future<Output = Result<Response, Error>> + Send + 'static,
{
    let answer = accept(req.method(), req.headers()).map_err(|e| match e {
        HandshakeError::Origin => Error::client(
            tonic::Code::PermissionDenied,
            format!("grpc-websockets: {e}"),
        ),
        e => Error::invalid(format!("grpc-websockets: {e}")),
    })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let path = req.uri().path().to_owned();
    let info = req.extensions().get::<ConnectInfo>().copied();
    // The caller's status arrives inside the WebSocket: report that one, not the `101`.
    let report = req
        .extensions()
        .get::<crate::grpc::status::Deferred>()
        .and_then(|d| d.claim());
    Upgrades::of(&req).spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "grpc-websockets: the upgrade did not complete");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit + 1))
            .max_frame_size(Some(limit + 1));
        let mut ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        let answer = match read_call(&mut ws, limit).await {
            Ok(None) => return,
            Ok(Some((headers, body))) => match inner_request(&path, headers, body, info) {
                Ok(inner) => dispatch(inner).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(Error::client(e.code(), e.to_string())),
        };
        let resp = answer.unwrap_or_else(|e| {
            tracing::warn!(error = %e, kind = e.kind(), code = ?e.code(), "grpc-websockets call refused");
            error_response(Protocol::GrpcWeb, &e)
        });
        let resp = match report {
            Some(report) => {
                crate::grpc::status::watch(Protocol::GrpcWeb, resp, move |o| report.report(o))
            }
            None => resp,
        };
        if let Err(e) = write_response(&mut ws, resp).await {
            tracing::debug!(error = %e, "grpc-websockets: the client went away");
            return;
        }
        close(&mut ws).await;
    });
    Ok(answer.map(|()| body::empty()))
}

/// The grpc-web request a grpc-websockets call carries, as the stack would have seen it.
fn inner_request(
    path: &str,
    mut headers: HeaderMap,
    body: Bytes,
    info: Option<ConnectInfo>,
) -> Result<Request, Error> {
    if Protocol::detect(&headers, path) != Protocol::GrpcWeb {
        return Err(Error::invalid(
            "grpc-websockets: the header block's content-type must be application/grpc-web+proto",
        ));
    }
    crate::upstream::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut req = http::Request::post(path)
        .body(body::full(body))
        .map_err(|_| Error::invalid("grpc-websockets: the request path is not a valid URI"))?;
    let caller = Caller::from_parts(&headers, info.as_ref());
    *req.headers_mut() = headers;
    let ext = req.extensions_mut();
    ext.insert(Protocol::GrpcWeb);
    ext.insert(caller);
    if let Some(info) = info {
        ext.insert(info);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn upgrades_are_recognised_by_tokens() {
        let ws = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        assert_eq!(upgrade_of(&headers(&ws)), Some(Upgrade::Plain));
        let mut grpc = headers(&ws);
        grpc.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("other, grpc-websockets"),
        );
        assert_eq!(upgrade_of(&grpc), Some(Upgrade::GrpcWebSockets));
        assert_eq!(upgrade_of(&headers(&[("upgrade", "websocket")])), None);
        assert_eq!(
            upgrade_of(&headers(&[("upgrade", "h2c"), ("connection", "upgrade")])),
            None
        );
    }

    #[test]
    fn rest_method_override_is_read_as_go_reads_it() {
        let uri: http::Uri = "/v1/autopilot/sessions?x=1&method=P%4FST&method=DELETE"
            .parse()
            .unwrap();
        assert_eq!(
            rest_methods(&Method::GET, &uri),
            [Method::GET, Method::POST, Method::DELETE]
        );
        let lower: http::Uri = "/v1/sessions?method=post".parse().unwrap();
        assert!(rest_methods(&Method::GET, &lower).contains(&Method::POST));
        for skipped in ["/v1/sessions?method=POST;x", "/v1/sessions?method=PO%zST"] {
            let uri: http::Uri = skipped.parse().unwrap();
            assert_eq!(rest_methods(&Method::GET, &uri), [Method::GET], "{skipped}");
        }

        let mut req = http::Request::get("/v2/router/send?method=POST")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .body(body::empty())
            .unwrap();
        assert_eq!(effective_method(&req), Method::POST);
        req.headers_mut().remove("upgrade");
        assert_eq!(
            effective_method(&req),
            Method::GET,
            "only upgrades are overridden"
        );
    }

    #[test]
    fn handshake_answer_and_origin_check() {
        let mut h = headers(&[
            ("sec-websocket-version", "13"),
            // RFC 6455's example key and its accept value.
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("host", "node.example:8445"),
            ("origin", "https://node.example:8445"),
        ]);
        let r = accept(&Method::GET, &h).unwrap();
        assert_eq!(r.status(), 101);
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], SUBPROTOCOL);
        assert_eq!(
            accept(&Method::POST, &h).unwrap_err(),
            HandshakeError::NotGet(Method::POST)
        );
        for origin in [Some("https://evil.example"), Some("null"), None] {
            match origin {
                Some(o) => h.insert(header::ORIGIN, HeaderValue::from_static(o)),
                None => h.remove(header::ORIGIN),
            };
            let e = accept(&Method::GET, &h).unwrap_err();
            assert_eq!(e, HandshakeError::Origin, "{origin:?}");
        }
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            accept(&Method::GET, &h).unwrap_err(),
            HandshakeError::Version
        );
    }

    #[test]
    fn header_block_round_trip_and_refusals() {
        // As improbable's client writes it: `key: v1, v2\r\n` per key.
        let block =
            b"content-type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nmacaroon:  0201ab \r\n";
        let h = parse_header_block(block).unwrap();
        assert_eq!(h["content-type"], "application/grpc-web+proto");
        assert_eq!(h["x-grpc-web"], "1");
        assert_eq!(h["macaroon"], "0201ab");
        assert_eq!(parse_header_block(&header_block(&h)).unwrap(), h);
        assert!(parse_header_block(b"").unwrap().is_empty());

        for (bad, line, what) in [
            (&b"a: 1\r\nno colon\r\n"[..], 2, "no colon"),
            (b"a: 1\r\n folded\r\n", 2, "continuation"),
            (b"a: 1\r\n\r\nb: 2\r\n", 2, "blank line"),
            (b"bad name: 1\r\n", 1, "invalid header name"),
            (b"a: \x01\r\n", 1, "invalid header value"),
        ] {
            let e = parse_header_block(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("line {line}")) && e.contains(what),
                "{e}"
            );
        }
        let secret = parse_header_block(b"macaroon: 0201\x01ff\r\n").unwrap_err();
        assert!(
            !secret.to_string().contains("0201"),
            "values never in errors"
        );
    }

    #[test]
    fn header_frame_is_prefixed_like_a_grpc_web_trailer_frame() {
        let f = header_frame(&headers(&[("grpc-status", "0")]));
        assert_eq!(&f[..5], &[0x80, 0, 0, 0, 16]);
        assert_eq!(&f[5..], b"grpc-status: 0\r\n");
    }

    type Msgs = Vec<Result<Message, tungstenite::Error>>;

    fn stream(
        msgs: Msgs,
    ) -> futures_util::stream::Iter<std::vec::IntoIter<Result<Message, tungstenite::Error>>> {
        futures_util::stream::iter(msgs)
    }

    #[tokio::test]
    async fn a_call_is_read_up_to_the_finish_marker() {
        let mut s = stream(vec![
            Ok(Message::Binary(Bytes::from_static(
                b"content-type: application/grpc-web+proto\r\n",
            ))),
            Ok(Message::Ping(Bytes::new())),
            Ok(data_message(b"\x00\x00\x00")),
            Ok(Message::Binary(Bytes::new())),
            Ok(data_message(b"\x00\x01x")),
            Ok(finish_send_message()),
            Ok(data_message(b"ignored")),
        ]);
        let (h, body) = read_call(&mut s, 1024).await.unwrap().unwrap();
        assert_eq!(h["content-type"], "application/grpc-web+proto");
        assert_eq!(&body[..], b"\x00\x00\x00\x00\x01x");
    }

    #[tokio::test]
    async fn malformed_calls_are_refused() {
        let block = || Ok(Message::Binary(Bytes::from_static(b"a: 1\r\n")));
        let mut closed = stream(vec![block(), Ok(data_message(b"x"))]);
        assert!(read_call(&mut closed, 1024).await.unwrap().is_none());

        let mut text = stream(vec![block(), Ok(Message::text("hi"))]);
        assert!(matches!(
            read_call(&mut text, 1024).await,
            Err(FrameError::Text)
        ));

        let mut control = stream(vec![
            block(),
            Ok(Message::Binary(Bytes::from_static(b"\x02x"))),
        ]);
        let e = read_call(&mut control, 1024).await.unwrap_err();
        assert!(matches!(e, FrameError::ControlByte(2)), "{e}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        let mut big = stream(vec![
            block(),
            Ok(data_message(&[0; 600])),
            Ok(data_message(&[0; 600])),
        ]);
        let e = read_call(&mut big, 1024).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.to_string().contains("1024-byte limit"), "{e}");
    }

    /// The frames `write_response` sends, the messages read as one byte stream (as
    /// improbable's client reads them).
    async fn written(resp: http::Response<crate::body::Body>) -> Vec<(u8, Bytes)> {
        let mut sent: Vec<Message> = Vec::new();
        let mut sink = (&mut sent).sink_map_err(|never| match never {});
        write_response(&mut sink, resp).await.unwrap();
        let mut bytes = BytesMut::new();
        for m in sent {
            match m {
                Message::Binary(b) => bytes.put_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut out = Vec::new();
        let mut b = bytes.freeze();
        while b.len() >= 5 {
            let flag = b.get_u8();
            let len = b.get_u32() as usize;
            out.push((flag, b.split_to(len)));
        }
        assert!(b.is_empty());
        out
    }

    #[tokio::test]
    async fn grpc_web_answer_becomes_header_data_and_trailer_frames() {
        let mut body = BytesMut::new();
        body.put_slice(&crate::grpc::codec::frame(b"one"));
        body.put_slice(&crate::grpc::codec::frame(b"two"));
        body.put_slice(&[0x80, 0, 0, 0, 15]);
        body.put_slice(b"grpc-status:0\r\n");
        let resp = http::Response::builder()
            .header("content-type", "application/grpc-web+proto")
            .header("content-length", "1")
            .body(body::full(body.freeze()))
            .unwrap();
        let frames = written(resp).await;
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].0, 0x80);
        let head = parse_header_block(&frames[0].1).unwrap();
        assert_eq!(head["content-type"], "application/grpc-web+proto");
        assert!(head.get("content-length").is_none());
        assert_eq!(frames[1], (0, Bytes::from_static(b"one")));
        assert_eq!(frames[2], (0, Bytes::from_static(b"two")));
        let trailers = parse_header_block(&frames[3].1).unwrap();
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn trailers_only_answer_is_one_frame_and_http_errors_get_a_status() {
        let refused = error_response(Protocol::GrpcWeb, &Error::refused("no, 100% not"));
        let frames = written(refused).await;
        assert_eq!(frames.len(), 1);
        let h = parse_header_block(&frames[0].1).unwrap();
        let status = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "no, 100% not");

        let mut not_found = http::Response::new(body::full("404 page not found\n"));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        let frames = written(not_found).await;
        let h = parse_header_block(&frames.last().unwrap().1).unwrap();
        assert_eq!(h["grpc-status"], "12");
    }

    #[tokio::test]
    async fn grpc_answer_with_http_trailers() {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(crate::grpc::codec::frame(b"m"))),
            Ok(http_body::Frame::trailers(headers(&[("grpc-status", "0")]))),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let resp = http::Response::new(crate::body::Body::new(body));
        let frames = written(resp).await;
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            [0x80, 0, 0x80]
        );
        assert_eq!(
            parse_header_block(&frames[2].1).unwrap()["grpc-status"],
            "0"
        );
    }
}
