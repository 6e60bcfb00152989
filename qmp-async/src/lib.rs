//! The async engine of qmp-rs: one implementation of a QMP client over any
//! `futures::io::{AsyncRead, AsyncWrite}` transport, shared by `qmp-smol` and `qmp-async-std` and
//! usable from any other runtime.
//!
//! The engine moves bytes, routes replies and fans out events; every protocol decision is
//! [`qmp_proto::Session`]'s. A runtime supplies two things through [`Runtime`]: spawning the
//! connection's [`Driver`] task and sleeping (for timeouts).
//!
//! ```no_run
//! use qmp_async::{Options, Runtime, Transport};
//! use qmp_proto::command::QueryVersion;
//! # async fn f(runtime: std::sync::Arc<dyn Runtime>, transport: Transport) -> Result<(), qmp_async::Error> {
//! let client = qmp_async::connect(async { Ok(transport) }, &Options::default(), runtime).await?;
//! let version = client.run(&QueryVersion).await?;
//! println!("QEMU {}.{}", version.qemu.major, version.qemu.minor);
//! # Ok(()) }
//! ```
//!
//! # How it works
//! One [`Driver`] task per connection reads: it feeds the session, routes each reply to the slot
//! of the call waiting for it, and copies each event into the queue of every subscriber whose
//! filter takes it. A call writes its own command on its first poll (the driver writes whatever
//! the socket did not take at once, and what flow control releases later). Bytes to write move
//! from the session into the connection's buffer first, so calls can be dropped at any point
//! without desynchronising the connection.

#![deny(missing_docs)]

mod client;
mod driver;
mod error;
mod events;
mod shared;
mod transport;
#[cfg(feature = "async-io")]
pub mod unix;

pub use client::{Call, Client};
pub use driver::Driver;
pub use error::Error;
pub use events::{EventFilter, EventStream, Missed};
pub use qmp_proto::{CloseReason, Config, Event, Greeting, QmpError};
pub use transport::{SendFds, Transport};

use futures::future::BoxFuture;
use qmp_proto::Session;
use shared::{Inner, Shared};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the engine needs from an async runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `future` in the background to completion.
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Options of a connection.
#[derive(Debug, Clone)]
pub struct Options {
    /// The session's configuration (limits, `oob`, id prefix).
    pub config: Config,
    /// How long connecting may take, up to the end of capability negotiation. Default: 10 s.
    pub connect_timeout: Option<Duration>,
    /// The timeout of every call, unless a handle sets its own ([`Client::with_timeout`]).
    /// Default: 30 s, as in qmp-blocking, so that a call with default options ends, with
    /// [`Error::Timeout`], even when QEMU goes silent. `None` waits without limit (for a command
    /// known to take longer, or a caller with its own deadline); a call that times out is
    /// abandoned, and its late reply is discarded.
    pub timeout: Option<Duration>,
    /// How many unread events each subscriber may hold before the oldest are dropped (and
    /// counted). Default: 1024.
    pub event_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config::default(),
            connect_timeout: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(30)),
            event_buffer: 1024,
        }
    }
}

/// Sets up a connection over `transport` without spawning anything (hyper's `handshake` style):
/// returns the handle and the driver task, which the caller must spawn for anything to happen.
/// `runtime` provides the timers of timeouts. Commands issued before negotiation completes are
/// queued; [`connect`] is this plus spawning and waiting for negotiation.
pub fn connection(
    transport: Transport,
    options: &Options,
    runtime: Arc<dyn Runtime>,
) -> (Client, Driver) {
    let shared = Shared {
        session: Session::new(options.config.clone()),
        io: driver::Io::new(transport),
        slots: HashMap::new(),
        fds: HashMap::new(),
        subscribers: HashMap::new(),
        next_subscriber: 0,
        driver_waker: None,
        watchers: Vec::new(),
        ready: false,
        closed: None,
        users: 1,
        warnings: VecDeque::new(),
        io_error: None,
        event_buffer: options.event_buffer.max(1),
        driver_polls: 0,
    };
    let inner = Arc::new(Inner {
        shared: Mutex::new(shared),
        runtime,
    });
    let driver = Driver::new(inner.clone());
    (Client::new(inner, options.timeout), driver)
}

/// Connects: opens the transport with `open` (e.g. [`unix::connect`]), spawns the driver on
/// `runtime` and waits for capability negotiation, all within `options.connect_timeout`.
pub async fn connect<F>(
    open: F,
    options: &Options,
    runtime: Arc<dyn Runtime>,
) -> Result<Client, Error>
where
    F: Future<Output = std::io::Result<Transport>>,
{
    let limit = options.connect_timeout;
    let rt = runtime.clone();
    timeout(&*rt, limit, async move {
        let (client, driver) = connection(open.await?, options, runtime.clone());
        runtime.spawn(Box::pin(driver));
        client.ready().await?;
        Ok(client)
    })
    .await?
}

/// Runs `future` with a time limit (`None`: no limit) on `runtime`'s timer.
pub async fn timeout<F: Future>(
    runtime: &dyn Runtime,
    limit: Option<Duration>,
    future: F,
) -> Result<F::Output, Error> {
    let Some(limit) = limit else {
        return Ok(future.await);
    };
    let future = std::pin::pin!(future);
    match futures::future::select(future, runtime.sleep(limit)).await {
        futures::future::Either::Left((out, _)) => Ok(out),
        futures::future::Either::Right(_) => Err(Error::Timeout),
    }
}
