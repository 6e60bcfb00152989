//! Configuring and opening a connection: [`Builder`].

use crate::child::ChildProcess;
use crate::pool::Pool;
use crate::reader::read_loop;
use crate::role::reader_loop;
use crate::shared::{teardown, Inner, Shared};
use crate::transport::{Connection, ReadSide};
use crate::{Client, Error};
use qmp_proto::{Config, Limits, Session, State};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
    /// ([`Stats::dropped_handler_runs`](crate::Stats::dropped_handler_runs)); completion callbacks are never dropped.
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

    /// Starts QEMU with a QMP monitor on its stdio: `-qmp stdio` (or qemu-storage-daemon's
    /// `--chardev stdio` monitor) is added unless an argument already mentions `stdio`
    /// ([`qmp_proto::command_line::stdio_monitor_args`]). The client owns the process: closing it
    /// kills and reaps QEMU.
    /// stdin and stdout are taken over; set stderr as you like and, if piped, read it with
    /// [`Client::take_stderr`]. If QEMU exits before negotiation completes (a bad option, say),
    /// the error is [`Error::Exited`], with its exit status.
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
    /// since nothing can interrupt an arbitrary reader. Only the reader thread reads it (callers
    /// cannot bound a read on it, so they never lead: each reply reaches its caller through the
    /// reader thread); the same goes for [`Builder::spawn`] and [`Builder::connect_pipe`].
    pub fn connect_io(
        self,
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> Result<Client, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        self.establish(Connection::io(Box::new(reader), Box::new(writer)), deadline)
    }

    fn establish(self, conn: Connection, deadline: Instant) -> Result<Client, Error> {
        let agent = self.config.protocol == qmp_proto::Protocol::Agent;
        let Connection {
            reader,
            writer,
            waker,
            child,
            stderr,
            label,
        } = conn;
        let (read_half, stream) = match reader {
            ReadSide::Socket(half) => (Some(half), None),
            ReadSide::Stream(stream) => (None, Some(stream)),
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::new(Session::new(self.config), self.event_capacity)),
            changed: Condvar::new(),
            role_changed: Condvar::new(),
            read_half,
            fds_supported: writer.can_pass_fds(),
            writer: Mutex::new(writer),
            waker,
            child: ChildProcess::new(child, stderr),
            pool: Pool::new(self.handler_threads),
            handler_backlog: self.handler_backlog,
            label,
        });
        // A guest-agent session speaks first (its sync); a QMP session has nothing to send yet.
        {
            let mut inner = shared.lock();
            shared.process(&mut inner);
            let write = !inner.outgoing.is_empty();
            shared.release(inner);
            if write {
                shared.flush();
            }
        }
        let reader_shared = Arc::clone(&shared);
        let spawned =
            thread::Builder::new()
                .name("qmp-reader".into())
                .spawn(move || match stream {
                    Some(stream) => read_loop(reader_shared, stream),
                    None => reader_loop(reader_shared),
                });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                teardown(&shared, None);
                return Err(Error::io("starting the reader thread", e));
            }
        };
        let ready = shared.wait_until(
            Some(deadline),
            |inner| waiting_for_handshake(&shared.label, inner),
            |inner| match inner.session.state() {
                State::Ready if agent => Some(Ok(crate::agent::no_greeting())),
                State::Ready => inner.session.greeting().cloned().map(Ok),
                State::Closed => Some(Err(inner.closed_error(None))),
                State::AwaitingGreeting | State::Negotiating | State::Syncing => None,
            },
        );
        match ready {
            Ok(greeting) => Ok(Client::new(shared, handle, greeting, self.timeout)),
            Err(e) => {
                let e = match e {
                    Error::Timeout { .. } if agent => Error::AgentNotResponding {
                        transport: shared.label.clone(),
                        after: self.connect_timeout,
                    },
                    Error::Timeout { waiting_for, .. } => Error::Timeout {
                        waiting_for,
                        after: self.connect_timeout,
                    },
                    // A spawned QEMU that closes its stdout this early is exiting (a bad option,
                    // say): its exit status tells the caller more than the closed pipe does.
                    e if e.is_disconnected() => match shared.child.reap_soon() {
                        Some(status) => Error::Exited {
                            status,
                            transport: shared.label.clone(),
                        },
                        None => e,
                    },
                    e => e,
                };
                teardown(&shared, Some(handle));
                Err(e)
            }
        }
    }
}

/// What a connect that timed out was waiting for, with what to check.
fn waiting_for_handshake(label: &str, inner: &Inner) -> String {
    let mut s = if inner.session.state() == State::Syncing {
        format!("the guest agent's reply to guest-sync-delimited from {label}")
    } else if inner.session.state() == State::Negotiating {
        format!("the reply to qmp_capabilities from {label}")
    } else if label.starts_with("stdio:") {
        format!("the QMP greeting from {label} (does its command line have -qmp stdio?)")
    } else {
        format!(
            "the QMP greeting from {label} (QEMU serves one client per monitor: is another client connected?)"
        )
    };
    if let Some(w) = inner.warnings.last() {
        s.push_str(&format!("; last problem seen: {w}"));
    }
    s
}
