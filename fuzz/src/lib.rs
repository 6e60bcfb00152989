//! Shared pieces of the qmp-proto fuzz targets: how a fuzz input becomes a session configuration,
//! a byte stream with client actions, and a chunking schedule. See docs/FUZZING.md.
//!
//! # Input format of `parse_stream`
//! ```text
//! byte 0     configuration (see `config_from_byte`)
//! byte 1     chunking schedule (see `Chunker::from_byte`)
//! rest       the server's byte stream, with client actions embedded as 0xFF <action>:
//!            0xFF 0xFF  a literal 0xFF byte of the stream
//!            0xFF 't'   take every pending transmit (what a client does after each read)
//!            0xFF 'e'   submit an in-band command      0xFF 'o'   submit an exec-oob command
//!            0xFF 'f'   submit a command with one fd   0xFF 'a'   abandon the newest submitted id
//!            0xFF 's'   chunk boundary in the chunked run only (no client action)
//!            0xFF 'c'   close the session locally
//!            other bytes after 0xFF map onto these by value (see `Action::from_byte`).
//! ```
//! 0xFF never occurs in UTF-8, so a real capture is a valid input once the two header bytes are
//! prepended, and client actions can be put between its messages (`fuzz/make-seeds.py` does this).

use qmp_proto::{Config, ExecuteOptions, Limits};
use std::os::fd::OwnedFd;

/// What a fuzzed submission asks for (a copyable stand-in for `ExecuteOptions`, which owns the
/// descriptors it carries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Submit {
    /// `exec-oob`.
    pub oob: bool,
    /// How many descriptors travel with the command.
    pub fds: usize,
}

impl Submit {
    /// The session's options, with `fds` descriptors of `/dev/null`.
    pub fn options(self) -> ExecuteOptions {
        ExecuteOptions {
            oob: self.oob,
            fds: (0..self.fds).map(|_| dev_null()).collect(),
        }
    }
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("/dev/null opens")
        .into()
}

/// The `qmp_capabilities` id of every fuzzed session: the QEMU captures were made with id `cap`
/// for `qmp_capabilities`, then `1`, `2`, ...
pub const NEGOTIATION_ID: &str = "cap";

/// A session configuration chosen by one byte. Small limits make the size and depth paths
/// reachable with short inputs; value 3 in the low bits keeps the defaults.
pub fn config_from_byte(b: u8) -> Config {
    let limits = match b & 3 {
        0 => Limits {
            max_message_size: 4096,
            max_depth: 64,
            ..Limits::default()
        },
        1 => Limits {
            max_message_size: 64,
            max_depth: 4,
            ..Limits::default()
        },
        2 => Limits {
            max_message_size: 700,
            max_depth: 8,
            ..Limits::default()
        },
        _ => Limits::default(),
    };
    Config {
        limits,
        request_oob: b & 4 != 0,
        max_inband_in_flight: usize::from((b >> 3) & 7),
        negotiation_id: Some(NEGOTIATION_ID.to_string()),
        // The `agent` target covers the guest-agent protocol.
        protocol: qmp_proto::Protocol::Qmp,
    }
}

/// A client action embedded in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take every pending transmit.
    Transmit,
    /// Take at most one pending transmit.
    TransmitOne,
    /// Submit an in-band command.
    Execute,
    /// Submit an `exec-oob` command.
    ExecuteOob,
    /// Submit a command carrying one file descriptor.
    ExecuteFd,
    /// Abandon the n-th newest submitted id.
    Abandon(usize),
    /// A chunk boundary of the chunked run; no client action.
    Split,
    /// Close the session locally.
    Close,
}

impl Action {
    /// The action for the byte after a 0xFF marker (0xFF itself is a literal and never gets here).
    pub fn from_byte(b: u8) -> Action {
        match b {
            b't' => Action::Transmit,
            b'e' => Action::Execute,
            b'o' => Action::ExecuteOob,
            b'f' => Action::ExecuteFd,
            b'a' => Action::Abandon(0),
            b's' => Action::Split,
            b'c' => Action::Close,
            _ => match b % 8 {
                0 => Action::Transmit,
                1 => Action::TransmitOne,
                2 => Action::Execute,
                3 => Action::ExecuteOob,
                4 => Action::ExecuteFd,
                5 => Action::Abandon(usize::from(b >> 3)),
                6 => Action::Split,
                _ => Action::Transmit,
            },
        }
    }
}

/// One step of a parsed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes from the server.
    Bytes(Vec<u8>),
    /// A client action.
    Action(Action),
}

/// Splits the body of an input into server bytes and client actions.
pub fn steps(body: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != 0xFF || i == body.len() {
            current.push(b);
            continue;
        }
        let a = body[i];
        i += 1;
        if a == 0xFF {
            current.push(0xFF);
            continue;
        }
        if !current.is_empty() {
            steps.push(Step::Bytes(std::mem::take(&mut current)));
        }
        steps.push(Step::Action(Action::from_byte(a)));
    }
    if !current.is_empty() {
        steps.push(Step::Bytes(current));
    }
    steps
}

/// Chunk sizes for the chunked run.
#[derive(Debug, Clone)]
pub enum Chunker {
    /// Only the boundaries the input marks (actions and splits).
    Markers,
    /// One byte at a time.
    Bytewise,
    /// Pseudo-random sizes from 1 to `max`.
    Random {
        /// Largest chunk.
        max: usize,
        /// xorshift state.
        state: u64,
    },
}

impl Chunker {
    /// The schedule chosen by one byte.
    pub fn from_byte(b: u8) -> Chunker {
        match b {
            0 => Chunker::Markers,
            1 => Chunker::Bytewise,
            _ => Chunker::Random {
                max: usize::from(b),
                state: 0x9E37_79B9_7F4A_7C15 ^ u64::from(b),
            },
        }
    }

    /// The size of the next chunk.
    pub fn next_size(&mut self) -> usize {
        match self {
            Chunker::Markers => usize::MAX,
            Chunker::Bytewise => 1,
            Chunker::Random { max, state } => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                1 + (*state % *max as u64) as usize
            }
        }
    }

    /// Splits `bytes` into chunks.
    pub fn split<'a>(&mut self, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.next_size().min(rest.len());
            let (a, b) = rest.split_at(n);
            out.push(a);
            rest = b;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_the_stream() {
        let s = steps(b"{}\xFFt\xFF\xFF{\xFFs}\xFF");
        assert_eq!(
            s,
            vec![
                Step::Bytes(b"{}".to_vec()),
                Step::Action(Action::Transmit),
                Step::Bytes(b"\xFF{".to_vec()),
                Step::Action(Action::Split),
                Step::Bytes(b"}\xFF".to_vec()),
            ]
        );
    }

    #[test]
    fn chunker_covers_every_byte() {
        let data = [7u8; 1000];
        for b in [0u8, 1, 2, 17, 255] {
            let chunks = Chunker::from_byte(b).split(&data);
            assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 1000);
            assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }
}
