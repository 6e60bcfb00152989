//! The async engine of qmp-rs: one implementation of a QMP client over any
//! `futures::io::{AsyncRead, AsyncWrite}` transport, shared by `qmp-smol`, `qmp-async-std` and
//! `qmp-tokio`, and usable from any other runtime through [`Runtime`].
//!
//! The engine moves bytes, routes replies, fans out events and times out calls; every protocol
//! decision is [`qmp_proto::Session`]'s. A runtime supplies what is runtime-specific through
//! [`Runtime`]: spawning the connection's [`Driver`] task, sleeping, and opening sockets and
//! processes. Each runtime crate exports `Client` as `qmp_async::Client<ItsRuntime>`, so the API
//! below is the same on every runtime — and the same as qmp-blocking's, with `.await`.
//!
//! ```no_run
//! # async fn f<R: qmp_async::Runtime>() -> Result<(), qmp_async::Error> {
//! use qmp_qapi::qmp::QueryVersion;
//! use std::time::Duration;
//! let client = qmp_async::Client::<R>::connect_unix("/run/qemu/vm1.qmp").await?;
//! let version = client.run(&QueryVersion).await?;
//! println!("QEMU {}.{}", version.qemu.major, version.qemu.minor);
//! client.execute("stop", ()).await?;
//! client.wait_event("STOP", |_| true, Duration::from_secs(5)).await?;
//! client.quit().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//! A call waiting for its reply reads for the connection, or, when no call waits, one [`Driver`]
//! task per connection does: the reader feeds the session, routes each reply to the slot of the
//! call waiting for it (a call's own reply thus costs no wake of another task), and puts each
//! event in the connection's queue and in the queue of every subscriber whose filter takes it.
//! A call writes its own command on its first poll (the
//! driver writes whatever the socket did not take at once, and what flow control releases
//! later). Bytes to write move from the session into the connection's buffer first, so calls can
//! be dropped at any point without desynchronising the connection. Call timeouts are deadlines
//! the driver keeps, with one timer for the earliest. Details: docs/async-engine.md.

#![deny(missing_docs)]

mod agent;
mod builder;
mod call;
mod client;
mod driver;
mod events;
mod race;
mod read_route;
mod runtime;
mod shared;
mod transport;
#[cfg(feature = "async-io")]
pub mod unix;

pub use agent::{Agent, AgentBuilder};
pub use builder::Builder;
pub use call::{Call, CallOptions};
pub use client::{Client, Stats};
pub use driver::Driver;
pub use events::{EventFilter, EventStream, Events, Missed};
pub use qmp_proto;
pub use qmp_proto::events::EventData;
pub use qmp_proto::{CloseReason, Command, Config, Event, Greeting, Limits, QmpError, Warning};
/// The error of every call, shared by every client of this workspace (see [`qmp_proto::Error`]).
pub use qmp_proto::{Error, ProtocolError};
pub use runtime::{ChildProcess, Runtime};
pub use transport::{SendFds, Transport};

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
