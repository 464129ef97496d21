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
    Ping, PingPong, Reason, RecvStream,
};
use http_body::Body as _;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::{Instant, Sleep},
};

use super::{conn::ConnState, Limits};
use crate::{
    body::Body,
    upstream::{Pipe, Toward},
};

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
    /// Closed because a keepalive PING went unanswered.
    ping_unanswered: bool,
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
            ping_unanswered: false,
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
                    if !this.ping_unanswered && this.keepalive.poll(cx, this.conn.reads()) {
                        tracing::debug!("an HTTP/2 client did not answer a PING in time");
                        this.ping_unanswered = true;
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

    fn closed_because(&self) -> Option<&'static str> {
        self.ping_unanswered.then_some("keepalive_timeout")
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
        Pipe::new(body, tx, Toward::Client).await;
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
