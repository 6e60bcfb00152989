//! A QEMU the client spawned: its process, exit status and stderr.

use std::process::{Child, ChildStderr, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a QEMU that closed its monitor may take to become reapable.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// The spawned process, if the client spawned one.
pub(crate) struct ChildProcess {
    pid: Option<u32>,
    child: Mutex<Option<Child>>,
    status: Mutex<Option<ExitStatus>>,
    stderr: Mutex<Option<ChildStderr>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChildProcess {
    pub(crate) fn new(child: Option<Child>, stderr: Option<ChildStderr>) -> Self {
        ChildProcess {
            pid: child.as_ref().map(Child::id),
            child: Mutex::new(child),
            status: Mutex::new(None),
            stderr: Mutex::new(stderr),
        }
    }

    pub(crate) fn id(&self) -> Option<u32> {
        self.pid
    }

    pub(crate) fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.stderr).take()
    }

    /// The exit status, once the process has exited; reaps it if it has.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none() {
            if let Some(c) = lock(&self.child).as_mut() {
                *status = c.try_wait().ok().flatten();
            }
        }
        *status
    }

    /// Waits until the process has exited, or `deadline`; `None` when it has not exited in time,
    /// or there is no process.
    pub(crate) fn wait_exit(&self, deadline: Option<Instant>) -> Option<ExitStatus> {
        if lock(&self.child).is_none() {
            return None;
        }
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The exit status if the process exits within a short grace period (it closes its stdout a
    /// moment before it can be reaped).
    pub(crate) fn reap_soon(&self) -> Option<ExitStatus> {
        self.wait_exit(Some(Instant::now() + EXIT_GRACE))
    }

    pub(crate) fn kill(&self) {
        if let Some(c) = lock(&self.child).as_mut() {
            let _ = c.kill();
        }
    }

    /// Kills the process (if still running) and reaps it, keeping its exit status.
    pub(crate) fn kill_and_reap(&self) {
        let child = lock(&self.child).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                lock(&self.status).get_or_insert(s);
            }
        }
    }
}
