//! One call on an HTTP/2 connection to litd, on the `h2` crate directly: the request head and
//! body go out from the caller's own task, and litd's answer is read in it too. No dispatch
//! channel, no task per call and no second write for the body of a unary call: the first chunk
//! of the body is handed to h2 with the head, so HEADERS and DATA leave in one write. Only a
//! body that is not all there yet (a client stream) gets a task of its own ([`Pipe`], which
//! also sends litgate's answers to its clients, `server::http2`).
//!
//! Flow control: the first chunk is buffered by h2 until the new stream has credit; every
//! later chunk waits for credit first, so a call never holds more than one chunk beyond its
//! window. litd's answer gives its credit back as the caller reads it ([`RecvBody`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use h2::{client::SendRequest, Reason, RecvStream, SendStream};
use http_body::{Body as _, Frame, SizeHint};

use crate::{
    body::{Body, BoxError},
    server::Progress,
};

/// Sends one request on `send` and waits for litd's answer head. The body streams on after
/// the head if the caller's body is not all there yet.
pub(super) async fn call(
    send: SendRequest<Bytes>,
    req: http::Request<Body>,
) -> Result<http::Response<RecvBody>, Failure> {
    let mut send = send.ready().await.map_err(Failure::NotSent)?;
    let (head, body) = req.into_parts();
    let eos = body.is_end_stream();
    let (answer, tx) = send
        .send_request(http::Request::from_parts(head, ()), eos)
        .map_err(Failure::NotSent)?;
    // Sent from here on: litd may see the call.
    let mut guard = None;
    if !eos {
        let mut pipe = Pipe::new(body, tx, Toward::Litd);
        // What is there already goes out with the head; the rest, if any, from a task.
        if std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pipe).poll(cx)))
            .await
            .is_pending()
        {
            let (keep, cancel) = tokio::sync::oneshot::channel::<()>();
            guard = Some(keep);
            tokio::spawn(pipe.until_cancelled(cancel));
        }
    }
    let resp = answer.await.map_err(Failure::Sent)?;
    if let Some(keep) = guard {
        // The answer head is in: the body keeps streaming whatever becomes of the caller.
        let _ = keep.send(());
    }
    Ok(resp.map(RecvBody::new))
}

/// Why a call failed, and whether litd may have seen it.
#[derive(Debug)]
pub(super) enum Failure {
    /// Before anything of the call was queued on the connection (it was closed or closing).
    NotSent(h2::Error),
    /// After the head was queued.
    Sent(h2::Error),
}

impl Failure {
    /// The h2 error.
    pub(super) fn error(&self) -> &h2::Error {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) => e,
        }
    }
}

/// Where a [`Pipe`] sends its body, which says how a body that fails resets the stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Toward {
    /// A caller's request body to litd: a failed one resets with CANCEL (the caller gave up).
    Litd,
    /// An answer to a client: a failed one resets with the HTTP/2 reason it carries (a reset
    /// from litd passed on as it came), else INTERNAL_ERROR.
    Client,
}

/// A body streamed onto an h2 stream, both ways: a caller's request body to litd, and an
/// answer to a client (`server::http2`). The first chunk goes without waiting for credit (h2
/// holds it until the stream has some); every later one is read from the body only once the
/// previous one had credit, so a pipe never holds more than one chunk beyond the peer's window
/// and a peer that stops reading leaves the body unread.
pub(crate) struct Pipe {
    body: Body,
    tx: SendStream<Bytes>,
    toward: Toward,
    /// Whether a chunk has been handed to h2 (the first goes without waiting for credit).
    sent: bool,
    /// A chunk read from the body that waits for the stream's credit, and whether it ends
    /// the body.
    waiting: Option<(Bytes, bool)>,
    /// Whether credit was ever asked for (there may be some to give back at the end).
    reserved: bool,
    /// The stream's stall watch (an answer to a client): told when a chunk read from the body
    /// waits for credit, and when the body is read again.
    progress: Option<Arc<Progress>>,
}

impl Pipe {
    pub(crate) fn new(body: Body, tx: SendStream<Bytes>, toward: Toward) -> Self {
        Pipe {
            body,
            tx,
            toward,
            sent: false,
            waiting: None,
            reserved: false,
            progress: None,
        }
    }

    /// Reports to `progress` (`server::stall`): a chunk that waits for the peer's credit, with
    /// more of the body to follow, is data handed out that the reader has not taken.
    pub(crate) fn reporting_to(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Streams the rest of the body; if the caller gives up on the call before litd's answer
    /// head came (`cancel` dropped without a send), the stream is reset with CANCEL.
    async fn until_cancelled(mut self, mut cancel: tokio::sync::oneshot::Receiver<()>) {
        let mut watching = true;
        std::future::poll_fn(|cx| {
            if watching {
                match Pin::new(&mut cancel).poll(cx) {
                    Poll::Ready(Ok(())) => watching = false,
                    Poll::Ready(Err(_)) => {
                        self.tx.send_reset(Reason::CANCEL);
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            Pin::new(&mut self).poll(cx)
        })
        .await
    }

    /// Hands one chunk to h2; `false` when the stream is done (it ended or failed).
    fn send(&mut self, data: Bytes, eos: bool) -> bool {
        self.sent = true;
        match self.tx.send_data(data, eos) {
            Ok(()) => !eos,
            Err(e) => {
                tracing::debug!(error = %e, toward = ?self.toward, "a body could not go on");
                false
            }
        }
    }
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // The receiver reset the stream (litd answered early or refused; a client gave up):
        // stop reading the body. Looked at once per poll: a reset is only ever received by the
        // connection's task, which does not run while this one does, and a send on a stream
        // reset meanwhile fails, which ends the pipe too.
        if let Poll::Ready(reason) = this.tx.poll_reset(cx) {
            tracing::debug!(
                ?reason,
                toward = ?this.toward,
                "the stream was reset; its body stops"
            );
            return Poll::Ready(());
        }
        loop {
            if let Some((data, eos)) = this.waiting.take() {
                while this.tx.capacity() == 0 {
                    match this.tx.poll_capacity(cx) {
                        Poll::Pending => {
                            this.waiting = Some((data, eos));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if !this.send(data, eos) {
                    return Poll::Ready(());
                }
                continue;
            }
            if let Some(p) = &this.progress {
                p.polled();
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => {
                    // The body ended without saying so on its last chunk: an empty DATA frame
                    // with END_STREAM ends the stream.
                    this.send(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    let reason = match this.toward {
                        Toward::Litd => Reason::CANCEL,
                        Toward::Client => reason_of(&e),
                    };
                    tracing::debug!(
                        error = %crate::error::chain(&*e),
                        toward = ?this.toward,
                        ?reason,
                        "a body broke off; its stream is reset"
                    );
                    this.tx.send_reset(reason);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = this.body.is_end_stream();
                        if data.is_empty() && !eos {
                            // An empty DATA frame carries nothing (and h2 servers count many of
                            // them as a flood).
                            continue;
                        }
                        if !this.sent || data.is_empty() {
                            // The first chunk goes at once (a unary body's only one); an empty
                            // last one needs no credit.
                            if !this.send(data, eos) {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        this.tx.reserve_capacity(1);
                        this.reserved = true;
                        if let (Some(p), false) = (&this.progress, eos) {
                            p.handed_out();
                        }
                        this.waiting = Some((data, eos));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            if this.reserved {
                                // Credit asked for and not used goes back to the connection.
                                this.tx.reserve_capacity(0);
                            }
                            if let Err(e) = this.tx.send_trailers(trailers) {
                                tracing::debug!(
                                    error = %e,
                                    toward = ?this.toward,
                                    "trailers could not go on"
                                );
                            }
                            return Poll::Ready(());
                        }
                    }
                },
            }
        }
    }
}

/// The HTTP/2 reason a failed body carries (a reset of litd's stream passed on as it came),
/// else INTERNAL_ERROR.
fn reason_of(e: &BoxError) -> Reason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason().unwrap_or(Reason::INTERNAL_ERROR);
        }
        cause = err.source();
    }
    Reason::INTERNAL_ERROR
}

/// A body as h2 hands it over (litd's answer; on the public side, a client's request): each
/// chunk's flow-control credit goes back to the sender as it is read.
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream) -> Self {
        RecvBody {
            recv,
            data_done: false,
        }
    }
}

/// A stream reset with NO_ERROR after litd's answer ends it early without failing it
/// (RFC 9113 §8.1).
fn ended_early(e: &h2::Error) -> bool {
    e.reason() == Some(Reason::NO_ERROR)
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) if ended_early(&e) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(t) => Poll::Ready(t.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if ended_early(&e) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    //! Against a hand-driven HTTP/2 peer on an in-memory pipe, so the frames and the writes
    //! that carry them can be checked one by one.

    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

    use super::*;
    use crate::upstream::pool::{handshake, Sender};

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] h2::Error);

    #[test]
    fn a_failed_answer_resets_with_the_reason_it_carries() {
        let cancel: BoxError = h2::Error::from(Reason::CANCEL).into();
        assert_eq!(reason_of(&cancel), Reason::CANCEL);
        let wrapped: BoxError = Wrapped(h2::Error::from(Reason::REFUSED_STREAM)).into();
        assert_eq!(reason_of(&wrapped), Reason::REFUSED_STREAM);
        let other: BoxError = "broken".into();
        assert_eq!(reason_of(&other), Reason::INTERNAL_ERROR);
    }

    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const END_STREAM: u8 = 1;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// The client's end of the pipe; every write it makes is kept whole, in order.
    struct Recorded {
        io: DuplexStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
            self.writes.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[derive(Debug)]
    struct RawFrame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// The litd end: reads the client's frames and writes hand-made ones.
    struct Peer {
        io: DuplexStream,
    }

    impl Peer {
        /// Reads the client preface and answers with empty SETTINGS and an ACK.
        async fn start(mut io: DuplexStream) -> Self {
            let mut preface = [0u8; 24];
            io.read_exact(&mut preface).await.expect("preface");
            assert_eq!(preface, PREFACE);
            let mut peer = Peer { io };
            peer.write(SETTINGS, 0, 0, &[]).await;
            peer.write(SETTINGS, 1, 0, &[]).await;
            peer
        }

        async fn read(&mut self) -> RawFrame {
            let mut head = [0u8; 9];
            self.io.read_exact(&mut head).await.expect("frame head");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            self.io.read_exact(&mut payload).await.expect("payload");
            RawFrame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload,
            }
        }

        /// The next frame of `kind` on `stream`, skipping the connection's own.
        async fn expect(&mut self, kind: u8, stream: u32) -> RawFrame {
            loop {
                let f = self.read().await;
                if f.kind == kind && f.stream == stream {
                    return f;
                }
                assert!(
                    f.stream == 0 || f.stream == stream,
                    "unexpected frame {f:?} while waiting for type {kind} on {stream}"
                );
            }
        }

        async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
            let len = (payload.len() as u32).to_be_bytes();
            let mut f = vec![len[1], len[2], len[3], kind, flags];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(payload);
            self.io.write_all(&f).await.expect("peer writes");
        }

        /// Answers `stream` with `:status: 200` and nothing else.
        async fn answer(&mut self, stream: u32) {
            // HPACK: indexed field 8 of the static table is `:status: 200`.
            self.write(HEADERS, 0x4 | END_STREAM, stream, &[0x88]).await;
        }
    }

    async fn connect() -> (Sender, Peer, Arc<Mutex<Vec<Vec<u8>>>>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let writes = Arc::default();
        let sender = handshake(Recorded {
            io: client,
            writes: Arc::clone(&writes),
        })
        .await
        .expect("handshake");
        (sender, Peer::start(server).await, writes)
    }

    fn request(body: Body) -> http::Request<Body> {
        http::Request::post("http://litd/litrpc.Sessions/ListSessions")
            .body(body)
            .expect("request")
    }

    /// Frames of `stream` in the recorded writes, each with the index of the write(s) it
    /// started and ended in.
    fn frames_by_write(writes: &[Vec<u8>], stream: u32) -> Vec<(u8, u8, usize, usize)> {
        let mut owner = Vec::new();
        let mut all = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            owner.extend(std::iter::repeat_n(i, w.len()));
            all.extend_from_slice(w);
        }
        let mut pos = all
            .windows(PREFACE.len())
            .position(|w| w == PREFACE)
            .map_or(0, |p| p + PREFACE.len());
        let mut out = Vec::new();
        while pos + 9 <= all.len() {
            let len = u32::from_be_bytes([0, all[pos], all[pos + 1], all[pos + 2]]) as usize;
            let id = u32::from_be_bytes([all[pos + 5], all[pos + 6], all[pos + 7], all[pos + 8]])
                & 0x7fff_ffff;
            let end = pos + 9 + len;
            if id == stream {
                out.push((all[pos + 3], all[pos + 4], owner[pos], owner[end - 1]));
            }
            pos = end;
        }
        out
    }

    #[tokio::test]
    async fn a_unary_body_leaves_with_its_head_in_one_write_and_ends_the_stream() {
        let (sender, mut peer, writes) = connect().await;
        // A first call settles the connection (its preface and settings are written first).
        let first = tokio::spawn(call(
            sender.send.clone(),
            request(crate::body::full("hello")),
        ));
        peer.expect(DATA, 1).await;
        peer.answer(1).await;
        assert_eq!(first.await.unwrap().expect("answered").status(), 200);

        writes.lock().unwrap().clear();
        let second = tokio::spawn(call(
            sender.send.clone(),
            request(crate::body::full("hello")),
        ));
        let data = peer.expect(DATA, 3).await;
        assert_eq!(data.payload, b"hello");
        assert_eq!(
            data.flags & END_STREAM,
            END_STREAM,
            "the body's one DATA frame ends it"
        );
        peer.answer(3).await;
        assert_eq!(second.await.unwrap().expect("answered").status(), 200);

        let frames = frames_by_write(&writes.lock().unwrap(), 3);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            [HEADERS, DATA],
            "no empty DATA frame after the body: {frames:?}"
        );
        let first_write = frames[0].2;
        assert!(
            frames
                .iter()
                .all(|f| f.2 == first_write && f.3 == first_write),
            "HEADERS and DATA went out in one write: {frames:?}"
        );
    }

    #[tokio::test]
    async fn a_streaming_body_goes_on_after_the_head_and_ends_with_its_last_chunk() {
        let (sender, mut peer, _) = connect().await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
        });
        let body = crate::body::boxed(http_body_util::StreamBody::new(chunks));
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        let answered = tokio::spawn(call(sender.send.clone(), request(body)));
        let first = peer.expect(DATA, 1).await;
        assert_eq!((first.payload.as_slice(), first.flags), (&b"one"[..], 0));
        // The answer head comes before the body is done; the body keeps flowing.
        peer.write(HEADERS, 0x4, 1, &[0x88]).await;
        let resp = answered.await.unwrap().expect("answer head");
        assert_eq!(resp.status(), 200);
        tx.send(Bytes::from_static(b"two")).await.unwrap();
        let second = peer.expect(DATA, 1).await;
        assert_eq!(second.payload, b"two");
        drop(tx);
        let last = peer.expect(DATA, 1).await;
        assert_eq!(
            (last.payload.len(), last.flags & END_STREAM),
            (0, END_STREAM)
        );
    }

    #[tokio::test]
    async fn a_call_given_up_before_its_answer_resets_the_stream() {
        let (sender, mut peer, _) = connect().await;
        let body = crate::body::boxed(http_body_util::StreamBody::new(
            futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>(),
        ));
        let waiting = tokio::spawn(call(sender.send.clone(), request(body)));
        peer.expect(HEADERS, 1).await;
        waiting.abort();
        let reset = peer.expect(RST_STREAM, 1).await;
        assert_eq!(
            reset.payload,
            u32::from(Reason::CANCEL).to_be_bytes(),
            "CANCEL"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_keepalive_ping_closes_the_connection() {
        let (sender, mut peer, _) = connect().await;
        let bound = Duration::from_secs(120);
        // Answered pings keep it open.
        for _ in 0..2 {
            let ping = tokio::time::timeout(bound, peer.expect(PING, 0))
                .await
                .expect("a ping within the keepalive interval");
            assert_eq!(ping.flags, 0);
            peer.write(PING, 1, 0, &ping.payload).await;
        }
        assert!(!sender.is_closed());
        // The next one goes unanswered.
        tokio::time::timeout(bound, peer.expect(PING, 0))
            .await
            .expect("another ping");
        for _ in 0..100 {
            if sender.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(sender.is_closed(), "closed once the ping went unanswered");
    }
}
