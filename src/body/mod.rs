//! The response body type of every response this crate makes.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed error, the error type of [`ResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of the responses made by this crate: empty, a JSON document, or a file streamed
/// from [`Storage`](crate::storage::Storage) in bounded frames.
pub struct ResponseBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self::new(Empty::new().map_err(|never| match never {}))
    }

    /// A body of bytes already in memory (JSON documents).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(Full::new(bytes.into()).map_err(|never| match never {}))
    }

    /// Wraps any body.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ResponseBody {
            inner: body.map_err(Into::into).boxed_unsync(),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body that remembers whether it was read to its end, so that a response
    /// given without reading it can tell the client that the connection will close
    /// (`Connection: close`) instead of leaving it to find out on its next request; and how
    /// many bytes were read from it (the `bytes` field of the request's tracing span).
    pub(crate) struct Tracked<B> {
        #[pin]
        inner: B,
        seen: std::sync::Arc<BodySeen>,
    }
}

/// What a [`Tracked`] body saw: whether it ended, and how many bytes it yielded.
#[derive(Debug, Default)]
pub(crate) struct BodySeen {
    ended: std::sync::atomic::AtomicBool,
    bytes: std::sync::atomic::AtomicU64,
}

impl BodySeen {
    /// Whether the body was read to its end.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The data bytes read so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<B: Body> Tracked<B> {
    /// Wraps `inner`; the shared [`BodySeen`] follows what is read from it.
    pub(crate) fn new(inner: B) -> (Self, std::sync::Arc<BodySeen>) {
        let seen = std::sync::Arc::new(BodySeen::default());
        seen.ended
            .store(inner.is_end_stream(), std::sync::atomic::Ordering::Relaxed);
        (
            Tracked {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        use bytes::Buf;
        use std::sync::atomic::Ordering::Relaxed;
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.seen.ended.store(true, Relaxed),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen.bytes.fetch_add(data.remaining() as u64, Relaxed);
                }
            }
            _ => {}
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
