//! The client handle: calls, events, handlers, and facts about the connection.

use crate::events::Events;
use crate::handlers::{HandlerId, HandlerPanic};
use crate::shared::{teardown, Shared};
use crate::slots::Slot;
use crate::{Builder, Error};
use qmp_proto::command::add_fd_arguments;
use qmp_proto::events::{EventData, TypedWait};
use qmp_proto::{CloseReason, Command, CommandId, Event, ExecuteOptions, Greeting, Warning};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::net::ToSocketAddrs;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::{ChildStderr, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
    pub(crate) fn new(
        shared: Arc<Shared>,
        reader: JoinHandle<()>,
        greeting: Greeting,
        timeout: Option<Duration>,
    ) -> Self {
        Client {
            shared,
            reader: Mutex::new(Some(reader)),
            greeting,
            timeout,
        }
    }

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
        !self.shared.lock().closed()
    }

    /// Why the connection closed, once it has: QEMU quit, went away (with the I/O error or cut-off
    /// message, if any), refused negotiation, or this side closed it.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.lock().session.close_reason().cloned()
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
        self.shared.wait_reply(id, name, deadline, timeout)
    }

    /// Runs a typed command and decodes its reply.
    ///
    /// ```no_run
    /// use qmp_qapi::qmp::QueryStatus; // qmp-qapi: a type for every command of QEMU's schema
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
            problem: qmp_proto::ProtocolError::UnexpectedReply(e),
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
        let args = serde_json::json!({ "fdname": fdname });
        self.execute_with("getfd", args, CallOptions::new().fds(&[fd]))
            .map(drop)
    }

    /// `add-fd`: adds `fd` to fd set `fdset_id` (a new set when `None`), with an optional
    /// `opaque` string (Unix sockets only). Returns QEMU's reply, `{"fdset-id": N, "fd": M}`;
    /// for it typed, run qmp-qapi's `AddFd` with [`CallOptions::fds`].
    pub fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        fdset_id: Option<i64>,
        opaque: Option<&str>,
    ) -> Result<Value, Error> {
        let args = add_fd_arguments(fdset_id, opaque);
        self.execute_with("add-fd", args, CallOptions::new().fds(&[fd]))
    }

    /// Sends `quit` and waits (up to the default timeout) until QEMU has closed the connection
    /// and, if the client spawned it, exited. QEMU closing the connection, even with a reset and
    /// even before its reply arrived, is `quit`'s success (rule 13). Events sent before the end
    /// (e.g. `SHUTDOWN`) stay readable.
    pub fn quit(&self) -> Result<(), Error> {
        self.execute("quit", ())?;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        self.shared.wait_until(
            deadline,
            |_| "QEMU to close the connection after 'quit'".to_string(),
            |inner| inner.closed().then_some(Ok(())),
        )?;
        if self.shared.child.id().is_some() && self.shared.child.wait_exit(deadline).is_none() {
            return Err(Error::Timeout {
                waiting_for: "QEMU to exit after 'quit'".to_string(),
                after: self.timeout.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// The exit status of a spawned QEMU, once it has exited (it is reaped when its connection
    /// ends, or by this call).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.shared.child.exit_status()
    }

    /// The process id of a spawned QEMU.
    pub fn child_id(&self) -> Option<u32> {
        self.shared.child.id()
    }

    /// A spawned QEMU's stderr, if its command had `stderr(Stdio::piped())`. Read it from another
    /// thread while the client runs, or after [`Client::close`].
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.shared.child.take_stderr()
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
                None if inner.closed() => Some(Err(inner.closed_error(None))),
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
                    None if inner.closed() => Some(Err(inner.closed_error(None))),
                    None => None,
                }
            },
        )
    }

    /// [`Client::wait_event`] for a typed event: waits at most `timeout` for an event of type
    /// `E` (named `E::NAME`, e.g. one of qmp-qapi's `qmp::event` types) whose decoded data
    /// `matches`, and returns the data. An event of that name whose data does not decode as `E`
    /// fails the call ([`ProtocolError::UnexpectedEvent`](qmp_proto::ProtocolError::UnexpectedEvent)).
    ///
    /// ```no_run
    /// # #[derive(serde::Deserialize)] struct JobStatusChange { id: String, status: String }
    /// # impl qmp_proto::events::EventData for JobStatusChange { const NAME: &'static str = "JOB_STATUS_CHANGE"; }
    /// use std::time::Duration;
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// // With qmp-qapi: qmp_qapi::qmp::event::JobStatusChange, whose status is a JobStatus.
    /// let done = client.wait_event_typed::<JobStatusChange>(
    ///     |e| e.id == "job0" && e.status == "concluded",
    ///     Duration::from_secs(30),
    /// )?;
    /// # let _ = done;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn wait_event_typed<E: EventData>(
        &self,
        mut matches: impl FnMut(&E) -> bool,
        timeout: Duration,
    ) -> Result<E, Error> {
        let mut wait = TypedWait::new(&mut matches);
        self.wait_event(E::NAME, |e| wait.check(e), timeout)?;
        wait.finish()
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

    fn add_handler(&self, name: Option<String>, run: crate::handlers::HandlerFn) -> HandlerId {
        self.shared.lock().handlers.add(name, run)
    }

    /// Unregisters a handler; false if it was not registered.
    pub fn remove_handler(&self, id: HandlerId) -> bool {
        self.shared.lock().handlers.remove(id)
    }

    /// Takes the reports of handlers and callbacks that panicked (the latest 64).
    pub fn take_handler_panics(&self) -> Vec<HandlerPanic> {
        self.shared.lock().panics.take_all()
    }

    /// Takes the warnings seen (the latest 64): garbage skipped, id-less error replies, replies
    /// with unknown ids, undecodable messages that belonged to no command.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.shared.lock().warnings.take_all()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let inner = self.shared.lock();
        Stats {
            session: inner.session.stats(),
            dropped_events: inner.events.dropped(),
            dropped_handler_runs: inner.dropped_handler_runs,
            warnings: inner.warnings.pushed(),
            handler_panics: inner.panics.pushed(),
        }
    }

    /// Closes the connection (dropping the client does the same): pending calls fail with
    /// [`Error::Closed`], later calls too; queued callbacks run, threads end, a spawned QEMU is
    /// killed and reaped. Calling it again does nothing.
    pub fn close(&self) {
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        teardown(&self.shared, reader);
    }

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
                command: name.to_string(),
                transport: self.shared.label.clone(),
            });
        }
        let fds = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::io("duplicating a file descriptor to pass", e))?;
        let mut inner = self.shared.lock();
        let id = inner
            .session
            .execute_with(name, args, ExecuteOptions { oob, fds })
            .map_err(|e| Error::from_submit(name, e, inner.session.close_reason()))?;
        if matches!(slot, Slot::Callback { .. }) {
            inner.busy += 1;
            // No caller will lead for it: the reader thread reads its reply.
            self.shared.summon_reader(&mut inner);
        }
        inner.slots.insert(id, slot);
        self.shared.process(&mut inner);
        let write = !inner.outgoing.is_empty();
        self.shared.release(inner);
        if write {
            self.shared.flush();
        }
        Ok(id)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
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
