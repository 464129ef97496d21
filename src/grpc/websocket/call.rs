//! The client's side of a grpc-websockets call: the header block, then request bytes behind a
//! control byte, then the finish-send marker. Reading it ([`read_call`], and message by message
//! for the demo litd), and writing it (the demo client).

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use tokio_tungstenite::tungstenite::{self, error::CapacityError, Message};

use crate::grpc::header_block::{self, BlockError};

/// Control byte of a client message carrying request bytes.
const DATA: u8 = 0x00;
/// The whole of the client message that says it has finished sending.
const FINISH_SEND: u8 = 0x01;

/// What was wrong with what a grpc-websockets client sent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A text message where improbable's transport sends binary ones.
    #[error("grpc-websockets: a text message where binary messages are expected")]
    Text,
    /// A data message whose first byte is neither `0x00` nor the finish-send marker.
    #[error(
        "grpc-websockets: unknown control byte {0:#04x} (0x00 starts data, 0x01 alone finishes sending)"
    )]
    ControlByte(u8),
    /// The header block is not `name: value` lines.
    #[error("grpc-websockets: {0}")]
    HeaderBlock(#[from] BlockError),
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

impl CallError {
    /// The gRPC status code the caller gets for it.
    pub fn code(&self) -> tonic::Code {
        match self {
            CallError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            _ => tonic::Code::InvalidArgument,
        }
    }

    fn from_ws(e: tungstenite::Error, limit: usize) -> CallError {
        match e {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                CallError::TooLarge { limit }
            }
            e => CallError::Transport(e),
        }
    }
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
async fn next_binary<S>(ws: &mut S) -> Result<Option<Bytes>, CallError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            None
            | Some(Ok(Message::Close(_)))
            | Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Text(_))) => return Err(CallError::Text),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => return Err(CallError::Transport(e)),
        }
    }
}

/// Reads the next meaningful client message; empty messages are skipped (as improbable's
/// reader skips them).
pub async fn next_inbound<S>(ws: &mut S) -> Result<Inbound, CallError>
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
            Some(&other) => return Err(CallError::ControlByte(other)),
        }
    }
}

/// Reads the header block, the client's first message. `Ok(None)`: it closed first.
pub async fn read_header_block<S>(ws: &mut S) -> Result<Option<HeaderMap>, CallError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    match next_binary(ws).await? {
        Some(block) => Ok(Some(header_block::parse_strict(&block)?)),
        None => Ok(None),
    }
}

/// Reads one whole call: the header block, then request bytes up to the finish-send marker,
/// at most `limit` of them. `Ok(None)`: the client closed before it finished sending.
pub async fn read_call<S>(ws: &mut S, limit: usize) -> Result<Option<(HeaderMap, Bytes)>, CallError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let too_large = |e| match e {
        CallError::Transport(e) => CallError::from_ws(e, limit),
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
                    return Err(CallError::TooLarge { limit });
                }
                body.put_slice(&d);
            }
            Inbound::FinishSend => return Ok(Some((headers, body.freeze()))),
            Inbound::Closed => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(CallError::Text)
        ));

        let mut control = stream(vec![
            block(),
            Ok(Message::Binary(Bytes::from_static(b"\x02x"))),
        ]);
        let e = read_call(&mut control, 1024).await.unwrap_err();
        assert!(matches!(e, CallError::ControlByte(2)), "{e}");
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
}
