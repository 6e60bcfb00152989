//! One command's future: [`Call`], and the options of a call.

use crate::driver::{read_now, write_now};
use crate::shared::{Inner, Outcome, Shared, Wakeups};
use crate::Error;
use qmp_proto::CommandId;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Options of one call: timeout, out-of-band, file descriptors. See
/// [`Client::execute_with`](crate::Client::execute_with).
///
/// ```no_run
/// # async fn f(client: qmp_async::Client<impl qmp_async::Runtime>) -> Result<(), qmp_async::Error> {
/// use qmp_async::CallOptions;
/// use std::time::Duration;
/// let v = client.execute_with("query-status", (), CallOptions::new().timeout(Duration::from_secs(2))).await?;
/// # let _ = v; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions<'a> {
    pub(crate) timeout: Option<Option<Duration>>,
    pub(crate) oob: bool,
    pub(crate) fds: &'a [BorrowedFd<'a>],
}

impl<'a> CallOptions<'a> {
    /// The defaults: the client's timeout, in-band, no descriptors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits at most `timeout` for this reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// Waits for this reply without a time limit.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// Sends the command as `exec-oob` (needs `oob`: [`Builder::oob`](crate::Builder::oob)).
    pub fn oob(mut self) -> Self {
        self.oob = true;
        self
    }

    /// Passes `fds` with the command (SCM_RIGHTS; Unix sockets only). They are duplicated when
    /// the call is made, so the caller's stay open.
    pub fn fds(mut self, fds: &'a [BorrowedFd<'a>]) -> Self {
        self.fds = fds;
        self
    }
}

/// One command's reply: the future [`Client::execute`](crate::Client::execute) and its
/// siblings return.
///
/// The command was submitted when the call was made; it is written on the first poll of this or
/// any other call on the connection (or by the driver), so calls created together go out in one
/// write. Dropping it before the reply arrives abandons the command: one not yet written is never
/// written, one on the wire has its late reply discarded (rule 11). Its timeout runs from when the
/// call was made.
#[must_use = "the command's reply is only received when the call is awaited"]
pub struct Call<'a> {
    state: State<'a>,
}

enum State<'a> {
    Waiting {
        inner: &'a Arc<Inner>,
        id: CommandId,
        name: Cow<'a, str>,
        timeout: Option<Duration>,
        written: bool,
    },
    Failed(Error),
    Done,
}

impl<'a> Call<'a> {
    pub(crate) fn waiting(
        inner: &'a Arc<Inner>,
        id: CommandId,
        name: Cow<'a, str>,
        timeout: Option<Duration>,
    ) -> Self {
        Call {
            state: State::Waiting {
                inner,
                id,
                name,
                timeout,
                written: false,
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Call {
            state: State::Failed(error),
        }
    }
}

impl Future for Call<'_> {
    type Output = Result<Value, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let State::Waiting {
            inner,
            id,
            name,
            timeout,
            written,
        } = &mut this.state
        else {
            return match std::mem::replace(&mut this.state, State::Done) {
                State::Failed(e) => Poll::Ready(Err(e)),
                // Polled after completion: there is nothing more to give.
                _ => Poll::Ready(Err(Error::Closed { command: None })),
            };
        };
        let mut wakeups = Wakeups::default();
        let poll = {
            let mut s = inner.lock();
            if !*written {
                // Write the command from here rather than waiting for the driver task.
                *written = true;
                write_now(&mut s, cx, &mut wakeups);
            }
            let mut outcome = take_outcome(&mut s, *id);
            // The waker this call left on its last poll: taken out while it reads, so that its
            // own reply, routed by this very poll, wakes nobody. (Woken, a running task is polled
            // again for nothing; tokio's multi-thread scheduler also wakes an idle worker for
            // it.)
            let mut own = None;
            if outcome.is_none() {
                own = s.slots.get_mut(id).and_then(|slot| slot.waker.take());
                // Waiting: this call takes the read role and reads, so its reply (and whatever
                // else came) is routed here, with no wake of the driver task.
                s.read.take(*id, cx.waker());
                read_now(&mut s, cx, &mut wakeups);
                outcome = take_outcome(&mut s, *id);
            }
            if outcome.is_none() {
                // Still waiting: registered again, for whoever routes the reply later.
                if let Some(slot) = s.slots.get_mut(id) {
                    slot.waker = match own {
                        Some(w) if w.will_wake(cx.waker()) => Some(w),
                        _ => Some(cx.waker().clone()),
                    };
                }
            }
            match outcome {
                None => Poll::Pending,
                Some(outcome) => {
                    s.remove_slot(*id, &mut wakeups);
                    Poll::Ready(match outcome {
                        Outcome::Reply(result) => result.map_err(|e| Error::from_command(name, e)),
                        Outcome::TimedOut => {
                            Err(Error::reply_timeout(name, timeout.unwrap_or_default()))
                        }
                    })
                }
            }
        };
        wakeups.wake();
        if poll.is_ready() {
            this.state = State::Done;
        }
        poll
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let State::Waiting { inner, id, .. } = &self.state {
            let mut wakeups = Wakeups::default();
            {
                let mut s = inner.lock();
                // Passes the read role on if this call held it.
                s.remove_slot(*id, &mut wakeups);
                // Queued: never sent (its descriptors close). On the wire: its late reply will be
                // discarded. Answered: no-op.
                s.session.abandon(*id);
            }
            wakeups.wake();
        }
    }
}

/// The call's outcome if it has one; a missing slot (slots are removed only by their call) cannot
/// be waited for.
fn take_outcome(s: &mut Shared, id: CommandId) -> Option<Outcome> {
    match s.slots.get_mut(&id) {
        Some(slot) => slot.outcome.take(),
        None => Some(Outcome::Reply(Err(qmp_proto::CommandError::Closed {
            reason: qmp_proto::CloseReason::Local,
            sent: false,
        }))),
    }
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { id, name, .. } => format!("waiting for the reply to '{name}' ({id})"),
            State::Failed(e) => format!("failed: {e}"),
            State::Done => "done".into(),
        };
        f.debug_struct("Call")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
