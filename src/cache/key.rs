//! Which list calls the cache may answer, and under which key: the canonical empty request of
//! the two list routes, in the gRPC family or REST, keyed by the credential's lookup id, the
//! route, the protocol and a digest of the request headers that shape the answer's bytes.

use bytes::Bytes;
use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use super::crypto::ID_LEN;
use crate::{
    grpc::{
        codec::{self, Unary},
        Protocol,
    },
    methods::Route,
};

/// A list request is a few bytes (its message has no fields); anything near this is not one
/// worth caching or reading.
pub(super) const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How a refusal names [`MAX_REQUEST_BYTES`]: a fixed limit of its own, not a config key.
pub(super) const REQUEST_LIMIT_NAME: &str =
    "litgate's fixed limit for a session list request, whose message has no fields";

pub(super) fn route_tag(route: Route) -> Option<u8> {
    match route {
        Route::ListSessions => Some(1),
        Route::ListAutopilotSessions => Some(2),
        _ => None,
    }
}

pub(super) fn protocol_tag(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Grpc => Some(1),
        Protocol::GrpcWeb => Some(2),
        Protocol::GrpcWebText => Some(3),
        Protocol::Rest => Some(4),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => None,
    }
}

/// id ‖ route ‖ protocol ‖ 16 bytes of SHA-256 over the request headers that shape the bytes
/// of the answer (exact content type, accept, the encodings the caller accepts, and the
/// `Origin` litd's CORS headers answer).
pub(super) fn cache_key(
    id: &[u8; ID_LEN],
    route: u8,
    protocol: u8,
    headers: &HeaderMap,
) -> Vec<u8> {
    let mut h = Sha256::new();
    for name in [
        "content-type",
        "accept",
        "accept-encoding",
        "grpc-accept-encoding",
        "origin",
    ] {
        for v in headers.get_all(name) {
            h.update(name.as_bytes());
            h.update(b":");
            h.update(v.as_bytes());
        }
        h.update(b"\n");
    }
    let variant = h.finalize();
    let mut key = Vec::with_capacity(ID_LEN + 2 + 16);
    key.extend_from_slice(id);
    key.push(route);
    key.push(protocol);
    key.extend_from_slice(&variant[..16]);
    key
}

/// The method and URI of a canonical list call: POST for the gRPC family, a plain GET (no
/// query) for REST.
pub(super) fn shape_ok(protocol: Protocol, method: &Method, uri: &http::Uri) -> bool {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => method == Method::POST,
        Protocol::Rest => method == Method::GET && uri.query().is_none_or(str::is_empty),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => false,
    }
}

/// Whether `body` is the empty request message (an uncompressed empty frame, or no REST body);
/// anything else is forwarded for litd to judge, never answered from the cache.
pub(super) fn is_empty_list_request(protocol: Protocol, body: &Bytes) -> bool {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => matches!(
            codec::decode_unary(protocol, body),
            Ok(Unary::Proto(m)) if m.is_empty()
        ),
        Protocol::Rest => body.iter().all(u8::is_ascii_whitespace),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => false,
    }
}

#[cfg(test)]
mod tests {
    use http::{header, HeaderValue};

    use super::*;
    use crate::cache::crypto::CredentialKeys;

    #[test]
    fn key_separates_credentials_routes_protocols_and_encodings() {
        let a = CredentialKeys::derive(b"salt", b"a");
        let b = CredentialKeys::derive(b"salt", b"b");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        let base = cache_key(a.id(), 1, 2, &h);
        assert_eq!(base.len(), ID_LEN + 18);
        assert_ne!(base, cache_key(b.id(), 1, 2, &h));
        assert_ne!(base, cache_key(a.id(), 2, 2, &h));
        assert_ne!(base, cache_key(a.id(), 1, 3, &h));
        let mut gz = h.clone();
        gz.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        assert_ne!(base, cache_key(a.id(), 1, 2, &gz));
        assert_eq!(base, cache_key(a.id(), 1, 2, &h));
    }
}
