//! A grpc-websockets client that speaks as the Terminal UI's transport (improbable's
//! `WebsocketTransport`) does: a WebSocket with subprotocol `grpc-websockets` and a same-origin
//! `Origin`, the header block, the request in a `0x00` data message, the `0x01` finish-send
//! marker; the answer read as one grpc-web byte stream until the server closes. `litgate demo`
//! uses it to show a call over the websocket transport working, and so does the example
//! `grpc_websockets`. Demo plumbing: litgate itself never dials out with it.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

use crate::grpc::{
    frame::{self, FrameReader, Next},
    header_block,
    status::status_in,
    websocket,
};

/// Why a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// TCP or TLS towards the server failed.
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server did not accept the WebSocket (its HTTP answer, when it gave one).
    #[error("the WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The connection broke, or the answer was not grpc-web framing.
    #[error("the answer is broken: {0}")]
    Answer(String),
}

/// The end of a call: its gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `grpc-status`.
    pub code: tonic::Code,
    /// `grpc-message`, decoded.
    pub message: String,
}

/// Calls `path` on `addr` over grpc-websockets: TLS pinned to `ca_pem` (server name
/// `localhost`), or plaintext when `None`. `metadata` goes in the header block (e.g.
/// `macaroon`); `request` is the encoded request message. Each response message is handed to
/// `on_message` as it arrives.
pub async fn call(
    addr: SocketAddr,
    ca_pem: Option<&[u8]>,
    path: &str,
    metadata: &HeaderMap,
    request: &[u8],
    mut on_message: impl FnMut(Bytes),
) -> Result<Status, CallError> {
    let connect = |reason: String| CallError::Connect { addr, reason };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| connect(e.to_string()))?;
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let mut req = format!(
        "{}://{addr}{path}",
        if ca_pem.is_some() { "wss" } else { "ws" }
    )
    .into_client_request()
    .map_err(|e| CallError::Handshake(e.to_string()))?;
    let h = req.headers_mut();
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(websocket::SUBPROTOCOL),
    );
    if let Ok(origin) = format!("{scheme}://{addr}").parse() {
        h.insert(http::header::ORIGIN, origin);
    }
    let io = match ca_pem {
        None => tokio_util::either::Either::Left(tcp),
        Some(pem) => {
            // Pinned exactly, lnd-shaped (CA:TRUE) certificates included.
            let mut cfg =
                crate::tls::pinned::pem_client_config(pem).map_err(|e| connect(e.to_string()))?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| connect(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| connect(format!("TLS: {e}")))?;
            tokio_util::either::Either::Right(tls)
        }
    };
    let (mut ws, _) = tokio_tungstenite::client_async(req, io)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(resp) => CallError::Handshake(format!(
                "HTTP {}: {}",
                resp.status(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).trim()
            )),
            e => CallError::Handshake(e.to_string()),
        })?;

    let mut block = HeaderMap::new();
    block.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc-web+proto"),
    );
    block.insert("x-grpc-web", http::HeaderValue::from_static("1"));
    block.extend(metadata.clone());
    let broken = |e: tungstenite::Error| CallError::Answer(e.to_string());
    ws.send(Message::Binary(header_block::encode(&block)))
        .await
        .map_err(broken)?;
    ws.send(websocket::call::data_message(&frame::message(request)))
        .await
        .map_err(broken)?;
    ws.send(websocket::call::finish_send_message())
        .await
        .map_err(broken)?;

    let mut frames = FrameReader::whole();
    let mut last_header_frame = None;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Binary(b)) => frames.push(b),
            // Reading on lets the close handshake complete; the stream ends after it.
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(broken(e)),
        }
        while let Next::Frame(f) = frames.next_frame() {
            if f.is_trailers() {
                last_header_frame = Some(f.payload());
            } else {
                on_message(f.payload());
            }
        }
    }
    let trailers = last_header_frame
        .ok_or_else(|| CallError::Answer("closed without a status".into()))
        .and_then(|b| {
            header_block::parse_strict(&b).map_err(|e| CallError::Answer(e.to_string()))
        })?;
    let status = status_in(&trailers).ok_or_else(|| CallError::Answer("no grpc-status".into()))?;
    Ok(Status {
        code: status.code(),
        message: status.message().to_string(),
    })
}
