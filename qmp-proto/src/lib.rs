//! A sans-IO implementation of the QEMU Machine Protocol (QMP), client side.
//!
//! `qmp-proto` has no sockets, threads, clocks or async: the caller feeds the bytes it read and
//! takes back parsed outputs and bytes to write. The blocking and async clients of this workspace
//! are loops around it, and so can any other event loop.
//!
//! ```
//! use qmp_proto::{Config, Output, Session};
//!
//! let mut session = Session::new(Config::default());
//! // Bytes read from QEMU's monitor socket:
//! session.receive(br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}
//! "#);
//! let id = session.execute("query-version", &()).unwrap();
//! // What to write back: qmp_capabilities now, the command once negotiated.
//! while let Some(t) = session.poll_transmit() {
//!     // socket.write_all(&t.bytes)
//! #   let _ = t;
//! }
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         Output::Greeting(g) => println!("QEMU {}", g.version),
//!         Output::Ready => {}
//!         Output::Reply { id, result } => println!("{id}: {result:?}"),
//!         Output::Event(e) => println!("event {}", e.name),
//!         Output::Warning(w) => eprintln!("warning: {w}"),
//!         Output::Closed(reason) => println!("closed: {reason}"),
//!     }
//! }
//! # let _ = id;
//! ```
//!
//! Modules, one concern each: [`framing`] finds messages in the byte stream, `json` parses them
//! without recursion, [`message`] classifies them, [`decoder`] puts those together, `encode` writes
//! commands, [`session`] is the state machine, [`command`] and [`events`] hold typed definitions.
//! Two modules serve the clients built on the session: [`error`] is the one [`Error`] type every
//! client returns, and [`event_queue`] the bounded queue they keep events in (rule 10 of
//! docs/PROTOCOL.md: never stop reading, so drop the oldest event rather than wait).
//! The limits and the rules for resynchronising after bad input are documented in [`framing`] and
//! [`Limits`].

#![deny(missing_docs)]

pub mod command;
pub mod command_line;
mod config;
pub mod decoder;
mod encode;
pub mod error;
pub mod event_queue;
pub mod events;
pub mod framing;
pub mod guest_exec;
mod json;
pub mod message;
mod read_buffer;
mod recover;
mod scan;
pub mod session;

pub use command::Command;
pub use config::{Config, Limits, Protocol};
pub use decoder::{DecodeError, Decoder};
pub use encode::EncodeError;
pub use error::{Error, ProtocolError};
pub use event_queue::{BoundedQueue, EventQueue};
pub use json::JsonError;
pub use message::{
    ErrorClass, Event, Greeting, QmpError, Reply, ServerMessage, Timestamp, Version,
};
pub use read_buffer::ReadBuffer;
pub use session::{
    CloseReason, CommandError, CommandId, Disconnect, ExecuteOptions, Handshake, IoFailure, Output,
    Session, State, Stats, SubmitError, Transmit, Warning, AGENT_NO_REPLY_COMMANDS,
    MAX_FDS_PER_COMMAND,
};

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
