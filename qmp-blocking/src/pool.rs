//! The worker pool that runs event handlers and completion callbacks, off the reader thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};

pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
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
                    shutdown: false,
                }),
                ready: Condvar::new(),
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Queues a job; false once the pool has shut down (the job is dropped).
    pub(crate) fn submit(&self, job: Job) -> bool {
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
            return false;
        }
        q.jobs.push_back(job);
        drop(q);
        self.state.ready.notify_one();
        true
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
            if let Some(job) = q.jobs.pop_front() {
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
