//! A blocking QEMU Machine Protocol (QMP) client over std: connect, run commands, watch events,
//! with no async runtime.
//!
//! This crate only moves bytes and threads. Every protocol decision (framing, negotiation, ids,
//! flow control, limits, what a bad message means) is made by [`qmp_proto`].
//!
//! ```no_run
//! use qmp_blocking::Client;
//! use serde_json::json;
//! use std::time::Duration;
//!
//! let client = Client::connect_unix("/run/qemu/vm1.qmp")?;
//! println!("QEMU {}", client.greeting().version);
//!
//! let status = client.query("status")?;                      // query-status
//! println!("VM is {}", status["status"].as_str().unwrap_or("?"));
//!
//! client.execute("stop", ())?;
//! let stop = client.wait_event("STOP", |_| true, Duration::from_secs(5))?;
//! println!("stopped at {:?}", stop.timestamp);
//!
//! match client.execute("blockdev-del", json!({"node-name": "nope"})) {
//!     Err(e) => println!("{e}"), // 'blockdev-del' failed: GenericError: Failed to find node ...
//!     Ok(_) => unreachable!(),
//! }
//! client.quit()?;
//! # Ok::<(), qmp_blocking::Error>(())
//! ```
//!
//! # Transports
//! Every form of QEMU's `-qmp` option, on [`Builder`] (with shortcuts on [`Client`]):
//!
//! | QEMU side | client side |
//! | --- | --- |
//! | `-qmp unix:PATH,server=on,wait=off` | [`Builder::connect_unix`] |
//! | `-qmp tcp:HOST:PORT,server=on,wait=off` | [`Builder::connect_tcp`] |
//! | `-qmp stdio` (QEMU started by the client) | [`Builder::spawn`] |
//! | `-qmp pipe:BASE` (FIFOs `BASE.in`, `BASE.out`) | [`Builder::connect_pipe`] |
//! | `-qmp unix:PATH` (QEMU connects to us) | [`Builder::accept_unix`] |
//! | a stream or reader + writer you already have | [`Builder::connect_unix_stream`], [`Builder::connect_tcp_stream`], [`Builder::connect_io`] |
//!
//! The connect timeout covers connecting and receiving the greeting and negotiating, so a peer
//! that accepts but never greets (e.g. a monitor already serving another client) fails in time.
//! File descriptors ([`Client::getfd`], [`Client::add_fd`], [`CallOptions::fds`]) go over Unix
//! sockets only.
//!
//! # Threads
//! A [`Client`] is `Send + Sync`. The socket is always being read (QEMU buffers unread output
//! without limit, and replies queue behind unread events), by one thread at a time. On a Unix or
//! TCP socket a caller waiting for its reply reads it itself, as the *leader*: it hands bytes to
//! the session, routes other callers' replies and the events, and once its own reply arrives
//! hands the role to another waiting caller. So a sequential call is one write and one read, with
//! no thread hop; its timeout still holds (the read times out, at most about a millisecond late).
//! One reader thread per connection reads whenever no caller leads (taking over within 5 ms of
//! the last call, at once when you wait for an event or a callback). On pipes, a spawned QEMU's
//! stdio and [`Builder::connect_io`] the reader thread alone reads, and wakes the caller whose
//! reply arrived. Events go to a bounded queue that drops the oldest when full
//! ([`Client::dropped_events`]). Callers write their own commands, one
//! write call each. Event handlers and completion callbacks run on a small worker pool
//! ([`Builder::handler_threads`]); a panic there is caught and reported.
//!
//! # Typed commands and events
//! [`Client::run`] takes any [`Command`] and returns its typed output; [`Client::wait_event_typed`]
//! any [`EventData`]. The crate `qmp-qapi` has a type for every command and event of QEMU's
//! schema (`qmp_qapi::qmp::QueryStatus`, `qmp_qapi::qmp::event::JobStatusChange`, ...); this crate
//! does not depend on it, so a tool that needs none of them does not build them.
//!
//! # Errors
//! [`Error`] says what happened: QEMU's error with class, description and the command
//! ([`Error::Qmp`]), [`Error::Timeout`], [`Error::Disconnected`] (at once when QEMU dies, for
//! pending and later calls), [`Error::Protocol`], [`Error::Io`] with the path or address.

#![deny(missing_docs)]

mod agent;
mod builder;
mod child;
mod client;
mod events;
mod handlers;
mod pool;
mod reader;
mod role;
mod shared;
mod slots;
mod transport;
mod writer;

pub use agent::{Agent, AgentBuilder};
pub use builder::Builder;
pub use client::{CallOptions, Client, Stats};
pub use events::Events;
pub use handlers::{HandlerId, HandlerPanic};
/// The error of every call, shared by every client of this workspace (see [`qmp_proto::Error`]).
pub use qmp_proto::{Error, ProtocolError};

pub use qmp_proto;
pub use qmp_proto::events::EventData;
pub use qmp_proto::{
    CloseReason, Command, Config, ErrorClass, Event, Greeting, Limits, QmpError, Warning,
};

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
