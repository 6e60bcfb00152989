//! Unix-socket transports with file-descriptor passing, on tokio's reactor.
//!
//! The reader, the writer and the fd sender share one socket. tokio's `UnixStream` reads and
//! writes through `&mut self` only, so each half goes through its readiness (`poll_*_ready`, then
//! `try_*`, which clears the readiness when the socket would block): the same thing tokio's own
//! `poll_read` does, and the only way to reach the socket for `sendmsg` with `SCM_RIGHTS`.

use futures::io::{AsyncRead, AsyncWrite};
use qmp_async::{SendFds, Transport};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

/// One handle on the shared socket; the reader, the writer and the fd sender each hold one.
struct Half(Arc<UnixStream>);

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

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let s = &*self.0;
        poll_io(cx, |cx| s.poll_read_ready(cx), || s.try_read(buf))
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &*self.0;
        poll_io(cx, |cx| s.poll_write_ready(cx), || s.try_write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The engine never half-closes: the socket closes when the last half is dropped.
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
        let s = &*self.0;
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
    let stream = Arc::new(stream);
    Transport::new(Half(stream.clone()), Half(stream.clone())).with_fd_sender(Half(stream))
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
