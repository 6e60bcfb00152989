//! A QEMU Machine Protocol (QMP) client for the [tokio](https://docs.rs/tokio) runtime.
//!
//! Any number of tasks can run commands on one connection at once; events come as streams. All
//! the client logic lives in [`qmp_async`] (shared with `qmp-smol` and `qmp-async-std`); this
//! crate only connects with tokio's sockets and processes, spawns the connection's driver as a
//! tokio task and lends tokio's timers.
//!
//! ```no_run
//! use futures::StreamExt;
//! use qmp_proto::command::QueryVersion;
//! use qmp_tokio::{EventFilter, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let client = qmp_tokio::connect_unix("/tmp/qmp.sock", Options::default()).await?;
//!     let mut stops = client.subscribe(EventFilter::names(["STOP"]));
//!     let version = client.run(&QueryVersion).await?; // typed
//!     let status = client.query("status").await?; // query-status, as a Value
//!     println!("QEMU {}.{}, VM is {}", version.qemu.major, version.qemu.minor, status["status"]);
//!     client.execute("stop", &()).await?;
//!     if let Some(Ok(event)) = stops.next().await {
//!         println!("{} at {:?}", event.name, event.timestamp);
//!     }
//!     Ok::<(), qmp_tokio::Error>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! # Which runtime
//! The `connect*` functions must be polled inside a tokio runtime, multi-thread or
//! current-thread, with its I/O and time drivers enabled (`#[tokio::main]` and
//! `Builder::enable_all` do that); polled anywhere else they fail with [`Error::Io`] and
//! connect to nothing. The connection belongs to the runtime it was made in: its socket is
//! registered with that runtime's reactor and its driver runs as a task there, so the
//! [`Client`] can then be used from any thread or executor while that runtime runs. On a
//! current-thread runtime the driver only runs while the runtime is being driven (inside its
//! `block_on`): a call awaited elsewhere waits until then. When the runtime shuts down, the
//! connection closes: calls pending or made after fail with [`Error::Closed`].

#![deny(missing_docs)]

mod compat;
mod unix;

pub use qmp_async::{
    Call, Client, CloseReason, Config, Driver, Error, Event, EventFilter, EventStream, Missed,
    Options, Runtime, Transport,
};

use compat::Compat;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpStream, UnixListener};
use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// tokio as a [`Runtime`]: drivers run as tasks of one tokio runtime, timers are tokio's, so both
/// work whichever thread asks for them.
#[derive(Debug, Clone)]
pub struct Tokio(Handle);

impl Tokio {
    /// The tokio runtime this is called from; `None` outside one.
    pub fn try_current() -> Option<Tokio> {
        Handle::try_current().ok().map(Tokio)
    }

    /// The runtime behind `handle`.
    pub fn new(handle: Handle) -> Tokio {
        Tokio(handle)
    }
}

impl Runtime for Tokio {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        // Dropping the JoinHandle detaches the task.
        drop(self.0.spawn(future));
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // A timer binds to the runtime current at its creation; calls may be polled elsewhere.
        let _runtime = self.0.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

fn runtime() -> Result<Arc<dyn Runtime>, Error> {
    match Tokio::try_current() {
        Some(tokio) => Ok(Arc::new(tokio)),
        None => Err(Error::Io(io::Error::other(
            "qmp-tokio connects only from within a tokio runtime (e.g. under #[tokio::main])",
        ))),
    }
}

/// Connects to a monitor listening on the Unix socket `path` (`-qmp unix:PATH,server=on`).
/// File descriptors can be passed on this connection.
pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Client, Error> {
    let runtime = runtime()?;
    qmp_async::connect(unix::connect(path), &options, runtime).await
}

/// Connects to a monitor listening on TCP (`-qmp tcp:HOST:PORT,server=on`).
pub async fn connect_tcp(addr: SocketAddr, options: Options) -> Result<Client, Error> {
    let runtime = runtime()?;
    let open = async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(transport(reader, writer))
    };
    qmp_async::connect(open, &options, runtime).await
}

/// Waits for QEMU to connect to `listener` (accept mode: QEMU started with `-qmp unix:PATH`
/// without `server=on`, after the listener was bound) and connects over that socket.
/// `options.connect_timeout` covers the wait.
pub async fn accept_unix(listener: &UnixListener, options: Options) -> Result<Client, Error> {
    let runtime = runtime()?;
    qmp_async::connect(unix::accept(listener), &options, runtime).await
}

/// Spawns `command`, a QEMU with its monitor on standard input and output (`-qmp stdio`, or
/// `-chardev stdio,id=m -mon chardev=m,mode=control`), and connects to it. The child is killed
/// when its [`Child`] handle is dropped.
pub async fn spawn_stdio(
    command: std::process::Command,
    options: Options,
) -> Result<(Client, Child), Error> {
    let runtime = runtime()?;
    let mut command = Command::from(command);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pipes = child.stdout.take().zip(child.stdin.take());
    let (stdout, stdin) = pipes.ok_or_else(|| io::Error::other("child has no stdio pipes"))?;
    let open = async move { Ok(transport(stdout, stdin)) };
    let client = qmp_async::connect(open, &options, runtime).await?;
    Ok((client, child))
}

/// Connects over any transport (e.g. a pipe pair, see [`transport`]), spawning its driver as a
/// tokio task.
pub async fn connect(transport: Transport, options: Options) -> Result<Client, Error> {
    let runtime = runtime()?;
    qmp_async::connect(async { Ok(transport) }, &options, runtime).await
}

/// A [`Transport`] over a tokio reader and writer, e.g. the two ends of a pipe pair, for
/// [`connect`]. The writer must not buffer (or must flush on `poll_flush`).
pub fn transport(
    reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    writer: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
) -> Transport {
    Transport::new(Compat(reader), Compat(writer))
}
