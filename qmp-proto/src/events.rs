//! Typed event data: the [`EventData`] trait, which [`Event::decode`](crate::Event::decode) and
//! the clients' `wait_event_typed` use.
//!
//! The crate `qmp-qapi` generates a data type for every event of QEMU's schema
//! (`qmp_qapi::qmp::event::JobStatusChange`, ...); implement [`EventData`] for your own:
//!
//! ```
//! use qmp_proto::{events::EventData, Event};
//!
//! #[derive(serde::Deserialize)]
//! struct Shutdown {
//!     guest: bool,
//!     reason: String,
//! }
//!
//! impl EventData for Shutdown {
//!     const NAME: &'static str = "SHUTDOWN";
//! }
//!
//! let e = Event {
//!     name: "SHUTDOWN".into(),
//!     data: serde_json::from_str(r#"{"guest": false, "reason": "host-qmp-quit"}"#).unwrap(),
//!     timestamp: None,
//! };
//! let s = e.decode::<Shutdown>().unwrap().unwrap();
//! assert_eq!((s.guest, s.reason.as_str()), (false, "host-qmp-quit"));
//! ```

use serde::Deserialize;

/// Typed data of one QMP event.
pub trait EventData: for<'de> Deserialize<'de> {
    /// The event's name.
    const NAME: &'static str;
}
