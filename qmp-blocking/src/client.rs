//! The client: connection setup, the reader thread, commands, events, callbacks.
//!
//! One reader thread per connection owns the read half and feeds the [`Session`]; the session
//! lives behind a mutex shared with callers. A caller submits its command to the session and then
//! writes what `poll_transmit` hands out, under a separate writer lock, one write per command (with
//! its file descriptors, through `qmp-fdpass`). Replies wake the waiting caller through its slot;
//! events go to a bounded queue and to handlers on a worker pool. The reader never waits for a
//! consumer, so replies never stall behind unread events.

use crate::events::{EventQueue, Events, Handler, HandlerFn, HandlerId, HandlerPanic};
use crate::pool::{Pool, Submitted};
use crate::transport::{Connection, Waker, Writer};
use crate::Error;
use bytes::Bytes;
use qmp_proto::command::AddFdInfo;
use qmp_proto::{
    CloseReason, Command, CommandError, CommandId, Config, DecodeError, Event, ExecuteOptions,
    Greeting, Limits, Output, Session, State, SubmitError, Warning,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Child, ChildStderr, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a spawned QEMU that closed its monitor while connecting may take to exit before
/// the client gives up on reporting its exit status (and kills it).
const CHILD_EXIT_GRACE: Duration = Duration::from_millis(500);

/// How many warnings and handler panics are kept for `take_*` (the oldest go first).
const KEPT_REPORTS: usize = 64;

type Callback = Box<dyn FnOnce(Result<Value, Error>) + Send>;

/// Where a command's outcome goes.
enum Slot {
    /// A caller blocked in `execute`, parked until `result` is set.
    Waiting {
        thread: Thread,
        result: Option<Result<Value, CommandError>>,
    },
    /// `execute_async`: run on the pool.
    Callback { command: String, callback: Callback },
}

/// One command's bytes, ready to write.
struct Outgoing {
    id: CommandId,
    bytes: Bytes,
    fds: Vec<OwnedFd>,
}

struct Inner {
    session: Session,
    slots: HashMap<CommandId, Slot>,
    /// Descriptors of commands not yet written (the session says when, in `Transmit::fds`).
    fds: HashMap<CommandId, Vec<OwnedFd>>,
    outgoing: VecDeque<Outgoing>,
    events: EventQueue,
    handlers: Vec<Handler>,
    next_handler: u64,
    /// Async commands not yet called back, plus handler runs queued or running.
    busy: usize,
    /// Callers to unpark once the lock is released.
    to_wake: Vec<Thread>,
    /// Handler runs dropped because the handler backlog was full.
    dropped_handler_runs: u64,
    /// Threads waiting on `Shared::changed` (notify only when someone listens).
    waiters: usize,
    close_reason: Option<CloseReason>,
    /// What is known about how the connection ended.
    end_detail: Option<String>,
    /// A write failed: the connection is unusable; the reader ends the session.
    broken: bool,
    /// The client is closing: the reader thread stops.
    closing: bool,
    warnings: VecDeque<Warning>,
    warnings_total: u64,
    last_warning: Option<String>,
    panics: VecDeque<HandlerPanic>,
    panics_total: u64,
}

impl Inner {
    fn pull_transmits(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            let fds = if t.fds > 0 {
                self.fds.remove(&t.id).unwrap_or_default()
            } else {
                Vec::new()
            };
            self.outgoing.push_back(Outgoing {
                id: t.id,
                bytes: t.bytes,
                fds,
            });
        }
    }

    fn closed_error(&self, command: Option<&str>) -> Error {
        let reason = self
            .close_reason
            .clone()
            .unwrap_or(CloseReason::Disconnected);
        Error::from_close(
            command.map(str::to_string),
            &reason,
            self.end_detail.clone(),
        )
    }

    fn report<T>(list: &mut VecDeque<T>, item: T) {
        if list.len() >= KEPT_REPORTS {
            list.pop_front();
        }
        list.push_back(item);
    }
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    writer: Mutex<Writer>,
    waker: Waker,
    child: Mutex<Option<Child>>,
    exit_status: Mutex<Option<ExitStatus>>,
    pool: Pool,
    handler_backlog: usize,
    label: String,
    fds_supported: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drains the session's outputs: wakes callers, queues events, schedules callbacks.
    fn process(self: &Arc<Self>, inner: &mut Inner) {
        let mut notify = false;
        while let Some(output) = inner.session.poll_output() {
            match output {
                Output::Greeting(_) | Output::Ready => notify = true,
                Output::Reply { id, result } => self.on_reply(inner, id, result),
                Output::Event(event) => {
                    self.dispatch_event(inner, &event);
                    inner.events.push(event);
                    notify = true;
                }
                Output::Warning(w) => {
                    if let Warning::Decode(DecodeError::Truncated { len, .. }) = &w {
                        inner.end_detail.get_or_insert_with(|| {
                            format!("the last message was cut off after {len} bytes")
                        });
                    }
                    inner.last_warning = Some(w.to_string());
                    inner.warnings_total += 1;
                    Inner::report(&mut inner.warnings, w);
                }
                Output::Closed(reason) => {
                    inner.close_reason = Some(reason);
                    notify = true;
                }
            }
        }
        inner.pull_transmits();
        if notify {
            self.notify(inner);
        }
    }

    /// Unlocks, then wakes the callers whose replies arrived.
    fn release(&self, mut inner: MutexGuard<'_, Inner>) {
        let wake = std::mem::take(&mut inner.to_wake);
        drop(inner);
        for t in wake {
            t.unpark();
        }
    }

    fn notify(&self, inner: &Inner) {
        if inner.waiters > 0 {
            self.changed.notify_all();
        }
    }

    fn on_reply(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: CommandId,
        result: Result<Value, CommandError>,
    ) {
        if let Some(Slot::Waiting {
            thread,
            result: slot,
        }) = inner.slots.get_mut(&id)
        {
            *slot = Some(result);
            // Woken once the lock is released (`Shared::release`), so it does not wake only to
            // wait for the lock.
            inner.to_wake.push(thread.clone());
            return;
        }
        match inner.slots.remove(&id) {
            Some(Slot::Waiting { .. }) => {}
            Some(Slot::Callback { command, callback }) => {
                let result =
                    result.map_err(|e| Error::from_command(&command, e, inner.end_detail.clone()));
                let source = format!("callback of '{command}'");
                // `busy` was counted when the command was submitted.
                self.run_job(inner, source, false, move || callback(result));
            }
            None => {}
        }
    }

    fn dispatch_event(self: &Arc<Self>, inner: &mut Inner, event: &Event) {
        let handlers: Vec<HandlerFn> = inner
            .handlers
            .iter()
            .filter(|h| h.name.as_deref().is_none_or(|n| n == event.name))
            .map(|h| Arc::clone(&h.run))
            .collect();
        if handlers.is_empty() {
            return;
        }
        let event = event.clone();
        let source = format!("handler for event {}", event.name);
        self.run_job(inner, source, true, move || {
            for h in handlers {
                h(&event);
            }
        });
    }

    /// Runs `job` on the pool, catching a panic. `count`: an event-handler run, added to `busy`
    /// here and droppable behind a full backlog; otherwise a completion callback, counted in
    /// `busy` at submission and never dropped.
    fn run_job(
        self: &Arc<Self>,
        inner: &mut Inner,
        source: String,
        count: bool,
        job: impl FnOnce() + Send + 'static,
    ) {
        if count {
            inner.busy += 1;
        }
        let shared = Arc::clone(self);
        let job: crate::pool::Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job));
            let mut inner = shared.lock();
            if let Err(payload) = outcome {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".to_string());
                inner.panics_total += 1;
                Inner::report(&mut inner.panics, HandlerPanic { source, message });
            }
            inner.busy -= 1;
            shared.notify(&inner);
        });
        // Handler runs for events may be dropped behind a slow handler; callbacks never are.
        match self.pool.submit(job, count, self.handler_backlog) {
            Submitted::Queued => {}
            Submitted::QueuedDroppingOldest => {
                inner.busy -= 1;
                inner.dropped_handler_runs += 1;
            }
            Submitted::Refused => inner.busy -= 1,
        }
        if inner.busy == 0 {
            self.notify(inner);
        }
    }

    /// Writes what is queued. Whoever holds the writer lock writes everyone's commands in order;
    /// a caller that finds it taken leaves its command to the holder, who re-checks the queue
    /// after releasing the lock, so nothing is stranded.
    fn flush(self: &Arc<Self>) {
        loop {
            let mut writer = match self.writer.try_lock() {
                Ok(w) => w,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            loop {
                let next = self.lock().outgoing.pop_front();
                let Some(out) = next else { break };
                // Written whole or not at all from the session's view: a failed write ends the
                // connection, so a command cut off mid-way can never desync the stream.
                if let Err(e) = writer.write_command(&out.bytes, &out.fds) {
                    drop(writer);
                    self.write_failed(out.id, e);
                    return;
                }
            }
            drop(writer);
            if self.lock().outgoing.is_empty() {
                return;
            }
        }
    }

    fn write_failed(self: &Arc<Self>, id: CommandId, e: std::io::Error) {
        let mut inner = self.lock();
        inner
            .end_detail
            .get_or_insert_with(|| format!("writing to {} failed: {e}", self.label));
        inner.broken = true;
        inner.outgoing.clear();
        if inner.session.abandon(id) {
            self.on_reply(
                &mut inner,
                id,
                Err(CommandError::Closed(CloseReason::Disconnected)),
            );
        }
        if !self.waker.joinable() {
            // Nothing can wake the reader: end the session here.
            inner.session.receive_eof();
            self.process(&mut inner);
        }
        self.release(inner);
        self.wake_reader();
    }

    /// The exit status of a spawned QEMU, if it exits within `grace` (it closes its stdout a
    /// moment before it can be reaped). Kept for [`Client::exit_status`].
    fn child_exit(&self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let c = child.as_mut()?;
        let deadline = Instant::now() + grace;
        let status = loop {
            match c.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                _ => return None,
            }
        };
        *self
            .exit_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(status);
        Some(status)
    }

    fn wake_reader(&self) {
        match self.waker {
            Waker::Child => {
                if let Some(child) = self
                    .child
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    let _ = child.kill();
                }
            }
            ref w => w.wake(),
        }
    }

    /// Waits until `check` gives an answer, or until `deadline`.
    fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        waiting_for: impl FnOnce(&Inner) -> String,
        mut check: impl FnMut(&mut Inner) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let mut inner = self.lock();
        loop {
            if let Some(answer) = check(&mut inner) {
                return answer;
            }
            inner.waiters += 1;
            inner = match deadline {
                None => self
                    .changed
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        inner.waiters -= 1;
                        return Err(Error::Timeout {
                            waiting_for: waiting_for(&inner),
                            after: d - start.min(d),
                        });
                    }
                    self.changed
                        .wait_timeout(inner, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            inner.waiters -= 1;
        }
    }
}

fn read_loop(shared: Arc<Shared>, mut reader: Box<dyn Read + Send>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let read = reader.read(&mut buf);
        let mut inner = shared.lock();
        if inner.closing {
            break;
        }
        let end = match read {
            Ok(0) => true,
            Ok(n) => {
                inner.session.receive(&buf[..n]);
                inner.broken
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ECONNRESET right after `quit` is QEMU exiting with input unread: a clean end.
                inner
                    .end_detail
                    .get_or_insert_with(|| format!("reading from {}: {e}", shared.label));
                true
            }
        };
        if end {
            // Everything complete already went out above; now fail what is still pending.
            inner.session.receive_eof();
        }
        shared.process(&mut inner);
        let write = !inner.outgoing.is_empty();
        shared.release(inner);
        if end {
            break;
        }
        if write {
            shared.flush();
        }
    }
}

/// Ends the connection and its threads: fails pending commands, wakes and joins the reader, runs
/// queued callbacks, ends the pool, kills and reaps a spawned QEMU.
fn teardown(shared: &Arc<Shared>, reader: Option<JoinHandle<()>>) {
    {
        let mut inner = shared.lock();
        inner.closing = true;
        inner.session.close();
        shared.process(&mut inner);
        shared.notify(&inner);
        shared.release(inner);
    }
    shared.wake_reader();
    // Close our write half now, even if a reader thread that cannot be woken still holds `shared`.
    *shared.writer.lock().unwrap_or_else(PoisonError::into_inner) =
        Writer::Other(Box::new(std::io::sink()));
    if let Some(h) = reader {
        if shared.waker.joinable() && h.thread().id() != thread::current().id() {
            let _ = h.join();
        }
    }
    shared.pool.shutdown();
    let child = shared
        .child
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(mut child) = child {
        let _ = child.kill();
        if let Ok(status) = child.wait() {
            shared
                .exit_status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(status);
        }
    }
}

/// Options of one call: timeout, out-of-band, file descriptors. See [`Client::execute_with`].
///
/// ```no_run
/// use qmp_blocking::{CallOptions, Client};
/// use std::time::Duration;
/// # let client = Client::connect_unix("/tmp/qmp.sock")?;
/// let v = client.execute_with("query-status", (), CallOptions::new().timeout(Duration::from_secs(2)))?;
/// # let _ = v;
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions<'a> {
    timeout: Option<Option<Duration>>,
    oob: bool,
    fds: &'a [BorrowedFd<'a>],
}

impl<'a> CallOptions<'a> {
    /// The client's default timeout, in-band, no file descriptors.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Wait at most `timeout` for the reply (instead of the client's default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// Wait for the reply without a time limit.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// Send as `exec-oob` (needs [`Builder::oob`] and a server that offers `oob`).
    pub fn oob(mut self) -> Self {
        self.oob = true;
        self
    }

    /// Pass these descriptors with the command (SCM_RIGHTS; Unix sockets only). They are
    /// duplicated, so the caller keeps its own.
    pub fn fds(mut self, fds: &'a [BorrowedFd<'a>]) -> Self {
        self.fds = fds;
        self
    }
}

/// Configures and opens a [`Client`]; from [`Client::builder`].
///
/// ```no_run
/// use qmp_blocking::Client;
/// use std::time::Duration;
/// let client = Client::builder()
///     .timeout(Duration::from_secs(5))
///     .connect_timeout(Duration::from_secs(2))
///     .event_queue_capacity(256)
///     .connect_tcp("127.0.0.1:4444")?;
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    event_capacity: usize,
    handler_threads: usize,
    handler_backlog: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            handler_threads: 1,
            handler_backlog: 1024,
        }
    }
}

impl Builder {
    /// Default timeout of every call (30 s unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls wait for their reply without a time limit unless they set one.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Limit on connecting **and** on receiving the greeting and negotiating (10 s unless set).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many unread events are kept (1024 unless set). When full, the oldest is dropped and
    /// counted ([`Client::dropped_events`]). 0 keeps none (for handler-only use).
    pub fn event_queue_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Threads running event handlers and completion callbacks (1 unless set, so they run one at
    /// a time, in order). Started on first use.
    pub fn handler_threads(mut self, threads: usize) -> Self {
        self.handler_threads = threads.max(1);
        self
    }

    /// How many event-handler runs may wait for a handler thread (1024 unless set). When a slow
    /// handler lets more pile up, the oldest waiting run is dropped and counted
    /// ([`Stats::dropped_handler_runs`]); completion callbacks are never dropped.
    pub fn handler_backlog(mut self, runs: usize) -> Self {
        self.handler_backlog = runs.max(1);
        self
    }

    /// Ask for the `oob` capability, needed for `exec-oob` (off unless set).
    pub fn oob(mut self, enable: bool) -> Self {
        self.config.request_oob = enable;
        self
    }

    /// Limits on what is received and sent (qmp-proto's defaults unless set).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The whole session configuration (replaces [`Builder::oob`] and [`Builder::limits`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Connects to QEMU's `-qmp unix:PATH,server=on,wait=off`.
    pub fn connect_unix(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let conn = Connection::unix(path.as_ref())?;
        self.establish(conn, deadline)
    }

    /// Connects to QEMU's `-qmp tcp:HOST:PORT,server=on,wait=off`.
    pub fn connect_tcp(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let conn = Connection::tcp(addr, self.connect_timeout)?;
        self.establish(conn, deadline)
    }

    /// Uses a Unix socket that is already connected (file descriptors can be passed).
    pub fn connect_unix_stream(self, stream: UnixStream) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let label = match stream
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
        {
            Some(l) => l,
            None => "unix".to_string(),
        };
        let conn = Connection::unix_stream(stream, label)?;
        self.establish(conn, deadline)
    }

    /// Uses a TCP stream that is already connected.
    pub fn connect_tcp_stream(self, stream: TcpStream) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let label = match stream.peer_addr() {
            Ok(a) => format!("tcp:{a}"),
            Err(_) => "tcp".to_string(),
        };
        let conn = Connection::tcp_stream(stream, label)?;
        self.establish(conn, deadline)
    }

    /// Accepts one connection on `listener` from a QEMU started with `-qmp unix:PATH` (client
    /// mode: no `server=on`), waiting at most the connect timeout for it.
    pub fn accept_unix(self, listener: &UnixListener) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let conn = Connection::accept(listener, self.connect_timeout)?;
        self.establish(conn, deadline)
    }

    /// Starts QEMU with its monitor on stdio (the command must include `-qmp stdio`, or a
    /// `-chardev stdio` monitor). The client owns the process: closing it kills and reaps QEMU.
    /// stdin and stdout are taken over; set stderr as you like and, if piped, read it with
    /// [`Client::take_stderr`]. If QEMU exits before negotiation completes (a bad option, say),
    /// the [`Error::Disconnected`] detail gives its exit status, e.g. `QEMU exited (exit status: 1)`.
    pub fn spawn(self, command: std::process::Command) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let conn = Connection::spawn(command)?;
        self.establish(conn, deadline)
    }

    /// Connects to QEMU's `-qmp pipe:BASE`: QEMU reads the FIFO `BASE.in` and writes `BASE.out`
    /// (both must exist, e.g. made with `mkfifo`).
    pub fn connect_pipe(self, base: impl AsRef<Path>) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let conn = Connection::pipe(base.as_ref(), self.connect_timeout)?;
        self.establish(conn, deadline)
    }

    /// Speaks QMP over any reader and writer (e.g. the halves of a stream, via `try_clone`).
    /// Closing the client closes the writer; the reader thread ends when its next read returns,
    /// since nothing can interrupt an arbitrary reader.
    pub fn connect_io(
        self,
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        self.establish(Connection::io(Box::new(reader), Box::new(writer)), deadline)
    }

    fn establish(self, conn: Connection, deadline: Instant) -> Result<Client, Error> {
        let Connection {
            reader,
            writer,
            waker,
            child,
            stderr,
            label,
        } = conn;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                session: Session::new(self.config),
                slots: HashMap::new(),
                fds: HashMap::new(),
                outgoing: VecDeque::new(),
                events: EventQueue::new(self.event_capacity),
                handlers: Vec::new(),
                next_handler: 0,
                busy: 0,
                to_wake: Vec::new(),
                dropped_handler_runs: 0,
                waiters: 0,
                close_reason: None,
                end_detail: None,
                broken: false,
                closing: false,
                warnings: VecDeque::new(),
                warnings_total: 0,
                last_warning: None,
                panics: VecDeque::new(),
                panics_total: 0,
            }),
            changed: Condvar::new(),
            fds_supported: matches!(writer, Writer::Unix(_)),
            writer: Mutex::new(writer),
            waker,
            child: Mutex::new(child),
            exit_status: Mutex::new(None),
            pool: Pool::new(self.handler_threads),
            handler_backlog: self.handler_backlog,
            label,
        });
        let reader_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || read_loop(reader_shared, reader));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                teardown(&shared, None);
                return Err(Error::io("starting the reader thread", e));
            }
        };
        let label = shared.label.clone();
        let timeout = self.connect_timeout;
        let ready = shared.wait_until(
            Some(deadline),
            |inner| {
                if inner.session.state() == State::Negotiating {
                    format!("the reply to qmp_capabilities from {label}")
                } else {
                    format!(
                        "the QMP greeting from {label} (QEMU serves one client per monitor: is another client connected?)"
                    )
                }
            },
            |inner| match inner.session.state() {
                State::Ready => inner.session.greeting().cloned().map(Ok),
                State::Closed => {
                    if inner.end_detail.is_none() {
                        inner.end_detail = inner
                            .last_warning
                            .as_ref()
                            .map(|w| format!("before negotiation completed; last problem: {w}"));
                    }
                    Some(Err(inner.closed_error(None)))
                }
                _ => None,
            },
        );
        match ready {
            Ok(greeting) => Ok(Client {
                shared,
                reader: Mutex::new(Some(handle)),
                greeting,
                timeout: self.timeout,
                stderr: Mutex::new(stderr),
            }),
            Err(e) => {
                let e = match e {
                    Error::Timeout { waiting_for, .. } => Error::Timeout {
                        waiting_for,
                        after: timeout,
                    },
                    // A spawned QEMU that closes its stdout this early is exiting (a bad option,
                    // say): its exit status tells the caller more than the closed pipe does.
                    Error::Disconnected { command, detail } => Error::Disconnected {
                        command,
                        detail: match shared.child_exit(CHILD_EXIT_GRACE) {
                            Some(status) => Some(format!("QEMU exited ({status})")),
                            None => detail,
                        },
                    },
                    e => e,
                };
                teardown(&shared, Some(handle));
                Err(e)
            }
        }
    }
}

/// Counters of what was dropped or reported; from [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The session's counters (events, unmatched and discarded replies, decode errors...).
    pub session: qmp_proto::Stats,
    /// Events dropped because the queue was full.
    pub dropped_events: u64,
    /// Event-handler runs dropped because the handler backlog was full.
    pub dropped_handler_runs: u64,
    /// Warnings seen (garbage skipped, id-less errors, unknown ids...).
    pub warnings: u64,
    /// Handlers and callbacks that panicked.
    pub handler_panics: u64,
}

/// A blocking QMP client. See the [crate docs](crate) for an overview.
///
/// `Client` is `Send + Sync`: share it by reference (e.g. with `std::thread::scope`) or in an
/// `Arc`, and call it from many threads at once. Dropping it (or [`Client::close`]) fails pending
/// calls, ends its threads and, for a spawned QEMU, kills and reaps the process.
pub struct Client {
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
    greeting: Greeting,
    timeout: Option<Duration>,
    stderr: Mutex<Option<ChildStderr>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.shared.label)
            .field("version", &self.greeting.version)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A [`Builder`] with the defaults: 30 s call timeout, 10 s connect timeout, 1024 queued
    /// events, one handler thread, no `oob`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Connects to a Unix socket with the defaults.
    ///
    /// ```no_run
    /// let client = qmp_blocking::Client::connect_unix("/run/qemu/vm1.qmp")?;
    /// println!("QEMU {}", client.greeting().version);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Client, Error> {
        Builder::default().connect_unix(path)
    }

    /// Connects over TCP with the defaults.
    pub fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        Builder::default().connect_tcp(addr)
    }

    /// Starts QEMU with its monitor on stdio, with the defaults; see [`Builder::spawn`].
    ///
    /// ```no_run
    /// let mut qemu = std::process::Command::new("qemu-system-x86_64");
    /// qemu.args(["-M", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"]);
    /// let client = qmp_blocking::Client::spawn(qemu)?;
    /// client.quit()?;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn spawn(command: std::process::Command) -> Result<Client, Error> {
        Builder::default().spawn(command)
    }

    /// QEMU's greeting: version, package, capabilities.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Whether `oob` was negotiated (so `exec-oob` works).
    pub fn oob_enabled(&self) -> bool {
        self.shared.lock().session.oob_enabled()
    }

    /// The transport, e.g. `unix:/run/qmp.sock`, `tcp:127.0.0.1:4444`, `stdio:qemu-system-x86_64`.
    pub fn transport(&self) -> &str {
        &self.shared.label
    }

    /// False once the connection has ended (QEMU closed it, died, or the client closed).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().session.state() != State::Closed
    }

    /// Commands submitted and not yet answered.
    pub fn pending(&self) -> usize {
        self.shared.lock().session.outstanding()
    }

    /// The default timeout of calls.
    pub fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Runs a command and returns its `return` value. `args` is anything that serializes to a
    /// JSON object, or `()` for none.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let version = client.execute("query-version", ())?;
    /// println!("{}", version["qemu"]["major"]);
    /// client.execute("blockdev-add", json!({"driver": "null-co", "node-name": "n0"}))?;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn execute(&self, name: &str, args: impl Serialize) -> Result<Value, Error> {
        self.execute_with(name, args, CallOptions::new())
    }

    /// Like [`Client::execute`], waiting at most `timeout`.
    pub fn execute_timeout(
        &self,
        name: &str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.execute_with(name, args, CallOptions::new().timeout(timeout))
    }

    /// Runs a command as `exec-oob` (needs [`Builder::oob`]).
    pub fn execute_oob(&self, name: &str, args: impl Serialize) -> Result<Value, Error> {
        self.execute_with(name, args, CallOptions::new().oob())
    }

    /// Runs a command with options: timeout, `exec-oob`, file descriptors.
    ///
    /// On timeout the command is abandoned: its late reply is discarded and the connection stays
    /// usable. A command is never cut off mid-write (that would desync QEMU's parser): if QEMU
    /// does not read at all and the OS buffer is full, the write, and so the call, waits for it.
    pub fn execute_with(
        &self,
        name: &str,
        args: impl Serialize,
        options: CallOptions<'_>,
    ) -> Result<Value, Error> {
        let timeout = options.timeout.unwrap_or(self.timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        let slot = Slot::Waiting {
            thread: thread::current(),
            result: None,
        };
        let id = self.submit(name, &args, options.oob, options.fds, slot)?;
        self.wait_reply(id, name, deadline, timeout)
    }

    /// Runs a typed command and decodes its reply.
    ///
    /// ```no_run
    /// use qmp_blocking::command::QueryStatus;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let status = client.run(&QueryStatus)?;
    /// println!("running: {}, state: {}", status.running, status.status);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn run<C: Command>(&self, command: &C) -> Result<C::Output, Error> {
        self.run_with(command, CallOptions::new())
    }

    /// [`Client::run`] with options.
    pub fn run_with<C: Command>(
        &self,
        command: &C,
        options: CallOptions<'_>,
    ) -> Result<C::Output, Error> {
        let value = self.execute_with(C::NAME, command, options)?;
        C::decode_output(value).map_err(|e| Error::Protocol {
            command: Some(C::NAME.to_string()),
            problem: crate::ProtocolError::UnexpectedReply(e),
        })
    }

    /// Runs `query-WHAT` without arguments: `query("status")` is `query-status`. A name that
    /// already starts with `query-` is used as is.
    ///
    /// ```no_run
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let status = client.query("status")?;
    /// println!("{}", status["status"]);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn query(&self, what: &str) -> Result<Value, Error> {
        self.execute(&qmp_proto::command::query_command_name(what), ())
    }

    /// Sends a command without waiting; `callback` runs on a handler thread with the outcome
    /// (also when the connection ends or the client closes). Async commands have no timeout;
    /// [`Client::wait`] waits for all of them.
    ///
    /// ```no_run
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// client.execute_async("query-status", (), |result| match result {
    ///     Ok(status) => println!("status: {}", status["status"]),
    ///     Err(e) => eprintln!("query-status: {e}"),
    /// })?;
    /// client.wait()?;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn execute_async(
        &self,
        name: &str,
        args: impl Serialize,
        callback: impl FnOnce(Result<Value, Error>) + Send + 'static,
    ) -> Result<(), Error> {
        let slot = Slot::Callback {
            command: name.to_string(),
            callback: Box::new(callback),
        };
        self.submit(name, &args, false, &[], slot).map(drop)
    }

    /// Waits until every [`Client::execute_async`] command has been answered and its callback
    /// has run, and every handler run for events received so far has finished. Do not call it
    /// from a handler or callback: it would wait for itself.
    pub fn wait(&self) -> Result<(), Error> {
        self.wait_deadline(None)
    }

    /// [`Client::wait`], at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        self.shared.wait_until(
            deadline,
            |_| "callbacks and handlers to finish".to_string(),
            |inner| (inner.busy == 0).then_some(Ok(())),
        )
    }

    /// `getfd`: passes `fd` to QEMU under the name `fdname` (Unix sockets only).
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let file = std::fs::File::open("/dev/null").unwrap();
    /// client.getfd("null0", file.as_fd())?;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn getfd(&self, fdname: &str, fd: BorrowedFd<'_>) -> Result<(), Error> {
        let fds = [fd];
        let args = qmp_proto::command::Getfd {
            fdname: fdname.to_string(),
        };
        self.run_with(&args, CallOptions::new().fds(&fds)).map(drop)
    }

    /// `add-fd`: adds `fd` to fd set `fdset_id` (a new set when `None`), with an optional
    /// `opaque` string (Unix sockets only).
    pub fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        fdset_id: Option<i64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo, Error> {
        let fds = [fd];
        let args = qmp_proto::command::AddFd {
            fdset_id,
            opaque: opaque.map(str::to_string),
        };
        self.run_with(&args, CallOptions::new().fds(&fds))
    }

    /// Sends `quit` and waits (up to the default timeout) until QEMU has closed the connection
    /// and, if the client spawned it, exited. Events sent before the end (e.g. `SHUTDOWN`) stay
    /// readable.
    pub fn quit(&self) -> Result<(), Error> {
        match self.execute("quit", ()) {
            Ok(_) => {}
            // QEMU may exit before its reply is read; it has quit all the same.
            Err(e) if e.is_disconnected() => {}
            Err(e) => return Err(e),
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        self.shared.wait_until(
            deadline,
            |_| "QEMU to close the connection after 'quit'".to_string(),
            |inner| (inner.session.state() == State::Closed).then_some(Ok(())),
        )?;
        let mut child = self
            .shared
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = child.as_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(status)) => {
                        *self
                            .shared
                            .exit_status
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(status);
                        break;
                    }
                    Ok(None) if deadline.is_none_or(|d| Instant::now() < d) => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Ok(None) => {
                        return Err(Error::Timeout {
                            waiting_for: "QEMU to exit after 'quit'".to_string(),
                            after: self.timeout.unwrap_or_default(),
                        })
                    }
                    Err(e) => return Err(Error::io("waiting for QEMU to exit", e)),
                }
            }
        }
        Ok(())
    }

    /// The exit status of a spawned QEMU, once it has exited (after [`Client::quit`]).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self
            .shared
            .exit_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The process id of a spawned QEMU.
    pub fn child_id(&self) -> Option<u32> {
        self.shared
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Child::id)
    }

    /// A spawned QEMU's stderr, if its command had `stderr(Stdio::piped())`. Read it from another
    /// thread while the client runs, or after [`Client::close`].
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The next event, waiting at most `timeout`. Events that arrived while commands waited are
    /// kept, in order. Errors: [`Error::Timeout`], or [`Error::Disconnected`] once the connection
    /// has closed and no event is left.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// client.execute("stop", ())?;
    /// let event = client.next_event(Duration::from_secs(5))?;
    /// assert_eq!(event.name, "STOP");
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn next_event(&self, timeout: Duration) -> Result<Event, Error> {
        self.next_event_until(Some(Instant::now() + timeout))
    }

    pub(crate) fn next_event_until(&self, deadline: Option<Instant>) -> Result<Event, Error> {
        self.shared.wait_until(
            deadline,
            |_| "an event".to_string(),
            |inner| match inner.events.pop() {
                Some(e) => Some(Ok(e)),
                None if inner.session.state() == State::Closed => {
                    Some(Err(inner.closed_error(None)))
                }
                None => None,
            },
        )
    }

    /// A blocking iterator over events; it ends when the connection closes.
    pub fn events(&self) -> Events<'_> {
        Events { client: self }
    }

    /// Waits at most `timeout` for an event named `name` for which `matches` is true, and removes
    /// it from the queue. Other events stay queued, in order. Queued events are looked at first,
    /// so an event that arrived before the call is found too (with a queue capacity above 0).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let done = client.wait_event(
    ///     "JOB_STATUS_CHANGE",
    ///     |e| e.data.get("id").is_some_and(|id| id == "job0") && e.data["status"] == "concluded",
    ///     Duration::from_secs(30),
    /// )?;
    /// # let _ = done;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn wait_event(
        &self,
        name: &str,
        mut matches: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event, Error> {
        let mut from = 0;
        self.shared.wait_until(
            Some(Instant::now() + timeout),
            |_| format!("event {name}"),
            |inner| {
                let found = inner
                    .events
                    .take_first(&mut from, |e| e.name == name && matches(e));
                match found {
                    Some(e) => Some(Ok(e)),
                    None if inner.session.state() == State::Closed => {
                        Some(Err(inner.closed_error(None)))
                    }
                    None => None,
                }
            },
        )
    }

    /// Takes every queued event, oldest first, without waiting.
    pub fn take_events(&self) -> Vec<Event> {
        self.shared.lock().events.take_all()
    }

    /// How many events are queued, unread.
    pub fn queued_events(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// How many events were dropped because the queue was full (since connecting).
    pub fn dropped_events(&self) -> u64 {
        self.shared.lock().events.dropped()
    }

    /// Runs `handler` on a handler thread for every event named `name`. Events are also queued
    /// for [`Client::next_event`] as usual. A handler that panics is reported
    /// ([`Client::take_handler_panics`]) and stays registered.
    ///
    /// ```no_run
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// client.on_event("STOP", |e| println!("VM stopped at {:?}", e.timestamp));
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn on_event(
        &self,
        name: &str,
        handler: impl Fn(&Event) + Send + Sync + 'static,
    ) -> HandlerId {
        self.add_handler(Some(name.to_string()), Arc::new(handler))
    }

    /// Runs `handler` for every event.
    pub fn on_any_event(&self, handler: impl Fn(&Event) + Send + Sync + 'static) -> HandlerId {
        self.add_handler(None, Arc::new(handler))
    }

    fn add_handler(&self, name: Option<String>, run: HandlerFn) -> HandlerId {
        let mut inner = self.shared.lock();
        let id = HandlerId(inner.next_handler);
        inner.next_handler += 1;
        inner.handlers.push(Handler { id, name, run });
        id
    }

    /// Unregisters a handler; false if it was not registered.
    pub fn remove_handler(&self, id: HandlerId) -> bool {
        let mut inner = self.shared.lock();
        let before = inner.handlers.len();
        inner.handlers.retain(|h| h.id != id);
        inner.handlers.len() != before
    }

    /// Takes the reports of handlers and callbacks that panicked (the latest 64).
    pub fn take_handler_panics(&self) -> Vec<HandlerPanic> {
        self.shared.lock().panics.drain(..).collect()
    }

    /// Takes the warnings seen (the latest 64): garbage skipped, id-less error replies, replies
    /// with unknown ids, undecodable messages that belonged to no command.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.shared.lock().warnings.drain(..).collect()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.shared.lock();
        Stats {
            session: inner.session.stats(),
            dropped_events: inner.events.dropped(),
            dropped_handler_runs: inner.dropped_handler_runs,
            warnings: inner.warnings_total,
            handler_panics: inner.panics_total,
        }
    }

    /// Closes the connection (same as dropping the client): pending calls fail with
    /// [`Error::Closed`], queued callbacks run, threads end, a spawned QEMU is killed and reaped.
    pub fn close(self) {}

    fn submit<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        oob: bool,
        fds: &[BorrowedFd<'_>],
        slot: Slot,
    ) -> Result<CommandId, Error> {
        if !fds.is_empty() && !self.shared.fds_supported {
            return Err(Error::FdPassingUnsupported {
                transport: self.shared.label.clone(),
            });
        }
        let owned = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::io("duplicating a file descriptor to pass", e))?;
        let mut inner = self.shared.lock();
        let options = ExecuteOptions {
            oob,
            fds: owned.len(),
        };
        let id = match inner.session.execute_with(name, args, options) {
            Ok(id) => id,
            Err(SubmitError::Closed) => return Err(inner.closed_error(Some(name))),
            Err(source) => {
                return Err(Error::Refused {
                    command: name.to_string(),
                    source,
                })
            }
        };
        if !owned.is_empty() {
            inner.fds.insert(id, owned);
        }
        if matches!(slot, Slot::Callback { .. }) {
            inner.busy += 1;
        }
        inner.slots.insert(id, slot);
        inner.pull_transmits();
        let write = !inner.outgoing.is_empty();
        drop(inner);
        if write {
            self.shared.flush();
        }
        Ok(id)
    }

    fn wait_reply(
        &self,
        id: CommandId,
        name: &str,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        loop {
            let mut inner = self.shared.lock();
            match inner.slots.get_mut(&id) {
                Some(Slot::Waiting { result, .. }) => {
                    if let Some(result) = result.take() {
                        inner.slots.remove(&id);
                        let detail = inner.end_detail.clone();
                        return result.map_err(|e| Error::from_command(name, e, detail));
                    }
                }
                _ => return Err(inner.closed_error(Some(name))),
            }
            match deadline {
                None => {
                    drop(inner);
                    thread::park();
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Its late reply will be discarded by the session (rule 11).
                        inner.session.abandon(id);
                        inner.slots.remove(&id);
                        inner.fds.remove(&id);
                        return Err(Error::Timeout {
                            waiting_for: format!("the reply to '{name}'"),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                    drop(inner);
                    thread::park_timeout(d - now);
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        teardown(&self.shared, reader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
        check::<Error>();
    }
}
