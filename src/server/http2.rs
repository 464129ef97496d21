//! litgate's HTTP/2 server, on the `h2` crate directly (the crate hyper's own HTTP/2 server is
//! built on). Each stream runs in a task of its own that calls the service, sends the answer's
//! head, and pipes its body and trailers out under the client's flow control; nothing sits
//! between the stream and the service but the request body's adapter. Against hyper's server
//! it saves a body adapter and an executor wrapper per call, the keepalive bookkeeping on every
//! frame (here a timer that looks at the connection's read count once per interval), and the
//! stall watch's task-local (each stream's [`Progress`] is handed over directly).
//!
//! Settings are hyper's defaults but for the windows, which are fixed: 1 MiB per stream and per
//! connection (hyper's, without the ping-based window estimation that would grow them), so one
//! connection never buffers more than 1 MiB of request data that litgate has not read.
//! Answers get no `date` header (litd's gRPC server sends none either).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{
    server::{Connection, Handshake, SendResponse},
    Ping, PingPong, Reason, RecvStream, SendStream,
};
use http_body::Body as _;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{Instant, Sleep},
};

use super::{conn::ConnState, Limits};
use crate::body::{Body, BoxError};

/// The stream and connection windows (see the module's docs).
const WINDOW: u32 = 1024 * 1024;
/// Streams one client may have open at once (hyper's default).
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// What h2 buffers of one stream's answer beyond the client's window (hyper's default).
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// The h2 settings of a listener's connections.
pub(super) fn builder(limits: &Limits) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid-reset bounds, as hyper sets them.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(1024));
    b
}

/// What a connection does with each stream it accepts (starts a task for it).
pub(super) trait Accept {
    fn accept(&mut self, req: http::Request<RecvStream>, respond: SendResponse<Bytes>);
}

/// One HTTP/2 connection: the handshake, then streams accepted as they come, until the client
/// closes it or a graceful close (GOAWAY) is done. Idle clients are sent PINGs; one that does
/// not answer in time is closed.
pub(super) struct H2Conn<I, A> {
    state: State<I>,
    accept: A,
    keepalive: KeepAlive,
    conn: Arc<ConnState>,
    /// A graceful close asked for during the handshake.
    close_pending: bool,
}

// Nothing of it is pinned: the h2 connection is `Unpin` with its I/O, and `accept` is only
// ever used through `&mut`.
impl<I: Unpin, A> Unpin for H2Conn<I, A> {}

enum State<I> {
    Handshaking(Handshake<I, Bytes>),
    Serving(Connection<I, Bytes>),
}

impl<I, A> H2Conn<I, A>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn new(
        io: I,
        builder: &h2::server::Builder,
        limits: &Limits,
        conn: Arc<ConnState>,
        accept: A,
    ) -> Self {
        H2Conn {
            state: State::Handshaking(builder.handshake(io)),
            accept,
            keepalive: KeepAlive::new(limits.keepalive_interval, limits.keepalive_timeout),
            conn,
            close_pending: false,
        }
    }
}

impl<I, A> Future for H2Conn<I, A>
where
    I: AsyncRead + AsyncWrite + Unpin,
    A: Accept,
{
    type Output = Result<(), h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Handshaking(hs) => {
                    let mut conn = ready!(Pin::new(hs).poll(cx))?;
                    this.keepalive.ping = conn.ping_pong();
                    if this.close_pending {
                        conn.graceful_shutdown();
                    }
                    this.state = State::Serving(conn);
                }
                State::Serving(conn) => {
                    if this.keepalive.poll(cx, this.conn.reads()) {
                        tracing::debug!("an HTTP/2 client did not answer a PING in time");
                        conn.abrupt_shutdown(Reason::NO_ERROR);
                    }
                    match ready!(conn.poll_accept(cx)) {
                        Some(Ok((req, respond))) => this.accept.accept(req, respond),
                        Some(Err(e)) => return Poll::Ready(Err(e)),
                        None => return Poll::Ready(Ok(())),
                    }
                }
            }
        }
    }
}

impl<I, A> super::conn::Closable for H2Conn<I, A>
where
    I: AsyncRead + AsyncWrite + Unpin,
    A: Accept,
{
    type Failure = h2::Error;

    fn close_gracefully(mut self: Pin<&mut Self>) {
        match &mut self.state {
            State::Handshaking(_) => self.close_pending = true,
            State::Serving(conn) => conn.graceful_shutdown(),
        }
    }
}

/// HTTP/2 keepalive: a connection that read nothing for a whole interval is sent a PING, and
/// closed if the answer is not in within the timeout. It looks at the connection's read count
/// when its timer fires, so calls cost it nothing; a silent client is pinged between one and
/// two intervals after its last bytes.
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    ping: Option<PingPong>,
    timer: Pin<Box<Sleep>>,
    /// The read count when the timer was last set.
    seen: u64,
    /// A PING was sent and its answer is due before the timer fires.
    awaiting: bool,
}

impl KeepAlive {
    fn new(interval: Duration, timeout: Duration) -> KeepAlive {
        KeepAlive {
            interval,
            timeout,
            ping: None,
            timer: Box::pin(tokio::time::sleep(interval)),
            seen: 0,
            awaiting: false,
        }
    }

    /// Whether the client failed to answer a PING in time.
    fn poll(&mut self, cx: &mut Context<'_>, reads: u64) -> bool {
        let Some(ping) = &mut self.ping else {
            return false;
        };
        loop {
            if self.awaiting {
                match ping.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting = false;
                        self.seen = reads;
                        self.timer.as_mut().reset(Instant::now() + self.interval);
                    }
                    // The connection failed; polling it reports why.
                    Poll::Ready(Err(_)) => return false,
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.awaiting {
                return true;
            }
            if reads != self.seen {
                self.seen = reads;
                self.timer.as_mut().reset(Instant::now() + self.interval);
                continue;
            }
            if ping.send_ping(Ping::opaque()).is_err() {
                return false;
            }
            self.awaiting = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
    }
}

/// Sends `resp` on `respond`: its head, then its body and trailers as they come, as fast as
/// the client's window allows. A client that resets the stream ends it; a body that fails
/// resets it (with the HTTP/2 reason the failure carries, if any, else INTERNAL_ERROR).
pub(super) async fn respond(mut respond: SendResponse<Bytes>, resp: http::Response<Body>) {
    let (mut head, body) = resp.into_parts();
    crate::headers::strip_hop_by_hop(&mut head.headers);
    let eos = body.is_end_stream();
    if !eos {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
    }
    let tx = match respond.send_response(http::Response::from_parts(head, ()), eos) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(error = %e, "an answer's head could not be sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !eos {
        Pipe {
            body,
            tx,
            sent: false,
            waiting: None,
        }
        .await;
    }
}

/// Waits for `answer` (the service's future), unless the client resets the stream first; then
/// the answer is dropped unfinished (and the call to litd with it).
pub(super) async fn answer_or_reset<F>(
    respond: &mut SendResponse<Bytes>,
    answer: F,
) -> Option<http::Response<Body>>
where
    F: Future<Output = http::Response<Body>>,
{
    let mut answer = std::pin::pin!(answer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(reason) => {
                tracing::debug!(?reason, "the client reset a stream before its answer");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// An answer's body, streamed onto its stream.
struct Pipe {
    body: Body,
    tx: SendStream<Bytes>,
    /// Whether a chunk has been handed to h2 (the first goes without waiting for credit).
    sent: bool,
    /// A chunk read from the body that waits for the client's credit, and whether it ends
    /// the body.
    waiting: Option<(Bytes, bool)>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if let Poll::Ready(reason) = this.tx.poll_reset(cx) {
                tracing::debug!(?reason, "the client reset a stream during its answer");
                return Poll::Ready(());
            }
            if let Some((data, eos)) = this.waiting.take() {
                // Read the body on only once the client can take what was read: a reader that
                // stops leaves the body waiting, which the stall watch sees.
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
                if this.tx.send_data(data, eos).is_err() || eos {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => {
                    // Ended without saying so on its last chunk or with trailers.
                    let _ = this.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    let reason = reason_of(&e);
                    tracing::debug!(error = %crate::error::chain(&*e), ?reason, "an answer's body failed; the stream is reset");
                    this.tx.send_reset(reason);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = this.body.is_end_stream();
                        if data.is_empty() && !eos {
                            continue;
                        }
                        if !this.sent || data.is_empty() {
                            // The first chunk (a unary answer's only one) goes at once, and h2
                            // holds it until the stream has credit: a call never holds more
                            // than that one chunk beyond the client's window. An empty last
                            // one needs no credit.
                            this.sent = true;
                            if this.tx.send_data(data, eos).is_err() || eos {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        this.tx.reserve_capacity(1);
                        this.waiting = Some((data, eos));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.tx.reserve_capacity(0);
                            if let Err(e) = this.tx.send_trailers(trailers) {
                                tracing::debug!(error = %e, "an answer's trailers could not be sent");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] h2::Error);

    #[test]
    fn a_failed_body_resets_with_the_reason_it_carries() {
        let cancel: BoxError = h2::Error::from(Reason::CANCEL).into();
        assert_eq!(reason_of(&cancel), Reason::CANCEL);
        let wrapped: BoxError = Wrapped(h2::Error::from(Reason::REFUSED_STREAM)).into();
        assert_eq!(reason_of(&wrapped), Reason::REFUSED_STREAM);
        let other: BoxError = "broken".into();
        assert_eq!(reason_of(&other), Reason::INTERNAL_ERROR);
    }
}
