//! The one error type of this crate.

use qmp_proto::{CloseReason, CommandError, DecodeError, QmpError, SubmitError};
use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong. Each variant is something a caller can act on; the `Display` text says what
/// happened and, where it helps, what to check.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// QEMU answered the command with an error.
    Qmp {
        /// The command that failed.
        command: String,
        /// QEMU's error: class and description.
        error: QmpError,
    },
    /// No answer in time. For a command, its id stays registered as abandoned, so a late reply is
    /// discarded and the connection stays usable.
    Timeout {
        /// What was awaited, e.g. `the reply to 'query-status'`.
        waiting_for: String,
        /// How long.
        after: Duration,
    },
    /// The connection to QEMU ended (EOF, reset, QEMU exited or was killed, or a write failed).
    /// Every later call fails the same way.
    Disconnected {
        /// The command that was waiting, if any.
        command: Option<String>,
        /// What is known about the end (an I/O error, a message cut off), if anything.
        detail: Option<String>,
    },
    /// The client was closed on this side.
    Closed,
    /// The peer broke the protocol: a reply that could not be decoded (too large, too deep, not
    /// JSON, not QMP), a failed capability negotiation, or a reply of the wrong shape for a typed
    /// command.
    Protocol {
        /// The command concerned, if any.
        command: Option<String>,
        /// What was wrong.
        problem: ProtocolError,
    },
    /// An I/O error, with what was being done.
    Io {
        /// What was being done, with the path or address, e.g. `connecting to unix:/run/qmp.sock`.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command was refused before sending (invalid arguments, `exec-oob` without the `oob`
    /// capability, too many file descriptors); nothing was sent.
    Refused {
        /// The command.
        command: String,
        /// Why.
        source: SubmitError,
    },
    /// File descriptors can only be passed over a Unix socket.
    FdPassingUnsupported {
        /// The transport in use.
        transport: String,
    },
}

/// How the peer broke the protocol; see [`Error::Protocol`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The reply could not be decoded and was skipped (the connection goes on).
    Undecodable(DecodeError),
    /// Capability negotiation failed; the session is closed.
    Negotiation(CloseReason),
    /// The reply decoded, but not into the typed command's output type.
    UnexpectedReply(serde_json::Error),
    /// An `exec-oob` command was answered with "oob not negotiated".
    OobNotNegotiated,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Undecodable(e) => write!(f, "undecodable reply: {e}"),
            ProtocolError::Negotiation(r) => write!(f, "{r}"),
            ProtocolError::UnexpectedReply(e) => {
                write!(f, "the reply does not have the expected shape: {e}")
            }
            ProtocolError::OobNotNegotiated => {
                f.write_str("exec-oob needs the 'oob' capability, which was not negotiated")
            }
        }
    }
}

impl Error {
    /// True when the connection to QEMU ended ([`Error::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// QEMU's error, for [`Error::Qmp`].
    ///
    /// ```no_run
    /// # let client = qmp_blocking::Client::connect_unix("/tmp/qmp.sock")?;
    /// let err = client.execute("no-such-command", ()).unwrap_err();
    /// assert_eq!(err.qmp_error().unwrap().class.as_str(), "CommandNotFound");
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn qmp_error(&self) -> Option<&QmpError> {
        match self {
            Error::Qmp { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Converts a command's failure from the session into an error naming the command.
    pub(crate) fn from_command(command: &str, e: CommandError, detail: Option<String>) -> Self {
        let command = command.to_string();
        match e {
            CommandError::Qmp(error) => Error::Qmp { command, error },
            CommandError::Undecodable(d) => Error::Protocol {
                command: Some(command),
                problem: ProtocolError::Undecodable(d),
            },
            CommandError::OobNotNegotiated => Error::Protocol {
                command: Some(command),
                problem: ProtocolError::OobNotNegotiated,
            },
            CommandError::Closed(reason) => Error::from_close(Some(command), &reason, detail),
        }
    }

    pub(crate) fn from_close(
        command: Option<String>,
        reason: &CloseReason,
        detail: Option<String>,
    ) -> Self {
        match reason {
            CloseReason::Disconnected => Error::Disconnected { command, detail },
            CloseReason::Local => Error::Closed,
            r => Error::Protocol {
                command,
                problem: ProtocolError::Negotiation(r.clone()),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Qmp { command, error } => write!(f, "'{command}' failed: {error}"),
            Error::Timeout { waiting_for, after } => {
                write!(f, "timed out after {after:?} waiting for {waiting_for}")
            }
            Error::Disconnected { command, detail } => {
                f.write_str("disconnected: the connection to QEMU closed")?;
                if let Some(c) = command {
                    write!(f, " while '{c}' was waiting for its reply")?;
                }
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            Error::Closed => f.write_str("the client was closed"),
            Error::Protocol { command, problem } => {
                f.write_str("protocol error")?;
                if let Some(c) = command {
                    write!(f, " in the reply to '{c}'")?;
                }
                write!(f, ": {problem}")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Refused { command, source } => write!(f, "'{command}' not sent: {source}"),
            Error::FdPassingUnsupported { transport } => write!(
                f,
                "file descriptors can only be passed over a Unix socket, not over {transport}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Qmp { error, .. } => Some(error),
            Error::Io { source, .. } => Some(source),
            Error::Refused { source, .. } => Some(source),
            Error::Protocol {
                problem: ProtocolError::UnexpectedReply(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_proto::ErrorClass;

    #[test]
    fn messages_name_the_command_and_the_cause() {
        let e = Error::from_command(
            "blockdev-del",
            CommandError::Qmp(QmpError {
                class: ErrorClass::GenericError,
                desc: "Failed to find node".into(),
            }),
            None,
        );
        assert_eq!(
            e.to_string(),
            "'blockdev-del' failed: GenericError: Failed to find node"
        );
        let e = Error::from_command(
            "stop",
            CommandError::Closed(CloseReason::Disconnected),
            Some("connection reset".into()),
        );
        assert!(e.is_disconnected());
        assert_eq!(
            e.to_string(),
            "disconnected: the connection to QEMU closed while 'stop' was waiting for its reply (connection reset)"
        );
        assert!(matches!(
            Error::from_command("x", CommandError::Closed(CloseReason::Local), None),
            Error::Closed
        ));
    }
}
