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

/// What a client's `wait_event_typed` keeps while it waits, so that every client applies the
/// same rule: an event named `E::NAME` whose data decodes and `matches` ends the wait with that
/// data; one whose data does not decode as `E` ends it with
/// [`ProtocolError::UnexpectedEvent`](crate::ProtocolError::UnexpectedEvent). Pass
/// [`check`](TypedWait::check) as the untyped wait's predicate, then call
/// [`finish`](TypedWait::finish) when that wait returned.
#[derive(Debug)]
pub struct TypedWait<E, F> {
    matches: F,
    found: Option<Result<E, serde_json::Error>>,
}

impl<E: EventData, F: FnMut(&E) -> bool> TypedWait<E, F> {
    /// A wait for an event of type `E` whose data `matches`.
    pub fn new(matches: F) -> Self {
        TypedWait {
            matches,
            found: None,
        }
    }

    /// The predicate of the untyped wait for `E::NAME`: true when `event` ends the wait.
    pub fn check(&mut self, event: &crate::Event) -> bool {
        match event.decode::<E>() {
            Some(Ok(data)) if (self.matches)(&data) => {
                self.found = Some(Ok(data));
                true
            }
            Some(Err(error)) => {
                self.found = Some(Err(error));
                true
            }
            _ => false,
        }
    }

    /// The outcome, once the untyped wait returned an event: the data, or the decode error.
    pub fn finish(self) -> Result<E, crate::Error> {
        match self.found {
            Some(Ok(data)) => Ok(data),
            Some(Err(error)) => Err(crate::Error::unexpected_event(E::NAME, error)),
            None => Err(crate::Error::Closed { command: None }),
        }
    }
}
