//! A QEMU Machine Protocol (QMP) client for the [tokio](https://docs.rs/tokio) runtime.
//!
//! Any number of tasks can run commands on one connection at once; events come as streams. The
//! API is qmp-blocking's, with `.await` (the table is in the repository's docs/API.md). All the
//! client logic lives in [`qmp_async`] (shared with `qmp-smol` and `qmp-async-std`); this crate
//! only connects with tokio's sockets and processes, spawns the connection's driver as a tokio
//! task and lends tokio's timers.
//!
//! ```no_run
//! use futures::StreamExt;
//! use qmp_tokio::{Client, EventFilter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
//! # Ok(())
//! # }
//! async fn run() -> Result<(), qmp_tokio::Error> {
//!     let client = Client::connect_unix("/tmp/qmp.sock").await?;
//!     let mut stops = client.subscribe(EventFilter::names(["STOP"]));
//!     let status = client.query("status").await?; // query-status, as a Value
//!     println!("VM is {}", status["status"].as_str().unwrap_or("?"));
//!     client.execute("stop", ()).await?;
//!     if let Some(Ok(event)) = stops.next().await {
//!         println!("{} at {:?}", event.name, event.timestamp);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Which runtime
//! Connecting must happen inside a tokio runtime, multi-thread or current-thread, with its I/O
//! and time drivers enabled (`#[tokio::main]` and `Builder::enable_all` do that); anywhere else
//! it fails with [`Error::Io`] and connects to nothing. The connection belongs to the runtime it
//! was made in: its socket is registered with that runtime's reactor and its driver runs as a
//! task there (call timeouts are the driver's, on that runtime), so the [`Client`] can then be
//! used from any thread or executor while that runtime runs. A wait that needs a timer of its own
//! (`wait_event`, `next_event`, `quit`) polled outside any tokio runtime uses the runtime of the
//! latest connection. On a current-thread runtime the driver only runs while the runtime is being
//! driven (inside its `block_on`): a call awaited elsewhere waits until then. When the runtime
//! shuts down, the connection closes: calls pending or made after fail with [`Error::Closed`].

#![deny(missing_docs)]

mod compat;
mod unix;

pub use qmp_async::{
    Call, CallOptions, CloseReason, Command, Config, Error, Event, EventData, EventFilter,
    EventStream, Events, Greeting, Limits, Missed, ProtocolError, QmpError, Stats, Transport,
    Warning,
};

use compat::Compat;
use futures_core::future::BoxFuture;
use futures_io::AsyncRead;
use qmp_async::ChildProcess;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// A QMP client on tokio: [`qmp_async::Client`] with tokio's sockets, processes and timers.
pub type Client = qmp_async::Client<Tokio>;
/// Configures and opens a [`Client`]: [`qmp_async::Builder`] on tokio.
pub type Builder = qmp_async::Builder<Tokio>;
/// A guest-agent client on this runtime: [`qmp_async::Agent`].
pub type Agent = qmp_async::Agent<Tokio>;
/// Configures and opens an [`Agent`]: [`qmp_async::AgentBuilder`] on this runtime.
pub type AgentBuilder = qmp_async::AgentBuilder<Tokio>;
/// The connection's background task on tokio (spawned by the connect functions).
pub type Driver = qmp_async::Driver<Tokio>;

/// tokio as a [`qmp_async::Runtime`]: drivers run as tasks of the runtime a connection was made
/// in, timers are tokio's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// The runtime of the latest connection, for timers asked for outside any runtime.
static LATEST: Mutex<Option<Handle>> = Mutex::new(None);

/// The current runtime, remembered for timers asked for outside one; an error outside one.
fn current() -> io::Result<Handle> {
    match Handle::try_current() {
        Ok(handle) => {
            *LATEST.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle.clone());
            Ok(handle)
        }
        Err(_) => Err(io::Error::other(
            "qmp-tokio connects only from within a tokio runtime (e.g. under #[tokio::main])",
        )),
    }
}

fn in_runtime<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    current()?;
    f()
}

impl qmp_async::Runtime for Tokio {
    fn spawn(future: BoxFuture<'static, ()>) {
        // The driver is spawned while connecting, inside the runtime (checked by `current`).
        // Outside one it is dropped, which closes the connection (`Driver`'s `Drop`).
        if let Ok(handle) = Handle::try_current() {
            // Dropping the JoinHandle detaches the task.
            drop(handle.spawn(future));
        }
    }

    fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
        // A timer binds to the runtime current at its creation; a wait may be polled elsewhere.
        if Handle::try_current().is_ok() {
            return Box::pin(tokio::time::sleep(duration));
        }
        let latest = LATEST
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match latest {
            Some(handle) => {
                let _runtime = handle.enter();
                Box::pin(tokio::time::sleep(duration))
            }
            // No tokio runtime was ever entered: there is no connection to time out either.
            None => Box::pin(std::future::pending()),
        }
    }

    fn connect_unix(path: &Path) -> BoxFuture<'static, io::Result<Transport>> {
        let path = path.to_owned();
        let runtime = current();
        Box::pin(async move {
            runtime?;
            unix::connect(path).await
        })
    }

    fn connect_tcp(addr: SocketAddr) -> BoxFuture<'static, io::Result<Transport>> {
        let runtime = current();
        Box::pin(async move {
            runtime?;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            Ok(transport(reader, writer))
        })
    }

    fn accept_unix(
        listener: &std::os::unix::net::UnixListener,
    ) -> BoxFuture<'_, io::Result<Transport>> {
        let listener = in_runtime(|| {
            let listener = listener.try_clone()?;
            listener.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(listener)
        });
        Box::pin(async move { unix::accept(&listener?).await })
    }

    fn spawn_process(
        command: std::process::Command,
    ) -> io::Result<(Transport, Box<dyn ChildProcess>)> {
        in_runtime(|| {
            let mut command = tokio::process::Command::from(command);
            command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = command.spawn()?;
            let pipes = child.stdout.take().zip(child.stdin.take());
            let (stdout, stdin) =
                pipes.ok_or_else(|| io::Error::other("child has no stdio pipes"))?;
            let id = child.id().unwrap_or_default();
            Ok((
                transport(stdout, stdin),
                Box::new(TokioChild { child, id }) as Box<dyn ChildProcess>,
            ))
        })
    }
}

/// A spawned QEMU on tokio (killed when dropped).
struct TokioChild {
    child: tokio::process::Child,
    /// tokio forgets the id once the child has been reaped.
    id: u32,
}

impl ChildProcess for TokioChild {
    fn id(&self) -> u32 {
        self.id
    }

    fn kill(&mut self) -> io::Result<()> {
        self.child.start_kill()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    fn take_stderr(&mut self) -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        let stderr = self.child.stderr.take()?;
        Some(Box::new(Compat(stderr)))
    }
}

/// A [`Transport`] over a tokio reader and writer (e.g. the two ends of a pipe pair), for
/// [`Builder::connect_transport`](qmp_async::Builder::connect_transport). The writer must not
/// buffer (or must flush on `poll_flush`).
pub fn transport(
    reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    writer: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
) -> Transport {
    Transport::new(Compat(reader), Compat(writer))
}

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
