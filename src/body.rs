//! The one request and response body type used everywhere in litgate, so the typed path (policy,
//! cache) and the raw passthrough share one upstream client. Bodies stream; nothing here buffers.
//! [`Body`] is a newtype (as axum's is) rather than an alias of a boxed trait object: generic
//! services over a named type keep `Send` bounds simple for the compiler.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// A boxed error, the error type of every body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type of every request and response inside litgate.
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

/// A request inside litgate.
pub type Request = http::Request<Body>;

/// A response inside litgate.
pub type Response = http::Response<Body>;

/// The future of a response or litgate's error: what the services inside the stacks return.
pub type ResponseFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response, crate::error::Error>> + Send>>;

impl Body {
    /// Boxes any body.
    pub fn new<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(body.map_err(Into::into).boxed_unsync())
    }
}

impl Default for Body {
    fn default() -> Self {
        empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Boxes any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(body)
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body(
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// An empty body.
pub fn empty() -> Body {
    Body(Empty::new().map_err(|never| match never {}).boxed_unsync())
}

/// A body of one data frame and optional trailers, with an exact size hint: an answer read to
/// the end, played again (cache hits, answers litgate had to read whole).
pub fn replay(data: Bytes, trailers: Option<http::HeaderMap>) -> Body {
    Body(
        Replay {
            data: Some(data),
            trailers,
        }
        .map_err(|never| match never {})
        .boxed_unsync(),
    )
}

struct Replay {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// What an observer sees of a body as it streams through.
#[derive(Debug)]
pub enum Event<'a> {
    /// A data frame.
    Data(&'a Bytes),
    /// The trailers (gRPC status lives here).
    Trailers(&'a http::HeaderMap),
    /// The body failed.
    Error,
    /// The body ended.
    End,
}

/// Passes `inner` through unchanged, showing each frame to `observe` on the way (metrics and
/// the rate limiter read the gRPC status this way). Dropping the body drops the observer, so
/// an observer can tell a cancelled stream by its own `Drop`.
pub fn observe<F>(inner: Body, observe: F) -> Body
where
    F: FnMut(Event<'_>) + Send + Unpin + 'static,
{
    Body(Observed { inner, observe }.boxed_unsync())
}

struct Observed<F> {
    inner: Body,
    observe: F,
}

impl<F: FnMut(Event<'_>) + Send + Unpin + 'static> http_body::Body for Observed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both fields are `Unpin` (`Body` is boxed; observers are plain closures).
        let this = Pin::into_inner(self);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    (this.observe)(Event::Data(d));
                } else if let Some(t) = frame.trailers_ref() {
                    (this.observe)(Event::Trailers(t));
                }
            }
            Poll::Ready(Some(Err(_))) => (this.observe)(Event::Error),
            Poll::Ready(None) => (this.observe)(Event::End),
            Poll::Pending => {}
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
