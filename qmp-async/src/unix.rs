//! Unix-socket transports with file-descriptor passing, on async-io's reactor (feature
//! `async-io`).
//!
//! smol and async-std both run on async-io's reactor, so this one implementation serves both:
//! waiting for the socket to become writable is the only readiness `sendmsg` with `SCM_RIGHTS`
//! needs, and the runtimes' own Unix stream types do not expose it.

use crate::transport::{SendFds, Transport};
use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// One handle on the shared socket; the writer and the fd sender each hold one.
struct Half(Arc<Async<UnixStream>>);

/// The reading handle. After a read that did not fill the buffer the socket is most likely
/// empty: the next read first waits for readiness instead of finding out with a `read` that fails
/// with `EAGAIN` (one syscall fewer per reply; async-io re-arms the descriptor when the wait is
/// registered, so bytes that came in between still wake it).
struct Reader {
    stream: Arc<Async<UnixStream>>,
    drained: bool,
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.drained {
            ready!(self.stream.poll_readable(cx))?;
            self.drained = false;
        }
        let n = ready!(Pin::new(&mut &*self.stream).poll_read(cx, buf))?;
        self.drained = n > 0 && n < buf.len();
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

impl SendFds for Half {
    fn poll_send_with_fds(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match qmp_fdpass::send_with_fds(self.0.get_ref().as_fd(), bytes, fds) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_writable(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

/// A transport over a connected, non-blocking Unix socket, with file-descriptor passing.
pub fn transport(stream: Async<UnixStream>) -> Transport {
    let stream = Arc::new(stream);
    let reader = Reader {
        stream: stream.clone(),
        drained: false,
    };
    Transport::new(reader, Half(stream.clone())).with_fd_sender(Half(stream))
}

/// Connects to QEMU's monitor socket at `path`.
pub async fn connect(path: impl AsRef<Path>) -> io::Result<Transport> {
    Ok(transport(Async::<UnixStream>::connect(path).await?))
}

/// Accepts one connection on `listener` (QEMU started with `-qmp unix:PATH` without
/// `server=on` connects to it).
pub async fn accept(listener: &Async<UnixListener>) -> io::Result<Transport> {
    let (stream, _) = listener.accept().await?;
    Ok(transport(stream))
}
