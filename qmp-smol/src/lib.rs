//! A QEMU Machine Protocol (QMP) client for the [smol](https://docs.rs/smol) runtime.
//!
//! Any number of tasks can run commands on one connection at once; events come as streams. The
//! API is qmp-blocking's, with `.await` (the table is in the repository's docs/API.md). All the
//! client logic lives in [`qmp_async`] (shared with `qmp-async-std` and `qmp-tokio`); this crate
//! only connects with smol's sockets and processes, spawns the connection's driver on smol's
//! executor and lends smol's timers.
//!
//! ```no_run
//! use futures::StreamExt;
//! use qmp_smol::{Client, EventFilter};
//! use qmp_qapi::qmp::QueryVersion;
//!
//! smol::block_on(async {
//!     let client = Client::connect_unix("/tmp/qmp.sock").await?;
//!     let mut stops = client.subscribe(EventFilter::names(["STOP"]));
//!     let version = client.run(&QueryVersion).await?; // typed
//!     let status = client.query("status").await?; // query-status, as a Value
//!     println!("QEMU {}.{}, VM is {}", version.qemu.major, version.qemu.minor, status["status"]);
//!     client.execute("stop", ()).await?;
//!     if let Some(Ok(event)) = stops.next().await {
//!         println!("{} at {:?}", event.name, event.timestamp);
//!     }
//!     Ok::<(), qmp_smol::Error>(())
//! })?;
//! # Ok::<(), qmp_smol::Error>(())
//! ```

#![deny(missing_docs)]

pub use qmp_async::{
    Call, CallOptions, CloseReason, Command, Config, Error, Event, EventData, EventFilter,
    EventStream, Events, Greeting, Limits, Missed, ProtocolError, QmpError, Stats, Transport,
    Warning,
};

use futures_core::future::BoxFuture;
use futures_io::AsyncRead;
use qmp_async::ChildProcess;
use smol::net::TcpStream;
use smol::process::{Child, Command as Process, Stdio};
use smol::Async;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// A QMP client on smol: [`qmp_async::Client`] with smol's sockets, processes and timers.
pub type Client = qmp_async::Client<Smol>;
/// Configures and opens a [`Client`]: [`qmp_async::Builder`] on smol.
pub type Builder = qmp_async::Builder<Smol>;
/// A guest-agent client on this runtime: [`qmp_async::Agent`].
pub type Agent = qmp_async::Agent<Smol>;
/// Configures and opens an [`Agent`]: [`qmp_async::AgentBuilder`] on this runtime.
pub type AgentBuilder = qmp_async::AgentBuilder<Smol>;
/// The connection's background task on smol (spawned by the connect functions).
pub type Driver = qmp_async::Driver<Smol>;

/// smol as a [`qmp_async::Runtime`]: drivers run on smol's global executor, timers are
/// [`smol::Timer`], Unix sockets go through async-io (smol's reactor) with fd passing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl qmp_async::Runtime for Smol {
    fn spawn(future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }

    fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn connect_unix(path: &Path) -> BoxFuture<'static, io::Result<Transport>> {
        Box::pin(qmp_async::unix::connect(path.to_owned()))
    }

    fn connect_tcp(addr: SocketAddr) -> BoxFuture<'static, io::Result<Transport>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Transport::new(stream.clone(), stream))
        })
    }

    fn accept_unix(listener: &UnixListener) -> BoxFuture<'_, io::Result<Transport>> {
        let listener = listener.try_clone().and_then(Async::new);
        Box::pin(async move { qmp_async::unix::accept(&listener?).await })
    }

    fn spawn_process(
        command: std::process::Command,
    ) -> io::Result<(Transport, Box<dyn ChildProcess>)> {
        let mut command = Process::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pipes = child.stdout.take().zip(child.stdin.take());
        let (stdout, stdin) = pipes.ok_or_else(|| io::Error::other("child has no stdio pipes"))?;
        Ok((Transport::new(stdout, stdin), Box::new(SmolChild(child))))
    }
}

/// A spawned QEMU on smol (killed when dropped).
struct SmolChild(Child);

impl ChildProcess for SmolChild {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) -> io::Result<()> {
        self.0.kill()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_status()
    }

    fn take_stderr(&mut self) -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        let stderr = self.0.stderr.take()?;
        Some(Box::new(stderr))
    }
}

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
