//! The blocking event iterator.

use crate::{Client, Error};
use qmp_proto::Event;
use std::fmt;
use std::time::Duration;

/// A blocking iterator over events, from [`Client::events`].
///
/// `next()` waits without limit and returns `None` once the connection has closed and every
/// queued event has been read. [`Events::next_timeout`] waits at most a given time.
///
/// ```no_run
/// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
/// for event in client.events() {
///     println!("{} {:?}", event.name, event.data);
///     if event.name == "SHUTDOWN" {
///         break;
///     }
/// }
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
pub struct Events<'a> {
    pub(crate) client: &'a Client,
}

impl Events<'_> {
    /// The next event, waiting at most `timeout`: [`Error::Timeout`] when none came,
    /// [`Error::Disconnected`] when the connection closed and nothing is left.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Event, Error> {
        self.client.next_event(timeout)
    }
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.client.next_event_until(None).ok()
    }
}

impl fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}
