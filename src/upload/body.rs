//! Streaming a request body into an [`ChunkWriter`], with limits, sniffing and digests, in
//! bounded memory; and [`Comparer`], which compares a stream with stored bytes.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use super::digest::Sha256Check;
use crate::body::BoxError;
use crate::media::SNIFF_BYTES;
use crate::storage::{ByteStream, ChunkWriter, StorageError};

/// Why a body did not arrive whole.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// More than the limit was sent (the rest is not read).
    TooLarge,
    /// The client's body failed (disconnect, reset, malformed chunked encoding).
    Client(BoxError),
    /// A body limit in front of the service (tower-http's `RequestBodyLimitLayer`,
    /// `http_body_util::Limited`) cut the body off.
    Limited,
    /// The storage failed.
    Storage(StorageError),
    /// The first bytes broke the upload's conditions (422).
    Rejected(crate::error::ApiError),
}

impl PumpError {
    /// The answer to a body that did not arrive whole: 413 past `limit` or a body limit,
    /// 408/400 for the client's failure ([`client_failed`], naming `what`), the storage's or
    /// the conditions' own error otherwise.
    pub(crate) fn into_api(self, limit: u64, what: &str) -> crate::error::ApiError {
        match self {
            PumpError::TooLarge => super::too_large(limit, what),
            PumpError::Limited => super::cut_off(),
            PumpError::Client(e) => client_failed(&e, what),
            PumpError::Storage(e) => e.into(),
            PumpError::Rejected(e) => e,
        }
    }
}

/// The error of an [`IdleTimeout`] body: no byte arrived for the whole idle period.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body arrived for {0:?}")]
pub(crate) struct BodyIdle(pub Duration);

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyIdle`] when no frame arrives for `idle` (a
    /// slow-loris body: a client that opens an upload and then sends a byte a minute holds a
    /// connection, a writer and a staging file for as long as it likes otherwise).
    pub(crate) struct IdleTimeout<B> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<B: Body> IdleTimeout<B> {
    /// Wraps `inner`; `None` never times out.
    pub(crate) fn new(inner: B, idle: Option<Duration>) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.timer.set(None); // restarts at the next wait
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(idle) = *this.idle else {
            return Poll::Pending;
        };
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(idle)));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new(BodyIdle(idle))))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a body that failed on the client's side: 408 when it went idle, else 400
/// (`what` names it: "request body", "chunk's body").
pub(crate) fn client_failed(e: &BoxError, what: &str) -> crate::error::ApiError {
    use crate::error::{ApiError, ErrorKind};
    match e.downcast_ref::<BodyIdle>() {
        Some(idle) => ApiError::new(
            ErrorKind::RequestTimeout,
            format!(
                "no byte of the {what} arrived for {} s",
                idle.0.as_secs_f64()
            ),
        ),
        None => ApiError::new(
            ErrorKind::BadRequest,
            format!("the {what} ended early: {e}"),
        ),
    }
}

/// Compares what arrives with bytes already stored, frame by frame.
pub(crate) struct Comparer {
    stored: ByteStream,
    pending: Bytes,
    equal: bool,
}

impl Comparer {
    pub(crate) fn new(stored: ByteStream) -> Self {
        Comparer {
            stored,
            pending: Bytes::new(),
            equal: true,
        }
    }

    /// Compares the next bytes of the chunk with the next stored bytes.
    pub(crate) async fn feed(&mut self, mut data: &[u8]) {
        use futures_util::StreamExt;
        while self.equal && !data.is_empty() {
            if self.pending.is_empty() {
                match self.stored.next().await {
                    Some(Ok(b)) => self.pending = b,
                    _ => {
                        self.equal = false; // the stored range is shorter, or unreadable
                        return;
                    }
                }
                continue;
            }
            let n = self.pending.len().min(data.len());
            if self.pending[..n] != data[..n] {
                self.equal = false;
                return;
            }
            self.pending.advance(n);
            data = &data[n..];
        }
    }

    /// Whether everything fed so far matched (the caller checks the lengths).
    pub(crate) fn equal(&self) -> bool {
        self.equal
    }
}

/// A body's first [`SNIFF_BYTES`] bytes, collected by [`pump`].
///
/// While the body has come in one frame, the head is that frame itself (no copy: a small
/// upload's bytes are sniffed, probed and re-checked where they arrived). At a second frame
/// a head made by [`Head::copied`] turns into an owned copy (the conditions' head phase
/// needs the bytes as they arrive), so that a long upload does not hold the buffer of its
/// first frame (a connection's read buffer) until it ends; one made by
/// [`Head::first_frame`] lets the frame go and stays empty (the bytes are read back from the
/// storage when needed): a thousand slow uploads hold no 64 KiB copy each.
#[derive(Default)]
pub(crate) struct Head {
    /// The first frame's bytes (up to [`SNIFF_BYTES`]), while `owned` is empty.
    first: Bytes,
    /// The head once a second frame arrived.
    owned: Vec<u8>,
    /// Whether a second frame turns the head into a copy (else it ends the head).
    copy: bool,
    /// Given up at a second frame (not copying).
    dropped: bool,
}

impl Head {
    /// A head that keeps all of the first [`SNIFF_BYTES`], copying them past the first frame.
    pub(crate) fn copied() -> Head {
        Head {
            copy: true,
            ..Head::default()
        }
    }

    /// A head that keeps only a first frame that is the whole body.
    pub(crate) fn first_frame() -> Head {
        Head::default()
    }

    /// The bytes collected so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.owned.is_empty() {
            &self.first
        } else {
            &self.owned
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Takes what of `data` (the body's next frame) belongs to the head; true when this
    /// frame completed it.
    pub(crate) fn push(&mut self, data: &Bytes) -> bool {
        if self.dropped {
            return false;
        }
        let before = self.len();
        if before > 0 && !self.copy {
            self.first = Bytes::new();
            self.dropped = true;
            return false;
        }
        if before == SNIFF_BYTES {
            if self.owned.is_empty() {
                // Full from the first frame, and more is coming: let that frame's buffer go.
                self.owned = std::mem::take(&mut self.first).to_vec();
            }
            return false;
        }
        if before == 0 {
            self.first = data.slice(..SNIFF_BYTES.min(data.len()));
        } else {
            if self.owned.is_empty() {
                self.owned = Vec::with_capacity(SNIFF_BYTES.min(before + data.len()));
                self.owned
                    .extend_from_slice(&std::mem::take(&mut self.first));
            }
            let n = (SNIFF_BYTES - before).min(data.len());
            self.owned.extend_from_slice(&data[..n]);
        }
        self.len() == SNIFF_BYTES
    }

    /// Lets the first frame (a connection's read buffer) go while the body pauses: a copying
    /// head copies what it holds of it, another one gives up.
    pub(crate) fn let_go(&mut self) {
        if self.first.is_empty() {
            return;
        }
        let first = std::mem::take(&mut self.first);
        if self.copy {
            self.owned = first.to_vec();
        } else {
            self.dropped = true;
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        if self.owned.is_empty() {
            self.first
        } else {
            Bytes::from(self.owned)
        }
    }
}

/// What to do with the body besides writing it.
#[derive(Default)]
pub(crate) struct Taps<'a> {
    /// Collects the first [`SNIFF_BYTES`] bytes.
    pub sniff: Option<&'a mut Head>,
    /// Hashes everything.
    pub digest: Option<&'a mut Sha256Check>,
    /// Hashes everything with a protocol's checksum algorithm (tus `Upload-Checksum`).
    pub checksum: Option<&'a mut super::digest::Checksummer>,
    /// Called once with the sniffed head when [`SNIFF_BYTES`] have arrived (with `sniff`).
    pub on_head: Option<&'a mut HeadCheck<'a>>,
}

/// A check of a file's first bytes (the conditions' `Head` phase).
pub(crate) type HeadCheck<'a> = dyn FnMut(&[u8]) -> Result<(), crate::error::ApiError> + Send + 'a;

/// Streams `body` into `writer` (which must not be committed by this function), refusing more
/// than `limit` bytes. Returns the number of bytes written.
/// How long a body may pause before its writer writes out what it gathered ([`pump`]).
const IDLE_FLUSH: Duration = Duration::from_millis(250);

pub(crate) async fn pump<B>(
    body: B,
    writer: &mut dyn ChunkWriter,
    limit: u64,
    mut taps: Taps<'_>,
) -> Result<u64, PumpError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut written: u64 = 0;
    let received = crate::metrics::bytes_received();
    loop {
        // A body that pauses: the writer writes out what it gathered and gives its buffers
        // back meanwhile, and the head lets go of its first frame, so that slow uploads hold
        // no buffer (theirs or the connection's) while they wait.
        let frame = match tokio::time::timeout(IDLE_FLUSH, body.frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                if let Some(head) = taps.sniff.as_deref_mut() {
                    head.let_go();
                }
                writer.flush().await.map_err(PumpError::Storage)?;
                body.frame().await
            }
        };
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(client_error)?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        let data = data.copy_to_bytes(data.remaining());
        if data.is_empty() {
            continue;
        }
        received.increment(data.len() as u64);
        written = written.saturating_add(data.len() as u64);
        if written > limit {
            return Err(PumpError::TooLarge);
        }
        if let Some(sniff) = taps.sniff.as_deref_mut()
            && sniff.push(&data)
            && let Some(check) = taps.on_head.take()
        {
            check(sniff.as_slice()).map_err(PumpError::Rejected)?;
        }
        if let Some(digest) = taps.digest.as_deref_mut() {
            digest.update(&data);
        }
        if let Some(sum) = taps.checksum.as_deref_mut() {
            sum.update(&data);
        }
        writer.write(data).await.map_err(PumpError::Storage)?;
    }
    Ok(written)
}

/// A body error: [`PumpError::Limited`] when a body-limiting layer in front of the service
/// (tower-http's `RequestBodyLimitLayer`, `http_body_util::Limited`) cut it off, else the
/// client's failure.
fn client_error<E: Into<BoxError>>(e: E) -> PumpError {
    let e: BoxError = e.into();
    // Frameworks wrap body errors (axum's `Body` in `axum::Error`): look down the chain.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    let mut limited = false;
    while let Some(c) = cause {
        limited |= c.is::<http_body_util::LengthLimitError>();
        cause = c.source();
    }
    if limited {
        PumpError::Limited
    } else {
        PumpError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head is the first [`SNIFF_BYTES`] of the frames, however they are cut; it keeps
    /// the first frame itself only while that frame is the only one.
    #[test]
    fn head_collects_the_first_bytes_of_any_frames() {
        let body: Vec<u8> = (0..3 * SNIFF_BYTES as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let cases: [&[usize]; 7] = [
            &[],
            &[10],
            &[10, 20],
            &[SNIFF_BYTES],
            &[SNIFF_BYTES + 5, 7],
            &[SNIFF_BYTES - 1, 2, 3],
            &[1, SNIFF_BYTES, SNIFF_BYTES],
        ];
        for frames in cases {
            let mut head = Head::copied();
            let mut lone = Head::first_frame();
            let mut at = 0;
            for &len in frames {
                let frame = Bytes::copy_from_slice(&body[at..at + len]);
                assert_eq!(
                    lone.push(&frame),
                    at == 0 && len >= SNIFF_BYTES,
                    "{frames:?}"
                );
                let full = head.push(&frame);
                assert_eq!(
                    full,
                    at < SNIFF_BYTES && at + len >= SNIFF_BYTES,
                    "{frames:?}"
                );
                at += len;
            }
            let want = &body[..at.min(SNIFF_BYTES)];
            assert!(head.as_slice() == want, "{frames:?}");
            assert_eq!(head.owned.is_empty(), frames.len() <= 1, "{frames:?}");
            assert!(head.into_bytes() == want, "{frames:?}");
            let lone_want: &[u8] = if frames.len() == 1 { want } else { &[] };
            assert!(
                lone.into_bytes() == lone_want,
                "{frames:?}: only a lone frame is kept"
            );
        }
    }

    /// Through `pump`: a head that was full from the first frame lets that frame go at the
    /// second, and the conditions' check sees the head once.
    #[tokio::test]
    async fn pump_sniffs_and_checks_the_head_once() {
        use crate::storage::{FsStorage, Storage, StorageExt, UploadSpec};
        let dir = tempfile::tempdir().unwrap();
        let storage: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(FsStorage::new(dir.path()).unwrap());
        let path = crate::path::FilePath::new("h.bin").unwrap();
        let up = storage
            .open_upload(&path, UploadSpec::Single)
            .await
            .unwrap();
        let mut w = storage.writer(&up.id, 0).await.unwrap();
        let frames = [vec![1u8; SNIFF_BYTES + 10], vec![2u8; 100]];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(
            frames
                .iter()
                .map(|f| Ok::<_, std::io::Error>(Frame::data(Bytes::copy_from_slice(f)))),
        ));
        let mut head = Head::copied();
        let mut checks = 0;
        let mut check = |h: &[u8]| {
            checks += 1;
            assert!(h.len() == SNIFF_BYTES && h.iter().all(|&b| b == 1));
            Ok(())
        };
        let taps = Taps {
            sniff: Some(&mut head),
            digest: None,
            checksum: None,
            on_head: Some(&mut check),
        };
        let n = pump(body, &mut *w, u64::MAX, taps).await.unwrap();
        assert_eq!(n, SNIFF_BYTES as u64 + 110);
        assert_eq!(checks, 1);
        assert!(!head.owned.is_empty() && head.first.is_empty());
        assert_eq!(head.len(), SNIFF_BYTES);
        storage.abort(&up.id).await.unwrap();
    }

    /// A writer that counts what it is asked to do.
    #[derive(Default)]
    struct Counting {
        bytes: usize,
        flushes: usize,
    }

    #[async_trait::async_trait]
    impl ChunkWriter for Counting {
        async fn write(&mut self, data: Bytes) -> crate::storage::StorageResult<()> {
            self.bytes += data.len();
            Ok(())
        }
        async fn flush(&mut self) -> crate::storage::StorageResult<()> {
            self.flushes += 1;
            Ok(())
        }
        async fn commit(
            self: Box<Self>,
        ) -> crate::storage::StorageResult<Vec<std::ops::Range<u64>>> {
            Ok(Vec::new())
        }
    }

    /// A body that pauses longer than [`IDLE_FLUSH`] gets its writer flushed meanwhile (a
    /// slow upload holds no buffer while it waits); one that streams does not.
    #[tokio::test]
    async fn a_pausing_body_flushes_its_writer() {
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter([1u8, 2, 3]).then(|n| async move {
            if n == 3 {
                tokio::time::sleep(IDLE_FLUSH * 2).await;
            }
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![n; 10])))
        });
        let mut w = Counting::default();
        let n = pump(
            http_body_util::StreamBody::new(frames),
            &mut w,
            100,
            Taps::default(),
        )
        .await
        .unwrap();
        assert_eq!((n, w.bytes, w.flushes), (30, 30, 1));
    }

    /// While a body pauses its head lets go of the first frame (the connection's read
    /// buffer): a copying head keeps a copy of its bytes, the other gives up.
    #[tokio::test]
    async fn a_pausing_body_lets_its_first_frame_go() {
        use futures_util::StreamExt;
        for copy in [true, false] {
            let frames = futures_util::stream::iter([1u8, 2]).then(|n| async move {
                if n == 2 {
                    tokio::time::sleep(IDLE_FLUSH * 2).await;
                }
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![n; 10])))
            });
            let mut head = if copy {
                Head::copied()
            } else {
                Head::first_frame()
            };
            let taps = Taps {
                sniff: Some(&mut head),
                ..Taps::default()
            };
            let mut w = Counting::default();
            let body = http_body_util::StreamBody::new(frames);
            pump(body, &mut w, 100, taps).await.unwrap();
            assert!(head.first.is_empty(), "copy: {copy}");
            let want: Vec<u8> = if copy {
                [[1u8; 10], [2u8; 10]].concat()
            } else {
                Vec::new()
            };
            assert_eq!(head.as_slice(), &want[..], "copy: {copy}");
        }
    }
}
