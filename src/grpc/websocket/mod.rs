//! WebSockets on the public face: which upgrade a request asks for, the handshake, and
//! grpc-websockets, the transport of improbable's grpc-web wrapper that litd runs with
//! websockets on and that the Terminal UI uses for every server stream. Used by the router
//! (which terminates grpc-websockets calls to intercepted methods, so they get the same policy
//! as grpc-web) and by the demo litd (which serves grpc-websockets for every method, as litd
//! does). WebSocket frames themselves are `tokio-tungstenite`'s; this module owns what rides
//! inside them:
//!
//! - client → server ([`call`]): the first binary message is a header block (`name: value\r\n`
//!   lines: content type, `x-grpc-web`, the caller's metadata such as `macaroon`); every later
//!   binary message starts with a control byte: `0x00` and a slice of the gRPC-framed request
//!   stream, or the single byte `0x01` when the client has finished sending;
//! - server → client ([`answer`]): grpc-web's framing as a byte stream across binary messages:
//!   a header frame (`0x80`, length, the response headers as a header block), the data frames
//!   as gRPC frames them, a trailer frame in the same shape as the header frame (`grpc-status`,
//!   `grpc-message`), then a normal close. A call with no data gets one such frame holding
//!   headers and status together.
//!
//! It must never put header values into an error or a log: the header block carries macaroons.

pub mod answer;
pub mod call;

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio_tungstenite::tungstenite;

/// The WebSocket subprotocol improbable's transport offers and its wrapper accepts.
pub const SUBPROTOCOL: &str = "grpc-websockets";

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
pub fn effective_method<B>(req: &http::Request<B>) -> Method {
    if super::Protocol::of(req).upgrade().is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            .body(())
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
}
