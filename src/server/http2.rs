//! litgate's HTTP/2 server, on the `h2` crate directly (the crate hyper's own HTTP/2 server is
//! built on). Each stream runs in a task of its own that calls the service, sends the answer's
//! head, and pipes its body and trailers out under the client's flow control; nothing sits
//! between the stream and the service but the request body's adapter. Against hyper's server
//! it saves a body adapter and an executor wrapper per call, the keepalive bookkeeping on every
//! frame (here a task of its own that looks at the connection's read count once per interval),
//! and the stall watch's task-local (each stream's progress is handed over directly).
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
    sync::oneshot,
};

use super::{conn::ConnState, stall::Progress, Limits};
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
    conn: Arc<ConnState>,
    /// `keepalive_interval` and `keepalive_timeout`.
    keepalive: (Duration, Duration),
    /// Told by the keepalive's task (once serving) that a PING went unanswered; dropping it
    /// ends that task.
    unanswered: Option<oneshot::Receiver<()>>,
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
            conn,
            keepalive: (limits.keepalive_interval, limits.keepalive_timeout),
            unanswered: None,
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
                    if let Some(pings) = conn.ping_pong() {
                        let (tx, rx) = oneshot::channel();
                        let (interval, timeout) = this.keepalive;
                        tokio::spawn(keepalive(pings, this.conn.clone(), interval, timeout, tx));
                        this.unanswered = Some(rx);
                    }
                    if this.close_pending {
                        conn.graceful_shutdown();
                    }
                    this.state = State::Serving(conn);
                }
                State::Serving(conn) => {
                    if let Some(unanswered) = &mut this.unanswered {
                        if let Poll::Ready(told) = Pin::new(unanswered).poll(cx) {
                            this.unanswered = None;
                            if told.is_ok() {
                                tracing::debug!("an HTTP/2 client did not answer a PING in time");
                                this.ping_unanswered = true;
                                conn.abrupt_shutdown(Reason::NO_ERROR);
                            }
                        }
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

/// HTTP/2 keepalive, in a task of its own so that the connection's task, polled several times
/// a call, polls no timer: a connection that read nothing for a whole interval is sent a PING,
/// and `unanswered` is told if the answer is not in within the timeout. It looks at the
/// connection's read count once per interval, so a silent client is pinged between one and two
/// intervals after its last bytes. It ends with the connection (`unanswered` dropped) or when
/// a PING fails (the connection is failing anyway).
async fn keepalive(
    mut pings: PingPong,
    conn: Arc<ConnState>,
    interval: Duration,
    timeout: Duration,
    mut unanswered: oneshot::Sender<()>,
) {
    let watch = async {
        let mut seen = conn.reads();
        loop {
            tokio::time::sleep(interval).await;
            let reads = conn.reads();
            if reads != seen {
                seen = reads;
                continue;
            }
            match tokio::time::timeout(timeout, pings.ping(Ping::opaque())).await {
                Ok(Ok(_)) => seen = conn.reads(),
                Ok(Err(_)) => return false,
                Err(_) => return true,
            }
        }
    };
    tokio::select! {
        _ = unanswered.closed() => {}
        timed_out = watch => {
            if timed_out {
                let _ = unanswered.send(());
            }
        }
    }
}

/// Sends `resp` on `respond`: its head, then its body and trailers as they come, as fast as
/// the client's window allows, telling `progress` (the stream's stall watch) when a chunk
/// waits for the client's credit. A client that resets the stream ends it; a body that fails
/// resets it (with the HTTP/2 reason the failure carries, if any, else INTERNAL_ERROR).
pub(super) async fn respond(
    mut respond: SendResponse<Bytes>,
    resp: http::Response<Body>,
    progress: Arc<Progress>,
) {
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
        Pipe::new(body, tx, Toward::Client)
            .reporting_to(progress)
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
