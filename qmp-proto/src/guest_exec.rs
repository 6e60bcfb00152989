//! The guest agent's `guest-exec`, sans IO: the request, the decoded `guest-exec-status`, and the
//! base64 the agent moves bytes in, and [`ExecPoll`], the polling loop's rules (what to send,
//! when the output is complete, how long to pause, the timeout error). The clients' `guest_exec`
//! helpers add only the I/O and the clock.
//!
//! ```
//! use qmp_proto::guest_exec::{ExecRequest, ExecStatus};
//! use serde_json::json;
//!
//! let request = ExecRequest::new("/bin/echo").arg("hello");
//! assert_eq!(request.arguments()["capture-output"], true);
//! let status = ExecStatus::from_value(&json!({"exited": true, "exitcode": 0, "out-data": "aGVsbG8K"})).unwrap();
//! let output = status.into_output().unwrap();
//! assert_eq!(output.stdout, b"hello\n");
//! assert_eq!(output.exit_code, Some(0));
//! ```

use serde_json::{json, Map, Value};
use std::fmt;

/// A process to run in the guest with `guest-exec`, its output captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    path: String,
    args: Vec<String>,
    env: Vec<String>,
    input: Option<Vec<u8>>,
}

impl ExecRequest {
    /// Runs `path` (the agent does not search `PATH` for an absolute path; a bare name is looked
    /// up by the guest's `execvp`).
    pub fn new(path: impl Into<String>) -> Self {
        ExecRequest {
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            input: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment entry, `NAME=value`.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.env.push(entry.into());
        self
    }

    /// Bytes written to the process's standard input.
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Some(bytes.into());
        self
    }

    /// The program.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The arguments of `guest-exec`, with `capture-output` on.
    pub fn arguments(&self) -> Value {
        let mut m = Map::new();
        m.insert("path".into(), json!(self.path));
        if !self.args.is_empty() {
            m.insert("arg".into(), json!(self.args));
        }
        if !self.env.is_empty() {
            m.insert("env".into(), json!(self.env));
        }
        if let Some(input) = &self.input {
            m.insert("input-data".into(), json!(encode_base64(input)));
        }
        m.insert("capture-output".into(), json!(true));
        Value::Object(m)
    }
}

/// A `guest-exec-status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecStatus {
    /// Whether the process has ended.
    pub exited: bool,
    /// Its exit code, when it exited normally.
    pub exit_code: Option<i64>,
    /// The signal that ended it, if one did.
    pub signal: Option<i64>,
    /// Standard output, base64 as the agent sent it.
    pub out_data: Option<String>,
    /// Standard error, base64 as the agent sent it.
    pub err_data: Option<String>,
    /// The agent stopped capturing standard output at its limit (16 MiB in qemu-ga 10).
    pub out_truncated: bool,
    /// The same for standard error.
    pub err_truncated: bool,
}

/// The outcome of a process run with `guest-exec`, its output decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, when the process exited normally.
    pub exit_code: Option<i64>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i64>,
    /// What it wrote to standard output.
    pub stdout: Vec<u8>,
    /// What it wrote to standard error.
    pub stderr: Vec<u8>,
    /// Standard output was cut at the agent's capture limit.
    pub stdout_truncated: bool,
    /// Standard error was cut at the agent's capture limit.
    pub stderr_truncated: bool,
}

impl ExecOutput {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A `guest-exec` or `guest-exec-status` reply that does not have the schema's shape, or output
/// that is not base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReplyError(pub String);

impl fmt::Display for ExecReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected guest-exec reply: {}", self.0)
    }
}

impl std::error::Error for ExecReplyError {}

/// The `pid` in a `guest-exec` reply.
pub fn exec_pid(reply: &Value) -> Result<i64, ExecReplyError> {
    reply["pid"]
        .as_i64()
        .ok_or_else(|| ExecReplyError(format!("no integer 'pid' in {reply}")))
}

impl ExecStatus {
    /// Decodes a `guest-exec-status` reply.
    pub fn from_value(v: &Value) -> Result<Self, ExecReplyError> {
        let exited = v["exited"]
            .as_bool()
            .ok_or_else(|| ExecReplyError(format!("no boolean 'exited' in {v}")))?;
        let string = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(ExecStatus {
            exited,
            exit_code: v.get("exitcode").and_then(Value::as_i64),
            signal: v.get("signal").and_then(Value::as_i64),
            out_data: string("out-data"),
            err_data: string("err-data"),
            out_truncated: flag("out-truncated"),
            err_truncated: flag("err-truncated"),
        })
    }

    /// The outcome with its output decoded from base64.
    pub fn into_output(self) -> Result<ExecOutput, ExecReplyError> {
        let decode = |d: Option<String>, what: &str| match d {
            None => Ok(Vec::new()),
            Some(s) => {
                decode_base64(&s).map_err(|e| ExecReplyError(format!("{what} is not base64: {e}")))
            }
        };
        Ok(ExecOutput {
            exit_code: self.exit_code,
            signal: self.signal,
            stdout: decode(self.out_data, "out-data")?,
            stderr: decode(self.err_data, "err-data")?,
            stdout_truncated: self.out_truncated,
            stderr_truncated: self.err_truncated,
        })
    }
}

/// The polling loop of the clients' `guest_exec` helpers, without its clock or its I/O: start it
/// from the reply to `guest-exec`, send `guest-exec-status` with [`status_arguments`] until
/// [`on_status`] gives the output, waiting [`next_pause`] between polls, and end with
/// [`timed_out`] when the caller's time is up. Errors name the command whose reply did not fit.
///
/// [`status_arguments`]: ExecPoll::status_arguments
/// [`on_status`]: ExecPoll::on_status
/// [`next_pause`]: ExecPoll::next_pause
/// [`timed_out`]: ExecPoll::timed_out
///
/// ```
/// use qmp_proto::guest_exec::{ExecPoll, ExecRequest};
/// use serde_json::json;
///
/// let request = ExecRequest::new("/bin/true");
/// let mut poll = ExecPoll::start(&request, &json!({"pid": 42})).unwrap();
/// assert_eq!(poll.status_arguments(), json!({"pid": 42}));
/// assert!(poll.on_status(&json!({"exited": false})).unwrap().is_none());
/// assert_eq!(poll.next_pause().as_millis(), 5);
/// let output = poll.on_status(&json!({"exited": true, "exitcode": 0})).unwrap().unwrap();
/// assert!(output.success());
/// ```
#[derive(Debug)]
pub struct ExecPoll {
    pid: i64,
    path: String,
    pause: std::time::Duration,
}

impl ExecPoll {
    /// First pause between polls; it doubles after each poll up to [`ExecPoll::MAX_PAUSE`].
    pub const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
    /// Longest pause between polls.
    pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

    /// The loop for the process that `request` started, from the agent's reply to `guest-exec`.
    pub fn start(request: &ExecRequest, reply: &Value) -> Result<ExecPoll, crate::Error> {
        let pid = exec_pid(reply).map_err(|e| unexpected("guest-exec", e))?;
        Ok(ExecPoll {
            pid,
            path: request.path().to_string(),
            pause: Self::FIRST_PAUSE,
        })
    }

    /// The process's id in the guest.
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// The arguments of the next `guest-exec-status`.
    pub fn status_arguments(&self) -> Value {
        json!({ "pid": self.pid })
    }

    /// A reply to `guest-exec-status`: the output, decoded, once the process has exited.
    pub fn on_status(&self, reply: &Value) -> Result<Option<ExecOutput>, crate::Error> {
        let status =
            ExecStatus::from_value(reply).map_err(|e| unexpected("guest-exec-status", e))?;
        if !status.exited {
            return Ok(None);
        }
        status
            .into_output()
            .map(Some)
            .map_err(|e| unexpected("guest-exec-status", e))
    }

    /// How long to wait before the next poll: 5 ms, doubling to 100 ms.
    pub fn next_pause(&mut self) -> std::time::Duration {
        let pause = self.pause;
        self.pause = (pause * 2).min(Self::MAX_PAUSE);
        pause
    }

    /// The error for a process that has not exited within `after` (it keeps running in the
    /// guest).
    pub fn timed_out(&self, after: std::time::Duration) -> crate::Error {
        crate::Error::Timeout {
            waiting_for: format!("'{}' (pid {} in the guest) to exit", self.path, self.pid),
            after,
        }
    }
}

fn unexpected(command: &str, e: ExecReplyError) -> crate::Error {
    crate::Error::Protocol {
        command: Some(command.to_string()),
        problem: crate::ProtocolError::UnexpectedReply(
            <serde_json::Error as serde::de::Error>::custom(e),
        ),
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), as the agent reads it (`guest-file-write`,
/// `input-data`).
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why [`decode_base64`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base64Error {
    /// Offset of the first byte that does not fit.
    pub offset: usize,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid base64 at byte {}", self.offset)
    }
}

impl std::error::Error for Base64Error {}

/// Decodes standard base64 (RFC 4648) as the agent writes it (`out-data`, `buf-b64`): padding
/// optional at the end, no whitespace, nothing after the padding.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    let data_len = bytes.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let padding = bytes.len() - data_len;
    if padding > 2 || (padding > 0 && bytes.len() % 4 != 0) || data_len % 4 == 1 {
        return Err(Base64Error { offset: data_len });
    }
    let mut out = Vec::with_capacity(data_len / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, &b) in bytes[..data_len].iter().enumerate() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(Base64Error { offset: i }),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..300usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let text = encode_base64(&data);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(decode_base64(&text), Ok(data.clone()), "{n}");
            // Without padding too.
            assert_eq!(decode_base64(text.trim_end_matches('=')), Ok(data), "{n}");
        }
    }

    #[test]
    fn base64_known_values() {
        assert_eq!(encode_base64(b"hello\n"), "aGVsbG8K");
        assert_eq!(encode_base64(b"ab"), "YWI=");
        assert_eq!(encode_base64(b"a"), "YQ==");
        assert_eq!(decode_base64("YQ=="), Ok(b"a".to_vec()));
        assert_eq!(decode_base64("+/+/"), Ok(vec![0xfb, 0xff, 0xbf]));
    }

    #[test]
    fn base64_rejects_what_is_not() {
        assert_eq!(decode_base64("YQ=a"), Err(Base64Error { offset: 2 }));
        assert!(decode_base64("Y").is_err());
        assert!(decode_base64("YQ===").is_err());
        assert!(decode_base64("Y Q=").is_err());
        assert!(decode_base64("YQ=").is_err());
    }

    #[test]
    fn status_decodes() {
        let s = ExecStatus::from_value(&json!({"exited": false})).unwrap();
        assert!(!s.exited);
        let s = ExecStatus::from_value(
            &json!({"exited": true, "signal": 9, "err-data": "eA==", "out-truncated": true}),
        )
        .unwrap();
        let o = s.into_output().unwrap();
        assert_eq!(
            (o.signal, o.exit_code, &o.stderr[..]),
            (Some(9), None, &b"x"[..])
        );
        assert!(o.stdout_truncated && !o.success());
        assert!(ExecStatus::from_value(&json!({})).is_err());
        assert!(exec_pid(&json!({"pid": 12})) == Ok(12));
    }
}
