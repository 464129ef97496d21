//! Codecs for intercepted unary methods, in every protocol the public face speaks: the gRPC
//! length-prefixed frame (gRPC and grpc-web binary), grpc-web-text (base64 of frames), and
//! REST JSON (protojson, snake_case or lowerCamelCase keys). An encoding litgate cannot check
//! (a compressed frame, several frames for a unary call, an unknown content type) is refused,
//! never forwarded unchecked.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use super::{
    frame::{self, FrameError},
    web_text, Protocol,
};
use crate::{body::Body, error::Error};

/// Reads a whole request body, refusing more than `limit` bytes (`listen.max_message_bytes`).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    read_body_within(body, limit, "listen.max_message_bytes").await
}

/// Reads a whole request body, refusing more than `limit` bytes; the refusal names the limit
/// that applied (`limit_name`: a config key, or what a fixed limit is for).
pub async fn read_body_within(body: Body, limit: usize, limit_name: &str) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Error::client(
                tonic::Code::ResourceExhausted,
                format!("request body is larger than the {limit}-byte limit ({limit_name})"),
            ))
        }
        Err(e) => Err(Error::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The single message of a unary gRPC / grpc-web request body (after grpc-web-text decoding),
/// or the refusal to send the caller.
pub fn unary_message(body: &Bytes) -> Result<Bytes, Error> {
    frame::single_message(body).map_err(|e| match e {
        FrameError::Compressed => Error::client(
            tonic::Code::Unimplemented,
            "compressed messages are not accepted for this method: litgate must inspect it; send it uncompressed",
        ),
        e => Error::invalid(e.to_string()),
    })
}

/// Decodes a grpc-web-text body, or the refusal to send the caller.
pub fn decode_web_text(body: &Bytes) -> Result<Bytes, Error> {
    web_text::decode(body).map_err(|e| Error::invalid(format!("grpc-web-text body is {e}")))
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

/// The one uncompressed message of a unary answer read whole (grpc-web-text decoded first);
/// `None` for anything else (several messages, compressed, malformed, not the gRPC family).
pub fn answer_message(protocol: Protocol, body: &Bytes) -> Option<Bytes> {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb => frame::answer_message(body),
        Protocol::GrpcWebText => frame::answer_message(&web_text::decode(body).ok()?),
        Protocol::Rest | Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => None,
    }
}

/// Builds the body to forward for a (possibly rewritten) unary message.
pub fn encode_unary(protocol: Protocol, msg: &Unary) -> Bytes {
    match (protocol, msg) {
        (Protocol::GrpcWebText, Unary::Proto(m)) => web_text::encode(&frame::message(m)),
        (_, Unary::Proto(m)) => frame::message(m),
        (_, Unary::Json(obj)) => Bytes::from(serde_json::Value::Object(obj.clone()).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_what_was_wrong() {
        let f = frame::message(b"hello");
        assert_eq!(unary_message(&f).unwrap(), Bytes::from_static(b"hello"));
        let mut compressed = f.to_vec();
        compressed[0] = 1;
        let e = unary_message(&Bytes::from(compressed)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.to_string().contains("compressed"));
        let mut two = f.to_vec();
        two.extend_from_slice(&f);
        let e = unary_message(&Bytes::from(two)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("more than one"));
        assert!(unary_message(&f.slice(..7))
            .unwrap_err()
            .to_string()
            .contains("header says 5 bytes"));
        let e = decode_web_text(&Bytes::from_static(b"!!!")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "grpc-web-text body is not valid base64: truncated"
        );
    }
}
