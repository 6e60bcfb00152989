//! One QMP connection as the subcommands use it: open (with the greeting and negotiation done),
//! execute, receive events.

use crate::schema::Schema;
use crate::transport::{self, Link};
use crate::Failure;
use qmp_proto::{
    CloseReason, CommandError, CommandId, Config, Event, Greeting, Output, QmpError, Session,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) use crate::transport::Target;

/// Why a command has no return value.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// QEMU answered with an error.
    Qmp(QmpError),
    /// The connection failed or the reply timed out.
    Fatal(Failure),
}

/// What [`Events::recv`] got.
#[derive(Debug)]
pub(crate) enum Recv {
    /// An event.
    Event(Event),
    /// Nothing arrived in time.
    TimedOut,
    /// The connection closed; no more events will come.
    Closed,
}

/// The events of a connection, in arrival order.
pub(crate) struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// The next event, waiting at most `timeout` (`None`: as long as it takes).
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Recv {
        match timeout {
            None => self.rx.recv().map_or(Recv::Closed, Recv::Event),
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(e) => Recv::Event(e),
                Err(RecvTimeoutError::Timeout) => Recv::TimedOut,
                Err(RecvTimeoutError::Disconnected) => Recv::Closed,
            },
        }
    }
}

struct State {
    session: Session,
    writer: Box<dyn Write + Send>,
    replies: HashMap<CommandId, Result<Value, CommandError>>,
    ready: bool,
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes whatever the session has to send. A failed write closes the session.
fn flush(state: &mut State) {
    while let Some(t) = state.session.poll_transmit() {
        if let Err(e) = state
            .writer
            .write_all(&t.bytes)
            .and_then(|()| state.writer.flush())
        {
            state.closed.get_or_insert(format!("write failed: {e}"));
            state.session.receive_eof();
            break;
        }
    }
}

/// A negotiated QMP connection.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    events: Mutex<Option<Receiver<Event>>>,
    greeting: Greeting,
    timeout: Duration,
    target: String,
    child: Option<Child>,
    shutdown: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Conn {
    /// Connects to `target` and negotiates capabilities; `timeout` bounds the whole of it and,
    /// later, each reply.
    pub(crate) fn open(target: Target, timeout: Duration) -> Result<Conn, Failure> {
        let deadline = Instant::now() + timeout;
        let what = target.describe();
        let Link {
            reader,
            writer,
            child,
            shutdown,
        } = transport::open(&target, deadline)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session: Session::new(Config::default()),
                writer,
                replies: HashMap::new(),
                ready: false,
                closed: None,
            }),
            changed: Condvar::new(),
        });
        let reader_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || read_loop(reader, &reader_shared, &tx))
            .map_err(|e| Failure::connection(format!("cannot start the reader thread: {e}")))?;
        let mut conn = Conn {
            shared,
            events: Mutex::new(Some(rx)),
            greeting: Greeting {
                version: qmp_proto::Version {
                    major: 0,
                    minor: 0,
                    micro: 0,
                },
                package: String::new(),
                capabilities: Vec::new(),
            },
            timeout,
            target: what.clone(),
            child,
            shutdown,
        };
        let mut state = conn.shared.lock();
        loop {
            if state.ready {
                break;
            }
            if let Some(reason) = &state.closed {
                let greeted = state.session.greeting().is_some();
                let reason = reason.clone();
                drop(state);
                let status = conn.child_status();
                return Err(Failure::connection(if greeted {
                    format!("{what} closed during capability negotiation: {reason}")
                } else if let Some(status) = status {
                    format!(
                        "QEMU exited ({status}) before the QMP greeting: see its messages above"
                    )
                } else {
                    format!(
                        "{what} closed the connection before the QMP greeting ({reason}): \
                         check that it is a QMP monitor (-qmp, or -mon mode=control), not HMP"
                    )
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let greeted = state.session.greeting().is_some();
                drop(state);
                return Err(Failure::connection(if greeted {
                    format!("{what} did not answer capability negotiation within {timeout:?}")
                } else if matches!(target, Target::Pipe(_)) {
                    format!(
                        "no QMP greeting from {what} within {timeout:?}: a pipe monitor greets only \
                         once, when QEMU starts, so only the first session over it works"
                    )
                } else {
                    format!(
                        "no QMP greeting from {what} within {timeout:?}: a QMP monitor serves one \
                         client at a time, so check that no other client is connected (and that \
                         this is a QMP monitor)"
                    )
                }));
            }
            state = conn
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(g) = state.session.greeting() {
            conn.greeting = g.clone();
        }
        drop(state);
        Ok(conn)
    }

    fn child_status(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        // QEMU's exit and the closed pipe race: give it a moment.
        for _ in 0..50 {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Whether the connection has closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// The server's greeting.
    pub(crate) fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Runs `name` with `args` and waits (up to the timeout) for its reply.
    pub(crate) fn execute(
        &self,
        name: &str,
        args: Option<Map<String, Value>>,
    ) -> Result<Value, ExecError> {
        let mut state = self.shared.lock();
        let id = match state.session.execute(name, &args) {
            Ok(id) => id,
            Err(qmp_proto::SubmitError::Closed) => {
                let reason = state.closed.clone().unwrap_or_default();
                return Err(ExecError::Fatal(self.closed(&reason)));
            }
            Err(e) => {
                return Err(ExecError::Fatal(Failure::usage(format!(
                    "cannot send {name}: {e}"
                ))))
            }
        };
        flush(&mut state);
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(result) = state.replies.remove(&id) {
                return match result {
                    Ok(v) => Ok(v),
                    Err(CommandError::Qmp(e)) => Err(ExecError::Qmp(e)),
                    Err(CommandError::Closed(CloseReason::Disconnected)) => {
                        let reason = state.closed.clone().unwrap_or_default();
                        Err(ExecError::Fatal(self.closed(&reason)))
                    }
                    Err(e) => Err(ExecError::Fatal(Failure::connection(format!(
                        "{name}: {e}"
                    )))),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.session.abandon(id);
                return Err(ExecError::Fatal(Failure::connection(format!(
                    "no reply to {name} from {} within {:?} (raise --timeout for slow commands)",
                    self.target, self.timeout
                ))));
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn closed(&self, reason: &str) -> Failure {
        Failure::connection(format!("{} closed the connection ({reason})", self.target))
    }

    /// Runs an HMP command line and returns its text output.
    pub(crate) fn hmp(&self, command_line: &str) -> Result<String, ExecError> {
        let mut args = Map::new();
        args.insert("command-line".into(), Value::String(command_line.into()));
        let v = self.execute("human-monitor-command", Some(args))?;
        Ok(crate::output::hmp_text(&v))
    }

    /// Reads the live schema.
    pub(crate) fn schema(&self) -> Result<Schema, ExecError> {
        let v = self.execute("query-qmp-schema", None)?;
        Schema::from_value(&v).map_err(|e| ExecError::Fatal(Failure::connection(e.to_string())))
    }

    /// The connection's events (one receiver per connection: a second call gets a closed one).
    pub(crate) fn events(&self) -> Events {
        let rx = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| mpsc::channel().1);
        Events { rx }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(s) = &self.shutdown {
            s();
        }
        if let Some(child) = &mut self.child {
            // A QEMU that was told to quit exits by itself; otherwise it is ours to stop.
            let quit = (0..20).any(|_| {
                let done = matches!(child.try_wait(), Ok(Some(_)));
                if !done {
                    thread::sleep(Duration::from_millis(5));
                }
                done
            });
            if !quit {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn read_loop(mut reader: Box<dyn Read + Send>, shared: &Shared, events: &Sender<Event>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, err) = match reader.read(&mut buf) {
            Ok(n) => (n, None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => (0, Some(e)),
        };
        let mut state = shared.lock();
        if n == 0 {
            state.session.receive_eof();
            let reason = match err {
                Some(e) if e.kind() != ErrorKind::ConnectionReset => format!("read failed: {e}"),
                _ => "end of stream".to_owned(),
            };
            state.closed.get_or_insert(reason);
        } else {
            state.session.receive(&buf[..n]);
        }
        let mut done = false;
        while let Some(out) = state.session.poll_output() {
            match out {
                Output::Ready => state.ready = true,
                Output::Reply { id, result } => {
                    state.replies.insert(id, result);
                }
                Output::Event(e) => {
                    let _ = events.send(e);
                }
                Output::Warning(w) => eprintln!("qmp: warning: {w}"),
                Output::Closed(reason) => {
                    state.closed.get_or_insert(reason.to_string());
                    done = true;
                }
                Output::Greeting(_) => {}
            }
        }
        flush(&mut state);
        shared.changed.notify_all();
        if done || n == 0 {
            return;
        }
    }
}
