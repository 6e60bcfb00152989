//! A QMP session as the subcommands use it: qmp-blocking's client, with its errors turned into
//! messages and exit statuses.

use crate::schema::Schema;
use crate::Failure;
use qmp_blocking::{Agent, Client, Error, Event, Greeting};
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

/// What a [`Monitor`] talks to.
enum Conn {
    /// A QMP monitor.
    Qmp(Client),
    /// A guest agent (`--qga`).
    Agent(Agent),
}

/// A negotiated QMP connection, or a synced guest-agent one.
pub(crate) struct Monitor {
    conn: Conn,
    /// How messages name the target, e.g. `the QMP socket /tmp/qmp.sock`.
    target: String,
    timeout: Duration,
    /// Dropped events already reported.
    dropped_reported: AtomicU64,
}

impl Monitor {
    pub(crate) fn new(client: Client, target: String, timeout: Duration) -> Monitor {
        Monitor {
            conn: Conn::Qmp(client),
            target,
            timeout,
            dropped_reported: AtomicU64::new(0),
        }
    }

    /// A guest-agent connection (`--qga`).
    pub(crate) fn agent(agent: Agent, target: String, timeout: Duration) -> Monitor {
        Monitor {
            conn: Conn::Agent(agent),
            target,
            timeout,
            dropped_reported: AtomicU64::new(0),
        }
    }

    /// The QMP client, for what needs no translation (handlers, counters); `None` for a guest
    /// agent.
    pub(crate) fn client(&self) -> Option<&Client> {
        match &self.conn {
            Conn::Qmp(c) => Some(c),
            Conn::Agent(_) => None,
        }
    }

    /// Whether this is a guest agent (`--qga`).
    pub(crate) fn is_agent(&self) -> bool {
        matches!(self.conn, Conn::Agent(_))
    }

    /// QEMU's greeting (a guest agent has none).
    pub(crate) fn greeting(&self) -> Option<&Greeting> {
        self.client().map(Client::greeting)
    }

    /// Whether the connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        match &self.conn {
            Conn::Qmp(c) => c.is_connected(),
            Conn::Agent(a) => a.is_connected(),
        }
    }

    /// Runs `handler` for every event (a guest agent sends none worth waiting for).
    pub(crate) fn on_any_event(&self, handler: impl Fn(&Event) + Send + Sync + 'static) {
        if let Conn::Qmp(c) = &self.conn {
            c.on_any_event(handler);
        }
    }

    /// Runs `name` with `args` and waits (up to the timeout) for its reply. A QMP error is a
    /// [`Failure`] with exit status 1, an argument qmp-proto refuses to send one with 2.
    pub(crate) fn execute(
        &self,
        name: &str,
        args: Option<Map<String, Value>>,
    ) -> Result<Value, Failure> {
        let result = match &self.conn {
            Conn::Qmp(c) => c.execute(name, &args),
            Conn::Agent(a) => a.execute(name, &args),
        };
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
        let Conn::Qmp(client) = &self.conn else {
            return Err(Failure::usage(
                "quit is a QMP command; the guest agent has guest-shutdown",
            ));
        };
        let result = client.quit();
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

    /// Reads the live schema. For a guest agent, which has no `query-qmp-schema`: its command
    /// list from `guest-info` (the enabled commands, without argument types).
    pub(crate) fn schema(&self) -> Result<Schema, Failure> {
        if self.is_agent() {
            let info = self.execute("guest-info", None)?;
            return Schema::from_value(&crate::schema::agent_commands(&info))
                .map_err(|e| Failure::connection(e.to_string()));
        }
        let v = self.execute("query-qmp-schema", None)?;
        Schema::from_value(&v).map_err(|e| Failure::connection(e.to_string()))
    }

    /// The next queued event, waiting at most `timeout` (`None`: as long as it takes).
    pub(crate) fn next_event(&self, timeout: Option<Duration>) -> Recv {
        let client = match &self.conn {
            Conn::Qmp(c) => c,
            Conn::Agent(a) => {
                // No events to wait for: only whether the connection is still there.
                if let Some(t) = timeout {
                    std::thread::sleep(t);
                }
                return if a.is_connected() {
                    Recv::TimedOut
                } else {
                    Recv::Closed
                };
            }
        };
        let next = match timeout {
            Some(t) => client.next_event(t),
            None => client
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
        let client = match &self.conn {
            Conn::Qmp(c) => c,
            Conn::Agent(a) => {
                for w in a.take_warnings() {
                    eprintln!("qmp: warning: {w}");
                }
                return;
            }
        };
        for w in client.take_warnings() {
            eprintln!("qmp: warning: {w}");
        }
        let dropped = client.dropped_events();
        let before = self.dropped_reported.swap(dropped, Ordering::Relaxed);
        if dropped > before {
            eprintln!(
                "qmp: warning: {} events dropped: too many arrived unread",
                dropped - before
            );
        }
    }
}
