//! A QEMU Machine Protocol (QMP) client for the [smol](https://docs.rs/smol) runtime.
//!
//! Any number of tasks can run commands on one connection at once; events come as streams. All
//! the client logic lives in [`qmp_async`] (shared with `qmp-async-std`); this crate only
//! connects with smol's sockets and processes, spawns the connection's driver on smol's executor
//! and lends smol's timers.
//!
//! ```no_run
//! use futures::StreamExt;
//! use qmp_proto::command::QueryVersion;
//! use qmp_smol::{EventFilter, Options};
//!
//! smol::block_on(async {
//!     let client = qmp_smol::connect_unix("/tmp/qmp.sock", Options::default()).await?;
//!     let mut stops = client.subscribe(EventFilter::names(["STOP"]));
//!     let version = client.run(&QueryVersion).await?; // typed
//!     let status = client.query("status").await?; // query-status, as a Value
//!     println!("QEMU {}.{}, VM is {}", version.qemu.major, version.qemu.minor, status["status"]);
//!     client.execute("stop", &()).await?;
//!     if let Some(Ok(event)) = stops.next().await {
//!         println!("{} at {:?}", event.name, event.timestamp);
//!     }
//!     Ok::<(), qmp_smol::Error>(())
//! })?;
//! # Ok::<(), qmp_smol::Error>(())
//! ```

#![deny(missing_docs)]

pub use qmp_async::{
    Call, Client, CloseReason, Config, Driver, Error, Event, EventFilter, EventStream, Missed,
    Options, Runtime, Transport,
};

use smol::net::TcpStream;
use smol::process::{Child, Command, Stdio};
use smol::Async;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// smol as a [`Runtime`]: drivers run on smol's global executor, timers are [`smol::Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        smol::spawn(future).detach();
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
}

fn runtime() -> Arc<dyn Runtime> {
    Arc::new(Smol)
}

/// Connects to a monitor listening on the Unix socket `path` (`-qmp unix:PATH,server=on`).
/// File descriptors can be passed on this connection.
pub async fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Client, Error> {
    qmp_async::connect(qmp_async::unix::connect(path), &options, runtime()).await
}

/// Connects to a monitor listening on TCP (`-qmp tcp:HOST:PORT,server=on`).
pub async fn connect_tcp(addr: SocketAddr, options: Options) -> Result<Client, Error> {
    let open = async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Transport::new(stream.clone(), stream))
    };
    qmp_async::connect(open, &options, runtime()).await
}

/// Waits for QEMU to connect to `listener` (accept mode: QEMU started with `-qmp unix:PATH`
/// without `server=on`, after the listener was bound) and connects over that socket.
/// `options.connect_timeout` covers the wait.
pub async fn accept_unix(
    listener: &Async<UnixListener>,
    options: Options,
) -> Result<Client, Error> {
    qmp_async::connect(qmp_async::unix::accept(listener), &options, runtime()).await
}

/// Spawns `command`, a QEMU with its monitor on standard input and output (`-qmp stdio`, or
/// `-chardev stdio,id=m -mon chardev=m,mode=control`), and connects to it. The child is killed
/// when its [`Child`] handle is dropped.
pub async fn spawn_stdio(
    command: std::process::Command,
    options: Options,
) -> Result<(Client, Child), Error> {
    let mut command = Command::from(command);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pipes = child.stdout.take().zip(child.stdin.take());
    let (stdout, stdin) = pipes.ok_or_else(|| io::Error::other("child has no stdio pipes"))?;
    let open = async move { Ok(Transport::new(stdout, stdin)) };
    let client = qmp_async::connect(open, &options, runtime()).await?;
    Ok((client, child))
}

/// Connects over any transport (e.g. a pipe pair), spawning its driver on smol's executor.
pub async fn connect(transport: Transport, options: Options) -> Result<Client, Error> {
    qmp_async::connect(async { Ok(transport) }, &options, runtime()).await
}
