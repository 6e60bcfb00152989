//! Moving bytes: the driver task, and the read and write paths it shares with calls.
//!
//! The transport and its buffers live with the session behind the connection's lock. Reading is
//! done by whoever holds the read role (see [`crate::read_route`]): a call waiting for its reply
//! reads, feeds the session and routes what comes out itself, so its reply costs no hand-off from
//! the driver task (often another thread); when no call waits, the driver does, and never stops
//! reading while the connection is open (docs/PROTOCOL.md, rule 10). Both use the same code
//! ([`read_now`], [`Shared::route`]). Writing is done by whoever has something to send: a call
//! writes its command itself on its first poll, and the driver writes whatever a call could not
//! finish or the session released later (queued commands, flow control).
//!
//! Bytes to write are taken from the session into the connection's own buffer, never a call's,
//! so a call dropped at any point can never leave half a command on the wire (rule 11): the rest
//! is written by the driver.

use crate::shared::{Inner, Shared, Wakeups};
use crate::transport::Transport;
use crate::Runtime;
use bytes::Bytes;
use futures_core::future::BoxFuture;
use futures_io::{AsyncRead, AsyncWrite};
use qmp_proto::ReadBuffer;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Commands are gathered into one write up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// How many of the first bytes read are kept for [`crate::Client::debug_io`].
pub(crate) const DEBUG_KEPT: usize = 1024;
/// Rounds of reading and writing per pump before yielding to other tasks.
const ROUNDS_PER_PUMP: usize = 32;

/// A command carrying file descriptors, written after everything queued before it.
struct FdChunk {
    bytes: Bytes,
    fds: Vec<OwnedFd>,
    sent: usize,
}

/// The transport and its buffers.
pub(crate) struct Io {
    transport: Transport,
    /// 4 KiB while idle, up to 64 KiB while big messages arrive.
    read_buf: ReadBuffer,
    read_done: bool,
    out: Vec<u8>,
    out_pos: usize,
    fd_chunk: Option<FdChunk>,
    needs_flush: bool,
    /// Diagnostics: bytes read and written, reads that returned data, reads that found nothing.
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    /// The first [`DEBUG_KEPT`] bytes read, for diagnosing a stalled connect.
    pub(crate) first_bytes: Vec<u8>,
    pub(crate) reads: u64,
    pub(crate) reads_pending: u64,
}

impl Io {
    pub(crate) fn new(transport: Transport) -> Self {
        Io {
            transport,
            read_buf: ReadBuffer::new(),
            read_done: false,
            out: Vec::new(),
            out_pos: 0,
            fd_chunk: None,
            needs_flush: false,
            bytes_read: 0,
            bytes_written: 0,
            first_bytes: Vec::new(),
            reads: 0,
            reads_pending: 0,
        }
    }

    /// Bytes moved, reads made, and the first bytes read: for diagnosing a stalled connection.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} bytes written, {} bytes in {} reads ({} found nothing); first bytes read: {:?}",
            self.bytes_written,
            self.bytes_read,
            self.reads,
            self.reads_pending,
            String::from_utf8_lossy(&self.first_bytes)
        )
    }

    /// Takes the transport out (to close the socket), leaving one that reads and writes nothing.
    fn take_transport(&mut self) -> Transport {
        let closed = Transport::new(crate::transport::Closed, crate::transport::Closed);
        std::mem::replace(&mut self.transport, closed)
    }

    pub(crate) fn can_pass_fds(&self) -> bool {
        self.transport.fds.is_some()
    }
}

/// The driver's turn: reads and writes until both would block (the read route's waker and the
/// driver's are then registered with the reactor) or the connection closes. Wakers to call after
/// unlocking go to `wakeups`.
fn pump(s: &mut Shared, cx: &mut Context<'_>, wakeups: &mut Wakeups) {
    if s.closed() {
        return;
    }
    for _ in 0..ROUNDS_PER_PUMP {
        let read = read_side(s, wakeups);
        let wrote = write_side(s, cx, wakeups);
        if s.closed() || (!read && !wrote) {
            return;
        }
    }
    // More work is waiting: come back after others had a turn.
    cx.waker().wake_by_ref();
}

/// A waiting call's turn at reading (it holds the read role): reads and routes until the socket
/// has nothing more (the read route's waker is then registered), then writes what the session
/// released meanwhile (flow control), as [`write_now`] does.
pub(crate) fn read_now(s: &mut Shared, cx: &mut Context<'_>, wakeups: &mut Wakeups) {
    let mut rounds = 0;
    while read_side(s, wakeups) {
        rounds += 1;
        if rounds == ROUNDS_PER_PUMP {
            // More is coming: come back after others had a turn.
            cx.waker().wake_by_ref();
            break;
        }
    }
    write_now(s, cx, wakeups);
}

/// One read attempt, made with the read route's waker; true when something happened. Nothing is
/// tried while the route is armed: the last read found nothing and no readiness came since.
fn read_side(s: &mut Shared, wakeups: &mut Wakeups) -> bool {
    if s.io.read_done || s.read.armed() {
        return false;
    }
    let fired = s.read.fired();
    let io = &mut s.io;
    let mut cx = Context::from_waker(s.read.waker());
    match Pin::new(&mut io.transport.reader).poll_read(&mut cx, io.read_buf.space()) {
        Poll::Pending => {
            io.reads_pending += 1;
            s.read.read_pending(fired);
            return false;
        }
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return true,
        Poll::Ready(Ok(n)) if n > 0 => {
            io.reads += 1;
            io.bytes_read += n as u64;
            if io.first_bytes.len() < DEBUG_KEPT {
                let keep = n.min(DEBUG_KEPT - io.first_bytes.len());
                io.first_bytes.extend_from_slice(io.read_buf.filled(keep));
            }
            s.session.receive(io.read_buf.filled(n));
            io.read_buf.after_read(n, s.session.buffered() > 0);
        }
        Poll::Ready(end) => {
            // EOF, or an error such as ECONNRESET: both end the stream (rule 13). The session
            // delivers what was complete, then fails what is pending (after `quit`: a clean end).
            io.read_done = true;
            match end {
                Ok(_) => s.session.receive_eof(),
                Err(e) => s.session.read_failed(&e),
            }
        }
    }
    s.route(wakeups);
    true
}

/// A call's turn: writes what the session releases, as far as the socket takes it now. Whatever
/// is left (the socket is full) is the driver's to finish: it is woken.
pub(crate) fn write_now(s: &mut Shared, cx: &mut Context<'_>, wakeups: &mut Wakeups) {
    if s.closed() {
        return;
    }
    write_side(s, cx, wakeups);
    let io = &s.io;
    if s.closed() || io.out_pos < io.out.len() || io.fd_chunk.is_some() || io.needs_flush {
        wakeups.push(s.driver_waker.take());
    }
}

/// Writes what is queued; true when something happened.
fn write_side(s: &mut Shared, cx: &mut Context<'_>, wakeups: &mut Wakeups) -> bool {
    let mut progress = false;
    while !s.closed() {
        match write_step(s, cx) {
            Poll::Ready(Ok(true)) => progress = true,
            Poll::Ready(Ok(false)) | Poll::Pending => break,
            Poll::Ready(Err(e)) => {
                // A command cut off mid-way would desync the stream (rule 11): the connection
                // is given up, and every pending command fails with this error.
                s.session.write_failed(&e);
                s.route(wakeups);
                progress = true;
            }
        }
    }
    progress
}

/// Advances writing by one step: `Ok(true)` when it progressed, `Ok(false)` when idle.
fn write_step(s: &mut Shared, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
    let io = &mut s.io;
    let writer = &mut io.transport.writer;
    if io.out_pos < io.out.len() {
        let n = std::task::ready!(Pin::new(&mut *writer).poll_write(cx, &io.out[io.out_pos..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        io.out_pos += n;
        io.bytes_written += n as u64;
        if io.out_pos == io.out.len() {
            io.out.clear();
            io.out_pos = 0;
        }
        io.needs_flush = true;
        return Poll::Ready(Ok(true));
    }
    if io.needs_flush {
        std::task::ready!(Pin::new(&mut *writer).poll_flush(cx))?;
        io.needs_flush = false;
    }
    if let Some(chunk) = &mut io.fd_chunk {
        let n = if chunk.sent == 0 {
            let sender = io
                .transport
                .fds
                .as_mut()
                .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no fd passing"))?;
            let fds: Vec<BorrowedFd<'_>> = chunk.fds.iter().map(|f| f.as_fd()).collect();
            std::task::ready!(sender.poll_send_with_fds(cx, &chunk.bytes, &fds))?
        } else {
            std::task::ready!(Pin::new(&mut *writer).poll_write(cx, &chunk.bytes[chunk.sent..]))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        chunk.sent += n;
        io.bytes_written += n as u64;
        if chunk.sent == chunk.bytes.len() {
            // QEMU holds its own copies now; ours close here.
            io.fd_chunk = None;
        }
        io.needs_flush = true;
        return Poll::Ready(Ok(true));
    }
    let mut taken = false;
    while io.out.len() < WRITE_BATCH {
        let Some(t) = s.session.poll_transmit() else {
            break;
        };
        taken = true;
        if !t.fds.is_empty() {
            io.fd_chunk = Some(FdChunk {
                bytes: t.bytes,
                fds: t.fds,
                sent: 0,
            });
            break;
        }
        io.out.extend_from_slice(&t.bytes);
    }
    Poll::Ready(Ok(taken))
}

/// The connection's background task: the runtime crates spawn it on their executor. It reads
/// whenever no call is waiting to read for itself (so the socket is always read), writes what
/// calls could not finish, times out calls whose deadline passed (one
/// timer for the whole connection, set for the earliest deadline), and completes when the
/// connection closes: QEMU hung up, negotiation failed, or every
/// [`Client`](crate::Client) and [`EventStream`](crate::EventStream) was dropped. Dropped before
/// that (e.g. by a runtime shutting down), it closes the connection: calls fail, streams end.
#[must_use = "the connection does nothing unless its driver is spawned or awaited"]
pub struct Driver<R> {
    inner: Arc<Inner>,
    /// The timer for the earliest deadline, and when it fires.
    timer: Option<(Instant, BoxFuture<'static, ()>)>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Driver {
            inner,
            timer: None,
            _runtime: PhantomData,
        }
    }
}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let mut wakeups = Wakeups::default();
            let (done, earliest) = {
                let mut s = this.inner.lock();
                // Registered before looking for work, so work queued after this is not missed.
                if !s
                    .driver_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    s.driver_waker = Some(cx.waker().clone());
                }
                s.read.driver_polled(cx.waker());
                if s.users == 0 {
                    // Nobody can send or listen any more: close from our side.
                    s.session.close();
                    s.route(&mut wakeups);
                }
                pump(&mut s, cx, &mut wakeups);
                s.expire(Instant::now(), &mut wakeups);
                // Closed: the socket closes now, even while handles are alive.
                let done = s.closed().then(|| s.io.take_transport());
                let earliest = s.deadlines.first().map(|&(at, _)| at);
                // Only an earlier deadline needs a new timer: a timer that fires too early
                // (its call was answered) is set again for the next deadline then.
                if let Some(at) = earliest {
                    if this.timer.as_ref().is_none_or(|(t, _)| at < *t) {
                        this.timer =
                            Some((at, R::sleep(at.saturating_duration_since(Instant::now()))));
                    }
                }
                s.timer_at = this.timer.as_ref().map(|(t, _)| *t);
                (done.is_some(), earliest)
            };
            wakeups.wake();
            if done {
                return Poll::Ready(());
            }
            let Some((_, sleep)) = this.timer.as_mut() else {
                return Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.timer = None;
            if earliest.is_none() {
                this.inner.lock().timer_at = None;
                return Poll::Pending;
            }
        }
    }
}

/// A driver dropped before the connection closed (its runtime shut down, e.g. a tokio runtime
/// dropped with the task still on it, or it was never spawned) leaves nobody to read or write:
/// the connection closes here, so pending and later calls fail with
/// [`CloseReason::Local`](qmp_proto::CloseReason::Local) instead of waiting forever.
impl<R> Drop for Driver<R> {
    fn drop(&mut self) {
        let mut wakeups = Wakeups::default();
        let transport = {
            let mut s = self.inner.lock();
            if s.closed() {
                return;
            }
            s.session.close();
            s.route(&mut wakeups);
            s.io.take_transport()
        };
        drop(transport);
        wakeups.wake();
    }
}

impl<R> fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}
