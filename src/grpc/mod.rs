//! The gRPC wire, in one place: which protocol a request speaks ([`Protocol`]); the
//! length-prefixed frames of gRPC, grpc-web, grpc-web-text and grpc-websockets ([`frame`],
//! [`web_text`], [`websocket`]); header blocks ([`header_block`]); where a call's status lives
//! and how to read it, from an answer read whole ([`status::status_of`]) or from a body as it
//! streams ([`status::watch`]); litgate's own statuses ([`reply`]); and the request codec of
//! the methods litgate inspects ([`codec`]). No other module parses a frame or a trailer.

pub mod codec;
pub mod frame;
pub mod header_block;
pub mod reply;
pub mod status;
pub mod web_text;
pub mod websocket;

use http::header;

use crate::methods::is_rest_path;

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
        Protocol::detect_content(headers, path)
    }

    /// Classifies a request that is not a WebSocket upgrade, by its content type and path.
    fn detect_content(headers: &http::HeaderMap, path: &str) -> Self {
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

    /// Classifies a request as [`Protocol::detect`] does. An HTTP/2 request is never a
    /// WebSocket upgrade (`upgrade` and `connection` are connection-specific fields, which h2
    /// refuses in a request), so its headers are not searched for one.
    pub fn detect_request<B>(req: &http::Request<B>) -> Self {
        if req.version() >= http::Version::HTTP_2 {
            Protocol::detect_content(req.headers(), req.uri().path())
        } else {
            Protocol::detect(req.headers(), req.uri().path())
        }
    }

    /// The protocol of a request: read from the request's extensions, where the outermost
    /// layer (trace) puts it, so the stack classifies each request once; detected otherwise.
    pub fn of<B>(req: &http::Request<B>) -> Self {
        req.extensions()
            .get::<Protocol>()
            .copied()
            .unwrap_or_else(|| Protocol::detect_request(req))
    }

    /// The WebSocket upgrade this protocol is, if it is one.
    pub fn upgrade(self) -> Option<websocket::Upgrade> {
        match self {
            Protocol::GrpcWebSocket => Some(websocket::Upgrade::GrpcWebSockets),
            Protocol::WebSocket => Some(websocket::Upgrade::Plain),
            _ => None,
        }
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
    /// handshake is an HTTP error: see [`reply::status_response`]).
    pub fn is_grpc_family(self) -> bool {
        matches!(
            self,
            Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText
        )
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ct(v: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn only_an_http1_request_is_an_upgrade() {
        let request = |version| {
            http::Request::builder()
                .version(version)
                .uri("/v1/sessions/subscribe")
                .header(header::UPGRADE, "websocket")
                .header(header::CONNECTION, "Upgrade")
                .header(header::SEC_WEBSOCKET_PROTOCOL, "grpc-websockets")
                .body(())
                .unwrap()
        };
        let http1 = request(http::Version::HTTP_11);
        assert_eq!(Protocol::detect_request(&http1), Protocol::GrpcWebSocket);
        assert_eq!(
            Protocol::of(&http1).upgrade(),
            Some(websocket::Upgrade::GrpcWebSockets)
        );
        // h2 refuses these fields in a request; were one to get through, it is not an upgrade.
        let http2 = request(http::Version::HTTP_2);
        assert_eq!(Protocol::detect_request(&http2), Protocol::Rest);
        assert_eq!(Protocol::of(&http2).upgrade(), None);
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
}
