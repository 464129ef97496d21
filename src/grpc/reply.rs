//! litgate's own statuses, written in the caller's protocol: a trailers-only gRPC status (gRPC,
//! grpc-web, grpc-web-text) exactly as a tonic server writes it, grpc-gateway's error JSON for
//! REST and plain HTTP, and the status a refused grpc-websockets handshake carries. The rescue
//! layers, the grpc-websockets terminator and the demo litd write statuses only through here.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use super::Protocol;
use crate::{
    body::{self, Response},
    error::{http_status, Error},
};

/// Sets `grpc-status` and `grpc-message` as tonic writes them (percent-encoded), so litgate's
/// own statuses are byte for byte what a tonic server would send.
pub fn insert_status(h: &mut HeaderMap, code: tonic::Code, message: &str) {
    if tonic::Status::new(code, message).add_header(h).is_err() {
        // Only a message that no header can carry gets here; the code still goes out.
        h.insert("grpc-status", HeaderValue::from(code as i32));
    }
}

/// Writes `err` as the caller's protocol expects it, with what the caller may be told
/// ([`Error::public_message`]: no internal address, no OS error).
pub fn error_response(protocol: Protocol, err: &Error) -> Response {
    let retry_after = match err {
        Error::RateLimited { retry_after, .. } | Error::Overloaded { retry_after } => {
            Some(*retry_after)
        }
        _ => None,
    };
    status_response(protocol, err.code(), &err.public_message(), retry_after)
}

/// A status in the caller's protocol: trailers-only for gRPC and grpc-web ([`insert_status`]);
/// grpc-gateway's error JSON for REST, plain HTTP and refused WebSocket handshakes, keys in its
/// order (`code`, `message`, `details`) with its HTTP status for the code (a refused
/// grpc-websockets handshake also carries `grpc-status` and `grpc-message` headers, as its
/// clients see only the HTTP status).
pub fn status_response(
    protocol: Protocol,
    code: tonic::Code,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let mut resp = if protocol.is_grpc_family() {
        let ct = match protocol {
            Protocol::Grpc => "application/grpc",
            Protocol::GrpcWeb => "application/grpc-web+proto",
            _ => "application/grpc-web-text+proto",
        };
        let mut r = Response::new(body::empty());
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        insert_status(h, code, message);
        r
    } else {
        let mut r = Response::new(body::full(gateway_error_json(code, message)));
        *r.status_mut() = http_status_for(protocol, code);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if protocol == Protocol::GrpcWebSocket {
            insert_status(r.headers_mut(), code, message);
        }
        r
    };
    if let Some(d) = retry_after {
        let v = HeaderValue::from(retry_after_secs(d));
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The HTTP status of a status answered in `protocol`: 200 for the gRPC family (the status is
/// in the head or trailers), grpc-gateway's HTTP status for the code otherwise.
pub fn http_status_for(protocol: Protocol, code: tonic::Code) -> http::StatusCode {
    if protocol.is_grpc_family() {
        http::StatusCode::OK
    } else {
        http_status(code)
    }
}

/// grpc-gateway's error body (`google.rpc.Status` in protojson): `code`, `message`, `details`
/// in that order, as litd's REST proxy writes it.
pub fn gateway_error_json(code: tonic::Code, message: &str) -> String {
    let message = serde_json::Value::String(message.to_owned());
    format!(
        r#"{{"code":{},"message":{message},"details":[]}}"#,
        code as i32
    )
}

/// A status as a header map (trailers, or a grpc-websockets trailer frame).
pub fn status_headers(code: tonic::Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    insert_status(&mut h, code, message);
    h
}

/// Follows a streamed gRPC-family answer (gRPC, grpc-web, grpc-web-text) through its framing,
/// so that when litd's side breaks mid-way litgate can still end it with a status of its own
/// instead of a reset: only where a frame ends (and, for grpc-web-text, a base64 group), so
/// the caller never sees a cut frame. Messages are skipped, not kept.
#[derive(Debug)]
pub struct Ending {
    protocol: Protocol,
    text: Option<super::web_text::Decoder>,
    frames: super::frame::FrameReader,
    broken: bool,
}

impl Ending {
    /// A follower for an answer in `protocol`; `None` for protocols whose status cannot come
    /// after the head (REST, plain HTTP).
    pub fn new(protocol: Protocol) -> Option<Self> {
        if !matches!(
            protocol,
            Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText
        ) {
            return None;
        }
        Some(Ending {
            protocol,
            text: (protocol == Protocol::GrpcWebText).then(super::web_text::Decoder::default),
            // Keeps nothing of messages; a trailer frame already under way is held (so the
            // answer is not at a boundary any more).
            frames: super::frame::FrameReader::trailers_only(0),
            broken: false,
        })
    }

    /// Follows one data chunk of the answer.
    pub fn feed(&mut self, chunk: &bytes::Bytes) {
        let data = match &mut self.text {
            None => chunk.clone(),
            Some(dec) => match dec.feed(chunk) {
                Ok(d) => d,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            },
        };
        self.frames.push(data);
    }

    /// The last frame of the answer carrying `code` and `message`, if the answer so far ends
    /// where one can follow: HTTP/2 trailers for gRPC, a trailer frame for grpc-web (base64 for
    /// grpc-web-text).
    pub fn closing(
        &self,
        code: tonic::Code,
        message: &str,
    ) -> Option<http_body::Frame<bytes::Bytes>> {
        let aligned = self.text.as_ref().is_none_or(|d| d.aligned());
        if self.broken || !aligned || !self.frames.at_boundary() {
            return None;
        }
        let status = status_headers(code, message);
        Some(match self.protocol {
            Protocol::Grpc => http_body::Frame::trailers(status),
            Protocol::GrpcWeb => http_body::Frame::data(super::header_block::frame(&status)),
            _ => http_body::Frame::data(super::web_text::encode(&super::header_block::frame(
                &status,
            ))),
        })
    }
}

/// `retry-after` as litgate writes it: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_error_is_trailers_only_as_tonic_writes_it() {
        let msg = "litd is 100% down: \"quoted\" {braces} ünïcode";
        let r = status_response(Protocol::Grpc, tonic::Code::Unavailable, msg, None);
        let want = tonic::Status::unavailable(msg).into_http::<()>();
        assert_eq!(r.status(), want.status());
        assert_eq!(r.headers(), want.headers(), "same head as a tonic server's");
        let decoded = tonic::Status::from_header_map(r.headers()).unwrap();
        assert_eq!(decoded.code(), tonic::Code::Unavailable);
        assert_eq!(decoded.message(), msg);
    }

    #[test]
    fn rest_error_keys_are_in_gateway_order() {
        let r = status_response(
            Protocol::Rest,
            tonic::Code::FailedPrecondition,
            "no \"way\"",
            None,
        );
        assert_eq!(r.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            gateway_error_json(tonic::Code::FailedPrecondition, "no \"way\""),
            r#"{"code":9,"message":"no \"way\"","details":[]}"#
        );
    }

    #[test]
    fn rest_error_has_gateway_shape_and_retry_after() {
        let r = status_response(
            Protocol::Rest,
            tonic::Code::ResourceExhausted,
            "slow down",
            Some(Duration::from_millis(1500)),
        );
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
