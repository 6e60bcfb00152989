//! The handle callers use: commands as async calls, event subscriptions, connection facts.

use crate::driver::write_now;
use crate::events::{EventFilter, EventStream};
use crate::shared::{Inner, Slot, Wakeups};
use crate::Error;
use qmp_proto::{
    CloseReason, Command, CommandError, CommandId, ExecuteOptions, Greeting, Stats, SubmitError,
    Warning,
};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A handle to one QMP connection. Cheap to clone; clones share the connection, and any number of
/// tasks may run commands through them at once (each gets its own reply; commands are pipelined).
///
/// Every call is cancellation safe: dropping its future at any point leaves the connection in
/// sync. A command not yet written is never written; one already written is abandoned and its
/// late reply discarded.
///
/// The connection closes when the last handle and the last [`EventStream`] are dropped.
pub struct Client {
    inner: Arc<Inner>,
    timeout: Option<Duration>,
}

impl Client {
    pub(crate) fn new(inner: Arc<Inner>, timeout: Option<Duration>) -> Self {
        Client { inner, timeout }
    }

    /// The same connection, with `timeout` for every call made through the returned handle
    /// (`None`: wait as long as it takes).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        let mut c = self.clone();
        c.timeout = timeout;
        c
    }

    /// The per-call timeout of this handle.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Runs command `name` with `arguments` (`&()` for none) and returns QEMU's `return` value.
    ///
    /// The command is submitted when this is called, and written when the returned [`Call`] (or
    /// any call on the connection) is first polled, so calls created together go out in one
    /// write:
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client) -> Result<(), qmp_async::Error> {
    /// use serde_json::json;
    /// let version = client.execute("query-version", &()).await?;
    /// println!("{}", version["qemu"]["major"]);
    /// client.execute("blockdev-add", &json!({"driver": "null-co", "node-name": "n0"})).await?;
    /// // 100 commands in flight together:
    /// let calls = (0..100).map(|_| client.execute("query-status", &()));
    /// let replies = futures::future::join_all(calls).await;
    /// # let _ = replies; Ok(()) }
    /// ```
    pub fn execute<A: Serialize + ?Sized>(&self, name: &str, arguments: &A) -> Call<'_> {
        self.start(name, arguments, ExecuteOptions::default(), Vec::new())
    }

    /// Runs command `name` out of band (`exec-oob`); needs `oob` negotiated
    /// (`Config::request_oob`).
    pub fn execute_oob<A: Serialize + ?Sized>(&self, name: &str, arguments: &A) -> Call<'_> {
        let options = ExecuteOptions { oob: true, fds: 0 };
        self.start(name, arguments, options, Vec::new())
    }

    /// Runs command `name` with file descriptors attached (e.g. `getfd`, `add-fd`). Needs a Unix
    /// socket connection. The descriptors are closed on this side once sent.
    pub fn execute_with_fds<A: Serialize + ?Sized>(
        &self,
        name: &str,
        arguments: &A,
        fds: Vec<OwnedFd>,
    ) -> Call<'_> {
        let options = ExecuteOptions {
            oob: false,
            fds: fds.len(),
        };
        self.start(name, arguments, options, fds)
    }

    /// Runs a typed command and decodes its reply.
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client) -> Result<(), qmp_async::Error> {
    /// use qmp_proto::command::{HumanMonitorCommand, QueryStatus};
    /// let status = client.run(&QueryStatus).await?;
    /// println!("running: {}, state: {}", status.running, status.status);
    /// let text = client.run(&HumanMonitorCommand::new("info status")).await?;
    /// # let _ = text; Ok(()) }
    /// ```
    pub fn run<C: Command>(
        &self,
        command: &C,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + '_ {
        let call = self.execute(C::NAME, command);
        async move { C::decode_output(call.await?).map_err(Error::Output) }
    }

    /// Runs a typed command with file descriptors attached (see [`Client::execute_with_fds`]).
    pub fn run_with_fds<C: Command>(
        &self,
        command: &C,
        fds: Vec<OwnedFd>,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + '_ {
        let call = self.execute_with_fds(C::NAME, command, fds);
        async move { C::decode_output(call.await?).map_err(Error::Output) }
    }

    /// Runs `query-WHAT` without arguments and returns its value: `query("status")` is
    /// `query-status`. A name that already starts with `query-` is used as is.
    ///
    /// ```no_run
    /// # async fn f(client: qmp_async::Client) -> Result<(), qmp_async::Error> {
    /// let status = client.query("status").await?;
    /// println!("{}", status["status"]);
    /// # Ok(()) }
    /// ```
    pub fn query(&self, what: &str) -> Call<'_> {
        self.execute(&qmp_proto::command::query_command_name(what), &())
    }

    fn start<A: Serialize + ?Sized>(
        &self,
        name: &str,
        arguments: &A,
        options: ExecuteOptions,
        fds: Vec<OwnedFd>,
    ) -> Call<'_> {
        let reply = self
            .submit(name, arguments, options, fds)
            .map(|id| ReplyFuture {
                inner: &self.inner,
                id,
                written: false,
                done: false,
            });
        Call {
            state: match reply {
                Ok(reply) => CallState::Waiting(reply),
                Err(e) => CallState::Failed(e),
            },
            timeout: self.timeout.map(|limit| (limit, None)),
        }
    }

    fn submit<A: Serialize + ?Sized>(
        &self,
        name: &str,
        arguments: &A,
        options: ExecuteOptions,
        fds: Vec<OwnedFd>,
    ) -> Result<CommandId, Error> {
        let mut s = self.inner.lock();
        if options.fds > 0 && !s.io.can_pass_fds() {
            return Err(Error::FdPassingUnsupported);
        }
        let id = match s.session.execute_with(name, arguments, options) {
            Ok(id) => id,
            Err(SubmitError::Closed) => {
                return Err(Error::Closed(
                    s.closed.clone().unwrap_or(CloseReason::Local),
                ))
            }
            Err(SubmitError::OobNotNegotiated) => return Err(Error::OobNotNegotiated),
            Err(e) => return Err(Error::Refused(e)),
        };
        s.slots.insert(id, Slot::default());
        if !fds.is_empty() {
            s.fds.insert(id, fds);
        }
        // The call's first poll writes it (see `driver::pump`).
        Ok(id)
    }

    /// A stream of the events that match `filter`, from now on.
    pub fn subscribe(&self, filter: EventFilter) -> EventStream {
        EventStream::new(self.inner.clone(), filter)
    }

    /// A stream of every event, from now on.
    pub fn events(&self) -> EventStream {
        self.subscribe(EventFilter::all())
    }

    /// The server's greeting (always there once connected).
    pub fn greeting(&self) -> Option<Greeting> {
        self.inner.lock().greeting()
    }

    /// Whether `oob` was negotiated, so [`Client::execute_oob`] is available.
    pub fn oob_enabled(&self) -> bool {
        self.inner.lock().session.oob_enabled()
    }

    /// Commands submitted and neither answered nor abandoned (queued or on the wire).
    pub fn outstanding(&self) -> usize {
        self.inner.lock().session.outstanding()
    }

    /// Calls whose futures are alive and waiting for a reply slot to be filled or taken.
    pub fn waiting(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// Counters of the session: events, discarded late replies, unmatched replies, decode errors.
    pub fn stats(&self) -> Stats {
        self.inner.lock().session.stats()
    }

    /// Takes the warnings noticed so far (unmatched replies, id-less errors, undecodable input),
    /// oldest first; at most the last 64 are kept.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.inner.lock().warnings.drain(..).collect()
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.lock().closed.clone()
    }

    /// The I/O error that ended the connection, described, if one did (e.g. a connection reset).
    pub fn io_error(&self) -> Option<String> {
        self.inner.lock().io_error.as_ref().map(|e| e.to_string())
    }

    /// A one-line account of the connection's I/O for diagnosing hangs: session state, bytes
    /// written and read, reads with and without data, driver polls, bytes buffered in the session, the first bytes read. Not a
    /// stable format.
    #[doc(hidden)]
    pub fn debug_io(&self) -> String {
        let s = self.inner.lock();
        format!(
            "state {:?}, ready {}, closed {:?}, {} bytes written, {} bytes in {} reads ({} found nothing), {} driver polls, {} bytes buffered, driver waker {}; first bytes read: {:?}",
            s.session.state(),
            s.ready,
            s.closed,
            s.io.bytes_written,
            s.io.bytes_read,
            s.io.reads,
            s.io.reads_pending,
            s.driver_polls,
            s.session.buffered(),
            if s.driver_waker.is_some() { "set" } else { "unset" },
            String::from_utf8_lossy(&s.io.first_bytes),
        )
    }

    /// Waits until the connection is closed, and says why.
    pub fn closed(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let inner = self.inner.clone();
        futures::future::poll_fn(move |cx| {
            let mut s = inner.lock();
            match &s.closed {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    s.watch(cx.waker());
                    Poll::Pending
                }
            }
        })
    }

    /// Waits until negotiation is complete; fails if the connection closes first.
    pub(crate) fn ready(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let inner = self.inner.clone();
        futures::future::poll_fn(move |cx| {
            let mut s = inner.lock();
            if let Some(r) = &s.closed {
                return Poll::Ready(Err(Error::Closed(r.clone())));
            }
            if s.ready {
                return Poll::Ready(Ok(()));
            }
            s.watch(cx.waker());
            Poll::Pending
        })
    }

    /// Closes the connection from this side: pending calls fail with [`CloseReason::Local`],
    /// streams end.
    pub fn close(&self) {
        let mut wakeups = Wakeups::default();
        {
            let mut s = self.inner.lock();
            s.session.close();
            s.route(&mut wakeups);
            wakeups.push(s.driver_waker.take());
        }
        wakeups.wake();
    }
}

impl Clone for Client {
    fn clone(&self) -> Self {
        self.inner.lock().users += 1;
        Client {
            inner: self.inner.clone(),
            timeout: self.timeout,
        }
    }
}

impl Drop for Client {
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

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One command's reply: a future from [`Client::execute`] and its siblings.
///
/// The command was submitted when the call was made; it is written on the first poll of this or
/// any other call on the connection (or by the driver), so calls created together go out in one
/// write. Dropping it before the reply arrives abandons the command: one not yet written is never
/// written, one on the wire has its late reply discarded. The handle's timeout (if any) runs from
/// the first poll.
#[must_use = "the command's reply is only received when the call is awaited"]
pub struct Call<'a> {
    state: CallState<'a>,
    /// The time limit, and its timer once started (at the first poll).
    timeout: Option<(Duration, Option<futures::future::BoxFuture<'static, ()>>)>,
}

enum CallState<'a> {
    Waiting(ReplyFuture<'a>),
    Failed(Error),
    Done,
}

impl Future for Call<'_> {
    type Output = Result<Value, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut reply = match std::mem::replace(&mut this.state, CallState::Done) {
            CallState::Waiting(reply) => reply,
            CallState::Failed(e) => return Poll::Ready(Err(e)),
            // Polled after completion.
            CallState::Done => return Poll::Ready(Err(Error::Closed(CloseReason::Local))),
        };
        if let Poll::Ready(result) = Pin::new(&mut reply).poll(cx) {
            return Poll::Ready(result);
        }
        if let Some((limit, timer)) = &mut this.timeout {
            let timer = timer.get_or_insert_with(|| reply.inner.runtime.sleep(*limit));
            if timer.as_mut().poll(cx).is_ready() {
                // Dropping the reply future abandons the command.
                return Poll::Ready(Err(Error::Timeout));
            }
        }
        this.state = CallState::Waiting(reply);
        Poll::Pending
    }
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            CallState::Waiting(r) => format!("waiting for {:?}", r.id),
            CallState::Failed(e) => format!("failed: {e}"),
            CallState::Done => "done".into(),
        };
        f.debug_struct("Call")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Waits for one command's slot; abandons the command when dropped before the reply was taken.
struct ReplyFuture<'a> {
    inner: &'a Arc<Inner>,
    id: CommandId,
    written: bool,
    done: bool,
}

impl Future for ReplyFuture<'_> {
    type Output = Result<Value, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut wakeups = Wakeups::default();
        let poll = {
            let inner = self.inner;
            let mut s = inner.lock();
            if !self.written {
                // Write the command from here rather than waiting for the driver task.
                self.written = true;
                write_now(&mut s, cx, &mut wakeups);
            }
            match s.slots.get_mut(&self.id) {
                // Slots are removed only by their future; treat a missing one as a closed session.
                None => Poll::Ready(Err(CommandError::Closed(CloseReason::Local))),
                Some(slot) => match slot.result.take() {
                    Some(result) => Poll::Ready(result),
                    None => {
                        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            slot.waker = Some(cx.waker().clone());
                        }
                        Poll::Pending
                    }
                },
            }
            .map(|result| {
                s.slots.remove(&self.id);
                self.done = true;
                result.map_err(Error::from)
            })
        };
        wakeups.wake();
        poll
    }
}

impl Drop for ReplyFuture<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut s = self.inner.lock();
            s.slots.remove(&self.id);
            // Queued: never sent. On the wire: its late reply will be discarded. Answered: no-op.
            s.session.abandon(self.id);
            s.fds.remove(&self.id);
        }
    }
}
