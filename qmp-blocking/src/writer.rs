//! The write half: one write call per command, descriptors on the same `sendmsg`, and who
//! writes when several callers submit at once.

use crate::shared::Shared;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, TryLockError};

/// The write half of a connection.
pub(crate) enum Writer {
    /// A Unix socket: the only one that can carry file descriptors.
    Unix(UnixStream),
    Tcp(TcpStream),
    Other(Box<dyn Write + Send>),
}

impl Writer {
    /// A writer that discards everything (the connection's write half after closing).
    pub(crate) fn closed() -> Self {
        Writer::Other(Box::new(io::sink()))
    }

    pub(crate) fn can_pass_fds(&self) -> bool {
        matches!(self, Writer::Unix(_))
    }

    /// Writes one command with one write call (plus more only if the OS takes less), attaching
    /// `fds` to the first call (rule 12).
    fn write_command(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
        if !fds.is_empty() {
            let Writer::Unix(s) = self else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "file descriptors need a Unix socket",
                ));
            };
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            let sent = qmp_fdpass::send_with_fds(s.as_fd(), bytes, &borrowed)?;
            // The descriptors travelled with the first byte; the rest goes without them.
            return s.write_all(&bytes[sent..]);
        }
        match self {
            Writer::Unix(s) => s.write_all(bytes),
            Writer::Tcp(s) => s.write_all(bytes),
            Writer::Other(w) => {
                w.write_all(bytes)?;
                w.flush()
            }
        }
    }
}

impl Shared {
    /// Writes what is queued. Whoever holds the writer lock writes everyone's commands in order;
    /// a caller that finds it taken leaves its command to the holder, who re-checks the queue
    /// after releasing the lock, so nothing is stranded.
    pub(crate) fn flush(self: &Arc<Self>) {
        loop {
            let mut writer = match self.writer.try_lock() {
                Ok(w) => w,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            loop {
                let next = self.lock().outgoing.pop_front();
                let Some(t) = next else { break };
                // Written whole or the connection is given up: a command cut off mid-way can
                // never desync the stream (rule 11). Our copies of its descriptors close here.
                if let Err(e) = writer.write_command(&t.bytes, &t.fds) {
                    drop(writer);
                    self.write_failed(&e);
                    return;
                }
            }
            drop(writer);
            if self.lock().outgoing.is_empty() {
                return;
            }
        }
    }

    fn write_failed(self: &Arc<Self>, e: &io::Error) {
        let mut inner = self.lock();
        inner.outgoing.clear();
        inner.session.write_failed(e);
        self.process(&mut inner);
        self.release(inner);
        self.wake_reader();
    }
}
