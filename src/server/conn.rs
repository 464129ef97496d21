//! One accepted connection, from the TLS handshake to its close, and the deadlines that bound
//! each part of its life: the handshake (`listen.handshake_timeout`); the greeting, i.e. the
//! HTTP/2 preface (the magic and the client's SETTINGS frame) or the first HTTP/1.1 request
//! head (`listen.header_read_timeout`); HTTP/2 idleness, no stream open
//! (`listen.idle_timeout`, then GOAWAY); and the drain at shutdown. The first bytes tell the
//! HTTP version ([`detect`]): HTTP/2 goes to litgate's own server (`http2`, which also keeps
//! the keepalive PINGs and their timeout), HTTP/1.1 to hyper's, which keeps the later request
//! heads (its `header_read_timeout`, which also ends idle keep-alive connections). Both keep
//! the header size limit. Responses are watched for stalled readers (`stall`).
//!
//! It owns the connection's I/O ([`ConnIo`]), which holds the connection's place in the counts
//! ([`Permit`]) for as long as the socket lives, an upgraded WebSocket's included.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::Either;
use h2::{server::SendResponse, RecvStream};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{
    connections::{Connections, Limits, Permit},
    http2::{self, Accept, H2Conn},
    stall, ConnectInfo, Served, Upgrades,
};
use crate::{body::boxed, upstream::RecvBody};

/// The future of one HTTP/1.1 request, run by the connection's task: boxed, so that what
/// hyper moves several times before the first poll is small. It reports to that task's stall
/// watch.
fn stream_future(
    service: impl Served,
    req: crate::body::Request,
    busy: Busy,
) -> Pin<Box<impl Future<Output = Result<http::Response<crate::body::Body>, Infallible>> + Send>> {
    Box::pin(async move {
        let progress = stall::current();
        let req = req.map(|b| stall::abandonable(b, progress.clone()));
        let resp = match service.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        Ok(resp.map(|b| stall::track(b, progress, busy)))
    })
}

/// What every connection of a listener shares.
pub(super) struct Listener {
    pub(super) h1: hyper::server::conn::http1::Builder,
    pub(super) h2: h2::server::Builder,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) upgrades: Upgrades,
    pub(super) conns: Connections,
}

impl Listener {
    /// Serves one connection with `service` until it ends, litgate closes it, or the drain
    /// is over.
    pub(super) async fn connection(
        self: Arc<Self>,
        service: impl Served,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: Permit,
        drain: CancellationToken,
    ) {
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = &self.tls else {
            return self.serve(service, tcp, peer, permit, &drain).await;
        };
        let limits = self.conns.limits();
        let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
        let tls = tokio::select! {
            // Connections still handshaking at shutdown are just dropped.
            _ = drain.cancelled() => return,
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    self.conns.metrics().closed("handshake_failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    self.conns.metrics().closed("handshake_timeout");
                    return;
                }
            },
        };
        self.serve(service, tls, peer, permit, &drain).await
    }

    async fn serve<I>(
        &self,
        service: impl Served,
        io: I,
        peer: SocketAddr,
        permit: Permit,
        drain: &CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.conns.limits();
        let metrics = self.conns.metrics();
        let greeting_deadline = Instant::now() + limits.header_read_timeout;
        let report = |reason| {
            tracing::debug!(%peer, reason, "closed a connection");
            metrics.closed(reason);
        };
        let state = Arc::new(ConnState::new());
        let mut io = ConnIo::new(io, state.clone(), permit);
        let version = tokio::select! {
            _ = drain.cancelled() => return,
            v = tokio::time::timeout_at(greeting_deadline, detect(&mut io)) => v,
        };
        let (http2, read) = match version {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "connection failed before its first request");
                return;
            }
            Err(_) => return report("header_timeout"),
        };
        io.read_again(read);
        let info = ConnectInfo { peer };
        if http2 {
            let streams = Streams {
                service,
                info,
                state: state.clone(),
                timeout: limits.stalled_stream_timeout,
                stalled: metrics.stalled(),
                since: Instant::now(),
            };
            let conn = H2Conn::new(io, &self.h2, limits, state.clone(), streams);
            return supervise(conn, &state, limits, greeting_deadline, drain, report).await;
        }
        let svc = {
            let (upgrades, state) = (self.upgrades.clone(), state.clone());
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                // Called as the request head arrives; the future runs in the connection's
                // task, whose stall watch it reports to.
                let busy = state.request();
                let mut req = req.map(boxed);
                req.extensions_mut().insert(info);
                req.extensions_mut().insert(upgrades.clone());
                stream_future(service.clone(), req, busy)
            })
        };
        let conn = self
            .h1
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let supervised = supervise(conn, &state, limits, greeting_deadline, drain, report);
        stall::watched(limits.stalled_stream_timeout, metrics.stalled(), supervised).await;
    }
}

/// What an HTTP/2 connection does with each stream: runs it in a task of its own, watched for
/// a stalled reader.
struct Streams<S> {
    service: S,
    info: ConnectInfo,
    state: Arc<ConnState>,
    timeout: Duration,
    stalled: Counter,
    /// When the connection started: the base of its streams' progress times.
    since: Instant,
}

impl<S: Served> Accept for Streams<S> {
    fn accept(&mut self, req: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let busy = self.state.request();
        let progress = Arc::new(stall::Progress::since(self.since));
        let mut req =
            req.map(|recv| stall::abandonable(RecvBody::new(recv), Some(progress.clone())));
        req.extensions_mut().insert(self.info);
        // The connection's own service is called when it is ready at once (litgate's stack
        // always is), sparing a clone of the stack per stream; one that is not gets a clone
        // that waits. Boxed here, before the task: the stack's future is large, and the
        // task's future is moved into place whole.
        let answer = match self
            .service
            .poll_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => Either::Left(Box::pin(self.service.call(req))),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Either::Right(Box::pin(self.service.clone().oneshot(req))),
        };
        let watched = progress.clone();
        let stream = async move {
            // The connection counts the stream as busy until its task ends.
            let _busy = busy;
            let answer = async {
                match answer.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            };
            let Some(resp) = http2::answer_or_reset(&mut respond, answer).await else {
                return;
            };
            http2::respond(respond, resp, progress).await;
        };
        tokio::spawn(stall::watch(
            watched,
            self.timeout,
            self.stalled.clone(),
            stream,
        ));
    }
}

/// Reads a connection's first bytes until they tell its HTTP version: `Some((true, read))` for
/// the HTTP/2 preface's magic, `Some((false, read))` for anything else (HTTP/1.1), with what
/// was read (for [`ConnIo::read_again`]); `None` if the client closed first.
async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Option<(bool, Vec<u8>)>> {
    let mut buf = [0; H2_MAGIC.len()];
    let mut len = 0;
    loop {
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
        if buf[..len] != H2_MAGIC[..len] {
            return Ok(Some((false, buf[..len].to_vec())));
        }
        if len == H2_MAGIC.len() {
            return Ok(Some((true, buf.to_vec())));
        }
    }
}

/// Drives `conn` until it ends, closing it when it breaks a deadline (`report` says which; the
/// client must have greeted by `greeting_deadline`) or gracefully when the drain starts.
async fn supervise<C>(
    conn: C,
    state: &ConnState,
    limits: &Limits,
    greeting_deadline: Instant,
    drain: &CancellationToken,
    report: impl Fn(&'static str),
) where
    C: Closable,
{
    tokio::pin!(conn);
    // Set once an idle HTTP/2 connection was sent GOAWAY: if the client neither closes it nor
    // opens a stream, it is dropped after one more header_read_timeout.
    let mut idle_closed = false;
    let mut draining = false;
    loop {
        // Requests coming and going do not wake this task (that would cost every call two more
        // polls of the connection): the state is read when the deadline in force comes, and a
        // busy connection is looked at again one idle_timeout later. So a deadline is never
        // early, and an idle one is met exactly, since the last request's end is recorded.
        let now = Instant::now();
        let due = if !state.greeted() {
            greeting_deadline
        } else if draining {
            // hyper ends the connection once its streams are done; nothing to time here.
            now + limits.idle_timeout
        } else if state.idle() {
            let grace = if idle_closed {
                limits.header_read_timeout
            } else {
                Duration::ZERO
            };
            state.idle_since() + limits.idle_timeout + grace
        } else {
            now + limits.idle_timeout
        };
        if due <= now {
            if !state.greeted() {
                return report("header_timeout");
            }
            if idle_closed {
                return;
            }
            idle_closed = true;
            // HTTP/2: GOAWAY, then hyper closes once the client has seen it. An idle HTTP/1.1
            // connection rarely gets here: hyper's header_read_timeout ends it first.
            conn.as_mut().close_gracefully();
            report("idle_timeout");
            continue;
        }
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                if let Some(reason) = conn.closed_because() {
                    report(reason);
                }
                return;
            }
            _ = drain.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().close_gracefully();
            }
            _ = tokio::time::sleep_until(due) => {}
        }
    }
}

/// A connection [`supervise`] can close gracefully: hyper's HTTP/1.1 one, litgate's HTTP/2
/// one ([`H2Conn`]), or a stand-in in tests.
pub(super) trait Closable: Future<Output = Result<(), Self::Failure>> {
    type Failure: std::fmt::Display;
    /// HTTP/2: GOAWAY, then close once the streams are done; HTTP/1.1: close after the answer.
    fn close_gracefully(self: Pin<&mut Self>);

    /// Once it has ended: the reason to count if it closed itself for a deadline of its own
    /// (an unanswered keepalive PING).
    fn closed_because(&self) -> Option<&'static str> {
        None
    }
}

impl<I, S> Closable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Failure = hyper::Error;

    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What the supervisor of a connection reads when its deadline comes: whether the client has
/// greeted, and the requests in flight (an HTTP/2 connection with none is idle). Nothing here
/// wakes the supervisor.
#[derive(Debug)]
pub(super) struct ConnState {
    base: Instant,
    /// Reads that returned bytes (HTTP/2 keepalive looks at it); only the connection's task
    /// writes it.
    reads: AtomicU64,
    greeted: AtomicBool,
    in_flight: AtomicUsize,
    /// Nanoseconds from `base` when the last request ended.
    idle_since: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            base: Instant::now(),
            reads: AtomicU64::new(0),
            greeted: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    /// Reads that returned bytes so far.
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn greeted(&self) -> bool {
        self.greeted.load(Ordering::Acquire)
    }

    fn greet(&self) {
        self.greeted.store(true, Ordering::Release);
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn idle_since(&self) -> Instant {
        self.base + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }

    /// A request arrived: the client has greeted, and the connection is busy until the
    /// returned guard (held by the response body) is dropped.
    fn request(self: &Arc<Self>) -> Busy {
        if !self.greeted() {
            self.greet();
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// A request in flight on a connection.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let state = &self.0;
        // Recorded before the count goes down, so that whoever sees no request in flight also
        // sees when the last one ended (never an older time, which would close it early).
        let now = u64::try_from(state.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        state.idle_since.fetch_max(now, Ordering::AcqRel);
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The HTTP/2 client preface: the magic, then a SETTINGS frame (RFC 9113, 3.4).
const H2_MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The magic and a frame header.
const H2_HEAD: usize = 24 + 9;
const SETTINGS: u8 = 0x4;

/// The connection's I/O: reads pass by a watch for the HTTP/2 preface until it is complete,
/// the bytes [`detect`] read are read again by the server that takes the connection, and the
/// connection's [`Permit`] lives as long as the socket.
struct ConnIo<I> {
    inner: I,
    state: Arc<ConnState>,
    preface: Preface,
    /// Bytes already read (and watched) that the next reads hand out again.
    again: Vec<u8>,
    _permit: Permit,
}

/// How far the HTTP/2 preface has come.
#[derive(Debug)]
enum Preface {
    /// The first bytes, up to the magic and the SETTINGS frame header.
    Head { buf: [u8; H2_HEAD], len: usize },
    /// The magic and the SETTINGS frame header are in; this much of its payload is still due.
    Settings(usize),
    /// Complete, or not HTTP/2 (an HTTP/1.1 client greets with its first request).
    Done,
}

impl<I> ConnIo<I> {
    fn new(inner: I, state: Arc<ConnState>, permit: Permit) -> ConnIo<I> {
        ConnIo {
            inner,
            state,
            preface: Preface::Head {
                buf: [0; H2_HEAD],
                len: 0,
            },
            again: Vec::new(),
            _permit: permit,
        }
    }

    /// Hands `read` out again before anything new is read.
    fn read_again(&mut self, read: Vec<u8>) {
        self.again = read;
    }

    /// Follows the preface through `read` (the bytes a read just returned).
    fn saw(&mut self, mut read: &[u8]) {
        if let Preface::Head { buf, len } = &mut self.preface {
            let take = read.len().min(H2_HEAD - *len);
            buf[*len..*len + take].copy_from_slice(&read[..take]);
            *len += take;
            read = &read[take..];
            let magic = (*len).min(H2_MAGIC.len());
            if buf[..magic] != H2_MAGIC[..magic] {
                self.preface = Preface::Done;
                return;
            }
            if *len < H2_HEAD {
                return;
            }
            let frame = &buf[H2_MAGIC.len()..];
            if frame[3] != SETTINGS {
                // Not a preface: hyper refuses the connection.
                self.preface = Preface::Done;
                return;
            }
            let payload =
                usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
            self.preface = Preface::Settings(payload);
        }
        if let Preface::Settings(due) = &mut self.preface {
            *due = due.saturating_sub(read.len());
            if *due == 0 {
                self.preface = Preface::Done;
                self.state.greet();
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ConnIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.again.is_empty() {
            let n = self.again.len().min(buf.remaining());
            buf.put_slice(&self.again[..n]);
            self.again.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // One writer: a plain load and store, no locked read-modify-write.
            let reads = &self.state.reads;
            reads.store(reads.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            if !matches!(self.preface, Preface::Done) {
                let this = &mut *self;
                this.saw(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ConnIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::connections::ConnMetrics;

    fn conn_io() -> ConnIo<tokio::io::Empty> {
        conn_io_over(tokio::io::empty())
    }

    fn conn_io_over<I>(io: I) -> ConnIo<I> {
        let conns = Connections::new(
            Limits::of(&crate::config::ListenConfig::default()),
            ConnMetrics::default(),
        );
        let permit = conns.admit(([192, 0, 2, 1], 1).into()).unwrap();
        ConnIo::new(io, Arc::new(ConnState::new()), permit)
    }

    fn preface(settings: &[u8]) -> Vec<u8> {
        let mut p = H2_MAGIC.to_vec();
        let len = settings.len();
        p.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, SETTINGS, 0]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(settings);
        p
    }

    #[test]
    fn the_preface_greets_once_the_settings_frame_is_in_whatever_the_chunks() {
        let p = preface(&[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0]);
        for split in 1..p.len() {
            let mut io = conn_io();
            io.saw(&p[..split]);
            assert!(!io.state.greeted(), "not greeted after {split} bytes");
            io.saw(&p[split..]);
            assert!(io.state.greeted(), "greeted after the split at {split}");
        }
        let mut io = conn_io();
        for b in &p {
            io.saw(std::slice::from_ref(b));
        }
        assert!(io.state.greeted(), "byte by byte");
        let mut empty_settings = conn_io();
        empty_settings.saw(&preface(&[]));
        assert!(empty_settings.state.greeted(), "an empty SETTINGS frame");
    }

    /// A connection that never ends by itself and counts the GOAWAYs it is asked to send.
    struct Held(Arc<AtomicUsize>);

    impl Future for Held {
        type Output = Result<(), String>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Pending
        }
    }

    impl Closable for Held {
        type Failure = String;

        fn close_gracefully(self: Pin<&mut Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_idle_and_an_idle_one_gets_its_whole_timeout() {
        let limits = Limits::of(&crate::config::ListenConfig {
            idle_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(2),
            ..Default::default()
        });
        let state = Arc::new(ConnState::new());
        let goaways = Arc::new(AtomicUsize::new(0));
        let drain = CancellationToken::new();
        let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (state, goaways, closed) = (state.clone(), goaways.clone(), closed.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + limits.header_read_timeout;
                supervise(Held(goaways), &state, &limits, deadline, &drain, |reason| {
                    closed.lock().unwrap().push(reason)
                })
                .await
            })
        };
        // Greeted at once; a call that lasts 35 s, four idle timeouts: no GOAWAY meanwhile.
        state.greet();
        let call = state.request();
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(goaways.load(Ordering::SeqCst), 0, "busy for 35 s");
        drop(call);
        // Idle from now: not one moment early, though the supervisor last looked at 30 s.
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(goaways.load(Ordering::SeqCst), 0, "idle for 9.9 s of 10");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(goaways.load(Ordering::SeqCst), 1, "idle for 10.1 s");
        assert_eq!(*closed.lock().unwrap(), ["idle_timeout"]);
        // The client neither closes nor opens a stream: dropped one header_read_timeout later.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert!(task.is_finished(), "dropped after the grace");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_greets_is_closed_at_the_greeting_deadline() {
        let limits = Limits::of(&crate::config::ListenConfig {
            header_read_timeout: Duration::from_secs(2),
            ..Default::default()
        });
        let state = Arc::new(ConnState::new());
        let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let drain = CancellationToken::new();
        let seen = closed.clone();
        let start = Instant::now();
        let supervised = supervise(
            Held(Arc::new(AtomicUsize::new(0))),
            &state,
            &limits,
            start + limits.header_read_timeout,
            &drain,
            move |reason| seen.lock().unwrap().push(reason),
        );
        supervised.await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(*closed.lock().unwrap(), ["header_timeout"]);
    }

    /// A reader that hands out `data` `chunk` bytes at a time, then the end.
    struct Trickle {
        data: Vec<u8>,
        chunk: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.chunk.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_version_is_told_from_the_first_bytes_whatever_the_chunks_and_they_are_read_again()
    {
        let h2 = preface(&[]);
        let h1 = b"GET /v1/sessions HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        for chunk in [1, 5, 24, 100] {
            for (data, http2) in [(&h2, true), (&h1, false)] {
                let mut io = conn_io_over(Trickle {
                    data: data.clone(),
                    chunk,
                });
                let (is_h2, read) = detect(&mut io).await.unwrap().expect("decided");
                assert_eq!(is_h2, http2, "chunks of {chunk}");
                // Everything comes out again, in order, and the preface was watched on the way
                // (an HTTP/2 client has greeted once its SETTINGS frame is in).
                io.read_again(read);
                let mut again = Vec::new();
                io.read_to_end(&mut again).await.unwrap();
                assert_eq!(&again, data, "chunks of {chunk}");
                assert_eq!(io.state.greeted(), http2, "chunks of {chunk}");
            }
        }
        // HTTP/1.1 is told at the first byte that is not the magic's.
        let io = Trickle {
            data: b"PRI * HTTP/1.1".to_vec(),
            chunk: 1,
        };
        let (is_h2, read) = detect(&mut conn_io_over(io)).await.unwrap().unwrap();
        assert!(!is_h2);
        assert_eq!(read, b"PRI * HTTP/1");
        // A client that closes before saying anything, or in the middle of the magic.
        for data in [Vec::new(), h2[..10].to_vec()] {
            let io = Trickle { data, chunk: 3 };
            assert!(detect(&mut conn_io_over(io)).await.unwrap().is_none());
        }
    }

    #[test]
    fn half_a_preface_or_http1_bytes_do_not_greet() {
        let mut half = conn_io();
        half.saw(&H2_MAGIC[..16]);
        assert!(!half.state.greeted());
        assert!(matches!(half.preface, Preface::Head { len: 16, .. }));
        let mut h1 = conn_io();
        h1.saw(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(!h1.state.greeted(), "HTTP/1.1 greets with a request");
        assert!(matches!(h1.preface, Preface::Done));
        let mut not_settings = conn_io();
        let mut p = preface(&[]);
        p[24 + 3] = 0x1;
        not_settings.saw(&p);
        assert!(!not_settings.state.greeted());
    }

    /// A service that is not ready the first time it is asked (it wakes the asker at once),
    /// and answers every call with the number of calls it has had.
    #[derive(Clone)]
    struct SlowToStart {
        asked: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    impl tower::Service<crate::body::Request> for SlowToStart {
        type Response = crate::body::Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<crate::body::Response, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.asked.swap(true, Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }

        fn call(&mut self, _req: crate::body::Request) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(Ok(http::Response::new(crate::body::full(n.to_string()))))
        }
    }

    #[tokio::test]
    async fn an_http2_stream_waits_for_a_service_that_is_not_ready_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Connections::new(
            Limits::of(&crate::config::ListenConfig::default()),
            ConnMetrics::default(),
        );
        let service = SlowToStart {
            asked: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve(
            listener,
            None,
            conns,
            service.clone(),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        for want in ["1", "2"] {
            let mut client = client.clone().ready().await.unwrap();
            let req = http::Request::post(format!("http://{addr}/x.Y/Z"))
                .body(())
                .unwrap();
            let (answer, _) = client.send_request(req, true).unwrap();
            let answered = tokio::time::timeout(Duration::from_secs(10), answer).await;
            let mut body = answered.expect("answered").unwrap().into_body();
            let data = body.data().await.unwrap().unwrap();
            assert_eq!(&data[..], want.as_bytes());
        }
        // The first call found the service not ready (and got a clone that waited); the
        // second was made on the connection's own, ready at once.
        assert!(service.asked.load(Ordering::SeqCst));
        assert_eq!(service.calls.load(Ordering::SeqCst), 2);
        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap();
        driver.abort();
    }
}
