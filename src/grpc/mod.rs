//! Wire protocols litgate speaks on the public face: which protocol a request uses, and how an
//! error is written in that protocol (gRPC trailers-only status, grpc-web, or grpc-gateway's
//! REST error JSON). The codecs for intercepted methods build on this module, and so does
//! grpc-websockets ([`websocket`]).

pub mod codec;
pub mod status;
pub mod websocket;
pub mod wire;

use std::time::Duration;

use http::{header, HeaderValue};

use crate::{
    body::{self, Response},
    error::{http_status, Error},
    methods::is_rest_path,
};

/// The protocol of one request, from its content type and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `application/grpc[+proto]`.
    Grpc,
    /// `application/grpc-web[+proto]`.
    GrpcWeb,
    /// `application/grpc-web-text[+proto]` (base64 framing).
    GrpcWebText,
    /// grpc-gateway REST: a path matching `^/v\d/`.
    Rest,
    /// A WebSocket upgrade offering subprotocol `grpc-websockets` (improbable's transport).
    GrpcWebSocket,
    /// Any other WebSocket upgrade (lnd's REST streams).
    WebSocket,
    /// Anything else (the UI's static files).
    Http,
}

impl Protocol {
    /// Classifies a request as litd does.
    pub fn detect(headers: &http::HeaderMap, path: &str) -> Self {
        match websocket::upgrade_of(headers) {
            Some(websocket::Upgrade::GrpcWebSockets) => return Protocol::GrpcWebSocket,
            Some(websocket::Upgrade::Plain) => return Protocol::WebSocket,
            None => {}
        }
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(rest) = ct.strip_prefix("application/grpc-web-text") {
            if rest.is_empty() || rest.starts_with('+') || rest.starts_with(';') {
                return Protocol::GrpcWebText;
            }
        }
        if let Some(rest) = ct.strip_prefix("application/grpc-web") {
            if rest.is_empty() || rest.starts_with('+') || rest.starts_with(';') {
                return Protocol::GrpcWeb;
            }
        }
        if let Some(rest) = ct.strip_prefix("application/grpc") {
            if rest.is_empty() || rest.starts_with('+') || rest.starts_with(';') {
                return Protocol::Grpc;
            }
        }
        if is_rest_path(path) {
            return Protocol::Rest;
        }
        Protocol::Http
    }

    /// The protocol of a request: read from the request's extensions, where the outermost
    /// layer (trace) puts it, so the stack classifies each request once; detected otherwise.
    pub fn of<B>(req: &http::Request<B>) -> Self {
        req.extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or_else(|| Protocol::detect(req.headers(), req.uri().path()))
    }

    /// A bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::GrpcWebText => "grpc-web-text",
            Protocol::Rest => "rest",
            Protocol::GrpcWebSocket => "grpc-websockets",
            Protocol::WebSocket => "websocket",
            Protocol::Http => "http",
        }
    }

    /// Whether errors are carried as gRPC status in an HTTP response (a refused WebSocket
    /// handshake is an HTTP error: see [`status_response`]).
    pub fn is_grpc_family(self) -> bool {
        matches!(
            self,
            Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText
        )
    }
}

/// Sets `grpc-status` and `grpc-message` as tonic writes them (percent-encoded), so litgate's
/// own statuses are byte for byte what a tonic server would send.
pub fn insert_status(h: &mut http::HeaderMap, code: tonic::Code, message: &str) {
    if tonic::Status::new(code, message).add_header(h).is_err() {
        // Only a message that no header can carry gets here; the code still goes out.
        h.insert("grpc-status", HeaderValue::from(code as i32));
    }
}

/// Writes `err` as the caller's protocol expects it.
pub fn error_response(protocol: Protocol, err: &Error) -> Response {
    let retry_after = match err {
        Error::RateLimited { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    status_response(protocol, err.code(), &err.to_string(), retry_after)
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
        *r.status_mut() = http_status(code);
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
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let v = HeaderValue::from(secs.max(1));
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn detects_protocols_like_litd() {
        assert_eq!(
            Protocol::detect(&ct("application/grpc"), "/litrpc.Sessions/ListSessions"),
            Protocol::Grpc
        );
        assert_eq!(
            Protocol::detect(&ct("application/grpc+proto"), "/x.Y/Z"),
            Protocol::Grpc
        );
        assert_eq!(
            Protocol::detect(&ct("application/grpc-web+proto"), "/x.Y/Z"),
            Protocol::GrpcWeb
        );
        assert_eq!(
            Protocol::detect(&ct("application/grpc-web-text"), "/x.Y/Z"),
            Protocol::GrpcWebText
        );
        assert_eq!(
            Protocol::detect(&ct("application/json"), "/v1/sessions"),
            Protocol::Rest
        );
        assert_eq!(
            Protocol::detect(&http::HeaderMap::new(), "/v12/x"),
            Protocol::Rest
        );
        assert_eq!(
            Protocol::detect(&http::HeaderMap::new(), "/index.html"),
            Protocol::Http
        );
        assert_eq!(
            Protocol::detect(&ct("application/grpcx"), "/vx/"),
            Protocol::Http
        );
    }

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
