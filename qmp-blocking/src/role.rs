//! The read role on a socket: who reads it now (leader/follower, issue 15).
//!
//! On a Unix or TCP socket, a caller waiting for its reply reads the socket itself, as the
//! *leader*: it feeds the session, routes other callers' replies to their slots and events to the
//! queue, and when its own reply arrives hands the role on to another waiting caller
//! ([`Shared::hand_on`]). A reply then reaches its caller with one read and no thread hop. The
//! reader thread reads whenever no caller leads: it takes the role back once nobody has taken it
//! for [`IDLE`], at once when something waits that is not a call (an event, a callback, the
//! handshake), and gives it up after any read that delivered a reply to a waiting caller, so that
//! caller's next call can lead. Exactly one holder reads at a time: the role (with the read buffer
//! and the socket's current receive timeout) is taken and put back under the connection's lock.
//!
//! A leader's call deadline holds through `SO_RCVTIMEO`: set so a read returns at most
//! [`SLACK`] after the deadline (plus the kernel's timer tick), and only when it must change, so
//! back-to-back calls with the same timeout set it once. Pipes, a spawned QEMU's stdio and
//! `connect_io` keep the reader thread alone (`reader.rs`): nothing bounds a read on them.

use crate::shared::{Inner, Shared};
use qmp_proto::ReadBuffer;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

/// How long the reader thread leaves the role to callers after one last took it.
pub(crate) const IDLE: Duration = Duration::from_millis(5);

/// How late a leader's read may return after its deadline, so the receive timeout need not be
/// set again for every call.
const SLACK: Duration = Duration::from_millis(1);

/// The read half of a socket, readable by whichever thread holds the role.
pub(crate) enum ReadHalf {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl ReadHalf {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Unix(s) => (&*s).read(buf),
            ReadHalf::Tcp(s) => (&*s).read(buf),
        }
    }

    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ReadHalf::Unix(s) => s.set_read_timeout(timeout),
            ReadHalf::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

/// What the holder of the role reads with.
pub(crate) struct Reading {
    buf: ReadBuffer,
    /// The socket's receive timeout as last set (`None`: reads block).
    timeout: Option<Duration>,
}

impl Reading {
    /// A fresh buffer; the socket's receive timeout as it starts (reads block).
    fn new() -> Self {
        Reading {
            buf: ReadBuffer::new(),
            timeout: None,
        }
    }
}

/// Who holds the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Nobody,
    ReaderThread,
    Caller,
}

/// The role's state, behind the connection's lock.
pub(crate) struct Role {
    pub(crate) holder: Holder,
    /// With the role while nobody holds it; with the holder otherwise.
    reading: Option<Reading>,
    /// Counts takes by callers: the reader thread sees from it whether the role was idle.
    epoch: u64,
    /// Something waits that is not a call: the reader thread should take the role now.
    wanted: bool,
}

impl Role {
    pub(crate) fn new() -> Self {
        Role {
            holder: Holder::Nobody,
            reading: Some(Reading::new()),
            epoch: 0,
            // The greeting is the reader thread's to read.
            wanted: true,
        }
    }

    fn take(&mut self, by: Holder) -> Reading {
        debug_assert_eq!(self.holder, Holder::Nobody);
        self.holder = by;
        if by == Holder::Caller {
            self.epoch += 1;
        }
        self.reading.take().unwrap_or_else(Reading::new)
    }

    fn put_back(&mut self, reading: Reading) {
        self.holder = Holder::Nobody;
        self.reading = Some(reading);
    }
}

/// The outcome of one read by the role's holder, fed to the session.
enum Fed {
    /// The session took bytes, EOF or an error (its outputs are ready to process).
    Input,
    /// The receive timeout expired, or the read was interrupted: nothing happened.
    Nothing,
}

impl Shared {
    /// Reads once with the role held (`reading`), the lock released meanwhile; feeds the session.
    /// `timeout`: what the read may wait (`None`: no limit).
    fn read_once<'a>(
        &'a self,
        inner: MutexGuard<'a, Inner>,
        half: &ReadHalf,
        reading: &mut Reading,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, Inner>, Fed) {
        drop(inner);
        if reading.timeout != timeout && half.set_timeout(timeout).is_ok() {
            reading.timeout = timeout;
        }
        let read = half.read(reading.buf.space());
        let mut inner = self.lock();
        if inner.closed() {
            return (inner, Fed::Nothing);
        }
        let fed = match read {
            Ok(0) => {
                inner.session.receive_eof();
                Fed::Input
            }
            Ok(n) => {
                inner.session.receive(reading.buf.filled(n));
                let pending = inner.session.buffered() > 0;
                reading.buf.after_read(n, pending);
                Fed::Input
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) =>
            {
                Fed::Nothing
            }
            // ECONNRESET and the like: the session decides what it means (after `quit`: clean).
            Err(e) => {
                inner.session.read_failed(&e);
                Fed::Input
            }
        };
        (inner, fed)
    }

    /// Tries to make the calling thread the leader. `Some` if it now holds the role.
    pub(crate) fn try_lead(&self, inner: &mut Inner) -> Option<Reading> {
        match (&self.read_half, inner.role.holder) {
            (Some(_), Holder::Nobody) => Some(inner.role.take(Holder::Caller)),
            _ => None,
        }
    }

    /// Leads until `done` says the leader's wait is over (its reply arrived, say) or `deadline`
    /// passes or the session closes; then hands the role on. Returns with the lock held.
    pub(crate) fn lead<'a>(
        self: &'a Arc<Self>,
        mut inner: MutexGuard<'a, Inner>,
        mut reading: Reading,
        deadline: Option<std::time::Instant>,
        done: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'a, Inner> {
        let Some(half) = &self.read_half else {
            inner.role.put_back(reading);
            return inner;
        };
        let mut write = false;
        while !inner.closed() && !done(&inner) {
            let want = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left < Duration::from_micros(1) {
                        break;
                    }
                    Some(left)
                }
            };
            // Keep the timeout set while it returns at most SLACK late and is not much shorter
            // than wanted (a leader on a long call would wake for nothing).
            let timeout = match (reading.timeout, want) {
                (Some(t), Some(w)) if t <= w + SLACK && (t * 2 >= w || t >= IDLE * 20) => Some(t),
                (Some(t), None) if t >= IDLE * 20 => Some(t),
                _ => want,
            };
            let fed;
            (inner, fed) = self.read_once(inner, half, &mut reading, timeout);
            if matches!(fed, Fed::Input) {
                self.process(&mut inner);
                if !inner.outgoing.is_empty() && !done(&inner) {
                    // Released commands (a queued one, the reply to a guest-agent sync) go out
                    // now; the others' replies are woken meanwhile.
                    self.release(inner);
                    self.flush();
                    inner = self.lock();
                }
                write = !inner.outgoing.is_empty();
            }
        }
        inner.role.put_back(reading);
        self.hand_on(&mut inner);
        if write {
            self.release(inner);
            self.flush();
            inner = self.lock();
        }
        inner
    }

    /// With the role free: offers it to one caller still waiting for its reply, or, if none
    /// waits but something else does (callbacks, event or state waiters), calls the reader
    /// thread. Otherwise leaves it free: the reader thread takes it after [`IDLE`].
    pub(crate) fn hand_on(&self, inner: &mut Inner) {
        if self.read_half.is_none() || inner.role.holder != Holder::Nobody {
            return;
        }
        if let Some(t) = inner.next_follower() {
            inner.to_wake.push(t);
        } else if inner.busy > 0 || inner.waiters > 0 || inner.closed() {
            self.summon_reader(inner);
        }
    }

    /// Asks the reader thread to take the role now if it is free (something waits that only a
    /// read can answer, and no call leads).
    pub(crate) fn summon_reader(&self, inner: &mut Inner) {
        if self.read_half.is_some() && inner.role.holder == Holder::Nobody && !inner.role.wanted {
            inner.role.wanted = true;
            self.role_changed.notify_one();
        }
    }
}

/// The reader thread of a socket: reads while no caller leads; runs until the session closes.
pub(crate) fn reader_loop(shared: Arc<Shared>) {
    let Some(half) = &shared.read_half else {
        return;
    };
    let mut inner = shared.lock();
    let mut seen = inner.role.epoch;
    let mut idle = false;
    while !inner.closed() {
        let role = &mut inner.role;
        let take = role.holder == Holder::Nobody && (role.wanted || (idle && role.epoch == seen));
        if !take {
            seen = role.epoch;
            let (guard, waited) = shared
                .role_changed
                .wait_timeout(inner, IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            inner = guard;
            idle = waited.timed_out();
            continue;
        }
        inner.role.wanted = false;
        let mut reading = inner.role.take(Holder::ReaderThread);
        loop {
            let fed;
            (inner, fed) = shared.read_once(inner, half, &mut reading, None);
            if matches!(fed, Fed::Nothing) {
                if inner.closed() {
                    break;
                }
                continue;
            }
            // EOF or a read error closes the session: its outputs tell every waiter.
            shared.process(&mut inner);
            if inner.closed() {
                break;
            }
            // A reply reached a waiting caller (its next call may lead), or a caller waits:
            // leave the role to the callers.
            let give_up = !inner.to_wake.is_empty() || inner.has_follower();
            let write = !inner.outgoing.is_empty();
            if give_up {
                inner.role.put_back(reading);
                shared.hand_on(&mut inner);
                seen = inner.role.epoch;
                idle = false;
                shared.release(inner);
                if write {
                    shared.flush();
                }
                inner = shared.lock();
                break;
            }
            shared.release(inner);
            if write {
                shared.flush();
            }
            inner = shared.lock();
            if inner.closed() {
                break;
            }
        }
        if inner.role.holder == Holder::ReaderThread {
            // Closed while reading (the role is only put back above).
            break;
        }
    }
    shared.release(inner);
}
