//! The HTTP/2 connections to litd, held directly: one **lane** per runtime (litgate runs one
//! `current_thread` runtime per configured thread), each lane a few connections whose
//! `SendRequest` handles a call sends on with no pool checkout and no connect future. A
//! connection's task is spawned on the runtime that dialled it, and a runtime only uses its own
//! lane, so a call never wakes another thread. Closed connections are dropped from the lane
//! and redialled on the next call.
//!
//! Flow control is set so that no caller can hold credit another needs: every stream's window
//! is [`STREAM_WINDOW`], the connection's is [`STREAMS_PER_CONNECTION`] times that, the
//! adaptive window is off (it would grow stream windows past that bound), and a connection
//! takes at most `STREAMS_PER_CONNECTION` calls at once. So the streams
//! of one connection can never hold more than its window, however many stop reading; a call
//! beyond that goes to another connection of the lane, up to [`CONNECTIONS_PER_LANE`].
//!
//! Connections speak HTTP/2 on the `h2` crate directly (see [`super::stream`]); each
//! connection's task also pings litd every [`KEEPALIVE_INTERVAL`] and closes the connection
//! when no answer comes within [`KEEPALIVE_TIMEOUT`], so a connection litd's host lost is
//! noticed without a call having to fail on it.
//!
//! This module never sees a header value.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use h2::client::SendRequest;

/// Each stream's receive window: what one call that stops reading can hold of a connection.
/// 128 KiB moves about a gigabyte a second per stream at a loopback round trip of ~100 µs,
/// far more than any litd answer needs.
pub(crate) const STREAM_WINDOW: u32 = 128 * 1024;
/// Calls one connection carries at once. Its window is this many stream windows, so stalled
/// streams can never take the credit of the others.
pub(crate) const STREAMS_PER_CONNECTION: usize = 64;
/// Connections one lane opens before it puts calls on the least busy one anyway; with every
/// call's window bounded, each holds at most `STREAMS_PER_CONNECTION * STREAM_WINDOW` (8 MiB).
pub(crate) const CONNECTIONS_PER_LANE: usize = 8;
/// The connection window.
const CONNECTION_WINDOW: u32 = STREAM_WINDOW * STREAMS_PER_CONNECTION as u32;
/// How often an open connection pings litd, idle or not.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest header block litgate accepts from litd (hyper's default for its clients).
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// What one stream may have buffered for sending (hyper's default for its clients).
const MAX_SEND_BUFFER: usize = 1024 * 1024;

thread_local! {
    /// The lane of the runtime on this thread; 0 on threads litgate did not start (tests,
    /// the caller's runtime of an in-process start).
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread use lane `index` (the runtime launcher calls it once per runtime thread).
pub(crate) fn set_lane(index: usize) {
    LANE.with(|l| l.set(index));
}

/// The lanes of one [`super::Upstream`].
pub(super) struct Lanes {
    lanes: Box<[Lane]>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Lane {
    conns: Mutex<Vec<Conn>>,
    /// Held while dialling, so calls that find no connection wait for one dial.
    dialling: tokio::sync::Mutex<()>,
}

/// One connection and the calls on it.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) id: u64,
    send: Sender,
    in_flight: Arc<AtomicUsize>,
}

/// The sending half of a connection, and whether its task has ended.
#[derive(Clone)]
pub(super) struct Sender {
    pub(super) send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A call's place on a connection: released when dropped (the answer's body ended or was
/// dropped, or the call failed).
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Conn {
    /// How many calls this connection takes at once. (litd's own `MAX_CONCURRENT_STREAMS`, if
    /// lower, makes h2 queue the excess on the connection; hyper does not show it to the sender.)
    fn capacity(&self) -> usize {
        STREAMS_PER_CONNECTION
    }

    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a place for one call and the handle to send it on.
    pub(super) fn take(&self) -> (SendRequest<Bytes>, Slot) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        (self.send.send.clone(), Slot(self.in_flight.clone()))
    }
}

impl Lanes {
    /// `count` lanes (one per runtime), none connected yet.
    pub(super) fn new(count: usize) -> Self {
        Lanes {
            lanes: (0..count.max(1)).map(|_| Lane::default()).collect(),
            next_id: AtomicU64::new(0),
        }
    }

    fn current(&self) -> &Lane {
        let i = LANE.with(Cell::get);
        &self.lanes[i % self.lanes.len()]
    }

    /// A live connection of this runtime's lane with room for one more call, other than
    /// `avoid`; when there is none and the lane may grow, `None` (the caller dials).
    pub(super) fn pick(&self, avoid: Option<u64>) -> Option<Conn> {
        let lane = self.current();
        let mut conns = lane.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| !c.send.is_closed());
        let usable = conns.iter().filter(|c| Some(c.id) != avoid);
        if let Some(c) = usable.clone().find(|c| c.load() < c.capacity()) {
            return Some(c.clone());
        }
        if conns.len() >= CONNECTIONS_PER_LANE {
            // Every connection is full: the least busy one takes it.
            return usable.min_by_key(|c| c.load()).cloned();
        }
        None
    }

    /// A connection for one call: [`Lanes::pick`], or a new one from `dial` (one dial at a
    /// time per lane; calls that arrive meanwhile wait for it and use it).
    pub(super) async fn get<F, Fut, E>(&self, avoid: Option<u64>, dial: F) -> Result<Conn, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Sender, E>>,
    {
        if let Some(c) = self.pick(avoid) {
            return Ok(c);
        }
        let lane = self.current();
        let _dialling = lane.dialling.lock().await;
        if let Some(c) = self.pick(avoid) {
            return Ok(c);
        }
        let send = dial().await?;
        let conn = Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            send,
            in_flight: Arc::default(),
        };
        lane.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn.clone());
        Ok(conn)
    }

    /// Connections open now, over every lane.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                let conns = l.conns.lock().unwrap_or_else(PoisonError::into_inner);
                conns.iter().filter(|c| !c.send.is_closed()).count()
            })
            .sum()
    }
}

/// The HTTP/2 settings of every connection to litd.
fn builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false);
    b
}

/// Runs the HTTP/2 handshake on `io` and spawns the connection's task on this runtime.
pub(super) async fn handshake<T>(io: T) -> Result<Sender, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut conn) = builder().handshake::<_, Bytes>(io).await?;
    let closed = Arc::new(AtomicBool::new(false));
    // The keepalive runs in a task of its own, so that the connection's task, polled on every
    // frame, does not poll a timer each time too. It tells the connection's task why it should
    // close, and ends when that task has ended.
    let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
    if let Some(pings) = conn.ping_pong() {
        tokio::spawn(async move {
            let mut lost_tx = lost_tx;
            tokio::select! {
                _ = lost_tx.closed() => {}
                why = keepalive(pings) => {
                    let _ = lost_tx.send(why);
                }
            }
        });
    }
    let ended = closed.clone();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            biased;
            r = &mut conn => r.map_err(|e| e.to_string()),
            Ok(why) = &mut lost => Err(why),
        };
        ended.store(true, Ordering::Release);
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "connection to litd ended");
        }
    });
    Ok(Sender { send, closed })
}

/// Pings litd every [`KEEPALIVE_INTERVAL`]; returns why the connection should close.
async fn keepalive(mut pings: h2::PingPong) -> String {
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keepalive ping failed: {e}"),
            Err(_) => return format!("no answer to a keepalive ping within {KEEPALIVE_TIMEOUT:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to an in-memory HTTP/2 server that answers nothing (calls stay open).
    async fn dial(count: &AtomicUsize) -> Result<Sender, h2::Error> {
        count.fetch_add(1, Ordering::SeqCst);
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| {
                std::future::pending::<
                    Result<http::Response<crate::body::Body>, std::convert::Infallible>,
                >()
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(server), svc)
                .await;
        });
        handshake(client).await
    }

    #[tokio::test]
    async fn calls_share_a_held_connection_until_it_is_full() {
        let lanes = Lanes::new(1);
        let dials = AtomicUsize::new(0);
        let mut slots = Vec::new();
        for _ in 0..STREAMS_PER_CONNECTION {
            let conn = lanes.get(None, || dial(&dials)).await.expect("dials");
            slots.push(conn.take().1);
        }
        assert_eq!(
            dials.load(Ordering::SeqCst),
            1,
            "one connection for a full load"
        );
        assert_eq!(lanes.open(), 1);

        // One more call than a connection takes: a second connection.
        let conn = lanes.get(None, || dial(&dials)).await.expect("dials");
        slots.push(conn.take().1);
        assert_eq!(dials.load(Ordering::SeqCst), 2);
        assert_eq!(lanes.open(), 2);

        // Calls that end give their place back: the next call needs no dial.
        slots.clear();
        let _ = lanes.get(None, || dial(&dials)).await.expect("reuses");
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_retry_avoids_the_connection_that_failed() {
        let lanes = Lanes::new(1);
        let dials = AtomicUsize::new(0);
        let first = lanes.get(None, || dial(&dials)).await.expect("dials");
        let second = lanes
            .get(Some(first.id), || dial(&dials))
            .await
            .expect("dials");
        assert_ne!(first.id, second.id);
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_lane_puts_calls_on_the_least_busy_connection() {
        let lanes = Lanes::new(1);
        let dials = AtomicUsize::new(0);
        let mut slots = Vec::new();
        for _ in 0..STREAMS_PER_CONNECTION * CONNECTIONS_PER_LANE {
            let conn = lanes.get(None, || dial(&dials)).await.expect("dials");
            slots.push(conn.take().1);
        }
        assert_eq!(dials.load(Ordering::SeqCst), CONNECTIONS_PER_LANE);
        let extra = lanes.get(None, || dial(&dials)).await.expect("picks");
        assert_eq!(
            dials.load(Ordering::SeqCst),
            CONNECTIONS_PER_LANE,
            "no ninth"
        );
        assert_eq!(extra.load(), STREAMS_PER_CONNECTION);
    }
}
