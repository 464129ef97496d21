//! Stalled responses (`listen.stalled_stream_timeout`): a response whose reader takes none of
//! the data waiting for it for that long is abandoned, releasing what it held.
//!
//! The servers pull a response body only when the client has room for more (HTTP/2: stream window,
//! one chunk beyond it at most, `upstream::Pipe`; HTTP/1.1: socket buffer, hyper), so "the client
//! takes nothing" shows as a body that handed out a data frame and has not been asked for the next
//! one. A subscription with nothing to send is the opposite (asked, and waiting on litd) and is
//! never touched. On HTTP/2 the pipe that sends the answer says so itself (a chunk it read waits
//! for the client's credit, [`Progress::handed_out`]); on HTTP/1.1 the answer's body is wrapped
//! ([`track`]). The body cannot act while nobody polls it, so the task that drives the response
//! watches it: each HTTP/2 stream's task ([`watch`], handed the stream's progress) and each
//! HTTP/1.1 connection's task ([`watched`]; its answers run there and find the progress through a
//! task-local). A stalled task ends: dropping an HTTP/2 stream's task makes h2 reset it (RST_STREAM
//! CANCEL); ending an HTTP/1.1 connection's task closes the connection. Either way the response
//! body is dropped (the upstream stream with it), and the request body, which the upstream client
//! may still be reading, fails so that its stream to litd is reset too.
//!
//! It never times a body that is waiting for data, and never buffers anything.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};

tokio::task_local! {
    /// The progress of the response the current task drives.
    static PROGRESS: Arc<Progress>;
}

/// Where one response stands: whether a data frame has been handed out and not followed by
/// another poll (and since when), and whether the watcher gave up on it.
#[derive(Debug)]
pub(crate) struct Progress {
    base: Instant,
    /// Nanoseconds from `base` (plus one) at which a frame was handed out and the body has not
    /// been polled since; 0 while the body is being polled or waits for data.
    waiting: AtomicU64,
    abandoned: AtomicBool,
    /// The task reading the request body, woken when the response is abandoned.
    request: AtomicWaker,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress::since(Instant::now())
    }

    /// A progress whose times count from `base`, an instant in the past (a connection's
    /// start: one clock read per connection rather than per stream).
    pub(crate) fn since(base: Instant) -> Progress {
        Progress {
            base,
            waiting: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            request: AtomicWaker::new(),
        }
    }

    /// A data frame was handed out and more of the body follows: the reader has not taken it
    /// yet.
    pub(crate) fn handed_out(&self) {
        let since = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.waiting.store(since + 1, Ordering::Relaxed);
    }

    /// The body is being read again (or waits for data): nothing waits for the reader.
    pub(crate) fn polled(&self) {
        self.waiting.store(0, Ordering::Relaxed);
    }

    /// Since when the reader has taken nothing, if data is waiting for it.
    fn waiting_since(&self) -> Option<Instant> {
        match self.waiting.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.request.wake();
    }
}

/// Runs `fut` (a task that drives responses) with a fresh [`Progress`] that its responses
/// report to ([`track`]), and ends it once a response has waited `timeout` for its reader,
/// counting that in `stalled`.
pub(crate) fn watched<F: Future>(
    timeout: Duration,
    stalled: Counter,
    fut: F,
) -> impl Future<Output = ()> {
    let progress = Arc::new(Progress::new());
    PROGRESS.scope(progress.clone(), watch(progress, timeout, stalled, fut))
}

/// Runs `fut` (a task whose responses report to `progress`: one HTTP/2 stream's), ending it
/// once a response has waited `timeout` for its reader, counting that in `stalled`.
pub(crate) fn watch<F: Future>(
    progress: Arc<Progress>,
    timeout: Duration,
    stalled: Counter,
    fut: F,
) -> impl Future<Output = ()> {
    Watched {
        fut,
        progress,
        timeout,
        sleep: None,
        stalled,
    }
}

pin_project_lite::pin_project! {
    struct Watched<F> {
        #[pin]
        fut: F,
        progress: Arc<Progress>,
        timeout: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
        stalled: Counter,
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(since) = this.progress.waiting_since() else {
            // Nothing is waiting for the reader; a timer left from before may still wake the
            // task once, which only costs a poll.
            return Poll::Pending;
        };
        let deadline = since + *this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The reader took nothing for `timeout`: give up on the response. Returning drops the
        // task's future, and with it the response.
        this.progress.abandon();
        this.stalled.inc();
        tracing::debug!(timeout = ?this.timeout, "reset a response whose reader stopped reading");
        Poll::Ready(())
    }
}

/// Wraps the body of the response to the request that `current` returned the progress of
/// (HTTP/1.1, whose answers hyper pulls), reporting to it, and holds `guard` until the body is
/// dropped. Outside a watched task, only holds `guard`.
pub(crate) fn track<G: Send + Unpin + 'static>(
    body: Body,
    progress: Option<Arc<Progress>>,
    guard: G,
) -> Body {
    Body::new(Tracked {
        inner: body,
        progress,
        _guard: guard,
    })
}

/// The progress of the task this is called in (the one that drives the response), if it is
/// [`watched`].
pub(crate) fn current() -> Option<Arc<Progress>> {
    PROGRESS.try_with(Arc::clone).ok()
}

struct Tracked<G> {
    inner: Body,
    progress: Option<Arc<Progress>>,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Tracked<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = Pin::into_inner(self);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(p) = &this.progress {
            let data_follows = matches!(&polled, Poll::Ready(Some(Ok(f))) if f.is_data())
                && !this.inner.is_end_stream();
            if data_follows {
                p.handed_out();
            } else {
                p.polled();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<G> Drop for Tracked<G> {
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.polled();
        }
    }
}

/// Wraps a request body so that it fails once its response is abandoned: the upstream client
/// may still be forwarding it, and a failed body makes it reset its stream to litd.
pub(crate) fn abandonable<B>(body: B, progress: Option<Arc<Progress>>) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    match progress {
        None => Body::new(body),
        Some(progress) => Body::new(Abandonable {
            inner: body,
            progress,
        }),
    }
}

/// The error a request body fails with once its response was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the response stalled (its reader took nothing for listen.stalled_stream_timeout)")]
pub(crate) struct Stalled;

struct Abandonable<B> {
    inner: B,
    progress: Arc<Progress>,
}

impl<B> http_body::Body for Abandonable<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = Pin::into_inner(self);
        this.progress.request.register(cx.waker());
        if this.progress.abandoned.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Stalled.into())));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;

    use super::*;

    const T: Duration = Duration::from_secs(60);

    /// A body of endless data frames, counting how often it was polled.
    struct Endless(Arc<AtomicUsize>);

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data")))))
        }
    }

    /// A body that never has anything to send (an idle subscription).
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    /// A task that reads `frames` frames of the response its `body` makes, then stops reading
    /// but keeps the response (a writer whose client stopped taking data).
    async fn stuck_writer(
        frames: usize,
        body: impl FnOnce() -> Body + Send + 'static,
        dropped: Arc<AtomicBool>,
    ) {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let mut body = track(body(), current(), Flag(dropped));
        for _ in 0..frames {
            let _ = body.frame().await;
        }
        std::future::pending::<()>().await;
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_is_given_up_after_the_timeout() {
        let polls = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let stalled = Counter::default();
        let p = polls.clone();
        let task = tokio::spawn(watched(
            T,
            stalled.clone(),
            stuck_writer(3, move || Body::new(Endless(p)), dropped.clone()),
        ));
        settle().await;
        tokio::time::advance(T - Duration::from_secs(1)).await;
        settle().await;
        assert!(!task.is_finished(), "not before the timeout");
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert!(task.is_finished(), "given up after the timeout");
        assert!(dropped.load(Ordering::SeqCst), "the response was dropped");
        assert_eq!(stalled.get(), 1);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_with_nothing_to_send_is_never_given_up() {
        let dropped = Arc::new(AtomicBool::new(false));
        let stalled = Counter::default();
        let task = tokio::spawn(watched(
            T,
            stalled.clone(),
            stuck_writer(0, || Body::new(Silent), dropped.clone()),
        ));
        // Polled once (waiting on the subscription), then quiet for a long time.
        let sub = tokio::spawn(watched(T, stalled.clone(), async move {
            let mut body = track(Body::new(Silent), current(), ());
            let _ = body.frame().await;
        }));
        settle().await;
        tokio::time::advance(T * 100).await;
        settle().await;
        assert!(!task.is_finished() && !sub.is_finished());
        assert!(!dropped.load(Ordering::SeqCst));
        assert_eq!(stalled.get(), 0);
        task.abort();
        sub.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_is_not_given_up() {
        let stalled = Counter::default();
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let task = tokio::spawn(watched(T, stalled.clone(), async move {
            let mut body = track(Body::new(Endless(p)), current(), ());
            loop {
                let _ = body.frame().await;
                tokio::time::sleep(T / 2).await;
            }
        }));
        for _ in 0..20 {
            tokio::time::advance(T / 2).await;
            settle().await;
        }
        assert!(!task.is_finished());
        assert!(polls.load(Ordering::SeqCst) >= 20);
        assert_eq!(stalled.get(), 0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_body_fails_once_the_response_is_abandoned() {
        let stalled = Counter::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _task = tokio::spawn(watched(T, stalled.clone(), async move {
            let _ = tx.send(current());
            let p = Arc::new(AtomicUsize::new(0));
            let mut body = track(Body::new(Endless(p)), current(), ());
            let _ = body.frame().await;
            std::future::pending::<()>().await;
        }));
        let progress = rx.await.unwrap();
        // The request body is read elsewhere (the upstream client's task) and is waiting.
        let reader = tokio::spawn(async move {
            let mut body = abandonable(Body::new(Silent), progress);
            body.frame().await.map(|f| f.is_err())
        });
        settle().await;
        assert!(!reader.is_finished());
        tokio::time::advance(T + Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(reader.await.unwrap(), Some(true), "fails with Stalled");
        assert_eq!(stalled.get(), 1);
    }
}
