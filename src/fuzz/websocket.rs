//! grpc-websockets as a client sends it (`grpc::websocket::call`): the header block as the
//! first binary message, then request bytes behind control bytes, then the finish-send marker.
//! WebSocket framing itself is tokio-tungstenite's; what rides inside the messages is litgate's.
//! The other way, litd's answer re-framed for the client (`websocket::answer`): litgate reads
//! litd's frames to do it. Also what the WebSocket upgrade request itself says (`grpc::websocket`): the `method` query
//! parameters litd's REST proxy obeys, and the origin check.

use bytes::Bytes;
use futures_util::FutureExt;
use http::HeaderMap;
use proptest::{collection, prelude::*};
use tokio_tungstenite::tungstenite::{self, error::CapacityError, Message};

use super::{bytes, chunks, config, cuts, mutation, wire::header_map};
use crate::grpc::{
    frame, header_block,
    websocket::{
        self,
        call::{data_message, finish_send_message, read_call, CallError},
    },
};

/// What `write_response` sends for an answer whose body arrives in `pieces`: the binary
/// messages read as one byte stream, as improbable's client reads them.
fn written(status: http::StatusCode, head: HeaderMap, pieces: Vec<Vec<u8>>) -> Vec<u8> {
    use futures_util::SinkExt;
    use http_body_util::StreamBody;
    let frames = pieces
        .into_iter()
        .map(|p| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(p))));
    let mut resp = http::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    *resp.status_mut() = status;
    *resp.headers_mut() = head;
    let mut sent: Vec<Message> = Vec::new();
    let mut sink = (&mut sent).sink_map_err(|never| match never {});
    websocket::answer::write_response(&mut sink, resp)
        .now_or_never()
        .expect("a ready body and sink never leave the write pending")
        .expect("a Vec sink never fails");
    sent.into_iter()
        .flat_map(|m| match m {
            Message::Binary(b) => b.to_vec(),
            other => panic!("only binary messages are sent, not {other:?}"),
        })
        .collect()
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, a space as `+`, the rest escaped.
fn query_escape(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b' ');
    percent_encoding::utf8_percent_encode(s, SET)
        .to_string()
        .replace(' ', "+")
}

type Item = Result<Message, tungstenite::Error>;

/// Reads a call from `msgs` (a stream that is always ready, so the read completes at once).
fn read(msgs: Vec<Item>, limit: usize) -> Result<Option<(HeaderMap, Bytes)>, CallError> {
    let mut s = futures_util::stream::iter(msgs);
    read_call(&mut s, limit)
        .now_or_never()
        .expect("a ready stream never leaves the read pending")
}

/// What arrives from a client: a message, or the connection failing.
#[derive(Debug, Clone)]
enum Sent {
    Msg(Message),
    /// The connection closed without a close frame.
    Closed,
    /// A message longer than tungstenite's limit.
    TooLong,
}

impl Sent {
    fn item(&self) -> Item {
        match self {
            Sent::Msg(m) => Ok(m.clone()),
            Sent::Closed => Err(tungstenite::Error::ConnectionClosed),
            Sent::TooLong => Err(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 1 << 20,
                    max_size: 1 << 16,
                },
            )),
        }
    }
}

/// Messages a client (or a broken connection) may send after the header block.
fn any_message() -> impl Strategy<Value = Sent> {
    let message = prop_oneof![
        4 => bytes(24).prop_map(|b| data_message(&b)),
        1 => Just(finish_send_message()),
        1 => Just(Message::Binary(Bytes::new())),
        1 => Just(Message::Ping(Bytes::new())),
        1 => Just(Message::Pong(Bytes::new())),
        2 => bytes(8).prop_map(|b| Message::Binary(Bytes::from(b))),
        1 => "\\PC{0,4}".prop_map(Message::text),
        1 => Just(Message::Close(None)),
    ];
    prop_oneof![
        12 => message.prop_map(Sent::Msg),
        1 => Just(Sent::Closed),
        1 => Just(Sent::TooLong),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// A well-formed call, its request split over any number of data messages with pings and
    /// empty messages between them, reads as its headers and its bytes; past the limit, it is
    /// refused as too large; what follows the finish-send marker is not read.
    #[test]
    fn a_call_reads_back_in_any_split(
        headers in header_map(),
        request in bytes(96),
        cuts in cuts(),
        noise in collection::vec(0u8..3, 8),
        limit in prop_oneof![Just(usize::MAX), 0usize..128],
        after in collection::vec(any_message(), 0..3),
    ) {
        let mut msgs: Vec<Item> = vec![Ok(Message::Binary(header_block::encode(&headers)))];
        for (i, piece) in chunks(&request, &cuts).into_iter().enumerate() {
            match noise.get(i) {
                Some(1) => msgs.push(Ok(Message::Ping(Bytes::from_static(b"p")))),
                Some(2) => msgs.push(Ok(Message::Binary(Bytes::new()))),
                _ => {}
            }
            msgs.push(Ok(data_message(piece)));
        }
        msgs.push(Ok(finish_send_message()));
        msgs.extend(after.iter().map(Sent::item));
        match read(msgs, limit) {
            Ok(Some((h, body))) => {
                prop_assert!(request.len() <= limit);
                prop_assert_eq!(h, headers);
                prop_assert_eq!(&body[..], &request[..]);
            }
            Err(CallError::TooLarge { limit: l }) => {
                prop_assert!(request.len() > limit);
                prop_assert_eq!(l, limit);
            }
            other => prop_assert!(false, "{:?}", other.map(|_| ())),
        }
    }

    /// Any sequence of messages is a call, a close, or a refusal with a gRPC code, never a
    /// panic; a call read holds exactly the data sent before the first finish-send marker and
    /// never more than the limit.
    #[test]
    fn any_messages_are_a_call_or_a_refusal(
        first in prop_oneof![
            header_map().prop_map(|h| Sent::Msg(Message::Binary(header_block::encode(&h)))),
            any_message(),
        ],
        rest in collection::vec(any_message(), 0..8),
        limit in 0usize..64,
    ) {
        let mut msgs = vec![first.item()];
        msgs.extend(rest.iter().map(Sent::item));
        let sent: Vec<u8> = rest
            .iter()
            .map_while(|m| match m {
                Sent::Msg(Message::Binary(b)) if b.len() == 1 && b[0] == 1 => None,
                Sent::Msg(Message::Binary(b)) => Some(b.get(1..).unwrap_or_default().to_vec()),
                _ => Some(Vec::new()),
            })
            .flatten()
            .collect();
        match read(msgs, limit) {
            Ok(Some((_, body))) => {
                prop_assert!(body.len() <= limit);
                prop_assert_eq!(&body[..], &sent[..]);
            }
            Ok(None) => {}
            Err(e) => {
                prop_assert!(matches!(e.code(), tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted));
            }
        }
    }

    /// Every `method` a WebSocket upgrade's query carries, as Go reads the query (escapes,
    /// `+`, pairs with `;` or a bad escape skipped), is among the methods the router checks,
    /// in its case and upper case; nothing else is.
    #[test]
    fn upgrade_methods_are_every_method_go_reads(
        pairs in collection::vec(
            (
                prop_oneof![Just("method".to_string()), "[a-z]{1,6}"],
                prop_oneof![
                    Just("POST".to_string()),
                    Just("delete".to_string()),
                    Just("GET".to_string()),
                    "\\PC{0,8}",
                ],
                0u8..6,
            ),
            0..5,
        ),
        raw in "[A-Za-z0-9%+&=;._~-]{0,24}",
    ) {
        let mut query = Vec::new();
        let mut read = Vec::new();
        for (k, v, junk) in &pairs {
            match junk {
                0 => query.push(format!("{};x={}", query_escape(k), query_escape(v))),
                1 => query.push(format!("{}={}%zz", query_escape(k), query_escape(v))),
                _ => {
                    query.push(format!("{}={}", query_escape(k), query_escape(v)));
                    if k == "method" {
                        read.push(v.clone());
                    }
                }
            }
        }
        let uri: http::Uri = format!("/v1/sessions?{}", query.join("&")).parse().unwrap();
        let mut expected = vec![http::Method::GET];
        for v in &read {
            for m in [v.clone(), v.to_ascii_uppercase()] {
                if let Ok(m) = http::Method::from_bytes(m.as_bytes()) {
                    if !expected.contains(&m) {
                        expected.push(m);
                    }
                }
            }
        }
        let mut got = websocket::rest_methods(&http::Method::GET, &uri);
        got.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        prop_assert_eq!(got, expected);
        if let Ok(uri) = format!("/v1/x?{raw}").parse::<http::Uri>() {
            prop_assert!(websocket::rest_methods(&http::Method::GET, &uri).contains(&http::Method::GET));
        }
    }

    /// The origin check accepts exactly an absolute `Origin` URL whose authority (without
    /// user info) is the `Host`, and never panics on what a client sends.
    #[test]
    fn origin_check_never_panics(origin in "[ -~]{0,40}", host in "[ -~]{0,20}", scheme in "[a-z]{1,5}") {
        let mut h = HeaderMap::new();
        for (name, v) in [(http::header::ORIGIN, origin.clone()), (http::header::HOST, host.clone())] {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        }
        let _ = websocket::same_origin(&h);
        if let (Ok(o), Ok(hv)) = (
            http::HeaderValue::from_str(&format!("{scheme}://{host}")),
            http::HeaderValue::from_str(&host),
        ) {
            let mut h = HeaderMap::new();
            h.insert(http::header::ORIGIN, o);
            h.insert(http::header::HOST, hv);
            let plain_host = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if plain_host {
                prop_assert!(websocket::same_origin(&h), "{}://{}", scheme, host);
            }
        }
    }

    /// litd's grpc-web answer, its body in any chunking, reaches the grpc-websockets client as
    /// a header frame, the same message frames byte for byte, and a trailer frame carrying
    /// litd's status.
    #[test]
    fn answers_are_reframed_byte_for_byte(
        messages in collection::vec(bytes(24), 1..4),
        code in 0i32..17,
        cuts in cuts(),
    ) {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from(code));
        let mut body: Vec<u8> = messages.iter().flat_map(|m| frame::message(m).to_vec()).collect();
        body.extend_from_slice(&header_block::frame(&trailers));
        let mut head = HeaderMap::new();
        head.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc-web+proto"));
        let pieces = chunks(&body, &cuts).into_iter().map(<[u8]>::to_vec).collect();
        let out = written(http::StatusCode::OK, head.clone(), pieces);
        let frames = frame::frames(&Bytes::from(out)).expect("whole frames");
        prop_assert_eq!(frames.len(), messages.len() + 2);
        prop_assert!(frames[0].is_trailers());
        prop_assert_eq!(header_block::parse_strict(&frames[0].payload()).unwrap(), head);
        for (f, m) in frames[1..].iter().zip(&messages) {
            prop_assert_eq!(f.raw(), &frame::message(m));
        }
        let last = frames.last().unwrap();
        prop_assert!(last.is_trailers());
        prop_assert_eq!(header_block::parse_strict(&last.payload()).unwrap(), trailers);
    }

    /// Any answer body from litd (any bytes, any chunking, any HTTP status) is re-framed as
    /// whole frames ending in a trailer frame, never a panic: litd's own trailer block as it
    /// sent it (a malformed one replaced by INTERNAL), or a status litgate derives when litd's
    /// body has no trailer frame.
    #[test]
    fn any_answer_ends_in_a_status(
        body in prop_oneof![
            (collection::vec(bytes(16), 0..3), bytes(24), mutation()).prop_map(|(ms, block, m)| {
                let mut b: Vec<u8> = ms.iter().flat_map(|x| frame::message(x).to_vec()).collect();
                b.extend_from_slice(&frame::encode(frame::TRAILERS, &block));
                m.apply(&b)
            }),
            bytes(48),
        ],
        cuts in cuts(),
        status in prop_oneof![Just(200u16), 100u16..600],
    ) {
        let pieces = chunks(&body, &cuts).into_iter().map(<[u8]>::to_vec).collect();
        let status = http::StatusCode::from_u16(status).unwrap();
        let out = written(status, HeaderMap::new(), pieces);
        let frames = frame::frames(&Bytes::from(out)).expect("whole frames");
        let last = frames.last().expect("at least the status frame");
        prop_assert!(last.is_trailers());
        let got = header_block::parse_strict(&last.payload()).unwrap();
        let whole = frame::frames(&Bytes::from(body.clone())).unwrap_or_else(|| {
            // The frames before the body broke off mid-frame.
            let mut r = frame::FrameReader::whole();
            r.push(Bytes::from(body.clone()));
            std::iter::from_fn(|| match r.next_frame() {
                frame::Next::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
        });
        match whole.iter().find(|f| f.is_trailers()) {
            Some(t) => match header_block::parse_strict(&t.payload()) {
                Ok(litd) if frames.len() == 1 => {
                    // No data: litd's status merged into the one headers frame.
                    for k in litd.keys() {
                        prop_assert_eq!(got.get_all(k).iter().next_back(), litd.get_all(k).iter().next_back());
                    }
                }
                Ok(litd) => prop_assert_eq!(got, litd),
                Err(_) => prop_assert_eq!(&got["grpc-status"], "13"),
            },
            None => prop_assert!(got.contains_key("grpc-status")),
        }
    }
}
