//! The gRPC wire as litgate reads it from clients and from litd: length-prefixed frames
//! (`grpc::frame`), grpc-web-text base64 (`grpc::web_text`), header blocks
//! (`grpc::header_block`), the status of an answer (`grpc::status`: `TrailerScan`, `status_of`)
//! and the unary codecs of intercepted methods (`grpc::codec`).

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::{collection, prelude::*};
use tonic::Code;

use super::{bytes, chunks, config, cuts, mutation};
use crate::grpc::{
    codec::{self, Unary},
    frame::{self, FrameError, FrameReader, Next, PREFIX_LEN, TRAILERS},
    header_block,
    status::{self, Answer, TrailerScan},
    web_text, Protocol,
};

/// A frame to encode: a flag byte (mostly the ones litgate meets) and a payload.
fn frame_spec() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop_oneof![
            4 => Just(0u8),
            1 => Just(frame::COMPRESSED),
            2 => Just(TRAILERS),
            1 => any::<u8>(),
        ],
        bytes(40),
    )
}

fn encode_all(specs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    specs
        .iter()
        .flat_map(|(f, p)| frame::encode(*f, p).to_vec())
        .collect()
}

/// A body as it may come: valid frames, then mutated (or arbitrary bytes).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (collection::vec(frame_spec(), 0..4), mutation())
            .prop_map(|(specs, m)| m.apply(&encode_all(&specs))),
        1 => bytes(64),
    ]
}

/// What the whole-body reader finds: every whole frame, and the bytes left over.
fn read_whole(input: &[u8]) -> (Vec<frame::Frame>, Vec<u8>) {
    let mut r = FrameReader::whole();
    r.push(Bytes::copy_from_slice(input));
    let mut out = Vec::new();
    while let Next::Frame(f) = r.next_frame() {
        out.push(f);
    }
    (out, r.pending().to_vec())
}

/// What a trailers-only reader should report for `input` read whole: the first trailer frame
/// (when complete and at most `max` long), `Oversized`, or `Pending`.
fn first_trailer(input: &[u8], max: usize) -> Next {
    let mut at = 0;
    while input.len() - at >= PREFIX_LEN {
        let len = u32::from_be_bytes([input[at + 1], input[at + 2], input[at + 3], input[at + 4]])
            as usize;
        if input[at] & TRAILERS != 0 {
            if len > max {
                return Next::Oversized;
            }
            return match input.get(at..at + PREFIX_LEN + len) {
                Some(raw) => Next::Frame(read_whole(raw).0.remove(0)),
                None => Next::Pending,
            };
        }
        at = match at.checked_add(PREFIX_LEN + len) {
            Some(next) if next <= input.len() => next,
            _ => return Next::Pending,
        };
    }
    Next::Pending
}

/// Where the first trailer frame starts, if the frames before it are whole.
fn trailer_start(input: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(p) = input.get(at..at + PREFIX_LEN) {
        if p[0] & TRAILERS != 0 {
            return Some(at);
        }
        at = at.checked_add(PREFIX_LEN + u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize)?;
    }
    None
}

/// grpc-web-text as improbable's server writes it: each piece base64-encoded (and padded) on
/// its own, with line breaks where a proxy might add them.
fn text_pieces(input: &[u8], cuts: &[usize], newlines: bool) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for piece in chunks(input, cuts) {
        out.extend_from_slice(b64.encode(piece).as_bytes());
        if newlines {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Header names as clients and litd send them (lower case tokens).
fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        Just(HeaderName::from_static("grpc-status")),
        Just(HeaderName::from_static("grpc-message")),
        Just(HeaderName::from_static("macaroon")),
        "[a-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(
            |n| HeaderName::from_bytes(n.as_bytes()).unwrap_or(HeaderName::from_static("x"))
        ),
    ]
}

/// Header values that survive a header block: visible ASCII and inner spaces, no leading or
/// trailing white space (a block trims it, as Go's textproto does).
fn header_value() -> impl Strategy<Value = HeaderValue> {
    "([!-~]([ -~]{0,20}[!-~])?)?"
        .prop_map(|v| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("v")))
}

pub(crate) fn header_map() -> impl Strategy<Value = HeaderMap> {
    collection::vec((header_name(), header_value()), 0..6).prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, v);
        }
        h
    })
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Grpc),
        Just(Protocol::GrpcWeb),
        Just(Protocol::GrpcWebText),
        Just(Protocol::Rest),
        Just(Protocol::Http),
        Just(Protocol::GrpcWebSocket),
        Just(Protocol::WebSocket),
    ]
}

/// Lines of a block as a client might write them: headers, and lines that are not.
fn block() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => collection::vec(
            prop_oneof![
                4 => (header_name(), header_value())
                    .prop_map(|(k, v)| [k.as_str().as_bytes(), b": ", v.as_bytes()].concat()),
                1 => bytes(12),
                1 => Just(b" folded".to_vec()),
                1 => Just(Vec::new()),
            ],
            0..5,
        )
        .prop_map(|lines| lines.iter().flat_map(|l| [&l[..], b"\r\n"].concat()).collect()),
        1 => bytes(48),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Frames encoded and read back are the frames written, byte for byte.
    #[test]
    fn frames_round_trip(specs in collection::vec(frame_spec(), 0..5)) {
        let body = Bytes::from(encode_all(&specs));
        let got = frame::frames(&body).expect("a concatenation of frames ends on a boundary");
        prop_assert_eq!(got.len(), specs.len());
        for (f, (flag, payload)) in got.iter().zip(&specs) {
            prop_assert_eq!(f.flag(), *flag);
            prop_assert_eq!(&f.payload()[..], &payload[..]);
            prop_assert_eq!(f.is_trailers(), flag & TRAILERS != 0);
        }
    }

    /// Read in any chunking, a body gives the frames it gives read whole; nothing is lost or
    /// invented (frames + pending = input), whatever the length prefixes claim.
    #[test]
    fn frame_reader_incremental_is_whole(input in body(), cuts in cuts()) {
        let (whole, rest) = read_whole(&input);
        let joined: Vec<u8> = whole.iter().flat_map(|f| f.raw().to_vec()).chain(rest.clone()).collect();
        prop_assert_eq!(&joined, &input);
        let mut r = FrameReader::whole();
        let mut got = Vec::new();
        for c in chunks(&input, &cuts) {
            r.push(Bytes::copy_from_slice(c));
            while let Next::Frame(f) = r.next_frame() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, whole);
        prop_assert_eq!(r.pending(), &rest[..]);
        prop_assert_eq!(frame::frames(&Bytes::from(input)).is_some(), rest.is_empty());
    }

    /// A trailers-only reader (how status watching reads a stream) finds in any chunking what
    /// a model reading the body whole finds, and never holds a message's bytes.
    #[test]
    fn trailers_only_reader_matches_the_model(
        input in body(),
        cuts in cuts(),
        max in prop_oneof![Just(0usize), Just(16), Just(64), Just(8 * 1024)],
    ) {
        let start = trailer_start(&input);
        let mut r = FrameReader::trailers_only(max);
        let mut got = Next::Pending;
        let mut fed = 0;
        for c in chunks(&input, &cuts) {
            r.push(Bytes::copy_from_slice(c));
            fed += c.len();
            if start.is_none_or(|s| fed < s + PREFIX_LEN) {
                prop_assert!(r.pending().len() <= PREFIX_LEN, "a message's bytes were kept");
            }
            got = r.next_frame();
            if got != Next::Pending {
                break;
            }
        }
        prop_assert_eq!(got, first_trailer(&input, max));
    }

    /// A unary request body gives its one message exactly when it is one uncompressed frame;
    /// otherwise the refusal names what is wrong, with the lengths the bytes say.
    #[test]
    fn single_message_matches_the_model(input in body()) {
        let got = frame::single_message(&Bytes::from(input.clone()));
        let expected = if input.len() < PREFIX_LEN {
            Err(FrameError::Short)
        } else {
            let said = u32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
            let has = input.len() - PREFIX_LEN;
            match input[0] {
                _ if has < said => Err(FrameError::Truncated { said, has }),
                0 if has == said => Ok(Bytes::copy_from_slice(&input[PREFIX_LEN..])),
                0 => Err(FrameError::MoreThanOne),
                f if f & frame::COMPRESSED != 0 => Err(FrameError::Compressed),
                f => Err(FrameError::UnknownFlags(f)),
            }
        };
        prop_assert_eq!(got, expected);
    }

    /// A unary answer's message is found exactly when there is one uncompressed message
    /// among whole frames (trailer frames aside), in every gRPC-family protocol.
    #[test]
    fn answer_message_matches_the_model(input in body()) {
        let (frames, rest) = read_whole(&input);
        let messages: Vec<_> = frames.iter().filter(|f| !f.is_trailers()).collect();
        let expected = match (&messages[..], rest.is_empty()) {
            ([only], true) if only.flag() == 0 => Some(only.payload()),
            _ => None,
        };
        let body = Bytes::from(input);
        prop_assert_eq!(frame::answer_message(&body), expected.clone());
        prop_assert_eq!(codec::answer_message(Protocol::Grpc, &body), expected.clone());
        let text = web_text::encode(&body);
        prop_assert_eq!(codec::answer_message(Protocol::GrpcWebText, &text), expected);
        prop_assert_eq!(codec::answer_message(Protocol::Rest, &body), None);
    }

    /// grpc-web-text: encode then decode is the identity; text written in separately padded
    /// pieces with line breaks decodes, in any chunking, to the bytes written.
    #[test]
    fn web_text_round_trips_in_any_chunking(
        input in bytes(96),
        written in cuts(),
        read in cuts(),
        newlines in any::<bool>(),
    ) {
        prop_assert_eq!(&web_text::decode(&web_text::encode(&input)).unwrap()[..], &input[..]);
        let text = text_pieces(&input, &written, newlines);
        prop_assert_eq!(&web_text::decode(&text).unwrap()[..], &input[..]);
        let mut dec = web_text::Decoder::default();
        let mut out = Vec::new();
        for c in chunks(&text, &read) {
            out.extend_from_slice(&dec.feed(c).unwrap());
        }
        prop_assert_eq!(out, input);
    }

    /// Any text, in any chunking, decodes to what the decoder makes of it fed whole, and
    /// fails exactly when that fails; output never exceeds three bytes per four characters.
    #[test]
    fn web_text_incremental_is_whole(
        text in prop_oneof![
            collection::vec(prop_oneof![
                8 => proptest::sample::select(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()),
                1 => Just(b'='),
                1 => Just(b'\n'),
                1 => any::<u8>(),
            ], 0..64),
            bytes(64),
        ],
        read in cuts(),
    ) {
        let whole = web_text::Decoder::default().feed(&text);
        let mut dec = web_text::Decoder::default();
        let mut out = Vec::new();
        let mut failed = false;
        for c in chunks(&text, &read) {
            match dec.feed(c) {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        match whole {
            Ok(w) => {
                prop_assert!(!failed, "chunked failed where whole did not");
                prop_assert_eq!(&out[..], &w[..]);
            }
            Err(_) => prop_assert!(failed, "chunked decoded what whole refused"),
        }
        prop_assert!(out.len() <= text.len() / 4 * 3);
    }

    /// Header blocks: a map written as a block reads back as the same map, strictly and
    /// leniently.
    #[test]
    fn header_blocks_round_trip(h in header_map()) {
        let block = header_block::encode(&h);
        prop_assert_eq!(header_block::parse_strict(&block).unwrap(), h.clone());
        prop_assert_eq!(header_block::parse(&block), h.clone());
        let framed = header_block::frame(&h);
        let (frames, rest) = read_whole(&framed);
        prop_assert!(rest.is_empty() && frames.len() == 1 && frames[0].is_trailers());
        prop_assert_eq!(frames[0].payload(), block);
    }

    /// Any block: the strict reader accepts exactly what the lenient one reads the same way;
    /// a refusal names a line that exists and none of the block's bytes.
    #[test]
    fn header_block_strict_agrees_with_lenient(block in block()) {
        let lenient = header_block::parse(&block);
        match header_block::parse_strict(&block) {
            Ok(strict) => prop_assert_eq!(strict, lenient),
            Err(e) => {
                let lines = block.split(|&b| b == b'\n').count();
                prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {}", e.line, lines);
                prop_assert_eq!(
                    e.to_string(),
                    format!("malformed header block, line {}: {}", e.line, e.reason)
                );
            }
        }
    }

    /// The trailer scan (how status is watched on grpc-web and grpc-web-text answers) finds
    /// the status in any chunking: the block of the first trailer frame, or UNKNOWN (an empty
    /// block) when that frame is oversized; text written in separately padded pieces too.
    #[test]
    fn trailer_scan_incremental_is_whole(
        messages in collection::vec(bytes(40), 0..3),
        block in block(),
        tail in bytes(8),
        written in cuts(),
        read in cuts(),
    ) {
        let mut body: Vec<u8> = messages.iter().flat_map(|m| frame::message(m).to_vec()).collect();
        body.extend_from_slice(&frame::encode(TRAILERS, &block));
        body.extend_from_slice(&tail);
        let expected = header_block::parse(&block);
        for (protocol, wire) in [
            (Protocol::GrpcWeb, body.clone()),
            (Protocol::GrpcWebText, text_pieces(&body, &written, false)),
        ] {
            let mut scan = TrailerScan::new(protocol);
            let mut found = Vec::new();
            for c in chunks(&wire, &read) {
                found.extend(scan.feed(&Bytes::copy_from_slice(c)));
            }
            prop_assert_eq!(found, vec![expected.clone()], "{:?}", protocol);
        }
    }

    /// Any grpc-web body, in any chunking, reports what it reports fed whole, at most once.
    #[test]
    fn trailer_scan_reports_once_whatever_the_bytes(input in body(), read in cuts()) {
        let mut whole = TrailerScan::new(Protocol::GrpcWeb);
        let expected: Vec<_> = whole.feed(&Bytes::from(input.clone())).into_iter().collect();
        let mut scan = TrailerScan::new(Protocol::GrpcWeb);
        let mut found = Vec::new();
        for c in chunks(&input, &read) {
            found.extend(scan.feed(&Bytes::copy_from_slice(c)));
        }
        prop_assert_eq!(found, expected);
        let mut text = TrailerScan::new(Protocol::GrpcWebText);
        let _ = text.feed(&Bytes::from(input));
    }

    /// A status written into a grpc-web trailer frame (message percent-encoded, as gRPC
    /// writes it) is the status read back, binary and text; in a REST error body, likewise.
    #[test]
    fn status_round_trips(code in 0i32..17, message in "\\PC{0,24}", messages in collection::vec(bytes(16), 0..2)) {
        let encoded = percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(code));
        trailers.insert("grpc-message", HeaderValue::from_str(&encoded).unwrap());
        let mut body: Vec<u8> = messages.iter().flat_map(|m| frame::message(m).to_vec()).collect();
        body.extend_from_slice(&header_block::frame(&trailers));
        let answer = |body: Vec<u8>| Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body),
            trailers: None,
        };
        for (p, b) in [
            (Protocol::GrpcWeb, body.clone()),
            (Protocol::GrpcWebText, web_text::encode(&body).to_vec()),
        ] {
            let s = status::status_of(p, &answer(b)).unwrap();
            prop_assert_eq!((s.code(), s.message()), (Code::from(code), &message[..]));
        }
        let mut grpc = answer(Vec::new());
        grpc.trailers = Some(trailers);
        let s = status::status_of(Protocol::Grpc, &grpc).unwrap();
        prop_assert_eq!((s.code(), s.message()), (Code::from(code), &message[..]));
        let mut rest = answer(serde_json::json!({"code": code, "message": message}).to_string().into_bytes());
        rest.status = StatusCode::BAD_REQUEST;
        let s = status::status_of(Protocol::Rest, &rest).unwrap();
        prop_assert_eq!((s.code(), s.message()), (Code::from(code), &message[..]));
    }

    /// Any answer (any HTTP status, any `grpc-status` value, any body) gives a status or
    /// none, never a panic; a gRPC-family 200 without any status is the only `None`.
    #[test]
    fn status_of_never_panics(
        protocol in protocol(),
        http in 100u16..600,
        grpc_status in proptest::option::of(bytes(6)),
        input in prop_oneof![body(), bytes(64)],
    ) {
        let mut headers = HeaderMap::new();
        if let Some(v) = grpc_status.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
            headers.insert("grpc-status", v);
        }
        let a = Answer {
            status: StatusCode::from_u16(http).unwrap(),
            headers,
            body: Bytes::from(input),
            trailers: None,
        };
        let s = status::status_of(protocol, &a);
        if s.is_none() {
            prop_assert!(protocol.is_grpc_family() && a.status == StatusCode::OK);
        }
    }

    /// Unary codecs: a message encoded for a protocol decodes back to itself; any body is
    /// either a message or a refusal naming what is wrong (never a panic).
    #[test]
    fn unary_codec_round_trips(msg in bytes(64), input in body(), obj in json_object()) {
        for p in [Protocol::Grpc, Protocol::GrpcWeb, Protocol::GrpcWebText] {
            let wire = codec::encode_unary(p, &Unary::Proto(Bytes::from(msg.clone())));
            match codec::decode_unary(p, &wire) {
                Ok(Unary::Proto(m)) => prop_assert_eq!(&m[..], &msg[..]),
                other => prop_assert!(false, "{:?}: {:?}", p, other),
            }
            let _ = codec::decode_unary(p, &Bytes::from(input.clone()));
        }
        let wire = codec::encode_unary(Protocol::Rest, &Unary::Json(obj.clone()));
        match codec::decode_unary(Protocol::Rest, &wire) {
            Ok(Unary::Json(m)) => prop_assert_eq!(m, obj),
            other => prop_assert!(false, "{:?}", other),
        }
        if let Err(e) = codec::decode_unary(Protocol::Rest, &Bytes::from(input)) {
            prop_assert_eq!(e.code(), Code::InvalidArgument);
        }
    }
}

/// JSON objects with nested values, as REST callers send.
pub(crate) fn json_object() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    collection::btree_map("[a-zA-Z_]{1,10}", value, 0..5).prop_map(|m| m.into_iter().collect())
}

/// A length prefix claiming 4 GiB is read as a claim, not a promise: nothing is allocated for
/// it, and the refusal says what the bytes hold.
#[test]
fn a_huge_length_prefix_allocates_nothing() {
    let claim = Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert_eq!(
        frame::single_message(&claim),
        Err(FrameError::Truncated {
            said: u32::MAX as usize,
            has: 3
        })
    );
    let mut r = FrameReader::whole();
    r.push(claim.clone());
    assert_eq!(r.next_frame(), Next::Pending);
    assert_eq!(r.pending(), &claim[..]);
    let mut t = FrameReader::trailers_only(64);
    t.push(claim);
    t.push(Bytes::from(vec![0; 1 << 16]));
    assert!(
        t.pending().is_empty(),
        "a message's bytes are dropped, not kept"
    );
}
