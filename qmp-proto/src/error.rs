//! The one error type of every client in this workspace: [`Error`].
//!
//! `qmp-blocking`, `qmp-async` and the runtime crates (`qmp-smol`, `qmp-async-std`, `qmp-tokio`)
//! all return this type, re-exported as their own `Error`, so a variant means the same thing
//! everywhere and code moves between clients unchanged. It lives in the sans-IO core because it is
//! built from the core's outcomes ([`CommandError`], [`SubmitError`], [`CloseReason`]); the
//! clients add only what happened around them (a timeout, an I/O error while connecting).

use crate::{CloseReason, CommandError, DecodeError, QmpError, SubmitError};
use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong with a call or a connection. Each variant is something a caller can act on;
/// the `Display` text says what happened, names the command, and where it helps, what to check.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// QEMU answered the command with an error. The connection is fine; the command failed.
    Qmp {
        /// The command that failed.
        command: String,
        /// QEMU's error: class and description.
        error: QmpError,
    },
    /// No answer in time. A command that timed out stays registered as abandoned, so its late
    /// reply is discarded and the connection stays usable: retrying is safe.
    Timeout {
        /// What was awaited, e.g. `the reply to 'query-status'`.
        waiting_for: String,
        /// How long.
        after: Duration,
    },
    /// The connection to QEMU ended: QEMU exited (also after `quit`), was killed, closed the
    /// socket, or a read or write failed. Every later call fails the same way; reconnect to go on.
    Disconnected {
        /// The command concerned, if any.
        command: Option<String>,
        /// Whether that command had been written to QEMU (false: it was still queued, or was
        /// made after the end, and QEMU never saw it).
        sent: bool,
        /// How the connection ended (what [`CloseReason`] says).
        reason: CloseReason,
    },
    /// A QEMU the client spawned exited before the QMP handshake completed (a bad option, say);
    /// its stderr says why.
    Exited {
        /// How it ended.
        status: std::process::ExitStatus,
        /// The transport, e.g. `stdio:qemu-system-x86_64`.
        transport: String,
    },
    /// The client was closed on this side (its `close()`, or every handle dropped).
    Closed {
        /// The command concerned, if any.
        command: Option<String>,
    },
    /// The peer broke the protocol: a reply that could not be decoded (too large, too deep, not
    /// JSON, not QMP), a failed capability negotiation, or a reply of the wrong shape for a typed
    /// command.
    Protocol {
        /// The command concerned, if any.
        command: Option<String>,
        /// What was wrong.
        problem: ProtocolError,
    },
    /// The command was refused before sending (arguments QEMU would reject without an answer,
    /// `exec-oob` without the `oob` capability, too many file descriptors); nothing was sent.
    Refused {
        /// The command.
        command: String,
        /// Why.
        reason: SubmitError,
    },
    /// File descriptors can only be passed over a Unix socket.
    FdPassingUnsupported {
        /// The command that carried them.
        command: String,
        /// The transport in use, e.g. `tcp:127.0.0.1:4444`.
        transport: String,
    },
    /// Guest agent: nothing answered `guest-sync-delimited` within the connect timeout. The
    /// socket is open (QEMU's end of a virtio-serial port stays open whether or not an agent runs
    /// in the guest), but no agent is reading it: the guest has not booted, has no `qemu-ga`
    /// running, or the port is not named `org.qemu.guest_agent.0`. Retry later.
    AgentNotResponding {
        /// The transport, e.g. `unix:/run/vm1-qga.sock`.
        transport: String,
        /// How long the client waited.
        after: Duration,
    },
    /// An I/O error outside a command: connecting, accepting, spawning QEMU, waiting for it.
    Io {
        /// What was being done, with the path or address, e.g. `connecting to unix:/run/qmp.sock`.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

/// How the peer broke the protocol; see [`Error::Protocol`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The reply could not be decoded and was skipped (the connection goes on).
    Undecodable(DecodeError),
    /// Capability negotiation failed; the connection is closed.
    Negotiation(CloseReason),
    /// The reply decoded, but not into the typed command's output type.
    UnexpectedReply(serde_json::Error),
    /// An event's data did not decode into the typed event asked for (`wait_event_typed`).
    UnexpectedEvent {
        /// The event's name.
        name: String,
        /// What did not fit.
        error: serde_json::Error,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Undecodable(e) => write!(f, "undecodable reply: {e}"),
            ProtocolError::Negotiation(r) => write!(f, "{r}"),
            ProtocolError::UnexpectedReply(e) => {
                write!(f, "the reply does not have the expected shape: {e}")
            }
            ProtocolError::UnexpectedEvent { name, error } => {
                write!(f, "event {name} does not have the expected shape: {error}")
            }
        }
    }
}

impl Error {
    /// True when the connection to QEMU ended ([`Error::Disconnected`], or [`Error::Exited`]
    /// for a QEMU the client spawned).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. } | Error::Exited { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// QEMU's error, for [`Error::Qmp`].
    pub fn qmp_error(&self) -> Option<&QmpError> {
        match self {
            Error::Qmp { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The command this error is about, if any.
    pub fn command(&self) -> Option<&str> {
        match self {
            Error::Qmp { command, .. }
            | Error::Refused { command, .. }
            | Error::FdPassingUnsupported { command, .. } => Some(command),
            Error::Disconnected { command, .. }
            | Error::Closed { command }
            | Error::Protocol { command, .. } => command.as_deref(),
            Error::Timeout { .. }
            | Error::Io { .. }
            | Error::Exited { .. }
            | Error::AgentNotResponding { .. } => None,
        }
    }

    /// An I/O error while doing `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// No reply to `command` within `after`.
    pub fn reply_timeout(command: &str, after: Duration) -> Self {
        Error::Timeout {
            waiting_for: format!("the reply to '{command}'"),
            after,
        }
    }

    /// `command` failed in the session: QEMU's error, an undecodable reply, or the end of the
    /// connection.
    pub fn from_command(command: &str, error: CommandError) -> Self {
        let name = command.to_string();
        match error {
            CommandError::Qmp(error) => Error::Qmp {
                command: name,
                error,
            },
            CommandError::Undecodable(d) => Error::Protocol {
                command: Some(name),
                problem: ProtocolError::Undecodable(d),
            },
            CommandError::OobNotNegotiated => Error::Refused {
                command: name,
                reason: SubmitError::OobNotNegotiated,
            },
            CommandError::Closed { reason, sent } => Error::from_close(Some(command), sent, reason),
        }
    }

    /// The session refused to take `command`. `close_reason` is the session's, for a closed
    /// session ([`crate::Session::close_reason`]).
    pub fn from_submit(
        command: &str,
        error: SubmitError,
        close_reason: Option<&CloseReason>,
    ) -> Self {
        match (error, close_reason) {
            (SubmitError::Closed, Some(reason)) => {
                Error::from_close(Some(command), false, reason.clone())
            }
            (reason, _) => Error::Refused {
                command: command.to_string(),
                reason,
            },
        }
    }

    /// An event named `name` whose data did not decode as the typed event asked for.
    pub fn unexpected_event(name: &str, error: serde_json::Error) -> Self {
        Error::Protocol {
            command: None,
            problem: ProtocolError::UnexpectedEvent {
                name: name.to_string(),
                error,
            },
        }
    }

    /// The session closed for `reason` while `command` (if any) was outstanding.
    pub fn from_close(command: Option<&str>, sent: bool, reason: CloseReason) -> Self {
        let command = command.map(str::to_string);
        match reason {
            CloseReason::Local => Error::Closed { command },
            r @ (CloseReason::Quit | CloseReason::Disconnected(_)) => Error::Disconnected {
                command,
                sent,
                reason: r,
            },
            r => Error::Protocol {
                command,
                problem: ProtocolError::Negotiation(r),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Qmp { command, error } => write!(f, "'{command}' failed: {error}"),
            Error::Timeout { waiting_for, after } => {
                write!(
                    f,
                    "timed out after {} waiting for {waiting_for}",
                    Secs(*after)
                )
            }
            Error::Disconnected {
                command,
                sent,
                reason,
            } => match (command, sent) {
                (Some(c), true) => write!(f, "no reply to '{c}': {reason}"),
                (Some(c), false) => write!(f, "'{c}' not sent: {reason}"),
                (None, _) => write!(f, "disconnected: {reason}"),
            },
            Error::Exited { status, transport } => write!(
                f,
                "QEMU exited ({status}) before the QMP handshake on {transport} completed; \
                 its stderr says why"
            ),
            Error::Closed { command: Some(c) } => {
                write!(f, "'{c}' not answered: the client was closed")
            }
            Error::Closed { command: None } => f.write_str("the client was closed"),
            Error::Protocol { command, problem } => {
                f.write_str("protocol error")?;
                if let Some(c) = command {
                    write!(f, " in the reply to '{c}'")?;
                }
                write!(f, ": {problem}")
            }
            Error::Refused { command, reason } => write!(f, "'{command}' not sent: {reason}"),
            Error::FdPassingUnsupported { command, transport } => write!(
                f,
                "'{command}' not sent: file descriptors can only be passed over a Unix socket, \
                 not over {transport}"
            ),
            Error::AgentNotResponding { transport, after } => write!(
                f,
                "the guest agent on {transport} did not answer guest-sync-delimited within {}: \
                 is qemu-ga running in the guest (on a virtio-serial port named \
                 org.qemu.guest_agent.0)?",
                Secs(*after)
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Qmp { error, .. } => Some(error),
            Error::Io { source, .. } => Some(source),
            Error::Refused { reason, .. } => Some(reason),
            Error::Protocol {
                problem: ProtocolError::UnexpectedReply(e),
                ..
            } => Some(e),
            Error::Protocol {
                problem: ProtocolError::Undecodable(e),
                ..
            } => Some(e),
            Error::Protocol {
                problem: ProtocolError::UnexpectedEvent { error, .. },
                ..
            } => Some(error),
            _ => None,
        }
    }
}

/// A duration as people read it: `30 s`, `1.5 s`, `250 ms`, `20 µs` (not `299.99971ms`).
#[derive(Debug, Clone, Copy)]
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let trim = |v: f64, unit: &str, f: &mut fmt::Formatter<'_>| {
            let s = format!("{v:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            write!(f, "{s} {unit}")
        };
        if d >= Duration::from_secs(1) {
            trim(d.as_secs_f64(), "s", f)
        } else if d >= Duration::from_millis(1) {
            trim(d.as_secs_f64() * 1e3, "ms", f)
        } else {
            trim(d.as_secs_f64() * 1e6, "µs", f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Disconnect, ErrorClass, IoFailure};

    #[test]
    fn messages_name_the_command_and_the_cause() {
        let e = Error::from_command(
            "blockdev-del",
            CommandError::Qmp(QmpError {
                class: ErrorClass::GenericError,
                desc: "Failed to find node".into(),
            }),
        );
        assert_eq!(
            e.to_string(),
            "'blockdev-del' failed: GenericError: Failed to find node"
        );
        let reset = CloseReason::Disconnected(Disconnect {
            error: Some(IoFailure {
                writing: false,
                kind: io::ErrorKind::ConnectionReset,
                message: "Connection reset by peer (os error 104)".into(),
            }),
            truncated: Some(12),
            ..Disconnect::default()
        });
        let e = Error::from_command(
            "stop",
            CommandError::Closed {
                reason: reset.clone(),
                sent: true,
            },
        );
        assert!(e.is_disconnected());
        assert_eq!(e.command(), Some("stop"));
        assert_eq!(
            e.to_string(),
            "no reply to 'stop': the connection to QEMU closed (reading failed: Connection reset \
             by peer (os error 104); the last message was cut off after 12 bytes)"
        );
        let later = Error::from_submit("query-status", SubmitError::Closed, Some(&reset));
        assert!(
            later.to_string().starts_with("'query-status' not sent: "),
            "{later}"
        );
        assert!(matches!(
            Error::from_command(
                "x",
                CommandError::Closed {
                    reason: CloseReason::Local,
                    sent: true
                }
            ),
            Error::Closed { .. }
        ));
        let quit = Error::from_close(None, true, CloseReason::Quit);
        assert_eq!(
            quit.to_string(),
            "disconnected: QEMU quit and closed the connection"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let s = |d| Secs(d).to_string();
        assert_eq!(s(Duration::from_secs(30)), "30 s");
        assert_eq!(s(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(s(Duration::from_nanos(299_999_710)), "300 ms");
        assert_eq!(s(Duration::from_micros(20)), "20 µs");
        let e = Error::reply_timeout("query-status", Duration::from_millis(250));
        assert_eq!(
            e.to_string(),
            "timed out after 250 ms waiting for the reply to 'query-status'"
        );
    }
}
