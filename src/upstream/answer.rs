//! litd's answer as it streams back to the caller: the body is passed through untouched, the
//! call's place on its connection is released when the body ends or is dropped, and when
//! litd's side breaks mid-answer (litd killed, the connection lost) a gRPC-family caller gets
//! `UNAVAILABLE` as the answer's last frame instead of a stream reset that its client would
//! report as `INTERNAL`, wherever the answer is between frames. REST and plain HTTP answers,
//! whose status went out with the head, end with the error as before.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use super::pool::Slot;
use crate::{
    body::BoxError,
    grpc::{reply::Ending, Protocol},
};

/// What the caller reads when litd's side broke mid-answer. Names no internals.
pub(super) const BROKEN: &str = "the connection to litd was lost";

/// litd's answer body on its way to the caller.
pub(super) struct Answer {
    inner: super::stream::RecvBody,
    _slot: Slot,
    ending: Option<Ending>,
    /// Set once litgate has written its own last frame.
    done: bool,
    errors: Counter,
}

impl Answer {
    pub(super) fn new(
        inner: super::stream::RecvBody,
        slot: Slot,
        protocol: Protocol,
        errors: Counter,
    ) -> Self {
        Answer {
            inner,
            _slot: slot,
            ending: Ending::new(protocol),
            done: false,
            errors,
        }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(ending), Some(d)) = (this.ending.as_mut(), frame.data_ref()) {
                    ending.feed(d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.errors.inc();
                tracing::debug!(error = %crate::error::chain(&e), "litd's answer broke off");
                let closing = this
                    .ending
                    .as_ref()
                    .and_then(|end| end.closing(tonic::Code::Unavailable, BROKEN));
                match closing {
                    Some(frame) => {
                        this.done = true;
                        Poll::Ready(Some(Ok(frame)))
                    }
                    None => Poll::Ready(Some(Err(e.into()))),
                }
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
