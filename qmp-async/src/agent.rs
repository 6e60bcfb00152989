//! The guest-agent client: [`Agent`] and [`AgentBuilder`].

use crate::{Builder, CallOptions, Client, Error, Runtime, Stats, Transport};
use futures_io::{AsyncRead, AsyncWrite};
use qmp_proto::guest_exec::{ExecOutput, ExecPoll, ExecRequest};
use qmp_proto::{CloseReason, Command, Config, Greeting, Limits, Version, Warning};
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The [`Client`] of an agent holds no greeting; this stands in for it, never shown.
pub(crate) fn no_greeting() -> Greeting {
    Greeting {
        version: Version {
            major: 0,
            minor: 0,
            micro: 0,
        },
        package: String::new(),
        capabilities: Vec::new(),
    }
}

/// Configures and opens an [`Agent`] on runtime `R`; from [`Agent::builder`]. The same knobs,
/// with the same defaults, as qmp-blocking's `AgentBuilder`; the connect timeout bounds
/// connecting **and** the first sync.
pub struct AgentBuilder<R> {
    builder: Builder<R>,
    config: Config,
}

impl<R> Default for AgentBuilder<R> {
    fn default() -> Self {
        AgentBuilder {
            builder: Builder::default(),
            config: Config::agent(),
        }
    }
}

impl<R> std::fmt::Debug for AgentBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R> Clone for AgentBuilder<R> {
    fn clone(&self) -> Self {
        AgentBuilder {
            builder: self.builder.clone(),
            config: self.config.clone(),
        }
    }
}

impl<R: Runtime> AgentBuilder<R> {
    /// Default timeout of every call (30 s unless set). A call that times out makes the session
    /// sync again before the next command.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.builder = self.builder.timeout(timeout);
        self
    }

    /// Calls wait for their reply without a time limit unless they set one.
    pub fn no_timeout(mut self) -> Self {
        self.builder = self.builder.no_timeout();
        self
    }

    /// Limit on connecting and on the first sync (10 s unless set). When nothing answers the
    /// sync in that time, the connect fails with [`Error::AgentNotResponding`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.builder = self.builder.connect_timeout(timeout);
        self
    }

    /// Limits on what is received and sent ([`Limits::agent`] unless set).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The whole session configuration ([`Config::agent`] unless set); its protocol is always
    /// [`Protocol::Agent`](qmp_proto::Protocol::Agent).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Config {
            protocol: qmp_proto::Protocol::Agent,
            ..config
        };
        self
    }

    fn ready(self) -> Builder<R> {
        self.builder.config(self.config)
    }

    /// Connects to the host end of the agent's port (QEMU's `-chardev
    /// socket,path=PATH,server=on,wait=off,id=qga0` behind a `virtserialport` named
    /// `org.qemu.guest_agent.0`), or to `qemu-ga -m unix-listen -p PATH`.
    pub async fn connect_unix(self, path: impl AsRef<Path>) -> Result<Agent<R>, Error> {
        self.ready().connect_unix(path).await.map(Agent::new)
    }

    /// Connects to a TCP chardev. Names are resolved with the system resolver, which blocks.
    pub async fn connect_tcp(self, addr: impl ToSocketAddrs) -> Result<Agent<R>, Error> {
        self.ready().connect_tcp(addr).await.map(Agent::new)
    }

    /// Speaks to an agent over any async reader and writer (e.g. a serial device).
    pub async fn connect_io(
        self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Result<Agent<R>, Error> {
        self.ready()
            .connect_io(reader, writer)
            .await
            .map(Agent::new)
    }

    /// Speaks to an agent over a [`Transport`].
    pub async fn connect_transport(self, transport: Transport) -> Result<Agent<R>, Error> {
        self.ready()
            .connect_transport(transport)
            .await
            .map(Agent::new)
    }
}

/// An async client of the QEMU guest agent (`qemu-ga`), on runtime `R`: the same engine as
/// [`Client`], with the agent's rules from qmp-proto (no greeting; `guest-sync-delimited` on
/// connect and after every call that timed out; one command at a time; stale replies dropped).
/// The same API as qmp-blocking's `Agent`. Cloning gives another handle to the connection.
///
/// ```no_run
/// # async fn f<R: qmp_async::Runtime>() -> Result<(), qmp_async::Error> {
/// use qmp_async::qmp_proto::guest_exec::ExecRequest;
/// use std::time::Duration;
/// let agent = qmp_async::Agent::<R>::connect_unix("/run/vm1-qga.sock").await?;
/// let info = agent.execute("guest-info", ()).await?;
/// println!("qemu-ga {}", info["version"]);
/// let out = agent.guest_exec(&ExecRequest::new("/bin/uname").arg("-r"), Duration::from_secs(10)).await?;
/// println!("kernel {}", String::from_utf8_lossy(&out.stdout));
/// # Ok(()) }
/// ```
pub struct Agent<R> {
    client: Client<R>,
}

impl<R> Clone for Agent<R> {
    fn clone(&self) -> Self {
        Agent {
            client: self.client.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Agent<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("client", &self.client)
            .finish()
    }
}

impl<R: Runtime> Agent<R> {
    fn new(client: Client<R>) -> Self {
        Agent { client }
    }

    /// An [`AgentBuilder`] with the defaults: 30 s call timeout, 10 s connect timeout,
    /// [`Limits::agent`].
    pub fn builder() -> AgentBuilder<R> {
        AgentBuilder::default()
    }

    /// Connects to a Unix socket with the defaults.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Agent<R>, Error> {
        Agent::builder().connect_unix(path).await
    }

    /// Connects over TCP with the defaults.
    pub async fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Agent<R>, Error> {
        Agent::builder().connect_tcp(addr).await
    }

    /// Runs a command and returns its `return` value (`{}` for a command that does not reply
    /// on success, such as `guest-shutdown`, once the agent has read the next command or gone
    /// away). On timeout the session syncs again before the next command.
    pub async fn execute(&self, name: &str, args: impl Serialize) -> Result<Value, Error> {
        self.client.execute(name, args).await
    }

    /// Like [`Agent::execute`], waiting at most `timeout`.
    pub async fn execute_timeout(
        &self,
        name: &str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.client.execute_timeout(name, args, timeout).await
    }

    /// Runs a command with options (a timeout; the agent has no `oob` and takes no file
    /// descriptors).
    pub async fn execute_with(
        &self,
        name: &str,
        args: impl Serialize,
        options: CallOptions<'_>,
    ) -> Result<Value, Error> {
        self.client.execute_with(name, args, options).await
    }

    /// Runs a typed command (`qmp_qapi::qga::GuestInfo`, ...) and decodes its reply.
    pub fn run<'a, C: Command>(
        &'a self,
        command: &C,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + 'a {
        self.client.run(command)
    }

    /// Runs a process in the guest and waits for it: `guest-exec` with its output captured, then
    /// `guest-exec-status` every 5 to 100 ms until it exits, its output decoded from base64.
    /// Fails with [`Error::Timeout`] if it has not exited within `timeout` (the process keeps
    /// running in the guest), or with [`Error::Qmp`] when the agent refuses it.
    pub async fn guest_exec(
        &self,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecOutput, Error> {
        let deadline = Instant::now() + timeout;
        let reply = self
            .execute_timeout("guest-exec", request.arguments(), timeout)
            .await?;
        let mut poll = ExecPoll::start(request, &reply)?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self
                .execute_timeout(
                    "guest-exec-status",
                    poll.status_arguments(),
                    left.max(Duration::from_millis(1)),
                )
                .await?;
            if let Some(output) = poll.on_status(&status)? {
                return Ok(output);
            }
            let pause = poll.next_pause();
            if Instant::now() + pause >= deadline {
                return Err(poll.timed_out(timeout));
            }
            R::sleep(pause).await;
        }
    }

    /// The transport, e.g. `unix:/run/vm1-qga.sock`.
    pub fn transport(&self) -> &str {
        self.client.transport()
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.client.close_reason()
    }

    /// The default call timeout.
    pub fn default_timeout(&self) -> Option<Duration> {
        self.client.default_timeout()
    }

    /// Takes the warnings seen. Stale data is counted, not warned about.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.client.take_warnings()
    }

    /// Counters, including the session's stale, reset and re-sync counts.
    pub fn stats(&self) -> Stats {
        self.client.stats()
    }

    /// Closes the connection (dropping the last handle does the same).
    pub fn close(&self) {
        self.client.close()
    }
}
