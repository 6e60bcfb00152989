//! The guest-agent client: [`Agent`] and [`AgentBuilder`].

use crate::{Builder, CallOptions, Client, Error, Stats};
use qmp_proto::guest_exec::{ExecOutput, ExecPoll, ExecRequest};
use qmp_proto::{CloseReason, Command, Config, Greeting, Limits, Version, Warning};
use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
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

/// Configures and opens an [`Agent`]; from [`Agent::builder`]. The options are the
/// [`Builder`]'s; the connect timeout bounds connecting **and** the first sync.
///
/// ```no_run
/// use qmp_blocking::Agent;
/// use std::time::Duration;
/// let agent = Agent::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .timeout(Duration::from_secs(10))
///     .connect_unix("/run/vm1-qga.sock")?;
/// # let _ = agent;
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    builder: Builder,
    config: Config,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            builder: Builder::default(),
            config: Config::agent(),
        }
    }
}

impl AgentBuilder {
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

    /// Limits on what is received and sent ([`Limits::agent`] unless set: 64 MiB + 4 KiB per
    /// message, room for `guest-file-read`'s largest reply).
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

    fn ready(self) -> Builder {
        self.builder.config(self.config)
    }

    /// Connects to the host end of the agent's port: QEMU's `-chardev
    /// socket,path=PATH,server=on,wait=off,id=qga0 -device virtio-serial -device
    /// virtserialport,chardev=qga0,name=org.qemu.guest_agent.0`, or `qemu-ga -m unix-listen -p PATH`.
    pub fn connect_unix(self, path: impl AsRef<Path>) -> Result<Agent, Error> {
        self.ready().connect_unix(path).map(Agent::new)
    }

    /// Connects to a TCP chardev (`-chardev socket,host=...,port=...,server=on,wait=off`).
    pub fn connect_tcp(self, addr: impl ToSocketAddrs) -> Result<Agent, Error> {
        self.ready().connect_tcp(addr).map(Agent::new)
    }

    /// Uses a Unix socket that is already connected.
    pub fn connect_unix_stream(self, stream: UnixStream) -> Result<Agent, Error> {
        self.ready().connect_unix_stream(stream).map(Agent::new)
    }

    /// Uses a TCP stream that is already connected.
    pub fn connect_tcp_stream(self, stream: TcpStream) -> Result<Agent, Error> {
        self.ready().connect_tcp_stream(stream).map(Agent::new)
    }

    /// Speaks to an agent over any reader and writer: e.g. a serial device opened twice, or a
    /// [`File`](std::fs::File) and its `try_clone`. Closing the agent closes the writer; the
    /// reader thread ends when its next read returns.
    pub fn connect_io(
        self,
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> Result<Agent, Error> {
        self.ready().connect_io(reader, writer).map(Agent::new)
    }
}

/// A blocking client of the QEMU guest agent (`qemu-ga`). The same machinery as [`Client`]
/// (one reader thread, timeouts, [`Error`]), with the agent's rules from qmp-proto: no
/// greeting, a `guest-sync-delimited` on connect and after every call that timed out, one
/// command at a time, stale replies dropped (see qmp-proto's session docs, "The guest agent").
///
/// ```no_run
/// use qmp_blocking::Agent;
/// use qmp_blocking::qmp_proto::guest_exec::ExecRequest;
/// use std::time::Duration;
///
/// let agent = Agent::connect_unix("/run/vm1-qga.sock")?;
/// agent.execute("guest-ping", ())?;
/// let info = agent.execute("guest-info", ())?;
/// println!("qemu-ga {}", info["version"]);
/// let out = agent.guest_exec(&ExecRequest::new("/bin/uname").arg("-r"), Duration::from_secs(10))?;
/// println!("kernel {}", String::from_utf8_lossy(&out.stdout));
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug)]
pub struct Agent {
    client: Client,
}

impl Agent {
    fn new(client: Client) -> Self {
        Agent { client }
    }

    /// An [`AgentBuilder`] with the defaults: 30 s call timeout, 10 s connect timeout,
    /// [`Limits::agent`].
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Connects to a Unix socket with the defaults (see [`AgentBuilder::connect_unix`]).
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Agent, Error> {
        Agent::builder().connect_unix(path)
    }

    /// Connects over TCP with the defaults.
    pub fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Agent, Error> {
        Agent::builder().connect_tcp(addr)
    }

    /// Runs a command and returns its `return` value (`{}` for a command that does not reply
    /// on success, such as `guest-shutdown`, once the agent has read the next command or gone
    /// away). On timeout the session syncs again before the next command, so a late reply is
    /// never taken for another command's.
    pub fn execute(&self, name: &str, args: impl Serialize) -> Result<Value, Error> {
        self.client.execute(name, args)
    }

    /// Like [`Agent::execute`], waiting at most `timeout`.
    pub fn execute_timeout(
        &self,
        name: &str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.client.execute_timeout(name, args, timeout)
    }

    /// Runs a command with options (a timeout; the agent has no `oob` and takes no file
    /// descriptors).
    pub fn execute_with(
        &self,
        name: &str,
        args: impl Serialize,
        options: CallOptions<'_>,
    ) -> Result<Value, Error> {
        self.client.execute_with(name, args, options)
    }

    /// Runs a typed command (`qmp_qapi::qga::GuestInfo`, ...) and decodes its reply.
    ///
    /// ```no_run
    /// use qmp_qapi::qga::GuestGetOsinfo;
    /// # let agent = qmp_blocking::Agent::connect_unix("/run/vm1-qga.sock")?;
    /// let os = agent.run(&GuestGetOsinfo)?;
    /// println!("{:?}", os.pretty_name);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn run<C: Command>(&self, command: &C) -> Result<C::Output, Error> {
        self.client.run(command)
    }

    /// [`Agent::run`] with options.
    pub fn run_with<C: Command>(
        &self,
        command: &C,
        options: CallOptions<'_>,
    ) -> Result<C::Output, Error> {
        self.client.run_with(command, options)
    }

    /// Runs a process in the guest and waits for it: `guest-exec` with its output captured, then
    /// `guest-exec-status` every 5 to 100 ms until it exits, its output decoded from base64.
    /// Fails with [`Error::Timeout`] if it has not exited within `timeout` (the process keeps
    /// running in the guest), or with [`Error::Qmp`] when the agent refuses it (no such file, or
    /// `guest-exec` disabled).
    pub fn guest_exec(
        &self,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecOutput, Error> {
        let deadline = Instant::now() + timeout;
        let reply = self.execute_timeout("guest-exec", request.arguments(), timeout)?;
        let mut poll = ExecPoll::start(request, &reply)?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self.execute_timeout(
                "guest-exec-status",
                poll.status_arguments(),
                left.max(Duration::from_millis(1)),
            )?;
            if let Some(output) = poll.on_status(&status)? {
                return Ok(output);
            }
            let pause = poll.next_pause();
            if Instant::now() + pause >= deadline {
                return Err(poll.timed_out(timeout));
            }
            std::thread::sleep(pause);
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

    /// Takes the warnings seen (the latest 64). Stale data is counted, not warned about
    /// ([`qmp_proto::Stats::stale`], [`qmp_proto::Stats::unmatched_replies`]).
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.client.take_warnings()
    }

    /// Counters, including the session's stale, reset and re-sync counts.
    pub fn stats(&self) -> Stats {
        self.client.stats()
    }

    /// Closes the connection (dropping the agent does the same).
    pub fn close(&self) {
        self.client.close()
    }
}
