//! Where a call's status lives, in every protocol the public face speaks, and the two ways to
//! read it: [`status_of`] for an answer read to the end ([`Answer`]), and [`watch`] for a body
//! that streams past (it reports the outcome once, without buffering).
//!
//! - gRPC: `grpc-status` in the response head (trailers-only) or in the HTTP/2 trailers;
//! - grpc-web (binary, and base64 `-text`): in the head (trailers-only) or in the trailer frame
//!   (flag bit `0x80`) at the end of the body, an HTTP/1-style header block;
//! - REST (grpc-gateway) and plain HTTP: the HTTP status, and for REST errors the `code` and
//!   `message` of the JSON body.
//!
//! Nothing here logs or keeps a body beyond the trailer frame it is looking for.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tonic::Code;

use super::{
    frame::{FrameReader, Next},
    header_block, web_text, Protocol,
};
use crate::{
    body::{self, BoxError, Event, Response},
    headers::{GRPC_MESSAGE, GRPC_STATUS},
};

/// The longest grpc-web trailer frame read; litd's are a few dozen bytes.
const MAX_TRAILER_FRAME: usize = 8 * 1024;

/// How a call ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A gRPC status (from the head, the HTTP trailers or the grpc-web trailer frame).
    Grpc(Code),
    /// REST or plain HTTP: the HTTP status.
    Http(StatusCode),
    /// The body ended without any status.
    NoStatus,
    /// The body failed part-way (a reset stream, a broken connection).
    Broken,
    /// The caller went away before the end.
    Cancelled,
}

impl Outcome {
    /// A gRPC OK, or a 2xx HTTP status.
    pub fn is_ok(self) -> bool {
        match self {
            Outcome::Grpc(c) => c == Code::Ok,
            Outcome::Http(s) => s.is_success(),
            _ => false,
        }
    }
}

/// Passes `resp` through unchanged and calls `report` once with its [`Outcome`]: at once when
/// the head says it all (trailers-only gRPC, any REST/HTTP answer), else when the status goes
/// past in the body, or when the body ends, fails or is dropped.
pub fn watch<F>(protocol: Protocol, resp: Response, report: F) -> Response
where
    F: FnOnce(Outcome) + Send + Unpin + 'static,
{
    if !protocol.is_grpc_family() {
        report(Outcome::Http(resp.status()));
        return resp;
    }
    if let Some(code) = head_code(resp.headers()) {
        report(Outcome::Grpc(code));
        return resp;
    }
    let mut scan = (protocol != Protocol::Grpc).then(|| TrailerScan::new(protocol));
    let mut pending = Pending(Some(report));
    resp.map(|b| {
        body::observe(b, move |event| match event {
            Event::Trailers(t) => pending.finish(Outcome::Grpc(header_code(t))),
            Event::Data(d) => {
                if let Some(trailers) = scan.as_mut().and_then(|s| s.feed(d)) {
                    pending.finish(Outcome::Grpc(header_code(&trailers)));
                }
            }
            Event::Error => pending.finish(Outcome::Broken),
            Event::End => pending.finish(Outcome::NoStatus),
        })
    })
}

/// A report of a call's outcome that someone further in may take over: the metrics layer puts
/// one in the request's extensions, and a grpc-websockets call that litgate terminates (whose
/// real status arrives inside the WebSocket, long after the `101`) claims it and reports the
/// status of the call it carries. Unclaimed, the layer reports what it saw itself.
#[derive(Clone)]
pub struct Deferred(Arc<Mutex<Option<Report>>>);

type Report = Box<dyn FnOnce(Outcome) + Send>;

impl Deferred {
    /// A report that runs `f`.
    pub fn new(f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Deferred(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    /// Takes the report over; `None` if someone already did. Dropping the claim unreported
    /// reports [`Outcome::Cancelled`].
    pub fn claim(&self) -> Option<Claimed> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|r| Claimed(Some(r)))
    }
}

/// A claimed [`Deferred`] report.
pub struct Claimed(Option<Report>);

impl Claimed {
    /// Reports `o`.
    pub fn report(mut self, o: Outcome) {
        if let Some(r) = self.0.take() {
            r(o);
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r(Outcome::Cancelled);
        }
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

/// Reports once; reports [`Outcome::Cancelled`] if dropped before anything else.
struct Pending<F: FnOnce(Outcome)>(Option<F>);

impl<F: FnOnce(Outcome)> Pending<F> {
    fn finish(&mut self, o: Outcome) {
        if let Some(f) = self.0.take() {
            f(o);
        }
    }
}

impl<F: FnOnce(Outcome)> Drop for Pending<F> {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

/// An answer read to the end: head, body and trailers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// HTTP trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Answer {
    /// Reads `resp` to the end (callers bound what they read by the method they call).
    pub async fn read(resp: Response) -> Result<Answer, BoxError> {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// The answer as a response again, byte for byte.
    pub fn into_response(self) -> Response {
        let mut headers = self.headers;
        // The body is whole: let the server frame it.
        headers.remove(http::header::CONTENT_LENGTH);
        let mut resp = Response::new(body::replay(self.body, self.trailers));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// The status in a whole answer, as a `tonic::Status` (code and message): for the gRPC family
/// `grpc-status` from the trailers, the head or grpc-web's trailer frame, else one derived from
/// a non-200 HTTP status ([`code_from_http`]); `None` for an HTTP 200 gRPC answer that carries
/// no status at all. For REST and plain HTTP: OK for a 2xx, else grpc-gateway's `code` and
/// `message` from the JSON body.
pub fn status_of(protocol: Protocol, a: &Answer) -> Option<tonic::Status> {
    if !protocol.is_grpc_family() {
        if a.status.is_success() {
            return Some(tonic::Status::ok(""));
        }
        // grpc-gateway's error body: {"code": n, "message": "..."}.
        let parsed = serde_json::from_slice::<serde_json::Value>(&a.body).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("code")?.as_i64())
            .and_then(|c| i32::try_from(c).ok())
            .map(Code::from)
            .unwrap_or(Code::Unknown);
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Some(tonic::Status::new(code, message));
    }
    let from = status_in;
    if let Some(s) = a.trailers.as_ref().and_then(from) {
        return Some(s);
    }
    if let Some(s) = from(&a.headers) {
        return Some(s);
    }
    if protocol != Protocol::Grpc {
        let mut scan = TrailerScan::new(protocol);
        if let Some(s) = scan.feed(&a.body).as_ref().and_then(from) {
            return Some(s);
        }
    }
    (a.status != StatusCode::OK).then(|| {
        tonic::Status::new(
            code_from_http(a.status),
            format!("HTTP {} without a gRPC status", a.status.as_u16()),
        )
    })
}

/// The code a gRPC client derives from the HTTP status of an answer without `grpc-status`
/// (gRPC's HTTP-to-gRPC mapping, as tonic applies it).
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The status a header map (a head, trailers, or a trailer frame's block) carries:
/// `grpc-status` and the percent-decoded `grpc-message`; `None` without `grpc-status`.
pub fn status_in(h: &HeaderMap) -> Option<tonic::Status> {
    head_code(h).map(|code| tonic::Status::new(code, header_message(h)))
}

/// `grpc-status` in a header map, if present.
pub(crate) fn head_code(h: &HeaderMap) -> Option<Code> {
    let v = h.get(GRPC_STATUS)?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .map(Code::from)
            .unwrap_or(Code::Unknown),
    )
}

/// `grpc-status` of a trailer block; a block without one is UNKNOWN (gRPC's rule).
fn header_code(h: &HeaderMap) -> Code {
    head_code(h).unwrap_or(Code::Unknown)
}

/// `grpc-message`, percent-decoded.
fn header_message(h: &HeaderMap) -> String {
    h.get(GRPC_MESSAGE)
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Watches a grpc-web (binary or text) response body for its trailer frame, across chunks,
/// dropping messages as they pass ([`FrameReader::trailers_only`]).
pub struct TrailerScan {
    text: Option<web_text::Decoder>,
    frames: FrameReader,
    done: bool,
}

impl TrailerScan {
    /// A scanner for a response body of `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        TrailerScan {
            text: (protocol == Protocol::GrpcWebText).then(web_text::Decoder::default),
            frames: FrameReader::trailers_only(MAX_TRAILER_FRAME),
            done: false,
        }
    }

    /// Feeds one chunk; `Some(trailers)` once the trailer frame is complete. Undecodable input
    /// or an oversized trailer frame gives an empty block (UNKNOWN), once.
    pub fn feed(&mut self, chunk: &Bytes) -> Option<HeaderMap> {
        if self.done {
            return None;
        }
        let data = match &mut self.text {
            None => chunk.clone(),
            Some(dec) => match dec.feed(chunk) {
                Ok(b) => b,
                Err(_) => return self.finish(HeaderMap::new()),
            },
        };
        self.frames.push(data);
        match self.frames.next_frame() {
            Next::Pending => None,
            Next::Frame(f) => self.finish(header_block::parse(&f.payload())),
            Next::Oversized => self.finish(HeaderMap::new()),
        }
    }

    fn finish(&mut self, trailers: HeaderMap) -> Option<HeaderMap> {
        self.done = true;
        Some(trailers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::frame;
    use base64::Engine;
    use http::HeaderName;

    fn trailer_frame(block: &str) -> Vec<u8> {
        frame::encode(frame::TRAILERS, block.as_bytes()).to_vec()
    }

    fn message_frame(n: usize) -> Vec<u8> {
        frame::message(&vec![7u8; n]).to_vec()
    }

    #[test]
    fn trailer_frame_found_across_any_chunking() {
        let mut body = message_frame(300);
        body.extend(trailer_frame(
            "grpc-status: 5\r\ngrpc-message: not%20here\r\n",
        ));
        for chunk in [1, 2, 5, 7, 64, body.len()] {
            let mut scan = TrailerScan::new(Protocol::GrpcWeb);
            let mut found = None;
            for c in body.chunks(chunk) {
                if let Some(t) = scan.feed(&Bytes::copy_from_slice(c)) {
                    found = Some(t);
                }
            }
            let t = found.unwrap_or_else(|| panic!("chunk {chunk}"));
            assert_eq!(header_code(&t), Code::NotFound);
            assert_eq!(header_message(&t), "not here");
        }
    }

    #[test]
    fn text_frames_are_decoded_in_separately_padded_pieces() {
        let b64 = base64::engine::general_purpose::STANDARD;
        // improbable's server base64-encodes each write on its own, padding included.
        let text = format!(
            "{}{}",
            b64.encode(message_frame(4)),
            b64.encode(trailer_frame("grpc-status:0\r\n"))
        );
        let mut scan = TrailerScan::new(Protocol::GrpcWebText);
        let mut found = None;
        for c in text.as_bytes().chunks(3) {
            if let Some(t) = scan.feed(&Bytes::copy_from_slice(c)) {
                found = Some(t);
            }
        }
        assert_eq!(header_code(&found.unwrap()), Code::Ok);
    }

    #[test]
    fn oversized_or_garbled_trailers_are_unknown_once() {
        let mut scan = TrailerScan::new(Protocol::GrpcWeb);
        let mut big = vec![0x80];
        big.extend_from_slice(&(MAX_TRAILER_FRAME as u32 + 1).to_be_bytes());
        let t = scan.feed(&Bytes::from(big)).unwrap();
        assert_eq!(header_code(&t), Code::Unknown);
        assert!(scan.feed(&Bytes::from_static(b"more")).is_none());
        let mut text = TrailerScan::new(Protocol::GrpcWebText);
        assert_eq!(
            header_code(&text.feed(&Bytes::from_static(b"!!!!")).unwrap()),
            Code::Unknown
        );
    }

    fn answer(protocol_body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Answer {
            status: StatusCode::OK,
            headers: h,
            body: Bytes::from(protocol_body),
            trailers: None,
        }
    }

    #[test]
    fn status_of_reads_each_place() {
        let trailers_only = answer(vec![], &[("grpc-status", "16"), ("grpc-message", "who%3F")]);
        let s = status_of(Protocol::Grpc, &trailers_only).unwrap();
        assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "who?"));
        let mut body = message_frame(2);
        body.extend(trailer_frame("grpc-status: 2\r\ngrpc-message: boom\r\n"));
        let web = answer(body.clone(), &[]);
        let s = status_of(Protocol::GrpcWeb, &web).unwrap();
        assert_eq!((s.code(), s.message()), (Code::Unknown, "boom"));
        assert!(
            status_of(Protocol::Grpc, &web).is_none(),
            "gRPC has no trailer frame"
        );
        let text = answer(
            base64::engine::general_purpose::STANDARD
                .encode(&body)
                .into_bytes(),
            &[],
        );
        assert_eq!(
            status_of(Protocol::GrpcWebText, &text).unwrap().code(),
            Code::Unknown
        );
        let mut rest = answer(
            br#"{"code":2,"message":"expected 1 macaroon, got 0","details":[]}"#.to_vec(),
            &[],
        );
        rest.status = StatusCode::INTERNAL_SERVER_ERROR;
        let s = status_of(Protocol::Rest, &rest).unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "expected 1 macaroon, got 0")
        );
        rest.status = StatusCode::OK;
        assert_eq!(status_of(Protocol::Rest, &rest).unwrap().code(), Code::Ok);
    }

    #[tokio::test]
    async fn watch_reports_once_per_outcome() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |seen: &Arc<Mutex<Vec<Outcome>>>| {
            let seen = seen.clone();
            move |o| seen.lock().unwrap().push(o)
        };
        // grpc-web OK in the trailer frame, read to the end.
        let mut body = message_frame(3);
        body.extend(trailer_frame("grpc-status:0\r\n"));
        let resp = watch(
            Protocol::GrpcWeb,
            Response::new(body::full(body)),
            record(&seen),
        );
        resp.into_body().collect().await.unwrap();
        // gRPC body dropped before its trailers: cancelled.
        let resp = watch(
            Protocol::Grpc,
            Response::new(body::full(message_frame(1))),
            record(&seen),
        );
        drop(resp);
        // REST: the HTTP status, at once.
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        drop(watch(Protocol::Rest, r, record(&seen)));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Outcome::Grpc(Code::Ok),
                Outcome::Cancelled,
                Outcome::Http(StatusCode::TOO_MANY_REQUESTS)
            ]
        );
    }
}
