//! Unix-socket transports with file-descriptor passing, on tokio's reactor.
//!
//! The read half reads through tokio's own `AsyncRead`, which also notices a short read and
//! waits for the reactor instead of trying the socket again (a `WouldBlock` read saved on every
//! reply). The writer and the fd sender share the write half: `sendmsg` with `SCM_RIGHTS` can
//! only go through the socket's write readiness (`poll_write_ready`, then `try_io`, which clears
//! the readiness when the socket would block), so plain writes take the same path.

use crate::compat::Compat;
use futures_io::AsyncWrite;
use qmp_async::{SendFds, Transport};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::Interest;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};

/// The socket's write half, shared by the writer and the fd sender.
struct Half(Arc<OwnedWriteHalf>);

impl Half {
    fn socket(&self) -> &UnixStream {
        (*self.0).as_ref()
    }
}

/// Retries `op` until the socket does not report `WouldBlock`, waiting for readiness first.
fn poll_io<T>(
    cx: &mut Context<'_>,
    mut poll_ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(poll_ready(cx))?;
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = self.socket();
        poll_io(cx, |cx| s.poll_write_ready(cx), || s.try_write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The engine never half-closes: the socket closes when both halves are dropped.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl SendFds for Half {
    fn poll_send_with_fds(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = self.socket();
        poll_io(
            cx,
            |cx| s.poll_write_ready(cx),
            || {
                s.try_io(Interest::WRITABLE, || {
                    qmp_fdpass::send_with_fds(s.as_fd(), bytes, fds)
                })
            },
        )
    }
}

/// A transport over a connected Unix socket, with file-descriptor passing.
pub(crate) fn transport(stream: UnixStream) -> Transport {
    let (reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    Transport::new(Compat(reader), Half(writer.clone())).with_fd_sender(Half(writer))
}

/// Connects to QEMU's monitor socket at `path`.
pub(crate) async fn connect(path: impl AsRef<Path>) -> io::Result<Transport> {
    Ok(transport(UnixStream::connect(path).await?))
}

/// Accepts one connection on `listener`.
pub(crate) async fn accept(listener: &UnixListener) -> io::Result<Transport> {
    let (stream, _) = listener.accept().await?;
    Ok(transport(stream))
}
