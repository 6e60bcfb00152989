//! The worker pool that runs event handlers and completion callbacks, off the reader thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};

pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    /// Jobs, and whether each may be dropped when the backlog is full (event handler runs).
    jobs: VecDeque<(Job, bool)>,
    droppable: usize,
    shutdown: bool,
}

/// What became of a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Queued.
    Queued,
    /// Queued, and the oldest droppable job was dropped to make room.
    QueuedDroppingOldest,
    /// The pool has shut down; the job was dropped.
    Refused,
}

struct State {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fixed number of threads, started on first use. Jobs must not panic (the client wraps them).
pub(crate) struct Pool {
    size: usize,
    state: Arc<State>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Self {
        Pool {
            size: size.max(1),
            state: Arc::new(State {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    droppable: 0,
                    shutdown: false,
                }),
                ready: Condvar::new(),
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Queues a job. A `droppable` job counts against `backlog`: when that many droppable jobs
    /// wait already, the oldest of them is dropped (not run), so the queue never grows without
    /// bound behind a slow handler.
    pub(crate) fn submit(&self, job: Job, droppable: bool, backlog: usize) -> Submitted {
        {
            let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
            if threads.is_empty() && !self.state.lock().shutdown {
                for n in 0..self.size {
                    let state = Arc::clone(&self.state);
                    let spawned = thread::Builder::new()
                        .name(format!("qmp-handler-{n}"))
                        .spawn(move || work(&state));
                    if let Ok(h) = spawned {
                        threads.push(h);
                    }
                }
            }
        }
        let mut q = self.state.lock();
        if q.shutdown {
            return Submitted::Refused;
        }
        let mut outcome = Submitted::Queued;
        if droppable {
            if q.droppable >= backlog.max(1) {
                if let Some(i) = q.jobs.iter().position(|(_, d)| *d) {
                    q.jobs.remove(i);
                    q.droppable -= 1;
                    outcome = Submitted::QueuedDroppingOldest;
                }
            }
            q.droppable += 1;
        }
        q.jobs.push_back((job, droppable));
        drop(q);
        self.state.ready.notify_one();
        outcome
    }

    /// Runs the jobs already queued, then ends the threads. A worker calling this (a handler that
    /// drops the client) is not joined, since it cannot wait for itself.
    pub(crate) fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.state.ready.notify_all();
        let me: ThreadId = thread::current().id();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for h in threads {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

fn work(state: &State) {
    loop {
        let mut q = state.lock();
        let job = loop {
            if let Some((job, droppable)) = q.jobs.pop_front() {
                if droppable {
                    q.droppable -= 1;
                }
                break job;
            }
            if q.shutdown {
                return;
            }
            q = state.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        };
        drop(q);
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_full_backlog_drops_the_oldest_droppable_job_only() {
        let pool = Pool::new(1);
        let (block_tx, block_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        // Occupy the only worker.
        pool.submit(
            Box::new(move || {
                let _ = started_tx.send(());
                let _ = block_rx.recv_timeout(Duration::from_secs(10));
            }),
            false,
            2,
        );
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let job = |n: u32| -> Job {
            let ran = Arc::clone(&ran);
            Box::new(move || ran.lock().unwrap().push(n))
        };
        assert_eq!(pool.submit(job(1), true, 2), Submitted::Queued);
        assert_eq!(pool.submit(job(2), false, 2), Submitted::Queued);
        assert_eq!(pool.submit(job(3), true, 2), Submitted::Queued);
        assert_eq!(
            pool.submit(job(4), true, 2),
            Submitted::QueuedDroppingOldest
        );
        drop(block_tx);
        pool.shutdown();
        assert_eq!(*ran.lock().unwrap(), [2, 3, 4]);
        assert_eq!(pool.submit(job(5), false, 2), Submitted::Refused);
    }
}
