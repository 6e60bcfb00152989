//! Limits and options for a [`Session`](crate::Session) and a [`Decoder`](crate::Decoder).

/// Limits that bound what the decoder accepts from the peer and what the encoder lets the caller send.
///
/// The defaults follow QEMU's own limits: 64 MiB per message (QEMU's input limit, and about the size of
/// the largest real reply, QGA's `guest-file-read`), nesting accepted to 4096 levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted from the peer, in bytes. A larger message is skipped and reported as
    /// [`DecodeError::TooLarge`](crate::DecodeError::TooLarge); the decoder never buffers more than this.
    pub max_message_size: usize,
    /// Deepest nesting of objects and arrays accepted from the peer (the top-level object is depth 1).
    /// A deeper message is skipped and reported as [`DecodeError::TooDeep`](crate::DecodeError::TooDeep).
    ///
    /// Parsing is iterative and uses no stack per level. *Dropping* a `serde_json::Value` recurses,
    /// though: measured with serde_json 1 on x86_64, a value 4096 deep drops within the default
    /// 2 MiB stack of a spawned thread (debug and release builds) but overflows 512 KiB, and one
    /// 16384 deep overflows 2 MiB. Lower this limit when replies are dropped on threads with small
    /// stacks; raise it only with larger stacks. Real QEMU replies nest a few hundred deep at most
    /// (206 for `query-named-block-nodes` over a 200-image chain).
    pub max_depth: usize,
    /// Largest command the encoder will produce, in bytes. QEMU rejects larger input without an id,
    /// which would leave the command without an answer, so the limit is checked before sending.
    pub max_command_size: usize,
    /// Deepest nesting the encoder will produce. QEMU accepts 1024 and answers deeper input with
    /// id-less errors.
    pub max_command_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 << 20,
            max_depth: 4096,
            max_command_size: 64 << 20,
            max_command_depth: 1024,
        }
    }
}

impl Limits {
    /// The defaults for a guest-agent session: as [`Limits::default`], with room for the agent's
    /// largest reply. `guest-file-read` reads at most 48 MiB, whose base64 is exactly 64 MiB, so
    /// that reply is a few dozen bytes over 64 MiB; `max_message_size` is 64 MiB + 4 KiB.
    pub fn agent() -> Self {
        Limits {
            max_message_size: (64 << 20) + 4096,
            ..Limits::default()
        }
    }
}

/// Which server a [`Session`](crate::Session) talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// A QMP monitor: greeting, then `qmp_capabilities` (the default).
    #[default]
    Qmp,
    /// The guest agent (`qemu-ga`): no greeting; the session synchronises with
    /// `guest-sync-delimited` on connect and after every abandoned command (see the
    /// [session docs](crate::session#the-guest-agent)).
    Agent,
}

/// Configuration of a [`Session`](crate::Session).
///
/// ```
/// use qmp_proto::{Config, Session};
/// let config = Config { request_oob: true, ..Config::default() };
/// let session = Session::new(config);
/// # let _ = session;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Limits on what is decoded and encoded.
    pub limits: Limits,
    /// Ask for the `oob` capability during negotiation when the server offers it. Needed for
    /// `exec-oob`. Default: false.
    pub request_oob: bool,
    /// With `oob` negotiated, how many in-band commands may be in flight at once. QEMU stops reading
    /// its input when 8 in-band commands are queued, which would stall an `exec-oob` behind them, so
    /// further commands wait in the session. Without `oob`, QEMU reads commands one after another and
    /// there is no limit. Default: 8.
    pub max_inband_in_flight: usize,
    /// The id sent with `qmp_capabilities`. `None` (the default) draws 12 random letters per
    /// session: every reply that arrives before the reply with this id is a stale reply to an
    /// earlier connection's command and is dropped (docs/PROTOCOL.md, rule 5). Commands are sent
    /// with plain integer ids, 1, 2, 3, … Set it for deterministic tests. Characters other than
    /// ASCII letters, digits, `-`, `_` and `.` are replaced by `_`.
    pub negotiation_id: Option<String>,
    /// QMP monitor or guest agent. Default: [`Protocol::Qmp`].
    pub protocol: Protocol,
}

impl Config {
    /// The configuration of a guest-agent session: [`Protocol::Agent`] with [`Limits::agent`].
    ///
    /// ```
    /// use qmp_proto::{Config, Session, State};
    /// let session = Session::new(Config::agent());
    /// assert_eq!(session.state(), State::Syncing);
    /// ```
    pub fn agent() -> Self {
        Config {
            limits: Limits::agent(),
            protocol: Protocol::Agent,
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            request_oob: false,
            max_inband_in_flight: 8,
            negotiation_id: None,
            protocol: Protocol::Qmp,
        }
    }
}
