//! Retrying a call that litd provably never saw. A call is retried once, on another connection,
//! when litd refused its stream (`REFUSED_STREAM`), when litd's GOAWAY named a last stream below
//! it, or when its connection closed before the call was sent; anything else is reported as it
//! is. Retrying needs the request body again: [`Replay`] keeps what the first attempt read of
//! it, up to [`MAX_REPLAY`] bytes and only until litd answers ([`Kept::seal`]), and plays it to the
//! second attempt before reading on. A body larger than that is not retried.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::body::{Body, BoxError};

/// How much of a request body litgate keeps for a retry: every unary call litgate sees, and
/// the start of streaming ones.
pub(super) const MAX_REPLAY: usize = 64 * 1024;

/// Whether `e` says litd never processed the call: its stream was refused, it was above the
/// last stream litd's GOAWAY said it would process, or it was never sent.
pub(super) fn never_reached(failure: &super::stream::Failure) -> bool {
    use super::stream::Failure;
    match failure {
        // Nothing of the call was queued: the connection was closed or closing.
        Failure::NotSent(e) => e.is_io() || e.is_go_away() || e.is_remote(),
        // litd said it did not and will not process the stream.
        Failure::Sent(e) => {
            e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
        }
    }
}

struct Shared {
    /// The body still to be read (by whichever attempt is current).
    rest: Body,
    /// What has been read of it, while it fits in `MAX_REPLAY`.
    kept: Vec<Bytes>,
    kept_len: usize,
    /// Read more than `MAX_REPLAY`, or litd answered: no further attempt can be made.
    overflowed: bool,
    /// Kept chunks the current attempt has played (what it still needs is after them).
    played: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The attempt allowed to read; earlier ones get an error.
    current: u32,
}

/// What is kept of a request body for another attempt.
pub(super) struct Kept(Arc<Mutex<Shared>>);

/// One attempt's copy of a request body.
pub(super) struct Replay {
    shared: Arc<Mutex<Shared>>,
    attempt: u32,
    /// Kept chunks this attempt has played.
    pos: usize,
    trailers_sent: bool,
}

/// The first attempt's copy of `body`, and what is kept of it for another.
pub(super) fn keep(body: Body) -> (Kept, Replay) {
    let shared = Arc::new(Mutex::new(Shared {
        rest: body,
        kept: Vec::new(),
        kept_len: 0,
        overflowed: false,
        played: 0,
        trailers: None,
        ended: false,
        current: 0,
    }));
    let first = Replay {
        shared: shared.clone(),
        attempt: 0,
        pos: 0,
        trailers_sent: false,
    };
    (Kept(shared), first)
}

impl Kept {
    /// litd answered: no retry can follow, so nothing more is kept, and what the current
    /// attempt has already played is let go (a long stream does not hold its first bytes).
    pub(super) fn seal(&self) {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.overflowed = true;
        if s.played >= s.kept.len() {
            s.kept = Vec::new();
            s.played = 0;
        }
    }

    /// A copy for the next attempt, which plays what was read so far and then reads on;
    /// `None` when more was read than litgate keeps. Earlier copies stop working.
    pub(super) fn again(&self) -> Option<Replay> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if s.overflowed {
            return None;
        }
        s.current += 1;
        s.played = 0;
        Some(Replay {
            shared: self.0.clone(),
            attempt: s.current,
            pos: 0,
            trailers_sent: false,
        })
    }
}

/// A superseded attempt polled its body.
#[derive(Debug, thiserror::Error)]
#[error("the request body went to a retry of the call")]
struct Superseded;

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        if s.current != this.attempt {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(d) = s.kept.get(this.pos).cloned() {
            this.pos += 1;
            s.played = this.pos;
            if s.overflowed && this.pos == s.kept.len() {
                // Sealed while this attempt was still replaying: now it has it all.
                s.kept = Vec::new();
                s.played = 0;
            }
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let polled = loop {
            let polled = Pin::new(&mut s.rest).poll_frame(cx);
            // An empty DATA frame carries nothing, and sent on it would reach litd as a DATA
            // frame of its own without END_STREAM. HTTP/2 servers count those as a flood (h2
            // answers a few hundred of them on one connection with GOAWAY ENHANCE_YOUR_CALM,
            // failing the call in flight), and clients send one at the end of many bodies.
            match &polled {
                Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(Bytes::is_empty) => continue,
                _ => break polled,
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if !s.overflowed && s.kept_len + d.len() <= MAX_REPLAY {
                        s.kept_len += d.len();
                        s.kept.push(d.clone());
                        this.pos += 1;
                        s.played = this.pos;
                    } else {
                        s.overflowed = true;
                        s.kept = Vec::new();
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
            }
            Poll::Ready(None) => s.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.current == self.attempt
            && self.pos >= s.kept.len()
            && ((s.ended && (self.trailers_sent || s.trailers.is_none()))
                // Everything kept is played and the rest says it is over: so the last DATA
                // frame carries END_STREAM instead of an empty frame of its own following it.
                || (!s.ended && s.rest.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if self.attempt == 0 && s.kept.is_empty() && !s.ended {
            s.rest.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::BodyExt;

    use super::*;

    async fn read(body: Replay) -> (Bytes, Option<HeaderMap>) {
        let c = body.collect().await.expect("body reads");
        let t = c.trailers().cloned();
        (c.to_bytes(), t)
    }

    fn streamed(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        crate::body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_retry_plays_what_the_first_attempt_read_then_reads_on() {
        let mut t = HeaderMap::new();
        t.insert("x-end", "1".parse().unwrap());
        let (kept, mut first) = keep(streamed(&[b"ab", b"cd", b"ef"], Some(t)));
        // The first attempt reads one chunk, then fails.
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"ab"));
        let second = kept.again().expect("replayable");
        assert!(first.frame().await.unwrap().is_err(), "superseded");
        let (data, trailers) = read(second).await;
        assert_eq!(data, Bytes::from_static(b"abcdef"));
        assert_eq!(trailers.unwrap()["x-end"], "1");
    }

    #[tokio::test]
    async fn empty_data_frames_are_not_forwarded() {
        let (kept, mut first) = keep(streamed(&[b"", b"ab", b"", b"", b"cd", b""], None));
        let mut frames = Vec::new();
        while let Some(f) = first.frame().await {
            frames.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(
            frames,
            [Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]
        );
        let again = kept.again().unwrap();
        assert_eq!(read(again).await.0, Bytes::from_static(b"abcd"));
    }

    #[tokio::test]
    async fn a_whole_body_ends_with_its_last_chunk() {
        // A body known whole (the policy's rewritten request): its end shows as soon as its
        // data is read, so the last DATA frame can carry END_STREAM.
        let (kept, mut first) = keep(crate::body::full(Bytes::from_static(b"whole")));
        assert!(!first.is_end_stream());
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"whole"));
        assert!(first.is_end_stream());
        // A retry still gets every byte, and ends only after them.
        let mut again = kept.again().unwrap();
        assert!(!again.is_end_stream());
        let f = again.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"whole"));
        assert!(again.is_end_stream());
        // A streamed body ends only once it says so.
        let (_, mut streamed) = keep(streamed(&[b"ab", b"cd"], None));
        let _ = streamed.frame().await.unwrap().unwrap();
        assert!(!streamed.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_read_whole_replays_whole() {
        let (kept, first) = keep(streamed(&[b"hel", b"lo"], None));
        assert_eq!(read(first).await.0, Bytes::from_static(b"hello"));
        let again = kept.again().unwrap();
        assert_eq!(read(again).await.0, Bytes::from_static(b"hello"));
    }

    #[tokio::test]
    async fn once_litd_answered_nothing_is_kept() {
        let (kept, mut first) = keep(streamed(&[b"ab", b"cd"], None));
        let _ = first.frame().await.unwrap().unwrap();
        kept.seal();
        assert!(kept.0.lock().unwrap().kept.is_empty(), "let go");
        let _ = first.frame().await.unwrap().unwrap();
        assert!(kept.0.lock().unwrap().kept.is_empty(), "nothing new kept");
        assert!(kept.again().is_none());
    }

    #[tokio::test]
    async fn a_retry_sealed_mid_replay_still_gets_every_byte() {
        let (kept, mut first) = keep(streamed(&[b"ab", b"cd", b"ef"], None));
        let _ = first.frame().await.unwrap().unwrap();
        let _ = first.frame().await.unwrap().unwrap();
        let mut second = kept.again().unwrap();
        let f = second.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"ab"));
        kept.seal();
        let (rest, _) = read(second).await;
        assert_eq!(rest, Bytes::from_static(b"cdef"));
        assert!(kept.0.lock().unwrap().kept.is_empty());
    }

    #[tokio::test]
    async fn more_than_is_kept_is_not_retried() {
        static BIG: [u8; MAX_REPLAY + 1] = [7; MAX_REPLAY + 1];
        let (kept, mut first) = keep(streamed(&[&BIG], None));
        let _ = first.frame().await.unwrap().unwrap();
        assert!(kept.again().is_none());
    }
}
