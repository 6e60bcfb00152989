//! The session state machine: negotiation, command ids, flow control, matching replies.
//!
//! ```text
//!  AwaitingGreeting --greeting--> Negotiating --qmp_capabilities ok--> Ready
//!         |                           |  (refused/undecodable)          |
//!         +------------EOF / close()--+-------------+------------------+--> Closed
//! ```
//! The caller feeds bytes ([`Session::receive`], [`Session::receive_eof`]), drains what happened
//! ([`Session::poll_output`]) and what to write ([`Session::poll_transmit`]). Nothing here does I/O.
//!
//! # Who answers a command
//! Every submitted command ends exactly once, as an [`Output::Reply`] with its [`CommandId`], unless
//! the caller [abandoned](Session::abandon) it first:
//! - QEMU's reply, matched by id: `Ok(return)` or [`CommandError::Qmp`].
//! - A reply that could not be decoded (too large, too deep, cut off, not JSON, not QMP) fails the
//!   command whose top-level `id` the decoder recovered while skipping it:
//!   [`CommandError::Undecodable`]. The decoder finds the top-level `id` wherever it stands in the
//!   message (QEMU writes it first in errors, last in returns), so this works for any reply QEMU
//!   sends. A reply over a limit is reported the moment the limit is crossed: its command fails then
//!   when the `id` came before that point; otherwise a [`Warning::Decode`] says so at once, and the
//!   command fails when its `id` is found further on ([`DecodeError::LateId`]).
//! - `exec-oob` queued before negotiation when `oob` turns out not to be available:
//!   [`CommandError::OobNotNegotiated`].
//! - When the session closes (EOF, a failed read or write, failed negotiation, [`Session::close`])
//!   every command still outstanding fails with [`CommandError::Closed`], which says why and whether
//!   the command had been sent; messages completed before EOF are delivered first. The one
//!   exception is `quit`: once it was sent, the end of the connection is QEMU doing what it was
//!   told, so the close reason is [`CloseReason::Quit`] and a `quit` still waiting succeeds.
//!
//! # What the session owns
//! Everything about the connection's state lives here, so that adapters keep no copies: the state
//! and the close reason with its detail ([`Session::close_reason`]), which commands are queued or
//! in flight, and the file descriptors that travel with a command ([`ExecuteOptions::fds`], handed
//! back in [`Transmit::fds`], closed if the command never goes out).
//!
//! Replies that match no outstanding command (stale replies from an earlier connection, replies to
//! abandoned commands) and id-less error replies (QEMU's answer to input it could not parse) never
//! fail a command; they are reported as [`Warning`]s (except late replies to abandoned commands,
//! which are only counted) and the session goes on.
//!
//! # The guest agent
//! A session made with [`Config::agent`] ([`Protocol::Agent`](crate::Protocol::Agent)) speaks
//! to `qemu-ga` instead. Everything above holds, with these rules (docs/PROTOCOL.md, "The guest
//! agent"):
//! ```text
//!  Syncing --{"return": N}--> Ready --abandon(in flight)--> Syncing (new N) --> Ready ...
//!     |                         |
//!     +----EOF / close()--------+--> Closed
//! ```
//! - There is no greeting. The session starts in [`State::Syncing`]: its first transmit is the
//!   byte `0xFF` followed by `{"execute":"guest-sync-delimited","arguments":{"id":N}}`, with `N`
//!   random (0 ..= 2^53, which the agent's `int` and every JSON reader hold exactly). The `0xFF`
//!   flushes the agent's parser (it answers it with an id-less "stray" error); the agent writes
//!   `0xFF` before the reply, `{"return": N}`.
//! - Until that reply, everything received is stale and dropped: replies, errors (the id-less
//!   "stray" error included), events, undecodable bytes. Each is counted in [`Stats::stale`],
//!   none is warned about. The reply ends the first sync with [`Output::Ready`].
//! - A `0xFF` byte anywhere in the input is the framer's reset point ([`Decoder::reset`]): a
//!   message still open there is dropped (counted in [`Stats::resets`]; after the sync, it fails
//!   the command whose `id` it had, like any message cut off).
//! - Commands are sent one at a time (the agent runs one at a time). A reply that matches no
//!   command in flight is dropped and counted ([`Stats::unmatched_replies`]), without a warning:
//!   the agent's channel carries stale replies as a matter of course.
//! - A command the caller [abandons](Session::abandon) after it was sent (its timeout) makes the
//!   session sync again, with a new `N`, before the next command goes out: its late reply, if
//!   any, arrives before the new sync's reply and is dropped. Abandoning a queued command while
//!   a sync is unanswered sends a fresh sync (the agent may have restarted and lost the first).
//!   Re-syncs produce no output; [`Stats::resyncs`] counts them.
//! - Commands whose schema says `'success-response': false` (`guest-shutdown`,
//!   `guest-suspend-disk`, `guest-suspend-ram`, `guest-suspend-hybrid`: [`AGENT_NO_REPLY_COMMANDS`])
//!   are followed by a probe, a plain `guest-sync-delimited`. An error carrying the command's `id`
//!   fails it; the probe's reply, or the end of the connection, completes it with `Ok({})`. If
//!   neither comes (a guest that powered off before its agent read the probe, behind a
//!   virtio-serial port that stays open) the command ends by the caller's timeout.

use crate::encode::{encode_command, CommandText, EncodeError, WireId};
use crate::{
    Command, Config, DecodeError, Decoder, Event, Greeting, QmpError, Reply, ServerMessage,
};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::OwnedFd;

mod agent;
mod wire_ids;

pub use agent::AGENT_NO_REPLY_COMMANDS;
use wire_ids::WireIds;

/// Most file descriptors one command may carry (QEMU's `TCP_MAX_FDS`).
pub const MAX_FDS_PER_COMMAND: usize = 16;

/// Identifies a submitted command for the lifetime of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(u64);

impl CommandId {
    /// The command's number: commands are numbered from 1 in the order they were submitted, and
    /// a number is never reused within a session; `qmp_capabilities`, sent by the session itself
    /// with a random string id, is number 0. This is not the id on the wire: that is the smallest
    /// integer no other outstanding command holds, so it is reused (docs/PROTOCOL.md rule 5).
    pub fn number(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected; waiting for the server's greeting. Commands are queued.
    AwaitingGreeting,
    /// The greeting arrived and `qmp_capabilities` is being negotiated. Commands are queued.
    Negotiating,
    /// Guest agent only: waiting for the reply to `guest-sync-delimited` (on connect, and after
    /// an abandoned command). Commands are queued; everything received is stale and dropped.
    Syncing,
    /// Negotiation (for the guest agent: the sync) is complete; commands are sent.
    Ready,
    /// The session ended; nothing more is sent or received.
    Closed,
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseReason {
    /// QEMU closed the connection after a `quit` command was sent: the normal end of a QEMU that
    /// was told to exit. A reset at that point is clean too (docs/PROTOCOL.md, rule 13).
    Quit,
    /// The connection ended otherwise: end of stream, hang-up, reset, or a failed write.
    Disconnected(Disconnect),
    /// The server refused `qmp_capabilities`.
    NegotiationRefused(QmpError),
    /// The reply to `qmp_capabilities` could not be decoded.
    NegotiationUndecodable(DecodeError),
    /// The caller closed the session with [`Session::close`].
    Local,
}

impl CloseReason {
    /// True when the peer went away ([`CloseReason::Quit`] or [`CloseReason::Disconnected`]).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, CloseReason::Quit | CloseReason::Disconnected(_))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Quit => f.write_str("QEMU quit and closed the connection"),
            CloseReason::Disconnected(d) => write!(f, "{d}"),
            CloseReason::NegotiationRefused(e) => {
                write!(f, "QEMU refused capability negotiation: {e}")
            }
            CloseReason::NegotiationUndecodable(e) => {
                write!(
                    f,
                    "capability negotiation failed: the reply could not be decoded: {e}"
                )
            }
            CloseReason::Local => f.write_str("the session was closed by the client"),
        }
    }
}

/// What is known about a connection that ended without `quit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disconnect {
    /// The I/O error that ended it; `None` for a plain end of stream.
    pub error: Option<IoFailure>,
    /// When the stream ended inside a message: how many bytes of it had arrived.
    pub truncated: Option<usize>,
    /// Where the handshake stood if it ended before negotiation completed (a connect that
    /// failed); `None` once the session was ready.
    pub handshake: Option<Handshake>,
    /// Before negotiation completed, the last thing the session warned about (e.g. garbage: the
    /// peer may not speak QMP at all).
    pub last_problem: Option<Box<Warning>>,
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection to QEMU closed")?;
        match self.handshake {
            Some(Handshake::AwaitingGreeting) => f.write_str(" before the greeting")?,
            Some(Handshake::Negotiating) => f.write_str(" before negotiation completed")?,
            Some(Handshake::Syncing) => {
                f.write_str(" before the guest agent answered guest-sync-delimited")?
            }
            None => {}
        }
        let mut sep = " (";
        if let Some(w) = &self.last_problem {
            write!(f, "{sep}last problem seen: {w}")?;
            sep = "; ";
        }
        if let Some(e) = &self.error {
            write!(f, "{sep}{e}")?;
            sep = "; ";
        }
        if let Some(len) = self.truncated {
            write!(f, "{sep}the last message was cut off after {len} bytes")?;
            sep = "; ";
        }
        if sep != " (" {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// How far the handshake had come when a connection ended before it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// No greeting had arrived: QEMU closed without a word (a monitor busy with another client
    /// closes new connections; or the socket does not speak QMP).
    AwaitingGreeting,
    /// The greeting had arrived; `qmp_capabilities` was not answered.
    Negotiating,
    /// Guest agent: the first `guest-sync-delimited` was not answered.
    Syncing,
}

/// An I/O error that ended a connection, as the adapter reported it
/// ([`Session::read_failed`], [`Session::write_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    /// True when writing failed, false when reading did.
    pub writing: bool,
    /// The error's kind, e.g. `ConnectionReset`, `BrokenPipe`.
    pub kind: std::io::ErrorKind,
    /// The error's text.
    pub message: String,
}

impl IoFailure {
    fn new(writing: bool, error: &std::io::Error) -> Self {
        IoFailure {
            writing,
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.writing { "writing" } else { "reading" };
        write!(f, "{op} failed: {}", self.message)
    }
}

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandError {
    /// QEMU answered with an error.
    Qmp(QmpError),
    /// QEMU's reply could not be decoded; it was skipped.
    Undecodable(DecodeError),
    /// An `exec-oob` command was queued before negotiation, and `oob` was not negotiated.
    OobNotNegotiated,
    /// The session closed before the reply arrived.
    Closed {
        /// Why it closed.
        reason: CloseReason,
        /// Whether the command had been written (false: it was still queued, QEMU never saw it).
        sent: bool,
    },
}

impl CommandError {
    /// True when the command failed because the connection to QEMU ended.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, CommandError::Closed { reason, .. } if reason.is_disconnect())
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Qmp(e) => write!(f, "QEMU returned an error: {e}"),
            CommandError::Undecodable(e) => write!(f, "the reply could not be decoded: {e}"),
            CommandError::OobNotNegotiated => {
                f.write_str("exec-oob needs the 'oob' capability, which was not negotiated")
            }
            CommandError::Closed { reason, sent: true } => write!(f, "no reply: {reason}"),
            CommandError::Closed {
                reason,
                sent: false,
            } => write!(f, "not sent: {reason}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Why a command was refused at submission; nothing was queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The command could not be encoded, or QEMU would reject it without an id.
    Encode(EncodeError),
    /// `exec-oob` needs the `oob` capability: it was not negotiated, or not requested in the
    /// [`Config`].
    OobNotNegotiated,
    /// More file descriptors than one command can carry.
    TooManyFds {
        /// How many were asked for.
        count: usize,
    },
    /// The session is closed.
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Encode(e) => write!(f, "command refused: {e}"),
            SubmitError::OobNotNegotiated => f.write_str(
                "exec-oob needs the 'oob' capability: ask for it when connecting (the clients' `oob(true)`, \
                 `Config::request_oob` on a bare Session) from a QEMU that offers it",
            ),
            SubmitError::TooManyFds { count } => write!(
                f,
                "a command can carry at most {MAX_FDS_PER_COMMAND} file descriptors, not {count}"
            ),
            SubmitError::Closed => f.write_str("the session is closed"),
        }
    }
}

impl std::error::Error for SubmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SubmitError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EncodeError> for SubmitError {
    fn from(e: EncodeError) -> Self {
        SubmitError::Encode(e)
    }
}

/// Something the session noticed that fails no command. The session goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// Bytes that could not be decoded and belong to no outstanding command.
    Decode(DecodeError),
    /// An error reply without an id: QEMU's answer to input it could not parse. Outstanding commands
    /// stay outstanding.
    ErrorWithoutId(QmpError),
    /// A reply whose id matches no outstanding command (e.g. a stale reply to a command of an
    /// earlier connection). It was dropped.
    UnmatchedReply {
        /// The reply's id, if it had one.
        id: Option<Value>,
    },
    /// A second greeting, or a greeting after the session closed. Ignored.
    UnexpectedGreeting(Greeting),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Decode(e) => write!(f, "{e}"),
            Warning::ErrorWithoutId(e) => write!(f, "QEMU could not read some input: {e}"),
            Warning::UnmatchedReply { id: Some(id) } => {
                write!(f, "dropped a reply with unknown id {id}")
            }
            Warning::UnmatchedReply { id: None } => f.write_str("dropped a reply without id"),
            Warning::UnexpectedGreeting(_) => f.write_str("ignored an unexpected greeting"),
        }
    }
}

/// What the session produced, drained with [`Session::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The server's greeting arrived; negotiation starts.
    Greeting(Greeting),
    /// Negotiation completed: queued commands can now be sent.
    Ready,
    /// A command's outcome.
    Reply {
        /// The command, as returned by the submit call.
        id: CommandId,
        /// QEMU's `return` value, or why there is none.
        result: Result<Value, CommandError>,
    },
    /// A QMP event.
    Event(Event),
    /// Something that fails no command; see [`Warning`].
    Warning(Warning),
    /// The session closed. Every outstanding command has been answered before this.
    Closed(CloseReason),
}

/// Bytes to write for one command, with the file descriptors that travel with them.
#[derive(Debug)]
pub struct Transmit {
    /// The command these bytes are.
    pub id: CommandId,
    /// The encoded command, one line.
    pub bytes: Bytes,
    /// Descriptors to attach to the same write (SCM_RIGHTS on the `sendmsg` that carries the first
    /// byte), as given in [`ExecuteOptions::fds`]. Dropping them after the write closes this
    /// side's copies; QEMU holds its own.
    pub fds: Vec<OwnedFd>,
}

/// Options for [`Session::execute_with`].
#[derive(Debug, Default)]
pub struct ExecuteOptions {
    /// Send as `exec-oob` (needs `oob` negotiated).
    pub oob: bool,
    /// File descriptors the command carries (at most [`MAX_FDS_PER_COMMAND`]), e.g. for `getfd`
    /// or `add-fd`. The session holds them until the command is transmitted, and closes them if
    /// the command is abandoned or the session closes first. QEMU keeps only the latest batch of
    /// descriptors, so the session keeps at most one such command in flight (rule 12).
    pub fds: Vec<OwnedFd>,
}

/// Counters of things that were dropped or reported; see [`Session::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// QMP events decoded.
    pub events: u64,
    /// Replies matching no outstanding command (stale ones included).
    pub unmatched_replies: u64,
    /// Of those, replies that arrived before the reply to `qmp_capabilities` without its id: stale
    /// replies to an earlier connection's commands (docs/PROTOCOL.md, rule 5).
    pub stale_replies: u64,
    /// Late replies to abandoned commands, discarded.
    pub discarded_replies: u64,
    /// Error replies without id.
    pub errors_without_id: u64,
    /// Messages or byte runs that could not be decoded.
    pub decode_errors: u64,
    /// Guest agent: messages and byte runs dropped while waiting for a sync reply.
    pub stale: u64,
    /// Guest agent: `0xFF` reset bytes received (one precedes every sync reply).
    pub resets: u64,
    /// Guest agent: syncs after the first (one per abandoned command, or lost sync).
    pub resyncs: u64,
}

#[derive(Debug)]
enum Phase {
    /// Waiting in a queue to be sent, with its bytes and descriptors.
    Queued(Bytes, Vec<OwnedFd>),
    /// Sent; waiting for the reply.
    InFlight,
    /// Sent, then abandoned by the caller; its reply will be discarded.
    Abandoned,
}

/// Whose reply a wire id names; see [`Session::owner`].
enum Owner {
    Negotiation,
    Command(u64),
    /// Before negotiation completed: a reply to an earlier connection's command.
    Stale,
    Nobody,
}

#[derive(Debug)]
struct Entry {
    /// Its id on the wire, held until its reply arrives.
    wire: u64,
    oob: bool,
    /// Whether it carries descriptors (rule 12: one such command in flight).
    with_fds: bool,
    /// Whether it is `quit`, after which the connection's end is clean (rule 13).
    quit: bool,
    /// Guest agent: a command that does not reply on success (followed by a probe).
    no_reply: bool,
    phase: Phase,
}

/// The QMP client protocol state machine. See the [module docs](self).
///
/// ```
/// use qmp_proto::{Config, Output, Session};
/// let mut session = Session::new(Config { negotiation_id: Some("t".into()), ..Config::default() });
/// let id = session.execute("query-status", &()).unwrap(); // queued until negotiated
/// session.receive(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \
///     \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n");
/// let negotiate = session.poll_transmit().unwrap();
/// assert_eq!(&negotiate.bytes[..], b"{\"execute\":\"qmp_capabilities\",\"id\":\"t\"}\n");
/// session.receive(b"{\"return\": {}, \"id\": \"t\"}\r\n");
/// let cmd = session.poll_transmit().unwrap();
/// assert_eq!(&cmd.bytes[..], b"{\"execute\":\"query-status\",\"id\":1}\n");
/// session.receive(b"{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 1}\r\n");
/// assert!(matches!(session.poll_output(), Some(Output::Greeting(_))));
/// assert!(matches!(session.poll_output(), Some(Output::Ready)));
/// match session.poll_output() {
///     Some(Output::Reply { id: got, result: Ok(v) }) => {
///         assert_eq!(got, id);
///         assert_eq!(v["status"], "running");
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    decoder: Decoder,
    decoded: Vec<Result<ServerMessage, DecodeError>>,
    outputs: VecDeque<Output>,
    greeting: Option<Greeting>,
    oob_enabled: bool,
    /// The id `qmp_capabilities` is sent with.
    negotiation_id: String,
    next_id: u64,
    /// The ids commands carry on the wire.
    wire_ids: WireIds,
    encode_buf: BytesMut,
    entries: HashMap<u64, Entry>,
    abandoned: usize,
    inband_queue: VecDeque<u64>,
    oob_queue: VecDeque<u64>,
    /// The `qmp_capabilities` command: its number (0), and its bytes until transmitted.
    negotiation: Option<(u64, Option<Bytes>)>,
    inband_in_flight: usize,
    fd_command_in_flight: bool,
    /// A `quit` command was transmitted: the end of the connection is QEMU exiting.
    quit_sent: bool,
    /// Bytes of a message cut off by the end of the stream, for the close reason.
    truncated: Option<usize>,
    /// The last warning before negotiation completed, for the close reason.
    handshake_problem: Option<Box<Warning>>,
    close_reason: Option<CloseReason>,
    stats: Stats,
    /// Guest agent only: the sync and probe state.
    agent: Option<agent::AgentState>,
}

/// Length of the random `qmp_capabilities` id: 12 letters, 56 bits. It is sent once per
/// connection, so its length costs nothing per command.
const NEGOTIATION_ID_LEN: usize = 12;

fn random_negotiation_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    let mut n = h.finish();
    (0..NEGOTIATION_ID_LEN)
        .map(|_| {
            let c = (b'a' + (n % 26) as u8) as char;
            n /= 26;
            c
        })
        .collect()
}

fn sanitize_id(p: &str) -> String {
    p.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Session {
    /// A session for a connection that has just been made (state [`State::AwaitingGreeting`]).
    pub fn new(config: Config) -> Self {
        let negotiation_id = match &config.negotiation_id {
            Some(p) => sanitize_id(p),
            None => random_negotiation_id(),
        };
        let agent = (config.protocol == crate::Protocol::Agent).then(agent::AgentState::new);
        let mut session = Session {
            decoder: Decoder::new(&config.limits),
            config,
            state: State::AwaitingGreeting,
            decoded: Vec::new(),
            outputs: VecDeque::new(),
            greeting: None,
            oob_enabled: false,
            negotiation_id,
            next_id: 1,
            wire_ids: WireIds::new(agent.is_none()),
            encode_buf: BytesMut::new(),
            entries: HashMap::new(),
            abandoned: 0,
            inband_queue: VecDeque::new(),
            oob_queue: VecDeque::new(),
            negotiation: None,
            inband_in_flight: 0,
            fd_command_in_flight: false,
            quit_sent: false,
            truncated: None,
            handshake_problem: None,
            close_reason: None,
            stats: Stats::default(),
            agent,
        };
        if session.agent.is_some() {
            session.start_sync();
        }
        session
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The server's greeting, once received.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Whether `oob` was negotiated (so `exec-oob` is available).
    pub fn oob_enabled(&self) -> bool {
        self.oob_enabled
    }

    /// The id this session sends with `qmp_capabilities` (commands are sent with small integer
    /// ids, reused once answered: docs/PROTOCOL.md rule 5). Every reply that arrives before the reply with this id is
    /// a stale reply to an earlier connection's command and is dropped (docs/PROTOCOL.md, rule 5).
    pub fn negotiation_id(&self) -> &str {
        &self.negotiation_id
    }

    /// Why the session closed, once it has ([`State::Closed`]).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Counters of dropped and reported messages.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Commands submitted and not yet answered or abandoned (queued or in flight).
    pub fn outstanding(&self) -> usize {
        self.entries.len() - self.abandoned
    }

    /// Bytes of an incomplete message held by the decoder; never more than the size limit.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Submits a command with arguments (`&()` for none). The command is queued and its bytes are
    /// handed out by [`Session::poll_transmit`] once negotiation is complete.
    pub fn execute<A: Serialize + ?Sized>(
        &mut self,
        name: &str,
        arguments: &A,
    ) -> Result<CommandId, SubmitError> {
        self.execute_with(name, arguments, ExecuteOptions::default())
    }

    /// Submits an out-of-band command (`exec-oob`). Refused unless `oob` is negotiated (or being
    /// negotiated), or requested and the greeting has not arrived yet; in that last case, the command
    /// fails with [`CommandError::OobNotNegotiated`] if the server does not offer `oob`.
    pub fn execute_oob<A: Serialize + ?Sized>(
        &mut self,
        name: &str,
        arguments: &A,
    ) -> Result<CommandId, SubmitError> {
        let options = ExecuteOptions {
            oob: true,
            ..ExecuteOptions::default()
        };
        self.execute_with(name, arguments, options)
    }

    /// Submits a typed command. Decode its reply with [`Command::decode_output`].
    pub fn submit<C: Command>(&mut self, command: &C) -> Result<CommandId, SubmitError> {
        self.execute_with(C::NAME, command, ExecuteOptions::default())
    }

    /// Submits a command with options (out-of-band, file descriptors).
    pub fn execute_with<A: Serialize + ?Sized>(
        &mut self,
        name: &str,
        arguments: &A,
        options: ExecuteOptions,
    ) -> Result<CommandId, SubmitError> {
        if self.state == State::Closed {
            return Err(SubmitError::Closed);
        }
        if options.fds.len() > MAX_FDS_PER_COMMAND {
            return Err(SubmitError::TooManyFds {
                count: options.fds.len(),
            });
        }
        if options.oob {
            // Once the greeting is in, whether `oob` will be enabled is known.
            let may_get_oob = match self.state {
                State::AwaitingGreeting => self.config.request_oob,
                _ => self.oob_enabled,
            };
            if !may_get_oob {
                return Err(SubmitError::OobNotNegotiated);
            }
        }
        let number = self.next_id;
        let wire = self.wire_ids.take(number);
        let bytes = match self.encode(name, arguments, options.oob, wire) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.wire_ids.release(wire);
                return Err(e.into());
            }
        };
        self.next_id += 1;
        self.entries.insert(
            number,
            Entry {
                wire,
                oob: options.oob,
                with_fds: !options.fds.is_empty(),
                quit: name == "quit" && self.agent.is_none(),
                no_reply: self.agent.is_some() && AGENT_NO_REPLY_COMMANDS.contains(&name),
                phase: Phase::Queued(bytes, options.fds),
            },
        );
        if options.oob {
            self.oob_queue.push_back(number);
        } else {
            self.inband_queue.push_back(number);
        }
        Ok(CommandId(number))
    }

    fn encode<A: Serialize + ?Sized>(
        &mut self,
        name: &str,
        arguments: &A,
        oob: bool,
        wire: u64,
    ) -> Result<Bytes, EncodeError> {
        let text = CommandText {
            name,
            arguments,
            oob,
            id: WireId::Number(wire),
        };
        let limits = &self.config.limits;
        encode_command(
            &mut self.encode_buf,
            &text,
            limits.max_command_size,
            limits.max_command_depth,
        )?;
        Ok(self.encode_buf.split().freeze())
    }

    /// Gives up on a command: it will not be answered, and its late reply is discarded quietly.
    /// A command not yet sent is never sent (its descriptors are closed). Returns false when `id`
    /// was not outstanding.
    pub fn abandon(&mut self, id: CommandId) -> bool {
        let Some(entry) = self.entries.get_mut(&id.0) else {
            return false;
        };
        match entry.phase {
            Phase::Queued(..) => {
                // Its queue slot is skipped when reached; never sent, so its id is free.
                let wire = entry.wire;
                self.entries.remove(&id.0);
                self.wire_ids.release(wire);
                self.agent_abandon_queued();
                true
            }
            Phase::InFlight if self.agent.is_some() => {
                self.agent_abandon_in_flight(id.0);
                true
            }
            Phase::InFlight => {
                entry.phase = Phase::Abandoned;
                self.abandoned += 1;
                true
            }
            Phase::Abandoned => false,
        }
    }

    /// The next command to write, if flow control allows one now. Write each `Transmit` in one
    /// write call, with its file descriptors, before the next.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        match self.state {
            State::Negotiating => {
                let (id, bytes) = self.negotiation.as_mut()?;
                let bytes = bytes.take()?;
                Some(Transmit {
                    id: CommandId(*id),
                    bytes,
                    fds: Vec::new(),
                })
            }
            State::Syncing => self.agent_sync_transmit(),
            State::Ready if self.agent.is_some() => self.agent_transmit(),
            State::Ready => {
                if let Some(t) = self.next_from_queue(true) {
                    return Some(t);
                }
                let limit_applies = self.oob_enabled;
                if limit_applies && self.inband_in_flight >= self.config.max_inband_in_flight.max(1)
                {
                    return None;
                }
                self.next_from_queue(false)
            }
            State::AwaitingGreeting | State::Closed => None,
        }
    }

    fn next_from_queue(&mut self, oob: bool) -> Option<Transmit> {
        loop {
            let queue = if oob {
                &mut self.oob_queue
            } else {
                &mut self.inband_queue
            };
            let &number = queue.front()?;
            let Some(entry) = self.entries.get_mut(&number) else {
                queue.pop_front(); // abandoned while queued
                continue;
            };
            if entry.with_fds && self.fd_command_in_flight {
                return None;
            }
            queue.pop_front();
            let Phase::Queued(bytes, fds) = std::mem::replace(&mut entry.phase, Phase::InFlight)
            else {
                unreachable!("only queued commands are in the queues")
            };
            if entry.with_fds {
                self.fd_command_in_flight = true;
            }
            if !entry.oob {
                self.inband_in_flight += 1;
            }
            self.quit_sent |= entry.quit;
            return Some(Transmit {
                id: CommandId(number),
                bytes,
                fds,
            });
        }
    }

    /// Feeds bytes received from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        if self.agent.is_some() {
            let mut decoded = std::mem::take(&mut self.decoded);
            self.agent_feed(bytes, &mut decoded);
            self.decoded = decoded;
        } else {
            self.decoder.feed(bytes, &mut self.decoded);
        }
        // Most small reads complete nothing: skip the hand-over (issue 15: 1-byte reads).
        if self.decoded.is_empty() {
            return;
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        self.handle_decoded(&mut decoded);
        self.decoded = decoded;
    }

    /// The stream ended (EOF or hang-up): delivers what was complete, reports a partial message,
    /// fails every outstanding command and closes the session (rule 13). After a `quit` was sent
    /// the close reason is [`CloseReason::Quit`] and the `quit` command itself succeeds if its
    /// reply was lost: QEMU exiting is what it asked for.
    pub fn receive_eof(&mut self) {
        self.end_of_stream(None);
    }

    /// Reading failed (e.g. `ECONNRESET`): the stream is over, as for [`Session::receive_eof`],
    /// with `error` kept in the close reason. A reset after `quit` is a clean close.
    pub fn read_failed(&mut self, error: &std::io::Error) {
        self.end_of_stream(Some(IoFailure::new(false, error)));
    }

    /// Writing failed: the connection is unusable. Closes the session at once; every outstanding
    /// command fails with `error` in the close reason (after `quit`: a clean close).
    pub fn write_failed(&mut self, error: &std::io::Error) {
        let reason = self.disconnect_reason(Some(IoFailure::new(true, error)));
        self.close_with(reason);
    }

    fn end_of_stream(&mut self, error: Option<IoFailure>) {
        if self.state == State::Closed {
            return;
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        self.decoder.finish(&mut decoded);
        self.handle_decoded(&mut decoded);
        self.decoded = decoded;
        let reason = self.disconnect_reason(error);
        self.close_with(reason);
    }

    fn disconnect_reason(&self, error: Option<IoFailure>) -> CloseReason {
        if self.quit_sent {
            CloseReason::Quit
        } else {
            CloseReason::Disconnected(Disconnect {
                error,
                truncated: self.truncated,
                handshake: match self.state {
                    State::AwaitingGreeting => Some(Handshake::AwaitingGreeting),
                    State::Negotiating => Some(Handshake::Negotiating),
                    State::Syncing if !self.agent_synced() => Some(Handshake::Syncing),
                    State::Syncing | State::Ready | State::Closed => None,
                },
                last_problem: self.handshake_problem.clone(),
            })
        }
    }

    /// Closes the session from the client side: every outstanding command fails with
    /// [`CloseReason::Local`].
    pub fn close(&mut self) {
        self.close_with(CloseReason::Local);
    }

    /// The next output, in the order things happened.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn handle_decoded(&mut self, decoded: &mut Vec<Result<ServerMessage, DecodeError>>) {
        for item in decoded.drain(..) {
            if self.state == State::Closed {
                continue;
            }
            let Some(item) = self.agent_filter(item) else {
                continue;
            };
            match item {
                Ok(ServerMessage::Greeting(g)) => self.on_greeting(g),
                Ok(ServerMessage::Reply(r)) => self.on_reply(r),
                Ok(ServerMessage::Event(e)) => {
                    self.stats.events += 1;
                    self.outputs.push_back(Output::Event(e));
                }
                Err(e) => self.on_decode_error(e),
            }
        }
    }

    fn on_greeting(&mut self, greeting: Greeting) {
        if self.state != State::AwaitingGreeting {
            self.warn(Warning::UnexpectedGreeting(greeting));
            return;
        }
        let enable_oob = self.config.request_oob && greeting.has_capability("oob");
        let number = 0;
        let enable = crate::command::QmpCapabilities {
            enable: if enable_oob {
                vec!["oob".to_string()]
            } else {
                Vec::new()
            },
        };
        let text = CommandText {
            name: "qmp_capabilities",
            arguments: &enable,
            oob: false,
            id: WireId::Text(&self.negotiation_id),
        };
        // A fixed, small command: the caller's command limits do not apply to it.
        let bytes = encode_command(&mut self.encode_buf, &text, usize::MAX, usize::MAX)
            .map(|()| self.encode_buf.split().freeze());
        self.negotiation = Some((number, bytes.ok()));
        self.oob_enabled = enable_oob;
        self.greeting = Some(greeting.clone());
        self.state = State::Negotiating;
        self.outputs.push_back(Output::Greeting(greeting));
    }

    /// Whose reply a wire id names (rule 5). Before negotiation completes only `qmp_capabilities`
    /// is in flight, and QEMU answers a closed connection's running command before it even
    /// dispatches our `qmp_capabilities`: every other id then is stale. After it, our commands'
    /// ids are their numbers.
    fn owner(&self, id: &Value) -> Owner {
        match self.state {
            State::Ready => match id.as_u64().and_then(|wire| self.wire_ids.holder(wire)) {
                Some(n) => Owner::Command(n),
                None => Owner::Nobody,
            },
            State::Negotiating
                if matches!(self.negotiation, Some((_, None)))
                    && id.as_str() == Some(self.negotiation_id.as_str()) =>
            {
                Owner::Negotiation
            }
            State::AwaitingGreeting | State::Negotiating => Owner::Stale,
            // Guest agent: everything received while syncing is dropped before it gets here.
            State::Syncing | State::Closed => Owner::Nobody,
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(id) = reply.id else {
            match reply.result {
                Err(e) => {
                    self.stats.errors_without_id += 1;
                    self.warn(Warning::ErrorWithoutId(e));
                }
                Ok(_) => self.unmatched(None),
            }
            return;
        };
        match self.owner(&id) {
            Owner::Negotiation => match reply.result {
                Ok(_) => self.on_negotiated(),
                Err(e) => self.close_with(CloseReason::NegotiationRefused(e)),
            },
            Owner::Command(n) => {
                if !self.complete(n, reply.result.map_err(CommandError::Qmp)) {
                    self.unmatched(Some(id));
                }
            }
            Owner::Stale => {
                self.stats.stale_replies += 1;
                self.unmatched(Some(id));
            }
            Owner::Nobody => self.unmatched(Some(id)),
        }
    }

    fn on_decode_error(&mut self, error: DecodeError) {
        // A late id belongs to a message already counted and reported when it crossed a limit.
        let (error, reported) = match error {
            DecodeError::LateId(report) => (*report, true),
            e => (e, false),
        };
        if !reported {
            self.stats.decode_errors += 1;
        }
        let owner = match &error {
            // At end of stream every command fails as disconnected; report the fragment.
            DecodeError::Truncated { len, .. } => {
                self.truncated = Some(*len);
                None
            }
            e => e.id().map(|id| self.owner(id)),
        };
        match owner {
            Some(Owner::Negotiation) => {
                self.close_with(CloseReason::NegotiationUndecodable(error));
            }
            // Only a command in flight can own a reply; one still queued was never sent.
            Some(Owner::Command(n)) if self.is_in_flight(n) => {
                self.complete(n, Err(CommandError::Undecodable(error)));
            }
            _ if reported => {}
            _ => self.warn(Warning::Decode(error)),
        }
    }

    fn on_negotiated(&mut self) {
        self.state = State::Ready;
        self.negotiation = None;
        self.outputs.push_back(Output::Ready);
        if !self.oob_enabled {
            for n in std::mem::take(&mut self.oob_queue) {
                if let Some(entry) = self.entries.remove(&n) {
                    self.wire_ids.release(entry.wire);
                    self.outputs.push_back(Output::Reply {
                        id: CommandId(n),
                        result: Err(CommandError::OobNotNegotiated),
                    });
                }
            }
        }
    }

    /// Whether command `n` was sent and its reply is awaited (or will be discarded).
    fn is_in_flight(&self, n: u64) -> bool {
        matches!(
            self.entries.get(&n),
            Some(Entry {
                phase: Phase::InFlight | Phase::Abandoned,
                ..
            })
        )
    }

    /// Ends command `n` with `result`; false if it was not in flight.
    fn complete(&mut self, n: u64, result: Result<Value, CommandError>) -> bool {
        if !self.is_in_flight(n) {
            return false;
        }
        let Some(entry) = self.entries.remove(&n) else {
            return false;
        };
        self.wire_ids.release(entry.wire);
        if !entry.oob {
            self.inband_in_flight -= 1;
        }
        if entry.with_fds {
            self.fd_command_in_flight = false;
        }
        if let Phase::Abandoned = entry.phase {
            self.abandoned -= 1;
            self.stats.discarded_replies += 1;
        } else {
            self.outputs.push_back(Output::Reply {
                id: CommandId(n),
                result,
            });
        }
        true
    }

    fn unmatched(&mut self, id: Option<Value>) {
        self.stats.unmatched_replies += 1;
        if self.agent.is_some() {
            return; // stale replies are the agent channel's normal state: counted only
        }
        self.warn(Warning::UnmatchedReply { id });
    }

    fn warn(&mut self, warning: Warning) {
        // What went wrong before the handshake completed says why a connect failed (a message
        // cut off by the end is in the close reason already).
        // Stale replies before negotiation are expected (rule 5), not a problem.
        let expected = matches!(
            warning,
            Warning::Decode(DecodeError::Truncated { .. }) | Warning::UnmatchedReply { .. }
        );
        if self.state != State::Ready && !expected {
            self.handshake_problem = Some(Box::new(warning.clone()));
        }
        self.outputs.push_back(Output::Warning(warning));
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.negotiation = None;
        let mut numbers: Vec<u64> = self.entries.keys().copied().collect();
        numbers.sort_unstable();
        for n in numbers {
            let Some(entry) = self.entries.remove(&n) else {
                continue;
            };
            let result = match entry.phase {
                Phase::Abandoned => continue,
                // QEMU exiting is what `quit` asked for, whether or not its reply made it.
                Phase::InFlight if entry.quit && reason == CloseReason::Quit => {
                    Ok(Value::Object(Default::default()))
                }
                // Guest agent: a command that does not reply on success, sent; the agent went
                // away (shut down or suspended, as asked).
                Phase::InFlight if entry.no_reply && reason.is_disconnect() => {
                    Ok(Value::Object(Default::default()))
                }
                Phase::InFlight => Err(CommandError::Closed {
                    reason: reason.clone(),
                    sent: true,
                }),
                Phase::Queued(..) => Err(CommandError::Closed {
                    reason: reason.clone(),
                    sent: false,
                }),
            };
            self.outputs.push_back(Output::Reply {
                id: CommandId(n),
                result,
            });
        }
        self.abandoned = 0;
        self.wire_ids.clear();
        self.inband_queue.clear();
        self.oob_queue.clear();
        self.inband_in_flight = 0;
        self.fd_command_in_flight = false;
        self.close_reason = Some(reason.clone());
        self.outputs.push_back(Output::Closed(reason));
    }
}
