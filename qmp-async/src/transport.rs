//! What the engine reads from and writes to: any `futures::io` reader and writer, plus an optional
//! hook to write bytes with file descriptors attached.

use futures_io::{AsyncRead, AsyncWrite};
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Writes bytes with file descriptors attached (`SCM_RIGHTS`, one `sendmsg`) on the connection's
/// socket. Implemented by the Unix-socket transports; see [`qmp_fdpass::send_with_fds`].
pub trait SendFds: Send {
    /// Like `poll_write`, but the descriptors travel with the first byte written. A short count
    /// means the rest is written without them, through the transport's ordinary writer.
    fn poll_send_with_fds(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>>;
}

/// A connection to QEMU as the engine sees it: a byte reader, a byte writer and, for Unix
/// sockets, a way to pass file descriptors.
///
/// The writer must not buffer (or must flush on `poll_flush`): the engine writes each command, or
/// a run of commands, with one write and flushes before it sends descriptors through
/// [`SendFds`], which bypasses the writer.
///
/// ```
/// # async fn f() -> std::io::Result<()> {
/// // Any futures-io pair works, e.g. a runtime's TCP stream split in two:
/// let (reader, writer) = futures::io::AsyncReadExt::split(futures::io::Cursor::new(Vec::<u8>::new()));
/// let transport = qmp_async::Transport::new(reader, writer);
/// # let _ = transport; Ok(()) }
/// ```
pub struct Transport {
    pub(crate) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) writer: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) fds: Option<Box<dyn SendFds>>,
}

impl Transport {
    /// A transport without file-descriptor passing.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Transport {
            reader: Box::new(reader),
            writer: Box::new(writer),
            fds: None,
        }
    }

    /// Adds file-descriptor passing; `sender` must write to the same socket as the writer.
    pub fn with_fd_sender(mut self, sender: impl SendFds + 'static) -> Self {
        self.fds = Some(Box::new(sender));
        self
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("fd_passing", &self.fds.is_some())
            .finish()
    }
}

/// What a driver holds once it has given its transport up to be closed: reads end at once
/// (EOF), writes are discarded (as `futures::io::empty()` and `futures::io::sink()` do).
pub(crate) struct Closed;

impl AsyncRead for Closed {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
}

impl AsyncWrite for Closed {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
