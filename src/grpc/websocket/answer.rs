//! The server's side of a grpc-websockets call: an answer written back as improbable's wrapper
//! writes it (header frame, data frames, trailer frame, close).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, StreamExt};
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tokio_tungstenite::{
    tungstenite::{
        self,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    WebSocketStream,
};

use crate::{
    body::BoxError,
    grpc::{
        frame::{FrameReader, Next},
        header_block,
        reply::status_headers,
        status::code_from_http,
    },
    headers::{strip_hop_by_hop, GRPC_STATUS},
};

/// How long a finished call waits for the client's close frame before dropping the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Response headers as the header frame carries them: without the ones that describe the
/// HTTP message rather than the call.
fn call_headers(mut headers: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

/// The status of an answer that ended without trailers: its own (a trailers-only answer), or
/// one derived from its HTTP status as gRPC clients derive it.
fn status_of_head(status: StatusCode, head: &HeaderMap) -> HeaderMap {
    if head.contains_key(GRPC_STATUS) {
        return HeaderMap::new();
    }
    if status == StatusCode::OK {
        return status_headers(
            tonic::Code::Unknown,
            "the answer ended without a gRPC status",
        );
    }
    status_headers(
        code_from_http(status),
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
    let mut frames = FrameReader::whole();
    let mut body = std::pin::pin!(body);
    let trailers = 'body: loop {
        let frame = match body.frame().await {
            None => break None,
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "grpc-websockets: the answer broke off");
                break Some(status_headers(
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
        frames.push(data);
        while let Next::Frame(frame) = frames.next_frame() {
            if frame.is_trailers() {
                // grpc-web's trailer frame: the status, in the same shape as ours.
                let t = header_block::parse_strict(&frame.payload()).unwrap_or_else(|_| {
                    status_headers(
                        tonic::Code::Internal,
                        "the answer's trailers were malformed",
                    )
                });
                break 'body Some(t);
            }
            if let Some(h) = head.take() {
                ws.send(Message::Binary(header_block::frame(&h))).await?;
            }
            ws.send(Message::Binary(frame.raw().clone())).await?;
        }
    };
    let last = match (head, trailers) {
        // Headers already sent: the trailers alone.
        (None, Some(t)) => t,
        (None, None) => status_headers(
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
    ws.send(Message::Binary(header_block::frame(&last))).await
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

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::{
        body,
        error::Error,
        grpc::{frame, reply::error_response, Protocol},
    };

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
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
        frame::frames(&bytes.freeze())
            .expect("whole frames")
            .into_iter()
            .map(|f| (f.flag(), f.payload()))
            .collect()
    }

    #[tokio::test]
    async fn grpc_web_answer_becomes_header_data_and_trailer_frames() {
        let mut body = BytesMut::new();
        body.put_slice(&frame::message(b"one"));
        body.put_slice(&frame::message(b"two"));
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
        let head = header_block::parse_strict(&frames[0].1).unwrap();
        assert_eq!(head["content-type"], "application/grpc-web+proto");
        assert!(head.get("content-length").is_none());
        assert_eq!(frames[1], (0, Bytes::from_static(b"one")));
        assert_eq!(frames[2], (0, Bytes::from_static(b"two")));
        let trailers = header_block::parse_strict(&frames[3].1).unwrap();
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn trailers_only_answer_is_one_frame_and_http_errors_get_a_status() {
        let refused = error_response(Protocol::GrpcWeb, &Error::refused("no, 100% not"));
        let frames = written(refused).await;
        assert_eq!(frames.len(), 1);
        let h = header_block::parse_strict(&frames[0].1).unwrap();
        let status = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "no, 100% not");

        let mut not_found = http::Response::new(body::full("404 page not found\n"));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        let frames = written(not_found).await;
        let h = header_block::parse_strict(&frames.last().unwrap().1).unwrap();
        assert_eq!(h["grpc-status"], "12");
    }

    #[tokio::test]
    async fn grpc_answer_with_http_trailers() {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(frame::message(b"m"))),
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
            header_block::parse_strict(&frames[2].1).unwrap()["grpc-status"],
            "0"
        );
    }
}
