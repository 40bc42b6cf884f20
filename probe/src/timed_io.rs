//! A transport wrapper that notes when the request's last byte was handed to the socket and
//! when the first response byte came back. It sits above TLS, so TLS 1.3 session tickets and
//! other handshake records that arrive after the request never count as a response byte.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use vantage_runtime::sync::lock;

/// Byte timestamps of one exchange, shared between the wrapper and the prober.
#[derive(Debug, Default, Clone, Copy)]
pub struct ByteMarks {
    /// When the most recent write completed.
    pub last_write: Option<Instant>,
    /// When the first bytes arrived after that write.
    pub first_read_after_write: Option<Instant>,
}

impl ByteMarks {
    /// Request written to first response byte, when both are known.
    pub fn time_to_first_byte(&self) -> Option<std::time::Duration> {
        Some(
            self.first_read_after_write?
                .saturating_duration_since(self.last_write?),
        )
    }
}

pub type SharedMarks = Arc<Mutex<ByteMarks>>;

pub struct TimedIo<T> {
    inner: T,
    marks: SharedMarks,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T) -> (Self, SharedMarks) {
        let marks = SharedMarks::default();
        (
            TimedIo {
                inner,
                marks: marks.clone(),
            },
            marks,
        )
    }

    fn with_marks(&self, f: impl FnOnce(&mut ByteMarks)) {
        f(&mut lock(&self.marks));
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            self.with_marks(|m| {
                if m.last_write.is_some() && m.first_read_after_write.is_none() {
                    m.first_read_after_write = Some(now);
                }
            });
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.mark_write();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.mark_write();
        }
        poll
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

impl<T> TimedIo<T> {
    fn mark_write(&self) {
        let now = Instant::now();
        self.with_marks(|m| {
            m.last_write = Some(now);
            m.first_read_after_write = None;
        });
    }
}
