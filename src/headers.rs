//! Header rules of a proxy: what may not cross a hop. Shared by the passthrough and tunnels
//! (`upstream`) and the grpc-websockets terminator, which both forward a caller's headers.

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// `grpc-status`, named once: a lookup by a string would parse the name on every call.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `macaroon`: gRPC metadata and the grpc-web header carrying a caller's credential.
pub const MACAROON: HeaderName = HeaderName::from_static("macaroon");
/// `grpc-metadata-macaroon`: the same credential as REST sends it.
pub const GRPC_METADATA_MACAROON: HeaderName = HeaderName::from_static("grpc-metadata-macaroon");

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named by `Connection`;
/// keeps `te: trailers`, which gRPC needs end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most heads carry none of them, and a gRPC request only `te: trailers`: one pass over the
    // names settles those without a lookup.
    let mut te = false;
    for name in h.keys() {
        if HOP_BY_HOP.contains(name) {
            return strip_all(h);
        }
        te |= name == header::TE;
    }
    if !te {
        return;
    }
    let mut values = h.get_all(header::TE).iter();
    let only_trailers = matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers")
    );
    if !only_trailers {
        strip_all(h);
    }
}

/// [`strip_hop_by_hop`] for a head that has something to strip or rewrite.
fn strip_all(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    let te_trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    h.remove(header::TE);
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("macaroon", HeaderValue::from_static("0201"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-private").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("macaroon").unwrap(), "0201");
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn the_common_heads_are_left_as_they_are() {
        let grpc = [
            (header::CONTENT_TYPE, "application/grpc"),
            (header::TE, "trailers"),
            (HeaderName::from_static("macaroon"), "0201"),
        ];
        let mut h: HeaderMap = grpc
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_static(v)))
            .collect();
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // Spelled in capitals, `te: TRAILERS` is the same token and is left as it is.
        h.insert(header::TE, HeaderValue::from_static("TRAILERS"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "TRAILERS");
        // Two TE values, or one naming more than trailers, go through the full rule.
        h.append(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, gzip"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get_all(header::TE).iter().collect::<Vec<_>>(),
            ["trailers"]
        );
        // A hop-by-hop name anywhere in the head is removed.
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key(header::UPGRADE));
    }
}
