//! Codecs for intercepted unary methods, in every protocol the public face speaks: the gRPC
//! length-prefixed frame (gRPC and grpc-web binary), grpc-web-text (base64 of frames), and
//! REST JSON (protojson, snake_case or lowerCamelCase keys). An encoding litgate cannot check
//! (a compressed frame, several frames for a unary call, an unknown content type) is refused,
//! never forwarded unchecked.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};

use super::Protocol;
use crate::{body::Body, error::Error};

/// Reads a whole request body, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Error::client(
                tonic::Code::ResourceExhausted,
                format!(
                    "request body is larger than the {limit}-byte limit (listen.max_message_bytes)"
                ),
            ))
        }
        Err(e) => Err(Error::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The single message of a unary gRPC / grpc-web request body (after grpc-web-text decoding).
pub fn unary_message(body: &Bytes) -> Result<Bytes, Error> {
    if body.len() < 5 {
        return Err(Error::invalid(
            "malformed gRPC frame: shorter than the 5-byte header",
        ));
    }
    let flag = body[0];
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if flag & 0x01 != 0 {
        return Err(Error::client(
            tonic::Code::Unimplemented,
            "compressed messages are not accepted for this method: litgate must inspect it; send it uncompressed",
        ));
    }
    if flag != 0 {
        return Err(Error::invalid(format!(
            "malformed gRPC frame: unknown flags {flag:#04x}"
        )));
    }
    if body.len() < 5 + len {
        return Err(Error::invalid(format!(
            "malformed gRPC frame: header says {len} bytes, body has {}",
            body.len() - 5
        )));
    }
    if body.len() > 5 + len {
        return Err(Error::invalid("more than one message in a unary call"));
    }
    Ok(body.slice(5..5 + len))
}

/// Frames one message (uncompressed).
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Decodes a grpc-web-text body: base64, possibly as several padded chunks.
pub fn decode_web_text(body: &Bytes) -> Result<Bytes, Error> {
    let mut dec = WebTextDecoder::default();
    let out = dec
        .feed(body)
        .map_err(|e| Error::invalid(format!("grpc-web-text body is not valid base64: {e}")))?;
    if !dec.pending.is_empty() {
        return Err(Error::invalid(
            "grpc-web-text body is not valid base64: truncated",
        ));
    }
    Ok(out)
}

/// Incremental grpc-web-text decoding: base64 fed in arbitrary pieces, where every write of the
/// sender may have been encoded (and padded) on its own, so padding can appear mid-stream.
/// Whitespace is ignored; an incomplete 4-character group waits for the next piece.
#[derive(Debug, Default)]
pub struct WebTextDecoder {
    pending: Vec<u8>,
}

impl WebTextDecoder {
    /// Decodes what `piece` completes.
    pub fn feed(&mut self, piece: &[u8]) -> Result<Bytes, base64::DecodeError> {
        use base64::Engine;
        self.pending
            .extend(piece.iter().copied().filter(|c| !c.is_ascii_whitespace()));
        let complete = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(complete / 4 * 3);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut rest = &self.pending[..complete];
        while !rest.is_empty() {
            // A run ends with the first group that carries padding, or at the end.
            let end = rest
                .chunks(4)
                .position(|g| g.contains(&b'='))
                .map_or(rest.len(), |i| (i + 1) * 4);
            b64.decode_vec(&rest[..end], &mut out)?;
            rest = &rest[end..];
        }
        self.pending.drain(..complete);
        Ok(Bytes::from(out))
    }
}

/// Encodes a grpc-web-text body.
pub fn encode_web_text(body: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(body))
}

/// The encoded message inside a request body, per protocol.
#[derive(Debug)]
pub enum Unary {
    /// gRPC, grpc-web or grpc-web-text: the protobuf message bytes.
    Proto(Bytes),
    /// REST: the JSON object.
    Json(serde_json::Map<String, serde_json::Value>),
}

/// Extracts the message from a unary request body.
pub fn decode_unary(protocol: Protocol, body: &Bytes) -> Result<Unary, Error> {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb => Ok(Unary::Proto(unary_message(body)?)),
        Protocol::GrpcWebText => Ok(Unary::Proto(unary_message(&decode_web_text(body)?)?)),
        Protocol::Rest => {
            let v: serde_json::Value = if body.is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_slice(body).map_err(|e| Error::invalid(format!("request body is not valid JSON: {e}")))?
            };
            match v {
                serde_json::Value::Object(m) => Ok(Unary::Json(m)),
                _ => Err(Error::invalid("request body must be a JSON object")),
            }
        }
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => Err(Error::client(
            tonic::Code::InvalidArgument,
            "unsupported content type for this method: use application/grpc, application/grpc-web(-text) or REST JSON",
        )),
    }
}

/// Builds the body to forward for a (possibly rewritten) unary message.
pub fn encode_unary(protocol: Protocol, msg: &Unary) -> Bytes {
    match (protocol, msg) {
        (Protocol::GrpcWebText, Unary::Proto(m)) => encode_web_text(&frame(m)),
        (_, Unary::Proto(m)) => frame(m),
        (_, Unary::Json(obj)) => Bytes::from(serde_json::Value::Object(obj.clone()).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_refusals() {
        let f = frame(b"hello");
        assert_eq!(unary_message(&f).unwrap(), Bytes::from_static(b"hello"));
        let mut compressed = f.to_vec();
        compressed[0] = 1;
        let e = unary_message(&Bytes::from(compressed)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.to_string().contains("compressed"));
        let mut two = f.to_vec();
        two.extend_from_slice(&f);
        assert!(unary_message(&Bytes::from(two))
            .unwrap_err()
            .to_string()
            .contains("more than one"));
        assert!(unary_message(&f.slice(..7))
            .unwrap_err()
            .to_string()
            .contains("header says 5 bytes"));
    }

    #[test]
    fn web_text_accepts_chunked_base64() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let a = frame(b"a");
        let chunked = format!("{}{}", b64.encode(&a), b64.encode(b"\x80\x00\x00\x00\x00"));
        let decoded = decode_web_text(&Bytes::from(chunked)).unwrap();
        assert_eq!(&decoded[..6], &a[..]);
        assert!(decode_web_text(&Bytes::from_static(b"!!!")).is_err());
    }
}
