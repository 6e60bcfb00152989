//! The handle callers use: commands as async calls, events, and facts about the connection.
//!
//! The names, argument shapes, defaults and errors are qmp-blocking's (docs/API.md has the table).

use crate::call::{Call, CallOptions};
use crate::events::{EventFilter, EventStream, Events};
use crate::race::{select, Either};
use crate::shared::{register, Inner, Slot, Wakeups};
use crate::{Builder, Error, Runtime};
use qmp_proto::command::add_fd_arguments;
use qmp_proto::events::{EventData, TypedWait};
use qmp_proto::{CloseReason, Command, Event, ExecuteOptions, Greeting, Warning};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::ToSocketAddrs;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Counters of what was dropped or reported; from [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The session's counters (events, unmatched and discarded replies, decode errors...).
    pub session: qmp_proto::Stats,
    /// Events dropped because the connection's queue was full.
    pub dropped_events: u64,
    /// Warnings seen (garbage skipped, id-less errors, unknown ids...).
    pub warnings: u64,
}

/// A handle to one QMP connection, on runtime `R` (the runtime crates export it as `Client`).
/// Cheap to clone; clones share the connection, and any number of tasks may run commands through
/// them at once (each gets its own reply; commands are pipelined).
///
/// Every call is cancellation safe: dropping its future at any point leaves the connection in
/// sync. A command not yet written is never written; one already written is abandoned and its
/// late reply discarded.
///
/// The connection closes when the last handle and the last [`EventStream`] are dropped, or on
/// [`Client::close`].
pub struct Client<R> {
    inner: Arc<Inner>,
    greeting: Arc<Greeting>,
    timeout: Option<Duration>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Client<R> {
    pub(crate) fn new(inner: Arc<Inner>, greeting: Greeting, timeout: Option<Duration>) -> Self {
        Client {
            inner,
            greeting: Arc::new(greeting),
            timeout,
            _runtime: PhantomData,
        }
    }

    /// A [`Builder`] with the defaults: 30 s call timeout, 10 s connect timeout, 1024 queued
    /// events, no `oob`.
    pub fn builder() -> Builder<R> {
        Builder::default()
    }

    /// Connects to a Unix socket with the defaults (`-qmp unix:PATH,server=on,wait=off`).
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Self, Error> {
        Builder::default().connect_unix(path).await
    }

    /// Connects over TCP with the defaults (`-qmp tcp:HOST:PORT,server=on,wait=off`).
    pub async fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Self, Error> {
        Builder::default().connect_tcp(addr).await
    }

    /// Starts QEMU with its monitor on stdio, with the defaults; see [`Builder::spawn`].
    pub async fn spawn(command: std::process::Command) -> Result<Self, Error> {
        Builder::default().spawn(command).await
    }

    /// QEMU's greeting: version, package, capabilities.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Whether `oob` was negotiated (so `exec-oob` works).
    pub fn oob_enabled(&self) -> bool {
        self.inner.lock().session.oob_enabled()
    }

    /// The transport, e.g. `unix:/run/qmp.sock`, `tcp:127.0.0.1:4444`, `stdio:qemu-system-x86_64`.
    pub fn transport(&self) -> &str {
        &self.inner.label
    }

    /// False once the connection has ended (QEMU closed it, died, or the client closed).
    pub fn is_connected(&self) -> bool {
        !self.inner.lock().closed()
    }

    /// Commands submitted and not yet answered (queued or on the wire).
    pub fn pending(&self) -> usize {
        self.inner.lock().session.outstanding()
    }

    /// Calls whose futures are alive and hold a reply slot (a diagnostic: 0 when nothing waits;
    /// dropped calls leave none behind).
    pub fn waiting(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// The default timeout of calls through this handle.
    pub fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The same connection, with `timeout` as the default of calls made through the returned
    /// handle (`None`: wait as long as it takes).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        c.timeout = timeout;
        c
    }

    /// Runs command `name` with `args` (anything that serializes to a JSON object, or `()` for
    /// none) and returns QEMU's `return` value.
    ///
    /// The command is submitted when this is called, and written when the returned [`Call`] (or
    /// any call on the connection) is first polled, so calls created together go out in one
    /// write:
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client<impl qmp_async::Runtime>) -> Result<(), qmp_async::Error> {
    /// use serde_json::json;
    /// let version = client.execute("query-version", ()).await?;
    /// println!("{}", version["qemu"]["major"]);
    /// client.execute("blockdev-add", json!({"driver": "null-co", "node-name": "n0"})).await?;
    /// // 100 commands in flight together:
    /// let calls = (0..100).map(|_| client.execute("query-status", ()));
    /// let replies = futures::future::join_all(calls).await;
    /// # let _ = replies; Ok(()) }
    /// ```
    pub fn execute<'a>(&'a self, name: &'a str, args: impl Serialize) -> Call<'a> {
        self.start(Cow::Borrowed(name), &args, CallOptions::new())
    }

    /// Like [`Client::execute`], waiting at most `timeout`.
    pub fn execute_timeout<'a>(
        &'a self,
        name: &'a str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Call<'a> {
        self.start(
            Cow::Borrowed(name),
            &args,
            CallOptions::new().timeout(timeout),
        )
    }

    /// Runs a command as `exec-oob` (needs [`Builder::oob`]).
    pub fn execute_oob<'a>(&'a self, name: &'a str, args: impl Serialize) -> Call<'a> {
        self.start(Cow::Borrowed(name), &args, CallOptions::new().oob())
    }

    /// Runs a command with options: timeout, `exec-oob`, file descriptors.
    ///
    /// On timeout the command is abandoned: its late reply is discarded and the connection stays
    /// usable.
    pub fn execute_with<'a>(
        &'a self,
        name: &'a str,
        args: impl Serialize,
        options: CallOptions<'_>,
    ) -> Call<'a> {
        self.start(Cow::Borrowed(name), &args, options)
    }

    /// Runs a typed command and decodes its reply.
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client<impl qmp_async::Runtime>) -> Result<(), qmp_async::Error> {
    /// use qmp_qapi::qmp::QueryStatus;
    /// let status = client.run(&QueryStatus).await?;
    /// println!("running: {}, state: {}", status.running, status.status);
    /// # Ok(()) }
    /// ```
    pub fn run<'a, C: Command>(
        &'a self,
        command: &C,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + 'a {
        self.run_with(command, CallOptions::new())
    }

    /// [`Client::run`] with options.
    pub fn run_with<'a, C: Command>(
        &'a self,
        command: &C,
        options: CallOptions<'_>,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + 'a {
        let call = self.start(Cow::Borrowed(C::NAME), command, options);
        async move {
            C::decode_output(call.await?).map_err(|e| Error::Protocol {
                command: Some(C::NAME.to_string()),
                problem: qmp_proto::ProtocolError::UnexpectedReply(e),
            })
        }
    }

    /// Runs `query-WHAT` without arguments: `query("status")` is `query-status`. A name that
    /// already starts with `query-` is used as is.
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client<impl qmp_async::Runtime>) -> Result<(), qmp_async::Error> {
    /// let status = client.query("status").await?;
    /// println!("{}", status["status"]);
    /// # Ok(()) }
    /// ```
    pub fn query<'a>(&'a self, what: &'a str) -> Call<'a> {
        self.start(
            qmp_proto::command::query_command_name(what),
            &(),
            CallOptions::new(),
        )
    }

    /// `getfd`: passes `fd` to QEMU under the name `fdname` (Unix sockets only).
    pub fn getfd<'a>(
        &'a self,
        fdname: &str,
        fd: BorrowedFd<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        let args = serde_json::json!({ "fdname": fdname });
        let call = self.start(Cow::Borrowed("getfd"), &args, CallOptions::new().fds(&[fd]));
        async move { call.await.map(drop) }
    }

    /// `add-fd`: adds `fd` to fd set `fdset_id` (a new set when `None`), with an optional
    /// `opaque` string (Unix sockets only). Returns QEMU's reply, `{"fdset-id": N, "fd": M}`;
    /// for it typed, run qmp-qapi's `AddFd` with [`CallOptions::fds`].
    pub fn add_fd<'a>(
        &'a self,
        fd: BorrowedFd<'_>,
        fdset_id: Option<i64>,
        opaque: Option<&str>,
    ) -> Call<'a> {
        let args = add_fd_arguments(fdset_id, opaque);
        self.start(
            Cow::Borrowed("add-fd"),
            &args,
            CallOptions::new().fds(&[fd]),
        )
    }

    /// Sends `quit` and waits (up to the default timeout) until QEMU has closed the connection
    /// and, if the client spawned it, exited. QEMU closing the connection, even with a reset and
    /// even before its reply arrived, is `quit`'s success (rule 13). Events sent before the end
    /// (e.g. `SHUTDOWN`) stay readable.
    pub async fn quit(&self) -> Result<(), Error> {
        self.execute("quit", ()).await?;
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let closed = self.closed();
        self.within(
            deadline,
            "QEMU to close the connection after 'quit'",
            async {
                closed.await;
            },
        )
        .await?;
        if self.child_id().is_none() {
            return Ok(());
        }
        let exited = async {
            while self.exit_status().is_none() {
                R::sleep(Duration::from_millis(2)).await;
            }
        };
        self.within(deadline, "QEMU to exit after 'quit'", exited)
            .await
    }

    /// The exit status of a spawned QEMU, once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.lock().exit_status()
    }

    /// The process id of a spawned QEMU.
    pub fn child_id(&self) -> Option<u32> {
        self.inner.lock().child.as_ref().map(|c| c.id())
    }

    /// A spawned QEMU's stderr, if its command had `stderr(Stdio::piped())`.
    pub fn take_stderr(&self) -> Option<Box<dyn futures_io::AsyncRead + Send + Unpin>> {
        self.inner.lock().child.as_mut()?.take_stderr()
    }

    /// The next event from the connection's queue, waiting at most `timeout`. Events that
    /// arrived while commands waited are kept, in order. Errors: [`Error::Timeout`], or
    /// [`Error::Disconnected`] once the connection has closed and no event is left.
    pub async fn next_event(&self, timeout: Duration) -> Result<Event, Error> {
        let next = std::future::poll_fn(|cx| {
            let mut s = self.inner.lock();
            if let Some(e) = s.events.pop() {
                return Poll::Ready(Ok(e));
            }
            if s.closed() {
                return Poll::Ready(Err(closed_error(&s, None)));
            }
            register(&mut s.event_waiters, cx.waker());
            let driver = s.read.hand_to_driver();
            drop(s);
            if let Some(w) = driver {
                w.wake();
            }
            Poll::Pending
        });
        self.within(Some((Instant::now() + timeout, timeout)), "an event", next)
            .await?
    }

    /// A stream of the events in the connection's queue (the same queue as
    /// [`Client::next_event`]), oldest first; it ends when the connection closes.
    pub fn events(&self) -> Events<'_> {
        Events { inner: &self.inner }
    }

    /// Waits at most `timeout` for an event named `name` for which `matches` is true, and removes
    /// it from the queue. Other events stay queued, in order. Queued events are looked at first,
    /// so an event that arrived before the call is found too (with a queue capacity above 0).
    pub async fn wait_event(
        &self,
        name: &str,
        mut matches: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event, Error> {
        let mut from = 0;
        let found = std::future::poll_fn(|cx| {
            let mut s = self.inner.lock();
            if let Some(e) = s
                .events
                .take_first(&mut from, |e| e.name == name && matches(e))
            {
                return Poll::Ready(Ok(e));
            }
            if s.closed() {
                return Poll::Ready(Err(closed_error(&s, None)));
            }
            register(&mut s.event_waiters, cx.waker());
            let driver = s.read.hand_to_driver();
            drop(s);
            if let Some(w) = driver {
                w.wake();
            }
            Poll::Pending
        });
        let what = format!("event {name}");
        self.within(Some((Instant::now() + timeout, timeout)), &what, found)
            .await?
    }

    /// [`Client::wait_event`] for a typed event: waits at most `timeout` for an event of type
    /// `E` (named `E::NAME`, e.g. one of qmp-qapi's `qmp::event` types) whose decoded data
    /// `matches`, and returns the data. An event of that name whose data does not decode as `E`
    /// fails the call ([`ProtocolError::UnexpectedEvent`](qmp_proto::ProtocolError::UnexpectedEvent)).
    pub async fn wait_event_typed<E: EventData>(
        &self,
        mut matches: impl FnMut(&E) -> bool,
        timeout: Duration,
    ) -> Result<E, Error> {
        let mut wait = TypedWait::new(&mut matches);
        self.wait_event(E::NAME, |e| wait.check(e), timeout).await?;
        wait.finish()
    }

    /// Takes every queued event, oldest first, without waiting.
    pub fn take_events(&self) -> Vec<Event> {
        self.inner.lock().events.take_all()
    }

    /// How many events are queued, unread.
    pub fn queued_events(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// How many events were dropped because the queue was full (since connecting).
    pub fn dropped_events(&self) -> u64 {
        self.inner.lock().events.dropped()
    }

    /// A stream of the events that match `filter`, from now on, with its own bounded queue
    /// (independent of the connection's queue and of other subscribers).
    pub fn subscribe(&self, filter: EventFilter) -> EventStream {
        EventStream::new(self.inner.clone(), filter)
    }

    /// Takes the warnings seen (the latest 64): garbage skipped, id-less error replies, replies
    /// with unknown ids, undecodable messages that belonged to no command.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.inner.lock().warnings.take_all()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let s = self.inner.lock();
        Stats {
            session: s.session.stats(),
            dropped_events: s.events.dropped(),
            warnings: s.warnings.pushed(),
        }
    }

    /// Why the connection closed, once it has: QEMU quit, went away (with the I/O error or cut-off
    /// message, if any), refused negotiation, or this side closed it.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.lock().session.close_reason().cloned()
    }

    /// Waits until the connection is closed, and says why.
    pub fn closed(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let inner = self.inner.clone();
        std::future::poll_fn(move |cx| {
            let mut s = inner.lock();
            match s.session.close_reason() {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    register(&mut s.watchers, cx.waker());
                    Poll::Pending
                }
            }
        })
    }

    /// Closes the connection (for every handle): pending calls fail with [`Error::Closed`],
    /// later calls too, streams end, a spawned QEMU is killed. Calling it again does nothing.
    pub fn close(&self) {
        let mut wakeups = Wakeups::default();
        {
            let mut s = self.inner.lock();
            s.session.close();
            s.route(&mut wakeups);
            wakeups.push(s.driver_waker.take());
            if let Some(c) = s.child.as_mut() {
                let _ = c.kill();
            }
        }
        wakeups.wake();
    }

    /// A one-line account of the connection's I/O for diagnosing hangs. Not a stable format.
    #[doc(hidden)]
    pub fn debug_io(&self) -> String {
        let s = self.inner.lock();
        format!(
            "state {:?}, close reason {:?}, {}, {} bytes buffered in the session, driver waker {}",
            s.session.state(),
            s.session.close_reason(),
            s.io.describe(),
            s.session.buffered(),
            if s.driver_waker.is_some() {
                "set"
            } else {
                "unset"
            },
        )
    }

    fn start<'a, A: Serialize + ?Sized>(
        &'a self,
        name: Cow<'a, str>,
        args: &A,
        options: CallOptions<'_>,
    ) -> Call<'a> {
        let timeout = options.timeout.unwrap_or(self.timeout);
        match self.submit(&name, args, options, timeout) {
            Ok(id) => Call::waiting(&self.inner, id, name, timeout),
            Err(e) => Call::failed(e),
        }
    }

    fn submit<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        options: CallOptions<'_>,
        timeout: Option<Duration>,
    ) -> Result<qmp_proto::CommandId, Error> {
        let fds = options
            .fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::io("duplicating a file descriptor to pass", e))?;
        let mut wakeups = Wakeups::default();
        let id = {
            let mut s = self.inner.lock();
            if !fds.is_empty() && !s.io.can_pass_fds() {
                return Err(Error::FdPassingUnsupported {
                    command: name.to_string(),
                    transport: self.inner.label.clone(),
                });
            }
            let options = ExecuteOptions {
                oob: options.oob,
                fds,
            };
            let id = s
                .session
                .execute_with(name, args, options)
                .map_err(|e| Error::from_submit(name, e, s.session.close_reason()))?;
            let deadline = timeout.map(|t| Instant::now() + t);
            if let Some(d) = deadline {
                s.deadlines.insert((d, id));
                // The driver's timer is set for the earliest deadline: wake it only if this one
                // comes first.
                if s.timer_at.is_none_or(|t| d < t) {
                    wakeups.push(s.driver_waker.take());
                }
            }
            s.slots.insert(
                id,
                Slot {
                    outcome: None,
                    waker: None,
                    deadline,
                },
            );
            id
        };
        wakeups.wake();
        // The call's first poll writes it (see `driver::write_now`).
        Ok(id)
    }

    /// Runs `future`, failing with [`Error::Timeout`] (waiting for `what`, after the caller's
    /// `limit`) at `deadline`.
    async fn within<T>(
        &self,
        deadline: Option<(Instant, Duration)>,
        what: &str,
        future: impl Future<Output = T>,
    ) -> Result<T, Error> {
        let Some((deadline, limit)) = deadline else {
            return Ok(future.await);
        };
        let future = std::pin::pin!(future);
        let sleep = R::sleep(deadline.saturating_duration_since(Instant::now()));
        match select(future, sleep).await {
            Either::Left(out) => Ok(out),
            Either::Right(_) => Err(Error::Timeout {
                waiting_for: what.to_string(),
                after: limit,
            }),
        }
    }
}

/// The error of a call about `command` on a closed session.
pub(crate) fn closed_error(s: &crate::shared::Shared, command: Option<&str>) -> Error {
    let reason = s
        .session
        .close_reason()
        .cloned()
        .unwrap_or(CloseReason::Local);
    Error::from_close(command, false, reason)
}

impl<R> Clone for Client<R> {
    fn clone(&self) -> Self {
        self.inner.lock().users += 1;
        Client {
            inner: self.inner.clone(),
            greeting: self.greeting.clone(),
            timeout: self.timeout,
            _runtime: PhantomData,
        }
    }
}

impl<R> Drop for Client<R> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.inner.lock();
            s.users -= 1;
            if s.users == 0 {
                s.driver_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<R> fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.inner.label)
            .field("version", &self.greeting.version)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
