//! The error of every async call.

use qmp_proto::{CloseReason, CommandError, DecodeError, QmpError, SubmitError};
use std::fmt;
use std::io;

/// Why an async QMP call did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// QEMU answered with an error (class and description).
    Qmp(QmpError),
    /// The connection is closed, or closed before the reply arrived; the reason says how
    /// ([`CloseReason::Disconnected`] when QEMU went away).
    Closed(CloseReason),
    /// The call or the connection attempt took longer than its timeout. A command that timed out
    /// stays registered as abandoned, so its late reply is discarded.
    Timeout,
    /// The command was refused before sending (it could not be encoded, QEMU would reject it, too
    /// many file descriptors); nothing was sent.
    Refused(SubmitError),
    /// `exec-oob` was asked for, but the `oob` capability is not negotiated (set
    /// `Config::request_oob`).
    OobNotNegotiated,
    /// File descriptors can only travel over a Unix socket connection.
    FdPassingUnsupported,
    /// QEMU's reply could not be decoded (too large, too deep, not JSON); it was skipped.
    Undecodable(DecodeError),
    /// The reply arrived but did not have the shape the typed command expects.
    Output(serde_json::Error),
    /// Connecting, or spawning QEMU, failed.
    Io(io::Error),
}

impl Error {
    /// True when the call failed because the connection to QEMU ended.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Closed(CloseReason::Disconnected))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Qmp(e) => write!(f, "QEMU returned an error: {e}"),
            Error::Closed(r) => write!(f, "{r}"),
            Error::Timeout => f.write_str("timed out waiting for QEMU"),
            Error::Refused(e) => write!(f, "{e}"),
            Error::OobNotNegotiated => f.write_str(
                "exec-oob needs the 'oob' capability: set Config::request_oob and use a server that offers it",
            ),
            Error::FdPassingUnsupported => {
                f.write_str("file descriptors can only be passed over a Unix socket")
            }
            Error::Undecodable(e) => write!(f, "the reply could not be decoded: {e}"),
            Error::Output(e) => write!(f, "the reply does not have the expected shape: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Qmp(e) => Some(e),
            Error::Refused(e) => Some(e),
            Error::Undecodable(e) => Some(e),
            Error::Output(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Qmp(e) => Error::Qmp(e),
            CommandError::Undecodable(e) => Error::Undecodable(e),
            CommandError::OobNotNegotiated => Error::OobNotNegotiated,
            CommandError::Closed(r) => Error::Closed(r),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
