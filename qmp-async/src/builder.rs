//! Configuring and opening a connection: [`Builder`].

use crate::driver::{Driver, Io};
use crate::race::{select, Either};
use crate::shared::{register, Inner, Shared};
use crate::{ChildProcess, Client, Error, Runtime, Transport};
use futures_io::{AsyncRead, AsyncWrite};
use qmp_proto::{Config, Limits, Session, State};
use std::future::Future;
use std::marker::PhantomData;
use std::net::ToSocketAddrs;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

/// How long a QEMU that closed its monitor while connecting may take to become reapable.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Configures and opens a [`Client`] on runtime `R`; from [`Client::builder`]. The same knobs,
/// with the same defaults, as qmp-blocking's `Builder`.
///
/// ```no_run
/// # async fn f<R: qmp_async::Runtime>() -> Result<(), qmp_async::Error> {
/// use std::time::Duration;
/// let client = qmp_async::Client::<R>::builder()
///     .timeout(Duration::from_secs(5))
///     .connect_timeout(Duration::from_secs(2))
///     .event_queue_capacity(256)
///     .connect_tcp("127.0.0.1:4444")
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Builder<R> {
    config: Config,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    event_capacity: usize,
    subscriber_buffer: usize,
    _runtime: PhantomData<fn() -> R>,
}

impl<R> Default for Builder<R> {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            subscriber_buffer: 1024,
            _runtime: PhantomData,
        }
    }
}

impl<R> Clone for Builder<R> {
    fn clone(&self) -> Self {
        Builder {
            config: self.config.clone(),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            event_capacity: self.event_capacity,
            subscriber_buffer: self.subscriber_buffer,
            _runtime: PhantomData,
        }
    }
}

impl<R: Runtime> Builder<R> {
    /// Default timeout of every call (30 s unless set). A call past it fails with
    /// [`Error::Timeout`]; its late reply is discarded.
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

    /// How many unread events the connection's queue keeps for `next_event`, `wait_event` and
    /// `events()` (1024 unless set). When full, the oldest is dropped and counted
    /// ([`Client::dropped_events`]). 0 keeps none (when only subscriptions are used).
    pub fn event_queue_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How many unread events each [`Client::subscribe`] stream may hold by default (1024 unless
    /// set; an `EventFilter` can set its own).
    pub fn subscriber_buffer(mut self, events: usize) -> Self {
        self.subscriber_buffer = events.max(1);
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

    /// Connects to QEMU's `-qmp unix:PATH,server=on,wait=off`. File descriptors can be passed.
    pub async fn connect_unix(self, path: impl AsRef<Path>) -> Result<Client<R>, Error> {
        let path = path.as_ref();
        let label = format!("unix:{}", path.display());
        let open = R::connect_unix(path);
        let hint = format!(
            "connecting to {label} (is QEMU running with -qmp {label},server=on,wait=off?)"
        );
        self.establish(label, async move {
            open.await
                .map(|t| (t, None))
                .map_err(|e| Error::io(hint, e))
        })
        .await
    }

    /// Connects to QEMU's `-qmp tcp:HOST:PORT,server=on,wait=off`. Names are resolved with the
    /// system resolver, which blocks: pass an address (`"127.0.0.1:4444"`, a `SocketAddr`) in
    /// async code.
    pub async fn connect_tcp(self, addr: impl ToSocketAddrs) -> Result<Client<R>, Error> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolving the TCP address", e))?
            .collect();
        let label = match addrs.first() {
            Some(a) => format!("tcp:{a}"),
            None => "tcp:(no address)".to_string(),
        };
        let what = format!("connecting to {label}");
        self.establish(label, async move {
            let mut last =
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to");
            for a in addrs {
                match R::connect_tcp(a).await {
                    Ok(t) => return Ok((t, None)),
                    Err(e) => last = e,
                }
            }
            Err(Error::io(what, last))
        })
        .await
    }

    /// Accepts one connection on `listener` from a QEMU started with `-qmp unix:PATH` (client
    /// mode: no `server=on`), waiting at most the connect timeout for it. The listener is switched
    /// to non-blocking mode.
    pub async fn accept_unix(self, listener: &UnixListener) -> Result<Client<R>, Error> {
        let label = match listener.local_addr().ok().and_then(|a| {
            a.as_pathname()
                .map(|p| format!("unix:{} (accept)", p.display()))
        }) {
            Some(l) => l,
            None => "unix (accept)".to_string(),
        };
        let what = format!("accepting on {label}");
        let accept = R::accept_unix(listener);
        self.establish(label, async move {
            accept
                .await
                .map(|t| (t, None))
                .map_err(|e| Error::io(what, e))
        })
        .await
    }

    /// Starts QEMU with a QMP monitor on its stdio: `-qmp stdio` (or qemu-storage-daemon's
    /// `--chardev stdio` monitor) is added unless an argument already mentions `stdio`
    /// ([`qmp_proto::command_line::stdio_monitor_args`]). The client owns the process: closing it
    /// kills QEMU. stdin and
    /// stdout are taken over; set stderr as you like and, if piped, read it with
    /// [`Client::take_stderr`]. If QEMU exits before negotiation completes (a bad option, say),
    /// the error is [`Error::Exited`], with its exit status.
    pub async fn spawn(self, mut command: std::process::Command) -> Result<Client<R>, Error> {
        let label = format!("stdio:{}", command.get_program().to_string_lossy());
        qmp_proto::command_line::add_stdio_monitor(&mut command);
        let spawned =
            R::spawn_process(command).map_err(|e| Error::io(format!("starting {label}"), e));
        self.establish(label, async move { spawned.map(|(t, c)| (t, Some(c))) })
            .await
    }

    /// Speaks QMP over any async reader and writer (a pipe pair, a serial device, a stream you
    /// opened yourself). No file-descriptor passing; see [`Builder::connect_transport`].
    pub async fn connect_io(
        self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Result<Client<R>, Error> {
        self.connect_transport(Transport::new(reader, writer)).await
    }

    /// Speaks QMP over a [`Transport`] (with file-descriptor passing, if it has a sender).
    pub async fn connect_transport(self, transport: Transport) -> Result<Client<R>, Error> {
        self.establish("io".to_string(), async { Ok((transport, None)) })
            .await
    }

    /// Opens the transport, spawns the driver and waits for negotiation, all within the connect
    /// timeout.
    async fn establish(
        self,
        label: String,
        open: impl Future<Output = Result<(Transport, Option<Box<dyn ChildProcess>>), Error>>,
    ) -> Result<Client<R>, Error> {
        let limit = self.connect_timeout;
        let agent = self.config.protocol == qmp_proto::Protocol::Agent;
        let inner_slot = OnceLock::new();
        let connect = async {
            let (transport, child) = open.await?;
            let mut shared = Shared::new(
                Session::new(self.config.clone()),
                Io::new(transport),
                self.event_capacity,
                self.subscriber_buffer,
            );
            shared.child = child;
            let inner = Arc::new(Inner {
                shared: Mutex::new(shared),
                label: label.clone(),
            });
            let _ = inner_slot.set(inner.clone());
            R::spawn(Box::pin(Driver::<R>::new(inner.clone())));
            ready(&inner).await
        };
        let outcome = {
            let connect = std::pin::pin!(connect);
            match select(connect, R::sleep(limit)).await {
                Either::Left(outcome) => outcome,
                Either::Right(_) if agent => Err(Error::AgentNotResponding {
                    transport: label.clone(),
                    after: limit,
                }),
                Either::Right(_) => Err(Error::Timeout {
                    waiting_for: waiting_for_handshake(&label, inner_slot.get().map(|i| &**i)),
                    after: limit,
                }),
            }
        };
        match outcome {
            Ok(greeting) => {
                let inner = inner_slot
                    .into_inner()
                    .ok_or(Error::Closed { command: None })?;
                Ok(Client::new(inner, greeting, self.timeout))
            }
            Err(e) => {
                let Some(inner) = inner_slot.into_inner() else {
                    return Err(e);
                };
                let e = if e.is_disconnected() {
                    // A spawned QEMU that closes its stdout this early is exiting: its exit
                    // status tells the caller more than the closed pipe does.
                    match exited_within::<R>(&inner, EXIT_GRACE).await {
                        Some(status) => Error::Exited {
                            status,
                            transport: label,
                        },
                        None => e,
                    }
                } else {
                    e
                };
                close(&inner);
                Err(e)
            }
        }
    }
}

/// Waits until negotiation is complete; fails if the connection closes first.
async fn ready(inner: &Inner) -> Result<qmp_proto::Greeting, Error> {
    std::future::poll_fn(|cx| {
        let mut s = inner.lock();
        match s.session.state() {
            State::Ready if s.session.greeting().is_none() => {
                Poll::Ready(Ok(crate::agent::no_greeting()))
            }
            State::Ready => Poll::Ready(
                s.session
                    .greeting()
                    .cloned()
                    .ok_or(Error::Closed { command: None }),
            ),
            State::Closed => Poll::Ready(Err(crate::client::closed_error(&s, None))),
            State::AwaitingGreeting | State::Negotiating | State::Syncing => {
                register(&mut s.watchers, cx.waker());
                Poll::Pending
            }
        }
    })
    .await
}

/// Ends a connection that never became a client: the driver closes the socket, a spawned QEMU
/// is killed.
fn close(inner: &Inner) {
    let mut wakeups = crate::shared::Wakeups::default();
    {
        let mut s = inner.lock();
        s.session.close();
        s.route(&mut wakeups);
        s.users = 0;
        wakeups.push(s.driver_waker.take());
        if let Some(c) = s.child.as_mut() {
            let _ = c.kill();
        }
    }
    wakeups.wake();
}

async fn exited_within<R: Runtime>(
    inner: &Inner,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        {
            let mut s = inner.lock();
            s.child.as_ref()?;
            if let Some(status) = s.exit_status() {
                return Some(status);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        R::sleep(Duration::from_millis(2)).await;
    }
}

/// What a connect that timed out was waiting for, with what to check.
fn waiting_for_handshake(label: &str, inner: Option<&Inner>) -> String {
    let Some(inner) = inner else {
        return format!("a connection to {label}");
    };
    let s = inner.lock();
    let mut text = if s.session.state() == State::Negotiating {
        format!("the reply to qmp_capabilities from {label}")
    } else if label.starts_with("stdio:") {
        format!("the QMP greeting from {label} (does its command line have -qmp stdio?)")
    } else {
        format!(
            "the QMP greeting from {label} (QEMU serves one client per monitor: is another client connected?)"
        )
    };
    if let Some(w) = s.warnings.last() {
        text.push_str(&format!("; last problem seen: {w}"));
    }
    text
}
