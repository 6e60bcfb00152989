//! What the engine needs from an async runtime: tasks, timers, and opening connections.

use crate::Transport;
use futures_core::future::BoxFuture;
use futures_io::AsyncRead;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// An async runtime as the engine uses it. The runtime crates (`qmp-smol`, `qmp-async-std`,
/// `qmp-tokio`) each implement it for a unit type and export `Client` as
/// `qmp_async::Client<ThatType>`; implement it yourself to use another runtime.
///
/// Everything here is connection setup, spawning and timers: the engine does the rest.
pub trait Runtime: Send + Sync + Sized + 'static {
    /// Runs `future` in the background to completion (the connection's [`Driver`](crate::Driver)).
    fn spawn(future: BoxFuture<'static, ()>);
    /// A future that completes after `duration`.
    fn sleep(duration: Duration) -> BoxFuture<'static, ()>;
    /// Connects to a Unix socket, with file-descriptor passing
    /// ([`Transport::with_fd_sender`]).
    fn connect_unix(path: &Path) -> BoxFuture<'static, io::Result<Transport>>;
    /// Connects over TCP (with `TCP_NODELAY`: commands are small and written whole).
    fn connect_tcp(addr: SocketAddr) -> BoxFuture<'static, io::Result<Transport>>;
    /// Accepts one connection on `listener` (switching it to non-blocking mode).
    fn accept_unix(listener: &UnixListener) -> BoxFuture<'_, io::Result<Transport>>;
    /// Starts `command` with piped stdin and stdout and speaks QMP over them.
    fn spawn_process(
        command: std::process::Command,
    ) -> io::Result<(Transport, Box<dyn ChildProcess>)>;
}

/// A process the client started (a QEMU with its monitor on stdio), as the runtime provides it.
pub trait ChildProcess: Send {
    /// Its process id.
    fn id(&self) -> u32;
    /// Kills it (no-op once it has exited).
    fn kill(&mut self) -> io::Result<()>;
    /// Its exit status if it has exited (reaping it), without waiting.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Its stderr, if the command piped it and it was not taken yet.
    fn take_stderr(&mut self) -> Option<Box<dyn AsyncRead + Send + Unpin>>;
}
