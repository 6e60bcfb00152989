//! A QMP session as the subcommands use it: qmp-blocking's client, with its errors turned into
//! messages and exit statuses.

use crate::schema::Schema;
use crate::Failure;
use qmp_blocking::{Client, Error, Event};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What [`Monitor::next_event`] got.
#[derive(Debug)]
pub(crate) enum Recv {
    /// An event.
    Event(Event),
    /// Nothing arrived in time.
    TimedOut,
    /// The connection closed; no more events will come.
    Closed,
}

/// A negotiated QMP connection.
pub(crate) struct Monitor {
    client: Client,
    /// How messages name the target, e.g. `the QMP socket /tmp/qmp.sock`.
    target: String,
    timeout: Duration,
    /// Dropped events already reported.
    dropped_reported: AtomicU64,
}

impl Monitor {
    pub(crate) fn new(client: Client, target: String, timeout: Duration) -> Monitor {
        Monitor {
            client,
            target,
            timeout,
            dropped_reported: AtomicU64::new(0),
        }
    }

    /// The client, for what needs no translation (greeting, handlers, connection state).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `name` with `args` and waits (up to the timeout) for its reply. A QMP error is a
    /// [`Failure`] with exit status 1, an argument qmp-proto refuses to send one with 2.
    pub(crate) fn execute(
        &self,
        name: &str,
        args: Option<Map<String, Value>>,
    ) -> Result<Value, Failure> {
        let result = self.client.execute(name, &args);
        self.report();
        result.map_err(|e| match e {
            Error::Qmp { error, .. } => Failure::qmp(&error),
            Error::Timeout { .. } => Failure::connection(format!(
                "no reply to {name} from {} within {:?} (raise --timeout for slow commands)",
                self.target, self.timeout
            )),
            Error::Disconnected { reason, .. } => self.closed(&reason.to_string()),
            Error::Closed { .. } => self.closed("closed by qmp"),
            Error::Refused { reason, .. } => {
                Failure::usage(format!("cannot send {name}: {reason}"))
            }
            e => Failure::connection(e.to_string()),
        })
    }

    /// `quit`: QEMU exits; waits (up to the timeout) until it has closed the connection.
    pub(crate) fn quit(&self) -> Result<(), Failure> {
        let result = self.client.quit();
        self.report();
        result.map_err(|e| match e {
            Error::Disconnected { reason, .. } => self.closed(&reason.to_string()),
            e => Failure::connection(e.to_string()),
        })
    }

    fn closed(&self, detail: &str) -> Failure {
        Failure::connection(format!("{} closed the connection ({detail})", self.target))
    }

    /// Runs an HMP command line and returns its text output.
    pub(crate) fn hmp(&self, command_line: &str) -> Result<String, Failure> {
        let mut args = Map::new();
        args.insert("command-line".into(), Value::String(command_line.into()));
        let v = self.execute("human-monitor-command", Some(args))?;
        Ok(crate::output::hmp_text(&v))
    }

    /// Reads the live schema.
    pub(crate) fn schema(&self) -> Result<Schema, Failure> {
        let v = self.execute("query-qmp-schema", None)?;
        Schema::from_value(&v).map_err(|e| Failure::connection(e.to_string()))
    }

    /// The next queued event, waiting at most `timeout` (`None`: as long as it takes).
    pub(crate) fn next_event(&self, timeout: Option<Duration>) -> Recv {
        let next = match timeout {
            Some(t) => self.client.next_event(t),
            None => self
                .client
                .events()
                .next()
                .ok_or(Error::Closed { command: None }),
        };
        self.report();
        match next {
            Ok(e) => Recv::Event(e),
            Err(e) if e.is_timeout() => Recv::TimedOut,
            Err(_) => Recv::Closed,
        }
    }

    /// Prints, on stderr, the warnings qmp-blocking kept (garbage skipped, id-less errors,
    /// replies nobody waited for) and how many events were dropped since the last report.
    pub(crate) fn report(&self) {
        for w in self.client.take_warnings() {
            eprintln!("qmp: warning: {w}");
        }
        let dropped = self.client.dropped_events();
        let before = self.dropped_reported.swap(dropped, Ordering::Relaxed);
        if dropped > before {
            eprintln!(
                "qmp: warning: {} events dropped: too many arrived unread",
                dropped - before
            );
        }
    }
}
