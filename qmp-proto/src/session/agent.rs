//! The guest-agent rules of the [`Session`]: syncing, the `0xFF` reset point, one command at a
//! time, re-syncing after an abandoned command, and commands that do not reply on success. The
//! rules are listed in the session docs ("The guest agent"); everything else (framing, limits,
//! decoding, ids, matching, closing) is the QMP session's own code.

use super::{CommandId, Session, State, Transmit};
use crate::{DecodeError, Output, Reply, ServerMessage};
use bytes::Bytes;
use serde_json::Value;
use std::hash::{BuildHasher, Hasher};

/// The guest-agent commands whose schema says `'success-response': false`: they send no reply
/// when they succeed (checked against qemu-ga 10.0.2's `guest-info`). The session follows each
/// with a probe; see the session docs ("The guest agent").
pub const AGENT_NO_REPLY_COMMANDS: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// Sync ids are drawn below 2^53: the agent's `int` holds them exactly, and so does every JSON
/// reader between (some parse numbers as doubles).
const SYNC_ID_MASK: u64 = (1 << 53) - 1;

/// The sync and probe state of a guest-agent session.
#[derive(Debug)]
pub(super) struct AgentState {
    /// The sync being waited for while [`State::Syncing`]: its id `N`, and its bytes until
    /// transmitted. Its [`Transmit::id`] is number 0, the session's own, as `qmp_capabilities`'s.
    sync: Option<Sync>,
    /// Syncs started so far (the first on connect).
    syncs: u64,
    /// Whether a sync has completed (the first one ends with [`Output::Ready`]).
    synced: bool,
    /// The probe that follows a command that does not reply on success.
    probe: Option<Probe>,
}

#[derive(Debug)]
struct Sync {
    id: u64,
    bytes: Option<Bytes>,
}

#[derive(Debug)]
struct Probe {
    /// The command it completes.
    command: u64,
    id: u64,
    bytes: Option<Bytes>,
}

impl AgentState {
    pub(super) fn new() -> Self {
        AgentState {
            sync: None,
            syncs: 0,
            synced: false,
            probe: None,
        }
    }
}

/// A random sync id; std's `RandomState` is the entropy source (its keys are random per process
/// and change per instance), `seq` makes each draw differ.
fn random_sync_id(seq: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    h.finish() & SYNC_ID_MASK
}

/// `guest-sync-delimited` with id `id`, preceded by the `0xFF` flush byte when `flush`.
fn sync_command(id: u64, flush: bool) -> Bytes {
    let mut v = Vec::with_capacity(80);
    if flush {
        v.push(0xFF);
    }
    v.extend_from_slice(b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":");
    v.extend_from_slice(id.to_string().as_bytes());
    v.extend_from_slice(b"}}\n");
    Bytes::from(v)
}

impl Session {
    /// Whether a sync has completed (the session was ready once).
    pub(super) fn agent_synced(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| a.synced)
    }

    /// Starts a sync with a new id: [`State::Syncing`] until its reply.
    pub(super) fn start_sync(&mut self) {
        let Some(a) = self.agent.as_mut() else {
            return;
        };
        if a.syncs > 0 {
            self.stats.resyncs += 1;
        }
        a.syncs += 1;
        let id = random_sync_id(a.syncs);
        a.sync = Some(Sync {
            id,
            bytes: Some(sync_command(id, true)),
        });
        a.probe = None;
        self.state = State::Syncing;
    }

    /// [`Session::poll_transmit`] while syncing: the sync, once.
    pub(super) fn agent_sync_transmit(&mut self) -> Option<Transmit> {
        let sync = self.agent.as_mut()?.sync.as_mut()?;
        Some(Transmit {
            id: CommandId(0),
            bytes: sync.bytes.take()?,
            fds: Vec::new(),
        })
    }

    /// [`Session::poll_transmit`] when ready: a pending probe first; otherwise the next command
    /// when none is in flight (and no probe is awaited).
    pub(super) fn agent_transmit(&mut self) -> Option<Transmit> {
        if let Some(p) = self.agent.as_mut()?.probe.as_mut() {
            return Some(Transmit {
                id: CommandId(0),
                bytes: p.bytes.take()?,
                fds: Vec::new(),
            });
        }
        if self.inband_in_flight > 0 {
            return None;
        }
        let t = self.next_from_queue(false)?;
        if self.entries.get(&t.id.0).is_some_and(|e| e.no_reply) {
            let a = self.agent.as_mut()?;
            a.syncs += 1;
            let id = random_sync_id(a.syncs);
            a.probe = Some(Probe {
                command: t.id.0,
                id,
                bytes: Some(sync_command(id, false)),
            });
        }
        Some(t)
    }

    /// [`Session::receive`]: each `0xFF` byte is a reset point of the decoder.
    pub(super) fn agent_feed(
        &mut self,
        bytes: &[u8],
        decoded: &mut Vec<Result<ServerMessage, DecodeError>>,
    ) {
        let mut rest = bytes;
        while let Some(k) = rest.iter().position(|&b| b == 0xFF) {
            self.decoder.feed(&rest[..k], decoded);
            self.decoder.reset(decoded);
            self.stats.resets += 1;
            rest = &rest[k + 1..];
        }
        self.decoder.feed(rest, decoded);
    }

    /// Takes the sync and probe replies out of the decoded stream, and everything while syncing.
    /// Returns what the QMP rules handle.
    pub(super) fn agent_filter(
        &mut self,
        item: Result<ServerMessage, DecodeError>,
    ) -> Option<Result<ServerMessage, DecodeError>> {
        let Some(a) = self.agent.as_mut() else {
            return Some(item);
        };
        if let Ok(ServerMessage::Reply(Reply {
            id: None,
            result: Ok(value),
        })) = &item
        {
            let n = value.as_u64();
            let sync_id = a.sync.as_ref().map(|s| s.id);
            if self.state == State::Syncing && n.is_some() && n == sync_id {
                a.sync = None;
                let first = !a.synced;
                a.synced = true;
                self.state = State::Ready;
                if first {
                    self.outputs.push_back(Output::Ready);
                }
                return None;
            }
            if let Some(p) = a.probe.as_ref().filter(|p| n == Some(p.id)) {
                let command = p.command;
                a.probe = None;
                // Unless an error with its id failed it already.
                self.complete(command, Ok(Value::Object(Default::default())));
                return None;
            }
        }
        if self.state == State::Syncing {
            self.stats.stale += 1;
            return None;
        }
        Some(item)
    }

    /// An in-flight command was abandoned (the caller's timeout): forget it and sync again.
    pub(super) fn agent_abandon_in_flight(&mut self, n: u64) {
        if let Some(entry) = self.entries.remove(&n) {
            // Its late reply, if any, comes before the sync's and is dropped as stale (the agent
            // answers in order), so its id is free at once.
            self.wire_ids.release(entry.wire);
            if !entry.oob {
                self.inband_in_flight -= 1;
            }
            if entry.with_fds {
                self.fd_command_in_flight = false;
            }
        }
        self.start_sync();
    }

    /// A queued command was abandoned (the caller's timeout): if it was waiting behind a sync or
    /// probe that was sent and never answered, that one may be lost; send a fresh sync.
    pub(super) fn agent_abandon_queued(&mut self) {
        let Some(a) = self.agent.as_ref() else {
            return;
        };
        let sync_unanswered =
            self.state == State::Syncing && a.sync.as_ref().is_some_and(|s| s.bytes.is_none());
        // (While the probe's command is in flight, that command's own timeout re-syncs.)
        let probe_unanswered = self.state == State::Ready
            && a.probe
                .as_ref()
                .is_some_and(|p| p.bytes.is_none() && !self.entries.contains_key(&p.command));
        if sync_unanswered || probe_unanswered {
            self.start_sync();
        }
    }
}
